//! The one mapping from domain errors to gRPC statuses. Messages are for people; the code is
//! for programs.

use crate::ledger::LedgerError;
use crate::storage::StorageError;
use tonic::{Code, Status};

pub fn status_of(e: LedgerError) -> Status {
    use LedgerError as E;
    let code = match &e {
        E::EmptyTx
        | E::TooManyEntries { .. }
        | E::EmptyKey { .. }
        | E::KeyTooLong { .. }
        | E::ValueTooLarge { .. }
        | E::DuplicateKey { .. }
        | E::TxTooLarge { .. }
        | E::DeleteWithValue { .. }
        | E::BadRecord { .. }
        | E::InvalidOption { .. } => Code::InvalidArgument,
        E::KeyNotFound | E::TxNotFound { .. } => Code::NotFound,
        E::NotNext { .. } => Code::FailedPrecondition,
        E::BadTx { .. } | E::Storage(StorageError::Corrupt { .. }) => Code::DataLoss,
        E::Storage(StorageError::Locked { .. }) | E::Poisoned { .. } | E::Closed => {
            Code::Unavailable
        }
        E::Storage(StorageError::Io { .. }) => Code::Internal,
    };
    if code == Code::DataLoss || code == Code::Internal {
        tracing::error!(error = %e, "storage failure");
    }
    if matches!(e, E::KeyNotFound) {
        return super::service::key_not_found();
    }
    Status::new(code, e.to_string())
}

/// Runs blocking work (disk, Argon2) off the async threads, mapping its error with `status`.
pub(crate) async fn offload<T: Send + 'static, E: Send + 'static>(
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
    status: impl FnOnce(E) -> Status,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r.map_err(status),
        Err(_) => Err(Status::internal("a request handler failed")),
    }
}

/// [`offload`] for ledger work.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LedgerError> + Send + 'static,
) -> Result<T, Status> {
    offload(f, status_of).await
}
