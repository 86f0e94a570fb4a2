//! The authenticated map: every key of a database -> its latest version (the tx that wrote
//! it, whether that was a delete, and the entry's digest), as a sparse Merkle tree over
//! 256-bit key hashes (docs/format.md, "The key map"; docs/verification.md, "Latest and
//! absent").
//!
//! Shape: a binary tree indexed by the bits of `key_hash(key)`, most significant bit of the
//! first byte first. A subtree holding no key is *empty* (hash [`MAP_EMPTY`]); a subtree
//! holding exactly one key is that key's *leaf*, placed as high as it can be; a subtree
//! holding two or more keys is an *internal node* whose hash is [`map_node_hash`] of its two
//! children. The shape is therefore a function of the key set alone, and so is the root (the
//! Jellyfish Merkle Tree's binary form). Keys are never removed: a delete is a version whose
//! leaf says so.
//!
//! Code is split as in [`super::merkle`]: [`update`] and [`prove`] walk a tree through a
//! [`MapNodes`] store without knowing where its nodes live, and [`MapProof::verify`] checks a
//! proof knowing nothing but the root. Tests compare roots and proofs with a naive recursive
//! reference over a `BTreeMap`.

use super::proof::VerifyError;
use super::{Digest, TxId, TAG_MAP_KEY, TAG_MAP_LEAF, TAG_MAP_NODE};

/// Bits in a key hash: no path is longer.
pub const MAP_DEPTH_MAX: usize = 256;

/// The hash of an empty subtree (and the root of an empty map): 32 zero bytes, which no
/// BLAKE3 output is known to equal.
pub const MAP_EMPTY: Digest = Digest::ZERO;

/// `H(0x14 || key)`: where a key lives in the map.
pub fn key_hash(key: &[u8]) -> Digest {
    const SMALL: usize = 128;
    if key.len() <= SMALL {
        let mut buf = [0u8; 1 + SMALL];
        buf[0] = TAG_MAP_KEY;
        buf[1..=key.len()].copy_from_slice(key);
        return blake3::hash(&buf[..=key.len()]).into();
    }
    let mut h = blake3::Hasher::new();
    h.update(&[TAG_MAP_KEY]);
    h.update(key);
    h.finalize().into()
}

/// The key of the keyed BLAKE3 hash of internal nodes: `H(0x16)`.
fn node_key() -> &'static [u8; 32] {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    KEY.get_or_init(|| *blake3::hash(&[TAG_MAP_NODE]).as_bytes())
}

/// An internal node: BLAKE3 keyed with `H(0x16)` over `left || right` (64 bytes, one BLAKE3
/// block).
pub fn map_node_hash(left: &Digest, right: &Digest) -> Digest {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(&left.0);
    buf[32..].copy_from_slice(&right.0);
    blake3::keyed_hash(node_key(), &buf).into()
}

/// One key's latest version, as the map holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapLeaf {
    /// [`key_hash`] of the key.
    pub key_hash: Digest,
    /// The tx that wrote the version.
    pub tx_id: TxId,
    /// The version is a delete.
    pub deleted: bool,
    /// The entry's digest (`entry_digest` over key, flags and value hash).
    pub entry_digest: Digest,
}

impl MapLeaf {
    /// `H(0x15 || key_hash || u64 tx_id || u8 flags || entry_digest)`; flags is the entry's
    /// flags byte (bit 0: deleted).
    pub fn hash(&self) -> Digest {
        let mut buf = [0u8; 1 + 32 + 8 + 1 + 32];
        buf[0] = TAG_MAP_LEAF;
        buf[1..33].copy_from_slice(&self.key_hash.0);
        buf[33..41].copy_from_slice(&self.tx_id.to_le_bytes());
        buf[41] = u8::from(self.deleted);
        buf[42..].copy_from_slice(&self.entry_digest.0);
        blake3::hash(&buf).into()
    }
}

