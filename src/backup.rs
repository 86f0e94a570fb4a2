//! Backup files: a database's txs from one state to a later one, exactly as the database
//! stores them, in a file of its own (docs/format.md, "Backup files").
//!
//! - [`take`] streams them from a running server (`ExportTx`: hot, consistent up to the head
//!   the export started from, over the API and so over TLS), checking the chain links as they
//!   arrive; given an earlier backup it takes only the txs after that backup's end.
//! - [`verify`] replays a full chain of backup files (the first from tx 1, each next one
//!   continuing the last) into a scratch database through the one chain check
//!   (`Ledger::apply_records`), so every value hash, entries root, history root, map root and
//!   Alh is recomputed; a signed end state is checked against its key.
//! - [`restore`] verifies the files first, then creates the database on a server as a replica
//!   without a primary host and sends the txs through `ReplicateTx`, where the server verifies
//!   every tx again before it is visible; then promotes it to a primary unless asked not to.

use crate::client::{Client, ClientError};
use crate::fs::{self, FsError, Staged};
use crate::integrity::{signing, Digest, TxId, ALH_GENESIS};
use crate::ledger::{self, Ledger, LedgerError};
use crate::storage::frame::{self, FRAME_HEADER_BYTES};
use crate::wire::{self, follow_response::Msg};
use bytes::Bytes;
use std::io::Read;
use std::path::{Path, PathBuf};

/// A backup file starts with these 32 bytes' first 8.
pub const MAGIC: &[u8; 8] = b"chainlog";
/// The file kind byte of a backup (a segment's is 1).
pub const KIND_BACKUP: u8 = 2;
/// The version of the backup file layout.
pub const BACKUP_VERSION: u8 = 1;
const FILE_HEADER_BYTES: usize = 32;

const TAG_BEGIN: u8 = 1;
const TAG_TX: u8 = 2;
const TAG_END: u8 = 3;

/// Records sent in one `ReplicateTx` message, and bytes at most (a single larger tx goes
/// alone).
const RESTORE_BATCH_TXS: usize = 1000;
const RESTORE_BATCH_BYTES: usize = 4 << 20;

/// Where a backup starts: the database and the state before its first tx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// The database's identity.
    pub uuid: String,
    /// Its name on the server it was taken from.
    pub database: String,
    /// The state the backup continues (0 and the genesis Alh for a full backup).
    pub from_tx: TxId,
    pub from_alh: Digest,
    /// When it was taken, milliseconds since the Unix epoch.
    pub created_ms: u64,
}

/// Where a backup ends: its last state, signed when the server signs states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    pub to_tx: TxId,
    pub to_alh: Digest,
    /// Txs in the file: `to_tx - from_tx`.
    pub txs: u64,
    /// The signed state's timestamp (0 when unsigned).
    pub timestamp_ms: u64,
    /// Ed25519 over the signed-state message of docs/verification.md (empty when unsigned).
    pub signature: Vec<u8>,
    pub public_key: Vec<u8>,
}

/// What went wrong with a backup. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Not a backup file, or damaged: a bad header, checksum or layout.
    #[error("{path}: not a valid backup file at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// The file stops before its end frame: a backup that never finished, or a cut copy.
    #[error("{path}: incomplete: the file ends before the backup's end record")]
    Incomplete { path: PathBuf },
    /// A tx that does not verify: tampering or damage with checksums intact.
    #[error("{path}: tx {tx} does not verify: {reason}")]
    Chain {
        path: PathBuf,
        tx: TxId,
        reason: String,
    },
    /// The end state's signature does not verify, or is missing where a key was required.
    #[error("{path}: {reason}")]
    Signature { path: PathBuf, reason: String },
    /// Files that do not make one chain: another database, or a gap.
    #[error("{path}: {reason}")]
    Sequence { path: PathBuf, reason: String },
    /// The server refused or failed.
    #[error("{0}")]
    Client(#[from] ClientError),
    #[error("{0}")]
    Ledger(#[from] LedgerError),
}

impl BackupError {
    /// Whether the backup itself is bad (tampered, damaged or incomplete), as opposed to
    /// files given out of order, a failure to read one or to reach a server.
    pub fn is_bad_backup(&self) -> bool {
        matches!(
            self,
            BackupError::Corrupt { .. }
                | BackupError::Incomplete { .. }
                | BackupError::Chain { .. }
                | BackupError::Signature { .. }
        )
    }
}

type Result<T, E = BackupError> = std::result::Result<T, E>;

/// Progress of a long operation: txs done, txs in all (when known), bytes done.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub txs: u64,
    pub total: u64,
    pub bytes: u64,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

// ---- the file layout ------------------------------------------------------------------------

fn file_header() -> [u8; FILE_HEADER_BYTES] {
    let mut h = [0u8; FILE_HEADER_BYTES];
    h[..8].copy_from_slice(MAGIC);
    h[8] = KIND_BACKUP;
    h[9] = BACKUP_VERSION;
    let crc = crc32fast::hash(&h[..28]);
    h[28..].copy_from_slice(&crc.to_le_bytes());
    h
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&s.as_bytes()[..usize::from(len)]);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let len = u16::try_from(b.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&b[..usize::from(len)]);
}

