//! The one mapping from domain errors to gRPC statuses. Messages are for people; the code
//! and, where a program must tell a condition apart, the [`Reason`] are for programs.

use super::auth::AuthError;
use super::catalog::CatalogError;
use crate::ledger::{LedgerError, StorageError};
use crate::replication::ReplicationError;
use crate::wire::Reason;
use tonic::{Code, Status};

/// The status of a ledger error.
pub fn ledger(e: LedgerError) -> Status {
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
        | E::BadMetadata { .. }
        | E::BadReference { .. }
        | E::ValueLength { .. }
        | E::StreamReference
        | E::BadRecord { .. }
        | E::StateOrder { .. }
        | E::ReservedKey { .. }
        | E::InvalidOption { .. } => Code::InvalidArgument,
        E::EpochOrder { .. } => Code::FailedPrecondition,
        E::KeyNotFound => return Reason::KeyNotFound.status(e.to_string()),
        E::ValueTruncated { .. } => return Reason::ValueTruncated.status(e.to_string()),
        E::PreconditionFailed { .. } => return Reason::PreconditionFailed.status(e.to_string()),
        E::TxNotFound { .. } => Code::NotFound,
        E::NotNext { .. } => Code::FailedPrecondition,
        E::BadTx { .. }
        | E::Damaged { .. }
        | E::Lost { .. }
        | E::IndexMissing { .. }
        | E::StateMismatch { .. }
        | E::Storage(StorageError::Corrupt { .. }) => Code::DataLoss,
        E::Storage(StorageError::Locked { .. }) | E::Poisoned { .. } | E::Closed => {
            Code::Unavailable
        }
        E::Storage(StorageError::Io { .. }) => Code::Internal,
        E::Storage(StorageError::Version { .. }) => Code::FailedPrecondition,
    };
    if code == Code::DataLoss || code == Code::Internal {
        tracing::error!(error = %e, "storage failure");
    }
    Status::new(code, e.to_string())
}

/// The status of a user or session error.
pub fn auth(e: AuthError) -> Status {
    match e {
        AuthError::BadCredentials | AuthError::NoSession | AuthError::Inactive(_) => {
            Status::unauthenticated(e.to_string())
        }
        AuthError::Refused(_) => Status::failed_precondition(e.to_string()),
        AuthError::Denied { .. } | AuthError::NotSuperuser => {
            Status::permission_denied(e.to_string())
        }
        AuthError::Exists(_) => Status::already_exists(e.to_string()),
        AuthError::NotFound(_) => Status::not_found(e.to_string()),
        AuthError::InvalidName | AuthError::WeakPassword => Status::invalid_argument(e.to_string()),
        AuthError::ReplicaServer { ref primary } => {
            let primary = primary.clone();
            Reason::ReadOnlyReplica.referral(e.to_string(), &primary)
        }
        AuthError::File { .. } | AuthError::Storage(_) | AuthError::Store(_) => {
            tracing::error!(error = %e, "user store failure");
            Status::internal(e.to_string())
        }
    }
}

/// The status of a catalog error.
pub fn catalog(e: CatalogError) -> Status {
    match e {
        CatalogError::NotFound(_) => Reason::DatabaseNotFound.status(e.to_string()),
        CatalogError::Exists(_) => Status::already_exists(e.to_string()),
        CatalogError::InvalidName(_) | CatalogError::Setting(_) => {
            Status::invalid_argument(e.to_string())
        }
        CatalogError::NotReplica(_) => Reason::NotReplica.status(e.to_string()),
        CatalogError::HasPrimary { .. } => Reason::HasPrimary.status(e.to_string()),
        CatalogError::OtherDatabase { .. } => Reason::OtherDatabase.status(e.to_string()),
        CatalogError::ReadOnlyReplica { ref primary, .. }
        | CatalogError::ReplicaServer { ref primary } => {
            let primary = primary.clone();
            Reason::ReadOnlyReplica.referral(e.to_string(), &primary)
        }
        CatalogError::SystemDatabase => Status::permission_denied(e.to_string()),
        CatalogError::HasReplicas { .. } | CatalogError::Protected(..) => {
            Status::failed_precondition(e.to_string())
        }
        CatalogError::LeaseLapsed { .. } => Status::unavailable(e.to_string()),
        CatalogError::Fenced {
            ref newer_primary, ..
        } => {
            let p = newer_primary.clone();
            Reason::StalePrimary.referral(e.to_string(), &p)
        }
        CatalogError::Unavailable { .. } => Reason::DatabaseUnavailable.status(e.to_string()),
        CatalogError::Ledger(e) => ledger(e),
        CatalogError::File { .. }
        | CatalogError::Storage(_)
        | CatalogError::System(_)
        | CatalogError::SystemMissing { .. } => {
            tracing::error!(error = %e, "catalog failure");
            Status::internal(e.to_string())
        }
    }
}

/// The status of a replication outcome.
pub fn replication(e: ReplicationError) -> Status {
    use ReplicationError as E;
    match e {
        E::OtherDatabase { .. } => Reason::OtherDatabase.status(e.to_string()),
        E::ReplicaAhead { .. } => Reason::ReplicaAhead.status(e.to_string()),
        E::Diverged { .. } | E::NotNext { .. } => Reason::Diverged.status(e.to_string()),
        E::Concurrent { .. } => Status::aborted(e.to_string()),
        E::Gap { .. } => Status::invalid_argument(e.to_string()),
        E::NotReplicated { .. } => Reason::NotReplicated.status(e.to_string()),
        E::StalePrimary {
            ref newer_primary, ..
        } => {
            let p = newer_primary.clone();
            Reason::StalePrimary.referral(e.to_string(), &p)
        }
        E::IncompatibleProtocol { .. } => Reason::IncompatibleProtocol.status(e.to_string()),
        E::Unauthorized {
            unauthenticated: true,
            ..
        } => Status::unauthenticated(e.to_string()),
        E::Unauthorized { .. } => Status::permission_denied(e.to_string()),
        E::BadAck { .. } => Status::invalid_argument(e.to_string()),
        E::Ledger(e) => ledger(e),
    }
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
    offload(f, ledger).await
}