/// Bit `depth` of a key hash, most significant bit of byte 0 first: `false` goes left.
pub fn bit(h: &Digest, depth: usize) -> bool {
    h.0[depth / 8] & (0x80 >> (depth % 8)) != 0
}

/// How many leading bits two key hashes share.
pub fn common_prefix_bits(a: &Digest, b: &Digest) -> usize {
    for (i, (x, y)) in a.0.iter().zip(b.0.iter()).enumerate() {
        if x != y {
            return i * 8 + (x ^ y).leading_zeros() as usize;
        }
    }
    MAP_DEPTH_MAX
}

/// A link to a subtree: its hash, and where its top node is stored (`None`: empty).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Child<R> {
    pub hash: Digest,
    pub node: Option<R>,
}

impl<R> Child<R> {
    pub const fn empty() -> Child<R> {
        Child {
            hash: MAP_EMPTY,
            node: None,
        }
    }
}

/// A stored node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node<R> {
    Internal { left: Child<R>, right: Child<R> },
    Leaf(MapLeaf),
}

/// Where a tree's nodes are read from.
pub trait MapNodes {
    /// How a node is addressed.
    type Ref: Copy;
    type Error;
    fn node(&self, at: Self::Ref) -> Result<Node<Self::Ref>, Self::Error>;
}

/// Where [`update`] puts the nodes it makes.
pub trait MapNodesMut: MapNodes {
    /// Stores a new node.
    fn push(&mut self, node: Node<Self::Ref>) -> Result<Self::Ref, Self::Error>;
    /// `at` is no longer part of the tree being updated. A store that keeps every version
    /// (the ledger's, for proofs at past txs) ignores this; one that keeps only the latest
    /// (the offline check's) frees it.
    fn retire(&mut self, _at: Self::Ref) {}
}

/// Sets every leaf of `leaves` (sorted by key hash, no key twice) in the tree under `root`,
/// and returns the new root. Nodes off the changed paths are shared with the old tree.
pub fn update<S: MapNodesMut>(
    store: &mut S,
    root: Child<S::Ref>,
    leaves: &[MapLeaf],
) -> Result<Child<S::Ref>, S::Error> {
    debug_assert!(leaves.windows(2).all(|w| w[0].key_hash < w[1].key_hash));
    apply(store, root, 0, leaves)
}

fn apply<S: MapNodesMut>(
    store: &mut S,
    at: Child<S::Ref>,
    depth: usize,
    leaves: &[MapLeaf],
) -> Result<Child<S::Ref>, S::Error> {
    if leaves.is_empty() {
        return Ok(at);
    }
    let Some(r) = at.node else {
        return build(store, depth, leaves, None);
    };
    match store.node(r)? {
        Node::Leaf(old) => {
            if leaves.iter().any(|l| l.key_hash == old.key_hash) {
                store.retire(r);
                return build(store, depth, leaves, None);
            }
            // The leaf moves down beside the new ones, as the node it is.
            build(store, depth, leaves, Some((old.key_hash, at)))
        }
        Node::Internal { left, right } => {
            store.retire(r);
            let split = leaves.partition_point(|l| !bit(&l.key_hash, depth));
            let l = apply(store, left, depth + 1, &leaves[..split])?;
            let r = apply(store, right, depth + 1, &leaves[split..])?;
            internal(store, l, r)
        }
    }
}

/// The subtree at `depth` holding exactly `leaves` (sorted) and, if given, an existing leaf
/// (its key hash and its node) whose key is not among them; at least one of the two.
fn build<S: MapNodesMut>(
    store: &mut S,
    depth: usize,
    leaves: &[MapLeaf],
    existing: Option<(Digest, Child<S::Ref>)>,
) -> Result<Child<S::Ref>, S::Error> {
    match (leaves, existing) {
        ([], Some((_, old))) => return Ok(old),
        ([], None) => return Ok(Child::empty()),
        ([leaf], None) => {
            let hash = leaf.hash();
            let node = store.push(Node::Leaf(*leaf))?;
            return Ok(Child {
                hash,
                node: Some(node),
            });
        }
        _ => {}
    }
    // Distinct key hashes part before bit 256, so this recursion ends.
    let split = leaves.partition_point(|l| !bit(&l.key_hash, depth));
    let (le, re) = match existing {
        Some((kh, old)) if bit(&kh, depth) => (None, Some((kh, old))),
        e => (e, None),
    };
    let l = build(store, depth + 1, &leaves[..split], le)?;
    let r = build(store, depth + 1, &leaves[split..], re)?;
    internal(store, l, r)
}

