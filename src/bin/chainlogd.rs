//! chainlogd: the chainlog server. Parses flags (also from `CHAINLOG_<FLAG>` variables and a
//! TOML file), then hands over to `chainlog::server`.

use chainlog::server::{self, ServerConfig, TlsConfig};
use clap::Parser;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The chainlog server: verifiable key-value databases over gRPC.
///
/// Every flag can also be given as an environment variable (shown below) or as a key of the
/// TOML file named by --config (the flag's name with '_' for '-', e.g. `data_dir = "/var/lib/chainlog"`).
/// A flag beats a variable, which beats the file, which beats the default.
///
/// At first start the data directory is created with the database `defaultdb` and the
/// superuser `admin` (or --admin-user), whose password is CHAINLOG_ADMIN_PASSWORD if set,
/// else random and written to `<data-dir>/admin-password` (mode 0600).
///
/// With --replication-is-replica (immudb's --replication-enabled) the whole server replicates
/// another: its users and every database of the primary (or those --replication-databases
/// names) follow the primary's, each verified; writes here are refused, naming the primary.
#[derive(Debug, Default, Parser, Deserialize)]
#[command(name = "chainlogd", version)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[command(subcommand)]
    #[serde(skip)]
    command: Option<DaemonCmd>,
    /// TOML file with any of the settings below.
    #[arg(long, env = "CHAINLOG_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Where databases and users are kept [default: ./data]
    #[arg(long, env = "CHAINLOG_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// gRPC address to listen on [default: 127.0.0.1:3322]
    #[arg(long, env = "CHAINLOG_LISTEN", value_name = "ADDR")]
    listen: Option<String>,
    /// Address for Prometheus metrics at /metrics [default: none]
    #[arg(long, env = "CHAINLOG_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Ed25519 key (32-byte seed, raw or hex) to sign states with [default: states unsigned]
    #[arg(long, env = "CHAINLOG_SIGNING_KEY", value_name = "FILE")]
    signing_key: Option<PathBuf>,
    /// PEM certificate chain: serve gRPC over TLS (needs --tls-key)
    #[arg(long, env = "CHAINLOG_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert
    #[arg(long, env = "CHAINLOG_TLS_KEY", value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// PEM CA: require client certificates signed by it (mutual TLS)
    #[arg(long, env = "CHAINLOG_TLS_CLIENT_CA", value_name = "FILE")]
    tls_client_ca: Option<PathBuf>,
    /// Session token lifetime in seconds, 60 to 31536000 [default: 86400]
    #[arg(long, env = "CHAINLOG_TOKEN_TTL_SECS", value_name = "SECS")]
    token_ttl_secs: Option<u64>,
    /// After SIGTERM or SIGINT, how long requests in flight get to finish before their
    /// connections are closed, 0 to 600000; a second signal exits at once [default: 5000]
    #[arg(long, env = "CHAINLOG_SHUTDOWN_DRAIN_MS", value_name = "MS")]
    shutdown_drain_ms: Option<u64>,
    /// How long a new connection may take to make its first request (TCP, TLS and HTTP/2
    /// handshakes included), 100 to 300000 [default: 10000]
    #[arg(long, env = "CHAINLOG_HANDSHAKE_TIMEOUT_MS", value_name = "MS")]
    handshake_timeout_ms: Option<u64>,
    /// How long a connection may stay open with no request in flight, 1 to 86400
    /// [default: 300]
    #[arg(long, env = "CHAINLOG_IDLE_TIMEOUT_SECS", value_name = "SECS")]
    idle_timeout_secs: Option<u64>,
    /// Log filter (tracing env-filter syntax, e.g. `info,chainlog::replication=debug`)
    /// [default: RUST_LOG if set, else info]
    #[arg(long, env = "CHAINLOG_LOG", value_name = "FILTER")]
    log: Option<String>,
    /// Log format: text (a line per event) or json (an object per line) [default: text]
    #[arg(long, env = "CHAINLOG_LOG_FORMAT", value_name = "FORMAT")]
    log_format: Option<chainlog::LogFormat>,
    /// Once listening, write the bound gRPC address (host:port) to FILE, for scripts that
    /// start chainlogd on port 0 [default: none]
    #[arg(long, env = "CHAINLOG_READY_FILE", value_name = "FILE")]
    ready_file: Option<PathBuf>,
    /// Name of the superuser created at the first start [default: admin]
    #[arg(long, env = "CHAINLOG_ADMIN_USER", value_name = "USER")]
    admin_user: Option<String>,
    /// This server replicates another whole: its users and its databases [default: false]
    #[arg(long, env = "CHAINLOG_REPLICATION_IS_REPLICA", num_args = 0..=1,
          default_missing_value = "true", value_name = "BOOL", visible_alias = "replication-enabled")]
    #[serde(alias = "replication_enabled")]
    replication_is_replica: Option<bool>,
    /// Host of the primary server [default: 127.0.0.1]
    #[arg(
        long,
        env = "CHAINLOG_REPLICATION_PRIMARY_HOST",
        value_name = "HOST",
        visible_alias = "replication-master-address"
    )]
    #[serde(alias = "replication_master_address")]
    replication_primary_host: Option<String>,
    /// Port of the primary server [default: 3322]
    #[arg(
        long,
        env = "CHAINLOG_REPLICATION_PRIMARY_PORT",
        value_name = "PORT",
        visible_alias = "replication-master-port"
    )]
    #[serde(alias = "replication_master_port")]
    replication_primary_port: Option<u16>,
    /// User to log in to the primary as: a superuser there, or one with the replication
    /// permission on systemdb and on each database followed
    #[arg(
        long,
        env = "CHAINLOG_REPLICATION_PRIMARY_USERNAME",
        value_name = "USER",
        visible_alias = "replication-follower-username"
    )]
    #[serde(alias = "replication_follower_username")]
    replication_primary_username: Option<String>,
    /// Its password (prefer --replication-primary-password-file); never logged
    #[arg(
        long,
        env = "CHAINLOG_REPLICATION_PRIMARY_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD",
        visible_alias = "replication-follower-password"
    )]
    #[serde(alias = "replication_follower_password")]
    replication_primary_password: Option<String>,
    /// File holding that password (first line)
    #[arg(
        long,
        env = "CHAINLOG_REPLICATION_PRIMARY_PASSWORD_FILE",
        value_name = "FILE"
    )]
    replication_primary_password_file: Option<PathBuf>,
    /// PEM CA to verify the primary's TLS certificate (the replicators then use TLS)
    #[arg(long, env = "CHAINLOG_REPLICATION_PRIMARY_TLS_CA", value_name = "FILE")]
    replication_primary_tls_ca: Option<PathBuf>,
    /// PEM client certificate for a primary requiring mutual TLS (with the key)
    #[arg(
        long,
        env = "CHAINLOG_REPLICATION_PRIMARY_TLS_CERT",
        value_name = "FILE"
    )]
    replication_primary_tls_cert: Option<PathBuf>,
    /// PEM key of that client certificate
    #[arg(
        long,
        env = "CHAINLOG_REPLICATION_PRIMARY_TLS_KEY",
        value_name = "FILE"
    )]
    replication_primary_tls_key: Option<PathBuf>,
    /// Follow only these of the primary's databases (comma-separated) [default: all]
    #[arg(long, env = "CHAINLOG_REPLICATION_DATABASES", value_name = "NAMES")]
    replication_databases: Option<String>,
    /// Automatic failover: etcd's client URLs (comma-separated, http://host:port). The
    /// servers of a cluster elect, per database, a primary that holds a lease-backed key
    /// there; the others follow it [default: no failover]
    #[arg(long, env = "CHAINLOG_HA_ETCD_ENDPOINTS", value_name = "URLS")]
    ha_etcd_endpoints: Option<String>,
    /// The cluster's name (its keys in etcd are under `/chainlog/NAME/`) [default: chainlog]
    #[arg(long, env = "CHAINLOG_HA_CLUSTER", value_name = "NAME")]
    ha_cluster: Option<String>,
    /// Databases under failover (comma-separated) [default: defaultdb]
    #[arg(long, env = "CHAINLOG_HA_DATABASES", value_name = "NAMES")]
    ha_databases: Option<String>,
    /// host:port at which the other servers reach this one [default: the address it listens on]
    #[arg(long, env = "CHAINLOG_HA_ADVERTISE", value_name = "ADDR")]
    ha_advertise: Option<String>,
    /// The leadership lease's time to live, 2 to 60; a primary takes writes only until half
    /// of it after its last renewal [default: 3]
    #[arg(long, env = "CHAINLOG_HA_LEASE_TTL_SECS", value_name = "SECS")]
    ha_lease_ttl_secs: Option<u64>,
    /// The user replicas log in to the primary as (the same on every server) [default: admin]
    #[arg(long, env = "CHAINLOG_HA_REPLICATION_USERNAME", value_name = "USER")]
    ha_replication_username: Option<String>,
    /// File holding that user's password (first line)
    #[arg(
        long,
        env = "CHAINLOG_HA_REPLICATION_PASSWORD_FILE",
        value_name = "FILE"
    )]
    ha_replication_password_file: Option<PathBuf>,
    /// Replicas that must hold a tx before the primary acknowledges it, 0 to 16 [default: 0]
    #[arg(long, env = "CHAINLOG_HA_SYNC_ACKS", value_name = "K")]
    ha_sync_acks: Option<u32>,
}

