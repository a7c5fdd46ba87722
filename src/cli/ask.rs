//! `on_failure: ask` at a terminal: show what failed and the state it left, then let the
//! person type what happens next. Without a terminal nobody is asked (the pipeline's
//! `unattended` choice applies), so a run in CI never waits.

use async_trait::async_trait;
use is_terminal::IsTerminal;
use tokio_util::sync::CancellationToken;

use super::exit::eprint;
use crate::engine::decide::{Decider, Failure};
use crate::engine::journal::Choice;

pub(crate) struct Terminal {
    pub cancel: CancellationToken,
}

impl Terminal {
    /// Whether someone can be asked: stdin and stderr are a terminal.
    pub(crate) fn available() -> bool {
        std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
    }
}

/// Reads a typed answer: the whole word, in any case. No abbreviations: `r` could mean
/// retry or rollback, and this answer changes production.
pub(crate) fn parse(answer: &str) -> Option<Choice> {
    match answer.trim().to_ascii_lowercase().as_str() {
        "retry" => Some(Choice::Retry),
        "rollback" | "roll back" => Some(Choice::Rollback),
        "halt" => Some(Choice::Halt),
        _ => None,
    }
}

#[async_trait]
impl Decider for Terminal {
    async fn ask(&self, failure: &Failure) -> Option<Choice> {
        if !Self::available() {
            return None;
        }
        let mut text = format!(
            "\nstep `{}` FAILED: {}\ndone so far: {}\n",
            failure.step,
            failure.error,
            if failure.done.is_empty() {
                "nothing".to_owned()
            } else {
                failure.done.join(", ")
            }
        );
        text.push_str(&format!(
            "a rollback would undo: {}\n",
            if failure.undo.is_empty() {
                "nothing".to_owned()
            } else {
                failure.undo.join("; ")
            }
        ));
        if let Some(ponr) = &failure.point_of_no_return {
            text.push_str(&format!(
                "point of no return `{ponr}` has passed: a rollback stops there and the run halts\n"
            ));
        }
        text.push_str(
            "choices: retry (run the step again), rollback (undo the run), halt (stop here, leave everything as it is; `cutover resume` or `cutover rollback` later)",
        );
        eprint(&text);
        let answer = tokio::task::spawn_blocking(|| {
            dialoguer::Input::<String>::new()
                .with_prompt("Type retry, rollback or halt")
                .validate_with(|a: &String| -> Result<(), String> {
                    parse(a)
                        .map(|_| ())
                        .ok_or_else(|| format!("`{}`: type retry, rollback or halt", a.trim()))
                })
                .interact_text()
        });
        let answer = tokio::select! {
            a = answer => a.ok()?.ok()?,
            () = self.cancel.cancelled() => return None,
        };
        parse(&answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_typed() {
        assert_eq!(parse(" Retry\n"), Some(Choice::Retry));
        assert_eq!(parse("rollback"), Some(Choice::Rollback));
        assert_eq!(parse("HALT"), Some(Choice::Halt));
        assert_eq!(parse("r"), None);
        assert_eq!(parse("yes"), None);
    }
}