fn internal<S: MapNodesMut>(
    store: &mut S,
    left: Child<S::Ref>,
    right: Child<S::Ref>,
) -> Result<Child<S::Ref>, S::Error> {
    let hash = map_node_hash(&left.hash, &right.hash);
    let node = store.push(Node::Internal { left, right })?;
    Ok(Child {
        hash,
        node: Some(node),
    })
}

/// The latest version of one key as of one map root, or proof that it has none.
///
/// `siblings[i]` is the hash of the subtree beside the path at depth `i + 1` (top-down, so
/// `siblings[0]` is a child of the root). The path ends at depth `siblings.len()` in `leaf`:
/// the key's own leaf (it has a version), another key's leaf, or nothing (an empty subtree;
/// both mean the key has no version).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MapProof {
    pub siblings: Vec<Digest>,
    pub leaf: Option<MapLeaf>,
}

/// What a map proof shows about its key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latest {
    /// The key's latest version.
    Version(MapLeaf),
    /// The key has never been written.
    Absent,
}

impl MapProof {
    /// The root this proof leads to for a key with hash `key_hash`.
    fn fold(&self, key_hash: &Digest) -> Digest {
        let mut h = self.leaf.map_or(MAP_EMPTY, |l| l.hash());
        for (depth, sibling) in self.siblings.iter().enumerate().rev() {
            h = if bit(key_hash, depth) {
                map_node_hash(sibling, &h)
            } else {
                map_node_hash(&h, sibling)
            };
        }
        h
    }

    /// Verifies the proof for `key` against the map root `root`, and says what it shows.
    pub fn verify(&self, root: &Digest, key: &[u8]) -> Result<Latest, VerifyError> {
        let kh = key_hash(key);
        let depth = self.siblings.len();
        if depth > MAP_DEPTH_MAX {
            return Err(VerifyError::ProofLength {
                expected: MAP_DEPTH_MAX,
                actual: depth,
            });
        }
        let latest = match &self.leaf {
            None => Latest::Absent,
            Some(l) if l.key_hash == kh => Latest::Version(*l),
            // Another key's leaf ends the path: it must sit on this key's path, where a
            // leaf is alone in its subtree, so this key is not in the map.
            Some(l) if common_prefix_bits(&l.key_hash, &kh) >= depth => Latest::Absent,
            Some(_) => return Err(VerifyError::MapLeafOffPath { depth }),
        };
        let computed = self.fold(&kh);
        if computed != *root {
            return Err(VerifyError::RootMismatch {
                expected: *root,
                computed,
            });
        }
        Ok(latest)
    }
}

/// The latest version of the key with hash `key_hash` in the tree under `root`, if it has
/// one: [`prove`] without the hashes.
pub fn find<S: MapNodes>(
    store: &S,
    root: Child<S::Ref>,
    key_hash: &Digest,
) -> Result<Option<MapLeaf>, S::Error> {
    let mut at = root;
    let mut depth = 0;
    loop {
        let Some(r) = at.node else {
            return Ok(None);
        };
        match store.node(r)? {
            Node::Leaf(leaf) => return Ok((leaf.key_hash == *key_hash).then_some(leaf)),
            Node::Internal { left, right } => {
                at = if bit(key_hash, depth) { right } else { left };
                depth += 1;
            }
        }
    }
}

