//! Seeded generators for bench inputs: the same seed gives the same tree on every machine, so
//! two runs (or two drivers) import identical content.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::symlink;
use std::path::Path;

/// xorshift64*: tiny, fast, good enough for file contents and size mixes.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        // Zero is xorshift's fixed point.
        Rng(seed.max(1) ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..hi` (hi exclusive, hi > lo).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Writes `size` bytes of incompressible data (so no filesystem or dm layer can cheat with
/// zero detection or compression).
pub fn write_file(path: &Path, size: u64, rng: &mut Rng) -> io::Result<()> {
    let mut f = File::create(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill(&mut buf[..n]);
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.sync_all()
}

/// Shape of a generated root filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeSpec {
    pub files: usize,
    pub large_files: usize,
    pub large_size: u64,
    pub seed: u64,
}

/// What [`rootfs`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TreeStats {
    pub files: usize,
    pub dirs: usize,
    pub symlinks: usize,
    pub bytes: u64,
}

/// A rootfs-like tree: many small files (configs, scripts, headers), fewer medium ones
/// (libraries), a few large ones (a toolchain binary, a locale archive), in nested
/// directories of ~30 entries, with some symlinks. Size mix per file: 65% under 4 KiB, 31%
/// 4-64 KiB, 4% 64-512 KiB.
pub fn rootfs(dir: &Path, spec: TreeSpec) -> io::Result<TreeStats> {
    let mut rng = Rng::new(spec.seed);
    let mut st = TreeStats::default();
    std::fs::create_dir_all(dir)?;
    let tops = [
        "usr/lib",
        "usr/share",
        "usr/bin",
        "etc",
        "var/lib",
        "opt/app",
    ];
    let mut buf = vec![0u8; 512 << 10];
    for i in 0..spec.files {
        let top = tops[i % tops.len()];
        let sub = dir.join(format!("{top}/pkg{:03}/d{}", i / 180, (i / 30) % 6));
        if !sub.exists() {
            std::fs::create_dir_all(&sub)?;
            st.dirs += 1;
        }
        let size = match rng.range(0, 100) {
            0..=64 => rng.range(0, 4 << 10),
            65..=95 => rng.range(4 << 10, 64 << 10),
            _ => rng.range(64 << 10, 512 << 10),
        } as usize;
        let path = sub.join(format!("f{i}"));
        rng.fill(&mut buf[..size]);
        std::fs::write(&path, &buf[..size])?;
        st.files += 1;
        st.bytes += size as u64;
        if i % 97 == 0 {
            symlink(format!("f{i}"), sub.join(format!("l{i}")))?;
            st.symlinks += 1;
        }
    }
    if spec.large_files > 0 {
        let big = dir.join("usr/lib/big");
        std::fs::create_dir_all(&big)?;
        for i in 0..spec.large_files {
            write_file(&big.join(format!("blob{i}")), spec.large_size, &mut rng)?;
            st.files += 1;
            st.bytes += spec.large_size;
        }
    }
    Ok(st)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let (mut x, mut y) = ([0u8; 37], [0u8; 37]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_eq!(x, y);
        assert_ne!(Rng::new(8).next_u64(), Rng::new(7).next_u64());
    }

    #[test]
    fn rootfs_writes_what_it_reports() {
        let d = tempfile::tempdir().unwrap();
        let spec = TreeSpec {
            files: 100,
            large_files: 1,
            large_size: 100_000,
            seed: 1,
        };
        let st = rootfs(d.path(), spec).unwrap();
        assert_eq!(st.files, 101);
        assert!(st.symlinks >= 1);
        let mut bytes = 0;
        let mut stack = vec![d.path().to_path_buf()];
        while let Some(p) = stack.pop() {
            for e in std::fs::read_dir(&p).unwrap() {
                let e = e.unwrap();
                let m = std::fs::symlink_metadata(e.path()).unwrap();
                if m.is_dir() {
                    stack.push(e.path());
                } else if m.is_file() {
                    bytes += m.len();
                }
            }
        }
        assert_eq!(bytes, st.bytes);
    }
}
