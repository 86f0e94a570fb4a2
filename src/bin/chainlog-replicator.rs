//! chainlog-replicator: copies a database from one chainlog server to a replica database on
//! another, continuously and resumably. Parses flags, then hands over to
//! `chainlog::replication::external`.

use chainlog::client::ClientTls;
use chainlog::replication::external::{self, CopyConfig, CopyError, Endpoint};
use clap::{Args, Parser};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Exit status when the target's history is not a prefix of the source's (or they are
/// different databases). Other failures exit with 1, usage errors with 2.
const EXIT_DIVERGED: u8 = 3;

/// Copies a source database into a replica database on another server, verifying every tx.
///
/// The target database must be a replica with no primary host, e.g. created with
/// `chainlog database create copy --replication-is-replica`. Each pass starts from the
/// target's last durable tx, so the copy resumes where it stopped after any restart. The
/// target checks each tx (entries root, previous Alh, history root, Alh) before applying it.
///
/// The source user needs the replication permission on the source database (or admin); the
/// target user readwrite on the target database.
///
/// Connection failures are retried with backoff (from 100 ms to 10 s); refusals that a retry
/// would meet again (a wrong password, a missing permission or database, a target that is not
/// a replica without a primary host) stop it at once.
///
/// Exit status: 0 copied (with --once: up to the source's head); 1 refused, or failed after
/// --retries; 2 bad usage; 3 the histories differ (nothing was changed on the target).
#[derive(Debug, Parser)]
#[command(name = "chainlog-replicator", version)]
struct Cli {
    #[command(flatten)]
    source: SourceArgs,
    #[command(flatten)]
    target: TargetArgs,
    /// Stop once the target holds the source's head as of the start
    #[arg(long)]
    once: bool,
    /// Failed attempts in a row before giving up [default: 5 with --once, else never]
    #[arg(long, env = "CHAINLOG_REPLICATOR_RETRIES", value_name = "N")]
    retries: Option<u32>,
    /// Log filter (tracing env-filter syntax) [default: RUST_LOG if set, else info]
    #[arg(long, env = "CHAINLOG_LOG", value_name = "FILTER")]
    log: Option<String>,
    /// Log format: text (a line per event) or json (an object per line)
    #[arg(
        long,
        env = "CHAINLOG_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "text"
    )]
    log_format: chainlog::LogFormat,
}

/// Declares the flags of one end (`source` or `target`) with their variables.
macro_rules! endpoint_args {
    ($name:ident, $side:literal, $env:literal) => {
        #[derive(Debug, Args)]
        struct $name {
            #[arg(help = concat!("Address of the ", $side, " server (https:// with a TLS CA)"), id = concat!($side, "-addr"), long = concat!($side, "-addr"), env = concat!("CHAINLOG_", $env, "_ADDR"), value_name = "URL")]
            addr: String,
            #[arg(help = concat!("Database on the ", $side, " server"), id = concat!($side, "-db"), long = concat!($side, "-db"), env = concat!("CHAINLOG_", $env, "_DB"), default_value = "defaultdb", value_name = "NAME")]
            db: String,
            #[arg(help = concat!("User on the ", $side, " server"), id = concat!($side, "-user"), long = concat!($side, "-user"), env = concat!("CHAINLOG_", $env, "_USER"), default_value = "admin", value_name = "USER")]
            user: String,
            #[arg(help = concat!("Password on the ", $side, " server (prefer the file or the variable)"), id = concat!($side, "-password"), long = concat!($side, "-password"), env = concat!("CHAINLOG_", $env, "_PASSWORD"), hide_env_values = true, value_name = "PASSWORD")]
            password: Option<String>,
            #[arg(help = concat!("File holding the ", $side, " password (first line)"), id = concat!($side, "-password-file"), long = concat!($side, "-password-file"), value_name = "FILE")]
            password_file: Option<PathBuf>,
            #[arg(help = concat!("PEM CA to verify the ", $side, " server's TLS certificate"), id = concat!($side, "-tls-ca"), long = concat!($side, "-tls-ca"), value_name = "FILE")]
            tls_ca: Option<PathBuf>,
            #[arg(help = concat!("PEM client certificate for mutual TLS with the ", $side, " server"), id = concat!($side, "-tls-cert"), long = concat!($side, "-tls-cert"), requires = concat!($side, "-tls-key"), value_name = "FILE")]
            tls_cert: Option<PathBuf>,
            #[arg(help = concat!("PEM key of the client certificate for the ", $side, " server"), id = concat!($side, "-tls-key"), long = concat!($side, "-tls-key"), requires = concat!($side, "-tls-cert"), value_name = "FILE")]
            tls_key: Option<PathBuf>,
        }

        impl $name {
            fn endpoint(&self) -> Result<Endpoint, String> {
                endpoint(EndpointArgs {
                    side: $side,
                    addr: &self.addr,
                    db: &self.db,
                    user: &self.user,
                    password: self.password.as_deref(),
                    password_file: self.password_file.as_deref(),
                    tls_ca: self.tls_ca.as_deref(),
                    tls_cert: self.tls_cert.as_deref(),
                    tls_key: self.tls_key.as_deref(),
                })
            }
        }
    };
}

