//! RFC 6962 / RFC 9162 Merkle trees: hashing, proof generation and proof verification.
//!
//! Proof code is split the way the RFC reads: [`inclusion_ranges`] and [`consistency_ranges`]
//! say *which* subtrees a proof holds, a [`NodeSource`] says what a *perfect* (aligned,
//! power-of-two) subtree hashes to, and [`verify_inclusion`] / [`verify_consistency`] check a
//! proof without knowing how it was made. Tests compare all of it against a naive recursive
//! reference for every size up to 300.
//!
//! The history tree is stored as its perfect subtrees in post-order ([`postorder_position`]);
//! [`Frontier`] keeps the right edge (one perfect subtree per set bit of the size) so an append
//! hashes O(1) nodes amortized and the root at the current size needs no I/O.

use super::proof::VerifyError;
use super::{Digest, TAG_LEAF, TAG_NODE};

/// RFC 6962 leaf hash: `H(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Digest {
    if let Ok(d) = <&[u8; 32]>::try_from(data) {
        let mut buf = [0u8; 33];
        buf[0] = TAG_LEAF;
        buf[1..].copy_from_slice(d);
        return blake3::hash(&buf).into();
    }
    let mut h = blake3::Hasher::new();
    h.update(&[TAG_LEAF]);
    h.update(data);
    h.finalize().into()
}

/// The key of the keyed BLAKE3 hash of interior nodes: `H(0x01)`.
fn node_key() -> &'static [u8; 32] {
    static KEY: std::sync::OnceLock<[u8; 32]> = std::sync::OnceLock::new();
    KEY.get_or_init(|| *blake3::hash(&[TAG_NODE]).as_bytes())
}

/// Interior node hash: BLAKE3 keyed with `H(0x01)` over `left || right`. The 64 bytes are one
/// BLAKE3 block, half the work of RFC 6962's `H(0x01 || left || right)`, with the same domain
/// separation from leaves (another mode of BLAKE3 entirely).
pub fn node_hash(left: &Digest, right: &Digest) -> Digest {
    let mut buf = [0u8; 64];
    buf[..32].copy_from_slice(&left.0);
    buf[32..].copy_from_slice(&right.0);
    blake3::keyed_hash(node_key(), &buf).into()
}

/// Root of the empty tree: `H()` (RFC 6962 MTH({})).
pub fn empty_root() -> Digest {
    blake3::hash(&[]).into()
}

/// rs_merkle hasher with RFC 6962 node separation; leaves are passed in already
/// leaf-hashed, and a lone right-edge node is carried up unchanged, which gives exactly the
/// RFC 6962 tree shape.
#[derive(Clone)]
struct Rfc6962;

impl rs_merkle::Hasher for Rfc6962 {
    type Hash = Digest;
    fn hash(data: &[u8]) -> Digest {
        blake3::hash(data).into()
    }
    fn concat_and_hash(left: &Digest, right: Option<&Digest>) -> Digest {
        match right {
            Some(r) => node_hash(left, r),
            None => *left,
        }
    }
}

/// Root of a small in-memory tree over `leaves` (already leaf-hashed). Used for the entries
/// tree of one transaction.
pub fn root_of_leaves(leaves: &[Digest]) -> Digest {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        _ => rs_merkle::MerkleTree::<Rfc6962>::from_leaves(leaves)
            .root()
            .unwrap_or_else(empty_root),
    }
}

/// Audit path (bottom-up) of `leaves[index]` in a small in-memory tree.
pub fn path_of_leaf(leaves: &[Digest], index: usize) -> Vec<Digest> {
    if leaves.len() <= 1 || index >= leaves.len() {
        return Vec::new();
    }
    rs_merkle::MerkleTree::<Rfc6962>::from_leaves(leaves)
        .proof(&[index])
        .proof_hashes()
        .to_vec()
}

/// Largest power of two strictly smaller than `n` (`n >= 2`): RFC 6962's split point.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// Position, in post-order, of the perfect subtree at `level` (0 = leaves) with index `index`
/// within that level. Post-order is the order in which an append-only tree writes its
/// perfect subtrees: each leaf, then every subtree it completes, lowest first.
pub fn postorder_position(level: u32, index: u64) -> u64 {
    let m = (index + 1) << level;
    2 * m - u64::from(m.count_ones()) - 1 - u64::from(m.trailing_zeros() - level)
}

