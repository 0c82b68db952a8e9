//! The pool manager: one pool's config, store, lock and driver, and every layer operation.
//!
//! Every mutating operation follows one protocol:
//!   1. record the intent (the layer row enters an in-flight state) in one transaction,
//!   2. do the driver/kernel work (idempotent),
//!   3. record completion in one transaction.
//!
//! The next writer to open the pool finishes or undoes whatever a dead process left in flight
//! ([`Pool::open`] calls `reconcile`): creates are rolled back, commits and removes rolled forward.

use crate::config::{AutoExtend, Backing, LoopFile, PoolConfig};
use crate::crash;
use crate::error::{PoolError, Result};
use crate::layer::{LayerKind, LayerName, LayerRecord, LayerState, PoolName};
use crate::lock::PoolLock;
use crate::store::{content_key, MountRecord, Store};
use blkdrv_drivers::sys::mount::{MountNs, NsTables, NsView};
use blkdrv_drivers::sys::{blockdev, host, loopdev, mount};
use blkdrv_drivers::Identity;
use blkdrv_drivers::{
    registry, BackingPlan, BackingRequest, Bytes, Capabilities, Driver, DriverFactory,
    DriverOptions, LayerChain, MountFlags, MountMode, ObjectId, PoolContext, Space, Usage,
};
use serde::Serialize;
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

/// What to back a new pool with.
#[derive(Debug, Clone)]
pub enum BackingSpec {
    Loopback {
        size: Bytes,
    },
    Devices(Vec<PathBuf>),
    /// Existing storage the driver options name (`--thinpool VG/LV`).
    Existing,
}

/// Parameters of `pool init`.
#[derive(Debug, Clone)]
pub struct InitSpec {
    pub name: PoolName,
    pub driver: String,
    pub backing: BackingSpec,
    pub options: DriverOptions,
    pub min_free_pct: u8,
    /// Overwrite devices that carry a signature.
    pub force: bool,
    /// Growth policy for loopback pools (ignored for devices).
    pub autoextend: Option<AutoExtend>,
}

/// The parts of a `pool init` that [`Pool::provision`] needs besides the driver's plan.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub name: PoolName,
    pub min_free_pct: u8,
    pub force: bool,
    /// Growth policy, for a loopback plan.
    pub autoextend: Option<AutoExtend>,
}

/// Whether this handle may change the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Takes the writer lock and reconciles unfinished operations.
    Write,
    /// No lock; sees the last committed state.
    Read,
}

/// A layer's content, spooled to a temp file and validated (every entry parsed, digest
/// computed) before any layer or lock exists: bad input changes nothing.
pub struct Spooled {
    file: tempfile::NamedTempFile,
    digested: layertar::Digested,
    /// What the content was validated against, and is applied with.
    opts: layertar::ApplyOptions,
}

impl Spooled {
    /// Spools `source` into a temp file in `dir`. Device nodes are refused unless
    /// `allow_devices` (`layer create --allow-devices`).
    pub fn new(dir: &Path, source: Source<'_>, allow_devices: bool) -> Result<Spooled> {
        let opts = layertar::ApplyOptions { allow_devices };
        let (file, digested) = match source {
            Source::Tar(r) => layertar::spool_tar_with(r, dir, &opts)?,
            Source::Dir(d) => {
                check_import_dir(d)?;
                let mut t = tempfile::NamedTempFile::new_in(dir)
                    .map_err(|e| PoolError::io("create temp file", dir, e))?;
                layertar::tar_dir(d, std::io::BufWriter::new(t.as_file_mut()))?;
                // By descriptor: without the lock, another writer's recovery may sweep tmp/.
                let f = t
                    .as_file()
                    .try_clone()
                    .and_then(|mut f| std::io::Seek::rewind(&mut f).map(|()| f))
                    .map_err(|e| PoolError::io("reopen", t.path(), e))?;
                layertar::spool_tar_with(f, dir, &opts)?
            }
        };
        Ok(Spooled {
            file,
            digested,
            opts,
        })
    }

    /// Spools for pool `name` under `root`, without its lock (`layer create` does this first).
    pub fn for_pool(
        root: &Root,
        name: &PoolName,
        source: Source<'_>,
        allow_devices: bool,
    ) -> Result<Spooled> {
        let dir = root.pool_dir(name);
        if !dir.join(STORE).is_file() {
            return Err(PoolError::PoolNotFound {
                pool: name.to_string(),
                root: root.path.clone(),
            });
        }
        let tmp = dir.join("tmp");
        mkdir(&tmp)?;
        Spooled::new(&tmp, source, allow_devices)
    }

    pub fn digest(&self) -> &str {
        &self.digested.digest
    }
}

/// A directory to import must be a real tree: not missing, not a file, not a kernel pseudo
/// filesystem (procfs, sysfs ...), whose files change size while read.
fn check_import_dir(d: &Path) -> Result<()> {
    let md = std::fs::metadata(d).map_err(|e| PoolError::user_path("read directory", d, e))?;
    if !md.is_dir() {
        return Err(PoolError::Invalid(format!(
            "{} is not a directory",
            d.display()
        )));
    }
    if host::on_pseudo_filesystem(d).map_err(|e| PoolError::io("statfs", d, e))? {
        return Err(PoolError::Invalid(format!(
            "{} is on a kernel pseudo filesystem (procfs, sysfs ...), not a tree to import",
            d.display()
        )));
    }
    Ok(())
}

/// How `layer mount` mounts (see [`Pool::mount_with`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountRequest {
    pub read_only: bool,
    /// Let device nodes in the layer be opened through the mount (no `nodev`).
    pub dev: bool,
}