endpoint_args!(SourceArgs, "source", "SOURCE");
endpoint_args!(TargetArgs, "target", "TARGET");

struct EndpointArgs<'a> {
    side: &'static str,
    addr: &'a str,
    db: &'a str,
    user: &'a str,
    password: Option<&'a str>,
    password_file: Option<&'a Path>,
    tls_ca: Option<&'a Path>,
    tls_cert: Option<&'a Path>,
    tls_key: Option<&'a Path>,
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn endpoint(a: EndpointArgs<'_>) -> Result<Endpoint, String> {
    let password = match (a.password_file, a.password) {
        (Some(f), _) => String::from_utf8_lossy(&read(f)?)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string(),
        (None, Some(p)) => p.to_string(),
        (None, None) => {
            return Err(format!(
                "no {0} password: give --{0}-password-file or CHAINLOG_{1}_PASSWORD",
                a.side,
                a.side.to_uppercase()
            ))
        }
    };
    let tls = if a.tls_ca.is_some() || a.tls_cert.is_some() {
        Some(ClientTls {
            ca_pem: a.tls_ca.map(read).transpose()?,
            identity_pem: match (a.tls_cert, a.tls_key) {
                (Some(c), Some(k)) => Some((read(c)?, read(k)?)),
                _ => None,
            },
            domain: None,
        })
    } else {
        None
    };
    Ok(Endpoint {
        url: a.addr.to_string(),
        database: a.db.to_string(),
        username: a.user.to_string(),
        password: password.into(),
        tls,
    })
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = chainlog::init_logging(cli.log.as_deref(), cli.log_format) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let config = match (cli.source.endpoint(), cli.target.endpoint()) {
        (Ok(source), Ok(target)) => CopyConfig {
            source,
            target,
            follow: !cli.once,
            retries_max: cli.retries.or(if cli.once { Some(5) } else { None }),
        },
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(
        source = %format!("{}/{}", config.source.url, config.source.database),
        target = %format!("{}/{}", config.target.url, config.target.database),
        follow = config.follow,
        "copying"
    );
    let mut last_log = Instant::now();
    let report = move |applied: u64, head: u64| {
        if applied > 0 && last_log.elapsed() >= Duration::from_secs(5) {
            last_log = Instant::now();
            tracing::info!(applied, source_head = head, "copying");
        }
    };
    let copy = external::run(&config, report);
    // SIGTERM (a service manager stopping it) ends it as Ctrl-C does: what was applied is
    // durable on the target, and the next run resumes from there.
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let outcome = tokio::select! {
        r = copy => r,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted; the copy resumes from the target's state next time");
            return ExitCode::SUCCESS;
        }
        () = term => {
            tracing::info!("terminated; the copy resumes from the target's state next time");
            return ExitCode::SUCCESS;
        }
    };
    match outcome {
        Ok(c) => {
            tracing::info!(copied = c.txs, target_tx = c.tx_id, "copy complete");
            println!("{}", c.tx_id);
            ExitCode::SUCCESS
        }
        Err(e @ CopyError::Diverged(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_DIVERGED)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
