//! The settings of one open database, each with its documented default and accepted range.

use super::LedgerError;

/// What opening does when the log ends before txs its derived files show were committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Recovery {
    /// Refuse to open ([`LedgerError::Lost`]). The default: a committed tx is never dropped
    /// silently.
    #[default]
    Strict,
    /// Cut them, log it at error level and report it in `RecoveryReport::lost`: for an
    /// operator who has decided to accept the loss.
    AcceptLoss,
}

/// When a commit returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// After the tx is written and fsynced: it survives a power loss. The default.
    #[default]
    Synced,
    /// After the tx is written to the OS: it survives a crash of the process, not of the
    /// machine. Segments are still fsynced at checkpoints, rolls and close.
    Buffered,
}

/// Settings of one open database. Every field has a documented default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Default [`Durability::Synced`].
    pub durability: Durability,
    /// A segment is sealed and a new one started once it would grow past this. Default 64 MiB;
    /// 1 MiB..=1 GiB.
    pub segment_bytes_max: u64,
    /// A checkpoint is taken after this many txs. Bounds the log replayed at reopen after a
    /// crash. Default 100,000; at least 1.
    pub checkpoint_txs: u64,
    /// A checkpoint is also taken once the memtable holds this many versions. Default 250,000.
    pub memtable_versions_max: usize,
    /// Runs are merged by size tiers (four of a size become one); more than this many are
    /// merged whole. Bounds the files a lookup may search. Default 16; at least 1.
    pub runs_max: usize,
    /// Default [`Recovery::Strict`].
    pub recovery: Recovery,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            durability: Durability::Synced,
            segment_bytes_max: 64 << 20,
            checkpoint_txs: 100_000,
            memtable_versions_max: 250_000,
            runs_max: 16,
            recovery: Recovery::Strict,
        }
    }
}

impl Options {
    /// Checks every setting against its range; the error names the first one outside it.
    pub fn validate(&self) -> Result<(), LedgerError> {
        let bad = |name, reason| Err(LedgerError::InvalidOption { name, reason });
        if !(1 << 20..=1 << 30).contains(&self.segment_bytes_max) {
            return bad("segment_bytes_max", "must be between 1 MiB and 1 GiB");
        }
        if self.checkpoint_txs == 0 {
            return bad("checkpoint_txs", "must be at least 1");
        }
        if self.memtable_versions_max == 0 {
            return bad("memtable_versions_max", "must be at least 1");
        }
        if self.runs_max == 0 {
            return bad("runs_max", "must be at least 1");
        }
        Ok(())
    }
}
