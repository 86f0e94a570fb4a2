//! Wire <-> server and ledger types: database settings, users and permissions, reads. (The
//! conversions of `integrity` types are in [`crate::wire`].)

use super::auth::{Permission, UserRecord};
use super::catalog::{ReplicationSettings, Role, Settings};
use crate::ledger::{self, KeyValue};
use crate::replication::ReplicaState;
use crate::wire;
use secrecy::SecretString;
use tonic::Status;

pub(crate) fn permission_of(p: i32) -> Result<Option<Permission>, Status> {
    match wire::Permission::try_from(p) {
        Ok(wire::Permission::Unspecified) => Ok(None),
        Ok(wire::Permission::Read) => Ok(Some(Permission::Read)),
        Ok(wire::Permission::Readwrite) => Ok(Some(Permission::ReadWrite)),
        Ok(wire::Permission::Admin) => Ok(Some(Permission::Admin)),
        Ok(wire::Permission::Replication) => Ok(Some(Permission::Replication)),
        Err(_) => Err(Status::invalid_argument(format!("unknown permission {p}"))),
    }
}

pub(crate) fn permission_wire(p: Permission) -> wire::Permission {
    match p {
        Permission::Read => wire::Permission::Read,
        Permission::ReadWrite => wire::Permission::Readwrite,
        Permission::Admin => wire::Permission::Admin,
        Permission::Replication => wire::Permission::Replication,
    }
}

pub(crate) fn user_wire(name: String, u: &UserRecord) -> wire::User {
    wire::User {
        name,
        active: !u.inactive,
        superuser: u.superuser,
        grants: u
            .grants
            .iter()
            .map(|(d, p)| wire::DatabaseGrant {
                database: d.clone(),
                permission: permission_wire(*p) as i32,
            })
            .collect(),
    }
}

/// PEM bytes as text (PEM is ASCII).
fn pem(b: &Option<Vec<u8>>, flag: &str) -> Result<Option<String>, Status> {
    b.as_ref()
        .map(|b| {
            String::from_utf8(b.clone())
                .map_err(|_| Status::invalid_argument(format!("--{flag}: not PEM text")))
        })
        .transpose()
}

pub(crate) fn settings_of(s: Option<&wire::DatabaseSettings>) -> Result<Settings, Status> {
    let Some(s) = s else {
        return Ok(Settings::default());
    };
    let buffered = match s.durability.map(wire::Durability::try_from) {
        None | Some(Ok(wire::Durability::Unspecified)) => None,
        Some(Ok(wire::Durability::Synced)) => Some(false),
        Some(Ok(wire::Durability::Buffered)) => Some(true),
        Some(Err(_)) => return Err(Status::invalid_argument("unknown durability")),
    };
    let replication = match &s.replication {
        None => Default::default(),
        Some(r) => ReplicationSettings {
            is_replica: r.is_replica,
            primary_host: r.primary_host.clone(),
            primary_port: r
                .primary_port
                .map(|p| {
                    u16::try_from(p)
                        .map_err(|_| Status::invalid_argument("primary port above 65535"))
                })
                .transpose()?,
            primary_database: r.primary_database.clone(),
            primary_username: r.primary_username.clone(),
            primary_password: r.primary_password.clone().map(SecretString::from),
            sync_acks: r.sync_acks,
            sync_timeout_ms: r.sync_timeout_ms,
            prefetch_tx_buffer_size: r.prefetch_tx_buffer_size,
            primary_tls_ca_pem: pem(&r.primary_tls_ca_pem, "replication-primary-tls-ca")?,
            primary_tls_cert_pem: pem(&r.primary_tls_cert_pem, "replication-primary-tls-cert")?,
            primary_tls_key_pem: pem(&r.primary_tls_key_pem, "replication-primary-tls-key")?
                .map(SecretString::from),
            primary_tls_ca_file: None,
            primary_tls_cert_file: None,
            primary_tls_key_file: None,
            commit_concurrency: r.commit_concurrency,
            allow_tx_discarding: r.allow_tx_discarding,
            skip_integrity_check: r.skip_integrity_check,
            wait_for_indexing: r.wait_for_indexing,
            primary_public_key: r.primary_public_key.clone(),
            digest_only: r.digest_only,
        },
    };
    Ok(Settings {
        buffered,
        segment_bytes_max: s.segment_bytes_max,
        checkpoint_txs: s.checkpoint_txs,
        replication,
        retention_period_secs: s.retention_period_secs,
        retention_txs: s.retention_txs,
        truncation_interval_secs: s.truncation_interval_secs,
    })
}

