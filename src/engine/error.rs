//! Why a command stopped before or instead of running, each knowing which exit code it means.

use crate::adapters::build::BuildError;
use crate::config::ConfigError;
use crate::place::Message;
use crate::run::error::StepError;

use std::path::PathBuf;

use crate::adapters::state::LockInfo;

/// Why a command stopped before or instead of running.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Bad input found while planning; nothing was touched. Exit 2.
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Build(#[from] BuildError),
    /// Something the plan found that would fail; nothing was touched. Exit 2.
    #[error("{0}")]
    Plan(String),
    /// The rehearsal on a copy failed: the message says what failed and what to do;
    /// nothing on the environment was touched. Exit 2.
    #[error("{0}")]
    RehearsalFailed(String),
    /// What the plan found wrong in the pipeline and the migrations, each with its place;
    /// nothing was touched. Exit 2.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Problems(Vec<Message>),
    /// The lock is held by another run. Exit 4.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// An earlier run died and needs `cutover recover`. Exit 4.
    #[error(
        "run {run_id} in environment `{environment}` did not finish, or its rollback is incomplete (journal {path}); run `cutover recover -e {environment}` to finish it before deploying again"
    )]
    Unfinished {
        run_id: String,
        environment: String,
        path: String,
    },
    /// A run halted for a human and waits for `resume` or `rollback`. Exit 4.
    #[error(
        "run {run_id} in environment `{environment}` is halted at step `{step}`: {reason}\nit waits for a human: `cutover resume -e {environment}` continues it at step `{step}`, `cutover rollback -e {environment}` undoes it; `cutover status -e {environment}` shows it"
    )]
    Halted {
        run_id: String,
        environment: String,
        step: String,
        reason: String,
    },
    /// The plan changed between confirmation and execution. Exit 2.
    #[error("the plan changed since it was shown, so nothing was touched:\n{0}")]
    PlanChanged(String),
    /// Not confirmed. Exit 5.
    #[error("{0}")]
    NotConfirmed(String),
    /// Interrupted (Ctrl-C) before anything was touched, at a prompt. Exit 130.
    #[error("cancelled {0}; nothing was touched")]
    Cancelled(&'static str),
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// A one-off operation (migrate, backup) failed. Exit 1.
    #[error(transparent)]
    Step(#[from] StepError),
    /// A process a dead run started still runs and could not be stopped, so `recover`
    /// undid nothing. Exit 3.
    #[error("{0}")]
    ProcessesLeft(String),
}

impl EngineError {
    /// The error as messages, each with the place in a file it is about when it is about
    /// one, for outputs that link to places (CI annotations).
    pub fn messages(&self) -> Vec<Message> {
        match self {
            Self::Config(e) | Self::Build(BuildError::Config(e)) => e.messages(),
            Self::Problems(all) => all.clone(),
            other => vec![Message::plain(other.to_string())],
        }
    }
}

impl From<crate::adapters::state::StateError> for EngineError {
    fn from(e: crate::adapters::state::StateError) -> Self {
        use crate::adapters::state::StateError;
        match e {
            StateError::Storage(message) => Self::Plan(message),
            StateError::Held(holder) => Self::Lock(LockError::Held(holder)),
            StateError::HeldInDatabase(message) => Self::Lock(LockError::HeldInDatabase(message)),
            StateError::Write { path, source } => {
                Self::Journal(JournalError::Write { path, source })
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another run holds the deploy lock: {}", .0.describe())]
    Held(Box<LockInfo>),
    #[error("{0}")]
    HeldInDatabase(String),
    /// The run asked about is alive (`recover` of a live run); the text says where it is.
    #[error("{0}")]
    Running(String),
    #[error("lock file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("cannot write journal {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read journal {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {} is damaged at line {line}: {message}", path.display())]
    Damaged {
        path: PathBuf,
        line: usize,
        message: String,
    },
}
