//! Typed confirmation for environments with `confirm: typed`.
//!
//! On a terminal the user types `CONFIRM` (dialoguer, on a blocking thread, raced against
//! Ctrl-C). Without a terminal only `--confirm <that environment>` proceeds: `--yes` is not
//! enough, and a prompt is never answered for the user.

use is_terminal::IsTerminal;
use tokio_util::sync::CancellationToken;

use crate::app::guard::check_window;
use crate::config::{Config, ConfirmMode};
use crate::engine::EngineError;
use crate::engine::window::Direction;
use crate::run::window::OutsideWindow;

pub(crate) struct Confirmation {
    /// `--confirm ENV`.
    pub named: Option<String>,
    /// `--yes`.
    pub yes: bool,
    /// The command itself is the confirmation (`release`).
    pub implied: bool,
    /// `deploy --plan FILE`: the environment and digest of the plan a human approved, and
    /// who approved it.
    pub approved: Option<(String, String, String)>,
    /// `--outside-window --reason R`: start a forward run outside the environment's
    /// window, for the reason R.
    pub outside_window: Option<String>,
}

impl Confirmation {
    /// `--confirm ENV` and `--yes` as given: a person is asked unless they say enough.
    pub(crate) fn asked(named: Option<String>, yes: bool) -> Self {
        Self {
            named,
            yes,
            implied: false,
            approved: None,
            outside_window: None,
        }
    }

    /// For commands whose invocation is the decision (`migrate up`, `backup create`).
    /// Typed-confirmation environments still need `--confirm ENV` (or a typed CONFIRM).
    pub(crate) fn automatic(named: Option<String>) -> Self {
        Self {
            named,
            yes: true,
            implied: false,
            approved: None,
            outside_window: None,
        }
    }
}

/// For a run that goes ahead with no plan confirmed first (a resume, a fleet): the
/// environment's window for `what`, going `direction` (`reason`: `--outside-window
/// --reason`), then the confirmation the environment asks for. Returns the record of a
/// run outside the window and how the run was confirmed (see [`confirm`]).
pub(crate) async fn window_then_confirm(
    config: &Config,
    environment: &str,
    (what, direction, reason): (&str, Direction, Option<&str>),
    given: &Confirmation,
    cancel: &CancellationToken,
) -> Result<(Option<OutsideWindow>, Option<String>), EngineError> {
    let outside = check_window(config, environment, what, direction, reason)?;
    let confirmed = confirm(
        config.environment(environment)?.confirm,
        environment,
        given,
        cancel,
    )
    .await?;
    Ok((outside, confirmed))
}

/// Whether [`confirm`] would ask someone (or refuse for want of a terminal to ask on).
pub(crate) fn asks(mode: ConfirmMode, given: &Confirmation) -> bool {
    !(mode == ConfirmMode::None || given.implied || given.named.is_some())
}

pub(crate) async fn confirm(
    mode: ConfirmMode,
    environment: &str,
    given: &Confirmation,
    cancel: &CancellationToken,
) -> Result<Option<String>, EngineError> {
    if mode == ConfirmMode::None || given.implied {
        return Ok(None);
    }
    if let Some(named) = &given.named {
        return if named == environment {
            Ok(Some(format!("`--confirm {named}`")))
        } else {
            Err(EngineError::NotConfirmed(format!(
                "`--confirm {named}` does not name this environment (`{environment}`); not confirmed"
            )))
        };
    }
    if !(std::io::stdin().is_terminal() && std::io::stderr().is_terminal()) {
        return Err(EngineError::NotConfirmed(format!(
            "environment `{environment}` needs typed confirmation and there is no terminal; pass `--confirm {environment}` after reviewing the plan{}",
            if given.yes {
                " (`--yes` is not enough for it)"
            } else {
                ""
            }
        )));
    }
    let prompt = format!("Deploy to {environment}? Type CONFIRM to proceed");
    let answer = tokio::task::spawn_blocking(move || {
        dialoguer::Input::<String>::new()
            .with_prompt(prompt)
            .allow_empty(true)
            .interact_text()
    });
    let answer = tokio::select! {
        a = answer => a.map_err(|e| EngineError::NotConfirmed(format!("prompt failed: {e}")))?,
        () = cancel.cancelled() => {
            let _ = console_restore();
            return Err(EngineError::Cancelled(AT_THE_PROMPT));
        }
    };
    match answer {
        // Ctrl-C interrupts the read before the signal is seen by the select.
        Err(dialoguer::Error::IO(e))
            if e.kind() == std::io::ErrorKind::Interrupted || cancel.is_cancelled() =>
        {
            let _ = console_restore();
            Err(EngineError::Cancelled(AT_THE_PROMPT))
        }
        Ok(text) if text.trim() == "CONFIRM" => Ok(Some("typed CONFIRM".into())),
        Ok(text) => Err(EngineError::NotConfirmed(format!(
            "typed `{}`, not `CONFIRM`; not confirmed",
            text.trim()
        ))),
        Err(e) => Err(EngineError::NotConfirmed(format!(
            "prompt failed: {e}; not confirmed"
        ))),
    }
}

const AT_THE_PROMPT: &str = "at the confirmation prompt";

fn console_restore() -> std::io::Result<()> {
    use std::io::Write;
    // Show the cursor again if the prompt hid it.
    let mut err = std::io::stderr();
    err.write_all(b"\x1b[?25h\n")?;
    err.flush()
}
