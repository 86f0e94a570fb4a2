//! A database's settings as the catalog keeps them, how an update merges into them, and
//! their bounds: every setting has a documented range (docs/settings.md), and a value out of
//! it is refused naming the setting as the CLI spells it.
//!
//! The replica's connection (host, port, user, password, TLS) is kept whole: the password
//! and the TLS key are never returned nor logged (`SecretString`), TLS material is kept as
//! its PEM content (checked when set, never read from a path the server picks), and an update
//! that moves the connection elsewhere must bring the password again, so a stored password is
//! never sent to a new place.

use crate::ledger::{Durability, Options};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// A setting outside its range, named as the CLI spells it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--{name}: {reason}")]
pub struct SettingError {
    pub name: &'static str,
    pub reason: String,
}

fn bad(name: &'static str, reason: impl Into<String>) -> SettingError {
    SettingError {
        name,
        reason: reason.into(),
    }
}

/// Writes a secret into the private catalog file: the one place it is kept.
fn expose<S: serde::Serializer>(p: &Option<SecretString>, s: S) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => s.serialize_some(p.expose_secret()),
        None => s.serialize_none(),
    }
}

/// Settings a database is created or updated with; `None` keeps the current value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Settings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buffered: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_bytes_max: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_txs: Option<u64>,
    #[serde(default)]
    pub replication: ReplicationSettings,
    /// Drop the values of txs older than this (seconds; 0: keep).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_period_secs: Option<u64>,
    /// Drop the values of all but the newest this many txs (0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_txs: Option<u64>,
    /// How often the retention runs, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncation_interval_secs: Option<u64>,
}

/// Default interval of the background retention.
pub const TRUNCATION_INTERVAL_SECS_DEFAULT: u64 = 3600;
/// Longest interval of the background retention (30 days).
pub const TRUNCATION_INTERVAL_SECS_MAX: u64 = 30 * 86_400;

/// How a database replicates. Kept in `catalog.json` (mode 0600: it holds the password and
/// the TLS key).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReplicationSettings {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_replica: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_database: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_username: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "expose"
    )]
    pub primary_password: Option<SecretString>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_acks: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefetch_tx_buffer_size: Option<u32>,
    /// PEM of the CA certificate(s) the primary's certificate must chain to (then TLS is used).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_tls_ca_pem: Option<String>,
    /// PEM client certificate chain for a primary that requires mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_tls_cert_pem: Option<String>,
    /// PEM private key of that certificate.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "expose"
    )]
    pub primary_tls_key_pem: Option<SecretString>,
    /// Older catalogs named files; `Catalog::open` reads them once into the PEM fields.
    #[serde(default, skip_serializing)]
    pub primary_tls_ca_file: Option<String>,
    #[serde(default, skip_serializing)]
    pub primary_tls_cert_file: Option<String>,
    #[serde(default, skip_serializing)]
    pub primary_tls_key_file: Option<String>,
    /// immudb's `--replication-commit-concurrency`: kept and shown; chainlog's replicator
    /// pipelines its batches whatever it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_concurrency: Option<u32>,
    /// immudb's `--replication-allow-tx-discarding`: a replica whose history parts from its
    /// primary's (a former primary rejoining) cuts its txs past the fork, kept in an evidence
    /// file, and follows. Off: it stops and says how many txs it would discard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_tx_discarding: Option<bool>,
    /// immudb's `--replication-skip-integrity-check`: only `false` (never stored otherwise).
    #[serde(default, skip)]
    pub skip_integrity_check: Option<bool>,
    /// immudb's `--replication-wait-for-indexing`: only `true` (never stored otherwise).
    #[serde(default, skip)]
    pub wait_for_indexing: Option<bool>,
    /// The primary's Ed25519 public key (hex) its signed checkpoints must verify with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_public_key: Option<String>,
    /// Store replicated txs without their values (after verifying them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest_only: Option<bool>,
}

/// Default wait of a synchronous commit for its acknowledgements.
pub const SYNC_TIMEOUT_MS_DEFAULT: u64 = 5_000;
/// Longest a synchronous commit may be set to wait.
pub const SYNC_TIMEOUT_MS_MAX: u64 = 600_000;
/// Most acknowledgements a synchronous commit may wait for.
pub const SYNC_ACKS_MAX: u32 = 16;
/// Most txs the primary may send ahead of a replica's acknowledgements.
pub const PREFETCH_TXS_MAX: u32 = 1_000_000;
/// Longest host name.
pub const HOST_BYTES_MAX: usize = 253;
/// Largest `--replication-commit-concurrency` accepted.
pub const COMMIT_CONCURRENCY_MAX: u32 = 1024;

