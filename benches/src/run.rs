//! The driver comparison: one fresh pool per driver variant on the same kind of backing, the
//! same workloads in the same order, each phase timed separately (like containerd's snapshot
//! benchsuite), warm-up runs discarded, every sample kept.

use crate::gen::{self, Rng, TreeSpec, TreeStats};
use crate::report::{Report, ResultRow, RunConfig, Skipped, Unit, SCHEMA};
use crate::{env, BenchError};
use blkdrv_pool::{BackingSpec, Bytes, InitSpec, LayerName, Pool, PoolName, Root, Source};
use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Every workload, in the order they run and are reported: (name, what it measures).
pub const WORKLOADS: &[(&str, &str)] = &[
    (
        "import",
        "base image import: a generated rootfs tree as a committed layer",
    ),
    (
        "create",
        "layer create on a small and a large parent, vs the raw kernel operation",
    ),
    ("mount", "mount and unmount of a writable layer"),
    (
        "first_write",
        "first and second 4 KiB write into a large inherited file (copy-on-write)",
    ),
    (
        "density",
        "container layers on one image, each writing 1 MiB: space vs full copies",
    ),
    (
        "scale",
        "many layers in one pool: create time of the first vs the last, layer ls",
    ),
    (
        "seq_read",
        "sequential read of a large file through a layer vs a plain host file",
    ),
    (
        "deep_chain",
        "read a file from the bottom of a long layer chain",
    ),
    (
        "remove",
        "layer removal time and whether (and when) the space comes back",
    ),
];

/// How long `remove` watches for the space to come back (btrfs frees deleted subvolumes in a
/// background cleaner woken by transaction commits, every 30 s by default).
const SPACE_DEADLINE: Duration = Duration::from_secs(10);

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
            },
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Driver names (or variant labels such as `overlay-xfs`); `None`: every driver this host
    /// can run.
    pub drivers: Option<Vec<String>>,
    /// Workload names; `None`: all of [`WORKLOADS`].
    pub workloads: Option<Vec<String>>,
    pub scale: Scale,
    /// Measured runs per phase (after one warm-up run).
    pub runs: usize,
    /// Scratch directory: pools (loopback files), generated trees, mount points.
    pub dir: PathBuf,
}

/// A driver configuration under test (the pool's list of what each driver wants compared).
pub type Variant = blkdrv_pool::bench::BenchVariant;

/// Progress, for a bar or a log.
#[derive(Debug, Clone)]
pub enum Event {
    /// The run starts: how many (variant, workload) steps there are.
    Start { steps: usize },
    /// A step starts.
    Step {
        driver: String,
        workload: &'static str,
    },
    /// Something the user should read (a skipped driver, a failed workload).
    Note(String),
}

/// Resolves `--drivers` to variants. Unknown names are errors; a named driver this host cannot
/// run is an error too (asking for it and getting silence would be a lie). Unnamed drivers the
/// host lacks are recorded as skipped.
pub fn variants(wanted: Option<&[String]>) -> Result<(Vec<Variant>, Vec<Skipped>), BenchError> {
    let all = blkdrv_pool::bench::variants();
    let mut skipped = Vec::new();
    let Some(wanted) = wanted else {
        let mut out = Vec::new();
        for v in all {
            match v.check_host() {
                Ok(()) => out.push(v),
                Err(e) => skipped.push(Skipped {
                    driver: v.label,
                    workload: None,
                    reason: e.to_string(),
                }),
            }
        }
        return Ok((out, skipped));
    };
    let mut out: Vec<Variant> = Vec::new();
    for w in wanted {
        let matched: Vec<&Variant> = all
            .iter()
            .filter(|v| v.label == *w || v.driver() == w)
            .collect();
        if matched.is_empty() {
            let labels: Vec<&str> = all.iter().map(|v| v.label.as_str()).collect();
            return Err(BenchError::Usage(format!(
                "unknown driver {w:?} (available: {})",
                labels.join(", ")
            )));
        }
        for v in matched {
            v.check_host().map_err(|e| BenchError::Unavailable {
                driver: v.label.clone(),
                reason: e.to_string(),
            })?;
            if !out.iter().any(|o| o.label == v.label) {
                out.push(v.clone());
            }
        }
    }
    Ok((out, skipped))
}

