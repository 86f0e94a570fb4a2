//! Values too large for one message (StreamSet, StreamGet): a value is received straight into
//! its tx's encoded body and hashed as it arrives, so it is held once; and read back from its
//! segment a range at a time, never whole.

use super::prepare::{self, Prepared};
use super::{
    codec, decode_location, lock_poisoned, ChainBreak, Damage, Ledger, LedgerError, Result,
    TxEntry, TxFault, VALUE_BYTES_MAX,
};
use crate::integrity::{merkle, EntryProof};

/// A frame at least this long is walked a head at a time by
/// [`Ledger::entry_proof_without_value`] instead of read whole.
const HEADS_ONLY_FRAME_BYTES_MIN: usize = 4 << 20;
use crate::index::Version;
use crate::integrity::{Digest, EntryMeta, TxHeader, TxId, TAG_VALUE};
use crate::storage::segment::SegmentReader;
use crate::storage::{frame::FRAME_HEADER_BYTES, usize_of};

/// A one-entry tx whose value arrives in chunks.
pub struct StreamedEntry {
    key: Vec<u8>,
    meta: EntryMeta,
    /// The entry as the record stores it, the value filled in as it arrives.
    body: Vec<u8>,
    /// Where the value hash goes in `body` (written once the value is whole).
    hash_at: usize,
    value_len: usize,
    hasher: blake3::Hasher,
}

impl StreamedEntry {
    /// An entry of `key` whose value will be `value_len` bytes. The key, the metadata and the
    /// length are checked now, before any of the value is taken.
    pub fn new(key: Vec<u8>, meta: EntryMeta, value_len: usize) -> Result<StreamedEntry> {
        prepare::check_new(&key, meta, value_len)?;
        let mut body = Vec::with_capacity(codec::entry_bytes(key.len(), meta, value_len));
        let hash_at = codec::encode_entry_head(&key, meta, value_len, &mut body);
        body.extend_from_slice(&[0; 32]);
        let mut hasher = blake3::Hasher::new();
        hasher.update(&[TAG_VALUE]);
        Ok(StreamedEntry {
            key,
            meta,
            body,
            hash_at,
            value_len,
            hasher,
        })
    }

    /// Appends the next chunk of the value; more than the length announced is refused.
    pub fn push(&mut self, chunk: &[u8]) -> Result<()> {
        let received = self.received();
        if received + chunk.len() > self.value_len {
            return Err(LedgerError::ValueLength {
                announced: self.value_len,
                received: received + chunk.len(),
            });
        }
        self.hasher.update(chunk);
        self.body.extend_from_slice(chunk);
        Ok(())
    }

    /// Bytes of the value received so far.
    pub fn received(&self) -> usize {
        self.body.len() - self.hash_at - 32
    }

    /// The tx, prepared: the value must be whole.
    fn prepare(mut self) -> Result<Prepared> {
        if self.received() != self.value_len {
            return Err(LedgerError::ValueLength {
                announced: self.value_len,
                received: self.received(),
            });
        }
        let vh: Digest = self.hasher.finalize().into();
        self.body[self.hash_at..self.hash_at + 32].copy_from_slice(&vh.0);
        Ok(prepare::prepare_encoded(
            self.key,
            self.meta,
            vh,
            self.hash_at,
            self.value_len,
            self.body,
        ))
    }
}

impl Ledger {
    /// Commits a streamed entry as one tx (the value hashed as it arrived: this only checks
    /// that it is whole and queues it).
    pub async fn commit_streamed(&self, entry: StreamedEntry) -> Result<TxHeader> {
        let prepared = entry.prepare()?;
        let done = super::writer::submit_async(&self.shared, prepared)?;
        done.await.unwrap_or(Err(LedgerError::Closed))
    }

