//! Segment files: a 32-byte header, then frames back to back (docs/format.md, "Segments").
//!
//! A segment is *active* while frames are appended to it and *sealed* once the writer has
//! moved on: sealed segments are fsynced and read through a memory map, the active one
//! through `pread`. Only the active segment can have a torn tail, and only it is followed by
//! free space: zeros written ahead of the frames, so that a write and its sync land in space
//! the file already has and change no file metadata.

use super::frame::{self, FrameError};
use super::mmap::SealedMap;
use super::{Corruption, Result, StorageError};
use crate::fs;
use std::borrow::Cow;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const SEGMENT_HEADER_BYTES: u64 = 32;
/// [`SEGMENT_HEADER_BYTES`] as a length in memory.
const HEADER_LEN: usize = 32;
pub const MAGIC: &[u8; 8] = b"chainlog";
pub const KIND_SEGMENT: u8 = 1;
/// The format version of the records a segment holds (docs/format.md): 2 since the key map.
pub const SEGMENT_FORMAT_VERSION: u8 = 2;

/// The active segment's free space is added this many bytes at a time: whenever frames reach
/// the end of the space written so far, zeros are written up to the next multiple of this
/// size. A sync of a write into that space skips the file-system journal (about 30% cheaper
/// here: docs/benchmarks.md); a segment is cut back to its frames when sealed or closed.
pub const FREE_SPACE_STEP: u64 = 256 << 10;

/// Number of a segment; segment 1 is the first, and each next one is one more.
pub type SegmentId = u32;

/// What a segment header says: its number, and `base`, an opaque number from the layer
/// above (the ledger stores the id of the first transaction it holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub id: SegmentId,
    pub base: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..8].copy_from_slice(MAGIC);
        b[8] = KIND_SEGMENT;
        b[9] = SEGMENT_FORMAT_VERSION;
        b[12..16].copy_from_slice(&self.id.to_le_bytes());
        b[16..24].copy_from_slice(&self.base.to_le_bytes());
        let crc = crc32fast::hash(&b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<SegmentHeader, Corruption> {
        if b.len() < HEADER_LEN {
            return Err(Corruption::ShortFile);
        }
        let crc = u32::from_le_bytes([b[28], b[29], b[30], b[31]]);
        if &b[..8] != MAGIC || b[8] != KIND_SEGMENT || crc32fast::hash(&b[..28]) != crc {
            return Err(Corruption::FileHeader);
        }
        if b[9] != SEGMENT_FORMAT_VERSION {
            return Err(Corruption::Version(b[9]));
        }
        let id = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
        let mut base = [0u8; 8];
        base.copy_from_slice(&b[16..24]);
        Ok(SegmentHeader {
            id,
            base: u64::from_le_bytes(base),
        })
    }
}

pub fn file_name(id: SegmentId) -> String {
    format!("{id:010}.seg")
}

/// Parses a segment number back out of a path made by [`file_name`].
pub fn id_of(path: &Path) -> Option<SegmentId> {
    let stem = path.file_stem()?.to_str()?;
    if stem.len() != 10 {
        return None;
    }
    stem.parse().ok()
}

/// The segment frames are appended to.
#[derive(Debug)]
pub struct ActiveSegment {
    path: PathBuf,
    file: Arc<File>,
    header: SegmentHeader,
    /// Where the frames end: the next append's offset.
    len: u64,
    /// The file's length: `len` plus the free space after the frames.
    file_len: u64,
}

impl ActiveSegment {
    /// Creates a new, empty segment and makes its existence durable.
    pub fn create(dir: &Path, header: SegmentHeader) -> Result<ActiveSegment> {
        let path = dir.join(file_name(header.id));
        let file = fs::create_new(&path, &header.encode())?;
        Ok(ActiveSegment {
            path,
            file: Arc::new(file),
            header,
            len: SEGMENT_HEADER_BYTES,
            file_len: SEGMENT_HEADER_BYTES,
        })
    }

