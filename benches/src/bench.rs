//! One variant's bench pool and what its workloads share: the pool, its scratch directories,
//! the committed parents made on demand, the rows measured so far, and the teardown that leaves
//! no pool, loop device or mount behind.

use crate::gen::{self, Rng, TreeStats};
use crate::report::{ResultRow, Unit};
use crate::run::{mkdir, Options, Variant};
use crate::scale::Sizes;
use crate::workload;
use crate::BenchError;
use blkdrv_pool::{BackingSpec, Bytes, InitSpec, LayerName, Pool, PoolName, Root, Source};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Flushes dirty data and drops the page cache, so reads come from the device and writes from
/// earlier phases do not land in the next timing. Best effort: without root the bench still
/// runs, but cold-cache numbers are then warm.
pub(crate) fn drop_caches() {
    nix::unistd::sync();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

pub(crate) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

pub(crate) fn mib(b: Bytes) -> String {
    if b.0 >= 1 << 30 && b.0.is_multiple_of(1 << 30) {
        format!("{} GiB", b.0 >> 30)
    } else if b.0 >= 1 << 20 {
        format!("{} MiB", b.0 >> 20)
    } else {
        format!("{} KiB", b.0 >> 10)
    }
}

/// One variant's pool and the state its workloads share.
pub(crate) struct Bench {
    pub(crate) label: String,
    pub(crate) pool: Option<Pool>,
    pub(crate) root: Root,
    pub(crate) name: PoolName,
    pub(crate) sizes: Sizes,
    pub(crate) runs: usize,
    /// `--dir`/<variant>: the pool's root and `work/`; removed once the pool is gone.
    pub(crate) base: PathBuf,
    pub(crate) work: PathBuf,
    pub(crate) tree_dir: PathBuf,
    pub(crate) tree: TreeStats,
    pub(crate) seq: usize,
    /// Committed layers made on demand, by key ("blob-<bytes>", "image").
    pub(crate) parents: HashMap<String, String>,
    pub(crate) mounts: Vec<(String, PathBuf)>,
    /// Containers mounted by the volume workload, unmounted and removed at teardown.
    pub(crate) containers: Vec<String>,
    pub(crate) rows: Vec<ResultRow>,
    /// (workload/phase, why a phase has no row): e.g. no raw kernel operation for overlay.
    pub(crate) notes: Vec<(String, String)>,
    pub(crate) rng: Rng,
}

pub(crate) type R<T> = Result<T, String>;

pub(crate) fn e2s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl Bench {
    pub(crate) fn start(
        v: &Variant,
        opts: &Options,
        sizes: Sizes,
        tree_dir: &Path,
        tree: TreeStats,
    ) -> Result<Bench, BenchError> {
        let base = opts.dir.join(&v.label);
        // A previous run killed halfway: its pool is ours to clear.
        let root = Root::new(base.join("root"));
        let name = PoolName::new(&format!("bench-{}", v.label))
            .map_err(|e| BenchError::Usage(e.to_string()))?;
        if root.pool_dir(&name).exists() {
            blkdrv_pool::pool::force_destroy(&root, &name).map_err(|e| BenchError::Pool {
                driver: v.label.clone(),
                op: "clear a previous run's pool",
                source: Box::new(e),
            })?;
        }
        let _ = std::fs::remove_dir_all(&base);
        mkdir(&base.join("work"))?;
        let pool = Pool::init(
            &root,
            InitSpec {
                name: name.clone(),
                driver: v.driver().to_string(),
                backing: BackingSpec::Loopback { size: sizes.pool },
                options: v.options.clone(),
                // The bench fills pools on purpose (density, remove); policy is not under test.
                min_free_pct: 1,
                force: false,
                autoextend: None,
            },
        )
        .map_err(|e| BenchError::Pool {
            driver: v.label.clone(),
            op: "pool init",
            source: Box::new(e),
        })?;
        Ok(Bench {
            label: v.label.clone(),
            pool: Some(pool),
            root,
            name,
            sizes,
            runs: opts.runs,
            work: base.join("work"),
            base,
            tree_dir: tree_dir.to_path_buf(),
            tree,
            seq: 0,
            parents: HashMap::new(),
            mounts: Vec::new(),
            containers: Vec::new(),
            rows: Vec::new(),
            notes: Vec::new(),
            rng: Rng::new(7),
        })
    }

    pub(crate) fn pool(&mut self) -> &mut Pool {
        self.pool.as_mut().expect("pool is open until finish")
    }

    pub(crate) fn fresh(&mut self, prefix: &str) -> LayerName {
        self.seq += 1;
        LayerName::new(&format!("{prefix}-{}", self.seq)).expect("bench names are valid")
    }

    pub(crate) fn row(
        &mut self,
        workload: &str,
        phase: &str,
        param: &str,
        unit: Unit,
        samples: Vec<f64>,
    ) {
        // The table says what each workload reports; a row it does not list is a bug here.
        debug_assert!(
            workload::find(workload).is_some_and(|w| w.phases.contains(&phase)),
            "{workload}/{phase} is not in the workload table"
        );
        let row = ResultRow::new(&self.label, workload, phase, param, unit, samples);
        self.rows.push(row);
    }

    /// Warm-up plus measured runs.
    pub(crate) fn total_runs(&self) -> usize {
        self.runs + 1
    }

    /// Runs workload `w`.
    pub(crate) fn workload(&mut self, w: &str) -> R<()> {
        match workload::find(w) {
            Some(w) => (w.run)(self),
            None => Err(format!("no such workload {w}")),
        }
    }

    pub(crate) fn mount(&mut self, layer: &str, read_only: bool) -> R<PathBuf> {
        let target = self.work.join(format!("mnt-{}", self.mounts.len()));
        self.pool().mount(layer, &target, read_only).map_err(e2s)?;
        self.mounts.push((layer.to_string(), target.clone()));
        Ok(target)
    }

    pub(crate) fn umount(&mut self, target: &Path) -> R<()> {
        let Some(i) = self.mounts.iter().position(|(_, t)| t == target) else {
            return Ok(());
        };
        let (layer, t) = self.mounts.remove(i);
        self.pool().umount(&layer, Some(&t)).map_err(e2s).map(drop)
    }

    pub(crate) fn unmount_all(&mut self) {
        let Some(pool) = self.pool.as_mut() else {
            return;
        };
        while let Some((layer, t)) = self.mounts.pop() {
            let _ = pool.umount(&layer, Some(&t));
        }
        while let Some(c) = self.containers.pop() {
            let _ = pool.container_remove(&c, true, true);
        }
    }

    pub(crate) fn rm(&mut self, layer: &str) -> R<()> {
        self.pool().remove(layer, true).map_err(e2s).map(drop)
    }

    /// A committed layer holding one file `blob` of `size` random bytes.
    pub(crate) fn blob_layer(&mut self, size: Bytes) -> R<String> {
        let key = format!("blob-{}", size.0);
        if let Some(n) = self.parents.get(&key) {
            return Ok(n.clone());
        }
        let src = self.work.join(&key);
        std::fs::create_dir_all(&src).map_err(e2s)?;
        gen::write_file(&src.join("blob"), size.0, &mut self.rng).map_err(e2s)?;
        let name = self.fresh(&key);
        let r = self
            .pool()
            .create(&name, None, Source::Dir(&src), None, &mut |_| {});
        let _ = std::fs::remove_dir_all(&src);
        r.map_err(e2s)?;
        self.parents.insert(key, name.to_string());
        Ok(name.to_string())
    }

    /// The generated rootfs as a committed image layer.
    pub(crate) fn image(&mut self) -> R<String> {
        if let Some(n) = self.parents.get("image") {
            return Ok(n.clone());
        }
        let name = self.fresh("image");
        let tree = self.tree_dir.to_path_buf();
        self.pool()
            .create(&name, None, Source::Dir(&tree), None, &mut |_| {})
            .map_err(e2s)?;
        self.parents.insert("image".into(), name.to_string());
        Ok(name.to_string())
    }

    /// Pool space used once the filesystem has settled (delayed allocation, btrfs's cleaner):
    /// sync, then poll until two readings 200 ms apart agree (at most 10 s).
    pub(crate) fn settled_used(&mut self) -> R<u64> {
        let mut last = None;
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            nix::unistd::sync();
            let used = self.pool().status().map_err(e2s)?.space.used.0;
            if last == Some(used) || Instant::now() > until {
                return Ok(used);
            }
            last = Some(used);
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub(crate) fn write_and_sync(path: &Path, rng: &mut Rng, size: Bytes) -> R<()> {
        gen::write_file(path, size.0, rng).map_err(|e| format!("write {}: {e}", path.display()))
    }

    pub(crate) fn read_all(path: &Path) -> R<u64> {
        let mut f =
            std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| format!("read {}: {e}", path.display()))?;
            if n == 0 {
                return Ok(total);
            }
            total += n as u64;
        }
    }

    /// Reads a file from the device (caches dropped first): (bytes, time).
    pub(crate) fn cold_read(path: &Path) -> R<(u64, Duration)> {
        drop_caches();
        let t = Instant::now();
        let n = Self::read_all(path)?;
        Ok((n, t.elapsed()))
    }

    /// Unmounts and destroys the pool. Errors are returned (a leaked pool is a failure).
    pub(crate) fn finish(mut self) -> R<()> {
        self.teardown()
    }

    /// Unmounts, destroys the pool (tearing down what is on disk if the store or driver is
    /// confused), then removes the variant's directory. Idempotent: `finish`, then `Drop`.
    pub(crate) fn teardown(&mut self) -> R<()> {
        self.unmount_all();
        let Some(pool) = self.pool.take() else {
            return Ok(());
        };
        if let Err(e) = pool.destroy(true) {
            blkdrv_pool::pool::force_destroy(&self.root, &self.name)
                .map_err(|f| format!("destroy: {e}; forced teardown: {f}"))?;
        }
        // Never recurse into a directory something is still mounted below.
        let mounted = blkdrv_pool::bench::mounted_below(&self.base).map_err(e2s)?;
        if !mounted {
            std::fs::remove_dir_all(&self.base)
                .map_err(|e| format!("remove {}: {e}", self.base.display()))?;
        }
        Ok(())
    }
}

impl Drop for Bench {
    // A failed workload's early return or a panic must not leave loop devices and mounts.
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}