impl Settings {
    /// These settings, each unset one taken from `file`.
    fn or(self, file: Settings) -> Settings {
        Settings {
            command: self.command,
            config: self.config,
            data_dir: self.data_dir.or(file.data_dir),
            listen: self.listen.or(file.listen),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            signing_key: self.signing_key.or(file.signing_key),
            tls_cert: self.tls_cert.or(file.tls_cert),
            tls_key: self.tls_key.or(file.tls_key),
            tls_client_ca: self.tls_client_ca.or(file.tls_client_ca),
            token_ttl_secs: self.token_ttl_secs.or(file.token_ttl_secs),
            shutdown_drain_ms: self.shutdown_drain_ms.or(file.shutdown_drain_ms),
            handshake_timeout_ms: self.handshake_timeout_ms.or(file.handshake_timeout_ms),
            idle_timeout_secs: self.idle_timeout_secs.or(file.idle_timeout_secs),
            log: self.log.or(file.log),
            log_format: self.log_format.or(file.log_format),
            ready_file: self.ready_file.or(file.ready_file),
            admin_user: self.admin_user.or(file.admin_user),
            replication_is_replica: self.replication_is_replica.or(file.replication_is_replica),
            replication_primary_host: self
                .replication_primary_host
                .or(file.replication_primary_host),
            replication_primary_port: self
                .replication_primary_port
                .or(file.replication_primary_port),
            replication_primary_username: self
                .replication_primary_username
                .or(file.replication_primary_username),
            replication_primary_password: self
                .replication_primary_password
                .or(file.replication_primary_password),
            replication_primary_password_file: self
                .replication_primary_password_file
                .or(file.replication_primary_password_file),
            replication_primary_tls_ca: self
                .replication_primary_tls_ca
                .or(file.replication_primary_tls_ca),
            replication_primary_tls_cert: self
                .replication_primary_tls_cert
                .or(file.replication_primary_tls_cert),
            replication_primary_tls_key: self
                .replication_primary_tls_key
                .or(file.replication_primary_tls_key),
            replication_databases: self.replication_databases.or(file.replication_databases),
            ha_etcd_endpoints: self.ha_etcd_endpoints.or(file.ha_etcd_endpoints),
            ha_cluster: self.ha_cluster.or(file.ha_cluster),
            ha_databases: self.ha_databases.or(file.ha_databases),
            ha_advertise: self.ha_advertise.or(file.ha_advertise),
            ha_lease_ttl_secs: self.ha_lease_ttl_secs.or(file.ha_lease_ttl_secs),
            ha_replication_username: self
                .ha_replication_username
                .or(file.ha_replication_username),
            ha_replication_password_file: self
                .ha_replication_password_file
                .or(file.ha_replication_password_file),
            ha_sync_acks: self.ha_sync_acks.or(file.ha_sync_acks),
        }
    }