    /// Opens an existing segment to append to it, checking its header. Returns it with its
    /// bytes from offset `from` to the end, for recovery to scan: only the tail is read, so
    /// the cost does not grow with the segment. Appends go at the end of the file until
    /// [`ActiveSegment::resume_at`] says where the frames end.
    pub fn open(path: &Path, from: u64) -> Result<(ActiveSegment, Vec<u8>)> {
        let file = fs::open_rw(path, false)?;
        let len = file
            .metadata()
            .map_err(|e| StorageError::io(path, e))?
            .len();
        let mut head = [0u8; HEADER_LEN];
        if len < SEGMENT_HEADER_BYTES.max(from) {
            return Err(StorageError::corrupt(path, len, Corruption::ShortFile));
        }
        file.read_exact_at(&mut head, 0)
            .map_err(|e| StorageError::io(path, e))?;
        let header = SegmentHeader::decode(&head).map_err(|r| StorageError::corrupt(path, 0, r))?;
        let mut tail = vec![0u8; super::usize_of(len - from)];
        file.read_exact_at(&mut tail, from)
            .map_err(|e| StorageError::io(path, e))?;
        let seg = ActiveSegment {
            path: path.to_path_buf(),
            file: Arc::new(file),
            header,
            len,
            file_len: len,
        };
        Ok((seg, tail))
    }

    /// Takes the bytes from `offset` on, zeros that a scan found after the last frame, as free
    /// space: the next append goes at `offset`.
    pub fn resume_at(&mut self, offset: u64) {
        debug_assert!(offset >= SEGMENT_HEADER_BYTES && offset <= self.file_len);
        self.len = offset;
    }

    pub fn header(&self) -> SegmentHeader {
        self.header
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes in the file, header included: the offset the next append lands at.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == SEGMENT_HEADER_BYTES
    }

    /// Appends `bytes` (whole frames) after the last frame, adding free space after them when
    /// they reach the end of the file. Not durable until [`ActiveSegment::sync`].
    pub fn append(&mut self, bytes: &[u8]) -> Result<u64> {
        let at = self.len;
        let end = at + bytes.len() as u64;
        self.file
            .write_all_at(bytes, at)
            .map_err(|e| StorageError::io(&self.path, e))?;
        if end >= self.file_len {
            let file_len = (end / FREE_SPACE_STEP + 1) * FREE_SPACE_STEP;
            let zeros = vec![0u8; super::usize_of(file_len - end)];
            self.file
                .write_all_at(&zeros, end)
                .map_err(|e| StorageError::io(&self.path, e))?;
            self.file_len = file_len;
        }
        self.len = end;
        Ok(at)
    }

    /// Cuts the free space off, durably, so that the file ends with its last frame.
    pub fn trim(&mut self) -> Result<()> {
        if self.file_len > self.len {
            fs::truncate(&self.file, &self.path, self.len)?;
            self.file_len = self.len;
        }
        Ok(())
    }

    pub fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| StorageError::io(&self.path, e))
    }

    /// Cuts the file back to `len` bytes, durably (recovery of a torn tail).
    pub fn truncate(&mut self, len: u64) -> Result<()> {
        fs::truncate(&self.file, &self.path, len)?;
        self.len = len;
        self.file_len = len;
        Ok(())
    }

    pub fn sync_handle(&self) -> fs::SyncHandle {
        fs::SyncHandle::new(&self.path, self.file.clone())
    }

    pub fn reader(&self) -> SegmentReader {
        SegmentReader {
            path: self.path.clone(),
            source: Source::Active(self.file.clone()),
        }
    }

    /// Cuts off the free space, syncs the segment and returns its sealed, memory-mapped reader.
    /// `lock` holds the database directory (the mapping's safety contract, `storage::mmap`).
    pub fn seal(mut self, lock: &fs::DirLock) -> Result<SegmentReader> {
        self.trim()?;
        self.sync()?;
        let map = SealedMap::sealed(&self.file, &self.path, lock)?;
        Ok(SegmentReader {
            path: self.path,
            source: Source::Sealed(Arc::new(map)),
        })
    }
}

#[derive(Clone)]
enum Source {
    Active(Arc<File>),
    Sealed(Arc<SealedMap>),
}

/// Reads frames from a segment, active or sealed. Cheap to clone.
#[derive(Clone)]
pub struct SegmentReader {
    path: PathBuf,
    source: Source,
}