pub(crate) fn settings_wire(s: &Settings) -> wire::DatabaseSettings {
    let o = s.options();
    wire::DatabaseSettings {
        durability: Some(if s.buffered == Some(true) {
            wire::Durability::Buffered
        } else {
            wire::Durability::Synced
        } as i32),
        segment_bytes_max: Some(o.segment_bytes_max),
        checkpoint_txs: Some(o.checkpoint_txs),
        replication: Some(replication_wire(&s.replication)),
        retention_period_secs: Some(s.retention_period_secs.unwrap_or(0)),
        retention_txs: Some(s.retention_txs.unwrap_or(0)),
        truncation_interval_secs: Some(s.truncation_interval().as_secs()),
    }
}

/// Replication settings as the API shows them: never the password.
fn replication_wire(r: &ReplicationSettings) -> wire::ReplicationSettings {
    wire::ReplicationSettings {
        is_replica: Some(r.is_replica()),
        primary_host: r.primary_host.clone(),
        primary_port: r.primary_port.map(u32::from),
        primary_database: r.primary_database.clone(),
        primary_username: r.primary_username.clone(),
        primary_password: None,
        sync_acks: r.sync_acks,
        sync_timeout_ms: r.sync_timeout_ms,
        prefetch_tx_buffer_size: r.prefetch_tx_buffer_size,
        primary_password_set: r.primary_password.is_some(),
        primary_tls_ca_pem: r.primary_tls_ca_pem.clone().map(String::into_bytes),
        primary_tls_cert_pem: r.primary_tls_cert_pem.clone().map(String::into_bytes),
        primary_tls_key_pem: None,
        primary_tls_key_set: r.primary_tls_key_pem.is_some(),
        commit_concurrency: r.commit_concurrency,
        allow_tx_discarding: Some(r.allow_tx_discarding == Some(true)),
        skip_integrity_check: Some(false),
        wait_for_indexing: Some(true),
        primary_public_key: r.primary_public_key.clone(),
        digest_only: Some(r.digest_only()),
    }
}

pub(crate) fn role_wire(r: Role) -> wire::Role {
    match r {
        Role::Primary => wire::Role::Primary,
        Role::Replica => wire::Role::Replica,
        Role::ExternalReplica => wire::Role::ExternalReplica,
    }
}

pub(crate) fn replica_state_wire(s: ReplicaState) -> wire::ReplicaState {
    match s {
        ReplicaState::Connecting => wire::ReplicaState::Connecting,
        ReplicaState::CatchingUp => wire::ReplicaState::CatchingUp,
        ReplicaState::Streaming => wire::ReplicaState::Streaming,
        ReplicaState::Diverged => wire::ReplicaState::Diverged,
        ReplicaState::Stopped => wire::ReplicaState::Stopped,
    }
}

/// A live value as read.
pub(crate) fn entry_wire(kv: KeyValue) -> wire::Entry {
    wire::Entry {
        key: kv.key,
        value: kv.value,
        tx: kv.tx,
        deleted: false,
        value_truncated: kv.value_truncated,
        value_hash: Vec::new(),
        metadata: wire::metadata_wire(kv.meta),
        referenced_by: None,
        value_streamed: false,
    }
}

/// A committed tx with its entries, as the wire carries it.
pub(crate) fn tx_wire(tx: ledger::Tx) -> wire::Tx {
    let id = tx.header.id;
    wire::Tx {
        header: Some((&tx.header).into()),
        entries: tx
            .entries
            .into_iter()
            .map(|e| wire::Entry {
                key: e.key,
                value: e.value,
                tx: id,
                deleted: e.meta.deleted,
                metadata: wire::metadata_wire(e.meta),
                referenced_by: None,
                value_streamed: false,
                value_truncated: e.dropped,
                value_hash: if e.dropped {
                    e.value_hash.0.to_vec()
                } else {
                    Vec::new()
                },
            })
            .collect(),
    }
}
