//! The pool's backing: init and provisioning, deactivate, destroy, and tearing a pool
//! directory down with the loop devices and mounts that use it.

use super::mounts::{joined_targets, tables_for};
use super::types::{BackingSpec, InitSpec, Planned};
use super::{context, factory, lock_wait, mkdir, now, Pool, Root, LOCK, STORE};
use crate::config::{Backing, LoopFile, PoolConfig};
use crate::error::{PoolError, Result};
use crate::layer::PoolName;
use crate::lock::PoolLock;
use crate::store::Store;
use blkdrv_drivers::sys::{blockdev, loopdev, mount};
use blkdrv_drivers::{BackingPlan, BackingRequest, DriverFactory, DriverOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

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

    /// `pool deactivate`: takes the pool's kernel objects down (filesystem mount, dm tables,
    /// loop devices) and keeps everything on disk, as a shutdown would. Refused while layers are
    /// mounted. Any later command (or `pool activate`) brings the pool back.
    pub fn deactivate(self) -> Result<()> {
        self.refuse_mounted_containers("deactivate", "")?;
        let mounts = self.store.mounts()?;
        if !mounts.is_empty() {
            let at = joined_targets(mounts.iter().map(|m| m.target.as_path()));
            return Err(PoolError::Refused {
                op: "deactivate",
                layer: self.name.to_string(),
                reason: format!("layers are mounted at {at}"),
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
        if force {
            self.take_down_containers()?;
        } else {
            self.refuse_mounted_containers("destroy", " (unmount them, or use --force)")?;
        }
        let mounts = self.store.mounts()?;
        if !mounts.is_empty() && !force {
            let at = joined_targets(mounts.iter().map(|m| m.target.as_path()));
            return Err(PoolError::Refused {
                op: "destroy",
                layer: self.name.to_string(),
                reason: format!("layers are mounted at {at} (unmount them, or use --force)"),
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
        let at = joined_targets(mounts.iter().map(|m| m.target.as_path()));
        out.push(format!(
            "its mounts ({at}) are in use: {}",
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