/// Resolves `--workloads`.
pub fn workloads(wanted: Option<&[String]>) -> Result<Vec<&'static str>, BenchError> {
    let Some(wanted) = wanted else {
        return Ok(WORKLOADS.iter().map(|(n, _)| *n).collect());
    };
    for w in wanted {
        if !WORKLOADS.iter().any(|(n, _)| n == w) {
            let names: Vec<&str> = WORKLOADS.iter().map(|(n, _)| *n).collect();
            return Err(BenchError::Usage(format!(
                "unknown workload {w:?} (available: {})",
                names.join(", ")
            )));
        }
    }
    // Report order is the canonical order, whatever order they were asked in.
    Ok(WORKLOADS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| wanted.iter().any(|w| w == n))
        .collect())
}

/// Runs the comparison. Pools are destroyed before this returns, also on error. A workload that
/// fails on one driver is recorded in `skipped` with the error and the run goes on; the caller
/// decides the exit code from it.
pub fn run(opts: &Options, progress: &mut dyn FnMut(Event)) -> Result<Report, BenchError> {
    if opts.runs == 0 {
        return Err(BenchError::Usage("--runs must be at least 1".into()));
    }
    let (variants, mut skipped) = variants(opts.drivers.as_deref())?;
    let workloads = workloads(opts.workloads.as_deref())?;
    if variants.is_empty() {
        return Err(BenchError::Usage(
            "no driver to run: none of the selected drivers works on this host".into(),
        ));
    }
    for s in &skipped {
        progress(Event::Note(format!("skipping {}: {}", s.driver, s.reason)));
    }
    mkdir(&opts.dir)?;
    let sizes = opts.scale.sizes();
    let mut report = Report {
        schema: SCHEMA,
        environment: env::collect(&opts.dir),
        config: RunConfig {
            scale: opts.scale.name().into(),
            runs: opts.runs,
            warmup: 1,
            drivers: variants.iter().map(|v| v.label.clone()).collect(),
            workloads: workloads.iter().map(|w| w.to_string()).collect(),
            pool_size: sizes.pool.0,
        },
        results: Vec::new(),
        skipped: Vec::new(),
    };
    progress(Event::Start {
        steps: variants.len() * workloads.len(),
    });
    // Generated once and shared, so every driver imports the same bytes.
    let tree_dir = opts.dir.join("rootfs");
    let tree = if workloads
        .iter()
        .any(|w| matches!(*w, "import" | "density" | "remove"))
    {
        let _ = std::fs::remove_dir_all(&tree_dir);
        gen::rootfs(&tree_dir, sizes.tree)
            .map_err(|e| BenchError::io("generate rootfs", &tree_dir, e))?
    } else {
        TreeStats::default()
    };
    for v in &variants {
        let mut b = match Bench::start(v, opts, sizes, &tree_dir, tree) {
            Ok(b) => b,
            Err(e) => {
                progress(Event::Note(format!("{}: pool init failed: {e}", v.label)));
                skipped.push(Skipped {
                    driver: v.label.clone(),
                    workload: None,
                    reason: format!("failed: pool init: {e}"),
                });
                continue;
            }
        };
        for w in &workloads {
            progress(Event::Step {
                driver: v.label.clone(),
                workload: w,
            });
            if let Err(e) = b.workload(w) {
                progress(Event::Note(format!("{} {w}: failed: {e}", v.label)));
                skipped.push(Skipped {
                    driver: v.label.clone(),
                    workload: Some(w.to_string()),
                    reason: format!("failed: {e}"),
                });
                // Leave nothing mounted for the next workload.
                b.unmount_all();
            }
        }
        for note in &b.notes {
            skipped.push(Skipped {
                driver: v.label.clone(),
                workload: Some(note.0.clone()),
                reason: note.1.clone(),
            });
        }
        report.results.append(&mut b.rows);
        b.finish().map_err(|e| BenchError::Cleanup {
            driver: v.label.clone(),
            reason: e,
        })?;
    }
    let _ = std::fs::remove_dir_all(&tree_dir);
    report.skipped = skipped;
    Ok(report)
}

