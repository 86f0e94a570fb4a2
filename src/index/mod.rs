//! The key index: key -> versions, each version pointing at a value in a segment.
//!
//! Recent versions live in a memtable (a `BTreeMap`); at each checkpoint the ledger writes the
//! memtable out as an immutable, sorted [`run::Run`] and merges runs when there are too many.
//! Runs cover disjoint, increasing ranges of tx ids, and the memtable is newer than every run,
//! so "the newest version" of a key is found by looking newest-first.
//!
//! The index holds only committed, durable txs: the ledger inserts a tx after its fsync. It is
//! derived state: recovery rebuilds whatever the last checkpoint did not cover from the log.

pub mod run;

use crate::storage::Result;
use run::Run;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

/// Where a value is stored: `len` value bytes preceded by their 32-byte hash, at `offset` of
/// segment `segment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValueRef {
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
}

/// One version of a key: written (or deleted) by tx `tx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    pub tx: u64,
    pub deleted: bool,
    /// The entry has an expiry time (in its record): a read checks it there.
    pub expiring: bool,
    /// The entry is a reference (its value names another key).
    pub reference: bool,
    pub value: ValueRef,
}

impl Version {
    pub const FLAG_DELETED: u8 = 0x01;
    pub const FLAG_EXPIRING: u8 = 0x02;
    pub const FLAG_REFERENCE: u8 = 0x04;
    pub const FLAGS_KNOWN: u8 = Self::FLAG_DELETED | Self::FLAG_EXPIRING | Self::FLAG_REFERENCE;

    /// The flags byte of a run record (docs/format.md, "Index runs").
    pub fn flags(&self) -> u8 {
        Self::flags_of(self.deleted, self.expiring, self.reference)
    }

    pub fn flags_of(deleted: bool, expiring: bool, reference: bool) -> u8 {
        let mut f = u8::from(deleted);
        if expiring {
            f |= Self::FLAG_EXPIRING;
        }
        if reference {
            f |= Self::FLAG_REFERENCE;
        }
        f
    }

    const NONE: Version = Version {
        tx: 0,
        deleted: true,
        expiring: false,
        reference: false,
        value: ValueRef {
            segment: 0,
            offset: 0,
            len: 0,
        },
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

/// The versions of one key in a memtable, in tx order. Most keys have one, held inline to
/// save an allocation per key on the commit path.
#[derive(Debug, Clone)]
enum Versions {
    One(Version),
    Many(Vec<Version>),
}

impl Versions {
    fn as_slice(&self) -> &[Version] {
        match self {
            Versions::One(v) => std::slice::from_ref(v),
            Versions::Many(vs) => vs,
        }
    }

    fn push(&mut self, v: Version) {
        match self {
            Versions::One(first) => *self = Versions::Many(vec![*first, v]),
            Versions::Many(vs) => vs.push(v),
        }
    }
}

/// A key as the memtable holds it: its first 16 bytes inline (zero-padded), the rest on the
/// heap, and its length. Ordered exactly like the key bytes, but a comparison of keys that
/// differ in their first 16 bytes never leaves the B-tree node: the memtable's inserts were
/// dominated by chasing every key's heap pointer.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct MemKey {
    head: [u8; MemKey::HEAD],
    rest: Box<[u8]>,
    len: u16,
}

impl MemKey {
    const HEAD: usize = 16;

    /// Keys are at most `KEY_BYTES_MAX` (1024) bytes, so the length fits.
    fn new(key: &[u8]) -> MemKey {
        let mut head = [0u8; MemKey::HEAD];
        let n = key.len().min(MemKey::HEAD);
        head[..n].copy_from_slice(&key[..n]);
        MemKey {
            head,
            rest: key[n..].into(),
            len: key.len() as u16,
        }
    }

    fn to_vec(&self) -> Vec<u8> {
        let n = (self.len as usize).min(MemKey::HEAD);
        let mut v = Vec::with_capacity(self.len as usize);
        v.extend_from_slice(&self.head[..n]);
        v.extend_from_slice(&self.rest);
        v
    }
}

/// Recent versions, in memory: key -> versions in tx order.
#[derive(Debug, Default)]
pub struct Memtable {
    map: BTreeMap<MemKey, Versions>,
    versions: usize,
}

impl Memtable {
    pub fn versions(&self) -> usize {
        self.versions
    }

