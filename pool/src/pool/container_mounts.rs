//! Assembling a container's root (`container mount`), taking it down (`container umount`),
//! and recovering either when interrupted: see the module comment of `containers`.

use super::containers::{mount_order, refused, ROOT_FLAGS};
use super::mounts::own_ns;
use super::types::{ContainerMounted, ContainerState};
use super::{mkdir, Pool};
use crate::container::{ContainerPath, MountSource};
use crate::crash;
use crate::error::{PoolError, Result};
use crate::layer::LayerRecord;
use crate::store::ContainerRecord;
use blkdrv_drivers::sys::mount;
use blkdrv_drivers::sys::rootpath::{self, Create};
use blkdrv_drivers::{LayerChain, MountMode, ObjectId};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

impl Pool {
    /// `container mount`: assembles the root filesystem at `target` (see [`ContainerMounted`]).
    pub fn container_mount(&mut self, name: &str, target: &Path) -> Result<ContainerMounted> {
        let c = self.container_rec(name)?;
        match c.state {
            ContainerState::Created => {}
            ContainerState::Mounted => {
                return Err(refused(
                    "container mount",
                    name,
                    format!(
                        "container is already mounted at {}; run `blkdrv container umount {name}` first",
                        c.root.as_deref().unwrap_or(Path::new("?")).display()
                    ),
                ))
            }
            s => {
                return Err(refused(
                    "container mount",
                    name,
                    format!("container is {s}"),
                ))
            }
        }
        let rec = self
            .store
            .layer(c.layer)?
            .ok_or_else(|| PoolError::ContainerNotFound(name.to_string()))?;
        mkdir(target)?;
        let root = target
            .canonicalize()
            .map_err(|e| PoolError::user_path("resolve mount target", target, e))?;
        if mount::is_mountpoint(&root).unwrap_or(false) {
            return Err(refused(
                "container mount",
                name,
                format!("{} is already a mount point", root.display()),
            ));
        }
        let ns = own_ns()?;
        self.store.tx("record container mount intent", |t| {
            t.set_container_state(name, ContainerState::Mounting)?;
            t.set_container_root(name, Some((&root, ns)))
        })?;
        crash::point("container-mount:intent");
        let mut made = Vec::new();
        let assembled = self.assemble(&c, &rec, &root, &mut made);
        if let Err(e) = assembled {
            let back = self.take_down(name, &root, None).and_then(|_| {
                self.store.tx("undo container mount", |t| {
                    t.set_container_state(name, ContainerState::Created)?;
                    t.set_container_root(name, None)
                })
            });
            return Err(e.with_rollback(back));
        }
        self.store.tx("record container mount done", |t| {
            t.set_container_state(name, ContainerState::Mounted)
        })?;
        Ok(ContainerMounted {
            name: name.to_string(),
            root,
            mounts: made,
        })
    }

