//! Bytes on disk. Knows nothing of hashes, keys or transactions: its errors say what is wrong
//! with bytes (checksums, lengths, layouts), never with a hash chain.
//!
//! - [`frame`]: length + crc32 framed records and their decoding (`Incomplete` vs `Corrupt`).
//! - [`segment`]: append-only segment files of frames, with a header and a size limit.
//! - [`records`]: files of fixed-size, individually checksummed records.
//! - [`chunks`]: the same records in chunk files, full chunks memory-mapped.
//! - [`mmap`]: the only `unsafe` in the crate, mapping sealed files read-only.
#![deny(clippy::cast_possible_truncation)]

pub mod chunks;
pub mod frame;
pub mod mmap;
pub mod records;
pub mod segment;

use std::path::PathBuf;

/// What is wrong with bytes that were read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Corruption {
    #[error("frame header checksum mismatch")]
    FrameHeaderCrc,
    #[error("frame payload checksum mismatch")]
    FramePayloadCrc,
    #[error("frame length {0} is zero or above the limit")]
    FrameLength(u32),
    #[error("frame runs past the end of a sealed file")]
    FrameTruncated,
    #[error("bad file header (magic, version or kind)")]
    FileHeader,
    #[error("record checksum mismatch")]
    RecordCrc,
    #[error("file is shorter than its records say")]
    ShortFile,
    #[error("undecodable record: {0}")]
    Decode(&'static str),
    /// A file header of another format version (the header is otherwise intact).
    #[error("format version {0}")]
    Version(u8),
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt data in {path} at offset {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: Corruption,
    },
    #[error("{path} is locked by another process")]
    Locked { path: PathBuf },
    /// A file of another version of the format (docs/format.md, "Versions").
    #[error("{path} is in chainlog's format version {found}; this build reads version {supported} only (docs/format.md, \"Versions\")")]
    Version {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
}

impl From<crate::fs::FsError> for StorageError {
    fn from(e: crate::fs::FsError) -> StorageError {
        match e {
            crate::fs::FsError::Io { path, source } => StorageError::Io { path, source },
            crate::fs::FsError::Locked { path } => StorageError::Locked { path },
        }
    }
}

impl StorageError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> StorageError {
        StorageError::Io {
            path: path.into(),
            source,
        }
    }

    /// The error for bytes that fail a check; a header of another format version is
    /// [`StorageError::Version`], not damage.
    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        offset: u64,
        reason: Corruption,
    ) -> StorageError {
        if let Corruption::Version(found) = reason {
            return StorageError::Version {
                path: path.into(),
                found: u64::from(found),
                supported: u64::from(segment::SEGMENT_FORMAT_VERSION),
            };
        }
        StorageError::Corrupt {
            path: path.into(),
            offset,
            reason,
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// `n` as a `usize`: lossless, since chainlog builds only for 64-bit targets (lib.rs).
#[allow(clippy::cast_possible_truncation)]
pub(crate) const fn usize_of(n: u64) -> usize {
    n as usize
}

/// A length the caller has bounded by a named limit far below `u32::MAX` (frames by
/// `FRAME_PAYLOAD_BYTES_MAX`, values by the ledger's limits), as a `u32`. Were a bound ever
/// broken, the length saturates, and the record fails its checks when read back rather than
/// wrapping into a plausible one.
pub(crate) fn len_u32(n: usize) -> u32 {
    debug_assert!(u32::try_from(n).is_ok(), "length {n} above u32");
    u32::try_from(n).unwrap_or(u32::MAX)
}