/// Where a database takes its txs from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// From clients' writes.
    Primary,
    /// From its primary, through its own replicator.
    Replica,
    /// From an external replicator, through ReplicateTx (a replica with no primary host).
    ExternalReplica,
}

/// A host name (letters, digits, '-' and '.') or an IP address.
fn check_host(h: &str) -> Result<(), SettingError> {
    let name = "replication-primary-host";
    if h.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let ok = !h.is_empty()
        && h.len() <= HOST_BYTES_MAX
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(bad(
            name,
            format!("{h:?} is neither a host name nor an IP address"),
        ))
    }
}

/// PEM holding at least one certificate, all of which parse.
fn check_certs(name: &'static str, pem: &str) -> Result<(), SettingError> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;
    let mut n = 0;
    for c in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        c.map_err(|e| bad(name, format!("not a PEM certificate: {e}")))?;
        n += 1;
    }
    if n == 0 {
        return Err(bad(name, "holds no PEM certificate"));
    }
    Ok(())
}

fn check_key(name: &'static str, pem: &str) -> Result<(), SettingError> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map(|_| ())
        .map_err(|e| bad(name, format!("not a PEM private key: {e}")))
}

impl ReplicationSettings {
    /// The role these settings give a database.
    pub fn role(&self) -> Role {
        if !self.is_replica() {
            Role::Primary
        } else if self.primary_host.as_deref().is_some_and(|h| !h.is_empty()) {
            Role::Replica
        } else {
            Role::ExternalReplica
        }
    }

    /// Whether an update sets any part of the replica's connection to its primary (which only
    /// a superuser may change: it holds credentials).
    pub fn touches_connection(&self) -> bool {
        self.is_replica.is_some()
            || self.primary_host.is_some()
            || self.primary_port.is_some()
            || self.primary_database.is_some()
            || self.primary_username.is_some()
            || self.primary_password.is_some()
            || self.primary_tls_ca_pem.is_some()
            || self.primary_tls_cert_pem.is_some()
            || self.primary_tls_key_pem.is_some()
            || self.primary_public_key.is_some()
    }

    /// These settings with `u`'s set fields applied. Moving the connection (another host,
    /// port, user or TLS material) while a password is stored needs the password again in
    /// the same update: a stored password is never sent to a new place.
    pub fn merged(&self, u: &ReplicationSettings) -> Result<ReplicationSettings, SettingError> {
        fn changes<T: PartialEq>(new: &Option<T>, old: &Option<T>) -> bool {
            new.as_ref().is_some_and(|n| Some(n) != old.as_ref())
        }
        let moves = changes(&u.primary_host, &self.primary_host)
            || changes(&u.primary_port, &self.primary_port)
            || changes(&u.primary_username, &self.primary_username)
            || changes(&u.primary_tls_ca_pem, &self.primary_tls_ca_pem)
            || changes(&u.primary_tls_cert_pem, &self.primary_tls_cert_pem)
            || u.primary_tls_key_pem.is_some();
        if moves && self.primary_password.is_some() && u.primary_password.is_none() {
            return Err(bad(
                "replication-primary-password",
                "changing the primary's host, port, user or TLS needs the password again (--replication-primary-password or --replication-primary-password-file) in the same update: the stored one is never sent to a new place",
            ));
        }
        let pick = |n: &Option<String>, o: &Option<String>| n.clone().or_else(|| o.clone());
        Ok(ReplicationSettings {
            is_replica: u.is_replica.or(self.is_replica),
            primary_host: pick(&u.primary_host, &self.primary_host),
            primary_port: u.primary_port.or(self.primary_port),
            primary_database: pick(&u.primary_database, &self.primary_database),
            primary_username: pick(&u.primary_username, &self.primary_username),
            primary_password: u
                .primary_password
                .clone()
                .or_else(|| self.primary_password.clone()),
            sync_acks: u.sync_acks.or(self.sync_acks),
            sync_timeout_ms: u.sync_timeout_ms.or(self.sync_timeout_ms),
            prefetch_tx_buffer_size: u.prefetch_tx_buffer_size.or(self.prefetch_tx_buffer_size),
            primary_tls_ca_pem: pick(&u.primary_tls_ca_pem, &self.primary_tls_ca_pem),
            primary_tls_cert_pem: pick(&u.primary_tls_cert_pem, &self.primary_tls_cert_pem),
            primary_tls_key_pem: u
                .primary_tls_key_pem
                .clone()
                .or_else(|| self.primary_tls_key_pem.clone()),
            primary_tls_ca_file: None,
            primary_tls_cert_file: None,
            primary_tls_key_file: None,
            commit_concurrency: u.commit_concurrency.or(self.commit_concurrency),
            allow_tx_discarding: u.allow_tx_discarding.or(self.allow_tx_discarding),
            skip_integrity_check: u.skip_integrity_check,
            wait_for_indexing: u.wait_for_indexing,
            primary_public_key: pick(&u.primary_public_key, &self.primary_public_key),
            digest_only: u.digest_only.or(self.digest_only),
        })
    }