fn encode_begin(b: &Begin) -> Vec<u8> {
    let mut p = vec![TAG_BEGIN];
    put_str(&mut p, &b.uuid);
    put_str(&mut p, &b.database);
    p.extend_from_slice(&b.from_tx.to_le_bytes());
    p.extend_from_slice(&b.from_alh.0);
    p.extend_from_slice(&b.created_ms.to_le_bytes());
    p
}

fn encode_end(e: &End) -> Vec<u8> {
    let mut p = vec![TAG_END];
    p.extend_from_slice(&e.to_tx.to_le_bytes());
    p.extend_from_slice(&e.to_alh.0);
    p.extend_from_slice(&e.txs.to_le_bytes());
    p.extend_from_slice(&e.timestamp_ms.to_le_bytes());
    put_bytes(&mut p, &e.signature);
    put_bytes(&mut p, &e.public_key);
    p
}

/// A cursor over a payload that fails with a reason instead of panicking.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("record too short".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    fn digest(&mut self) -> Result<Digest, String> {
        let mut a = [0u8; 32];
        a.copy_from_slice(self.take(32)?);
        Ok(Digest(a))
    }
    fn bytes(&mut self) -> Result<Vec<u8>, String> {
        let n = self.u16()?;
        Ok(self.take(usize::from(n))?.to_vec())
    }
    fn string(&mut self) -> Result<String, String> {
        String::from_utf8(self.bytes()?).map_err(|_| "a name is not UTF-8".to_string())
    }
    fn done(&self) -> Result<(), String> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err("trailing bytes in a record".into())
        }
    }
}

fn decode_begin(p: &[u8]) -> Result<Begin, String> {
    let mut c = Cursor(p);
    let b = Begin {
        uuid: c.string()?,
        database: c.string()?,
        from_tx: c.u64()?,
        from_alh: c.digest()?,
        created_ms: c.u64()?,
    };
    c.done()?;
    Ok(b)
}

fn decode_end(p: &[u8]) -> Result<End, String> {
    let mut c = Cursor(p);
    let e = End {
        to_tx: c.u64()?,
        to_alh: c.digest()?,
        txs: c.u64()?,
        timestamp_ms: c.u64()?,
        signature: c.bytes()?,
        public_key: c.bytes()?,
    };
    c.done()?;
    Ok(e)
}

/// One item of a backup file, in order: a [`Begin`], txs, an [`End`].
#[derive(Debug)]
pub enum Item {
    Begin(Begin),
    /// A transaction record (docs/format.md), as its database stores it.
    Tx(Bytes),
    End(End),
}

/// Reads a backup file item by item, checking the layout and every checksum; the txs are
/// not verified here ([`verify`] does that).
pub struct Reader {
    path: PathBuf,
    file: std::io::BufReader<std::fs::File>,
    offset: u64,
    state: ReadState,
    /// An item read past the end of a batch, given out next.
    peeked: Option<Item>,
}

#[derive(PartialEq, Eq)]
enum ReadState {
    Begin,
    Txs,
    Done,
}

