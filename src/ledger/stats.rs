//! What the writer counts as it goes: commits, group sizes, fsync times. Plain atomics,
//! read by whoever exports them (the server's metrics); nothing here does I/O.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the group-size buckets (txs per group commit); the last bucket is +Inf.
pub const GROUP_TXS_BOUNDS: [f64; 13] = [
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// Upper bounds of the fsync-time buckets, in seconds; the last bucket is +Inf.
pub const FSYNC_SECONDS_BOUNDS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

/// A histogram with fixed bounds: a count per bucket (not cumulative), the sum and count.
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    bounds: &'static [f64; N],
    buckets: [AtomicU64; N],
    over: AtomicU64,
    /// Sum of the observations, in units of `1 / scale`.
    sum: AtomicU64,
    scale: f64,
}

/// A histogram as read: cumulative counts per upper bound, then the count and sum.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, observations at or below it)`, the last bound `+Inf`.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

impl<const N: usize> Histogram<N> {
    const fn new(bounds: &'static [f64; N], scale: f64) -> Histogram<N> {
        Histogram {
            bounds,
            buckets: [const { AtomicU64::new(0) }; N],
            over: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            scale,
        }
    }

    fn observe(&self, value: f64) {
        match self.bounds.iter().position(|b| value <= *b) {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        // Saturating float-to-integer: a negative or NaN observation adds nothing.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let units = (value * self.scale).round() as u64;
        self.sum.fetch_add(units, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut buckets = Vec::with_capacity(N + 1);
        let mut cumulative = 0u64;
        for (b, c) in self.bounds.iter().zip(&self.buckets) {
            cumulative += c.load(Ordering::Relaxed);
            buckets.push((*b, cumulative));
        }
        cumulative += self.over.load(Ordering::Relaxed);
        buckets.push((f64::INFINITY, cumulative));
        #[allow(clippy::cast_precision_loss)]
        let sum = self.sum.load(Ordering::Relaxed) as f64 / self.scale;
        HistogramSnapshot {
            buckets,
            count: cumulative,
            sum,
        }
    }
}

/// The writer's counters since the database was opened.
#[derive(Debug)]
pub struct WriteStats {
    txs: AtomicU64,
    groups: Histogram<13>,
    fsyncs: Histogram<14>,
}

impl Default for WriteStats {
    fn default() -> WriteStats {
        WriteStats {
            txs: AtomicU64::new(0),
            groups: Histogram::new(&GROUP_TXS_BOUNDS, 1.0),
            // Nanoseconds: a sum of fsync times to the nanosecond.
            fsyncs: Histogram::new(&FSYNC_SECONDS_BOUNDS, 1e9),
        }
    }
}

impl WriteStats {
    /// A group commit of `txs` txs was written (and synced, under `Synced`).
    pub(crate) fn group(&self, txs: u64) {
        if txs == 0 {
            return;
        }
        self.txs.fetch_add(txs, Ordering::Relaxed);
        #[allow(clippy::cast_precision_loss)]
        self.groups.observe(txs as f64);
    }

    /// An fsync of the log took `d`.
    pub(crate) fn fsync(&self, d: Duration) {
        self.fsyncs.observe(d.as_secs_f64());
    }

    /// Txs committed (written, or applied from a primary) since the database was opened.
    pub fn txs(&self) -> u64 {
        self.txs.load(Ordering::Relaxed)
    }

    /// Txs per group commit.
    pub fn group_txs(&self) -> HistogramSnapshot {
        self.groups.snapshot()
    }

    /// Seconds per fsync of the log on the write path.
    pub fn fsync_seconds(&self) -> HistogramSnapshot {
        self.fsyncs.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_sum_counts() {
        let s = WriteStats::default();
        s.group(1);
        s.group(3);
        s.group(5000);
        s.fsync(Duration::from_micros(80));
        s.fsync(Duration::from_millis(2));
        let g = s.group_txs();
        assert_eq!(s.txs(), 5004);
        assert_eq!(g.count, 3);
        assert_eq!(g.sum, 5004.0);
        assert_eq!(g.buckets[0], (1.0, 1));
        assert_eq!(g.buckets[2], (4.0, 2));
        assert_eq!(*g.buckets.last().unwrap(), (f64::INFINITY, 3));
        let f = s.fsync_seconds();
        assert_eq!(f.count, 2);
        assert!((f.sum - 0.00208).abs() < 1e-9, "{}", f.sum);
        assert_eq!(f.buckets[1], (0.0001, 1));
        assert_eq!(f.buckets[5], (0.0025, 2));
    }
}