    /// Checks every setting against its range.
    pub fn validate(&self) -> Result<(), SettingError> {
        if let Some(h) = self.primary_host.as_deref().filter(|h| !h.is_empty()) {
            check_host(h)?;
        }
        if self.primary_port == Some(0) {
            return Err(bad("replication-primary-port", "must be from 1 to 65535"));
        }
        if let Some(d) = &self.primary_database {
            let ok = !d.is_empty()
                && d.len() <= super::catalog::DATABASE_NAME_BYTES_MAX
                && d.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !ok {
                return Err(bad(
                    "replication-primary-database",
                    format!("{d:?} is not a database name (1 to 64 of a-z, A-Z, 0-9, '_', '-')"),
                ));
            }
        }
        if let Some(u) = &self.primary_username {
            let ok = !u.is_empty()
                && u.len() <= super::auth::USER_NAME_BYTES_MAX
                && u.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.@".contains(&b));
            if !ok {
                return Err(bad(
                    "replication-primary-username",
                    format!("{u:?} is not a user name"),
                ));
            }
        }
        if self.sync_acks.is_some_and(|k| k > SYNC_ACKS_MAX) {
            return Err(bad(
                "replication-sync-acks",
                format!("must be from 0 to {SYNC_ACKS_MAX}"),
            ));
        }
        if self
            .sync_timeout_ms
            .is_some_and(|t| t == 0 || t > SYNC_TIMEOUT_MS_MAX)
        {
            return Err(bad(
                "replication-sync-timeout-ms",
                format!("must be from 1 to {SYNC_TIMEOUT_MS_MAX}"),
            ));
        }
        if self
            .prefetch_tx_buffer_size
            .is_some_and(|n| n == 0 || n > PREFETCH_TXS_MAX)
        {
            return Err(bad(
                "replication-prefetch-tx-buffer-size",
                format!("must be from 1 to {PREFETCH_TXS_MAX}"),
            ));
        }
        if let Some(ca) = &self.primary_tls_ca_pem {
            check_certs("replication-primary-tls-ca", ca)?;
        }
        if let Some(cert) = &self.primary_tls_cert_pem {
            check_certs("replication-primary-tls-cert", cert)?;
        }
        if let Some(key) = &self.primary_tls_key_pem {
            check_key("replication-primary-tls-key", key.expose_secret())?;
        }
        if self.primary_tls_cert_pem.is_some() != self.primary_tls_key_pem.is_some() {
            return Err(bad(
                "replication-primary-tls-cert",
                "--replication-primary-tls-cert and --replication-primary-tls-key go together",
            ));
        }
        if self.primary_tls_cert_pem.is_some() && self.primary_tls_ca_pem.is_none() {
            return Err(bad(
                "replication-primary-tls-ca",
                "a client certificate is for TLS: give the primary's CA (--replication-primary-tls-ca) too",
            ));
        }
        if let Some(k) = &self.primary_public_key {
            let ok = crate::integrity::Digest::from_hex(k)
                .is_some_and(|d| ed25519_dalek::VerifyingKey::from_bytes(&d.0).is_ok());
            if !ok {
                return Err(bad(
                    "replication-primary-public-key",
                    "not an Ed25519 public key (64 hex characters)",
                ));
            }
        }
        if self
            .commit_concurrency
            .is_some_and(|n| n == 0 || n > COMMIT_CONCURRENCY_MAX)
        {
            return Err(bad(
                "replication-commit-concurrency",
                format!("must be from 1 to {COMMIT_CONCURRENCY_MAX}"),
            ));
        }
        if self.skip_integrity_check == Some(true) {
            return Err(bad(
                "replication-skip-integrity-check",
                "chainlog verifies every replicated tx (its hashes, its chain, its key map) before it applies it; that cannot be turned off",
            ));
        }
        if self.wait_for_indexing == Some(false) {
            return Err(bad(
                "replication-wait-for-indexing",
                "chainlog indexes every tx before a reader sees it or a replica acknowledges it; that cannot be turned off",
            ));
        }
        Ok(())
    }

