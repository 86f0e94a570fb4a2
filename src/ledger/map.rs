//! The key map as stored (docs/format.md, "The key map"): every node of every version in
//! chunk files under `map/`, and one root record per tx in `map.roots`. Nodes are never
//! rewritten: a tx's update writes new nodes along the changed paths and shares the rest, so
//! the map as of any tx can be proven from its root record.
//!
//! Both are derived from the log like `history.nodes`: written unsynced after the group's
//! segment sync, synced at checkpoints, cut back to the checkpoint and rebuilt by replay
//! after a crash.

use super::{Damage, LedgerError, Result};
use crate::fs;
use crate::integrity::map::{self, Child, Latest, MapLeaf, MapNodes, MapNodesMut, MapProof, Node};
use crate::integrity::{Digest, TxId};
use crate::storage::chunks::{ChunkRead, ChunkStore, ChunkWriter};
use crate::storage::records::{RecordReader, RecordWriter};
use crate::storage::{Corruption, StorageError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes of a node record's payload.
pub(crate) const NODE_BYTES: usize = 81;
/// Bytes of a root record's payload: the root's hash and its node.
pub(crate) const ROOT_BYTES: usize = 40;
/// Nodes per chunk file (about 22 MB of records).
pub(crate) const NODES_PER_CHUNK: u64 = 1 << 18;
/// Where the nodes are, in a database directory.
pub(crate) const NODES_DIR: &str = "map";
pub(crate) const ROOTS_FILE: &str = "map.roots";

/// A node's index in the node chunks.
pub(crate) type NodeRef = u64;
/// The reference of an empty subtree.
const NO_NODE: u64 = u64::MAX;

const KIND_INTERNAL: u8 = 1;
const KIND_LEAF: u8 = 2;

fn put_child(b: &mut [u8], c: &Child<NodeRef>) {
    b[..32].copy_from_slice(&c.hash.0);
    b[32..40].copy_from_slice(&c.node.unwrap_or(NO_NODE).to_le_bytes());
}

fn get_child(b: &[u8]) -> Child<NodeRef> {
    let mut r = [0u8; 8];
    r.copy_from_slice(&b[32..40]);
    let r = u64::from_le_bytes(r);
    Child {
        hash: Digest::from_slice_lossy(&b[..32]),
        node: (r != NO_NODE).then_some(r),
    }
}

/// `u8 kind=1 | left: [32] hash, u64 node | right: [32] hash, u64 node` or
/// `u8 kind=2 | [32] key_hash | u64 tx_id | u8 flags | [32] entry_digest | [7] zero`.
pub(crate) fn encode_node(n: &Node<NodeRef>) -> [u8; NODE_BYTES] {
    let mut b = [0u8; NODE_BYTES];
    match n {
        Node::Internal { left, right } => {
            b[0] = KIND_INTERNAL;
            put_child(&mut b[1..41], left);
            put_child(&mut b[41..81], right);
        }
        Node::Leaf(l) => {
            b[0] = KIND_LEAF;
            b[1..33].copy_from_slice(&l.key_hash.0);
            b[33..41].copy_from_slice(&l.tx_id.to_le_bytes());
            b[41] = u8::from(l.deleted);
            b[42..74].copy_from_slice(&l.entry_digest.0);
        }
    }
    b
}

pub(crate) fn decode_node(b: &[u8; NODE_BYTES]) -> Option<Node<NodeRef>> {
    match b[0] {
        KIND_INTERNAL => Some(Node::Internal {
            left: get_child(&b[1..41]),
            right: get_child(&b[41..81]),
        }),
        KIND_LEAF if b[41] <= 1 && b[74..].iter().all(|&x| x == 0) => {
            let mut tx = [0u8; 8];
            tx.copy_from_slice(&b[33..41]);
            Some(Node::Leaf(MapLeaf {
                key_hash: Digest::from_slice_lossy(&b[1..33]),
                tx_id: u64::from_le_bytes(tx),
                deleted: b[41] == 1,
                entry_digest: Digest::from_slice_lossy(&b[42..74]),
            }))
        }
        _ => None,
    }
}

fn encode_root(c: &Child<NodeRef>) -> [u8; ROOT_BYTES] {
    let mut b = [0u8; ROOT_BYTES];
    put_child(&mut b, c);
    b
}

/// The nodes readers see: every published one.
struct Published<'a> {
    read: ChunkRead<'a, NODE_BYTES>,
    dir: &'a Path,
}

