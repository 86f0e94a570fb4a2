//! The one random source of the tests, tools and benches: xorshift64, seeded from
//! `CHAINLOG_TEST_SEED` when set (to replay a failure), else from the clock, and printed.
#![allow(dead_code)]

/// A small, seeded, reproducible pseudo-random generator (not for secrets).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded from `CHAINLOG_TEST_SEED` or the clock; prints the seed with `what`.
    pub fn from_env(what: &str) -> Rng {
        let seed = std::env::var("CHAINLOG_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
        eprintln!("{what}: CHAINLOG_TEST_SEED={seed}");
        Rng::new(seed)
    }

    /// Seeded with `seed` (0 is replaced, xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform enough in `[0, n)` for tests (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