    /// The failover coordinator's settings, if failover is on (`bound`: the address this
    /// server listens on, the default to advertise).
    fn ha(&self, bound: &str) -> Result<Option<server::ha::HaConfig>, String> {
        let Some(endpoints) = &self.ha_etcd_endpoints else {
            return Ok(None);
        };
        let list = |s: &str| -> Vec<String> {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        };
        let password = match &self.ha_replication_password_file {
            Some(f) => String::from_utf8_lossy(&read(f)?)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
            None => {
                return Err("--ha-etcd-endpoints needs --ha-replication-password-file (the password replicas log in to the primary with)".into())
            }
        };
        let ttl = bounded(
            "ha-lease-ttl-secs",
            self.ha_lease_ttl_secs.unwrap_or(3),
            2..=60,
        )?;
        Ok(Some(server::ha::HaConfig {
            endpoints: list(endpoints),
            cluster: self.ha_cluster.clone().unwrap_or_else(|| "chainlog".into()),
            databases: self
                .ha_databases
                .as_deref()
                .map_or_else(|| vec![server::DEFAULT_DATABASE.to_string()], list),
            advertise: self
                .ha_advertise
                .clone()
                .unwrap_or_else(|| bound.to_string()),
            lease_ttl: Duration::from_secs(ttl),
            username: self
                .ha_replication_username
                .clone()
                .unwrap_or_else(|| "admin".into()),
            password: password.into(),
            sync_acks: u32::try_from(bounded(
                "ha-sync-acks",
                u64::from(self.ha_sync_acks.unwrap_or(0)),
                0..=16,
            )?)
            .unwrap_or(0),
        }))
    }

