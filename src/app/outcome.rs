//! The one place a command's end becomes an exit code: a run's status, an error that
//! stopped a command, the worst of several endings.

use crate::adapters::store::StoreError;
use crate::engine::EngineError;
use crate::engine::journal::RunStatus;
use crate::run::error::StepError;

/// The process exit code, as documented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
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
    pub(crate) fn code(self) -> u8 {
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

    /// How bad an ending is, to choose the exit code of a command that ran several runs:
    /// an incomplete rollback above an interruption above a rollback above success.
    fn severity(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::RolledBack => 1,
            Self::Interrupted => 2,
            _ => 3,
        }
    }

    /// The worse of two endings.
    #[must_use]
    pub(crate) fn worst(self, other: Exit) -> Exit {
        if other.severity() > self.severity() {
            other
        } else {
            self
        }
    }
}

/// A run that moves production forward (deploy, release, rollback to a version, `recover`
/// of such a run): it succeeds only when every step did.
pub(crate) fn for_run(status: RunStatus, interrupted: bool) -> Exit {
    match status {
        RunStatus::Succeeded => Exit::Ok,
        RunStatus::RolledBack if interrupted => Exit::Interrupted,
        RunStatus::RolledBack => Exit::RolledBack,
        RunStatus::Halted | RunStatus::RollbackFailed => Exit::RollbackIncomplete,
    }
}

/// The rollback of a halted run: what was asked for is the rollback itself.
pub(crate) fn for_undo(status: RunStatus) -> Exit {
    match status {
        RunStatus::RolledBack => Exit::Ok,
        _ => Exit::RollbackIncomplete,
    }
}

pub(crate) fn exit_for(error: &EngineError) -> Exit {
    match error {
        EngineError::Config(_)
        | EngineError::Build(_)
        | EngineError::Plan(_)
        | EngineError::RehearsalFailed(_)
        | EngineError::Problems(_)
        | EngineError::PlanChanged(_)
        // A backup named on the command line that does not exist is bad input.
        | EngineError::Step(StepError::Store(StoreError::NotFound(_))) => Exit::BadInput,
        EngineError::Lock(_) | EngineError::Unfinished { .. } | EngineError::Halted { .. } => {
            Exit::Locked
        }
        EngineError::NotConfirmed(_) => Exit::NotConfirmed,
        EngineError::Cancelled(_) => Exit::Interrupted,
        EngineError::Journal(_) | EngineError::ProcessesLeft(_) => Exit::RollbackIncomplete,
        EngineError::Step(_) => Exit::RolledBack,
    }
}