    /// Mounts the writable layer at `root`, then every mount of `c` inside it, parents first;
    /// `made` collects where, in order.
    fn assemble(
        &self,
        c: &ContainerRecord,
        rec: &LayerRecord,
        root: &Path,
        made: &mut Vec<PathBuf>,
    ) -> Result<()> {
        let name = c.name.as_str();
        let chain = self.chain(rec)?;
        self.driver
            .mount(&chain, root, MountMode::ReadWrite, ROOT_FLAGS)
            .map_err(|e| PoolError::driver("mount container root", name, e))?;
        made.push(root.to_path_buf());
        let volumes: HashMap<String, ObjectId> = self
            .store
            .volumes()?
            .into_iter()
            .map(|v| (v.name, v.layer))
            .collect();
        let mut landed: Vec<(PathBuf, &ContainerPath)> = Vec::new();
        for (i, m) in mount_order(&c.mounts).into_iter().enumerate() {
            let comps: Vec<&str> = m.target.components().collect();
            let mode = if m.readonly {
                MountMode::ReadOnly
            } else {
                MountMode::ReadWrite
            };
            // Symlinks in the layer can make two targets one path: stacking the second mount
            // would hide the first (and some filesystems refuse it), so it is refused.
            let mut at = |create| {
                let p = rootpath::resolve_in_root(root, &comps, create).map_err(|e| {
                    PoolError::driver("resolve mount target inside the root", name, e)
                })?;
                if let Some((_, other)) = landed.iter().find(|(q, _)| *q == p) {
                    return Err(refused(
                        "container mount",
                        name,
                        format!(
                            "mounts on {other} and {} land on one path inside the root ({}): a symlink in the layer joins them",
                            m.target,
                            p.display()
                        ),
                    ));
                }
                landed.push((p.clone(), &m.target));
                Ok(p)
            };
            match &m.source {
                MountSource::Volume { name: vname, .. } => {
                    let vname = vname.as_ref().map(|v| v.as_str()).unwrap_or("");
                    let id = *volumes
                        .get(vname)
                        .ok_or_else(|| PoolError::VolumeNotFound(vname.to_string()))?;
                    let p = at(Create::Dir)?;
                    self.driver
                        .mount(&LayerChain::volume(id), &p, mode, ROOT_FLAGS)
                        .map_err(|e| PoolError::driver("mount volume", vname, e))?;
                    made.push(p);
                }
                MountSource::Bind { source } => {
                    let p = at(if source.is_dir() {
                        Create::Dir
                    } else {
                        Create::File
                    })?;
                    mount::bind_recursive(source, &p, ROOT_FLAGS.ms(mode))
                        .map_err(|e| PoolError::driver("bind mount", name, e))?;
                    made.push(p);
                }
                MountSource::Tmpfs { size, mode: perm } => {
                    let p = at(Create::Dir)?;
                    mount::tmpfs(&p, *size, *perm, ROOT_FLAGS.ms(mode))
                        .map_err(|e| PoolError::driver("mount tmpfs", name, e))?;
                    made.push(p);
                }
            }
            if i == 0 {
                crash::point("container-mount:partial");
            }
        }
        Ok(())
    }

    /// Unmounts everything at or below `root` (read from the live mount table, deepest first;
    /// again while anything is left, for mounts stacked on one path). `step` is reached after
    /// the first. Returns what was unmounted.
    fn take_down(
        &self,
        name: &str,
        root: &Path,
        step: Option<&'static str>,
    ) -> Result<Vec<PathBuf>> {
        let mut done = Vec::new();
        loop {
            let left = mount::mounts_under(root).map_err(|e| PoolError::backing(&self.name, e))?;
            if left.is_empty() {
                return Ok(done);
            }
            let before = done.len();
            for p in left {
                // The driver's unmount: it also releases what its mount held (a dm device).
                self.driver
                    .unmount(&p)
                    .map_err(|e| PoolError::driver("unmount container", name, e))?;
                done.push(p);
                if done.len() == 1 {
                    if let Some(s) = step {
                        crash::point(s);
                    }
                }
            }
            if done.len() == before {
                return Ok(done);
            }
            if done.len() > 10_000 {
                return Err(refused(
                    "container umount",
                    name,
                    format!("mounts under {} keep coming back", root.display()),
                ));
            }
        }
    }

    /// The container's root as recorded, refused when it is in another mount namespace (its
    /// mounts cannot be seen or taken down from here).
    fn own_root(&self, c: &ContainerRecord) -> Result<Option<PathBuf>> {
        let Some(root) = c.root.clone() else {
            return Ok(None);
        };
        match c.ns {
            Some(ns) if ns != own_ns()? => Err(refused(
                "container umount",
                &c.name,
                format!(
                    "container is mounted at {} in another mount namespace (mnt:[{ns}]); unmount it from there",
                    root.display()
                ),
            )),
            _ => Ok(Some(root)),
        }
    }