fn node_at(read: &ChunkRead<'_, NODE_BYTES>, dir: &Path, at: NodeRef) -> Result<Node<NodeRef>> {
    let b = read.get(at)?;
    decode_node(&b).ok_or_else(|| {
        StorageError::corrupt(
            dir.join(crate::storage::chunks::file_name(at / NODES_PER_CHUNK + 1)),
            (at % NODES_PER_CHUNK) * ChunkStore::<NODE_BYTES>::RECORD_BYTES,
            Corruption::Decode("unknown map node kind"),
        )
        .into()
    })
}

impl MapNodes for Published<'_> {
    type Ref = NodeRef;
    type Error = LedgerError;
    fn node(&self, at: NodeRef) -> Result<Node<NodeRef>> {
        node_at(&self.read, self.dir, at)
    }
}

/// How the writer reaches a node of the current tree: in its memory (every node it made or
/// moved since the database was opened: its slot, and where its record is), or only on disk
/// (read when first needed). A handle names its record either way, so making a parent never
/// reads the sibling's slot (a cache miss per level).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Handle {
    Mem { slot: u32, disk: NodeRef },
    Disk(NodeRef),
}

impl Handle {
    fn disk(self) -> NodeRef {
        match self {
            Handle::Mem { disk, .. } | Handle::Disk(disk) => disk,
        }
    }
}

/// The writer's copy of the current tree. Path copying replaces every node on a changed path,
/// so each node the writer visits is read from disk at most once: its replacement is made
/// here. Nodes of older trees are dropped from memory (they stay on disk, for proofs).
#[derive(Default)]
struct HeldTree {
    nodes: Vec<Node<Handle>>,
    /// Slots of nodes dropped by txs already accepted.
    free: Vec<u32>,
    /// Slots filled and slots dropped by the tx being applied: freed, or given back, once it
    /// is accepted or rolled back.
    filled: Vec<u32>,
    dropped: Vec<u32>,
}

/// The nodes the writer sees while applying a tx.
struct Writing<'a> {
    read: ChunkRead<'a, NODE_BYTES>,
    writer: &'a mut ChunkWriter<NODE_BYTES>,
    held: &'a mut HeldTree,
    dir: &'a Path,
}

impl MapNodes for Writing<'_> {
    type Ref = Handle;
    type Error = LedgerError;
    fn node(&self, at: Handle) -> Result<Node<Handle>> {
        let r = match at {
            Handle::Mem { slot, .. } => return Ok(self.held.nodes[slot as usize]),
            Handle::Disk(r) => r,
        };
        let n = match self.writer.pending(r) {
            // Written by `push` from a node: it decodes.
            Some(b) => decode_node(&b).ok_or_else(|| {
                LedgerError::from(StorageError::corrupt(
                    self.dir,
                    0,
                    Corruption::Decode("pending map node"),
                ))
            })?,
            None => node_at(&self.read, self.dir, r)?,
        };
        let on_disk = |c: Child<NodeRef>| Child {
            hash: c.hash,
            node: c.node.map(Handle::Disk),
        };
        Ok(match n {
            Node::Leaf(l) => Node::Leaf(l),
            Node::Internal { left, right } => Node::Internal {
                left: on_disk(left),
                right: on_disk(right),
            },
        })
    }
}