/// The proof for the key with hash `key_hash` in the tree under `root`.
pub fn prove<S: MapNodes>(
    store: &S,
    root: Child<S::Ref>,
    key_hash: &Digest,
) -> Result<MapProof, S::Error> {
    let mut siblings = Vec::with_capacity(32);
    let mut at = root;
    loop {
        let Some(r) = at.node else {
            return Ok(MapProof {
                siblings,
                leaf: None,
            });
        };
        match store.node(r)? {
            Node::Leaf(leaf) => {
                return Ok(MapProof {
                    siblings,
                    leaf: Some(leaf),
                })
            }
            Node::Internal { left, right } => {
                if bit(key_hash, siblings.len()) {
                    siblings.push(left.hash);
                    at = right;
                } else {
                    siblings.push(right.hash);
                    at = left;
                }
            }
        }
    }
}

/// A store in memory that keeps only the latest tree, reusing the slots of retired nodes:
/// for recomputing a database's map from its log (the offline check), and for tests.
#[derive(Debug, Default)]
pub struct MemoryMap {
    nodes: Vec<Node<u32>>,
    free: Vec<u32>,
    root: Option<Child<u32>>,
}

impl MemoryMap {
    pub fn new() -> MemoryMap {
        MemoryMap::default()
    }

    /// The root of the map as it is now.
    pub fn root(&self) -> Digest {
        self.root.map_or(MAP_EMPTY, |c| c.hash)
    }

    /// Sets `leaves` (any order, no key twice) and returns the new root.
    pub fn set(&mut self, leaves: &mut [MapLeaf]) -> Digest {
        leaves.sort_unstable_by_key(|l| l.key_hash);
        let root = self.root.unwrap_or(Child::empty());
        let new = match update(self, root, leaves) {
            Ok(c) => c,
            Err(never) => match never {},
        };
        self.root = Some(new);
        new.hash
    }

    /// The proof for `key` in the map as it is now.
    pub fn prove(&self, key: &[u8]) -> MapProof {
        let root = self.root.unwrap_or(Child::empty());
        match prove(self, root, &key_hash(key)) {
            Ok(p) => p,
            Err(never) => match never {},
        }
    }

