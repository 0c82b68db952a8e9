//! The one seeded PRNG of the test suite. A run has one seed, `BLKDRV_TEST_SEED` or drawn from
//! the clock once; each case derives its own stream from it and its name, and prints the
//! command that replays it.

use std::sync::OnceLock;

/// splitmix64: small, good enough to pick operations, delays and bytes, and the same on every
/// host.
#[derive(Debug, Clone)]
pub struct Rng(u64);

/// The run's seed: `BLKDRV_TEST_SEED`, or one drawn from the clock on first use.
pub fn run_seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        crate::config::get().seed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            t ^ (u64::from(std::process::id()) << 32)
        })
    })
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The stream of case `case` (e.g. `btrfs::kill_9_campaign`) of test target `target`; prints
    /// the seed with the command that replays the case. Returns the run's seed too, for the
    /// case's failure messages.
    pub fn for_case(target: &str, case: &str) -> (Rng, u64) {
        let seed = run_seed();
        eprintln!(
            "{case}: seed {seed} (replay: BLKDRV_TEST_SEED={seed} cargo test -p blkdrv-tests --test {target} -- --exact {case})"
        );
        // FNV-1a of the name: cases of one run draw different streams from the one seed.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in case.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        (Rng(seed ^ h), seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// An independent stream for part `n` of a case.
    pub fn fork(&self, n: u64) -> Rng {
        let mut r = Rng(self.0 ^ n.wrapping_mul(0xD1B5_4A32_D192_ED03));
        r.next_u64();
        r
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    pub fn pick<'a, T>(&mut self, v: &'a [T]) -> &'a T {
        &v[self.below(v.len() as u64) as usize]
    }

    /// Fills `buf` with bytes that neither compress nor deduplicate.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let x = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&x[..chunk.len()]);
        }
    }

    /// `len` bytes that neither compress nor deduplicate.
    pub fn noise(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.fill(&mut v);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn same_seed_same_stream_and_forks_differ() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(
            Rng::new(7).fork(1).next_u64(),
            Rng::new(7).fork(2).next_u64()
        );
        let n = Rng::new(1).noise(13);
        assert_eq!(n.len(), 13);
        assert!(n.iter().any(|&b| b != 0));
    }
}