    /// `container umount`: takes the root filesystem down, in reverse order. Returns what was
    /// unmounted.
    pub fn container_umount(&mut self, name: &str) -> Result<Vec<PathBuf>> {
        let c = self.container_rec(name)?;
        match c.state {
            ContainerState::Mounted => {}
            s => {
                return Err(refused(
                    "container umount",
                    name,
                    format!("container is {s}, not mounted"),
                ))
            }
        }
        self.unmount_container(
            &c,
            Some(("container-umount:intent", "container-umount:partial")),
        )
    }

    /// Takes `c`'s root down (from whatever state) and records it unmounted.
    pub(super) fn unmount_container(
        &mut self,
        c: &ContainerRecord,
        steps: Option<(&'static str, &'static str)>,
    ) -> Result<Vec<PathBuf>> {
        let root = self.own_root(c)?;
        self.store.tx("record container umount intent", |t| {
            t.set_container_state(&c.name, ContainerState::Unmounting)
        })?;
        if let Some((intent, _)) = steps {
            crash::point(intent);
        }
        let done = match &root {
            Some(r) => self.take_down(&c.name, r, steps.map(|(_, p)| p))?,
            None => Vec::new(),
        };
        self.store.tx("record container umount done", |t| {
            t.set_container_state(&c.name, ContainerState::Created)?;
            t.set_container_root(&c.name, None)
        })?;
        Ok(done)
    }

    /// Recovery of a container left `mounting` or `unmounting` (or `mounted` with nothing
    /// mounted any more): takes down what is left and records it unmounted. One in another
    /// mount namespace is kept. Returns what it did, if anything.
    pub(super) fn recover_container_mount(
        &mut self,
        c: &ContainerRecord,
    ) -> Result<Option<String>> {
        let Some(root) = c.root.clone() else {
            if c.state == ContainerState::Mounted {
                return Ok(None);
            }
            self.store.tx("settle container", |t| {
                t.set_container_state(&c.name, ContainerState::Created)
            })?;
            return Ok(Some(format!("settled container {}", c.name)));
        };
        if c.ns.is_some_and(|ns| own_ns().is_ok_and(|own| own != ns)) {
            return Ok((c.state != ContainerState::Mounted).then(|| {
                format!(
                    "kept container {} {}: its root {} is in another mount namespace",
                    c.name,
                    c.state,
                    root.display()
                )
            }));
        }
        if c.state == ContainerState::Mounted {
            if mount::is_mountpoint(&root).unwrap_or(true) {
                return Ok(None);
            }
            self.unmount_container(c, None)?;
            return Ok(Some(format!(
                "forgot mount of container {} at {} (no longer mounted)",
                c.name,
                root.display()
            )));
        }
        let n = self.unmount_container(c, None)?.len();
        Ok(Some(format!(
            "took down interrupted {} of container {} ({n} mount(s) at {})",
            if c.state == ContainerState::Mounting {
                "mount"
            } else {
                "umount"
            },
            c.name,
            root.display()
        )))
    }

    /// Refuses `op` on the whole pool while a container's root is assembled.
    pub(super) fn refuse_mounted_containers(&self, op: &'static str, hint: &str) -> Result<()> {
        let mounted: Vec<String> = self
            .store
            .containers()?
            .into_iter()
            .filter(|c| c.root.is_some())
            .map(|c| c.name)
            .collect();
        if mounted.is_empty() {
            return Ok(());
        }
        Err(refused(
            op,
            self.name.as_str(),
            format!("containers are mounted: {}{hint}", mounted.join(", ")),
        ))
    }

    /// `pool destroy --force`: takes every container's root down (lazily where it cannot be
    /// unmounted: the pool goes regardless).
    pub(super) fn take_down_containers(&mut self) -> Result<()> {
        for c in self.store.containers()? {
            let Some(root) = c.root.clone() else { continue };
            if let Err(e) = self.unmount_container(&c, None) {
                tracing::warn!(container = %c.name, "{e}; detaching {} lazily", root.display());
                mount::detach_all_under(&root).map_err(|e| PoolError::backing(&self.name, e))?;
            }
        }
        Ok(())
    }
}