    pub fn is_replica(&self) -> bool {
        self.is_replica == Some(true)
    }

    /// Whether replicated txs are stored without their values.
    pub fn digest_only(&self) -> bool {
        self.digest_only == Some(true)
    }

    /// `host:port/database`, for status output.
    pub fn primary(&self) -> String {
        format!(
            "{}:{}/{}",
            self.primary_host.as_deref().unwrap_or(""),
            self.primary_port.unwrap_or(3322),
            self.primary_database
                .as_deref()
                .unwrap_or(super::DEFAULT_DATABASE)
        )
    }

    /// Reads the TLS files an older catalog named into their PEM fields (once, at open).
    pub(crate) fn migrate_tls_files(&mut self) -> Result<bool, String> {
        let read = |p: &Option<String>| -> Result<Option<String>, String> {
            p.as_ref()
                .map(|p| std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}")))
                .transpose()
        };
        let moved = self.primary_tls_ca_file.is_some()
            || self.primary_tls_cert_file.is_some()
            || self.primary_tls_key_file.is_some();
        if let Some(ca) = read(&self.primary_tls_ca_file.take())? {
            self.primary_tls_ca_pem = Some(ca);
        }
        if let Some(cert) = read(&self.primary_tls_cert_file.take())? {
            self.primary_tls_cert_pem = Some(cert);
        }
        if let Some(key) = read(&self.primary_tls_key_file.take())? {
            self.primary_tls_key_pem = Some(key.into());
        }
        Ok(moved)
    }
}

