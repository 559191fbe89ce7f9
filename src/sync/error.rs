//! Why a run could not complete, and how each cause is recorded: a leaf every part of the
//! engine names, so none of them imports the engine to say how it failed.

use crate::domain::RunStatus;
use crate::jamf::JamfError;
use crate::store::StoreError;

/// Why a run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Jamf(#[from] JamfError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Other(String),
    #[error("interrupted by shutdown")]
    Interrupted,
}

impl RunError {
    /// How a run that ended with this result is recorded.
    pub(crate) fn status(result: &Result<(), RunError>) -> RunStatus {
        match result {
            Ok(()) => RunStatus::Succeeded,
            Err(RunError::Interrupted) => RunStatus::Interrupted,
            Err(_) => RunStatus::Failed,
        }
    }
}
