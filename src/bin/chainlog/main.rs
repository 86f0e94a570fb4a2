//! chainlog: the command-line client. Parses arguments, calls the SDK, prints the answer:
//! one file per group of commands, each a thin layer over `chainlog::client`.

mod backup;
mod data;
mod databases;
mod import;
mod input;
mod out;
mod replication;
mod session;
mod sets;
mod users;
mod verify;

use chainlog::client::ClientError;
use clap::{Parser, Subcommand};
use databases::DatabaseCmd;
use out::Out;
use replication::ReplicationCmd;
use session::Session;
use std::path::PathBuf;
use std::process::ExitCode;
use users::UserCmd;

/// Exit status of a failed verification: the server's answer does not prove itself against
/// the trusted state (tamper evidence). Other failures exit with 1; usage errors with 2.
const EXIT_VERIFICATION_FAILED: u8 = 3;

/// chainlog command-line client.
///
/// Exit status: 0 success; 1 error; 2 bad usage; 3 verification failed (the server's answer
/// does not prove itself against the trusted state: possible tampering; also `verify` finding
/// damage).
#[derive(Debug, Parser)]
#[command(name = "chainlog", version)]
struct Cli {
    /// Server address
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "CHAINLOG_ADDR",
        default_value = "http://127.0.0.1:3322"
    )]
    addr: String,
    /// User to log in as
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "CHAINLOG_USER",
        default_value = "admin"
    )]
    user: String,
    /// Password (prefer --password-file or CHAINLOG_PASSWORD)
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "CHAINLOG_PASSWORD",
        hide_env_values = true
    )]
    password: Option<String>,
    /// File holding the password (first line)
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        value_name = "FILE"
    )]
    password_file: Option<PathBuf>,
    /// Database to act on [default: defaultdb; for `verify` and `replication status`, every
    /// database]
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "CHAINLOG_DB"
    )]
    db: Option<String>,
    /// Print JSON instead of text (keys and values that are not UTF-8 as `key_hex` and
    /// `value_hex`; errors as {"error": {code, reason, message, exit}})
    #[arg(long, global = true, help_heading = "Global options")]
    json: bool,
    /// KEY (and PREFIX) arguments are hex: any bytes
    #[arg(long, global = true, help_heading = "Global options")]
    key_hex: bool,
    /// VALUE arguments are hex: any bytes
    #[arg(long, global = true, help_heading = "Global options")]
    value_hex: bool,
    /// PEM CA to verify the server's TLS certificate (use an https:// address)
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "CHAINLOG_TLS_CA",
        value_name = "FILE"
    )]
    tls_ca: Option<PathBuf>,
    /// PEM client certificate, for a server that requires mutual TLS (with --tls-key)
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "CHAINLOG_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "CHAINLOG_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
    /// Longest wait for the connection (TCP, then TLS), in seconds
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "CHAINLOG_CONNECT_TIMEOUT",
        value_name = "SECS",
        default_value_t = 5
    )]
    connect_timeout: u64,
    /// Longest wait for each answer, in seconds (0: none; streams such as backups are not
    /// limited)
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "CHAINLOG_TIMEOUT",
        value_name = "SECS",
        default_value_t = 30
    )]
    timeout: u64,
    /// Where `chainlog login` keeps session tokens [default: ~/.chainlog/session.json]
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "CHAINLOG_SESSION_FILE",
        value_name = "FILE"
    )]
    session_file: Option<PathBuf>,
    /// Where verified commands keep trusted states [default: ~/.chainlog/state.json]
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "CHAINLOG_STATE_FILE",
        value_name = "FILE"
    )]
    state_file: Option<PathBuf>,
    /// Hex Ed25519 public key of the server: verified commands then require signed states
    #[arg(
        long,
        global = true,
        help_heading = "Global options",
        env = "CHAINLOG_SERVER_KEY",
        value_name = "HEX"
    )]
    server_key: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Log in once: later commands to this server use the session (kept in --session-file,
    /// mode 0600) until it expires or `chainlog logout`, instead of sending the password
    /// each time
    ///
    /// Example:
    ///
    ///     CHAINLOG_PASSWORD=… chainlog --user ann login; chainlog get k; chainlog logout
    Login,
    /// End the stored session of --user on this server (the token is revoked on the server
    /// too) and forget it
    Logout,
    /// Create, list and update databases
    #[command(subcommand)]
    Database(DatabaseCmd),
    /// Create and list users, grant and revoke permissions, change passwords
    #[command(subcommand)]
    User(UserCmd),
    /// Set KEY to VALUE (one transaction)
    ///
    /// With --value-file, a file above 32 MiB (up to 256 MiB) is streamed (StreamSet).
    ///
    /// With several KEY VALUE pairs, all are written in one tx. With conditions
    /// (--must-exist, --must-not-exist, --not-modified-after), the tx is written only if all
    /// hold when it is committed (immudb's ExecAll with preconditions): else nothing is
    /// written and the command fails with reason precondition_failed.
    ///
    /// Examples:
    ///
    ///     chainlog set a 1 b 2
    ///
    ///     chainlog set balance 90 --not-modified-after balance=17   # compare-and-set
    ///
    ///     chainlog set session:42 token --expires-in 30m   # absent to reads after 30 min
    ///
    ///     chainlog set audit:7 blob --no-index   # in tx and proofs, never read by key
    Set {
        /// KEY VALUE [KEY VALUE …] (with --value-file: KEY alone)
        #[arg(required = true, num_args = 1.., value_names = ["KEY", "VALUE"])]
        pairs: Vec<String>,
        /// The value of the one KEY is this file's content, as it is (binary-safe)
        #[arg(long, value_name = "FILE")]
        value_file: Option<PathBuf>,
        /// Write only if KEY has a live value (repeat)
        #[arg(long, value_name = "KEY")]
        must_exist: Vec<String>,
        /// Write only if KEY has no live value (repeat)
        #[arg(long, value_name = "KEY")]
        must_not_exist: Vec<String>,
        /// Write only if KEY's latest version is from tx TX or before (repeat): with the tx a
        /// read returned, compare-and-set
        #[arg(long, value_name = "KEY=TX")]
        not_modified_after: Vec<String>,
        #[command(flatten)]
        meta: MetaArgs,
    },
    /// The latest values of several keys, all as of one tx (immudb's GetAll)
    #[command(visible_alias = "getall")]
    GetAll {
        #[arg(required = true)]
        keys: Vec<String>,
        /// As of this tx (0: the last)
        #[arg(long, default_value_t = 0)]
        at_tx: u64,
        /// Verify every answer against the trusted state, as vget does (VerifiableGetAll;
        /// as of the state the server answers with)
        #[arg(long, conflicts_with = "at_tx")]
        verify: bool,
    },
    /// Load a file of entries, pipelined on one WriteStream: each line its own tx (or
    /// --batch lines a tx), many in flight, answers in order
    ///
    /// A line that does not parse, or a write the server refuses, is reported on stderr
    /// with its line number and the rest go on (exit 1 at the end if any failed). A progress
    /// line shows on a terminal.
    ///
    /// Examples:
    ///
    ///     chainlog import users.jsonl          # {"key": "u1", "value": "ann"} a line
    ///
    ///     chainlog import prices.csv --format csv --batch 100
    Import {
        /// The file (- for stdin)
        file: PathBuf,
        #[arg(long, value_enum, default_value = "jsonl")]
        format: import::Format,
        /// Lines per tx (1 to 1024)
        #[arg(long, default_value_t = 1)]
        batch: usize,
        /// Verify every write as vset does (the trusted state kept in --state-file, saved
        /// every 10,000 txs); an answer that does not prove itself stops the import (exit 3)
        #[arg(long)]
        verify: bool,
    },
    /// Make KEY a reference to TARGET (immudb's SetReference)
    ///
    /// Reading KEY (get, get-all, vget) then gives TARGET's value: as of --at-tx when given
    /// (bound), else as of the read. TARGET must have a live value and not be a reference.
    ///
    /// Examples:
    ///
    ///     chainlog reference latest-report report:2026-12
    ///
    ///     chainlog reference --verify pinned config --at-tx 40   # config as of tx 40
    #[command(visible_alias = "ref")]
    Reference {
        key: String,
        target: String,
        /// Bind to TARGET's version as of this tx (0: unbound)
        #[arg(long, default_value_t = 0)]
        at_tx: u64,
        /// Verify that the tx holds exactly this reference (VerifiableSetReference)
        #[arg(long)]
        verify: bool,
    },
    /// Add KEY to the sorted set SET with SCORE (immudb's ZAdd)
    ///
    /// KEY must have a live value; a key may be in a set with several scores.
    ///
    /// Examples:
    ///
    ///     chainlog zadd board 42.5 player:ann
    ///
    ///     chainlog zadd --verify board -- -3 player:bob   # a negative score after --
    Zadd {
        set: String,
        #[arg(allow_negative_numbers = true)]
        score: f64,
        key: String,
        /// Bind the member to KEY's version as of this tx (0: unbound)
        #[arg(long, default_value_t = 0)]
        at_tx: u64,
        /// Verify that the tx holds exactly this member (VerifiableZAdd)
        #[arg(long)]
        verify: bool,
    },
    /// Members of the sorted set SET by score, with their keys' values (immudb's ZScan)
    ///
    /// Examples:
    ///
    ///     chainlog zscan board --min 10 --max 100
    ///
    ///     chainlog zscan board --desc --limit 3   # the top three
    Zscan {
        set: String,
        /// Lowest score (inclusive)
        #[arg(long, allow_negative_numbers = true)]
        min: Option<f64>,
        /// Highest score (inclusive)
        #[arg(long, allow_negative_numbers = true)]
        max: Option<f64>,
        /// At most this many (1 to 1000)
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Highest score first
        #[arg(long)]
        desc: bool,
        /// As of this tx (0: the last)
        #[arg(long, default_value_t = 0)]
        at_tx: u64,
        /// Continue after this cursor (printed as the next page's)
        #[arg(long, value_name = "CURSOR")]
        after: Option<String>,
    },
    /// How many live keys start with PREFIX
    Count {
        #[arg(default_value = "")]
        prefix: String,
        /// As of this tx (0: latest)
        #[arg(long, default_value_t = 0)]
        at_tx: u64,
    },
    /// Txs with their entries, from --from on (immudb's TxScan)
    #[command(visible_alias = "txscan")]
    Txs {
        /// The first tx (with --desc, the last) [default: 1, or the last with --desc]
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        desc: bool,
    },
    /// The server's version, build, uptime and role (immudb's ServerInfo)
    Info,
    /// Read the latest value of KEY (unverified; `vget` proves it)
    ///
    /// Exit 1 when KEY has no live value; a value dropped by a truncation answers "value
    /// truncated" (reason value_truncated).
    ///
    /// Examples:
    ///
    ///     chainlog get greeting
    ///
    ///     chainlog get greeting --at-tx 10 --json
    Get {
        key: String,
        /// Value as of this tx [default: 0, the latest]
        #[arg(long, default_value_t = 0)]
        at_tx: u64,
        /// Write the value to FILE (streamed, any size up to 256 MiB; needed above 32 MiB)
        /// and print the entry without it
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Logically delete KEY (its history stays)
    ///
    /// Example:
    ///
    ///     chainlog delete session:42 session:43
    Delete {
        /// KEY [KEY …]: all in one tx
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Versions of KEY, deletes included, oldest first
    ///
    /// Example:
    ///
    ///     chainlog history balance --desc --limit 10
    History {
        key: String,
        /// Versions to skip
        #[arg(long, default_value_t = 0)]
        offset: u64,
        /// At most this many (1 to 1000)
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Newest first
        #[arg(long)]
        desc: bool,
    },
    /// Live keys starting with PREFIX, in key order
    ///
    /// Page with --after set to the last key of the page before.
    ///
    /// Examples:
    ///
    ///     chainlog scan user: --limit 50
    ///
    ///     chainlog scan user: --limit 50 --after user:0049
    Scan {
        prefix: String,
        /// At most this many (1 to 1000)
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Descending key order
        #[arg(long)]
        desc: bool,
        /// Continue after this key
        #[arg(long)]
        after: Option<String>,
    },
    /// Transaction ID with its entries (unverified; `vtx` proves it)
    ///
    /// Example:
    ///
    ///     chainlog tx 1 --json
    Tx { id: u64 },
    /// Set, verified: the tx must hold exactly this entry, in a state extending the trusted one
    ///
    /// The trusted state is kept in --state-file; any answer that does not prove itself
    /// exits 3.
    ///
    /// Example:
    ///
    ///     chainlog vset balance 100
    ///
    ///     chainlog vset session:42 token --expires-in 30m
    Vset {
        key: String,
        #[arg(required_unless_present = "value_file")]
        value: Option<String>,
        /// The value is this file's content (streamed, VerifiableStreamSet; up to 256 MiB)
        #[arg(long, value_name = "FILE", conflicts_with = "value")]
        value_file: Option<PathBuf>,
        #[command(flatten)]
        meta: MetaArgs,
    },
    /// Get, verified: KEY's latest value as the key map proves it, or proof that it has none
    /// ("not found (proven)", exit 1); any answer that does not prove itself exits 3
    ///
    /// Examples:
    ///
    ///     chainlog vget balance
    ///
    ///     chainlog --server-key HEX vget balance   # states must be signed by that key
    Vget {
        key: String,
        /// The latest value as of this tx (0: as of the state the server answers with)
        #[arg(long, default_value_t = 0)]
        at_tx: u64,
        /// Write the value to FILE (streamed, VerifiableStreamGet): FILE appears only once
        /// the value is verified
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Transaction ID, verified against the trusted state
    ///
    /// Example:
    ///
    ///     chainlog vtx 42
    Vtx { id: u64 },
    /// The database's current state, verified to extend the trusted one; with --cosigned K,
    /// the newest state K of the --witness-key replicas cosigned (each checked to be of the
    /// same history)
    State {
        /// How many witnesses must vouch for the state
        #[arg(long, value_name = "K")]
        cosigned: Option<usize>,
        /// A witness replica's Ed25519 public key (hex, as its chainlogd logs it); repeat
        #[arg(long = "witness-key", value_name = "HEX")]
        witness_keys: Vec<String>,
        #[command(subcommand)]
        action: Option<StateCmd>,
    },
    /// Replication status
    #[command(subcommand)]
    Replication(ReplicationCmd),
    /// Take a backup of a database while it runs (hot), over the API
    ///
    /// Writes every tx of --db, up to the server's head when the backup starts, to FILE (mode
    /// 0600; it appears only once complete, so an interrupted backup leaves nothing). Writes
    /// go on meanwhile. With --since, only the txs after that earlier backup's end: an
    /// incremental backup, restored after the ones before it. Each tx's chain link is checked
    /// as it arrives; the end state is signed when the server signs states. Needs the
    /// replication permission on the database (or admin). The file format: docs/format.md,
    /// "Backup files".
    ///
    /// Examples:
    ///
    ///     chainlog backup --db sales --out sales-full.clbk
    ///
    ///     chainlog backup --db sales --out sales-inc1.clbk --since sales-full.clbk
    Backup {
        /// The backup file to write (must not be a directory)
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// An earlier backup of the same database: take only the txs after its end
        #[arg(long, value_name = "FILE", visible_alias = "incremental")]
        since: Option<PathBuf>,
    },
    /// Create a database (--db, required) from backup files
    ///
    /// Give the full backup and then each incremental one, in order (--from repeated). The
    /// files are verified whole first (every tx replayed through the chain check in a scratch
    /// database; exit 3 and nothing created if one does not verify), then the database is
    /// created with the backup's identity and states, the server verifying every tx again
    /// before it is visible, and promoted to primary (a new epoch starts with a marker tx).
    /// With --replica it stays read-only at exactly the backup's last state, and later
    /// incremental backups can be restored onto it. With --server-key, the backup's end state
    /// must be signed by that key. Needs a superuser.
    ///
    /// Example:
    ///
    ///     chainlog restore --db sales --from sales-full.clbk --from sales-inc1.clbk
    Restore {
        /// A backup file; repeat: the full one first, then each incremental one in order
        #[arg(long = "from", value_name = "FILE", required = true)]
        from: Vec<PathBuf>,
        /// Give the database a new identity (trusted states and replicas of the original
        /// then do not take it for the original)
        #[arg(long)]
        new_identity: bool,
        /// Keep it a replica without a primary host instead of promoting it
        #[arg(long)]
        replica: bool,
        /// Where the files are verified before anything is sent (needs about the database's
        /// size) [default: the first file's directory]
        #[arg(long, value_name = "DIR")]
        scratch_dir: Option<PathBuf>,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish or powershell)
    ///
    /// Examples:
    ///
    ///     chainlog completions bash > /etc/bash_completion.d/chainlog
    ///
    ///     chainlog completions zsh > "${fpath[1]}/_chainlog"
    Completions { shell: clap_complete::Shell },
    /// Check a database directory, or backup files, offline (no server)
    ///
    /// With --data-dir: checks every database of the data directory (--db: one), each from
    /// its files alone (the server must be stopped): every frame, chain link, entries root and
    /// value hash; the history tree, tx locations and every index run record against the
    /// log; and that nothing the derived files show was committed is missing. With
    /// --state-file, also that every state a client trusted (the verified commands' state
    /// file) is a state of its database's log: a copy rolled back or forked since then fails.
    ///
    /// With --backup (repeat: the full backup, then each incremental one in order): replays
    /// every tx through the chain check in a scratch database, and checks each file's end
    /// state and its signature (with --server-key, the end state must be signed by that key).
    ///
    /// Exit 3 on any damage.
    Verify {
        /// The server's data directory (or one database's directory)
        #[arg(long, conflicts_with = "backup", required_unless_present = "backup")]
        data_dir: Option<PathBuf>,
        /// A backup file; repeat for a full backup and its incremental ones, in order
        #[arg(long, value_name = "FILE")]
        backup: Vec<PathBuf>,
        /// Where backup files are replayed (needs about the database's size) [default: the
        /// first file's directory]
        #[arg(long, value_name = "DIR", requires = "backup")]
        scratch_dir: Option<PathBuf>,
    },
}

/// What `chainlog state` can do besides showing the state.
#[derive(Debug, Subcommand)]
enum StateCmd {
    /// Forget the trusted state of --db (without --db: of every database of this server)
    ///
    /// The next verified command then trusts what the server shows, as on first use. Only
    /// for a state you know no longer verifies for a good reason (the database was restored
    /// from an older backup, or recreated): a tamper error is otherwise evidence to keep.
    Forget,
}

/// How a command failed: an error (exit 1), the server's refusal (exit 1, with its gRPC
/// code and reason), a key proven to have no value (exit 1, the answer already printed) or a
/// failed verification (exit 3).
pub enum Failure {
    Error(String),
    Server {
        code: tonic::Code,
        reason: Option<&'static str>,
        message: String,
    },
    NotFound,
    Verification(String),
    /// The answer, printed already, says what failed: exit with this status.
    Reported(u8),
}

impl Failure {
    /// The exit status.
    fn exit(&self) -> u8 {
        match self {
            Failure::Verification(_) => EXIT_VERIFICATION_FAILED,
            Failure::Reported(code) => *code,
            _ => 1,
        }
    }

    /// What is printed: `(code, reason, message)`.
    fn parts(&self) -> (String, Option<&'static str>, String) {
        match self {
            Failure::Error(m) => ("error".into(), None, m.clone()),
            Failure::Server {
                code,
                reason,
                message,
            } => (code_name(*code), *reason, message.clone()),
            Failure::NotFound | Failure::Reported(_) => ("not_found".into(), None, String::new()),
            Failure::Verification(m) => ("verification_failed".into(), None, m.clone()),
        }
    }
}

/// A gRPC code in snake case, as scripts match it (`not_found`, `failed_precondition`, …).
fn code_name(c: tonic::Code) -> String {
    let debug = format!("{c:?}");
    let mut out = String::new();
    for (i, ch) in debug.chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(ch.to_ascii_lowercase());
    }
    out
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        match e {
            ClientError::Tamper(t) => Failure::Verification(format!(
                "{t}. If the trusted state is known to be stale for a good reason (the \
                 database was restored from an older backup or recreated), reset it with \
                 `chainlog state forget --db {}`; otherwise keep the state file as evidence",
                t.database
            )),
            ClientError::Status(st)
                if st.code() == tonic::Code::Cancelled && st.message().contains("Timeout") =>
            {
                Failure::Error(
                    "no answer from the server in time (--timeout, default 30 s)".to_string(),
                )
            }
            ClientError::Status(st) => match chainlog::client::transport_failure(&st) {
                Some(cause) => Failure::Error(format!("the connection failed: {cause}")),
                None => Failure::Server {
                    code: st.code(),
                    reason: chainlog::wire::Reason::of(&st).map(chainlog::wire::Reason::as_str),
                    message: st.message().to_string(),
                },
            },
            e => Failure::Error(e.to_string()),
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let out = Out { json: cli.json };
    input::set(input::Encodings {
        key_hex: cli.key_hex,
        value_hex: cli.value_hex,
    });
    let session = Session {
        addr: cli.addr,
        user: cli.user,
        password: cli.password,
        password_file: cli.password_file,
        db: cli.db.clone().unwrap_or_else(|| "defaultdb".into()),
        tls_ca: cli.tls_ca,
        tls_identity: cli.tls_cert.zip(cli.tls_key),
        connect_timeout: std::time::Duration::from_secs(cli.connect_timeout.max(1)),
        timeout: (cli.timeout > 0).then(|| std::time::Duration::from_secs(cli.timeout)),
        session_file: cli.session_file,
        state_file: cli.state_file.clone(),
        server_key: cli.server_key,
    };
    let s = &session;
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "chainlog", &mut std::io::stdout());
            Ok(())
        }
        Command::Login => session::login(s, &out).await,
        Command::Logout => session::logout(s, &out).await,
        Command::Verify {
            data_dir: Some(data_dir),
            ..
        } => verify::run(data_dir, cli.db.as_deref(), cli.state_file.as_deref(), &out),
        Command::Verify {
            data_dir: None,
            backup,
            scratch_dir,
        } => backup::verify(s, &out, backup, scratch_dir.as_deref()).await,
        Command::Backup { out: file, since } => backup::take(s, &out, file, since.as_deref()).await,
        Command::Restore {
            from,
            new_identity,
            replica,
            scratch_dir,
        } => {
            backup::restore(
                s,
                &out,
                cli.db.as_deref(),
                from,
                *new_identity,
                *replica,
                scratch_dir.as_deref(),
            )
            .await
        }
        Command::Database(cmd) => databases::run(cmd, s, &out).await,
        Command::User(cmd) => users::run(cmd, s, &out).await,
        Command::Replication(cmd) => replication::run(cmd, s, cli.db.as_deref(), &out).await,
        Command::Set {
            pairs,
            value_file,
            must_exist,
            must_not_exist,
            not_modified_after,
            meta,
        } => {
            let mut pairs = pairs.clone();
            if let Some(f) = value_file {
                if pairs.len() != 1 {
                    return Err(Failure::Error(
                        "with --value-file, give one KEY and no VALUE".into(),
                    ));
                }
                let size = std::fs::metadata(f)
                    .map_err(|e| Failure::Error(format!("{}: {e}", f.display())))?
                    .len();
                if size > chainlog::integrity::VALUE_UNARY_BYTES_MAX as u64 {
                    if !(must_exist.is_empty()
                        && must_not_exist.is_empty()
                        && not_modified_after.is_empty())
                    {
                        return Err(Failure::Error(format!(
                            "{}: {size} bytes is streamed (above 32 MiB), and a streamed value takes no conditions",
                            f.display()
                        )));
                    }
                    return data::set_from_file(s, &out, &pairs[0], f, meta.to_meta()?, false)
                        .await;
                }
                let bytes = std::fs::read(f)
                    .map_err(|e| Failure::Error(format!("{}: {e}", f.display())))?;
                input::set_file_value(bytes);
                pairs.push(input::FILE_VALUE.to_string());
            }
            data::set(
                s,
                &out,
                &pairs,
                must_exist,
                must_not_exist,
                not_modified_after,
                meta.to_meta()?,
            )
            .await
        }
        Command::GetAll {
            keys,
            at_tx: _,
            verify: true,
        } => data::vget_all(s, &out, keys).await,
        Command::GetAll {
            keys,
            at_tx,
            verify: false,
        } => data::get_all(s, &out, keys, *at_tx).await,
        Command::Count { prefix, at_tx } => data::count(s, &out, prefix, *at_tx).await,
        Command::Import {
            file,
            format,
            batch,
            verify,
        } => import::run(s, &out, file, *format, *batch, *verify).await,
        Command::Reference {
            key,
            target,
            at_tx,
            verify,
        } => sets::reference(s, &out, key, target, *at_tx, *verify).await,
        Command::Zadd {
            set,
            score,
            key,
            at_tx,
            verify,
        } => sets::zadd(s, &out, set, *score, key, *at_tx, *verify).await,
        Command::Zscan {
            set,
            min,
            max,
            limit,
            desc,
            at_tx,
            after,
        } => {
            let page = (*limit, *desc, *at_tx);
            sets::zscan(s, &out, set, (*min, *max), page, after.as_deref()).await
        }
        Command::Txs { from, limit, desc } => data::txs(s, &out, *from, *limit, *desc).await,
        Command::Info => data::info(s, &out).await,
        Command::Get {
            key,
            at_tx,
            out: Some(file),
        } => data::get_to_file(s, &out, key, *at_tx, file).await,
        Command::Get { key, at_tx, .. } => data::get(s, &out, key, *at_tx).await,
        Command::Delete { keys } => data::delete(s, &out, keys).await,
        Command::History {
            key,
            offset,
            limit,
            desc,
        } => data::history(s, &out, key, *offset, *limit, *desc).await,
        Command::Scan {
            prefix,
            limit,
            desc,
            after,
        } => data::scan(s, &out, prefix, *limit, *desc, after.as_deref()).await,
        Command::Tx { id } => data::tx(s, &out, *id).await,
        Command::Vset {
            key,
            value_file: Some(f),
            meta,
            ..
        } => data::set_from_file(s, &out, key, f, meta.to_meta()?, true).await,
        Command::Vset {
            key,
            value: Some(value),
            meta,
            ..
        } => data::vset(s, &out, key, value, meta.to_meta()?).await,
        Command::Vset { .. } => Err(Failure::Error("give VALUE or --value-file".into())),
        Command::Vget {
            key,
            at_tx,
            out: Some(file),
        } => data::vget_to_file(s, &out, key, *at_tx, file).await,
        Command::Vget { key, at_tx, .. } => data::vget(s, &out, key, *at_tx).await,
        Command::Vtx { id } => data::vtx(s, &out, *id).await,
        Command::State {
            action: Some(StateCmd::Forget),
            ..
        } => data::forget(s, &out, cli.db.as_deref()).await,
        Command::State {
            cosigned: None,
            witness_keys,
            action: None,
        } if witness_keys.is_empty() => data::state(s, &out).await,
        Command::State {
            cosigned,
            witness_keys,
            action: None,
        } => data::cosigned_state(s, &out, cosigned.unwrap_or(1), witness_keys).await,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chainlog: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.json;
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // The answer (a proof of absence, a verify report) is already printed.
        Err(Failure::NotFound) => ExitCode::FAILURE,
        Err(Failure::Reported(code)) => ExitCode::from(code),
        Err(f) => {
            let (code, reason, message) = f.parts();
            if json {
                // Scripts read one JSON object on stdout, error or not.
                println!(
                    "{}",
                    serde_json::json!({"error": {"code": code, "reason": reason,
                                                 "message": message, "exit": f.exit()}})
                );
            } else if matches!(f, Failure::Verification(_)) {
                eprintln!("chainlog: VERIFICATION FAILED: {message}");
            } else if let Failure::Server { .. } = f {
                let r = reason.map_or(String::new(), |r| format!(" [{r}]"));
                eprintln!("chainlog: {message} ({code}{r})");
            } else {
                eprintln!("chainlog: {message}");
            }
            ExitCode::from(f.exit())
        }
    }
}

