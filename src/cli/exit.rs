//! Exit codes (one place) and how errors are shown: what happened, the state left, and the
//! next command to run.

use std::sync::OnceLock;

use crate::config::ConfigError;
use crate::engine::EngineError;
use crate::secret::Redactor;

/// The process exit code, as documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: deployed (or the command did what was asked).
    Ok,
    /// 1: failed and rolled back cleanly.
    RolledBack,
    /// 2: bad input; nothing touched.
    BadInput,
    /// 3: failed and the rollback is incomplete; a human must act.
    RollbackIncomplete,
    /// 4: another run holds the lock, or an unfinished run needs `recover`.
    Locked,
    /// 5: not confirmed.
    NotConfirmed,
    /// 130: interrupted and rolled back.
    Interrupted,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::RolledBack => 1,
            Self::BadInput => 2,
            Self::RollbackIncomplete => 3,
            Self::Locked => 4,
            Self::NotConfirmed => 5,
            Self::Interrupted => 130,
        }
    }
}

static REDACTOR: OnceLock<Redactor> = OnceLock::new();

/// The redactor every error message passes through.
pub fn redactor() -> Redactor {
    REDACTOR.get_or_init(Redactor::default).clone()
}

/// Prints to stderr, masked.
pub fn eprint(text: &str) {
    eprintln!("{}", redactor().redact(text.trim_end()));
}

pub fn exit_for(error: &EngineError) -> Exit {
    match error {
        EngineError::Config(_)
        | EngineError::Build(_)
        | EngineError::Plan(_)
        | EngineError::PlanChanged(_) => Exit::BadInput,
        EngineError::Lock(_) | EngineError::Unfinished { .. } | EngineError::Halted { .. } => {
            Exit::Locked
        }
        EngineError::NotConfirmed(_) => Exit::NotConfirmed,
        EngineError::Journal(_) | EngineError::ProcessesLeft(_) => Exit::RollbackIncomplete,
        EngineError::Step(_) => Exit::RolledBack,
    }
}

/// Shows an error that stopped a command, and returns its exit code.
pub fn report_error(error: &EngineError) -> Exit {
    let exit = exit_for(error);
    match error {
        EngineError::Config(ConfigError::Yaml { located, snippet }) => {
            eprint(&format!("error: {located}\n{snippet}"));
        }
        other => eprint(&format!("error: {other}")),
    }
    let hint = match exit {
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
        eprint(&format!("hint: {hint}"));
    }
    exit
}