fn mkdir(p: &Path) -> Result<(), BenchError> {
    std::fs::create_dir_all(p).map_err(|e| BenchError::io("create directory", p, e))
}

/// Flushes dirty data and drops the page cache, so reads come from the device and writes from
/// earlier phases do not land in the next timing. Best effort: without root the bench still
/// runs, but cold-cache numbers are then warm.
fn drop_caches() {
    nix::unistd::sync();
    let _ = std::fs::write("/proc/sys/vm/drop_caches", "3");
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn mib(b: Bytes) -> String {
    if b.0 >= 1 << 30 && b.0.is_multiple_of(1 << 30) {
        format!("{} GiB", b.0 >> 30)
    } else if b.0 >= 1 << 20 {
        format!("{} MiB", b.0 >> 20)
    } else {
        format!("{} KiB", b.0 >> 10)
    }
}

/// One variant's pool and the state its workloads share.
struct Bench<'a> {
    label: String,
    pool: Option<Pool>,
    root: Root,
    name: PoolName,
    sizes: Sizes,
    runs: usize,
    /// `--dir`/<variant>: the pool's root and `work/`; removed once the pool is gone.
    base: PathBuf,
    work: PathBuf,
    tree_dir: &'a Path,
    tree: TreeStats,
    seq: usize,
    /// Committed layers made on demand, by key ("blob-<bytes>", "image").
    parents: HashMap<String, String>,
    mounts: Vec<(String, PathBuf)>,
    rows: Vec<ResultRow>,
    /// (workload/phase, why a phase has no row): e.g. no raw kernel operation for overlay.
    notes: Vec<(String, String)>,
    rng: Rng,
}

type R<T> = Result<T, String>;