    /// Writes the memtable as a run file at `path`.
    pub fn write(&self, path: &std::path::Path) -> Result<()> {
        run::write_owned(
            path,
            self.map
                .iter()
                .flat_map(|(k, vs)| vs.as_slice().iter().map(move |v| Ok((k.to_vec(), *v)))),
        )
    }
}

/// Where an index query looks, oldest first: runs, then frozen memtables, then the memtable.
#[derive(Debug, Default)]
pub struct Index {
    mem: Memtable,
    /// Memtables being written out as runs by a checkpoint, oldest first.
    frozen: Vec<Arc<Memtable>>,
    /// Oldest first.
    runs: Vec<Arc<Run>>,
}

enum Source<'a> {
    Run(&'a Run),
    Mem(&'a Memtable),
}

/// The smallest key greater than every key that starts with `prefix`; `None` if there is none.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

fn best_at(versions: &[Version], as_of: u64) -> Option<Version> {
    let n = versions.partition_point(|v| v.tx <= as_of);
    n.checked_sub(1).map(|i| versions[i])
}

impl Index {
    pub fn new(runs: Vec<Arc<Run>>) -> Index {
        Index {
            mem: Memtable::default(),
            frozen: Vec::new(),
            runs,
        }
    }

    /// Adds a version; versions of one key must come in increasing tx order.
    pub fn insert(&mut self, key: &[u8], v: Version) {
        match self.mem.map.entry(MemKey::new(key)) {
            std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().push(v),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(Versions::One(v));
            }
        }
        self.mem.versions += 1;
    }

    /// Versions held in the (unfrozen) memtable.
    pub fn mem_versions(&self) -> usize {
        self.mem.versions
    }

    #[cfg(test)]
    pub fn runs(&self) -> &[Arc<Run>] {
        &self.runs
    }

    /// Freezes the memtable for a checkpoint to write out; queries still see it until
    /// [`Index::install`] replaces it with the run it became.
    pub fn freeze(&mut self) -> Arc<Memtable> {
        let frozen = Arc::new(std::mem::take(&mut self.mem));
        self.frozen.push(frozen.clone());
        frozen
    }

    /// Installs `runs`, which now cover the frozen memtable `flushed`, and drops it.
    pub fn install(&mut self, runs: Vec<Arc<Run>>, flushed: &Arc<Memtable>) {
        self.runs = runs;
        self.frozen.retain(|m| !Arc::ptr_eq(m, flushed));
    }

    /// Every source, oldest first.
    fn sources(&self) -> impl DoubleEndedIterator<Item = Source<'_>> {
        self.runs
            .iter()
            .map(|r| Source::Run(r))
            .chain(self.frozen.iter().map(|m| Source::Mem(m)))
            .chain(std::iter::once(Source::Mem(&self.mem)))
    }