impl SegmentReader {
    /// Opens a sealed segment read-only and checks its header. `lock` holds the database
    /// directory (the mapping's safety contract, `storage::mmap`).
    pub fn open_sealed(path: &Path, lock: &fs::DirLock) -> Result<(SegmentReader, SegmentHeader)> {
        let file = fs::open_ro(path)?;
        let map = SealedMap::sealed(&file, path, lock)?;
        let header =
            SegmentHeader::decode(map.bytes()).map_err(|r| StorageError::corrupt(path, 0, r))?;
        Ok((
            SegmentReader {
                path: path.to_path_buf(),
                source: Source::Sealed(Arc::new(map)),
            },
            header,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `len` bytes at `offset`; a range past the end is corruption of whoever pointed here.
    pub fn read(&self, offset: u64, len: usize) -> Result<Cow<'_, [u8]>> {
        match &self.source {
            Source::Sealed(map) => {
                let b = map.bytes();
                let end = offset
                    .checked_add(len as u64)
                    .filter(|&e| e <= b.len() as u64);
                match end {
                    Some(end) => Ok(Cow::Borrowed(
                        &b[super::usize_of(offset)..super::usize_of(end)],
                    )),
                    None => Err(StorageError::corrupt(
                        &self.path,
                        offset,
                        Corruption::ShortFile,
                    )),
                }
            }
            Source::Active(file) => {
                let mut buf = vec![0u8; len];
                file.read_exact_at(&mut buf, offset).map_err(|e| {
                    if e.kind() == std::io::ErrorKind::UnexpectedEof {
                        StorageError::corrupt(&self.path, offset, Corruption::ShortFile)
                    } else {
                        StorageError::io(&self.path, e)
                    }
                })?;
                Ok(Cow::Owned(buf))
            }
        }
    }

    /// The payload of the frame of `frame_len` bytes at `offset`, checksums verified.
    pub fn read_frame(&self, offset: u64, frame_len: usize) -> Result<Cow<'_, [u8]>> {
        let bytes = self.read(offset, frame_len)?;
        let payload_range = match frame::decode_exact(&bytes) {
            Ok(p) => frame::FRAME_HEADER_BYTES..frame::FRAME_HEADER_BYTES + p.len(),
            Err(r) => return Err(StorageError::corrupt(&self.path, offset, r)),
        };
        Ok(match bytes {
            Cow::Borrowed(b) => Cow::Borrowed(&b[payload_range]),
            Cow::Owned(mut v) => {
                v.truncate(payload_range.end);
                v.drain(..payload_range.start);
                Cow::Owned(v)
            }
        })
    }
}

/// How a scan over a segment's frames ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanEnd {
    /// Every byte was part of a whole, valid frame.
    Clean,
    /// From `offset` on, nothing but zeros: free space after the last frame.
    Free { offset: u64 },
    /// From `offset` on, an unfinished frame: a write that was cut short. Either the data
    /// ends inside the frame, or the frame is damaged, its last non-zero byte lies within it
    /// (as far as its header gives its length; within the header if that does not check out)
    /// and zeros follow it.
    Torn { offset: u64 },
    /// The frame at `offset` is damaged and is followed by data, or ends the data: not a
    /// torn tail.
    Corrupt { offset: u64, reason: Corruption },
}

/// Walks the frames in `bytes`, which start at file offset `base`, calling `f` with each
/// frame's file offset, total length and payload. Stops early if `f` fails.
pub fn scan<E>(
    bytes: &[u8],
    base: u64,
    mut f: impl FnMut(u64, usize, &[u8]) -> Result<(), E>,
) -> Result<ScanEnd, E> {
    let mut at = 0usize;
    while at < bytes.len() {
        let offset = base + at as u64;
        match frame::decode(&bytes[at..]) {
            Ok((payload, n)) => {
                f(offset, n, payload)?;
                at += n;
            }
            Err(e) => return Ok(end_at(&bytes[at..], offset, e)),
        }
    }
    Ok(ScanEnd::Clean)
}