fn e2s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl<'a> Bench<'a> {
    fn start(
        v: &Variant,
        opts: &Options,
        sizes: Sizes,
        tree_dir: &'a Path,
        tree: TreeStats,
    ) -> Result<Bench<'a>, BenchError> {
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
            tree_dir,
            tree,
            seq: 0,
            parents: HashMap::new(),
            mounts: Vec::new(),
            rows: Vec::new(),
            notes: Vec::new(),
            rng: Rng::new(7),
        })
    }

    fn pool(&mut self) -> &mut Pool {
        self.pool.as_mut().expect("pool is open until finish")
    }

    fn fresh(&mut self, prefix: &str) -> LayerName {
        self.seq += 1;
        LayerName::new(&format!("{prefix}-{}", self.seq)).expect("bench names are valid")
    }

    fn row(&mut self, workload: &str, phase: &str, param: &str, unit: Unit, samples: Vec<f64>) {
        let row = ResultRow::new(&self.label, workload, phase, param, unit, samples);
        self.rows.push(row);
    }

    /// Warm-up plus measured runs.
    fn total_runs(&self) -> usize {
        self.runs + 1
    }

    fn workload(&mut self, w: &str) -> R<()> {
        match w {
            "import" => self.import(),
            "create" => self.create(),
            "mount" => self.mount_umount(),
            "first_write" => self.first_write(),
            "density" => self.density(),
            "scale" => self.scale(),
            "seq_read" => self.seq_read(),
            "deep_chain" => self.deep_chain(),
            "remove" => self.remove(),
            other => Err(format!("no such workload {other}")),
        }
    }

    // ----- helpers -----

    fn mount(&mut self, layer: &str, read_only: bool) -> R<PathBuf> {
        let target = self.work.join(format!("mnt-{}", self.mounts.len()));
        self.pool().mount(layer, &target, read_only).map_err(e2s)?;
        self.mounts.push((layer.to_string(), target.clone()));
        Ok(target)
    }

    fn umount(&mut self, target: &Path) -> R<()> {
        let Some(i) = self.mounts.iter().position(|(_, t)| t == target) else {
            return Ok(());
        };
        let (layer, t) = self.mounts.remove(i);
        self.pool().umount(&layer, Some(&t)).map_err(e2s).map(drop)
    }

    fn unmount_all(&mut self) {
        let Some(pool) = self.pool.as_mut() else {
            return;
        };
        while let Some((layer, t)) = self.mounts.pop() {
            let _ = pool.umount(&layer, Some(&t));
        }
    }

    fn rm(&mut self, layer: &str) -> R<()> {
        self.pool().remove(layer, true).map_err(e2s).map(drop)
    }

    /// A committed layer holding one file `blob` of `size` random bytes.
    fn blob_layer(&mut self, size: Bytes) -> R<String> {
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
    fn image(&mut self) -> R<String> {
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
    fn settled_used(&mut self) -> R<u64> {
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

    fn write_and_sync(path: &Path, rng: &mut Rng, size: Bytes) -> R<()> {
        gen::write_file(path, size.0, rng).map_err(|e| format!("write {}: {e}", path.display()))
    }

    fn read_all(path: &Path) -> R<u64> {
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
    fn cold_read(path: &Path) -> R<(u64, Duration)> {
        drop_caches();
        let t = Instant::now();
        let n = Self::read_all(path)?;
        Ok((n, t.elapsed()))
    }

    // ----- workloads -----

    fn import(&mut self) -> R<()> {
        let param = format!("{} files, {}", self.tree.files, mib(Bytes(self.tree.bytes)));
        let marker = self.tree_dir.join("etc/bench-run");
        let tree = self.tree_dir.to_path_buf();
        let (mut import, mut cached) = (Vec::new(), Vec::new());
        for i in 0..self.total_runs() {
            // Different content per run: the build cache must not turn run 2 into a lookup.
            std::fs::write(&marker, format!("{}-{i}\n", self.label)).map_err(e2s)?;
            drop_caches();
            let name = self.fresh("import");
            let t = Instant::now();
            let out = self
                .pool()
                .create(&name, None, Source::Dir(&tree), None, &mut |_| {})
                .map_err(e2s)?;
            let took = t.elapsed();
            if out.reused {
                return Err("import was served from the build cache".into());
            }
            // The same content again: the build cache answers.
            let again = self.fresh("import-again");
            let t = Instant::now();
            let hit = self
                .pool()
                .create(&again, None, Source::Dir(&tree), None, &mut |_| {})
                .map_err(e2s)?;
            let hit_took = t.elapsed();
            if !hit.reused {
                return Err("identical content was imported again instead of reused".into());
            }
            if i > 0 {
                import.push(secs(took));
                cached.push(secs(hit_took));
            }
            self.rm(again.as_str())?;
            self.rm(name.as_str())?;
        }
        let _ = std::fs::remove_file(&marker);
        self.row("import", "import", &param, Unit::Seconds, import);
        self.row("import", "cache_hit", &param, Unit::Seconds, cached);
        Ok(())
    }

    fn create(&mut self) -> R<()> {
        // Both parents exist and are on disk before any timing: the first snapshot after an
        // import would otherwise pay for flushing it (btrfs: a whole transaction).
        let sizes = [self.sizes.small_parent, self.sizes.big_parent];
        for size in sizes {
            self.blob_layer(size)?;
        }
        drop_caches();
        for size in sizes {
            let parent = self.blob_layer(size)?;
            let param = format!("parent {}", mib(size));
            let (mut ours, mut raw, mut commit) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..self.total_runs() {
                let name = self.fresh("create");
                let t = Instant::now();
                self.pool().snapshot(&parent, &name, None).map_err(e2s)?;
                let s = t.elapsed();
                let t = Instant::now();
                self.pool().commit(name.as_str()).map_err(e2s)?;
                let c = t.elapsed();
                self.rm(name.as_str())?;
                let r = self.pool().raw_snapshot(&parent).map_err(e2s)?;
                if i > 0 {
                    ours.push(secs(s));
                    commit.push(secs(c));
                    if let Some(r) = r {
                        raw.push(secs(r));
                    }
                }
            }
            self.row("create", "blkdrv", &param, Unit::Seconds, ours);
            if raw.is_empty() {
                if !self.notes.iter().any(|n| n.0 == "create/raw") {
                    self.notes.push((
                        "create/raw".into(),
                        "no single kernel operation to compare with".into(),
                    ));
                }
            } else {
                self.row("create", "raw", &param, Unit::Seconds, raw);
            }
            self.row("create", "commit", &param, Unit::Seconds, commit);
        }
        Ok(())
    }

    fn mount_umount(&mut self) -> R<()> {
        let parent = self.blob_layer(self.sizes.small_parent)?;
        let name = self.fresh("mount");
        self.pool().snapshot(&parent, &name, None).map_err(e2s)?;
        let (mut m, mut u) = (Vec::new(), Vec::new());
        for i in 0..self.total_runs() {
            let t = Instant::now();
            let target = self.mount(name.as_str(), false)?;
            let tm = t.elapsed();
            let t = Instant::now();
            self.umount(&target)?;
            let tu = t.elapsed();
            if i > 0 {
                m.push(secs(tm));
                u.push(secs(tu));
            }
        }
        self.rm(name.as_str())?;
        self.row("mount", "mount", "writable layer", Unit::Seconds, m);
        self.row("mount", "umount", "writable layer", Unit::Seconds, u);
        Ok(())
    }

    fn first_write(&mut self) -> R<()> {
        let size = self.sizes.cow_file;
        let parent = self.blob_layer(size)?;
        let param = format!("file {}", mib(size));
        let (mut first, mut second) = (Vec::new(), Vec::new());
        let mut block = vec![0u8; 4096];
        for i in 0..self.total_runs() {
            let name = self.fresh("cow");
            self.pool().snapshot(&parent, &name, None).map_err(e2s)?;
            let target = self.mount(name.as_str(), false)?;
            let path = target.join("blob");
            drop_caches();
            self.rng.fill(&mut block);
            // Open for writing is where overlay copies up; fsync makes the write durable so
            // block and extent drivers pay for their copy too.
            let t = Instant::now();
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| format!("open {}: {e}", path.display()))?;
            f.write_all_at(&block, size.0 / 2).map_err(e2s)?;
            f.sync_all().map_err(e2s)?;
            let t1 = t.elapsed();
            let t = Instant::now();
            f.write_all_at(&block, size.0 / 4).map_err(e2s)?;
            f.sync_all().map_err(e2s)?;
            let t2 = t.elapsed();
            drop(f);
            self.umount(&target)?;
            self.rm(name.as_str())?;
            if i > 0 {
                first.push(secs(t1));
                second.push(secs(t2));
            }
        }
        self.row("first_write", "first", &param, Unit::Seconds, first);
        self.row("first_write", "second", &param, Unit::Seconds, second);
        Ok(())
    }

    fn density(&mut self) -> R<()> {
        let image = self.image()?;
        let n = self.sizes.density_layers;
        let w = self.sizes.density_write;
        let param = format!("{n} layers on a {} image", mib(Bytes(self.tree.bytes)));
        let before = self.settled_used()?;
        let mut times = Vec::new();
        let mut names = Vec::new();
        for _ in 0..n {
            let name = self.fresh("density");
            let t = Instant::now();
            self.pool().snapshot(&image, &name, None).map_err(e2s)?;
            let target = self.mount(name.as_str(), false)?;
            Self::write_and_sync(&target.join("written"), &mut self.rng, w)?;
            self.umount(&target)?;
            times.push(secs(t.elapsed()));
            names.push(name);
        }
        let after = self.settled_used()?;
        for name in names {
            self.rm(name.as_str())?;
        }
        let full = n as u64 * (self.tree.bytes + w.0);
        self.row("density", "layer", &param, Unit::Seconds, times);
        self.row(
            "density",
            "pool_used",
            &param,
            Unit::Bytes,
            vec![after.saturating_sub(before) as f64],
        );
        self.row(
            "density",
            "full_copies",
            &param,
            Unit::Bytes,
            vec![full as f64],
        );
        Ok(())
    }

    fn scale(&mut self) -> R<()> {
        let parent = self.blob_layer(self.sizes.small_parent)?;
        let (n, win) = (self.sizes.scale_layers, self.sizes.scale_window);
        let param = format!("{n} layers");
        let mut times = Vec::with_capacity(n);
        let mut names = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.fresh("scale");
            let t = Instant::now();
            self.pool().snapshot(&parent, &name, None).map_err(e2s)?;
            times.push(secs(t.elapsed()));
            names.push(name);
        }
        let mut ls = Vec::new();
        for i in 0..self.total_runs() {
            let t = Instant::now();
            let listed = self.pool().list().map_err(e2s)?;
            if i > 0 {
                ls.push(secs(t.elapsed()));
            }
            if listed.len() < n {
                return Err(format!("layer ls shows {} of {n} layers", listed.len()));
            }
        }
        // Newest first: removal of the most recent is the common case and keeps ids dense.
        for name in names.iter().rev() {
            self.rm(name.as_str())?;
        }
        let last = times[n.saturating_sub(win)..].to_vec();
        times.truncate(win);
        self.row("scale", "create_first", &param, Unit::Seconds, times);
        self.row("scale", "create_last", &param, Unit::Seconds, last);
        self.row("scale", "ls", &param, Unit::Seconds, ls);
        Ok(())
    }

    fn seq_read(&mut self) -> R<()> {
        let size = self.sizes.read_file;
        let parent = self.blob_layer(size)?;
        let param = format!("file {}", mib(size));
        let name = self.fresh("read");
        self.pool().snapshot(&parent, &name, None).map_err(e2s)?;
        let target = self.mount(name.as_str(), false)?;
        // The same bytes as a plain file on the filesystem that holds the loopback files.
        let host = self.work.join("host-file");
        Self::write_and_sync(&host, &mut self.rng, size)?;
        let (mut via_layer, mut via_host) = (Vec::new(), Vec::new());
        for i in 0..self.total_runs() {
            let ((n, tl), (_, th)) = if i % 2 == 0 {
                let l = Self::cold_read(&target.join("blob"))?;
                (l, Self::cold_read(&host)?)
            } else {
                let h = Self::cold_read(&host)?;
                (Self::cold_read(&target.join("blob"))?, h)
            };
            if n != size.0 {
                return Err(format!("read {n} bytes of {}", size.0));
            }
            if i > 0 {
                via_layer.push(secs(tl));
                via_host.push(secs(th));
            }
        }
        let _ = std::fs::remove_file(&host);
        self.umount(&target)?;
        self.rm(name.as_str())?;
        self.row("seq_read", "layer", &param, Unit::Seconds, via_layer);
        self.row("seq_read", "host_file", &param, Unit::Seconds, via_host);
        Ok(())
    }

    fn deep_chain(&mut self) -> R<()> {
        let depth = self.sizes.chain_depth;
        let param = format!("{depth} layers, file {}", mib(self.sizes.chain_file));
        let src = self.work.join("chain-src");
        std::fs::create_dir_all(&src).map_err(e2s)?;
        gen::write_file(&src.join("bottom"), self.sizes.chain_file.0, &mut self.rng)
            .map_err(e2s)?;
        let mut chain: Vec<String> = Vec::new();
        for level in 0..depth {
            let name = self.fresh("chain");
            let parent = chain.last().cloned();
            if level > 0 {
                // Each upper layer adds a small file of its own.
                let _ = std::fs::remove_dir_all(&src);
                std::fs::create_dir_all(&src).map_err(e2s)?;
                std::fs::write(src.join(format!("level-{level}")), level.to_string())
                    .map_err(e2s)?;
            }
            self.pool()
                .create(
                    &name,
                    parent.as_deref(),
                    Source::Dir(&src),
                    None,
                    &mut |_| {},
                )
                .map_err(e2s)?;
            chain.push(name.to_string());
        }
        let _ = std::fs::remove_dir_all(&src);
        let bottom = self.mount(&chain[0], true)?;
        let top = self.mount(chain.last().expect("depth >= 1"), true)?;
        let (mut via_bottom, mut via_top) = (Vec::new(), Vec::new());
        for i in 0..self.total_runs() {
            // Alternate which goes first, so neither gets the other's leftovers every time.
            let (tb, tt) = if i % 2 == 0 {
                let tb = Self::cold_read(&bottom.join("bottom"))?.1;
                (tb, Self::cold_read(&top.join("bottom"))?.1)
            } else {
                let tt = Self::cold_read(&top.join("bottom"))?.1;
                (Self::cold_read(&bottom.join("bottom"))?.1, tt)
            };
            if i > 0 {
                via_bottom.push(secs(tb));
                via_top.push(secs(tt));
            }
        }
        self.umount(&top)?;
        self.umount(&bottom)?;
        for name in chain.iter().rev() {
            self.rm(name)?;
        }
        self.row(
            "deep_chain",
            "read_via_bottom",
            &param,
            Unit::Seconds,
            via_bottom,
        );
        self.row("deep_chain", "read_via_top", &param, Unit::Seconds, via_top);
        Ok(())
    }

    fn remove(&mut self) -> R<()> {
        let image = self.image()?;
        let w = self.sizes.remove_write;
        let param = format!("wrote {}, watched {} s", mib(w), SPACE_DEADLINE.as_secs());
        let (mut rm, mut back_after, mut returned) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..self.total_runs() {
            let name = self.fresh("remove");
            self.pool().snapshot(&image, &name, None).map_err(e2s)?;
            let target = self.mount(name.as_str(), false)?;
            Self::write_and_sync(&target.join("written"), &mut self.rng, w)?;
            self.umount(&target)?;
            let before = self.settled_used()?;
            let t = Instant::now();
            self.rm(name.as_str())?;
            let took = t.elapsed();
            // When has (nearly) all of it come back? btrfs frees in a background cleaner.
            let want = w.0 * 9 / 10;
            let deadline = Instant::now() + SPACE_DEADLINE;
            let back = loop {
                nix::unistd::sync();
                let used = self.pool().status().map_err(e2s)?.space.used.0;
                if before.saturating_sub(used) >= want {
                    break Some(t.elapsed());
                }
                if Instant::now() > deadline {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            let after = self.settled_used()?;
            if i > 0 {
                rm.push(secs(took));
                // Not back within the deadline: recorded as infinity (JSON null), shown as
                // "timeout".
                back_after.push(back.map_or(f64::INFINITY, secs));
                returned.push(before.saturating_sub(after) as f64);
            }
        }
        self.row("remove", "rm", &param, Unit::Seconds, rm);
        self.row(
            "remove",
            "space_back_after",
            &param,
            Unit::Seconds,
            back_after,
        );
        self.row("remove", "space_returned", &param, Unit::Bytes, returned);
        Ok(())
    }

    /// Unmounts and destroys the pool. Errors are returned (a leaked pool is a failure).
    fn finish(mut self) -> R<()> {
        self.teardown()
    }

    /// Unmounts, destroys the pool (tearing down what is on disk if the store or driver is
    /// confused), then removes the variant's directory. Idempotent: `finish`, then `Drop`.
    fn teardown(&mut self) -> R<()> {
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

impl Drop for Bench<'_> {
    // A failed workload's early return or a panic must not leave loop devices and mounts.
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_are_usage_errors() {
        let e = variants(Some(&["nope".to_string()])).unwrap_err();
        assert!(e.to_string().contains("unknown driver \"nope\""), "{e}");
        assert!(e.to_string().contains("overlay-ext4"), "{e}");
        let e = workloads(Some(&["nope".to_string()])).unwrap_err();
        assert!(e.to_string().contains("deep_chain"), "{e}");
    }

    #[test]
    fn workloads_keep_the_canonical_order() {
        let w = workloads(Some(&["remove".to_string(), "import".to_string()])).unwrap();
        assert_eq!(w, vec!["import", "remove"]);
    }

    #[test]
    fn overlay_runs_on_ext4_and_xfs() {
        let (all, _) = variants(None).unwrap();
        let skipped_or_run = |l: &str| {
            all.iter().any(|v| v.label == l)
                || variants(None).unwrap().1.iter().any(|s| s.driver == l)
        };
        assert!(skipped_or_run("overlay-ext4") && skipped_or_run("overlay-xfs"));
    }

    #[test]
    fn every_scale_fits_its_pool() {
        for s in [Scale::Full, Scale::Quick, Scale::Smoke] {
            let z = s.sizes();
            assert!(z.big_parent > z.small_parent);
            assert!(z.scale_window * 2 <= z.scale_layers);
            assert!(z.cow_file.0 * 2 < z.pool.0);
        }
    }
}