    /// The newest version of `key` written by a tx `<= as_of`, deleted or not.
    pub fn get(&self, key: &[u8], as_of: u64) -> Result<Option<Version>> {
        for source in self.sources().rev() {
            match source {
                Source::Mem(m) => {
                    if let Some(v) = m
                        .map
                        .get(&MemKey::new(key))
                        .and_then(|vs| best_at(vs.as_slice(), as_of))
                    {
                        return Ok(Some(v));
                    }
                }
                Source::Run(run) => {
                    let end = run.lower_bound(key, as_of.saturating_add(1))?;
                    if end > 0 {
                        let r = run.record(end - 1)?;
                        if r.key == key {
                            return Ok(Some(r.version));
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    /// Versions of `key`, oldest first (or newest first), skipping `offset`, at most `limit`.
    pub fn history(
        &self,
        key: &[u8],
        offset: u64,
        limit: usize,
        order: Order,
    ) -> Result<Vec<Version>> {
        // One slice of versions per source, in tx order.
        let mut spans: Vec<(Source<'_>, u64, u64)> = Vec::new();
        for source in self.sources() {
            match source {
                Source::Run(run) => {
                    let a = run.lower_bound(key, 0)?;
                    let b = run.lower_bound(key, u64::MAX)?;
                    if a < b {
                        spans.push((Source::Run(run), a, b));
                    }
                }
                Source::Mem(m) => {
                    let n = m
                        .map
                        .get(&MemKey::new(key))
                        .map_or(0, |vs| vs.as_slice().len()) as u64;
                    if n > 0 {
                        spans.push((Source::Mem(m), 0, n));
                    }
                }
            }
        }
        if order == Order::Desc {
            spans.reverse();
        }
        let mut out = Vec::new();
        let mut skip = offset;
        for (source, a, b) in spans {
            let n = b - a;
            if skip >= n {
                skip -= n;
                continue;
            }
            let positions: Box<dyn Iterator<Item = u64>> = match order {
                Order::Asc => Box::new(a + skip..b),
                Order::Desc => Box::new((a..b - skip).rev()),
            };
            skip = 0;
            for p in positions {
                if out.len() >= limit {
                    return Ok(out);
                }
                out.push(match source {
                    Source::Run(run) => run.record(p)?.version,
                    Source::Mem(m) => m
                        .map
                        .get(&MemKey::new(key))
                        .map_or(Version::NONE, |vs| vs.as_slice()[p as usize]),
                });
            }
        }
        Ok(out)
    }

    /// Live keys starting with `prefix`, as of tx `as_of`, in key order (or reverse), starting
    /// after the key `after` when given, at most `limit`. Deleted keys are skipped.
    pub fn scan(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        order: Order,
        as_of: u64,
    ) -> Result<Vec<(Vec<u8>, Version)>> {
        let mut lower = prefix.to_vec();
        let mut upper = prefix_end(prefix);
        match (order, after) {
            (Order::Asc, Some(a)) => {
                let mut next = a.to_vec();
                next.push(0);
                lower = lower.max(next);
            }
            (Order::Desc, Some(a)) => {
                upper = Some(match upper {
                    Some(u) => u.min(a.to_vec()),
                    None => a.to_vec(),
                });
            }
            _ => {}
        }
        let mut out = Vec::new();
        if upper.as_ref().is_some_and(|u| *u <= lower) {
            return Ok(out);
        }
        let desc = order == Order::Desc;
        let mut cursors: Vec<Cursor<'_>> = Vec::with_capacity(self.runs.len() + 2);
        for source in self.sources() {
            match source {
                Source::Run(run) => {
                    let start = run.lower_bound(&lower, 0)?;
                    let end = match &upper {
                        Some(u) => run.lower_bound(u, 0)?,
                        None => run.len(),
                    };
                    cursors.push(Cursor::Run {
                        run,
                        start,
                        end,
                        pos: if desc { end } else { start },
                    });
                }
                Source::Mem(m) => {
                    let range = m.map.range((
                        Bound::Included(MemKey::new(&lower)),
                        upper
                            .as_deref()
                            .map_or(Bound::Unbounded, |u| Bound::Excluded(MemKey::new(u))),
                    ));
                    cursors.push(Cursor::Mem(if desc {
                        Box::new(range.rev())
                    } else {
                        Box::new(range)
                    }));
                }
            }
        }
        let mut heads = Vec::with_capacity(cursors.len());
        for c in cursors.iter_mut() {
            heads.push(c.next(desc, as_of)?);
        }
        while out.len() < limit {
            let key = heads
                .iter()
                .flatten()
                .map(|(k, _)| k)
                .reduce(|a, b| if (b < a) != desc { b } else { a })
                .cloned();
            let Some(key) = key else { break };
            let mut chosen = None;
            for (i, head) in heads.iter_mut().enumerate().rev() {
                if head.as_ref().is_some_and(|(k, _)| *k == key) {
                    if let Some((_, v)) = head.take() {
                        chosen = chosen.or(v);
                    }
                    *head = cursors[i].next(desc, as_of)?;
                }
            }
            if let Some(v) = chosen.filter(|v| !v.deleted) {
                out.push((key, v));
            }
        }
        Ok(out)
    }
}

/// Merges `runs` (consecutive, oldest first) into one run file at `path`.
pub fn merge_runs(runs: &[Arc<Run>], path: &std::path::Path) -> Result<()> {
    struct Merge<'a> {
        runs: &'a [Arc<Run>],
        pos: Vec<u64>,
    }
    impl<'a> Iterator for Merge<'a> {
        type Item = Result<(&'a [u8], Version)>;
        fn next(&mut self) -> Option<Self::Item> {
            let mut best: Option<(usize, run::RunRecord<'a>)> = None;
            for (i, run) in self.runs.iter().enumerate() {
                if self.pos[i] >= run.len() {
                    continue;
                }
                let r = match run.record(self.pos[i]) {
                    Ok(r) => r,
                    Err(e) => return Some(Err(e)),
                };
                // Ties on key go to the older run, whose txs come first.
                if best.as_ref().is_none_or(|(_, b)| r.key < b.key) {
                    best = Some((i, r));
                }
            }
            let (i, r) = best?;
            self.pos[i] += 1;
            Some(Ok((r.key, r.version)))
        }
    }
    run::write(
        path,
        Merge {
            runs,
            pos: vec![0; runs.len()],
        },
    )
}

enum Cursor<'a> {
    Run {
        run: &'a Run,
        start: u64,
        end: u64,
        pos: u64,
    },
    Mem(Box<dyn Iterator<Item = (&'a MemKey, &'a Versions)> + 'a>),
}

impl Cursor<'_> {
    /// The next key in the range and its newest version `<= as_of` in this source.
    fn next(&mut self, desc: bool, as_of: u64) -> Result<Option<(Vec<u8>, Option<Version>)>> {
        match self {
            Cursor::Mem(it) => Ok(it
                .next()
                .map(|(k, vs)| (k.to_vec(), best_at(vs.as_slice(), as_of)))),
            Cursor::Run {
                run,
                start,
                end,
                pos,
            } => {
                if desc {
                    if *pos <= *start {
                        return Ok(None);
                    }
                    let key = run.record(*pos - 1)?.key;
                    let mut best = None;
                    while *pos > *start {
                        let r = run.record(*pos - 1)?;
                        if r.key != key {
                            break;
                        }
                        if best.is_none() && r.version.tx <= as_of {
                            best = Some(r.version);
                        }
                        *pos -= 1;
                    }
                    Ok(Some((key.to_vec(), best)))
                } else {
                    if *pos >= *end {
                        return Ok(None);
                    }
                    let key = run.record(*pos)?.key;
                    let mut best = None;
                    while *pos < *end {
                        let r = run.record(*pos)?;
                        if r.key != key {
                            break;
                        }
                        if r.version.tx <= as_of {
                            best = Some(r.version);
                        }
                        *pos += 1;
                    }
                    Ok(Some((key.to_vec(), best)))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn v(tx: u64, deleted: bool) -> Version {
        Version {
            expiring: false,
            reference: false,
            tx,
            deleted,
            value: ValueRef {
                segment: 1,
                offset: tx as u32,
                len: 0,
            },
        }
    }

    /// The model: every version of every key, kept in one map.
    type Model = BTreeMap<Vec<u8>, Vec<Version>>;

    fn model_get(m: &Model, k: &[u8], as_of: u64) -> Option<Version> {
        m.get(k).and_then(|vs| best_at(vs, as_of))
    }

    /// Builds an index over `ops` (key, deleted), one tx each, freezing the memtable every
    /// `every` txs and writing it as a run (merging once there are more than three). Each run
    /// is installed only at the next flush, so queries also meet a frozen memtable, as they do
    /// while a checkpoint is under way. Returns the model beside it.
    fn build(dir: &std::path::Path, ops: &[(Vec<u8>, bool)], every: usize) -> (Index, Model) {
        let lock = crate::fs::DirLock::acquire(dir).unwrap();
        let mut idx = Index::default();
        let mut model = Model::new();
        let mut next_run = 0u64;
        let mut pending: Option<(Vec<Arc<Run>>, Arc<Memtable>)> = None;
        for (i, (k, del)) in ops.iter().enumerate() {
            let ver = v(i as u64 + 1, *del);
            idx.insert(k, ver);
            model.entry(k.clone()).or_default().push(ver);
            if (i + 1) % every == 0 {
                let mut runs = match pending.take() {
                    Some((runs, flushed)) => {
                        idx.install(runs.clone(), &flushed);
                        runs
                    }
                    None => idx.runs().to_vec(),
                };
                let frozen = idx.freeze();
                next_run += 1;
                let p = dir.join(run::file_name(next_run));
                frozen.write(&p).unwrap();
                runs.push(Arc::new(Run::open(&p, next_run, &lock).unwrap()));
                if runs.len() > 3 {
                    next_run += 1;
                    let p = dir.join(run::file_name(next_run));
                    merge_runs(&runs, &p).unwrap();
                    runs = vec![Arc::new(Run::open(&p, next_run, &lock).unwrap())];
                }
                pending = Some((runs, frozen));
            }
        }
        (idx, model)
    }

    /// Installs whatever a build left pending.
    fn settle(idx: &mut Index) {
        if let Some(frozen) = idx.frozen.last().cloned() {
            let dir = idx
                .runs()
                .first()
                .map(|r| r.path().parent().unwrap().to_path_buf());
            if let Some(dir) = dir {
                let lock = crate::fs::DirLock::acquire(&dir).unwrap();
                let p = dir.join(run::file_name(999_999));
                frozen.write(&p).unwrap();
                let mut runs = idx.runs().to_vec();
                runs.push(Arc::new(Run::open(&p, 999_999, &lock).unwrap()));
                idx.install(runs, &frozen);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn index_matches_model(
            ops in proptest::collection::vec((proptest::collection::vec(0u8..4, 1..4), any::<bool>()), 1..120),
            every in 1usize..20,
            as_of in 0u64..130,
            limit in 1usize..10,
            offset in 0u64..5,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let (mut idx, model) = build(dir.path(), &ops, every);
            if as_of % 2 == 0 {
                settle(&mut idx);
            }
            for run in idx.runs() { run.check().unwrap(); }
            for k in model.keys() {
                prop_assert_eq!(idx.get(k, u64::MAX).unwrap(), model_get(&model, k, u64::MAX));
                prop_assert_eq!(idx.get(k, as_of).unwrap(), model_get(&model, k, as_of));
                let all = &model[k];
                let asc: Vec<_> = all.iter().skip(offset as usize).take(limit).copied().collect();
                prop_assert_eq!(idx.history(k, offset, limit, Order::Asc).unwrap(), asc);
                let desc: Vec<_> = all.iter().rev().skip(offset as usize).take(limit).copied().collect();
                prop_assert_eq!(idx.history(k, offset, limit, Order::Desc).unwrap(), desc);
            }
            for prefix in [vec![], vec![0u8], vec![1, 2], vec![3, 3, 3]] {
                let live: Vec<(Vec<u8>, Version)> = model
                    .iter()
                    .filter(|(k, _)| k.starts_with(&prefix))
                    .filter_map(|(k, vs)| best_at(vs, as_of).filter(|v| !v.deleted).map(|v| (k.clone(), v)))
                    .collect();
                let asc = idx.scan(&prefix, None, limit, Order::Asc, as_of).unwrap();
                prop_assert_eq!(&asc, &live.iter().take(limit).cloned().collect::<Vec<_>>());
                let desc = idx.scan(&prefix, None, limit, Order::Desc, as_of).unwrap();
                prop_assert_eq!(&desc, &live.iter().rev().take(limit).cloned().collect::<Vec<_>>());
                // Paging with `after` walks the same sequence.
                if let Some((last, _)) = asc.last() {
                    let next = idx.scan(&prefix, Some(last), limit, Order::Asc, as_of).unwrap();
                    let expect: Vec<_> = live.iter().filter(|(k, _)| k > last).take(limit).cloned().collect();
                    prop_assert_eq!(next, expect);
                }
                if let Some((last, _)) = desc.last() {
                    let next = idx.scan(&prefix, Some(last), limit, Order::Desc, as_of).unwrap();
                    let expect: Vec<_> = live.iter().rev().filter(|(k, _)| k < last).take(limit).cloned().collect();
                    prop_assert_eq!(next, expect);
                }
            }
        }
    }

    fn frozen_first(idx: &mut Index, path: &std::path::Path, lock: &crate::fs::DirLock) {
        let frozen = idx.frozen[0].clone();
        frozen.write(path).unwrap();
        idx.install(vec![Arc::new(Run::open(path, 1, lock).unwrap())], &frozen);
    }

    proptest! {
        #[test]
        fn mem_keys_order_like_their_bytes(a in proptest::collection::vec(0u8..3, 0..40), b in proptest::collection::vec(0u8..3, 0..40)) {
            prop_assert_eq!(MemKey::new(&a).cmp(&MemKey::new(&b)), a.cmp(&b));
            prop_assert_eq!(MemKey::new(&a).to_vec(), a);
        }
    }

    #[test]
    fn prefix_end_handles_ff() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(&[]), None);
    }

    #[test]
    fn a_flipped_run_record_names_file_and_offset() {
        let dir = tempfile::tempdir().unwrap();
        let ops: Vec<(Vec<u8>, bool)> = (0..10u8).map(|i| (vec![i], false)).collect();
        let (mut idx, _) = build(dir.path(), &ops, 10);
        let lock = crate::fs::DirLock::acquire(dir.path()).unwrap();
        let first = dir.path().join(run::file_name(1));
        frozen_first(&mut idx, &first, &lock);
        let path = idx.runs()[0].path().to_path_buf();
        drop(idx);
        let mut bytes = std::fs::read(&path).unwrap();
        // Record 0 starts right after the 32-byte header; flip a byte of its tx id.
        bytes[32 + 5] ^= 0x40;
        std::fs::write(&path, &bytes).unwrap();
        let run = Run::open(&path, 1, &lock).unwrap();
        let err = run.record(0).unwrap_err();
        assert!(
            matches!(&err, crate::storage::StorageError::Corrupt { path: p, offset: 32, .. } if *p == path),
            "{err}"
        );
        assert!(run.check().is_err());
    }
}
