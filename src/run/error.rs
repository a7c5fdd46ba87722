//! A step's failure: what every step and undo returns.

use crate::adapters::database::DatabaseError;
use crate::adapters::platform::PlatformError;
use crate::adapters::store::StoreError;

/// A step's failure.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("timed out after {0}")]
    Timeout(humantime::Duration),
    #[error("interrupted")]
    Cancelled,
    /// Transient by nature (connection refused, 5xx), worth a retry.
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Failed(String),
    /// A `pause` step that nobody approved yet; what it waits for.
    #[error("waiting for approval: {0}")]
    AwaitingApproval(String),
}

impl StepError {
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(e) => e.is_transient(),
            Self::Platform(e) => e.is_transient(),
            Self::Transient(_) => true,
            _ => false,
        }
    }
}