    /// Where the live value of `key` as of tx `as_of` is, to be read a range at a time: its
    /// version (tx, metadata), length and stored hash. `None` when the key has no live value
    /// then. The entry's key, flags and length are checked against the index's version; the
    /// value is checked against its hash by whoever reads it whole (the frame's checksum,
    /// which would need the whole frame read, is not).
    ///
    /// With `judge_expiry` false, an expired version is still given (a verified read, whose
    /// client judges expiry by its own clock).
    pub fn value_source(
        &self,
        key: &[u8],
        as_of: TxId,
        judge_expiry: bool,
    ) -> Result<Option<ValueSource>> {
        let as_of = as_of.min(self.state().tx_id);
        let v = lock_poisoned(self.shared.index.read()).get(key, as_of)?;
        let mapped = self.shared.map.latest(key, as_of)?;
        if mapped.map(|l| (l.tx_id, l.deleted)) != v.as_ref().map(|v| (v.tx, v.deleted)) {
            return Err(self.index_damage(0));
        }
        let Some(v) = v.filter(|v| !v.deleted) else {
            return Ok(None);
        };
        let meta = self.meta_of(key, &v)?;
        if judge_expiry && meta.expired_at(super::read::now_secs()) {
            return Ok(None);
        }
        if meta.reference {
            // A reference's value is read whole with Get; StreamGet is for values.
            return Err(LedgerError::StreamReference);
        }
        if v.tx < self.values_from() {
            return Err(LedgerError::ValueTruncated {
                tx: v.tx,
                values_from: self.values_from(),
            });
        }
        let seg = self.segment(v.value.segment)?;
        let hash_at = u64::from(v.value.offset);
        let (segment, offset, frame_len) = decode_location(&self.shared.locations.read(v.tx - 1)?);
        let payload_at = offset + FRAME_HEADER_BYTES as u64;
        let value_end = hash_at + 32 + u64::from(v.value.len);
        if segment != v.value.segment
            || hash_at < payload_at + codec::HEADER_BYTES as u64
            || value_end > offset + u64::from(frame_len)
        {
            return Err(self.index_damage(hash_at));
        }
        // The entry's head just before its value hash: key length, flags, value length,
        // expiry, key.
        let head_len = (codec::entry_bytes(key.len(), meta, 0) - 32) as u64;
        let head = seg.read(hash_at - head_len, usize_of(head_len + 32))?;
        let mut expect = Vec::with_capacity(usize_of(head_len));
        codec::encode_entry_head(key, meta, v.value.len as usize, &mut expect);
        if head[..usize_of(head_len)] != expect[..] {
            return Err(self.index_damage(hash_at));
        }
        let mut vh = [0u8; 32];
        vh.copy_from_slice(&head[usize_of(head_len)..]);
        Ok(Some(ValueSource {
            version: v,
            meta,
            value_hash: Digest(vh),
            seg,
            value_at: hash_at + 32,
        }))
    }