/// Where a layer's content comes from on `layer create`.
pub enum Source<'a> {
    /// A tar stream (plain or gzip) from a file or stdin.
    Tar(Box<dyn std::io::Read + 'a>),
    /// A directory tree, archived deterministically.
    Dir(&'a Path),
}

#[derive(Debug, Clone, Serialize)]
pub struct CreateOutcome {
    pub layer: LayerInfo,
    /// True when identical content on the same parent existed: the name now points at it.
    pub reused: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RemoveOutcome {
    /// The layer had other names; only this name was dropped.
    Untagged,
    Removed,
    /// The driver found the object busy; the layer stays `removing` and the next writer retries.
    Deferred,
}

/// A layer as users see it.
#[derive(Debug, Clone, Serialize)]
pub struct LayerInfo {
    pub name: String,
    pub names: Vec<String>,
    pub id: u32,
    pub parent: Option<String>,
    pub parent_id: Option<u32>,
    pub kind: LayerKind,
    pub state: LayerState,
    pub digest: Option<String>,
    pub created: i64,
    /// Bytes exclusive to this layer (recorded at commit; measured live for active layers).
    pub size_bytes: Option<u64>,
    pub inodes: Option<u64>,
    /// Bytes the layer references, shared ones included (drivers that know it).
    pub referenced_bytes: Option<u64>,
    /// Size limit set at create/snapshot.
    pub limit_bytes: Option<u64>,
    pub depth: usize,
    pub mounts: Vec<MountRecord>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    pub name: String,
    pub driver: String,
    pub dir: PathBuf,
    pub backing: Backing,
    pub options: DriverOptions,
    pub identity: Identity,
    pub capabilities: Capabilities,
    pub space: Space,
    pub min_free_pct: u8,
    pub layers: usize,
    pub committed: usize,
    pub active: usize,
    pub in_flight: usize,
    pub mounts: Vec<MountRecord>,
}

/// Result of `pool check`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    /// Unfinished operations finished or undone when the pool was opened.
    pub recovered: Vec<String>,
    /// Objects on disk that the store does not know.
    pub orphans: Vec<u32>,
    /// Layers in the store whose object is missing on disk.
    pub missing: Vec<u32>,
    /// Mount records whose target is no longer mounted (in the namespace that made them).
    pub stale_mounts: Vec<MountRecord>,
    /// Mount records in a mount namespace this process cannot look into (no process is in it,
    /// something holds it open): kept, since they may still be mounted.
    pub unverified_mounts: Vec<MountRecord>,
    /// What `--repair` changed.
    pub repaired: Vec<String>,
}

impl CheckReport {
    pub fn is_clean(&self) -> bool {
        self.orphans.is_empty() && self.missing.is_empty() && self.stale_mounts.is_empty()
    }
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
    /// `blkdrv pool init`: provisions the backing, formats it for the driver and records the
    /// pool. On failure everything made so far is undone.
    pub fn init(root: &Root, spec: InitSpec) -> Result<Pool> {
        let f = factory(&spec.driver)?;
        f.check_host()
            .map_err(|e| PoolError::backing(&spec.name, e))?;
        let options = f
            .validate_options(&spec.options)
            .map_err(|e| PoolError::Invalid(e.to_string()))?;
        let plan = match &spec.backing {
            BackingSpec::Loopback { size } => {
                let request = BackingRequest {
                    size: Some(*size),
                    default_size: *size,
                    ..BackingRequest::default()
                };
                f.plan(&options, &request)
                    .map_err(|e| PoolError::Invalid(e.to_string()))?
            }
            BackingSpec::Devices(paths) => BackingPlan::Devices(paths.clone()),
            BackingSpec::Existing => BackingPlan::Existing,
        };
        let planned = Planned {
            name: spec.name.clone(),
            min_free_pct: spec.min_free_pct,
            force: spec.force,
            autoextend: spec.autoextend,
        };
        Pool::provision(root, &planned, f, options, plan)
    }

    /// The second half of `init`, once the driver has said what the request means: checks the
    /// backing, makes it, formats it and records the pool.
    pub(crate) fn provision(
        root: &Root,
        spec: &Planned,
        f: &'static dyn DriverFactory,
        options: DriverOptions,
        plan: BackingPlan,
    ) -> Result<Pool> {
        if spec.min_free_pct > 99 {
            return Err(PoolError::Invalid(
                "--min-free must be a percentage from 0 to 99".into(),
            ));
        }
        let dir = root.pool_dir(&spec.name);
        if dir.exists() {
            return Err(PoolError::PoolExists {
                pool: spec.name.to_string(),
                root: root.path.clone(),
            });
        }
        // Check devices before touching anything.
        let backing = match &plan {
            BackingPlan::Loopback {
                size,
                min_size,
                files,
            } => {
                if size < min_size {
                    return Err(PoolError::Invalid(format!(
                        "--size {size} is too small: driver {} needs at least {min_size} with these options",
                        f.name()
                    )));
                }
                Backing::Loopback {
                    files: files
                        .iter()
                        .map(|lf| LoopFile {
                            file: PathBuf::from(format!("backing/{}.img", lf.stem)),
                            size: lf.size,
                        })
                        .collect(),
                }
            }
            BackingPlan::Devices(paths) => {
                if paths.is_empty() {
                    return Err(PoolError::Invalid("no --device given".into()));
                }
                for p in paths {
                    blockdev::check_device_free(p, spec.force)
                        .map_err(|e| PoolError::Invalid(e.to_string()))?;
                }
                Backing::Devices {
                    paths: paths.clone(),
                }
            }
            BackingPlan::Existing => Backing::Existing {},
        };
        mkdir(&dir.join("tmp"))?;
        let result = (|| -> Result<Pool> {
            let mut store = Store::create(&dir.join(STORE))?;
            let lock = PoolLock::acquire(spec.name.as_str(), &dir.join(LOCK), lock_wait())?;
            if let Backing::Loopback { files } = &backing {
                mkdir(&dir.join("backing"))?;
                for lf in files {
                    let p = dir.join(&lf.file);
                    loopdev::create_sparse_file(&p, lf.size)
                        .map_err(|e| PoolError::backing(&spec.name, e))?;
                }
            }
            let mut config = PoolConfig {
                name: spec.name.to_string(),
                driver: f.name().to_string(),
                backing: backing.clone(),
                options: options.clone(),
                identity: Default::default(),
                min_free_pct: spec.min_free_pct,
                created: now(),
                autoextend: match backing {
                    Backing::Loopback { .. } => spec.autoextend,
                    Backing::Devices { .. } | Backing::Existing {} => None,
                },
            };
            let (ctx, _held) = context(&dir, &config, None)?;
            config.identity = f
                .format(&ctx)
                .map_err(|e| PoolError::backing(&spec.name, e))?;
            let json = serde_json::to_string(&config).expect("config serializes");
            store.tx("record pool config", |t| t.set_meta("config", &json))?;
            let driver = f
                .open(&ctx, &config.identity)
                .map_err(|e| PoolError::backing(&spec.name, e))?;
            let mut pool = Pool {
                name: spec.name.clone(),
                dir: dir.clone(),
                config,
                store,
                driver,
                _lock: Some(lock),
                recovered: Vec::new(),
                notices: Vec::new(),
            };
            pool.record_generation()?;
            Ok(pool)
        })();
        result.map_err(|e| {
            let rollback = teardown_dir(&dir);
            e.with_rollback(rollback)
        })
    }

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

    /// Grows a loopback pool's file when the driver's unallocated space runs low (see
    /// [`AutoExtend`]). The file is grown first and the config last, so a crash in between leaves
    /// a larger file than recorded, which the next check simply uses.
    fn autoextend(&mut self) -> Result<()> {
        let (Some(ax), Backing::Loopback { files }) =
            (self.config.autoextend, &self.config.backing)
        else {
            // Not ours to size: the driver may have a policy of its own (LVM's profile).
            if let Some(msg) = self
                .driver
                .autoextend()
                .map_err(|e| PoolError::backing(&self.name, e))?
            {
                tracing::info!("{msg}");
                self.notices.push(msg);
            }
            return Ok(());
        };
        let Some(unallocated) = self
            .driver
            .space()
            .map_err(|e| PoolError::backing(&self.name, e))?
            .unallocated
        else {
            return Ok(());
        };
        let Some(data) = files.first() else {
            return Ok(());
        };
        let path = self.dir.join(&data.file);
        let current = Bytes(
            std::fs::metadata(&path)
                .map_err(|e| PoolError::io("stat", &path, e))?
                .len(),
        );
        let Some(next) = ax.next_size(current, unallocated) else {
            if u128::from(unallocated.0) * 100
                < u128::from(current.0) * u128::from(ax.threshold_pct)
            {
                tracing::warn!(pool = %self.name, "low on unallocated space ({unallocated}) and at the autoextend ceiling {}", ax.max);
            }
            return Ok(());
        };
        // The file and the loop devices on it, set to one length.
        let resize = |len: Bytes, op: &'static str| -> Result<()> {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_len(len.0))
                .map_err(|e| PoolError::io(op, &path, e))?;
            let canon = path
                .canonicalize()
                .map_err(|e| PoolError::io("resolve", &path, e))?;
            for dev in loopdev::find_by_backing_file(&canon)
                .map_err(|e| PoolError::backing(&self.name, e))?
            {
                loopdev::refresh_capacity(&dev).map_err(|e| PoolError::backing(&self.name, e))?;
            }
            Ok(())
        };
        resize(next, "grow loopback file")?;
        if let Err(e) = self.driver.grow() {
            // The filesystem did not take up the longer device (ext4's online resize needs
            // CAP_SYS_RESOURCE, which containers often lack). Shrink the file back, or every
            // later check would grow it again, and carry on: this command did not ask for
            // growth, and the min-free policy still refuses new layers when space is short.
            let msg = match resize(current, "shrink loopback file back") {
                Ok(()) => format!(
                    "could not grow pool {} beyond {current}: {}",
                    self.name,
                    PoolError::backing(&self.name, e)
                ),
                Err(r) => format!(
                    "could not grow pool {}: {}; shrinking its file back to {current} failed too: {r}",
                    self.name,
                    PoolError::backing(&self.name, e)
                ),
            };
            // The CLI prints notices itself (as for growth below).
            tracing::info!("{msg}");
            self.notices.push(msg);
            return Ok(());
        }
        let mut config = self.config.clone();
        if let Backing::Loopback { files } = &mut config.backing {
            files[0].size = next;
        }
        let json = serde_json::to_string(&config).expect("config serializes");
        self.store
            .tx("record grown size", |t| t.set_meta("config", &json))?;
        self.config = config;
        let msg = format!(
            "grew pool {} from {current} to {next}: unallocated space was {unallocated}",
            self.name
        );
        // The CLI prints notices itself; the log has it for library users.
        tracing::info!("{msg}");
        self.notices.push(msg);
        Ok(())
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
        let id = self
            .store
            .resolve(name)?
            .ok_or_else(|| PoolError::LayerNotFound(name.to_string()))?;
        self.store
            .layer(id)?
            .ok_or_else(|| PoolError::LayerNotFound(name.to_string()))
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

    /// Live usage of the active layers among `recs` (their size changes, so it is measured now
    /// rather than recorded), in one driver call; a failure shows as an unknown size.
    fn live_usage(
        &self,
        recs: &[&LayerRecord],
        all: &HashMap<ObjectId, LayerRecord>,
    ) -> HashMap<ObjectId, Usage> {
        let chains: Vec<LayerChain> = recs
            .iter()
            .filter(|r| r.size.is_none() && r.state == LayerState::Active)
            .map(|r| self.chain_of(r, all))
            .collect();
        let usage = self.driver.usage_many(&chains);
        chains
            .iter()
            .zip(usage)
            .filter_map(|(c, u)| u.ok().map(|u| (c.id, u)))
            .collect()
    }

    fn info_of(
        &self,
        rec: &LayerRecord,
        all: &HashMap<ObjectId, LayerRecord>,
        names: &BTreeMap<ObjectId, Vec<String>>,
        mounts: &[MountRecord],
        live: &HashMap<ObjectId, Usage>,
    ) -> LayerInfo {
        let chain = self.chain_of(rec, all);
        let size = match rec.size {
            Some(s) => Some(s),
            None => live.get(&rec.id).copied(),
        };
        let name = names
            .get(&rec.id)
            .and_then(|n| n.first().cloned())
            .or_else(|| rec.pending_name.clone())
            .unwrap_or_else(|| format!("<layer {}>", rec.id));
        LayerInfo {
            name,
            names: names.get(&rec.id).cloned().unwrap_or_default(),
            id: rec.id.get(),
            parent: rec.parent.map(|p| Self::display_name(names, p)),
            parent_id: rec.parent.map(ObjectId::get),
            kind: rec.kind,
            state: rec.state,
            digest: rec.digest.clone(),
            created: rec.created,
            size_bytes: size.map(|s| s.bytes.0),
            inodes: size.and_then(|s| s.inodes),
            referenced_bytes: size.and_then(|s| s.referenced).map(|b| b.0),
            limit_bytes: rec.limit.map(|b| b.0),
            depth: chain.ancestors.len(),
            mounts: mounts
                .iter()
                .filter(|m| m.layer == rec.id)
                .cloned()
                .collect(),
        }
    }

    /// Every layer, parents before children.
    pub fn list(&self) -> Result<Vec<LayerInfo>> {
        let all = self.records()?;
        let names = self.names_by_layer()?;
        let mounts = self.store.mounts()?;
        let mut recs: Vec<&LayerRecord> = all.values().collect();
        // Ids grow over time and a parent always exists before its child.
        recs.sort_by_key(|r| r.id);
        let live = self.live_usage(&recs, &all);
        Ok(recs
            .into_iter()
            .map(|r| self.info_of(r, &all, &names, &mounts, &live))
            .collect())
    }

    pub fn inspect(&self, name: &str) -> Result<LayerInfo> {
        let rec = self.lookup(name)?;
        let all = self.records()?;
        let live = self.live_usage(&[&rec], &all);
        Ok(self.info_of(
            &rec,
            &all,
            &self.names_by_layer()?,
            &self.store.mounts()?,
            &live,
        ))
    }

    fn info(&self, id: ObjectId) -> Result<LayerInfo> {
        self.info_measured(id, true)
    }

    /// `measure: false` leaves an active layer's size unknown instead of asking the driver:
    /// for a layer just made, whose measurement (a metadata snapshot and `thin_ls` on
    /// device-mapper, a `zfs get` on ZFS) would cost more than making it.
    fn info_measured(&self, id: ObjectId, measure: bool) -> Result<LayerInfo> {
        let all = self.records()?;
        let rec = all
            .get(&id)
            .ok_or_else(|| PoolError::LayerNotFound(id.to_string()))?;
        let live = if measure {
            self.live_usage(&[rec], &all)
        } else {
            HashMap::new()
        };
        Ok(self.info_of(
            rec,
            &all,
            &self.names_by_layer()?,
            &self.store.mounts()?,
            &live,
        ))
    }

    pub fn status(&self) -> Result<PoolStatus> {
        let layers = self.store.layers()?;
        let count = |s: LayerState| layers.iter().filter(|l| l.state == s).count();
        Ok(PoolStatus {
            name: self.name.to_string(),
            driver: self.config.driver.clone(),
            dir: self.dir.clone(),
            backing: self.config.backing.clone(),
            options: self.config.options.clone(),
            identity: self.config.identity.clone(),
            capabilities: self.driver.capabilities(),
            space: self
                .driver
                .space()
                .map_err(|e| PoolError::backing(&self.name, e))?,
            min_free_pct: self.config.min_free_pct,
            layers: layers.len(),
            committed: count(LayerState::Committed),
            active: count(LayerState::Active),
            in_flight: layers.iter().filter(|l| !l.state.is_settled()).count(),
            mounts: self.store.mounts()?,
        })
    }

    // ----- space policy -----

    fn ensure_space(&mut self) -> Result<()> {
        // How long a new layer waits for space that removed layers freed but the driver has not
        // made reusable yet (btrfs' cleaner otherwise runs every 30 s).
        const RECLAIM_WAIT: Duration = Duration::from_secs(60);
        self.autoextend()?;
        let min_pct = self.config.min_free_pct;
        let passes =
            |available: Bytes, total: Bytes| available.percent_of(total) >= f64::from(min_pct);
        let mut s = self
            .driver
            .space()
            .map_err(|e| PoolError::backing(&self.name, e))?;
        // Space a removed layer freed may come back late (btrfs cleaner): when it would be
        // enough, wait for it rather than refuse.
        if let Some(pending) = s.pending.filter(|p| p.0 > 0) {
            if !passes(s.available, s.total) && passes(s.available + pending, s.total) {
                let started = std::time::Instant::now();
                self.driver
                    .reclaim(RECLAIM_WAIT)
                    .map_err(|e| PoolError::backing(&self.name, e))?;
                let before = s.available;
                s = self
                    .driver
                    .space()
                    .map_err(|e| PoolError::backing(&self.name, e))?;
                let msg = format!(
                    "waited {:.1}s for {pending} freed by removed layers: available {before} -> {}",
                    started.elapsed().as_secs_f64(),
                    s.available
                );
                tracing::info!(pool = %self.name, "{msg}");
                self.notices.push(msg);
            }
        }
        let mut areas = vec![("data", s.available, s.pending, s.total)];
        if let Some(m) = s.metadata {
            areas.push(("metadata", m.available, None, m.total));
        }
        for (what, available, pending, total) in areas {
            if !passes(available, total) {
                return Err(PoolError::LowSpace {
                    pool: self.name.to_string(),
                    what,
                    available,
                    pending,
                    total,
                    pct: available.percent_of(total),
                    min_pct,
                });
            }
        }
        Ok(())
    }

    fn committed_parent(
        &self,
        parent: Option<&str>,
        op: &'static str,
        name: &str,
    ) -> Result<Option<LayerRecord>> {
        let Some(p) = parent else { return Ok(None) };
        let rec = self.lookup(p).map_err(|e| match e {
            PoolError::LayerNotFound(_) => PoolError::Refused {
                op,
                layer: name.to_string(),
                reason: format!("parent {p:?} does not exist"),
            },
            e => e,
        })?;
        if rec.state != LayerState::Committed {
            return Err(PoolError::Refused {
                op,
                layer: name.to_string(),
                reason: format!(
                    "parent {p:?} is {} (only committed layers can be parents; run `blkdrv layer commit {p}`)",
                    rec.state
                ),
            });
        }
        Ok(Some(rec))
    }

    fn ensure_name_free(&self, name: &LayerName) -> Result<()> {
        if self.store.resolve(name.as_str())?.is_some() {
            return Err(PoolError::LayerExists(name.to_string()));
        }
        Ok(())
    }

    // ----- operations -----

    /// `layer create`: imports a tar or directory as a committed image layer on `parent`.
    /// Identical content on the same parent is reused (the build cache).
    pub fn create(
        &mut self,
        name: &LayerName,
        parent: Option<&str>,
        source: Source<'_>,
        limit: Option<Bytes>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<CreateOutcome> {
        let spooled = Spooled::new(&self.tmp_dir(), source, false)?;
        self.create_from(name, parent, spooled, limit, progress)
    }

    /// `layer create` of content spooled (and validated) beforehand, without the writer lock:
    /// a slow or stalled producer then blocks no other writer.
    pub fn create_from(
        &mut self,
        name: &LayerName,
        parent: Option<&str>,
        spooled: Spooled,
        limit: Option<Bytes>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<CreateOutcome> {
        let parent_rec = self.committed_parent(parent, "create", name.as_str())?;
        let existing_name = self.store.resolve(name.as_str())?;
        let Spooled {
            file: spool,
            digested,
            opts,
        } = spooled;
        let parent_id = parent_rec.as_ref().map(|r| r.id);
        let key = content_key(parent_id, &digested.digest);
        if let Some(id) = self.store.by_content(&key)? {
            match existing_name {
                Some(e) if e == id => {}
                Some(_) => return Err(PoolError::LayerExists(name.to_string())),
                None => self
                    .store
                    .tx("tag reused layer", |t| t.bind_name(name.as_str(), id))?,
            }
            return Ok(CreateOutcome {
                layer: self.info(id)?,
                reused: true,
            });
        }
        if existing_name.is_some() {
            return Err(PoolError::LayerExists(name.to_string()));
        }
        self.ensure_space()?;

        let (rec, chain) = self.begin_create(
            name,
            parent_id,
            LayerKind::Image,
            Some(digested.digest.clone()),
            limit,
            ["create:intent", "create:object"],
        )?;
        let work = (|| {
            let target = self.tmp_dir().join(format!("import-{}", rec.id));
            mkdir(&target)?;
            self.driver
                .mount(&chain, &target, MountMode::ReadWrite, MountFlags::INERT)
                .map_err(|e| PoolError::driver("mount for import", name.as_str(), e))?;
            crash::point("create:mounted");
            // Through the descriptor, not the path: another writer's recovery may have swept
            // the tmp dir while this process spooled without the lock.
            let applied = spool
                .as_file()
                .try_clone()
                .and_then(|mut f| std::io::Seek::rewind(&mut f).map(|()| f))
                .map_err(|e| PoolError::io("reopen spooled tar", spool.path(), e))
                .and_then(|f| {
                    layertar::apply_tar(
                        std::io::BufReader::new(crate::signal::Checked(f)),
                        &target,
                        &opts,
                        progress,
                    )
                    .map_err(PoolError::from)
                })
                .map_err(|e| match crate::signal::pending() {
                    Some(sig) => PoolError::Interrupted {
                        signal: sig.as_str(),
                    },
                    None => e,
                });
            // Flush before unmount so the import's cost is paid here, not by the next snapshot.
            let unmounted = self
                .driver
                .unmount(&target)
                .map_err(|e| PoolError::driver("unmount after import", name.as_str(), e));
            applied?;
            unmounted?;
            let _ = std::fs::remove_dir(&target);
            crash::point("create:applied");
            let committed = LayerChain {
                active: false,
                ..chain.clone()
            };
            self.driver
                .commit(&committed)
                .map_err(|e| PoolError::driver("commit", name.as_str(), e))?;
            let usage = self.measure(&committed);
            self.store.tx("record create done", |t| {
                t.set_committed(rec.id, usage, Some(&key))?;
                t.bind_name(name.as_str(), rec.id)
            })
        })();
        if let Err(e) = work {
            return Err(e.with_rollback(self.undo_create(rec.id)));
        }
        crash::point("create:committed");
        Ok(CreateOutcome {
            layer: self.info(rec.id)?,
            reused: false,
        })
    }

    /// First half of every create: records the intent (a `creating` row), then makes the driver
    /// object. A failure undoes the intent.
    fn begin_create(
        &mut self,
        name: &LayerName,
        parent: Option<ObjectId>,
        kind: LayerKind,
        digest: Option<String>,
        limit: Option<Bytes>,
        steps: [&'static str; 2],
    ) -> Result<(LayerRecord, LayerChain)> {
        let rec = self.store.tx("record create intent", |t| {
            let rec = LayerRecord {
                id: t.allocate_id()?,
                parent,
                kind,
                state: LayerState::Creating,
                digest,
                pending_name: Some(name.to_string()),
                created: now(),
                size: None,
                limit,
            };
            t.insert_layer(&rec)?;
            Ok(rec)
        })?;
        crash::point(steps[0]);
        let chain = self.chain(&rec)?;
        let made = self.driver.create(&chain).and_then(|()| match limit {
            Some(l) => self.driver.set_limit(rec.id, l),
            None => Ok(()),
        });
        if let Err(e) = made {
            let e = PoolError::driver("create", name.as_str(), e);
            return Err(e.with_rollback(self.undo_create(rec.id)));
        }
        crash::point(steps[1]);
        self.record_generation()?;
        Ok((rec, chain))
    }

    /// Undoes a create: unmounts a leftover import mount, deletes the object and the row.
    fn undo_create(&mut self, id: ObjectId) -> Result<()> {
        let target = self.tmp_dir().join(format!("import-{id}"));
        if mount::is_mountpoint(&target).unwrap_or(false) {
            self.driver
                .unmount(&target)
                .map_err(|e| PoolError::driver("unmount import", id.to_string(), e))?;
        }
        let _ = std::fs::remove_dir(&target);
        self.driver
            .remove(id)
            .map_err(|e| PoolError::driver("remove", id.to_string(), e))?;
        self.store.tx("roll back create", |t| t.delete_layer(id))?;
        self.record_generation()
    }

    /// `layer snapshot`: a writable (active) layer on a committed parent. The returned size is
    /// unknown: nothing of its own to measure yet.
    pub fn snapshot(
        &mut self,
        parent: &str,
        name: &LayerName,
        limit: Option<Bytes>,
    ) -> Result<LayerInfo> {
        let parent_rec = self
            .committed_parent(Some(parent), "snapshot", name.as_str())?
            .expect("parent given");
        self.ensure_name_free(name)?;
        self.ensure_space()?;
        let (rec, _) = self.begin_create(
            name,
            Some(parent_rec.id),
            LayerKind::Container,
            None,
            limit,
            ["snapshot:intent", "snapshot:object"],
        )?;
        let done = self.store.tx("record snapshot done", |t| {
            t.set_state(rec.id, LayerState::Active)?;
            t.clear_pending_name(rec.id)?;
            t.bind_name(name.as_str(), rec.id)
        });
        if let Err(e) = done {
            return Err(e.with_rollback(self.undo_create(rec.id)));
        }
        // Size unknown (null in JSON) until `layer inspect` or `layer ls` measures it.
        self.info_measured(rec.id, false)
    }

    /// Times the driver's bare kernel operation for a layer on committed `parent` and undoes
    /// it (`blkdrv bench` compares it with [`Pool::snapshot`]). Nothing is recorded.
    pub fn raw_snapshot(&mut self, parent: &str) -> Result<Option<std::time::Duration>> {
        let rec = self
            .committed_parent(Some(parent), "raw snapshot", parent)?
            .expect("parent given");
        let chain = self.chain(&rec)?;
        // Drivers without bench hooks have no single kernel operation to compare with.
        let Some(hooks) = self.driver.bench() else {
            return Ok(None);
        };
        hooks
            .raw_snapshot(&chain)
            .map(Some)
            .map_err(|e| PoolError::driver("raw snapshot", parent, e))
    }

    /// `layer commit`: freezes an active layer.
    pub fn commit(&mut self, name: &str) -> Result<LayerInfo> {
        let rec = self.lookup(name)?;
        if rec.state != LayerState::Active {
            return Err(PoolError::Refused {
                op: "commit",
                layer: name.to_string(),
                reason: format!(
                    "layer is {} (only active layers can be committed)",
                    rec.state
                ),
            });
        }
        if let Some(m) = self
            .store
            .mounts()?
            .into_iter()
            .find(|m| m.layer == rec.id && m.mode == MountMode::ReadWrite)
        {
            return Err(PoolError::Refused {
                op: "commit",
                layer: name.to_string(),
                reason: format!(
                    "layer is mounted read-write at {}; run `blkdrv layer umount {name}` first",
                    m.target.display()
                ),
            });
        }
        self.store.tx("record commit intent", |t| {
            t.set_state(rec.id, LayerState::Committing)
        })?;
        crash::point("commit:intent");
        self.finish_commit(rec.id)?;
        self.info(rec.id)
    }

    /// A committed layer's size to record. A driver that cannot measure (btrfs without quotas)
    /// must not make the commit fail: the size is then unknown.
    fn measure(&self, chain: &LayerChain) -> Option<Usage> {
        match self.driver.usage(chain) {
            Ok(u) => Some(u),
            Err(e) => {
                tracing::info!(layer = %chain.id, "size unknown: {e}");
                None
            }
        }
    }

    /// Second half of a commit; also how an interrupted commit is rolled forward.
    fn finish_commit(&mut self, id: ObjectId) -> Result<()> {
        let rec = self
            .store
            .layer(id)?
            .ok_or_else(|| PoolError::LayerNotFound(id.to_string()))?;
        let chain = LayerChain {
            active: false,
            ..self.chain(&rec)?
        };
        self.driver
            .commit(&chain)
            .map_err(|e| PoolError::driver("commit", id.to_string(), e))?;
        crash::point("commit:object");
        let usage = self.measure(&chain);
        self.store
            .tx("record commit done", |t| t.set_committed(id, usage, None))
    }

    /// `layer mount` with the default policy: see [`MountRequest`].
    pub fn mount(&mut self, name: &str, target: &Path, read_only: bool) -> Result<MountMode> {
        self.mount_with(
            name,
            target,
            MountRequest {
                read_only,
                ..MountRequest::default()
            },
        )
    }

    /// `layer mount`. Active layers mount read-write unless `read_only`; committed layers always
    /// mount read-only (a view). Every mount is `nodev` unless `req.dev`; read-only mounts are
    /// also `nosuid` (inspection, not a container's root). The target and its missing parents
    /// are created (mode 0700). Returns the mode used.
    pub fn mount_with(
        &mut self,
        name: &str,
        target: &Path,
        req: MountRequest,
    ) -> Result<MountMode> {
        let read_only = req.read_only;
        let rec = self.lookup(name)?;
        let mode = match rec.state {
            LayerState::Active if !read_only => MountMode::ReadWrite,
            LayerState::Active | LayerState::Committed => MountMode::ReadOnly,
            s => {
                return Err(PoolError::Refused {
                    op: "mount",
                    layer: name.to_string(),
                    reason: format!("layer is {s}"),
                })
            }
        };
        mkdir(target)?;
        let target = target
            .canonicalize()
            .map_err(|e| PoolError::user_path("resolve mount target", target, e))?;
        let ns = Some(own_ns()?);
        if mount::is_mountpoint(&target).unwrap_or(false) {
            return Err(PoolError::Refused {
                op: "mount",
                layer: name.to_string(),
                reason: format!("{} is already a mount point", target.display()),
            });
        }
        let mounts = self.store.mounts()?;
        if let Some(m) = mounts
            .iter()
            .find(|m| m.layer == rec.id && m.mode == MountMode::ReadWrite)
        {
            if mode == MountMode::ReadWrite {
                return Err(PoolError::Refused {
                    op: "mount",
                    layer: name.to_string(),
                    reason: format!(
                        "layer is already mounted read-write at {} (an active layer has one writer)",
                        m.target.display()
                    ),
                });
            }
        }
        let chain = self.chain(&rec)?;
        self.store.tx("record mount intent", |t| {
            t.add_mount(&target, ns, rec.id, mode)
        })?;
        crash::point("mount:intent");
        let flags = MountFlags {
            nodev: !req.dev,
            nosuid: mode == MountMode::ReadOnly,
        };
        if let Err(e) = self.driver.mount(&chain, &target, mode, flags) {
            let e = PoolError::driver("mount", name, e);
            let rb = self
                .store
                .tx("roll back mount", |t| t.remove_mount(&target, ns));
            return Err(e.with_rollback(rb));
        }
        crash::point("mount:mounted");
        self.store
            .tx("record mount done", |t| t.settle_mount(&target, ns))?;
        Ok(mode)
    }

    /// `layer umount`: unmounts `name` at `target`, or everywhere it is mounted.
    pub fn umount(&mut self, name: &str, target: Option<&Path>) -> Result<Vec<PathBuf>> {
        let rec = self.lookup(name)?;
        let target = target.map(|t| t.canonicalize().unwrap_or_else(|_| t.to_path_buf()));
        let mounts: Vec<MountRecord> = self
            .store
            .mounts()?
            .into_iter()
            .filter(|m| m.layer == rec.id && target.as_ref().is_none_or(|t| &m.target == t))
            .collect();
        if mounts.is_empty() {
            return Err(PoolError::Refused {
                op: "umount",
                layer: name.to_string(),
                reason: match target {
                    Some(t) => format!("not mounted at {}", t.display()),
                    None => "not mounted".into(),
                },
            });
        }
        let mut done = Vec::new();
        let tables = tables_for(&mounts)?;
        for m in mounts {
            self.unmount_record(&m, &tables, name)?;
            done.push(m.target);
        }
        Ok(done)
    }

    /// Unmounts one recorded mount where it lives and forgets it: in this mount namespace
    /// through the driver; in another one from inside it (a service's private namespace).
    fn unmount_record(&mut self, m: &MountRecord, tables: &NsTables, name: &str) -> Result<()> {
        match m
            .ns
            .filter(|ns| *ns != tables.own())
            .map(|ns| tables.view(ns))
        {
            None => self
                .driver
                .unmount(&m.target)
                .map_err(|e| PoolError::driver("unmount", name, e))?,
            Some(NsView::Table { pid, .. }) => mount::unmount_in(pid, &m.target)
                .map_err(|e| PoolError::driver("unmount in another mount namespace", name, e))?,
            Some(NsView::Held) => {
                return Err(PoolError::Refused {
                    op: "umount",
                    layer: name.to_string(),
                    reason: format!(
                        "mounted at {} in mount namespace {}, which no process is in (it is held \
                         open); unmount it there",
                        m.target.display(),
                        m.ns.expect("foreign")
                    ),
                })
            }
            // The namespace died and took the mount with it.
            Some(NsView::Gone) => {}
        }
        self.store
            .tx("record unmount", |t| t.remove_mount(&m.target, m.ns))
    }

    /// `layer rm`. Refused while the layer has children or is mounted (`force` unmounts first).
    /// A layer with several names only loses this name.
    pub fn remove(&mut self, name: &str, force: bool) -> Result<RemoveOutcome> {
        let rec = self.lookup(name)?;
        let names = self.names_by_layer()?;
        if names.get(&rec.id).is_some_and(|n| n.len() > 1) {
            self.store.tx("untag", |t| t.unbind_name(name))?;
            return Ok(RemoveOutcome::Untagged);
        }
        let all = self.records()?;
        let children: Vec<String> = all
            .values()
            .filter(|r| r.parent == Some(rec.id))
            .map(|r| Self::display_name(&names, r.id))
            .collect();
        if !children.is_empty() {
            return Err(PoolError::Refused {
                op: "remove",
                layer: name.to_string(),
                reason: format!("layer has children: {}", children.join(", ")),
            });
        }
        let mounts: Vec<MountRecord> = self
            .store
            .mounts()?
            .into_iter()
            .filter(|m| m.layer == rec.id)
            .collect();
        if !mounts.is_empty() {
            if !force {
                let at: Vec<String> = mounts
                    .iter()
                    .map(|m| m.target.display().to_string())
                    .collect();
                return Err(PoolError::Refused {
                    op: "remove",
                    layer: name.to_string(),
                    reason: format!(
                        "layer is mounted at {} (use --force to unmount first)",
                        at.join(", ")
                    ),
                });
            }
            self.umount(name, None)?;
        }
        self.store.tx("record remove intent", |t| {
            t.set_state(rec.id, LayerState::Removing)
        })?;
        crash::point("remove:intent");
        match self.finish_remove(rec.id) {
            Ok(()) => {}
            Err(PoolError::Driver { source, .. })
                if matches!(*source, blkdrv_drivers::DriverError::Busy { .. }) =>
            {
                tracing::info!(layer = name, "removal deferred: {source}");
                self.notices
                    .push(format!("removal of {name} deferred: {source}"));
                return Ok(RemoveOutcome::Deferred);
            }
            Err(e) => {
                // The driver refused or failed (a mount blkdrv does not know of, EBUSY): the layer
                // stays as it was rather than half-removed; `pool check` reports any damage.
                let back = self
                    .store
                    .tx("undo remove intent", |t| t.set_state(rec.id, rec.state));
                return Err(e.with_rollback(back));
            }
        }
        Ok(RemoveOutcome::Removed)
    }

    fn finish_remove(&mut self, id: ObjectId) -> Result<()> {
        self.driver
            .remove(id)
            .map_err(|e| PoolError::driver("remove", id.to_string(), e))?;
        crash::point("remove:object");
        self.store
            .tx("record remove done", |t| t.delete_layer(id))?;
        self.record_generation()
    }

    /// `layer diff`: the layer's changes against its parent as an OCI layer tar.
    pub fn diff(
        &mut self,
        name: &str,
        out: &mut dyn std::io::Write,
    ) -> Result<layertar::DiffStats> {
        let rec = self.lookup(name)?;
        if !rec.state.is_settled() {
            return Err(PoolError::Refused {
                op: "diff",
                layer: name.to_string(),
                reason: format!("layer is {}", rec.state),
            });
        }
        let all = self.records()?;
        let chain = self.chain_of(&rec, &all);
        let base = self
            .tmp_dir()
            .join(format!("diff-{}-{}", rec.id, std::process::id()));
        let (top, bottom) = (base.join("layer"), base.join("parent"));
        let mut mounted: Vec<PathBuf> = Vec::new();
        let result = (|| {
            mkdir(&top)?;
            self.driver
                .mount(&chain, &top, MountMode::ReadOnly, MountFlags::INERT)
                .map_err(|e| PoolError::driver("mount for diff", name, e))?;
            mounted.push(top.clone());
            let parent_path = match rec.parent.and_then(|p| all.get(&p)) {
                Some(p) => {
                    mkdir(&bottom)?;
                    let pc = self.chain_of(p, &all);
                    self.driver
                        .mount(&pc, &bottom, MountMode::ReadOnly, MountFlags::INERT)
                        .map_err(|e| PoolError::driver("mount parent for diff", name, e))?;
                    mounted.push(bottom.clone());
                    Some(bottom.clone())
                }
                None => None,
            };
            layertar::write_diff(
                &top,
                parent_path.as_deref(),
                crate::signal::CheckedWrite(&mut *out),
            )
            .map_err(|e| match crate::signal::pending() {
                Some(sig) => PoolError::Interrupted {
                    signal: sig.as_str(),
                },
                None => e.into(),
            })
        })();
        let mut cleanup = Ok(());
        for m in mounted.iter().rev() {
            if let Err(e) = self.driver.unmount(m) {
                cleanup = Err(PoolError::driver("unmount after diff", name, e));
            }
        }
        let _ = std::fs::remove_dir(&top);
        let _ = std::fs::remove_dir(&bottom);
        let _ = std::fs::remove_dir(&base);
        match result {
            Ok(s) => cleanup.map(|_| s),
            Err(e) => Err(e.with_rollback(cleanup)),
        }
    }

    // ----- recovery and checks -----

    /// Finishes or undoes what a dead process left in flight. Returns what it did.
    fn reconcile(&mut self) -> Result<Vec<String>> {
        let mut done = Vec::new();
        // Leftover import/diff mounts of a crashed process.
        let n = mount::detach_all_under(&self.tmp_dir())
            .map_err(|e| PoolError::backing(&self.name, e))?;
        if n > 0 {
            done.push(format!("unmounted {n} leftover temporary mount(s)"));
        }
        let mounts = self.store.mounts()?;
        let tables = tables_for(&mounts)?;
        for m in mounts {
            match presence(&m, &tables) {
                Presence::Gone => {
                    self.store
                        .tx("drop stale mount", |t| t.remove_mount(&m.target, m.ns))?;
                    if m.settled {
                        done.push(format!(
                            "forgot mount {} (no longer mounted)",
                            m.target.display()
                        ));
                    }
                }
                Presence::Mounted if !m.settled => {
                    self.store
                        .tx("settle mount", |t| t.settle_mount(&m.target, m.ns))?;
                    done.push(format!("recorded interrupted mount {}", m.target.display()));
                }
                // Kept: a mount that cannot be seen from here is not a mount that is gone.
                Presence::Mounted | Presence::Unknown => {}
            }
        }
        for rec in self.store.layers()? {
            let label = rec
                .pending_name
                .clone()
                .unwrap_or_else(|| format!("layer {}", rec.id));
            // One layer that cannot be finished must not keep the pool closed: report it, leave
            // it in flight for the next writer, and go on with the others.
            let result = match rec.state {
                LayerState::Creating => self
                    .undo_create(rec.id)
                    .map(|()| format!("rolled back interrupted create of {label}")),
                LayerState::Committing => self
                    .finish_commit(rec.id)
                    .map(|()| format!("finished interrupted commit of {label}")),
                LayerState::Removing => self
                    .finish_remove(rec.id)
                    .map(|()| format!("finished interrupted remove of {label}")),
                LayerState::Active | LayerState::Committed => continue,
            };
            done.push(match result {
                Ok(msg) => msg,
                Err(e) => format!(
                    "could not finish {} of {label} (will retry): {e}",
                    rec.state
                ),
            });
        }
        // Abandoned spool files of crashed imports.
        if let Ok(entries) = std::fs::read_dir(self.tmp_dir()) {
            for e in entries.flatten() {
                if e.path().is_file() {
                    let _ = std::fs::remove_file(e.path());
                } else {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        for d in &done {
            tracing::info!(pool = %self.name, "{d}");
        }
        Ok(done)
    }

    /// `pool check [--repair]`: drift between the store and what is on disk.
    pub fn check(&mut self, repair: bool) -> Result<CheckReport> {
        let mut report = CheckReport {
            recovered: self.recovered.clone(),
            ..Default::default()
        };
        let on_disk = self
            .driver
            .list()
            .map_err(|e| PoolError::backing(&self.name, e))?;
        let all = self.records()?;
        for id in &on_disk {
            if !all.contains_key(id) {
                report.orphans.push(id.get());
            }
        }
        let mut missing: Vec<ObjectId> = all
            .keys()
            .filter(|id| !on_disk.contains(id))
            .copied()
            .collect();
        missing.sort();
        report.missing = missing.iter().map(|i| i.get()).collect();
        let mounts = self.store.mounts()?;
        let tables = tables_for(&mounts)?;
        for m in mounts {
            match presence(&m, &tables) {
                Presence::Gone => report.stale_mounts.push(m),
                Presence::Unknown => report.unverified_mounts.push(m),
                Presence::Mounted => {}
            }
        }
        if repair {
            for id in &report.orphans {
                let id = ObjectId::new(*id).expect("listed ids are valid");
                self.driver
                    .remove(id)
                    .map_err(|e| PoolError::driver("remove orphan", id.to_string(), e))?;
                report.repaired.push(format!("removed orphan object {id}"));
            }
            for m in &report.stale_mounts {
                self.store
                    .tx("drop stale mount", |tx| tx.remove_mount(&m.target, m.ns))?;
                report
                    .repaired
                    .push(format!("forgot stale mount {}", m.target.display()));
            }
            // A layer whose data is gone cannot be repaired; forget it unless others build on it.
            for id in &missing {
                if all.values().any(|r| r.parent == Some(*id)) {
                    report.repaired.push(format!(
                        "kept layer {id}: its data is missing but it has children"
                    ));
                    continue;
                }
                self.store
                    .tx("forget missing layer", |t| t.delete_layer(*id))?;
                report
                    .repaired
                    .push(format!("forgot layer {id}: its data was missing"));
            }
        }
        Ok(report)
    }

    /// `pool deactivate`: takes the pool's kernel objects down (filesystem mount, dm tables,
    /// loop devices) and keeps everything on disk, as a shutdown would. Refused while layers are
    /// mounted. Any later command (or `pool activate`) brings the pool back.
    pub fn deactivate(self) -> Result<()> {
        let mounts = self.store.mounts()?;
        if !mounts.is_empty() {
            let at: Vec<String> = mounts
                .iter()
                .map(|m| m.target.display().to_string())
                .collect();
            return Err(PoolError::Refused {
                op: "deactivate",
                layer: self.name.to_string(),
                reason: format!("layers are mounted at {}", at.join(", ")),
            });
        }
        self.driver
            .deactivate()
            .map_err(|e| PoolError::backing(&self.name, e))?;
        if let Backing::Loopback { files } = &self.config.backing {
            for lf in files {
                let p = self.dir.join(&lf.file);
                let canon = p.canonicalize().unwrap_or(p);
                for dev in loopdev::find_by_backing_file(&canon)
                    .map_err(|e| PoolError::backing(&self.name, e))?
                {
                    loopdev::detach(&dev).map_err(|e| PoolError::backing(&self.name, e))?;
                }
            }
        }
        Ok(())
    }

    /// `pool destroy`: unmounts everything (refused while layers are mounted unless `force`),
    /// tears the backing down (the driver removes storage objects it made, such as an LVM VG)
    /// and deletes the pool directory. Raw devices keep their filesystem.
    pub fn destroy(mut self, force: bool) -> Result<()> {
        let mounts = self.store.mounts()?;
        if !mounts.is_empty() && !force {
            let at: Vec<String> = mounts
                .iter()
                .map(|m| m.target.display().to_string())
                .collect();
            return Err(PoolError::Refused {
                op: "destroy",
                layer: self.name.to_string(),
                reason: format!(
                    "layers are mounted at {} (unmount them, or use --force)",
                    at.join(", ")
                ),
            });
        }
        // Another process holding the loop device would keep it attached after the pool is
        // gone: say so before tearing anything down (--force goes on and reports it after).
        if !force {
            let held = foreign_holders(&self.dir, &self.config)?;
            if !held.is_empty() {
                return Err(PoolError::Held {
                    pool: self.name.to_string(),
                    what: held,
                });
            }
        }
        let tables = tables_for(&mounts)?;
        for m in &mounts {
            match self.unmount_record(m, &tables, &m.layer.to_string()) {
                Ok(()) => {}
                // A busy mount under --force: teardown_dir detaches it lazily and names what
                // keeps the pool's device attached. The record stays until then.
                Err(e) if force => {
                    tracing::warn!(pool = %self.name, "{e}; detaching {} lazily", m.target.display())
                }
                Err(e) => return Err(e),
            }
        }
        self.driver
            .destroy()
            .map_err(|e| PoolError::backing(&self.name, e))?;
        let dir = self.dir.clone();
        drop(self);
        teardown_dir(&dir)
    }

    /// Where the pool lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Whether a recorded mount still exists, judged in the namespace it was made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presence {
    Mounted,
    Gone,
    /// Its namespace exists but cannot be looked into: keep the record.
    Unknown,
}

fn presence(m: &MountRecord, tables: &NsTables) -> Presence {
    let found = |mounts: &[mount::MountInfo]| {
        if mounts.iter().any(|mi| mi.target == m.target) {
            Presence::Mounted
        } else {
            Presence::Gone
        }
    };
    match m.ns {
        Some(ns) => match tables.view(ns) {
            NsView::Table { mounts, .. } => found(&mounts),
            NsView::Held => Presence::Unknown,
            NsView::Gone => Presence::Gone,
        },
        // A record of an older blkdrv, namespace unknown: mounted if mounted anywhere.
        None => {
            if tables.all().any(|(_, _, mi)| mi.target == m.target) {
                Presence::Mounted
            } else {
                Presence::Gone
            }
        }
    }
}

fn own_ns() -> Result<MountNs> {
    mount::own_namespace().map_err(|e| PoolError::backing("mount namespace", e))
}

/// The mount tables needed to judge `mounts`: only this namespace's while every record is
/// ours; every namespace's otherwise.
fn tables_for(mounts: &[MountRecord]) -> Result<NsTables> {
    let own = own_ns()?;
    let r = if mounts.iter().all(|m| m.ns == Some(own)) {
        NsTables::own_only()
    } else {
        NsTables::read()
    };
    r.map_err(|e| PoolError::backing("mount tables", e))
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

/// Removes a pool directory: unmounts everything that uses it (mounts below it, mounts of its
/// loop devices elsewhere, overlays built on its directories; from the mount table, so a corrupt
/// store loses none), detaches the loop devices of its files, deletes it. Used by destroy and by
/// failed inits. A loop device another process keeps attached is reported as
/// [`PoolError::StillHeld`] after the directory is gone.
pub fn teardown_dir(dir: &Path) -> Result<()> {
    let sys = |e| PoolError::backing(dir.display(), e);
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let loops = dir_loops(&canon).map_err(sys)?;
    let mut devs: Vec<PathBuf> = loops.iter().map(|l| l.device.clone()).collect();
    for l in &loops {
        devs.extend(blockdev::stacked_on(&l.device));
    }
    let users = mount::mounts_using(&canon, &devs).map_err(sys)?;
    let targets: Vec<PathBuf> = users.iter().map(|m| m.target.clone()).collect();
    let ids: Vec<u64> = users.iter().map(|m| m.id).collect();
    mount::detach_mounts(&targets).map_err(sys)?;
    mount::detach_all_under(dir).map_err(sys)?;
    for l in &loops {
        loopdev::detach(&l.device).map_err(sys)?;
    }
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(PoolError::io("remove pool directory", dir, e)),
    }
    let left = still_attached(&loops, &ids).map_err(sys)?;
    if left.is_empty() {
        return Ok(());
    }
    Err(PoolError::StillHeld {
        pool: dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| dir.display().to_string()),
        what: left,
    })
}

/// `pool destroy --force` for a pool whose store cannot be opened (corrupt, interrupted init).
pub fn force_destroy(root: &Root, name: &PoolName) -> Result<()> {
    let dir = root.pool_dir(name);
    if !dir.exists() {
        return Err(PoolError::PoolNotFound {
            pool: name.to_string(),
            root: root.path.clone(),
        });
    }
    teardown_dir(&dir)
}

/// Loop devices attached to files under `dir` (canonical): live ones whose backing file is that
/// inode, and ones whose file under `dir` was deleted while attached (a dead pool's devices).
fn dir_loops(dir: &Path) -> blkdrv_drivers::Result<Vec<loopdev::LoopStatus>> {
    Ok(loopdev::status_all()?
        .into_iter()
        .filter(|l| {
            l.backing.starts_with(dir)
                && (l.deleted || loopdev::FileId::of(&l.backing).ok() == l.file && l.file.is_some())
        })
        .collect())
}

/// Which of `loops` are still attached to the same file, with their holders (the device's own,
/// and processes using the lazily detached mounts `mounts`). The last close of an autoclear
/// device detaches it at once, so a device still attached has a user; a few short re-checks
/// cover a holder that is just closing.
fn still_attached(
    loops: &[loopdev::LoopStatus],
    mounts: &[u64],
) -> blkdrv_drivers::Result<Vec<String>> {
    let mut left = Vec::new();
    for attempt in 0..10 {
        let now = loopdev::status_all()?;
        left = loops
            .iter()
            .filter(|l| {
                now.iter()
                    .any(|n| n.device == l.device && n.file.is_some() && n.file == l.file)
            })
            .map(|l| {
                let mut h = blockdev::holders(&l.device);
                for u in mount::mount_users(mounts) {
                    if !h.contains(&u) {
                        h.push(u);
                    }
                }
                (
                    h.is_empty(),
                    format!(
                        "{} is still attached ({}); it detaches when that closes it",
                        l.device.display(),
                        blockdev::describe(&h)
                    ),
                )
            })
            .collect::<Vec<_>>();
        if left.is_empty() || left.iter().any(|(nobody, _)| !nobody) || attempt == 9 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(left.into_iter().map(|(_, m)| m).collect())
}

/// What holds the pool's loop devices besides the pool's own mounts: processes with a device
/// open, mounts of it outside the pool directory, and other processes using files on the
/// pool's mounts (they would make its unmount fail half-way).
fn foreign_holders(dir: &Path, config: &PoolConfig) -> Result<Vec<String>> {
    let Backing::Loopback { files } = &config.backing else {
        return Ok(Vec::new());
    };
    let sys = |e| PoolError::backing(&config.name, e);
    let canon = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut out = Vec::new();
    let mut all = Vec::new();
    for lf in files {
        all.extend(loopdev::find_by_backing_file(&dir.join(&lf.file)).map_err(sys)?);
    }
    let mounts = mount::mounts_using(&canon, &all).map_err(sys)?;
    let ids: Vec<u64> = mounts.iter().map(|m| m.id).collect();
    // This process may hold files there through the open pool itself.
    let me = std::process::id();
    let users: Vec<blockdev::Holder> = mount::mount_users(&ids)
        .into_iter()
        .filter(|h| !matches!(h, blockdev::Holder::Process { pid, .. } if *pid == me))
        .collect();
    if !users.is_empty() {
        let at: Vec<String> = mounts
            .iter()
            .map(|m| m.target.display().to_string())
            .collect();
        out.push(format!(
            "its mounts ({}) are in use: {}",
            at.join(", "),
            blockdev::describe(&users)
        ));
    }
    for dev in all {
        let foreign: Vec<blockdev::Holder> = blockdev::holders(&dev)
            .into_iter()
            .filter(|h| match h {
                blockdev::Holder::Process { .. } => true,
                blockdev::Holder::Mount(m) => !m.starts_with(&canon),
                // The pool's own dm tables; the driver removes them.
                blockdev::Holder::Device(_) => false,
            })
            .collect();
        if !foreign.is_empty() {
            out.push(format!(
                "{} is {}",
                dev.display(),
                blockdev::describe(&foreign)
            ));
        }
    }
    Ok(out)
}
