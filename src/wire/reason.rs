//! Why a call failed, for programs: every status chainlog returns for a condition a client
//! must tell apart carries one [`Reason`] in the `chainlog-reason` metadata, and the same
//! gRPC code every time. Clients match on the reason, never on the message.

use tonic::{Code, Status};

/// The metadata key of a status's reason.
pub const REASON_KEY: &str = "chainlog-reason";

/// The metadata key that names, on a `read_only_replica` status, the primary to write to
/// instead (`host:port`, or `host:port/database` for a replica database): the referral.
pub const PRIMARY_KEY: &str = "chainlog-primary";

/// A documented failure condition (proto/chainlog/v1/chainlog.proto lists each value).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// NOT_FOUND: the key has no live value (as of the tx asked for).
    KeyNotFound,
    /// NOT_FOUND: the server holds no database of that name.
    DatabaseNotFound,
    /// UNAVAILABLE: the server lists the database but cannot serve it (its directory is
    /// missing or damaged); the message says why. Its other databases are served.
    DatabaseUnavailable,
    /// FAILED_PRECONDITION: the histories differ at a tx both hold.
    Diverged,
    /// FAILED_PRECONDITION: the two sides are different databases (identities differ).
    OtherDatabase,
    /// FAILED_PRECONDITION: the replica holds txs its primary does not.
    ReplicaAhead,
    /// FAILED_PRECONDITION: a write to a replica; write to its primary.
    ReadOnlyReplica,
    /// FAILED_PRECONDITION: a replica-only call on a database that is not a replica.
    NotReplica,
    /// FAILED_PRECONDITION: ReplicateTx into a replica that follows a primary itself.
    HasPrimary,
    /// UNAVAILABLE: a synchronous commit is durable on the primary, but not enough replicas
    /// acknowledged it in time.
    NotReplicated,
    /// FAILED_PRECONDITION: a primary that a newer epoch replaced; write to the newer one.
    StalePrimary,
    /// FAILED_PRECONDITION: the two sides' replication protocols differ in major version.
    IncompatibleProtocol,
    /// FAILED_PRECONDITION: the value asked for was dropped by a truncation (or the database
    /// is a digest-only replica); its hash and every proof remain.
    ValueTruncated,
    /// FAILED_PRECONDITION: a condition of an ExecAll did not hold; nothing was written.
    PreconditionFailed,
}

impl Reason {
    /// Every reason, for documentation checks.
    pub const ALL: [Reason; 14] = [
        Reason::KeyNotFound,
        Reason::DatabaseNotFound,
        Reason::DatabaseUnavailable,
        Reason::Diverged,
        Reason::OtherDatabase,
        Reason::ReplicaAhead,
        Reason::ReadOnlyReplica,
        Reason::NotReplica,
        Reason::HasPrimary,
        Reason::NotReplicated,
        Reason::StalePrimary,
        Reason::IncompatibleProtocol,
        Reason::ValueTruncated,
        Reason::PreconditionFailed,
    ];

    /// The metadata value, in snake case.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::KeyNotFound => "key_not_found",
            Reason::DatabaseNotFound => "database_not_found",
            Reason::DatabaseUnavailable => "database_unavailable",
            Reason::Diverged => "diverged",
            Reason::OtherDatabase => "other_database",
            Reason::ReplicaAhead => "replica_ahead",
            Reason::ReadOnlyReplica => "read_only_replica",
            Reason::NotReplica => "not_replica",
            Reason::HasPrimary => "has_primary",
            Reason::NotReplicated => "not_replicated",
            Reason::StalePrimary => "stale_primary",
            Reason::IncompatibleProtocol => "incompatible_protocol",
            Reason::ValueTruncated => "value_truncated",
            Reason::PreconditionFailed => "precondition_failed",
        }
    }

    /// The gRPC code that always goes with this reason.
    pub fn code(self) -> Code {
        match self {
            Reason::KeyNotFound | Reason::DatabaseNotFound => Code::NotFound,
            Reason::NotReplicated | Reason::DatabaseUnavailable => Code::Unavailable,
            Reason::Diverged
            | Reason::OtherDatabase
            | Reason::ReplicaAhead
            | Reason::ReadOnlyReplica
            | Reason::NotReplica
            | Reason::HasPrimary
            | Reason::StalePrimary
            | Reason::IncompatibleProtocol
            | Reason::ValueTruncated
            | Reason::PreconditionFailed => Code::FailedPrecondition,
        }
    }

    /// The status for this reason, with `message` for people.
    pub fn status(self, message: impl Into<String>) -> Status {
        let mut m = tonic::metadata::MetadataMap::new();
        m.insert(
            REASON_KEY,
            tonic::metadata::MetadataValue::from_static(self.as_str()),
        );
        Status::with_metadata(self.code(), message, m)
    }

    /// The status for this reason, naming the primary to go to instead in [`PRIMARY_KEY`].
    pub fn referral(self, message: impl Into<String>, primary: &str) -> Status {
        let mut s = self.status(message);
        if let Ok(v) = tonic::metadata::MetadataValue::try_from(primary) {
            s.metadata_mut().insert(PRIMARY_KEY, v);
        }
        s
    }

    /// The primary a status refers the client to, if it names one.
    pub fn primary_of(status: &Status) -> Option<String> {
        Some(
            status
                .metadata()
                .get(PRIMARY_KEY)?
                .to_str()
                .ok()?
                .to_string(),
        )
    }

    /// The reason a status carries, if it carries a known one with its code.
    pub fn of(status: &Status) -> Option<Reason> {
        let value = status.metadata().get(REASON_KEY)?.to_str().ok()?;
        Reason::ALL
            .into_iter()
            .find(|r| r.as_str() == value && r.code() == status.code())
    }

    /// Whether the two histories are irreconcilable: a replicator stops rather than retry.
    pub fn is_divergence(self) -> bool {
        matches!(
            self,
            Reason::Diverged | Reason::OtherDatabase | Reason::ReplicaAhead
        )
    }

    /// Whether the other side cannot be followed as it is (a divergence, a replaced
    /// primary, another protocol): a replicator stops rather than retry.
    pub fn stops_a_replica(self) -> bool {
        self.is_divergence() || matches!(self, Reason::StalePrimary | Reason::IncompatibleProtocol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_and_need_their_code() {
        for r in Reason::ALL {
            let s = r.status("m");
            assert_eq!(s.code(), r.code());
            assert_eq!(Reason::of(&s), Some(r));
            // The same value under another code is not that reason.
            let mut m = tonic::metadata::MetadataMap::new();
            m.insert(REASON_KEY, r.as_str().parse().unwrap());
            let other = if r.code() == Code::Internal {
                Code::Unknown
            } else {
                Code::Internal
            };
            assert_eq!(Reason::of(&Status::with_metadata(other, "m", m)), None);
        }
        assert_eq!(Reason::of(&Status::not_found("no reason")), None);
    }

    #[test]
    fn every_reason_is_documented_in_the_proto() {
        let proto = include_str!("../../proto/chainlog/v1/chainlog.proto");
        for r in Reason::ALL {
            let line = format!("//   {} ", r.as_str());
            assert!(
                proto.contains(&line),
                "reason {:?} is not documented in chainlog.proto",
                r.as_str()
            );
        }
    }
}
