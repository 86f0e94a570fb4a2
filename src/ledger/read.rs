//! Reads: values by key, histories, scans, and txs by id, each checked as it is read.

use super::{
    codec, decode_location, lock_poisoned, ChainBreak, Damage, KeyValue, KeyVersion, Ledger,
    LedgerError, Order, Result, Tx, TxEntry, TxFault,
};
use crate::index::Version;
use crate::integrity::{kv, value_hash, Digest, EntryMeta, TxHeader, TxId};
use crate::storage::segment::SegmentReader;
use crate::storage::{usize_of, Corruption, StorageError};
use bytes::Bytes;

/// A record at least this long is not read whole for its header.
const HEADER_ONLY_FRAME_BYTES_MIN: usize = 4 << 20;

/// A live key, its version and the version's metadata.
type LiveKey = (Vec<u8>, Version, EntryMeta);

impl Ledger {
    /// The live value of `key`, or `None` if it was never set or is deleted.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        self.get_at(key, TxId::MAX)
    }

    /// The value of `key` as of tx `tx` (the newest version written by a tx `<= tx`). The
    /// index's answer must be the key map's (which the chain commits to): an index that lost
    /// or misplaced a version, which would hide a key or show an older value, is
    /// [`Damage::IndexEntry`].
    pub fn get_at(&self, key: &[u8], tx: TxId) -> Result<Option<KeyValue>> {
        let tx = tx.min(self.state().tx_id);
        let v = lock_poisoned(self.shared.index.read()).get(key, tx)?;
        let mapped = self.shared.map.latest(key, tx)?;
        if mapped.map(|l| (l.tx_id, l.deleted)) != v.as_ref().map(|v| (v.tx, v.deleted)) {
            return Err(LedgerError::Damaged {
                path: self.shared.dir.join("index"),
                offset: 0,
                reason: Damage::IndexEntry,
            });
        }
        let Some(v) = v.filter(|v| !v.deleted) else {
            return Ok(None);
        };
        let meta = self.meta_of(key, &v)?;
        if meta.expired_at(now_secs()) {
            return Ok(None);
        }
        Ok(Some(KeyValue {
            key: key.to_vec(),
            value: self.value(key, &v)?,
            tx: v.tx,
            value_truncated: false,
            meta,
        }))
    }

    /// Versions of `key`, deletions included, skipping `offset`, at most `limit`.
    pub fn history(
        &self,
        key: &[u8],
        offset: u64,
        limit: usize,
        order: Order,
    ) -> Result<Vec<KeyVersion>> {
        let versions =
            lock_poisoned(self.shared.index.read()).history(key, offset, limit, order)?;
        versions
            .iter()
            .map(|v| {
                let (value, value_truncated) = self.value_or_truncated(key, v)?;
                Ok(KeyVersion {
                    tx: v.tx,
                    deleted: v.deleted,
                    meta: self.meta_of(key, v)?,
                    value,
                    value_truncated,
                })
            })
            .collect()
    }

    /// Live keys starting with `prefix`, after the key `after` if given, in `order`, at most
    /// `limit`, as of tx `as_of` (`TxId::MAX` for the latest). An expired key is not live.
    pub fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        order: Order,
        as_of: TxId,
    ) -> Result<Vec<KeyValue>> {
        self.live_keys(prefix, after, limit, order, as_of)?
            .into_iter()
            .map(|(key, v, meta)| {
                let (value, value_truncated) = self.value_or_truncated(&key, &v)?;
                Ok(KeyValue {
                    value,
                    key,
                    tx: v.tx,
                    value_truncated,
                    meta,
                })
            })
            .collect()
    }

    /// How many live keys start with `prefix` as of tx `as_of` (`TxId::MAX` for the
    /// latest), from the index (a record is read only for a key whose version expires).
    pub fn count(&self, prefix: &[u8], as_of: TxId) -> Result<u64> {
        Ok(self
            .live_keys(prefix, None, usize::MAX, Order::Asc, as_of)?
            .len() as u64)
    }

    /// The index's live keys, without those expired now: pages through the index until
    /// `limit` are found or it has no more.
    fn live_keys(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        order: Order,
        as_of: TxId,
    ) -> Result<Vec<LiveKey>> {
        let mut out = Vec::new();
        let now = now_secs();
        let mut after = after.map(<[u8]>::to_vec);
        // The database's own keys (sorted-set members, the epoch marker) are listed only
        // when the prefix asks for them (they are skipped, not jumped: a user's key may sort
        // on either side of them).
        let own = |k: &[u8]| k.starts_with(kv::RESERVED_PREFIX);
        let skip_own = !own(prefix);
        while out.len() < limit {
            let want = limit - out.len();
            let found = lock_poisoned(self.shared.index.read()).scan(
                prefix,
                after.as_deref(),
                want,
                order,
                as_of,
            )?;
            let n = found.len();
            for (key, v) in found {
                after = Some(key.clone());
                if skip_own && own(&key) {
                    continue;
                }
                let meta = self.meta_of(&key, &v)?;
                if !meta.expired_at(now) {
                    out.push((key, v, meta));
                }
            }
            if n < want {
                break;
            }
        }
        Ok(out)
    }

    /// The metadata of the entry a version points at: read from its tx when it has an
    /// expiry time (the index keeps only that it has one).
    pub(super) fn meta_of(&self, key: &[u8], v: &Version) -> Result<EntryMeta> {
        if !v.expiring {
            return Ok(EntryMeta {
                deleted: v.deleted,
                reference: v.reference,
                ..EntryMeta::default()
            });
        }
        self.read_tx(v.tx, |r| {
            r.entries
                .iter()
                .find(|e| e.key == key && !e.meta.not_indexed)
                .map(|e| e.meta)
        })?
        .filter(|m| m.expires_at.is_some() && !m.deleted)
        .ok_or_else(|| LedgerError::Damaged {
            path: self.shared.dir.join("index"),
            offset: 0,
            reason: Damage::IndexEntry,
        })
    }

    pub(super) fn segment(&self, id: u32) -> Result<SegmentReader> {
        let view = lock_poisoned(self.shared.view.read());
        view.segments.get(&id).cloned().ok_or_else(|| {
            LedgerError::Storage(StorageError::corrupt(
                self.shared
                    .dir
                    .join("segments")
                    .join(crate::storage::segment::file_name(id)),
                0,
                Corruption::ShortFile,
            ))
        })
    }

    /// [`Ledger::value`], with a dropped value as `(empty, true)`.
    fn value_or_truncated(&self, key: &[u8], v: &Version) -> Result<(Vec<u8>, bool)> {
        match self.value(key, v) {
            Ok(value) => Ok((value, false)),
            Err(LedgerError::ValueTruncated { .. }) => Ok((Vec::new(), true)),
            Err(e) => Err(e),
        }
    }

    /// Reads the value an index version points at, checking everything on the way: the
    /// version's tx is committed and located where `tx.idx` says, its frame's checksums hold,
    /// its record decodes with that tx id, the location falls on an entry of that record, the
    /// entry is `key`'s with the version's flags and length, and the value matches its stored
    /// hash. Anything else is damage named by file and offset, never another key's value.
    fn value(&self, key: &[u8], v: &Version) -> Result<Vec<u8>> {
        let truncated = |tx| LedgerError::ValueTruncated {
            tx,
            values_from: self.values_from(),
        };
        // A truncation moved these txs' frames: the index's locations are stale, and the
        // values gone.
        if v.tx < self.values_from() {
            return if v.deleted {
                Ok(Vec::new())
            } else {
                Err(truncated(v.tx))
            };
        }
        let seg = self.segment(v.value.segment)?;
        let misplaced = || LedgerError::Damaged {
            path: seg.path().to_path_buf(),
            offset: u64::from(v.value.offset),
            reason: Damage::IndexEntry,
        };
        let last = self.state().tx_id;
        if v.tx == 0 || v.tx > last {
            return Err(misplaced());
        }
        let (segment, offset, frame_len) = decode_location(&self.shared.locations.read(v.tx - 1)?);
        let payload_at = offset + crate::storage::frame::FRAME_HEADER_BYTES as u64;
        let value_at = u64::from(v.value.offset);
        if segment != v.value.segment
            || value_at < payload_at
            || value_at >= offset + u64::from(frame_len)
        {
            return Err(misplaced());
        }
        let payload = seg.read_frame(offset, frame_len as usize)?;
        let bad = |reason| LedgerError::BadTx {
            tx: v.tx,
            path: seg.path().to_path_buf(),
            offset,
            reason,
        };
        let rec = codec::decode(&payload).map_err(|r| bad(TxFault::Decode(r)))?;
        if rec.header.id != v.tx {
            return Err(bad(TxFault::Chain(ChainBreak::Id)));
        }
        let at = usize_of(value_at - payload_at);
        let e = rec
            .entries
            .iter()
            .find(|e| e.value_hash_at == at)
            .ok_or_else(misplaced)?;
        if e.key != key || e.meta.deleted != v.deleted || e.value.len() != v.value.len as usize {
            return Err(misplaced());
        }
        if e.dropped {
            return Err(truncated(v.tx));
        }
        if value_hash(e.value) != e.value_hash {
            return Err(LedgerError::Damaged {
                path: seg.path().to_path_buf(),
                offset: value_at,
                reason: Damage::ValueHash,
            });
        }
        Ok(e.value.to_vec())
    }

    pub(super) fn check_committed(&self, id: TxId) -> Result<()> {
        let last = self.state().tx_id;
        if id == 0 || id > last {
            return Err(LedgerError::TxNotFound { id, last });
        }
        Ok(())
    }

    /// Reads and decodes tx `id`, checking its frame checksum and its Alh.
    fn read_tx<T>(&self, id: TxId, f: impl FnOnce(codec::TxRecord<'_>) -> T) -> Result<T> {
        self.check_committed(id)?;
        let (segment, offset, frame_len) = decode_location(&self.shared.locations.read(id - 1)?);
        let seg = self.segment(segment)?;
        let payload = seg.read_frame(offset, frame_len as usize)?;
        let bad = |reason| LedgerError::BadTx {
            tx: id,
            path: seg.path().to_path_buf(),
            offset,
            reason,
        };
        let rec = codec::decode(&payload).map_err(|r| bad(TxFault::Decode(r)))?;
        if rec.header.id != id {
            return Err(bad(TxFault::Chain(ChainBreak::Id)));
        }
        if rec.header.alh() != rec.alh {
            return Err(bad(TxFault::Chain(ChainBreak::Alh)));
        }
        Ok(f(rec))
    }

    /// The stored records of txs `from..=to` (header, Alh and entries, docs/format.md) for
    /// another database to apply: the first (if `from <= to`), then no more once they reach
    /// `bytes_max`. Each frame's checksum is checked; the hashes are left to the receiver,
    /// which checks them all before applying. Consecutive frames are read together.
    pub fn records(&self, from: TxId, to: TxId, bytes_max: usize) -> Result<Vec<Bytes>> {
        self.check_committed(from)?;
        self.check_committed(to)?;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut id = from;
        while id <= to && (out.is_empty() || bytes < bytes_max) {
            // One run: consecutive frames in one segment, within the byte budget.
            let (segment, start, first_len) = decode_location(&self.shared.locations.read(id - 1)?);
            let mut lens = vec![first_len];
            let mut end = start + u64::from(first_len);
            loop {
                let next = id + lens.len() as u64;
                if next > to || bytes + usize_of(end - start) >= bytes_max {
                    break;
                }
                let (s, offset, len) = decode_location(&self.shared.locations.read(next - 1)?);
                if s != segment || offset != end {
                    break;
                }
                lens.push(len);
                end += u64::from(len);
            }
            let seg = self.segment(segment)?;
            let run = Bytes::from(seg.read(start, usize_of(end - start))?.into_owned());
            let mut at = 0usize;
            for len in lens {
                let offset = start + at as u64;
                let bad = |reason| LedgerError::BadTx {
                    tx: id,
                    path: seg.path().to_path_buf(),
                    offset,
                    reason,
                };
                let frame = &run[at..at + len as usize];
                let payload = crate::storage::frame::decode_exact(frame)
                    .map_err(|c| bad(TxFault::Frame(c)))?;
                let (header, _) =
                    codec::decode_header(payload).map_err(|r| bad(TxFault::Decode(r)))?;
                if header.id != id {
                    return Err(bad(TxFault::Chain(ChainBreak::Id)));
                }
                let from = at + crate::storage::frame::FRAME_HEADER_BYTES;
                out.push(run.slice(from..from + payload.len()));
                bytes += len as usize;
                at += len as usize;
                id += 1;
            }
        }
        Ok(out)
    }

    /// The first tx committed at or after `timestamp_us` (one past the last if none was):
    /// a binary search over the headers, whose timestamps never decrease.
    pub fn first_tx_since(&self, timestamp_us: u64) -> Result<TxId> {
        let (mut lo, mut hi) = (1, self.state().tx_id + 1);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.header(mid)?.timestamp_us < timestamp_us {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// The header of tx `id`. A large record (a streamed value) is not read whole for it:
    /// its header is, and checked against its stored Alh.
    pub fn header(&self, id: TxId) -> Result<TxHeader> {
        self.check_committed(id)?;
        let (segment, offset, frame_len) = decode_location(&self.shared.locations.read(id - 1)?);
        if (frame_len as usize) < HEADER_ONLY_FRAME_BYTES_MIN {
            return self.read_tx(id, |r| r.header);
        }
        let seg = self.segment(segment)?;
        let bad = |reason| LedgerError::BadTx {
            tx: id,
            path: seg.path().to_path_buf(),
            offset,
            reason,
        };
        let head = seg.read(
            offset + crate::storage::frame::FRAME_HEADER_BYTES as u64,
            codec::HEADER_BYTES,
        )?;
        let (header, alh) = codec::decode_header(&head).map_err(|r| bad(TxFault::Decode(r)))?;
        if header.id != id {
            return Err(bad(TxFault::Chain(ChainBreak::Id)));
        }
        if header.alh() != alh {
            return Err(bad(TxFault::Chain(ChainBreak::Alh)));
        }
        Ok(header)
    }

    /// Tx `id` with all its entries.
    pub fn tx(&self, id: TxId) -> Result<Tx> {
        self.read_tx(id, |r| Tx {
            header: r.header,
            alh: r.alh,
            entries: r
                .entries
                .iter()
                .map(|e| TxEntry {
                    key: e.key.to_vec(),
                    meta: e.meta,
                    value: e.value.to_vec(),
                    value_hash: e.value_hash,
                    dropped: e.dropped,
                })
                .collect(),
        })?
        .check_values(self)
    }
}

impl Tx {
    /// Assert twice: the values and the entries root of a tx read back are checked again.
    fn check_values(self, ledger: &Ledger) -> Result<Tx> {
        let digests: Vec<Digest> = self.entries.iter().map(TxEntry::digest).collect();
        let root_ok = crate::integrity::tx::entries_root(&digests) == self.header.entries_root;
        for e in &self.entries {
            if !root_ok || (!e.dropped && value_hash(&e.value) != e.value_hash) {
                let (segment, offset, _) =
                    decode_location(&ledger.shared.locations.read(self.header.id - 1)?);
                let seg = ledger.segment(segment)?;
                return Err(LedgerError::BadTx {
                    tx: self.header.id,
                    path: seg.path().to_path_buf(),
                    offset,
                    reason: TxFault::Chain(if root_ok {
                        ChainBreak::ValueHash
                    } else {
                        ChainBreak::EntriesRoot
                    }),
                });
            }
        }
        Ok(self)
    }
}

/// Seconds since the Unix epoch by this machine's clock (0 before it): what expiry times are
/// judged against.
pub(super) fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