impl Reader {
    pub fn open(path: &Path) -> Result<Reader> {
        let file = fs::open_ro(path)?;
        let mut r = Reader {
            path: path.to_path_buf(),
            file: std::io::BufReader::with_capacity(1 << 20, file),
            offset: 0,
            state: ReadState::Begin,
            peeked: None,
        };
        let mut h = [0u8; FILE_HEADER_BYTES];
        if !r.read_exact_or_eof(&mut h)? {
            return Err(r.corrupt("too short for a backup file's header"));
        }
        if &h[..8] != MAGIC || h[8] != KIND_BACKUP {
            return Err(r.corrupt("not a chainlog backup file"));
        }
        if crc32fast::hash(&h[..28]).to_le_bytes() != h[28..] {
            return Err(r.corrupt("the file header's checksum does not match"));
        }
        if h[9] != BACKUP_VERSION {
            return Err(r.corrupt(&format!(
                "backup format version {} (this chainlog reads version {BACKUP_VERSION})",
                h[9]
            )));
        }
        r.offset = FILE_HEADER_BYTES as u64;
        Ok(r)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn corrupt(&self, reason: &str) -> BackupError {
        BackupError::Corrupt {
            path: self.path.clone(),
            offset: self.offset,
            reason: reason.to_string(),
        }
    }

    /// Fills `buf`; false at a clean end of file before any byte.
    fn read_exact_or_eof(&mut self, buf: &mut [u8]) -> Result<bool> {
        let mut got = 0;
        while got < buf.len() {
            match self.file.read(&mut buf[got..]) {
                Ok(0) if got == 0 => return Ok(false),
                Ok(0) => {
                    return Err(BackupError::Incomplete {
                        path: self.path.clone(),
                    })
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(BackupError::Io {
                        path: self.path.clone(),
                        source: e,
                    })
                }
            }
        }
        Ok(true)
    }

    /// The next item, `None` after the end.
    pub fn next_item(&mut self) -> Result<Option<Item>> {
        let mut head = [0u8; FRAME_HEADER_BYTES];
        if !self.read_exact_or_eof(&mut head)? {
            return match self.state {
                ReadState::Done => Ok(None),
                _ => Err(BackupError::Incomplete {
                    path: self.path.clone(),
                }),
            };
        }
        if self.state == ReadState::Done {
            return Err(self.corrupt("bytes after the end record"));
        }
        let Some(total) = frame::claimed_len(&head) else {
            return Err(self.corrupt("a damaged frame header"));
        };
        let mut buf = vec![0u8; total];
        buf[..FRAME_HEADER_BYTES].copy_from_slice(&head);
        if !self.read_exact_or_eof(&mut buf[FRAME_HEADER_BYTES..])? {
            return Err(BackupError::Incomplete {
                path: self.path.clone(),
            });
        }
        let payload = frame::decode_exact(&buf)
            .map_err(|c| self.corrupt(&format!("a damaged frame ({c:?})")))?;
        let (tag, body) = (payload[0], &payload[1..]);
        let item = match (tag, &self.state) {
            (TAG_BEGIN, ReadState::Begin) => {
                Item::Begin(decode_begin(body).map_err(|r| self.corrupt(&r))?)
            }
            (TAG_TX, ReadState::Txs) => Item::Tx(Bytes::copy_from_slice(body)),
            (TAG_END, ReadState::Txs) => Item::End(decode_end(body).map_err(|r| self.corrupt(&r))?),
            _ => return Err(self.corrupt(&format!("a record of kind {tag} out of place"))),
        };
        self.state = match item {
            Item::Begin(_) | Item::Tx(_) => ReadState::Txs,
            Item::End(_) => ReadState::Done,
        };
        self.offset += total as u64;
        Ok(Some(item))
    }
}

/// A backup file read in steps: its begin, its txs in batches (at most
/// `RESTORE_BATCH_TXS` txs or about `RESTORE_BATCH_BYTES`), its end.
#[derive(Debug)]
pub enum Step {
    Begin(Begin),
    Batch(Vec<Bytes>),
    End(End),
}

impl Reader {
    /// The next step, `None` after the end.
    pub fn next_step(&mut self) -> Result<Option<Step>> {
        let mut batch = Vec::new();
        let mut bytes = 0usize;
        loop {
            if batch.len() >= RESTORE_BATCH_TXS || bytes >= RESTORE_BATCH_BYTES {
                return Ok(Some(Step::Batch(batch)));
            }
            // A batch ends before the item after it, which is read again next time.
            if !batch.is_empty() && self.state != ReadState::Txs {
                return Ok(Some(Step::Batch(batch)));
            }
            match self
                .peeked
                .take()
                .map_or_else(|| self.next_item(), |i| Ok(Some(i)))?
            {
                Some(Item::Tx(record)) => {
                    bytes += record.len();
                    batch.push(record);
                }
                Some(item) if !batch.is_empty() => {
                    self.peeked = Some(item);
                    return Ok(Some(Step::Batch(batch)));
                }
                Some(Item::Begin(b)) => return Ok(Some(Step::Begin(b))),
                Some(Item::End(e)) => return Ok(Some(Step::End(e))),
                None if !batch.is_empty() => return Ok(Some(Step::Batch(batch))),
                None => return Ok(None),
            }
        }
    }
}

/// The begin and end of a backup file, reading (and checksumming) all of it.
pub fn inspect(path: &Path) -> Result<(Begin, End)> {
    let mut r = Reader::open(path)?;
    let mut begin = None;
    while let Some(item) = r.next_item()? {
        match item {
            Item::Begin(b) => begin = Some(b),
            Item::Tx(_) => {}
            Item::End(e) => {
                let b = begin.ok_or_else(|| r.corrupt("no begin record"))?;
                return Ok((b, e));
            }
        }
    }
    Err(BackupError::Incomplete {
        path: path.to_path_buf(),
    })
}

// ---- taking a backup ------------------------------------------------------------------------

/// What [`take`] wrote.
#[derive(Debug, Clone)]
pub struct Taken {
    pub begin: Begin,
    pub end: End,
    pub bytes: u64,
}

/// Checks that `record` is the tx after `(last_tx, last_alh)`: its id, its previous Alh and
/// its own Alh recomputed from its header. (Values, entries and the trees are checked when the
/// file is verified or restored.)
fn check_link(path: &Path, record: &[u8], last_tx: TxId, last_alh: &Digest) -> Result<Digest> {
    let bad = |tx, reason: String| BackupError::Chain {
        path: path.to_path_buf(),
        tx,
        reason,
    };
    let (header, alh) =
        ledger::record_header(record).map_err(|e| bad(last_tx + 1, e.to_string()))?;
    if header.id != last_tx + 1 {
        return Err(bad(
            last_tx + 1,
            format!("the source sent tx {} instead", header.id),
        ));
    }
    if header.prev_alh != *last_alh {
        return Err(bad(
            header.id,
            "its previous Alh is not the last tx's Alh".into(),
        ));
    }
    if header.alh() != alh {
        return Err(bad(header.id, "its Alh does not match its header".into()));
    }
    Ok(alh)
}

/// Takes a backup of `database` into `out` (created, mode 0600; it appears only once whole):
/// every tx, or with `since` (an earlier backup of the same database) the txs after that
/// backup's end. Writes go on while it runs; the backup ends at the head the server had when
/// it started. `progress` is called after each batch.
pub async fn take(
    client: &Client,
    database: &str,
    out: &Path,
    since: Option<&Path>,
    mut progress: impl FnMut(Progress),
) -> Result<Taken> {
    let previous = since.map(inspect).transpose()?;
    let (from_tx, from_alh, expected_uuid) = match &previous {
        Some((b, e)) => (e.to_tx, e.to_alh, b.uuid.clone()),
        None => (0, ALH_GENESIS, String::new()),
    };
    let request = wire::ExportTxRequest {
        database: database.to_string(),
        expected_uuid: expected_uuid.clone(),
        tx_id: from_tx,
        alh: if from_tx == 0 {
            Vec::new()
        } else {
            from_alh.0.to_vec()
        },
        follow: false,
        epoch: 0,
    };
    let mut export = client
        .replication()
        .export_tx(request)
        .await
        .map_err(ClientError::from)?
        .into_inner();
    let welcome = match export.message().await.map_err(ClientError::from)? {
        Some(wire::FollowResponse {
            msg: Some(Msg::Welcome(w)),
        }) => w,
        _ => {
            return Err(BackupError::Client(ClientError::Wire(wire::WireError {
                field: "welcome",
                reason: "the export did not start with one",
            })))
        }
    };
    if !expected_uuid.is_empty() && welcome.uuid != expected_uuid {
        return Err(BackupError::Sequence {
            path: out.to_path_buf(),
            reason: format!(
                "the earlier backup is of database {expected_uuid}, the server's {database} is {}",
                welcome.uuid
            ),
        });
    }
    let begin = Begin {
        uuid: welcome.uuid.clone(),
        database: database.to_string(),
        from_tx,
        from_alh,
        created_ms: now_ms(),
    };
    let mut file = Staged::create(out, fs::PRIVATE_MODE)?;
    let mut buf = Vec::with_capacity(1 << 20);
    buf.extend_from_slice(&file_header());
    frame::encode_with(&mut buf, |o| o.extend_from_slice(&encode_begin(&begin)));
    let (mut last_tx, mut last_alh) = (from_tx, from_alh);
    let mut bytes = 0u64;
    let mut signed: Option<wire::State> = None;
    let total = welcome.head_tx_id.saturating_sub(from_tx);
    while let Some(msg) = export.message().await.map_err(ClientError::from)? {
        let Some(Msg::Batch(batch)) = msg.msg else {
            continue;
        };
        for tx in &batch.txs {
            last_alh = check_link(out, &tx.record, last_tx, &last_alh)?;
            last_tx += 1;
            frame::encode_with(&mut buf, |o| {
                o.push(TAG_TX);
                o.extend_from_slice(&tx.record);
            });
        }
        signed = batch.checkpoint.filter(|c| !c.signature.is_empty());
        bytes += buf.len() as u64;
        file.write(&buf)?;
        buf.clear();
        progress(Progress {
            txs: last_tx - from_tx,
            total,
            bytes,
        });
    }
    if last_tx < welcome.head_tx_id {
        return Err(BackupError::Client(ClientError::Status(
            tonic::Status::unavailable(format!(
                "the export ended at tx {last_tx}, before the head it started from ({})",
                welcome.head_tx_id
            )),
        )));
    }
    let mut end = End {
        to_tx: last_tx,
        to_alh: last_alh,
        txs: last_tx - from_tx,
        timestamp_ms: 0,
        signature: Vec::new(),
        public_key: Vec::new(),
    };
    if let Some(s) = signed.filter(|s| s.tx_id == last_tx && s.alh == last_alh.0) {
        end.timestamp_ms = s.timestamp_ms;
        end.signature = s.signature;
        end.public_key = s.public_key;
    }
    frame::encode_with(&mut buf, |o| o.extend_from_slice(&encode_end(&end)));
    bytes += buf.len() as u64;
    file.write(&buf)?;
    file.commit()?;
    Ok(Taken { begin, end, bytes })
}

// ---- verifying ------------------------------------------------------------------------------

/// What [`verify`] found: the chain the files make, all verified.
#[derive(Debug, Clone)]
pub struct Verified {
    pub uuid: String,
    pub database: String,
    pub to_tx: TxId,
    pub to_alh: Digest,
    /// Whether the last file's end state is signed (and the signature verified).
    pub signed: bool,
    /// The key that signed it (hex): the one given to [`verify`], or, without one, the one
    /// the file names, which proves only that whoever holds that key signed this state;
    /// compare it with the server's (`chainlog state` shows it).
    pub signed_by: Option<String>,
    /// Whether the signing key was given by the caller rather than read from the file.
    pub key_pinned: bool,
}

/// Checks a file's end state signature: by `key` when given (then required), else by the key
/// the file names.
fn check_signature(
    path: &Path,
    uuid: &str,
    end: &End,
    key: Option<&ed25519_dalek::VerifyingKey>,
) -> Result<bool> {
    let bad = |reason: String| BackupError::Signature {
        path: path.to_path_buf(),
        reason,
    };
    if end.signature.is_empty() {
        return match key {
            Some(_) => Err(bad(
                "its end state is not signed, and a server key was given".into(),
            )),
            None => Ok(false),
        };
    }
    let named = <[u8; 32]>::try_from(end.public_key.as_slice())
        .ok()
        .and_then(|k| ed25519_dalek::VerifyingKey::from_bytes(&k).ok())
        .ok_or_else(|| bad("its end state names no valid public key".into()))?;
    let key = match key {
        Some(k) if *k != named => {
            return Err(bad(format!(
                "its end state is signed by key {}, not the server key given",
                crate::integrity::hex::encode(named.as_bytes())
            )))
        }
        Some(k) => k,
        None => &named,
    };
    if !signing::verify_state(
        key,
        uuid,
        end.to_tx,
        &end.to_alh,
        end.timestamp_ms,
        &end.signature,
    ) {
        return Err(bad(format!(
            "the signature of its end state (tx {}) does not verify",
            end.to_tx
        )));
    }
    Ok(true)
}

/// A scratch database for a replay, removed when dropped.
struct Scratch {
    dir: PathBuf,
    ledger: Option<Ledger>,
}

impl Scratch {
    fn open(parent: &Path) -> Result<Scratch> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = parent.join(format!(".chainlog-verify-{}-{n}", std::process::id()));
        fs::remove_dir_all(&dir)?;
        fs::create_dir_all(&dir)?;
        let mut s = Scratch { dir, ledger: None };
        let options = ledger::Options {
            durability: ledger::Durability::Buffered,
            ..ledger::Options::default()
        };
        s.ledger = Some(Ledger::open(&s.dir, options)?);
        Ok(s)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(l) = self.ledger.take() {
            let _ = l.close();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Verifies `files`, a full chain of backups in order (the first from tx 1, each next one
/// continuing the one before), by replaying every tx through the ledger's chain check into a
/// scratch database under `scratch` (removed afterwards; it needs about the database's size).
/// With `key`, the last file's end state must be signed by it.
pub async fn verify(
    files: &[PathBuf],
    scratch: &Path,
    key: Option<&ed25519_dalek::VerifyingKey>,
    mut progress: impl FnMut(Progress),
) -> Result<Verified> {
    let Some(first) = files.first() else {
        return Err(BackupError::Sequence {
            path: PathBuf::new(),
            reason: "no backup file given".into(),
        });
    };
    let scratch = Scratch::open(scratch)?;
    let ledger = scratch.ledger.as_ref().ok_or(LedgerError::Closed)?;
    let mut ident: Option<(String, String)> = None;
    let mut signed = false;
    let mut bytes = 0u64;
    for path in files {
        let mut r = Reader::open(path)?;
        let seq = |reason: String| BackupError::Sequence {
            path: path.clone(),
            reason,
        };
        let mut begin: Option<Begin> = None;
        while let Some(step) = r.next_step()? {
            match step {
                Step::Batch(batch) => {
                    apply(ledger, path, batch).await?;
                    progress(Progress {
                        txs: ledger.state().tx_id,
                        total: 0,
                        bytes: bytes + r.offset(),
                    });
                }
                Step::Begin(b) => {
                    let state = ledger.state();
                    if let Some((uuid, _)) = &ident {
                        if *uuid != b.uuid {
                            return Err(seq(format!(
                                "a backup of database {}, the files before are of {uuid}",
                                b.uuid
                            )));
                        }
                    }
                    if b.from_tx != state.tx_id || (b.from_tx > 0 && b.from_alh != state.alh) {
                        return Err(seq(if path == first {
                            format!(
                                "an incremental backup (from tx {}): give the full backup and \
                                 every incremental one before it, in order",
                                b.from_tx
                            )
                        } else {
                            format!(
                                "it continues tx {}, the files before end at tx {}",
                                b.from_tx, state.tx_id
                            )
                        }));
                    }
                    ident = Some((b.uuid.clone(), b.database.clone()));
                    begin = Some(b);
                }
                Step::End(e) => {
                    let state = ledger.state();
                    let b = begin.take().ok_or_else(|| seq("no begin record".into()))?;
                    if e.to_tx != state.tx_id
                        || e.to_alh != state.alh
                        || e.txs != e.to_tx - b.from_tx
                    {
                        return Err(BackupError::Chain {
                            path: path.clone(),
                            tx: e.to_tx,
                            reason: format!(
                                "the end record claims tx {} with Alh {}; the txs end at tx {} with Alh {}",
                                e.to_tx, e.to_alh, state.tx_id, state.alh
                            ),
                        });
                    }
                    let last = Some(path) == files.last();
                    signed = check_signature(path, &b.uuid, &e, if last { key } else { None })?;
                }
            }
        }
        bytes += r.offset();
    }
    let (uuid, database) = ident.unwrap_or_default();
    let state = ledger.state();
    let signed_by = match (signed, files.last()) {
        (true, Some(last)) => Some(crate::integrity::hex::encode(&inspect(last)?.1.public_key)),
        _ => None,
    };
    Ok(Verified {
        uuid,
        database,
        to_tx: state.tx_id,
        to_alh: state.alh,
        signed,
        signed_by,
        key_pinned: key.is_some(),
    })
}

async fn apply(ledger: &Ledger, path: &Path, records: Vec<Bytes>) -> Result<()> {
    let next = ledger.state().tx_id + 1;
    match ledger.apply_records(records).await {
        (_, None) => Ok(()),
        (_, Some(LedgerError::NotNext { tx, reason })) => Err(BackupError::Chain {
            path: path.to_path_buf(),
            tx,
            reason: reason.to_string(),
        }),
        (applied, Some(e)) => Err(BackupError::Chain {
            path: path.to_path_buf(),
            tx: next + applied.len() as u64,
            reason: e.to_string(),
        }),
    }
}

// ---- restoring ------------------------------------------------------------------------------

/// How [`restore`] creates the database.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Give the restored database a new identity instead of the backup's: it holds the same
    /// txs, but clients and replicas of the original do not take it for the original.
    pub new_identity: bool,
    /// Leave it a replica without a primary host (read-only, at exactly the backup's last
    /// state), to go on with later incremental backups or an external replicator; else it
    /// is promoted to primary, which starts a new epoch with a marker tx.
    pub replica: bool,
    /// Where the files are verified before anything is sent (a scratch database).
    pub scratch: PathBuf,
    /// The key the last file's end state must be signed by (else a signature is checked
    /// with the key the file names, and an unsigned end is accepted).
    pub server_key: Option<ed25519_dalek::VerifyingKey>,
}

/// What [`restore`] did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub verified: Option<Verified>,
    /// The database's state once the backup's txs were applied.
    pub state: wire::State,
    /// The database as it ends up (promoted or not).
    pub info: wire::DatabaseInfo,
}

/// Restores `files` as database `database` on the server `client` is logged in to.
///
/// A chain starting from tx 1 is verified whole first ([`verify`]) and must name a database
/// that does not exist yet: nothing is created from a file that does not verify. Files that
/// start later (incremental backups) go onto an existing replica database without a primary
/// host that holds the txs before them; the server verifies each tx before applying it
/// either way. Then the database is promoted to primary, unless `options.replica`.
pub async fn restore(
    client: &Client,
    database: &str,
    files: &[PathBuf],
    options: &RestoreOptions,
    mut progress: impl FnMut(Progress),
) -> Result<Restored> {
    let Some(first) = files.first() else {
        return Err(BackupError::Sequence {
            path: PathBuf::new(),
            reason: "no backup file given".into(),
        });
    };
    let (first_begin, _) = inspect(first)?;
    let verified = if first_begin.from_tx == 0 {
        let key = options.server_key.as_ref();
        Some(verify(files, &options.scratch, key, &mut progress).await?)
    } else {
        None
    };
    if verified.is_some() {
        let settings = wire::DatabaseSettings {
            replication: Some(wire::ReplicationSettings {
                is_replica: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        client.create_database(database, settings).await?;
    }
    let source_uuid = if options.new_identity {
        String::new()
    } else {
        first_begin.uuid.clone()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut replicate = client.replication();
    let call = tokio::spawn(async move {
        replicate
            .replicate_tx(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let first_msg = wire::ReplicateTxRequest {
        database: database.to_string(),
        source_uuid,
        txs: Vec::new(),
    };
    let sent: Result<()> = async {
        if tx.send(first_msg).await.is_err() {
            return Ok(());
        }
        let mut done = 0u64;
        for path in files {
            let mut r = Reader::open(path)?;
            while let Some(step) = r.next_step()? {
                let Step::Batch(batch) = step else { continue };
                done += batch.len() as u64;
                let msg = wire::ReplicateTxRequest {
                    txs: batch
                        .into_iter()
                        .map(|record| wire::ReplicatedTx { record })
                        .collect(),
                    ..Default::default()
                };
                if tx.send(msg).await.is_err() {
                    return Ok(()); // the server ended the call: its answer says why
                }
                progress(Progress {
                    txs: done,
                    total: 0,
                    bytes: r.offset(),
                });
            }
        }
        Ok(())
    }
    .await;
    drop(tx);
    let answer = call
        .await
        .map_err(|e| ClientError::Status(tonic::Status::internal(e.to_string())))?;
    let state = answer.map_err(ClientError::from)?.into_inner();
    sent?;
    let last = files.last().unwrap_or(first);
    let (_, end) = inspect(last)?;
    if state.tx_id < end.to_tx {
        return Err(BackupError::Sequence {
            path: last.clone(),
            reason: format!(
                "the database stopped at tx {} before the backup's end (tx {})",
                state.tx_id, end.to_tx
            ),
        });
    }
    let info = if options.replica {
        client
            .list_databases()
            .await?
            .into_iter()
            .find(|d| d.name == database)
            .unwrap_or_default()
    } else {
        let settings = wire::DatabaseSettings {
            replication: Some(wire::ReplicationSettings {
                is_replica: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        client.update_database(database, settings).await?
    };
    Ok(Restored {
        verified,
        state,
        info,
    })
}