/// Number of perfect subtrees stored for a tree of `size` leaves.
pub fn postorder_count(size: u64) -> u64 {
    2 * size - u64::from(size.count_ones())
}

/// Where the hash of a perfect subtree comes from: a file, memory, or a test vector.
pub trait NodeSource {
    type Error;
    /// The hash of the perfect subtree covering leaves `[index << level, (index + 1) << level)`.
    fn perfect_node(&self, level: u32, index: u64) -> Result<Digest, Self::Error>;
}

/// MTH of leaves `[begin, end)`, where `begin` is a multiple of the largest power of two not
/// above `end - begin` (true of every subtree of an RFC 6962 tree): the fold, right to left,
/// of the perfect subtrees that tile the range.
pub fn subtree_root<S: NodeSource>(src: &S, begin: u64, end: u64) -> Result<Digest, S::Error> {
    if begin == end {
        return Ok(empty_root());
    }
    let mut peaks = Vec::with_capacity(64);
    let mut at = begin;
    while at < end {
        let level = 63 - (end - at).leading_zeros();
        peaks.push(src.perfect_node(level, at >> level)?);
        at += 1 << level;
    }
    let mut acc = peaks.pop().unwrap_or_else(empty_root);
    while let Some(left) = peaks.pop() {
        acc = node_hash(&left, &acc);
    }
    Ok(acc)
}

/// The subtrees `[begin, end)` whose roots form the RFC 6962 audit path of `leaf` in a tree of
/// `size` leaves, bottom-up (RFC 6962 section 2.1.1, PATH).
pub fn inclusion_ranges(leaf: u64, size: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let (mut begin, mut end) = (0u64, size);
    // Walk top-down, then reverse: PATH appends the sibling after the sub-path.
    while end - begin > 1 {
        let k = split_point(end - begin);
        if leaf - begin < k {
            out.push((begin + k, end));
            end = begin + k;
        } else {
            out.push((begin, begin + k));
            begin += k;
        }
    }
    out.reverse();
    out
}

/// The subtrees whose roots form the RFC 6962 consistency proof from `old_size` to `new_size`
/// (section 2.1.2, PROOF/SUBPROOF), in proof order. Requires `0 < old_size < new_size`.
pub fn consistency_ranges(old_size: u64, new_size: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let (mut m, mut begin, mut end) = (old_size, 0u64, new_size);
    let mut whole = true;
    while m != end - begin {
        let n = end - begin;
        let k = split_point(n);
        if m <= k {
            out.push((begin + k, end));
            end = begin + k;
        } else {
            out.push((begin, begin + k));
            m -= k;
            begin += k;
            whole = false;
        }
    }
    if !whole {
        out.push((begin, end));
    }
    out.reverse();
    out
}

/// Audit path of `leaf` in the tree of `size` leaves held by `src`.
pub fn inclusion_path<S: NodeSource>(
    src: &S,
    leaf: u64,
    size: u64,
) -> Result<Vec<Digest>, S::Error> {
    inclusion_ranges(leaf, size)
        .into_iter()
        .map(|(b, e)| subtree_root(src, b, e))
        .collect()
}

/// Consistency proof between sizes `old_size` and `new_size` of the tree held by `src`.
/// Empty when `old_size == 0` or `old_size == new_size`.
pub fn consistency_path<S: NodeSource>(
    src: &S,
    old_size: u64,
    new_size: u64,
) -> Result<Vec<Digest>, S::Error> {
    if old_size == 0 || old_size >= new_size {
        return Ok(Vec::new());
    }
    consistency_ranges(old_size, new_size)
        .into_iter()
        .map(|(b, e)| subtree_root(src, b, e))
        .collect()
}