impl MapNodesMut for Writing<'_> {
    fn push(&mut self, node: Node<Handle>) -> Result<Handle> {
        let record = match node {
            Node::Leaf(l) => Node::Leaf(l),
            Node::Internal { left, right } => Node::Internal {
                left: Child {
                    hash: left.hash,
                    node: left.node.map(Handle::disk),
                },
                right: Child {
                    hash: right.hash,
                    node: right.node.map(Handle::disk),
                },
            },
        };
        let disk = self.writer.push(&encode_node(&record));
        let slot = match self.held.free.pop() {
            Some(i) => {
                self.held.nodes[i as usize] = node;
                i
            }
            None => {
                self.held.nodes.push(node);
                // The current tree of a database has fewer than 2^32 nodes.
                u32::try_from(self.held.nodes.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.held.filled.push(slot);
        Ok(Handle::Mem { slot, disk })
    }

    fn retire(&mut self, at: Handle) {
        if let Handle::Mem { slot, .. } = at {
            self.held.dropped.push(slot);
        }
    }
}

/// The map for readers: nodes and roots, from any thread.
pub(crate) struct MapReader {
    nodes: Arc<ChunkStore<NODE_BYTES>>,
    roots: RecordReader<ROOT_BYTES>,
}

impl MapReader {
    /// The root of the map as of tx `tx` (the empty map for tx 0), as stored.
    pub(crate) fn root(&self, tx: TxId) -> Result<Child<NodeRef>> {
        if tx == 0 {
            return Ok(Child::empty());
        }
        let b = self.roots.read(tx - 1)?;
        Ok(get_child(&b))
    }

    /// The latest version of `key` as of tx `tx`, if it has one (no proof, no hashing).
    pub(crate) fn latest(&self, key: &[u8], tx: TxId) -> Result<Option<MapLeaf>> {
        let root = self.root(tx)?;
        let nodes = Published {
            read: self.nodes.read(),
            dir: self.nodes.dir(),
        };
        map::find(&nodes, root, &map::key_hash(key))
    }

    /// The proof for `key` in the map as of tx `tx`, and what it shows.
    pub(crate) fn prove(&self, key: &[u8], tx: TxId) -> Result<(Latest, MapProof, Digest)> {
        let root = self.root(tx)?;
        let nodes = Published {
            read: self.nodes.read(),
            dir: self.nodes.dir(),
        };
        let proof = map::prove(&nodes, root, &map::key_hash(key))?;
        let latest = proof
            .verify(&root.hash, key)
            .map_err(|_| self.damaged(Damage::MapNode))?;
        Ok((latest, proof, root.hash))
    }

    pub(crate) fn damaged(&self, reason: Damage) -> LedgerError {
        LedgerError::Damaged {
            path: self.nodes.dir().to_path_buf(),
            offset: 0,
            reason,
        }
    }
}

/// Checks the key map stored as of tx `tx` (a checkpoint's, covering `nodes` nodes) in
/// database `dir`: every node of that tree hashes to what its parent (or the root record)
/// says. A node edited on disk, checksum and all, changes its hash and is named.
pub(crate) fn check_stored(dir: &Path, nodes: u64, tx: TxId, lock: &fs::DirLock) -> Result<()> {
    let nodes_dir = dir.join(NODES_DIR);
    let store = ChunkStore::<NODE_BYTES>::open_read(&nodes_dir, NODES_PER_CHUNK, nodes, lock)?;
    let roots = RecordReader::<ROOT_BYTES>::open(&dir.join(ROOTS_FILE))?;
    let root = if tx == 0 {
        Child::empty()
    } else {
        get_child(&roots.read(tx - 1)?)
    };
    let read = Published {
        read: store.read(),
        dir: &nodes_dir,
    };
    let mut stack = vec![root];
    while let Some(c) = stack.pop() {
        let Some(at) = c.node else {
            if c.hash != map::MAP_EMPTY {
                return Err(damaged_node(&nodes_dir, 0));
            }
            continue;
        };
        let hash = match read.node(at)? {
            Node::Leaf(l) => l.hash(),
            Node::Internal { left, right } => {
                stack.push(left);
                stack.push(right);
                map::map_node_hash(&left.hash, &right.hash)
            }
        };
        if hash != c.hash {
            return Err(damaged_node(&nodes_dir, at));
        }
    }
    Ok(())
}

fn damaged_node(nodes_dir: &Path, at: NodeRef) -> LedgerError {
    LedgerError::Damaged {
        path: nodes_dir.join(crate::storage::chunks::file_name(at / NODES_PER_CHUNK + 1)),
        offset: (at % NODES_PER_CHUNK) * ChunkStore::<NODE_BYTES>::RECORD_BYTES,
        reason: Damage::MapNode,
    }
}

/// The map for its one writer (the ledger's writer thread, or recovery before it).
pub(crate) struct MapWriter {
    dir: PathBuf,
    nodes: ChunkWriter<NODE_BYTES>,
    roots: RecordWriter<ROOT_BYTES>,
    held: HeldTree,
    root: Child<Handle>,
}

/// Where the writer was before a tx, to go back there if the tx is refused.
#[derive(Clone, Copy)]
pub(crate) struct Mark {
    nodes: u64,
}

/// A tx's new root, to accept or roll back.
#[derive(Clone, Copy)]
pub(crate) struct NewRoot(Child<Handle>);

impl NewRoot {
    pub(crate) fn hash(&self) -> Digest {
        self.0.hash
    }
}

impl MapWriter {
    /// Opens the map of database `dir` keeping `nodes` nodes and the roots of txs
    /// `1..=tx` (a checkpoint's), and the reader that goes with it.
    pub(crate) fn open(
        dir: &Path,
        nodes: u64,
        tx: TxId,
        lock: &fs::DirLock,
    ) -> Result<(MapWriter, MapReader)> {
        let nodes_dir = dir.join(NODES_DIR);
        let (store, writer) = ChunkStore::open(&nodes_dir, NODES_PER_CHUNK, nodes, lock)?;
        let roots = RecordWriter::<ROOT_BYTES>::open(&dir.join(ROOTS_FILE), tx)?;
        let reader = MapReader {
            nodes: store,
            roots: roots.reader(),
        };
        let root = reader.root(tx)?;
        if root.node.is_some_and(|r| r >= nodes) {
            return Err(reader.damaged(Damage::MapNode));
        }
        Ok((
            MapWriter {
                dir: nodes_dir,
                nodes: writer,
                roots,
                held: HeldTree::default(),
                root: Child {
                    hash: root.hash,
                    node: root.node.map(Handle::Disk),
                },
            },
            reader,
        ))
    }

    /// The root after the last tx applied.
    pub(crate) fn root(&self) -> Digest {
        self.root.hash
    }

    pub(crate) fn mark(&self) -> Mark {
        Mark {
            nodes: self.nodes.len(),
        }
    }

    /// Forgets what was applied since `mark` (a tx that was then refused).
    pub(crate) fn rollback(&mut self, mark: Mark) {
        self.nodes.rollback(mark.nodes);
        let held = &mut self.held;
        held.free.append(&mut held.filled);
        held.dropped.clear();
    }

    /// The latest version of the key with hash `key_hash` after every tx applied so far
    /// (pending ones included): what a precondition is checked against.
    pub(crate) fn latest(&mut self, key_hash: &Digest) -> Result<Option<MapLeaf>> {
        let store = self.nodes.store().clone();
        let nodes = Writing {
            read: store.read(),
            writer: &mut self.nodes,
            held: &mut self.held,
            dir: &self.dir,
        };
        map::find(&nodes, self.root, key_hash)
    }

    /// The map after one more tx's versions (its `leaves`, sorted by key hash): its new
    /// nodes are pending, and the root is the tx's once [`MapWriter::accept`]ed (or dropped
    /// with [`MapWriter::rollback`] to the mark taken before).
    pub(crate) fn update(&mut self, leaves: &[MapLeaf]) -> Result<NewRoot> {
        let store = self.nodes.store().clone();
        let mut nodes = Writing {
            read: store.read(),
            writer: &mut self.nodes,
            held: &mut self.held,
            dir: &self.dir,
        };
        map::update(&mut nodes, self.root, leaves).map(NewRoot)
    }

    /// Records `root` (from [`MapWriter::update`]) as the next tx's.
    pub(crate) fn accept(&mut self, root: NewRoot) {
        let root = root.0;
        let held = &mut self.held;
        held.free.append(&mut held.dropped);
        held.filled.clear();
        let record = Child {
            hash: root.hash,
            node: root.node.map(Handle::disk),
        };
        self.roots.push(&encode_root(&record));
        self.root = root;
    }

    /// Makes the pending nodes and roots readable and writes them (unsynced; the nodes from
    /// the chunk store's flusher thread).
    pub(crate) fn publish(&mut self, lock: &fs::DirLock) -> Result<(), StorageError> {
        self.nodes.publish(lock)?;
        self.roots.flush()
    }

    /// Nodes stored, pending ones included.
    pub(crate) fn node_count(&self) -> u64 {
        self.nodes.len()
    }

    /// Handles that sync everything written since the last call.
    pub(crate) fn sync_handles(&mut self) -> Result<Vec<fs::SyncHandle>, StorageError> {
        let mut out = self.nodes.sync_handles()?;
        out.push(self.roots.sync_handle());
        Ok(out)
    }

    /// Cuts off roots after those applied (recovery, once the log checked out).
    pub(crate) fn cut(&mut self) -> Result<()> {
        self.roots.cut()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_round_trip_and_unknown_kinds_are_refused() {
        let leaf = MapLeaf {
            key_hash: Digest([1; 32]),
            tx_id: 77,
            deleted: true,
            entry_digest: Digest([2; 32]),
        };
        let n = Node::Leaf(leaf);
        assert_eq!(decode_node(&encode_node(&n)), Some(n));
        let i = Node::Internal {
            left: Child {
                hash: Digest([3; 32]),
                node: Some(5),
            },
            right: Child::empty(),
        };
        assert_eq!(decode_node(&encode_node(&i)), Some(i));
        let mut b = encode_node(&n);
        b[0] = 3;
        assert_eq!(decode_node(&b), None);
        let mut b = encode_node(&n);
        b[41] = 2;
        assert_eq!(decode_node(&b), None);
    }
}