/// Entry metadata for the written entries (proto `KVMetadata`).
#[derive(clap::Args, Debug, Clone, Default)]
struct MetaArgs {
    /// The entries expire after DURATION (90s, 30m, 24h, 7d): from then on reads by key
    /// treat them as absent, history still shows them
    #[arg(long, value_name = "DURATION", value_parser = databases::parse_duration, conflicts_with = "expires_at")]
    expires_in: Option<u64>,
    /// The entries expire at this time: seconds since the Unix epoch
    #[arg(long, value_name = "UNIX_SECONDS")]
    expires_at: Option<u64>,
    /// Leave the entries out of the key index: they are in their tx and its proofs, and
    /// reads by key never see them (read them with tx / vtx)
    #[arg(long, conflicts_with_all = ["expires_in", "expires_at"])]
    no_index: bool,
}

impl MetaArgs {
    fn to_meta(&self) -> Result<chainlog::integrity::EntryMeta, Failure> {
        let expires_at = match (self.expires_in, self.expires_at) {
            (Some(d), _) => Some(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs())
                    .saturating_add(d.max(1)),
            ),
            (None, Some(0)) => {
                return Err(Failure::Error(
                    "--expires-at 0: give a time after 1970".into(),
                ))
            }
            (None, t) => t,
        };
        Ok(chainlog::integrity::EntryMeta {
            deleted: false,
            not_indexed: self.no_index,
            expires_at,
            reference: false,
        })
    }
}
