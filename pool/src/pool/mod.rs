//! The pool manager: one pool's config, store, lock and driver, and every layer operation.
//!
//! Every mutating operation follows one protocol:
//!   1. record the intent (the layer row enters an in-flight state) in one transaction,
//!   2. do the driver/kernel work (idempotent),
//!   3. record completion in one transaction.
//!
//! The next writer to open the pool finishes or undoes whatever a dead process left in flight
//! ([`Pool::open`] calls `reconcile`): creates are rolled back, commits and removes rolled forward.
//!
//! This file holds the handle (open, accessors, lookups, the driver context); each concern has a
//! file of its own: `layers` (create, snapshot, commit, remove, diff), `mounts`, `queries`,
//! `space` (autoextend, min-free), `backing` (init, deactivate, destroy), `recovery`
//! (reconcile, check), `spool` and the public `types`; `volumes`, `containers` (create, commit,
//! rm), `container_mounts` (mount, umount and their recovery) and `history` (with comments).

mod activate;
mod backing;
mod container_mounts;
mod containers;
mod export;
mod history;
mod layers;
mod mounts;
mod queries;
mod recovery;
mod snapshots;
mod space;
mod spool;
mod types;
mod volumes;

pub use activate::{activate_all, activate_one, all_active, Activation, ActivationState};
pub use backing::{force_destroy, teardown_dir};
pub use snapshots::ExportPolicy;
pub use spool::Spooled;
pub(crate) use types::Planned;
pub use types::{
    BackingSpec, CheckReport, ContainerInfo, ContainerMounted, ContainerRemoved, ContainerSpec,
    ContainerState, CreateOutcome, HistoryEntry, InitSpec, LayerInfo, MountRequest, PoolStatus,
    RemoveOutcome, Source, VolumeInfo, VolumeSpec,
};

use crate::config::{Backing, PoolConfig};
use crate::error::{PoolError, Result};
use crate::layer::{LayerRecord, LayerState, PoolName};
use crate::lock::PoolLock;
use crate::store::Store;
use blkdrv_drivers::sys::loopdev;
use blkdrv_drivers::{registry, Driver, DriverFactory, LayerChain, ObjectId, PoolContext};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a writer waits for another writer before reporting the pool busy
/// (`BLKDRV_LOCK_TIMEOUT` seconds overrides it).
fn lock_wait() -> Duration {
    std::env::var("BLKDRV_LOCK_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(30))
}

/// A directory holding pools (`--root`, default /var/lib/blkdrv).
#[derive(Debug, Clone)]
pub struct Root {
    pub path: PathBuf,
}

impl Root {
    pub fn new(path: impl Into<PathBuf>) -> Root {
        Root { path: path.into() }
    }

    pub fn pool_dir(&self, name: &PoolName) -> PathBuf {
        self.path.join("pools").join(name.as_str())
    }

    /// Names of the pools under this root (directories that hold a store).
    pub fn pools(&self) -> Result<Vec<PoolName>> {
        let dir = self.path.join("pools");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(PoolError::io("list pools", &dir, e)),
        };
        let mut out: Vec<PoolName> = entries
            .flatten()
            .filter(|e| e.path().join(STORE).is_file())
            .filter_map(|e| PoolName::new(&e.file_name().to_string_lossy()).ok())
            .collect();
        out.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        Ok(out)
    }
}

const STORE: &str = "store.db";
const LOCK: &str = "lock";
const ACTIVATE_LOCK: &str = "activate.lock";

/// Whether this handle may change the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Takes the writer lock and reconciles unfinished operations.
    Write,
    /// No lock; sees the last committed state.
    Read,
}

/// An open pool.
pub struct Pool {
    name: PoolName,
    dir: PathBuf,
    config: PoolConfig,
    store: Store,
    driver: Box<dyn Driver>,
    // Held for the lifetime of a writer handle.
    _lock: Option<PoolLock>,
    recovered: Vec<String>,
    /// Things a writer did on its own (autoextend) that the user should hear about.
    notices: Vec<String>,
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

pub(crate) fn factory(name: &str) -> Result<&'static dyn DriverFactory> {
    registry::get(name).ok_or_else(|| {
        PoolError::Invalid(format!(
            "unknown driver {name:?} (available: {})",
            registry::names().join(", ")
        ))
    })
}

/// Creates `p` and its missing parents, each 0700: state, scratch and mount directories that
/// blkdrv makes are root's alone, as containerd's and moby's state dirs are.
fn mkdir(p: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .map_err(|e| PoolError::user_path("create directory", p, e))
}

impl Pool {
    /// Opens an existing pool, activating its backing if needed (after a reboot, loop devices
    /// and mounts are gone). A writer also finishes unfinished operations.
    pub fn open(root: &Root, name: &PoolName, access: Access) -> Result<Pool> {
        let dir = root.pool_dir(name);
        let store_path = dir.join(STORE);
        if !store_path.is_file() {
            if dir.is_dir() {
                return Err(PoolError::StoreMissing {
                    pool: name.to_string(),
                    path: store_path,
                });
            }
            return Err(PoolError::PoolNotFound {
                pool: name.to_string(),
                root: root.path.clone(),
            });
        }
        let lock = match access {
            Access::Write => Some(PoolLock::acquire(
                name.as_str(),
                &dir.join(LOCK),
                lock_wait(),
            )?),
            Access::Read => None,
        };
        let store = Store::open(&store_path)?;
        let config: PoolConfig = match store.meta("config")? {
            Some(j) => serde_json::from_str(&j).map_err(|e| {
                PoolError::Invalid(format!(
                    "pool {name}: config in {} is unreadable: {e}",
                    store_path.display()
                ))
            })?,
            None => {
                return Err(PoolError::Invalid(format!(
                    "pool {name} was never completely initialized (interrupted `pool init`); remove it with `blkdrv pool destroy --force {name}`"
                )))
            }
        };
        let driver = {
            // Activation mounts things; two processes doing it at once would stack mounts.
            let _act = PoolLock::acquire(name.as_str(), &dir.join(ACTIVATE_LOCK), lock_wait())?;
            let f = factory(&config.driver)?;
            let generation = store.meta("generation")?.and_then(|g| g.parse().ok());
            let (ctx, _held) = context(&dir, &config, generation)?;
            f.open(&ctx, &config.identity)
                .map_err(|e| PoolError::backing(name, e))?
        };
        let mut pool = Pool {
            name: name.clone(),
            dir,
            config,
            store,
            driver,
            _lock: lock,
            recovered: Vec::new(),
            notices: Vec::new(),
        };
        if access == Access::Write {
            pool.recovered = pool.reconcile()?;
            pool.record_generation()?;
            pool.autoextend()?;
        }
        Ok(pool)
    }

