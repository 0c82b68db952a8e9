//! How big the work is: the sizes each `--scale` stands for.

use crate::gen::TreeSpec;
use blkdrv_pool::Bytes;

/// How big the work is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// The sizes: 1 GiB files, 100-layer density, 1,000 layers, a 64-layer chain.
    Full,
    /// A few minutes for all drivers: the README's main job.
    Quick,
    /// Tiny sizes so CI exercises every code path in seconds.
    Smoke,
}

/// The sizes a scale stands for.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub pool: Bytes,
    pub tree: TreeSpec,
    pub small_parent: Bytes,
    pub big_parent: Bytes,
    pub cow_file: Bytes,
    pub density_layers: usize,
    pub density_write: Bytes,
    pub scale_layers: usize,
    /// How many creates at each end of the scale run are compared.
    pub scale_window: usize,
    pub read_file: Bytes,
    pub chain_depth: usize,
    pub chain_file: Bytes,
    pub remove_write: Bytes,
    /// The volume workload's small and large volume (clone time of one vs the other).
    pub volume_small: Bytes,
    pub volume_large: Bytes,
}

impl Scale {
    pub fn name(self) -> &'static str {
        match self {
            Scale::Full => "full",
            Scale::Quick => "quick",
            Scale::Smoke => "smoke",
        }
    }

    pub fn sizes(self) -> Sizes {
        let tree = |files, large_files, large: Bytes| TreeSpec {
            files,
            large_files,
            large_size: large.0,
            seed: 42,
        };
        match self {
            Scale::Full => Sizes {
                pool: Bytes::gib(24),
                tree: tree(20_000, 3, Bytes::mib(32)),
                small_parent: Bytes::mib(1),
                big_parent: Bytes::gib(1),
                cow_file: Bytes::gib(1),
                density_layers: 100,
                density_write: Bytes::mib(1),
                scale_layers: 1000,
                scale_window: 20,
                read_file: Bytes::gib(1),
                chain_depth: 64,
                chain_file: Bytes::mib(64),
                remove_write: Bytes::mib(256),
                volume_small: Bytes::mib(1),
                volume_large: Bytes::gib(1),
            },
            Scale::Quick => Sizes {
                pool: Bytes::gib(6),
                tree: tree(5_000, 2, Bytes::mib(16)),
                small_parent: Bytes::mib(1),
                big_parent: Bytes::mib(256),
                cow_file: Bytes::mib(256),
                density_layers: 20,
                density_write: Bytes::mib(1),
                scale_layers: 200,
                scale_window: 10,
                read_file: Bytes::mib(256),
                chain_depth: 32,
                chain_file: Bytes::mib(16),
                remove_write: Bytes::mib(64),
                volume_small: Bytes::mib(1),
                volume_large: Bytes::mib(256),
            },
            Scale::Smoke => Sizes {
                pool: Bytes::gib(2),
                tree: tree(150, 0, Bytes(0)),
                small_parent: Bytes(64 << 10),
                big_parent: Bytes::mib(4),
                cow_file: Bytes::mib(4),
                density_layers: 3,
                density_write: Bytes::mib(1),
                scale_layers: 6,
                scale_window: 2,
                read_file: Bytes::mib(4),
                chain_depth: 4,
                chain_file: Bytes::mib(1),
                remove_write: Bytes::mib(4),
                volume_small: Bytes(256 << 10),
                volume_large: Bytes::mib(4),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_scale_fits_its_pool() {
        for s in [Scale::Full, Scale::Quick, Scale::Smoke] {
            let z = s.sizes();
            assert!(z.big_parent > z.small_parent);
            assert!(z.scale_window * 2 <= z.scale_layers);
            assert!(z.cow_file.0 * 2 < z.pool.0);
            // Source, clone (worst case a full copy), plain copy.
            assert!(z.volume_large > z.volume_small);
            assert!(z.volume_large.0 * 4 < z.pool.0);
        }
    }
}