    /// The primary this server replicates, if it is a replica server.
    fn replica(&self) -> Result<Option<server::catalog::ServerReplica>, String> {
        if self.replication_is_replica != Some(true) {
            return Ok(None);
        }
        let host = self
            .replication_primary_host
            .clone()
            .unwrap_or_else(|| "127.0.0.1".into());
        let port = self.replication_primary_port.unwrap_or(3322);
        if port == 0 {
            return Err("--replication-primary-port 0: must be from 1 to 65535".into());
        }
        let username = self.replication_primary_username.clone().ok_or(
            "--replication-is-replica needs --replication-primary-username (immudb's --replication-follower-username)",
        )?;
        let password = match (
            &self.replication_primary_password_file,
            &self.replication_primary_password,
        ) {
            (Some(f), _) => String::from_utf8_lossy(&read(f)?)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
            (None, Some(p)) => p.clone(),
            (None, None) => return Err("--replication-is-replica needs --replication-primary-password or --replication-primary-password-file".into()),
        };
        let pem = |p: &Option<PathBuf>| -> Result<Option<String>, String> {
            p.as_ref()
                .map(|p| read(p).map(|b| String::from_utf8_lossy(&b).into_owned()))
                .transpose()
        };
        let replica = server::catalog::ServerReplica {
            host,
            port,
            username,
            password: password.into(),
            tls_ca_pem: pem(&self.replication_primary_tls_ca)?,
            tls_cert_pem: pem(&self.replication_primary_tls_cert)?,
            tls_key_pem: pem(&self.replication_primary_tls_key)?.map(Into::into),
            databases: self.replication_databases.as_ref().map(|l| {
                l.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            }),
        };
        // The same checks as a replica database's settings, naming the flag.
        replica
            .settings_for(server::system::SYSTEM_DATABASE)
            .validate()
            .map_err(|e| e.to_string())?;
        Ok(Some(replica))
    }
}

/// `value` of setting `name` if within `range`, else an error naming both.
fn bounded(name: &str, value: u64, range: std::ops::RangeInclusive<u64>) -> Result<u64, String> {
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "--{name} {value}: must be from {} to {}",
            range.start(),
            range.end()
        ))
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

