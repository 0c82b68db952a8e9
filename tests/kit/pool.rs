//! Library-level fixtures: test pools that clean up after themselves, even when a case fails or
//! panics, and helpers to fill, derive and mount layers in them.

use blkdrv_drivers::Bytes;
use blkdrv_pool::config::AutoExtend;
use blkdrv_pool::pool::teardown_dir;
use blkdrv_pool::{Access, BackingSpec, InitSpec, LayerName, Pool, PoolName, Root, Source};
use std::path::{Path, PathBuf};

pub use crate::TestResult;

/// Where every test root lives (scripts/test.sh checks it for leftovers after the run).
pub fn test_base() -> PathBuf {
    PathBuf::from("/tmp/blkdrv-conformance")
}

/// This process's directory under [`test_base`]: its pools, and the only place its leak check
/// looks, so that test runs of other checkouts on the same host are not taken for leaks.
pub fn run_dir() -> PathBuf {
    test_base().join(format!("run-{}", std::process::id()))
}

/// A fresh pool of one driver on a sparse loopback file, in its own root directory.
/// Dropping it destroys the pool: unmounts, detaches loop devices and deletes the files.
pub struct TestPool {
    pub root: Root,
    pub name: PoolName,
    _dir: tempfile::TempDir,
    pub scratch: PathBuf,
}

/// How a [`TestPool`] is made; `Default` is the suite's usual pool.
#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    /// Loopback file size (ignored on raw devices).
    pub size: Bytes,
    /// Grow the loopback file when unallocated space runs low (up to 4x).
    pub autoextend: bool,
    /// The pool's min-free policy (`--min-free`).
    pub min_free_pct: u8,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            size: Bytes::mib(512),
            autoextend: true,
            min_free_pct: 0,
        }
    }
}

impl TestPool {
    pub fn new(driver: &str) -> Result<TestPool, String> {
        TestPool::with_options(driver, PoolOptions::default())
    }

    pub fn with_options(driver: &str, opts: PoolOptions) -> Result<TestPool, String> {
        std::fs::create_dir_all(run_dir()).map_err(|e| e.to_string())?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("{driver}-"))
            .tempdir_in(run_dir())
            .map_err(|e| e.to_string())?;
        let root = Root::new(dir.path().join("root"));
        let name = PoolName::new("t").map_err(|e| e.to_string())?;
        let scratch = dir.path().join("scratch");
        std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
        let tp = TestPool {
            root,
            name,
            _dir: dir,
            scratch,
        };
        // Raw block devices and extra driver options come from the environment (the VM
        // harness: see crate::config).
        let cfg = crate::config::get();
        let devices = cfg.devices.clone();
        let options = cfg.options.iter().cloned().collect();
        let (backing, autoextend) = if devices.is_empty() {
            (
                BackingSpec::Loopback { size: opts.size },
                opts.autoextend
                    .then(|| AutoExtend::for_size(opts.size, None)),
            )
        } else {
            (BackingSpec::Devices(devices), None)
        };
        Pool::init(
            &tp.root,
            InitSpec {
                name: tp.name.clone(),
                driver: driver.to_string(),
                backing,
                options,
                min_free_pct: opts.min_free_pct,
                force: true,
                autoextend,
            },
        )
        .map_err(|e| format!("pool init ({driver}): {e}"))?;
        Ok(tp)
    }

    pub fn open(&self) -> Result<Pool, String> {
        Pool::open(&self.root, &self.name, Access::Write).map_err(|e| format!("open pool: {e}"))
    }

    /// The test's own directory (pool root and scratch space): leak checks look here.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// A directory under the test's scratch space (created).
    pub fn path(&self, name: &str) -> PathBuf {
        let p = self.scratch.join(name);
        std::fs::create_dir_all(&p).expect("scratch dir");
        p
    }
}

impl Drop for TestPool {
    fn drop(&mut self) {
        if let Ok(p) = Pool::open(&self.root, &self.name, Access::Write) {
            if let Err(e) = p.destroy(true) {
                eprintln!("test cleanup: destroy failed: {e}");
            }
        }
        // Whatever destroy could not do (a failed test may have left mounts in scratch).
        if let Err(e) = teardown_dir(self._dir.path()) {
            eprintln!("test cleanup: {e}");
        }
    }
}

/// Mounts `name` at a fresh target for the duration of `f`, unmounting even if `f` fails.
pub fn with_mount<T>(
    tp: &TestPool,
    pool: &mut Pool,
    name: &str,
    ro: bool,
    f: impl FnOnce(&Path) -> Result<T, String>,
) -> Result<T, String> {
    let target = tempfile::tempdir_in(&tp.scratch).map_err(|e| e.to_string())?;
    pool.mount(name, target.path(), ro)
        .map_err(|e| format!("mount {name}: {e}"))?;
    let out = f(target.path());
    let um = pool.umount(name, Some(target.path()));
    let out = out?;
    um.map_err(|e| format!("umount {name}: {e}"))?;
    Ok(out)
}

/// Imports a directory built by `fill` as image layer `name` on `parent`.
pub fn import_dir(
    tp: &TestPool,
    pool: &mut Pool,
    name: &str,
    parent: Option<&str>,
    fill: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<blkdrv_pool::CreateOutcome, String> {
    let src = tempfile::tempdir_in(&tp.scratch).map_err(|e| e.to_string())?;
    fill(src.path()).map_err(|e| format!("fill {name}: {e}"))?;
    pool.create(
        &LayerName::new(name).map_err(|e| e.to_string())?,
        parent,
        Source::Dir(src.path()),
        None,
        &mut |_| {},
    )
    .map_err(|e| format!("create {name}: {e}"))
}

/// Snapshot `parent` as `name`, let `edit` change it through a read-write mount, commit it.
pub fn derive(
    tp: &TestPool,
    pool: &mut Pool,
    parent: &str,
    name: &str,
    edit: impl FnOnce(&Path) -> std::io::Result<()>,
) -> Result<(), String> {
    pool.snapshot(
        parent,
        &LayerName::new(name).map_err(|e| e.to_string())?,
        None,
    )
    .map_err(|e| format!("snapshot {name}: {e}"))?;
    with_mount(tp, pool, name, false, |p| {
        edit(p).map_err(|e| format!("edit {name}: {e}"))
    })?;
    pool.commit(name)
        .map_err(|e| format!("commit {name}: {e}"))?;
    Ok(())
}

pub fn read(p: &Path) -> Result<String, String> {
    std::fs::read_to_string(p).map_err(|e| format!("read {}: {e}", p.display()))
}

/// Mounts and loop devices this run's pools left behind; removes the run's directory when
/// nothing is left in it.
pub fn leaks() -> Vec<String> {
    let left = crate::leaks::under(&run_dir());
    if left.is_empty() {
        let _ = std::fs::remove_dir(run_dir());
    }
    left
}

/// Whether pools of this run are on loopback files (not the VM's raw disks), so that they can
/// grow, be filled in seconds, and have files to look at.
pub fn on_loopback() -> bool {
    crate::config::get().devices.is_empty()
}