    /// Nodes held.
    pub fn len(&self) -> usize {
        self.nodes.len() - self.free.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl MapNodes for MemoryMap {
    type Ref = u32;
    type Error = std::convert::Infallible;
    fn node(&self, at: u32) -> Result<Node<u32>, Self::Error> {
        Ok(self.nodes[at as usize])
    }
}

impl MapNodesMut for MemoryMap {
    fn push(&mut self, node: Node<u32>) -> Result<u32, Self::Error> {
        if let Some(at) = self.free.pop() {
            self.nodes[at as usize] = node;
            return Ok(at);
        }
        self.nodes.push(node);
        // More than 4 billion live nodes would need more memory than any check runs with.
        Ok(u32::try_from(self.nodes.len() - 1).unwrap_or(u32::MAX))
    }

    fn retire(&mut self, at: u32) {
        self.free.push(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// The naive reference: the root of the canonical tree over `leaves` (by key hash),
    /// computed from the definition, recursively.
    fn naive_root(leaves: &BTreeMap<Digest, MapLeaf>) -> Digest {
        let all: Vec<MapLeaf> = leaves.values().copied().collect();
        naive_subtree(&all, 0)
    }

    fn naive_subtree(leaves: &[MapLeaf], depth: usize) -> Digest {
        match leaves {
            [] => MAP_EMPTY,
            [one] => one.hash(),
            _ => {
                let (l, r): (Vec<MapLeaf>, Vec<MapLeaf>) =
                    leaves.iter().partition(|x| !bit(&x.key_hash, depth));
                map_node_hash(&naive_subtree(&l, depth + 1), &naive_subtree(&r, depth + 1))
            }
        }
    }

    fn leaf(key: &[u8], tx: TxId, deleted: bool) -> MapLeaf {
        MapLeaf {
            key_hash: key_hash(key),
            tx_id: tx,
            deleted,
            entry_digest: Digest::from(blake3::hash(&[key, &tx.to_le_bytes()].concat())),
        }
    }

    /// A store that keeps every version, as the ledger's does.
    #[derive(Default)]
    struct Versions(Vec<Node<usize>>);

    impl MapNodes for Versions {
        type Ref = usize;
        type Error = std::convert::Infallible;
        fn node(&self, at: usize) -> Result<Node<usize>, Self::Error> {
            Ok(self.0[at])
        }
    }

    impl MapNodesMut for Versions {
        fn push(&mut self, node: Node<usize>) -> Result<usize, Self::Error> {
            self.0.push(node);
            Ok(self.0.len() - 1)
        }
    }

    #[test]
    fn hash_inputs_are_as_documented() {
        let mut k = vec![TAG_MAP_KEY];
        k.extend_from_slice(b"key");
        assert_eq!(key_hash(b"key"), Digest::from(blake3::hash(&k)));
        let long = vec![7u8; 1000];
        let mut k = vec![TAG_MAP_KEY];
        k.extend_from_slice(&long);
        assert_eq!(key_hash(&long), Digest::from(blake3::hash(&k)));
        let l = leaf(b"key", 9, true);
        let mut b = vec![TAG_MAP_LEAF];
        b.extend_from_slice(&l.key_hash.0);
        b.extend_from_slice(&9u64.to_le_bytes());
        b.push(1);
        b.extend_from_slice(&l.entry_digest.0);
        assert_eq!(l.hash(), Digest::from(blake3::hash(&b)));
        let (x, y) = (Digest([1; 32]), Digest([2; 32]));
        let key = blake3::hash(&[TAG_MAP_NODE]);
        let mut n = [0u8; 64];
        n[..32].copy_from_slice(&x.0);
        n[32..].copy_from_slice(&y.0);
        assert_eq!(
            map_node_hash(&x, &y),
            Digest::from(blake3::keyed_hash(key.as_bytes(), &n))
        );
    }

    #[test]
    fn bits_are_read_most_significant_first() {
        let mut d = Digest::ZERO;
        d.0[0] = 0b1000_0000;
        d.0[1] = 0b0000_0001;
        assert!(bit(&d, 0));
        assert!(!bit(&d, 1));
        assert!(bit(&d, 15));
        assert_eq!(common_prefix_bits(&d, &Digest::ZERO), 0);
        let mut e = d;
        e.0[1] = 0;
        assert_eq!(common_prefix_bits(&d, &e), 15);
        assert_eq!(common_prefix_bits(&d, &d), 256);
    }

    #[test]
    fn an_empty_map_proves_every_key_absent() {
        let m = MemoryMap::new();
        assert_eq!(m.root(), MAP_EMPTY);
        let p = m.prove(b"anything");
        assert_eq!(p, MapProof::default());
        assert_eq!(p.verify(&MAP_EMPTY, b"anything"), Ok(Latest::Absent));
    }

    #[test]
    fn one_key_is_the_root_leaf() {
        let mut m = MemoryMap::new();
        let l = leaf(b"a", 1, false);
        assert_eq!(m.set(&mut [l]), l.hash());
        assert_eq!(
            m.prove(b"a").verify(&l.hash(), b"a"),
            Ok(Latest::Version(l))
        );
        assert_eq!(m.prove(b"b").verify(&l.hash(), b"b"), Ok(Latest::Absent));
    }

    /// Two keys whose hashes share a long prefix hang below a chain of internal nodes with
    /// empty siblings; proofs through them verify.
    #[test]
    fn keys_sharing_a_prefix_hang_below_empty_siblings() {
        let mut keys = Vec::new();
        let first = key_hash(b"k0");
        for i in 1..200_000u32 {
            let k = format!("k{i}");
            if common_prefix_bits(&key_hash(k.as_bytes()), &first) >= 12 {
                keys.push(k);
                break;
            }
        }
        keys.push("k0".into());
        let mut m = MemoryMap::new();
        let mut model = BTreeMap::new();
        let mut leaves: Vec<MapLeaf> = keys.iter().map(|k| leaf(k.as_bytes(), 1, false)).collect();
        for l in &leaves {
            model.insert(l.key_hash, *l);
        }
        let root = m.set(&mut leaves);
        assert_eq!(root, naive_root(&model));
        for k in &keys {
            let p = m.prove(k.as_bytes());
            assert!(p.siblings.len() > 12);
            assert!(p.siblings[..12].iter().all(|s| *s == MAP_EMPTY));
            assert!(matches!(
                p.verify(&root, k.as_bytes()),
                Ok(Latest::Version(_))
            ));
        }
    }

    #[test]
    fn a_proof_from_another_root_or_for_another_key_fails() {
        let mut m = MemoryMap::new();
        let mut ls: Vec<MapLeaf> = (0..50u32)
            .map(|i| leaf(format!("key{i}").as_bytes(), 1, false))
            .collect();
        let old_root = m.set(&mut ls);
        let old = m.prove(b"key7");
        let new_root = m.set(&mut [leaf(b"key7", 2, false)]);
        // The old version's proof no longer leads to the root.
        assert!(matches!(
            old.verify(&new_root, b"key7"),
            Err(VerifyError::RootMismatch { .. })
        ));
        assert!(matches!(old.verify(&old_root, b"key7"), Ok(Latest::Version(l)) if l.tx_id == 1));
        // key7's proof shows key7's leaf, which is not another key's absence.
        let p = m.prove(b"key7");
        assert!(p.verify(&new_root, b"key8").is_err());
    }

    #[test]
    fn an_off_path_leaf_is_refused() {
        let mut m = MemoryMap::new();
        let mut ls: Vec<MapLeaf> = (0..20u32)
            .map(|i| leaf(format!("x{i}").as_bytes(), 1, false))
            .collect();
        let root = m.set(&mut ls);
        // A proof of absence for a key from a leaf that does not share its path.
        let mut p = m.prove(b"x3");
        let absent = (0..1000u32)
            .map(|i| format!("y{i}"))
            .find(|k| common_prefix_bits(&key_hash(k.as_bytes()), &key_hash(b"x3")) == 0)
            .unwrap();
        if p.siblings.is_empty() {
            p.siblings.push(MAP_EMPTY);
        }
        assert!(matches!(
            p.verify(&root, absent.as_bytes()),
            Err(VerifyError::MapLeafOffPath { .. }) | Err(VerifyError::RootMismatch { .. })
        ));
        let too_long = MapProof {
            siblings: vec![MAP_EMPTY; MAP_DEPTH_MAX + 1],
            leaf: None,
        };
        assert!(matches!(
            too_long.verify(&root, b"x"),
            Err(VerifyError::ProofLength { .. })
        ));
    }

    #[derive(Debug, Clone)]
    enum Op {
        Put(u16),
        Delete(u16),
    }

    fn ops() -> impl Strategy<Value = Vec<Vec<Op>>> {
        let op = prop_oneof![
            3 => (0u16..300).prop_map(Op::Put),
            1 => (0u16..300).prop_map(Op::Delete),
        ];
        proptest::collection::vec(proptest::collection::vec(op, 1..20), 1..40)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Random txs of puts and deletes: after each, the root equals the naive reference,
        /// both stores agree, every old root still proves what it held (the versioned store),
        /// and every key's proof says exactly what the model says, present or absent.
        #[test]
        fn roots_and_proofs_match_a_naive_model(txs in ops()) {
            let mut mem = MemoryMap::new();
            let mut versions = Versions::default();
            let mut vroot: Child<usize> = Child::empty();
            let mut model: BTreeMap<Digest, MapLeaf> = BTreeMap::new();
            let mut history: Vec<(Child<usize>, BTreeMap<Digest, MapLeaf>)> = Vec::new();
            for (i, ops) in txs.iter().enumerate() {
                let tx = i as u64 + 1;
                let mut by_key: BTreeMap<Digest, MapLeaf> = BTreeMap::new();
                for op in ops {
                    let (k, del) = match op { Op::Put(k) => (*k, false), Op::Delete(k) => (*k, true) };
                    let l = leaf(format!("key{k}").as_bytes(), tx, del);
                    by_key.insert(l.key_hash, l);
                }
                let mut leaves: Vec<MapLeaf> = by_key.values().copied().collect();
                model.extend(by_key);
                let root = mem.set(&mut leaves.clone());
                vroot = update(&mut versions, vroot, &{ leaves.sort_by_key(|l| l.key_hash); leaves }).unwrap();
                prop_assert_eq!(root, naive_root(&model));
                prop_assert_eq!(vroot.hash, root);
                history.push((vroot, model.clone()));
            }
            // Live nodes in the in-memory store: a canonical tree of n leaves has n - 1
            // internal nodes at least (more where hashes share prefixes), never garbage.
            prop_assert!(mem.len() >= 2 * model.len() - 1);
            for (root, model) in &history {
                for k in 0u16..300 {
                    let key = format!("key{k}");
                    let found = find(&versions, *root, &key_hash(key.as_bytes())).unwrap();
                    prop_assert_eq!(found.as_ref(), model.get(&key_hash(key.as_bytes())));
                    let p = prove(&versions, *root, &key_hash(key.as_bytes())).unwrap();
                    let shown = p.verify(&root.hash, key.as_bytes()).unwrap();
                    match model.get(&key_hash(key.as_bytes())) {
                        Some(l) => prop_assert_eq!(shown, Latest::Version(*l)),
                        None => prop_assert_eq!(shown, Latest::Absent),
                    }
                }
            }
        }

        /// Every mutation of a proof is refused or proves nothing else: a flipped bit in any
        /// sibling or in the leaf, a dropped or an extra sibling, another key's leaf.
        #[test]
        fn mutated_proofs_are_refused(n in 2usize..200, pick in any::<u16>(), flip in any::<u16>()) {
            let mut m = MemoryMap::new();
            let mut ls: Vec<MapLeaf> = (0..n).map(|i| leaf(format!("k{i}").as_bytes(), 1, false)).collect();
            let root = m.set(&mut ls);
            let key = format!("k{}", pick as usize % n);
            let good = m.prove(key.as_bytes());
            prop_assert!(matches!(good.verify(&root, key.as_bytes()), Ok(Latest::Version(_))));
            let d = good.siblings.len();
            prop_assume!(d > 0);
            let mut p = good.clone();
            let at = flip as usize % d;
            p.siblings[at].0[(flip as usize / d) % 32] ^= 1 << (flip % 8);
            prop_assert!(p.verify(&root, key.as_bytes()).is_err());
            let mut p = good.clone();
            p.siblings.pop();
            prop_assert!(p.verify(&root, key.as_bytes()).is_err());
            let mut p = good.clone();
            p.siblings.push(MAP_EMPTY);
            prop_assert!(p.verify(&root, key.as_bytes()).is_err());
            let mut p = good.clone();
            if let Some(l) = p.leaf.as_mut() { l.tx_id ^= 1; }
            prop_assert!(p.verify(&root, key.as_bytes()).is_err());
            let mut p = good.clone();
            if let Some(l) = p.leaf.as_mut() { l.deleted = !l.deleted; }
            prop_assert!(p.verify(&root, key.as_bytes()).is_err());
            let mut p = good.clone();
            p.leaf = None;
            prop_assert!(p.verify(&root, key.as_bytes()).is_err());
            // Another key's proof, presented for this key: never shows this key's version.
            let other = format!("k{}", (pick as usize + 1) % n);
            let q = m.prove(other.as_bytes());
            prop_assert!(q.verify(&root, key.as_bytes()).is_err());
        }
    }
}