impl Settings {
    /// The settings as one line for the log: what was set, never a password or a key.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(b) = self.buffered {
            parts.push(format!("buffered={b}"));
        }
        if let Some(n) = self.segment_bytes_max {
            parts.push(format!("segment_bytes_max={n}"));
        }
        if let Some(n) = self.checkpoint_txs {
            parts.push(format!("checkpoint_txs={n}"));
        }
        let r = &self.replication;
        if r.is_replica == Some(true) {
            let primary = match (&r.primary_host, r.primary_port) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.clone(),
                _ => "(no primary: external replication)".to_string(),
            };
            parts.push(format!(
                "replica of {}{primary}/{}{}",
                r.primary_username
                    .as_ref()
                    .map_or(String::new(), |u| format!("{u}@")),
                r.primary_database.as_deref().unwrap_or("(same name)"),
                if r.primary_tls_ca_pem.is_some() {
                    " over TLS"
                } else {
                    ""
                }
            ));
        } else if r.is_replica == Some(false) {
            parts.push("primary".to_string());
        }
        if let Some(k) = r.sync_acks {
            parts.push(format!("sync_acks={k}"));
        }
        if let Some(t) = r.sync_timeout_ms {
            parts.push(format!("sync_timeout_ms={t}"));
        }
        if let Some(a) = r.allow_tx_discarding {
            parts.push(format!("allow_tx_discarding={a}"));
        }
        if r.primary_public_key.is_some() {
            parts.push("primary_public_key set".to_string());
        }
        if r.digest_only == Some(true) {
            parts.push("digest_only".to_string());
        }
        if let Some(s) = self.retention_period_secs {
            parts.push(format!("retention_period_secs={s}"));
        }
        if let Some(n) = self.retention_txs {
            parts.push(format!("retention_txs={n}"));
        }
        if let Some(s) = self.truncation_interval_secs {
            parts.push(format!("truncation_interval_secs={s}"));
        }
        if parts.is_empty() {
            "defaults".to_string()
        } else {
            parts.join(", ")
        }
    }

    /// These settings with `update`'s set fields applied (see
    /// [`ReplicationSettings::merged`]).
    pub fn merged(&self, update: &Settings) -> Result<Settings, SettingError> {
        Ok(Settings {
            buffered: update.buffered.or(self.buffered),
            segment_bytes_max: update.segment_bytes_max.or(self.segment_bytes_max),
            checkpoint_txs: update.checkpoint_txs.or(self.checkpoint_txs),
            replication: self.replication.merged(&update.replication)?,
            retention_period_secs: update.retention_period_secs.or(self.retention_period_secs),
            retention_txs: update.retention_txs.or(self.retention_txs),
            truncation_interval_secs: update
                .truncation_interval_secs
                .or(self.truncation_interval_secs),
        })
    }

    /// Checks every setting against its range.
    pub fn validate(&self) -> Result<(), SettingError> {
        self.options().validate().map_err(|e| match e {
            crate::ledger::LedgerError::InvalidOption { name, reason } => bad(
                match name {
                    "segment_bytes_max" => "segment-bytes-max",
                    "checkpoint_txs" => "checkpoint-txs",
                    other => other,
                },
                reason,
            ),
            other => bad("settings", other.to_string()),
        })?;
        if self
            .truncation_interval_secs
            .is_some_and(|s| !(1..=TRUNCATION_INTERVAL_SECS_MAX).contains(&s))
        {
            return Err(bad(
                "truncation-frequency",
                format!("must be from 1 to {TRUNCATION_INTERVAL_SECS_MAX} seconds"),
            ));
        }
        self.replication.validate()
    }

    /// Whether a retention is set.
    pub fn retains(&self) -> bool {
        self.retention_period_secs.unwrap_or(0) > 0 || self.retention_txs.unwrap_or(0) > 0
    }

    /// How often the retention runs.
    pub fn truncation_interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs(
            self.truncation_interval_secs
                .unwrap_or(TRUNCATION_INTERVAL_SECS_DEFAULT),
        )
    }

    pub fn options(&self) -> Options {
        let d = Options::default();
        Options {
            durability: if self.buffered == Some(true) {
                Durability::Buffered
            } else {
                Durability::Synced
            },
            segment_bytes_max: self.segment_bytes_max.unwrap_or(d.segment_bytes_max),
            checkpoint_txs: self.checkpoint_txs.unwrap_or(d.checkpoint_txs),
            ..d
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(f: impl FnOnce(&mut ReplicationSettings)) -> ReplicationSettings {
        let mut r = ReplicationSettings::default();
        f(&mut r);
        r
    }

    #[test]
    fn every_setting_is_bounded_and_named() {
        let cases: Vec<(ReplicationSettings, &str)> = vec![
            (
                with(|r| r.primary_port = Some(0)),
                "replication-primary-port",
            ),
            (
                with(|r| r.primary_host = Some("a b/../x".into())),
                "replication-primary-host",
            ),
            (
                with(|r| r.sync_timeout_ms = Some(SYNC_TIMEOUT_MS_MAX + 1)),
                "replication-sync-timeout-ms",
            ),
            (
                with(|r| r.sync_timeout_ms = Some(0)),
                "replication-sync-timeout-ms",
            ),
            (
                with(|r| r.sync_acks = Some(SYNC_ACKS_MAX + 1)),
                "replication-sync-acks",
            ),
            (
                with(|r| r.prefetch_tx_buffer_size = Some(0)),
                "replication-prefetch-tx-buffer-size",
            ),
            (
                with(|r| r.primary_tls_ca_pem = Some("not pem".into())),
                "replication-primary-tls-ca",
            ),
            (
                with(|r| r.primary_database = Some("a/b".into())),
                "replication-primary-database",
            ),
        ];
        for (r, name) in cases {
            assert_eq!(r.validate().map_err(|e| e.name), Err(name), "{r:?}");
        }
        for h in ["db1.example.com", "127.0.0.1", "::1", "primary"] {
            assert!(check_host(h).is_ok(), "{h}");
        }
    }

    #[test]
    fn moving_the_connection_needs_the_password_again() {
        let stored = with(|r| {
            r.primary_host = Some("a".into());
            r.primary_password = Some("secret".into());
        });
        let to_b = with(|r| r.primary_host = Some("b".into()));
        let e = stored.merged(&to_b).unwrap_err();
        assert_eq!(e.name, "replication-primary-password");
        let with_pw = with(|r| {
            r.primary_host = Some("b".into());
            r.primary_password = Some("other".into());
        });
        assert_eq!(
            stored.merged(&with_pw).unwrap().primary_host.as_deref(),
            Some("b")
        );
        // The same host again, or another setting, keeps the password.
        let same = with(|r| r.primary_host = Some("a".into()));
        assert!(stored.merged(&same).unwrap().primary_password.is_some());
        let acks = with(|r| r.sync_acks = Some(1));
        assert!(stored.merged(&acks).unwrap().primary_password.is_some());
    }
}