    pub fn name(&self) -> &PoolName {
        &self.name
    }

    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    pub fn driver_name(&self) -> &'static str {
        self.driver.name()
    }

    /// Records the driver's generation after a completed operation (see `Backing::generation`).
    fn record_generation(&mut self) -> Result<()> {
        if let Some(g) = self
            .driver
            .generation()
            .map_err(|e| PoolError::backing(&self.name, e))?
        {
            self.store.tx("record generation", |t| {
                t.set_meta("generation", &g.to_string())
            })?;
        }
        Ok(())
    }

    /// What `open` finished or undid.
    pub fn recovered(&self) -> &[String] {
        &self.recovered
    }

    /// What this handle did on its own since the last call, such as growing the loopback file.
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    /// Adds a line for [`Pool::take_notices`] (`pool init --driver auto`'s pick).
    pub(crate) fn push_notice(&mut self, notice: String) {
        self.notices.push(notice);
    }

    fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    // ----- lookups -----

    fn records(&self) -> Result<HashMap<ObjectId, LayerRecord>> {
        Ok(self
            .store
            .layers()?
            .into_iter()
            .map(|l| (l.id, l))
            .collect())
    }

    fn lookup(&self, name: &str) -> Result<LayerRecord> {
        let Some(id) = self.store.resolve(name)? else {
            return Err(self.not_a_layer(name));
        };
        self.store
            .layer(id)?
            .ok_or_else(|| PoolError::LayerNotFound(name.to_string()))
    }

    /// The error for a name no layer has: a volume's or container's name gets told which
    /// commands reach it (their objects are no user layers).
    fn not_a_layer(&self, name: &str) -> PoolError {
        let what = if self.store.volume(name).ok().flatten().is_some() {
            Some("a volume: use `blkdrv volume inspect|rm`")
        } else if self.store.container(name).ok().flatten().is_some() {
            Some("a container: use `blkdrv container inspect|mount|commit|rm`")
        } else {
            None
        };
        match what {
            Some(w) => PoolError::Refused {
                op: "layer",
                layer: name.to_string(),
                reason: format!("{name:?} is not a layer but {w}"),
            },
            None => PoolError::LayerNotFound(name.to_string()),
        }
    }

    fn chain_of(&self, rec: &LayerRecord, all: &HashMap<ObjectId, LayerRecord>) -> LayerChain {
        let mut ancestors = Vec::new();
        let mut cur = rec.parent;
        while let Some(p) = cur {
            ancestors.push(p);
            cur = all.get(&p).and_then(|r| r.parent);
        }
        LayerChain {
            id: rec.id,
            active: rec.state != LayerState::Committed,
            ancestors,
        }
    }

    fn chain(&self, rec: &LayerRecord) -> Result<LayerChain> {
        Ok(self.chain_of(rec, &self.records()?))
    }

    fn display_name(names: &BTreeMap<ObjectId, Vec<String>>, id: ObjectId) -> String {
        names
            .get(&id)
            .and_then(|n| n.first().cloned())
            .unwrap_or_else(|| format!("<layer {id}>"))
    }

    fn names_by_layer(&self) -> Result<BTreeMap<ObjectId, Vec<String>>> {
        let mut m: BTreeMap<ObjectId, Vec<String>> = BTreeMap::new();
        for (n, id) in self.store.names()? {
            m.entry(id).or_default().push(n);
        }
        Ok(m)
    }

    /// Where the pool lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Builds the driver context; for loopback pools attaches the files (handles must be held until
/// the driver has mounted or assembled the devices).
fn context(
    dir: &Path,
    config: &PoolConfig,
    generation: Option<u64>,
) -> Result<(PoolContext, Vec<loopdev::AttachedLoop>)> {
    let mut held = Vec::new();
    let mut backing_files = BTreeMap::new();
    let devices = match &config.backing {
        Backing::Loopback { files } => {
            for lf in files {
                let file = dir.join(&lf.file);
                let a = loopdev::attach(&file).map_err(|e| PoolError::backing(&config.name, e))?;
                // As the kernel names a loop device's backing file: the absolute, resolved path.
                backing_files.insert(a.path.clone(), file.canonicalize().unwrap_or(file));
                held.push(a);
            }
            held.iter().map(|a| a.path.clone()).collect()
        }
        Backing::Devices { paths } => paths.clone(),
        Backing::Existing {} => Vec::new(),
    };
    let state_dir = dir.join("driver");
    mkdir(&state_dir)?;
    Ok((
        PoolContext {
            pool: config.name.clone(),
            state_dir,
            devices,
            backing_files,
            options: config.options.clone(),
            generation,
        },
        held,
    ))
}