async fn run(args: Settings) -> Result<(), String> {
    let file: Settings = match &args.config {
        Some(p) => toml::from_str(&String::from_utf8_lossy(&read(p)?))
            .map_err(|e| format!("{}: {e}", p.display()))?,
        None => Settings::default(),
    };
    let args = args.or(file);
    chainlog::init_logging(args.log.as_deref(), args.log_format.unwrap_or_default())?;

    let mut config = ServerConfig::new(
        args.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("./data")),
    );
    config.admin_password = std::env::var("CHAINLOG_ADMIN_PASSWORD")
        .ok()
        .filter(|p| !p.is_empty())
        .map(Into::into);
    if let Some(u) = &args.admin_user {
        config.admin_user = u.clone();
    }
    config.replica = args.replica()?;
    if let Some(secs) = args.token_ttl_secs {
        config.token_ttl = Duration::from_secs(bounded("token-ttl-secs", secs, 60..=31_536_000)?);
    }
    if let Some(ms) = args.shutdown_drain_ms {
        config.drain = Duration::from_millis(bounded("shutdown-drain-ms", ms, 0..=600_000)?);
    }
    if let Some(ms) = args.handshake_timeout_ms {
        config.limits.handshake =
            Duration::from_millis(bounded("handshake-timeout-ms", ms, 100..=300_000)?);
    }
    if let Some(secs) = args.idle_timeout_secs {
        config.limits.idle = Duration::from_secs(bounded("idle-timeout-secs", secs, 1..=86_400)?);
    }
    if let Some(p) = &args.signing_key {
        config.signing_key = Some(server::read_signing_key(p).map_err(|e| e.to_string())?);
    }
    match (&args.tls_cert, &args.tls_key) {
        (Some(c), Some(k)) => {
            let client_ca_pem = match &args.tls_client_ca {
                Some(p) => Some(read(p)?),
                None => None,
            };
            config.tls = Some(TlsConfig {
                cert_pem: read(c)?,
                key_pem: read(k)?,
                client_ca_pem,
            });
        }
        (None, None) => {}
        _ => return Err("--tls-cert and --tls-key go together".into()),
    }
    let listen = args
        .listen
        .clone()
        .unwrap_or_else(|| server::DEFAULT_LISTEN.into());
    let state = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || server::open(&config))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?
    };
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(addr = %addr, tls = config.tls.is_some(), signed_states = config.signing_key.is_some(), "listening");
    if let Some(k) = &config.signing_key {
        tracing::info!(public_key = %chainlog::integrity::hex::encode(&k.verifying_key().to_bytes()), "signing states with this key (give it to clients: chainlog --server-key)");
    }
    if let Some(p) = &args.ready_file {
        // Written whole and renamed, so a reader never sees half an address.
        let tmp = p.with_extension("partial");
        std::fs::write(&tmp, addr.to_string())
            .and_then(|()| std::fs::rename(&tmp, p))
            .map_err(|e| format!("--ready-file {}: {e}", p.display()))?;
    }

    if let Some(ha) = args.ha(&addr.to_string())? {
        tracing::info!(cluster = %ha.cluster, advertise = %ha.advertise, databases = ?ha.databases, "automatic failover on etcd");
        tokio::spawn(server::ha::run(state.clone(), ha));
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    if let Some(m) = &args.metrics_listen {
        let l = tokio::net::TcpListener::bind(m)
            .await
            .map_err(|e| format!("listen on {m}: {e}"))?;
        tracing::info!(addr = %l.local_addr().map_err(|e| e.to_string())?, "metrics at /metrics");
        let (state, rx) = (state.clone(), stop_rx.clone());
        tokio::spawn(async move {
            if let Err(e) = server::serve_metrics(l, state, stopped(rx)).await {
                tracing::error!(error = %e, "metrics endpoint failed");
            }
        });
    }
    let drain = config.drain;
    // SIGHUP, which would end the process by default (status 129), is logged and otherwise
    // ignored: TLS material and the log filter are read at start.
    tokio::spawn(async {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: nothing is reloaded (TLS and the log filter are read at start; restart to change them); serving on");
        }
    });
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot watch SIGTERM");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!(
            drain_ms = drain.as_millis() as u64,
            "shutting down: finishing requests in flight (a second signal exits at once)"
        );
        let _ = stop_tx.send(true);
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        // Every acknowledged commit is already durable: it was fsynced before its answer.
        tracing::warn!("second signal: exiting at once; the next start recovers from the log");
        std::process::exit(EXIT_INTERRUPTED);
    });
    server::serve(listener, state, &config, stopped(stop_rx))
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

/// What chainlogd can do besides serving.
#[derive(Debug, clap::Subcommand)]
enum DaemonCmd {
    /// Write a new Ed25519 signing key (64 hex characters, mode 0600) for --signing-key, and
    /// print its public key: give that to clients (`chainlog --server-key HEX`) and replicas
    /// (`--replication-primary-public-key HEX`)
    ///
    /// Example:
    ///
    ///     chainlogd keygen --out /etc/chainlog/signing.key
    Keygen {
        /// The key file to create (never overwritten)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

/// `chainlogd keygen`.
fn keygen(out: &Path) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut seed = [0u8; 32];
    chainlog::server::auth::random_bytes(&mut seed);
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| format!("{}: {e}", out.display()))?;
    writeln!(f, "{}", chainlog::integrity::hex::encode(&seed))
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", out.display()))?;
    println!(
        "{}",
        chainlog::integrity::hex::encode(key.verifying_key().as_bytes())
    );
    eprintln!(
        "chainlogd: signing key written to {} (keep it secret); its public key is above",
        out.display()
    );
    Ok(())
}

/// Exit status after a second SIGTERM or SIGINT cut the shutdown short.
const EXIT_INTERRUPTED: i32 = 130;

fn main() -> std::process::ExitCode {
    let args = Settings::parse();
    if let Some(DaemonCmd::Keygen { out }) = &args.command {
        return match keygen(out) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("chainlogd: {e}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chainlogd: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let outcome = rt.block_on(run(args));
    // Handlers still parked on a blocking thread (a long Get wait, say) do not hold the exit.
    rt.shutdown_timeout(Duration::from_millis(500));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chainlogd: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