/// RFC 9162 section 2.1.3.2: verifies that `leaf` (already leaf-hashed) is at `index` in the
/// tree of `size` leaves whose root is `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Digest,
    path: &[Digest],
    root: &Digest,
) -> Result<(), VerifyError> {
    if index >= size {
        return Err(VerifyError::IndexOutOfRange { index, size });
    }
    let expected = inclusion_ranges(index, size).len();
    if path.len() != expected {
        return Err(VerifyError::ProofLength {
            expected,
            actual: path.len(),
        });
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in path {
        if s_n == 0 {
            return Err(VerifyError::ProofLength {
                expected,
                actual: path.len(),
            });
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(VerifyError::ProofLength {
            expected,
            actual: path.len(),
        });
    }
    if r != *root {
        return Err(VerifyError::RootMismatch {
            expected: *root,
            computed: r,
        });
    }
    Ok(())
}

/// RFC 9162 section 2.1.4.2: verifies that the tree of `old_size` leaves with root `old_root`
/// is a prefix of the tree of `new_size` leaves with root `new_root`.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Digest,
    new_root: &Digest,
    path: &[Digest],
) -> Result<(), VerifyError> {
    if old_size > new_size {
        return Err(VerifyError::SizeOrder { old_size, new_size });
    }
    if old_size == new_size || old_size == 0 {
        if !path.is_empty() {
            return Err(VerifyError::ProofLength {
                expected: 0,
                actual: path.len(),
            });
        }
        if old_size == 0 {
            if *old_root != empty_root() {
                return Err(VerifyError::RootMismatch {
                    expected: empty_root(),
                    computed: *old_root,
                });
            }
            return Ok(());
        }
        if old_root != new_root {
            return Err(VerifyError::RootMismatch {
                expected: *new_root,
                computed: *old_root,
            });
        }
        return Ok(());
    }
    let expected = consistency_ranges(old_size, new_size).len();
    if path.len() != expected {
        return Err(VerifyError::ProofLength {
            expected,
            actual: path.len(),
        });
    }
    let mut proof: Vec<Digest> = Vec::with_capacity(path.len() + 1);
    if old_size.is_power_of_two() {
        proof.push(*old_root);
    }
    proof.extend_from_slice(path);
    let (mut f_n, mut s_n) = (old_size - 1, new_size - 1);
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let mut fr = proof[0];
    let mut sr = proof[0];
    for c in &proof[1..] {
        if s_n == 0 {
            return Err(VerifyError::ProofLength {
                expected,
                actual: path.len(),
            });
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f_n & 1 == 0 && f_n != 0 {
                f_n >>= 1;
                s_n >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(VerifyError::ProofLength {
            expected,
            actual: path.len(),
        });
    }
    if fr != *old_root {
        return Err(VerifyError::RootMismatch {
            expected: *old_root,
            computed: fr,
        });
    }
    if sr != *new_root {
        return Err(VerifyError::RootMismatch {
            expected: *new_root,
            computed: sr,
        });
    }
    Ok(())
}

/// The right edge of an append-only tree: the roots of its perfect subtrees, largest first,
/// one per set bit of `size`. Enough to append and to compute the root, without I/O.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    peaks: Vec<Digest>,
}

impl Frontier {
    pub fn new() -> Frontier {
        Frontier::default()
    }

    /// Rebuilds the frontier of a tree of `size` leaves from its stored perfect subtrees.
    pub fn load<S: NodeSource>(src: &S, size: u64) -> Result<Frontier, S::Error> {
        let mut peaks = Vec::new();
        let mut at = 0u64;
        while at < size {
            let level = 63 - (size - at).leading_zeros();
            peaks.push(src.perfect_node(level, at >> level)?);
            at += 1 << level;
        }
        Ok(Frontier { size, peaks })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Root over all leaves appended so far (RFC 6962 MTH).
    pub fn root(&self) -> Digest {
        let mut it = self.peaks.iter().rev();
        let Some(last) = it.next() else {
            return empty_root();
        };
        it.fold(*last, |acc, left| node_hash(left, &acc))
    }

    /// Appends a leaf (already leaf-hashed) and pushes onto `out` the perfect subtrees that
    /// now exist and did not before, in post-order: the leaf, then each parent it completes.
    pub fn append(&mut self, leaf: Digest, out: &mut Vec<Digest>) {
        out.push(leaf);
        let mut node = leaf;
        let completed = (self.size + 1).trailing_zeros();
        for _ in 0..completed {
            // The sibling on the left is the smallest peak; it merges into its parent.
            let left = self.peaks.pop().unwrap_or_default();
            node = node_hash(&left, &node);
            out.push(node);
        }
        self.peaks.push(node);
        self.size += 1;
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
pub(crate) mod reference {
    //! Naive recursive RFC 6962, straight from the text, used only to check the real code.
    use super::*;

    pub fn mth(leaves: &[Digest]) -> Digest {
        match leaves.len() {
            0 => empty_root(),
            1 => leaves[0],
            n => {
                let k = split_point(n as u64) as usize;
                node_hash(&mth(&leaves[..k]), &mth(&leaves[k..]))
            }
        }
    }

    pub fn path(m: usize, leaves: &[Digest]) -> Vec<Digest> {
        let n = leaves.len();
        if n <= 1 {
            return Vec::new();
        }
        let k = split_point(n as u64) as usize;
        if m < k {
            let mut p = path(m, &leaves[..k]);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = path(m - k, &leaves[k..]);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    fn subproof(m: usize, leaves: &[Digest], whole: bool) -> Vec<Digest> {
        let n = leaves.len();
        if m == n {
            return if whole { Vec::new() } else { vec![mth(leaves)] };
        }
        let k = split_point(n as u64) as usize;
        if m <= k {
            let mut p = subproof(m, &leaves[..k], whole);
            p.push(mth(&leaves[k..]));
            p
        } else {
            let mut p = subproof(m - k, &leaves[k..], false);
            p.push(mth(&leaves[..k]));
            p
        }
    }

    pub fn proof(m: usize, leaves: &[Digest]) -> Vec<Digest> {
        subproof(m, leaves, true)
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::reference::*;
    use super::*;

    /// A whole tree held in memory as its perfect subtrees, in post-order, exactly as the
    /// history file stores them.
    struct MemTree(Vec<Digest>);

    impl NodeSource for MemTree {
        type Error = ();
        fn perfect_node(&self, level: u32, index: u64) -> Result<Digest, ()> {
            self.0
                .get(postorder_position(level, index) as usize)
                .copied()
                .ok_or(())
        }
    }

    fn leaves(n: usize) -> Vec<Digest> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_le_bytes()))
            .collect()
    }

    fn build(leaves: &[Digest]) -> (MemTree, Frontier) {
        let mut f = Frontier::new();
        let mut nodes = Vec::new();
        for l in leaves {
            f.append(*l, &mut nodes);
        }
        (MemTree(nodes), f)
    }

    #[test]
    fn postorder_positions_match_append_order() {
        let ls = leaves(300);
        let (tree, _) = build(&ls);
        assert_eq!(tree.0.len() as u64, postorder_count(300));
        for (i, l) in ls.iter().enumerate() {
            assert_eq!(tree.0[postorder_position(0, i as u64) as usize], *l);
        }
        // Every stored level-1 node is the hash of its two leaves.
        for j in 0..150u64 {
            let n = tree.0[postorder_position(1, j) as usize];
            assert_eq!(n, node_hash(&ls[2 * j as usize], &ls[2 * j as usize + 1]));
        }
    }

    #[test]
    fn roots_match_reference_for_every_size_up_to_300() {
        let ls = leaves(300);
        let mut f = Frontier::new();
        let mut nodes = Vec::new();
        assert_eq!(f.root(), mth(&[]));
        for n in 1..=300 {
            f.append(ls[n - 1], &mut nodes);
            let expected = mth(&ls[..n]);
            assert_eq!(f.root(), expected, "frontier root at size {n}");
            assert_eq!(
                root_of_leaves(&ls[..n]),
                expected,
                "rs_merkle root at size {n}"
            );
            let tree = MemTree(nodes.clone());
            assert_eq!(subtree_root(&tree, 0, n as u64), Ok(expected));
            assert_eq!(Frontier::load(&tree, n as u64), Ok(f.clone()));
        }
    }

    #[test]
    fn inclusion_proofs_match_reference_and_verify() {
        let ls = leaves(260);
        let (tree, _) = build(&ls);
        for n in 1..=260usize {
            let root = mth(&ls[..n]);
            for m in 0..n {
                let expected = path(m, &ls[..n]);
                let got = inclusion_path(&tree, m as u64, n as u64).unwrap();
                assert_eq!(got, expected, "path m={m} n={n}");
                assert_eq!(
                    path_of_leaf(&ls[..n], m),
                    expected,
                    "rs_merkle path m={m} n={n}"
                );
                verify_inclusion(m as u64, n as u64, &ls[m], &got, &root).unwrap();
                // The same proof must not verify another leaf.
                let other = leaf_hash(b"other");
                assert!(verify_inclusion(m as u64, n as u64, &other, &got, &root).is_err());
            }
        }
    }

    #[test]
    fn consistency_proofs_match_reference_and_verify() {
        let ls = leaves(260);
        let (tree, _) = build(&ls);
        for n in 1..=260usize {
            let new_root = mth(&ls[..n]);
            for m in 1..=n {
                let expected = proof(m, &ls[..n]);
                let got = consistency_path(&tree, m as u64, n as u64).unwrap();
                assert_eq!(got, expected, "proof m={m} n={n}");
                let old_root = mth(&ls[..m]);
                verify_consistency(m as u64, n as u64, &old_root, &new_root, &got).unwrap();
                if m < n {
                    let wrong = leaf_hash(b"wrong");
                    assert!(
                        verify_consistency(m as u64, n as u64, &wrong, &new_root, &got).is_err()
                    );
                    assert!(
                        verify_consistency(m as u64, n as u64, &old_root, &wrong, &got).is_err()
                    );
                }
            }
        }
    }

    #[test]
    fn tampered_proofs_are_rejected_not_panicking() {
        let ls = leaves(100);
        let (tree, _) = build(&ls);
        let root = mth(&ls);
        let good = inclusion_path(&tree, 37, 100).unwrap();
        // Truncated, extended, reordered, flipped.
        assert!(matches!(
            verify_inclusion(37, 100, &ls[37], &good[..good.len() - 1], &root),
            Err(VerifyError::ProofLength { .. })
        ));
        let mut longer = good.clone();
        longer.push(root);
        assert!(matches!(
            verify_inclusion(37, 100, &ls[37], &longer, &root),
            Err(VerifyError::ProofLength { .. })
        ));
        let mut flipped = good.clone();
        flipped[2].0[5] ^= 1;
        assert!(matches!(
            verify_inclusion(37, 100, &ls[37], &flipped, &root),
            Err(VerifyError::RootMismatch { .. })
        ));
        // Right proof, wrong index. (A wrong size can still verify when the shape is the
        // same: RFC 6962 binds the size through the root, which the caller must trust.)
        assert!(verify_inclusion(38, 100, &ls[37], &good, &root).is_err());
        assert!(matches!(
            verify_inclusion(100, 100, &ls[37], &good, &root),
            Err(VerifyError::IndexOutOfRange { .. })
        ));
        let cons = consistency_path(&tree, 10, 100).unwrap();
        let old = mth(&ls[..10]);
        assert!(verify_consistency(10, 100, &old, &root, &cons[1..]).is_err());
        assert!(verify_consistency(11, 100, &old, &root, &cons).is_err());
        assert!(matches!(
            verify_consistency(100, 10, &root, &old, &cons),
            Err(VerifyError::SizeOrder { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn random_large_sizes_match_reference(n in 300usize..3000, seed in 0u64..u64::MAX) {
            let ls = leaves(n);
            let (tree, f) = build(&ls);
            let root = mth(&ls);
            proptest::prop_assert_eq!(f.root(), root);
            let m = (seed % n as u64) as usize;
            let got = inclusion_path(&tree, m as u64, n as u64).unwrap();
            proptest::prop_assert_eq!(&got, &path(m, &ls));
            proptest::prop_assert!(verify_inclusion(m as u64, n as u64, &ls[m], &got, &root).is_ok());
            let old = m + 1;
            let cons = consistency_path(&tree, old as u64, n as u64).unwrap();
            proptest::prop_assert_eq!(&cons, &proof(old, &ls));
            proptest::prop_assert!(verify_consistency(old as u64, n as u64, &mth(&ls[..old]), &root, &cons).is_ok());
        }
    }
}