    /// [`Ledger::entry_proof`] without reading values: for a large tx (a streamed value),
    /// the record's header and each entry's head and value hash are read, the value bytes
    /// skipped; the entries must still hash to the header's entries root, and the header to
    /// its Alh. The entry comes with an empty value (its hash stands for it).
    pub fn entry_proof_without_value(&self, id: TxId, key: &[u8]) -> Result<(TxEntry, EntryProof)> {
        self.check_committed(id)?;
        let (segment, offset, frame_len) = decode_location(&self.shared.locations.read(id - 1)?);
        if (frame_len as usize) < HEADS_ONLY_FRAME_BYTES_MIN {
            return self.entry_proof(id, key);
        }
        let seg = self.segment(segment)?;
        let bad = |reason| LedgerError::BadTx {
            tx: id,
            path: seg.path().to_path_buf(),
            offset,
            reason,
        };
        let mut at = offset + FRAME_HEADER_BYTES as u64;
        let end = offset + u64::from(frame_len);
        let head = seg.read(at, codec::HEADER_BYTES)?;
        let (header, alh) = codec::decode_header(&head).map_err(|r| bad(TxFault::Decode(r)))?;
        if header.id != id {
            return Err(bad(TxFault::Chain(ChainBreak::Id)));
        }
        if header.alh() != alh {
            return Err(bad(TxFault::Chain(ChainBreak::Alh)));
        }
        at += codec::HEADER_BYTES as u64;
        let mut entries = Vec::with_capacity(header.entry_count as usize);
        for _ in 0..header.entry_count {
            let fixed = seg.read(at, codec::ENTRY_FIXED_BYTES)?;
            let key_len = usize::from(u16::from_le_bytes([fixed[0], fixed[1]]));
            let flags = fixed[2];
            let value_len = u32::from_le_bytes([fixed[3], fixed[4], fixed[5], fixed[6]]);
            let expiry = if flags & EntryMeta::FLAG_EXPIRES != 0 {
                8
            } else {
                0
            };
            let rest = seg.read(at + codec::ENTRY_FIXED_BYTES as u64, expiry + key_len + 32)?;
            let expires_at =
                (expiry == 8).then(|| u64::from_le_bytes(rest[..8].try_into().unwrap_or([0; 8])));
            let meta = EntryMeta::decode(flags, || expires_at)
                .map_err(|_| bad(TxFault::Decode("entry metadata")))?;
            let mut vh = [0u8; 32];
            vh.copy_from_slice(&rest[expiry + key_len..]);
            let dropped = value_len == codec::VALUE_DROPPED;
            let skipped = if dropped { 0 } else { u64::from(value_len) };
            at += (codec::ENTRY_FIXED_BYTES + expiry + key_len + 32) as u64 + skipped;
            if at > end {
                return Err(bad(TxFault::Decode("an entry runs past the record")));
            }
            entries.push(TxEntry {
                key: rest[expiry..expiry + key_len].to_vec(),
                meta,
                value: Vec::new(),
                value_hash: Digest(vh),
                dropped,
            });
        }
        if at != end {
            return Err(bad(TxFault::Decode("trailing bytes after the last entry")));
        }
        let leaves: Vec<Digest> = entries
            .iter()
            .map(|e| merkle::leaf_hash(&e.digest().0))
            .collect();
        if merkle::root_of_leaves(&leaves) != header.entries_root {
            return Err(bad(TxFault::Chain(ChainBreak::EntriesRoot)));
        }
        let index = entries
            .iter()
            .position(|e| e.key == key)
            .ok_or(LedgerError::KeyNotFound)?;
        let proof = EntryProof {
            index: crate::storage::len_u32(index),
            entry_count: header.entry_count,
            path: merkle::path_of_leaf(&leaves, index),
        };
        Ok((entries.swap_remove(index), proof))
    }

    fn index_damage(&self, offset: u64) -> LedgerError {
        LedgerError::Damaged {
            path: self.shared.dir.join("index"),
            offset,
            reason: Damage::IndexEntry,
        }
    }
}

/// A stored value, read a range at a time ([`Ledger::value_source`]).
pub struct ValueSource {
    version: Version,
    meta: EntryMeta,
    value_hash: Digest,
    seg: SegmentReader,
    value_at: u64,
}

impl ValueSource {
    /// The tx that wrote the value.
    pub fn tx(&self) -> TxId {
        self.version.tx
    }

    /// The value's length in bytes.
    pub fn len(&self) -> u64 {
        u64::from(self.version.value.len)
    }

    /// The value is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry's metadata.
    pub fn meta(&self) -> EntryMeta {
        self.meta
    }

    /// The value's hash as stored (`H(0x10 || value)`).
    pub fn value_hash(&self) -> Digest {
        self.value_hash
    }

    /// `len` bytes of the value from `offset` (fewer at its end).
    pub fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let end = (offset + len as u64).min(self.len());
        if offset >= end {
            return Ok(Vec::new());
        }
        Ok(self
            .seg
            .read(self.value_at + offset, usize_of(end - offset))?
            .into_owned())
    }

    /// A hasher for the value, to feed the chunks read: its result must be
    /// [`ValueSource::value_hash`].
    pub fn hasher() -> blake3::Hasher {
        let mut h = blake3::Hasher::new();
        h.update(&[TAG_VALUE]);
        h
    }
}

/// Checks a value's length against the limit of streamed values.
pub fn check_value_len(len: u64) -> Result<usize> {
    usize::try_from(len)
        .ok()
        .filter(|l| *l <= VALUE_BYTES_MAX)
        .ok_or(LedgerError::ValueTooLarge {
            index: 0,
            len: usize::try_from(len).unwrap_or(usize::MAX),
            max: VALUE_BYTES_MAX,
        })
}
