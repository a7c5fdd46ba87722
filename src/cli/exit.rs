//! How errors are shown: what happened, the state left, and the next command to run. The
//! exit codes themselves are chosen in `app::outcome`.

use std::sync::OnceLock;

use crate::config::ConfigError;
use crate::engine::EngineError;
use crate::report::paint::Tone;
use crate::secret::Redactor;

pub(crate) use crate::app::outcome::{Exit, exit_for};

static REDACTOR: OnceLock<Redactor> = OnceLock::new();

/// The redactor every error message passes through.
pub(crate) fn redactor() -> Redactor {
    REDACTOR.get_or_init(Redactor::default).clone()
}

/// Where the diagnostic log (`-v`, `RUST_LOG`) goes: stderr, each event masked like
/// every other line cutover prints (an adapter's warning may quote a URL with a password).
pub fn log_writer() -> LogLine {
    LogLine(Vec::new())
}

/// One log event, buffered and written masked when the logger is done with it.
pub struct LogLine(Vec<u8>);

impl std::io::Write for LogLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let text = String::from_utf8_lossy(&self.0);
            eprint!("{}", redactor().redact(&text));
        }
    }
}

/// Prints to stderr, masked.
pub(crate) fn eprint(text: &str) {
    eprintln!("{}", redactor().redact(text.trim_end()));
}

/// `error`, in red where the terminal has colour: the start of every error line.
pub(crate) fn error_label() -> String {
    crate::report::paint::err(Tone::Bad, "error")
}

/// Shows an error that stopped a command, and returns its exit code.
/// `command`: the command that failed; `check` is not told to run `check`.
pub(crate) fn report_error(error: &EngineError, command: &str) -> Exit {
    let exit = exit_for(error);
    let label = error_label();
    match error {
        EngineError::Config(ConfigError::Yaml { located, snippet }) => {
            eprint(&format!("{label}: {located}\n{snippet}"));
        }
        other => eprint(&format!("{label}: {other}")),
    }
    let hint = match exit {
        // Its message already says what to do.
        Exit::BadInput if matches!(error, EngineError::RehearsalFailed(_)) => None,
        Exit::BadInput if command == "check" => Some("nothing was touched; fix the input"),
        Exit::BadInput => Some(
            "nothing was touched; fix the input and run again (`cutover check` checks everything)",
        ),
        Exit::Locked => match error {
            EngineError::Lock(_) => Some(
                "wait for that run to finish; if its runner is gone, the lock expires at the time shown (or see runbooks/stuck-lock.md)",
            ),
            EngineError::Halted { .. } => Some("see runbooks/halted-run.md"),
            _ => Some("see runbooks/recover-after-crash.md"),
        },
        Exit::NotConfirmed => Some("nothing was touched"),
        Exit::RollbackIncomplete => {
            Some("the system may be part-way through a change: see runbooks/recover-after-crash.md")
        }
        _ => None,
    };
    if let Some(hint) = hint {
        eprint(&format!(
            "{}: {hint}",
            crate::report::paint::err(Tone::Strong, "hint")
        ));
    }
    exit
}