/// What the bytes `rest`, from the first that is not a whole valid frame on, are.
fn end_at(rest: &[u8], offset: u64, error: FrameError) -> ScanEnd {
    let data_end = rest.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if data_end == 0 {
        return ScanEnd::Free { offset };
    }
    match error {
        FrameError::Incomplete { .. } => ScanEnd::Torn { offset },
        FrameError::Corrupt(reason) => {
            let frame_end = frame::claimed_len(rest).unwrap_or(frame::FRAME_HEADER_BYTES);
            // Zeros inside the frame prove nothing (values hold zeros): some must follow it.
            if data_end <= frame_end && rest.len() > frame_end {
                ScanEnd::Torn { offset }
            } else {
                ScanEnd::Corrupt { offset, reason }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    fn frames(n: usize) -> Vec<u8> {
        let mut out = SegmentHeader { id: 1, base: 1 }.encode().to_vec();
        for i in 0..n {
            frame::encode(format!("payload {i}").as_bytes(), &mut out);
        }
        out
    }

    fn count(bytes: &[u8]) -> (usize, ScanEnd) {
        let mut n = 0;
        let end = scan::<()>(
            &bytes[SEGMENT_HEADER_BYTES as usize..],
            SEGMENT_HEADER_BYTES,
            |_, _, _| {
                n += 1;
                Ok(())
            },
        )
        .unwrap();
        (n, end)
    }

    #[test]
    fn scan_reads_every_frame() {
        assert_eq!(count(&frames(5)), (5, ScanEnd::Clean));
    }

    #[test]
    fn a_cut_anywhere_in_the_last_frame_is_a_torn_tail() {
        let whole = frames(3);
        let last_start = frames(2).len();
        for cut in last_start..whole.len() {
            let (n, end) = count(&whole[..cut]);
            assert_eq!(n, 2);
            assert_eq!(
                end,
                if cut == last_start {
                    ScanEnd::Clean
                } else {
                    ScanEnd::Torn {
                        offset: last_start as u64,
                    }
                }
            );
        }
    }

    #[test]
    fn zeros_after_the_last_frame_are_free_space() {
        let mut b = frames(2);
        let end = b.len() as u64;
        b.extend_from_slice(&[0u8; 100]);
        assert_eq!(count(&b), (2, ScanEnd::Free { offset: end }));
        b.truncate(end as usize + 5);
        assert_eq!(count(&b), (2, ScanEnd::Free { offset: end }));
    }

    #[test]
    fn a_frame_written_in_part_into_free_space_is_a_torn_tail() {
        let whole = frames(3);
        let last_start = frames(2).len();
        // The write stopped anywhere inside the last frame; the rest still reads as zeros.
        for written in last_start + 1..whole.len() {
            let mut b = whole[..written].to_vec();
            b.resize(whole.len() + 64, 0);
            let (n, end) = count(&b);
            assert_eq!(n, 2, "written up to {written}");
            assert_eq!(
                end,
                ScanEnd::Torn {
                    offset: last_start as u64
                },
                "written up to {written}"
            );
        }
    }

    #[test]
    fn a_damaged_last_frame_is_corruption_unless_zeros_follow_it() {
        let mut b = frames(3);
        let last_start = frames(2).len();
        b[last_start + 14] ^= 0x10;
        let corrupt = ScanEnd::Corrupt {
            offset: last_start as u64,
            reason: Corruption::FramePayloadCrc,
        };
        // Ending the data (a segment cut back to its frames): corruption.
        assert_eq!(count(&b), (2, corrupt));
        // Followed by free space, a damaged frame cannot be told from a write cut short.
        b.extend_from_slice(&[0u8; 64]);
        assert_eq!(
            count(&b),
            (
                2,
                ScanEnd::Torn {
                    offset: last_start as u64
                }
            )
        );
        // A damaged header followed by its payload: corruption, zeros after or not.
        let mut b = frames(3);
        b[last_start + 1] ^= 0x01;
        b.extend_from_slice(&[0u8; 64]);
        assert!(matches!(
            count(&b),
            (
                2,
                ScanEnd::Corrupt {
                    reason: Corruption::FrameHeaderCrc,
                    ..
                }
            )
        ));
    }

    #[test]
    fn appends_keep_free_space_ahead_and_seal_cuts_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = ActiveSegment::create(dir.path(), SegmentHeader { id: 1, base: 1 }).unwrap();
        let file_len = |p: &Path| std::fs::metadata(p).unwrap().len();
        let mut frames = Vec::new();
        let mut expected = Vec::new();
        for i in 0..3000 {
            frames.clear();
            frame::encode(
                format!("payload number {i}").repeat(5).as_bytes(),
                &mut frames,
            );
            let at = seg.append(&frames).unwrap();
            assert_eq!(at + frames.len() as u64, seg.len());
            expected.push(at);
            let on_disk = file_len(seg.path());
            assert!(on_disk > seg.len() && on_disk % FREE_SPACE_STEP == 0);
        }
        seg.sync().unwrap();
        // Scanned as a crash would leave it: every frame, then free space.
        let bytes = std::fs::read(seg.path()).unwrap();
        let mut seen = Vec::new();
        let end = scan::<()>(
            &bytes[SEGMENT_HEADER_BYTES as usize..],
            SEGMENT_HEADER_BYTES,
            |offset, _, _| {
                seen.push(offset);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, expected);
        assert_eq!(end, ScanEnd::Free { offset: seg.len() });
        let (len, path) = (seg.len(), seg.path().to_path_buf());
        let lock = fs::DirLock::acquire(dir.path()).unwrap();
        let reader = seg.seal(&lock).unwrap();
        assert_eq!(file_len(&path), len);
        assert_eq!(
            &reader.read(len - 4, 4).unwrap()[..],
            &bytes[len as usize - 4..len as usize]
        );
    }

    #[test]
    fn a_flip_before_the_tail_is_corruption() {
        let mut b = frames(3);
        let second = frames(1).len();
        b[second + 14] ^= 0x10;
        let (n, end) = count(&b);
        assert_eq!(n, 1);
        assert!(
            matches!(end, ScanEnd::Corrupt { offset, reason: Corruption::FramePayloadCrc } if offset == second as u64)
        );
    }

    fn random_frames(sizes: &[usize], fill: u8) -> (Vec<u8>, Vec<usize>) {
        let mut out = SegmentHeader { id: 1, base: 1 }.encode().to_vec();
        let mut starts = Vec::new();
        for (i, n) in sizes.iter().enumerate() {
            starts.push(out.len());
            let payload: Vec<u8> = (0..*n).map(|j| fill ^ (i + j) as u8 | 1).collect();
            frame::encode(&payload, &mut out);
        }
        (out, starts)
    }

    proptest::proptest! {
        /// A write into free space that stopped anywhere loses only the frames it had not
        /// finished, and is never taken for damage.
        #[test]
        fn a_write_stopped_anywhere_in_free_space_is_never_damage(
            sizes in proptest::collection::vec(1usize..3000, 1..12),
            stop in 0usize..40_000,
            free in 1usize..5000,
            fill in proptest::prelude::any::<u8>(),
            at_boundary in proptest::prelude::any::<bool>(),
        ) {
            let (whole, starts) = random_frames(&sizes, fill);
            let body = SEGMENT_HEADER_BYTES as usize;
            let stop = if at_boundary {
                let mut boundaries = starts.iter().copied().chain([whole.len()]);
                boundaries.nth(stop % (starts.len() + 1)).unwrap_or(body)
            } else {
                body + stop % (whole.len() - body + 1)
            };
            let mut b = whole[..stop].to_vec();
            b.resize(whole.len() + free, 0);
            let (n, end) = count(&b);
            let ends = starts.iter().copied().skip(1).chain([whole.len()]);
            let whole_frames = ends.filter(|e| *e <= stop).count();
            proptest::prop_assert_eq!(n, whole_frames);
            let at = starts.get(n).copied().unwrap_or(whole.len()) as u64;
            if n == starts.len() || stop == starts[n] {
                proptest::prop_assert_eq!(end, ScanEnd::Free { offset: at });
            } else {
                proptest::prop_assert_eq!(end, ScanEnd::Torn { offset: at });
            }
        }

        /// A bit flipped in any frame but the last is damage, free space after or not.
        #[test]
        fn a_flip_before_the_last_frame_is_damage(
            sizes in proptest::collection::vec(1usize..3000, 2..12),
            which in 0usize..12,
            bit in 0usize..100_000,
            free in 0usize..5000,
            fill in proptest::prelude::any::<u8>(),
        ) {
            let (mut b, starts) = random_frames(&sizes, fill);
            let which = which % (starts.len() - 1);
            let len = starts[which + 1] - starts[which];
            let bit = bit % (len * 8);
            b[starts[which] + bit / 8] ^= 1 << (bit % 8);
            b.resize(b.len() + free, 0);
            let (n, end) = count(&b);
            proptest::prop_assert_eq!(n, which);
            let damaged_at = starts[which] as u64;
            let is_corrupt = matches!(end, ScanEnd::Corrupt { offset, .. } if offset == damaged_at);
            proptest::prop_assert!(is_corrupt, "{:?}", end);
        }
    }

    #[test]
    fn header_round_trip_and_damage() {
        let h = SegmentHeader { id: 7, base: 1234 };
        let mut b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        b[17] ^= 1;
        assert_eq!(SegmentHeader::decode(&b), Err(Corruption::FileHeader));
        assert_eq!(id_of(Path::new("/x/0000000007.seg")), Some(7));
    }
}
