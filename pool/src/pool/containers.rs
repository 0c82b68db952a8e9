//! Containers: a writable layer on an image plus the mounts it records (`blkdrv container`).
//!
//! The container row is recorded with its writable layer's `creating` row (owner
//! `container`), in one transaction; volumes its create makes carry its name (`made_by`) until
//! the create completes, so a crash anywhere in between is undone whole by the next writer.
//! While its root is being assembled or taken down (`mounting`, `unmounting`) the row holds the
//! root and the mount namespace: what is mounted at or below the root is then read from the
//! live mount table, so an interrupted mount or umount can be taken down completely.
//!
//! Semantics (documented for the CLI):
//! - A volume mount fills the volume from the image's directory at the target when the volume
//!   is empty (but `lost+found`) and no other container names it, unless `nocopy`: new volumes
//!   always, an existing empty one too (Docker's rule). A missing or non-directory target in
//!   the image fills nothing. A failed create removes the volumes it made; content it copied
//!   into an existing empty volume stays.
//! - Mount targets are resolved inside the root at `container mount` (symlinks in the layer
//!   followed, never out of it); two targets a symlink joins into one path are refused.
//! - `container rm --volumes` removes the container's anonymous volumes that no other
//!   container names; named volumes always stay.

use super::layers::{Make, NewLayer};
use super::types::{
    ContainerInfo, ContainerRemoved, ContainerSpec, ContainerState, LayerInfo, RemoveOutcome,
    VolumeSpec,
};
use super::volumes::{anonymous_name, user_refusal, users_of};
use super::{mkdir, now, Pool};
use crate::container::{ContainerName, ContainerPath, MountEntry, MountSource, VolumeName};
use crate::crash;
use crate::error::{PoolError, Result};
use crate::layer::{LayerComment, LayerKind, LayerName, LayerOwner, LayerRecord, LayerState};
use crate::store::ContainerRecord;
use blkdrv_drivers::sys::mount;
use blkdrv_drivers::sys::rootpath::{self, Create};
use blkdrv_drivers::sys::tree;
use blkdrv_drivers::{DriverError, LayerChain, MountFlags, MountMode, ObjectId};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// A container's root and what is mounted in it: device nodes stay unopenable (as layer
/// mounts), setuid programs work (it is a container's root, not an inspection mount).
pub(super) const ROOT_FLAGS: MountFlags = MountFlags {
    nodev: true,
    nosuid: false,
};

/// The order `container mount` mounts in: parents first (a mount's target has more components
/// than any target it lies below); mounts at one depth keep the order they were given in.
pub(super) fn mount_order(mounts: &[MountEntry]) -> Vec<&MountEntry> {
    let mut v: Vec<&MountEntry> = mounts.iter().collect();
    v.sort_by_key(|m| m.target.components().count());
    v
}

/// Two mounts on one target (after normalisation) are refused, as Docker refuses them.
fn check_targets(mounts: &[MountEntry]) -> Result<()> {
    MountEntry::check_distinct_targets(mounts)
}

/// A volume a container's create makes: its name, and whether it is anonymous.
type NewVolume = (VolumeName, bool);

fn is_not_found(e: &DriverError) -> bool {
    match e {
        DriverError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        DriverError::Sys { source, .. } => *source == nix::errno::Errno::ENOENT,
        _ => false,
    }
}

/// Whether a mounted volume holds nothing (but the `lost+found` its filesystem may have).
fn is_empty(dir: &Path) -> Result<bool> {
    let mut entries = std::fs::read_dir(dir).map_err(|e| PoolError::io("read volume", dir, e))?;
    Ok(entries.all(|e| e.is_ok_and(|e| e.file_name() == "lost+found")))
}

pub(super) fn refused(op: &'static str, name: &str, reason: String) -> PoolError {
    PoolError::Refused {
        op,
        layer: name.to_string(),
        reason,
    }
}

impl Pool {
    pub(super) fn container_rec(&self, name: &str) -> Result<ContainerRecord> {
        self.store
            .container(name)?
            .ok_or_else(|| PoolError::ContainerNotFound(name.to_string()))
    }

    /// Checks `spec.mounts` before anything is made and returns them as they will be recorded
    /// (bind sources canonical, anonymous volumes named), with the names of the volumes to make
    /// (anonymous or not).
    fn plan_mounts(&self, spec: &ContainerSpec) -> Result<(Vec<MountEntry>, Vec<NewVolume>)> {
        check_targets(&spec.mounts)?;
        let mut out = Vec::new();
        let mut to_make: Vec<NewVolume> = Vec::new();
        for m in &spec.mounts {
            let source = match &m.source {
                MountSource::Volume {
                    name,
                    anonymous,
                    nocopy,
                } => {
                    let (n, anon) = match name {
                        Some(n) => (n.clone(), *anonymous),
                        None => (anonymous_name()?, true),
                    };
                    match self.store.volume(n.as_str())? {
                        Some(v) => {
                            let state = self.store.layer(v.layer)?.map(|l| l.state);
                            if state != Some(LayerState::Active) {
                                return Err(PoolError::Refused {
                                    op: "container create",
                                    layer: n.to_string(),
                                    reason: format!(
                                        "volume {n} is {}",
                                        state.map_or("missing".into(), |s| s.to_string())
                                    ),
                                });
                            }
                        }
                        None if !to_make.iter().any(|(t, _)| *t == n) => {
                            to_make.push((n.clone(), anon))
                        }
                        None => {}
                    }
                    MountSource::Volume {
                        name: Some(n),
                        anonymous: anon,
                        nocopy: *nocopy,
                    }
                }
                MountSource::Bind { source } => {
                    if !source.is_absolute() {
                        return Err(PoolError::Invalid(format!(
                            "bind source {} must be an absolute path",
                            source.display()
                        )));
                    }
                    let canon = source.canonicalize().map_err(|e| {
                        PoolError::Invalid(format!(
                            "bind source {} does not exist: {e}",
                            source.display()
                        ))
                    })?;
                    MountSource::Bind { source: canon }
                }
                MountSource::Tmpfs { size, mode } => {
                    if mode.is_some_and(|m| m > 0o7777) {
                        return Err(PoolError::Invalid(format!(
                            "tmpfs mode {:o} is not a permission mode",
                            mode.unwrap_or(0)
                        )));
                    }
                    if size.is_some_and(|s| s.0 == 0) {
                        return Err(PoolError::Invalid("tmpfs size must be more than 0".into()));
                    }
                    m.source.clone()
                }
            };
            out.push(MountEntry {
                source,
                target: m.target.clone(),
                readonly: m.readonly,
            });
        }
        Ok((out, to_make))
    }

    /// `container create`: the writable layer on `spec.image`, named volumes that do not exist
    /// created, anonymous ones made, new empty volumes filled from the image's directory at
    /// their target (unless `nocopy`). Nothing is created when any part is refused.
    pub fn container_create(
        &mut self,
        name: &ContainerName,
        spec: &ContainerSpec,
    ) -> Result<ContainerInfo> {
        if self.store.container(name.as_str())?.is_some() {
            return Err(PoolError::ContainerExists(name.to_string()));
        }
        let image = self.lookup(&spec.image).map_err(|e| match e {
            PoolError::LayerNotFound(i) => refused(
                "container create",
                name.as_str(),
                format!("image layer {i:?} does not exist"),
            ),
            e => e,
        })?;
        if image.state != LayerState::Committed {
            return Err(refused(
                "container create",
                name.as_str(),
                format!(
                    "image layer {:?} is {} (only committed layers are images; run `blkdrv layer commit {}`)",
                    spec.image, image.state, spec.image
                ),
            ));
        }
        self.check_limit("container create", name.as_str(), spec.limit)?;
        let (mounts, to_make) = self.plan_mounts(spec)?;
        for (v, _) in &to_make {
            self.check_volume_spec(v, &VolumeSpec::default())?;
        }
        self.ensure_space()?;
        let row = |rec: &LayerRecord| ContainerRecord {
            name: name.to_string(),
            layer: rec.id,
            image: image.id,
            mounts: mounts.clone(),
            state: ContainerState::Creating,
            created: now(),
            root: None,
            ns: None,
        };
        let (rec, chain) = self
            .begin_create(
                NewLayer {
                    label: name.as_str(),
                    pending_name: None,
                    parent: Some(image.id),
                    kind: LayerKind::Container,
                    digest: None,
                    limit: spec.limit,
                    steps: ["container-create:intent", "container-create:object"],
                    make: Make::Layer,
                },
                |t, rec| {
                    t.set_owner(rec.id, LayerOwner::Container)?;
                    t.insert_container(&row(rec))
                },
            )
            .map_err(|e| user_refusal("container create", name.as_str(), e))?;
        let work = (|| {
            for (v, anonymous) in &to_make {
                self.make_volume(v, &VolumeSpec::default(), *anonymous, Some(name.as_str()))?;
            }
            // As Docker: a volume no other container uses is filled when it is empty (new ones
            // always are), unless the mount says nocopy.
            let volumes: HashMap<String, ObjectId> = self
                .store
                .volumes()?
                .into_iter()
                .map(|v| (v.name, v.layer))
                .collect();
            let containers = self.store.containers()?;
            let mut fills = Vec::new();
            for m in &mounts {
                if let MountSource::Volume {
                    name: Some(n),
                    nocopy: false,
                    ..
                } = &m.source
                {
                    let others = users_of(&containers, n.as_str())
                        .iter()
                        .any(|u| u != name.as_str());
                    if let (false, Some(id)) = (others, volumes.get(n.as_str())) {
                        fills.push((m.target.clone(), *id));
                    }
                }
            }
            crash::point("container-create:volumes");
            self.fill_volumes(&chain, name.as_str(), &fills)?;
            crash::point("container-create:filled");
            self.store.tx("record container create done", |t| {
                t.set_state(rec.id, LayerState::Active)?;
                t.set_container_state(name.as_str(), ContainerState::Created)?;
                t.release_volumes(name.as_str())
            })
        })();
        if let Err(e) = work {
            return Err(e.with_rollback(self.undo_container_create(name.as_str())));
        }
        self.container_info(&self.container_rec(name.as_str())?, false)
    }

    fn fill_dir(&self, layer: ObjectId) -> PathBuf {
        self.tmp_dir().join(format!("fill-{layer}"))
    }

    /// Fills each empty volume from the image's directory at its target (as Docker does for a
    /// new, empty volume): the writable layer mounted read-only, the target resolved inside it
    /// (a missing directory: nothing to copy), the content copied into the mounted volume.
    fn fill_volumes(
        &mut self,
        layer: &LayerChain,
        name: &str,
        fills: &[(ContainerPath, ObjectId)],
    ) -> Result<()> {
        if fills.is_empty() {
            return Ok(());
        }
        let base = self.fill_dir(layer.id);
        let root = base.join("root");
        mkdir(&root)?;
        self.driver
            .mount(layer, &root, MountMode::ReadOnly, MountFlags::INERT)
            .map_err(|e| PoolError::driver("mount for volume fill", name, e))?;
        let mut mounted = vec![root.clone()];
        let filled = (|| {
            for (target, vid) in fills {
                let comps: Vec<&str> = target.components().collect();
                let src = match rootpath::resolve_in_root(&root, &comps, Create::No) {
                    Ok(p) if p.is_dir() => p,
                    Ok(_) => continue,
                    Err(e) if is_not_found(&e) => continue,
                    Err(e) => {
                        return Err(PoolError::driver("resolve volume target in image", name, e))
                    }
                };
                let dst = base.join(format!("vol-{vid}"));
                mkdir(&dst)?;
                self.driver
                    .mount(
                        &LayerChain::volume(*vid),
                        &dst,
                        MountMode::ReadWrite,
                        MountFlags::INERT,
                    )
                    .map_err(|e| PoolError::driver("mount volume for fill", name, e))?;
                mounted.push(dst.clone());
                if is_empty(&dst)? {
                    tree::copy_tree(&src, &dst)
                        .map_err(|e| PoolError::driver("fill volume from image", name, e))?;
                }
                // Flushed here: the fill's cost is the create's.
                let unmounted = self
                    .driver
                    .unmount(&dst)
                    .map_err(|e| PoolError::driver("unmount filled volume", name, e));
                mounted.pop();
                unmounted?;
                let _ = std::fs::remove_dir(&dst);
            }
            Ok(())
        })();
        let mut cleanup = Ok(());
        for m in mounted.iter().rev() {
            if let Err(e) = self.driver.unmount(m) {
                cleanup = Err(PoolError::driver("unmount after volume fill", name, e));
            }
            let _ = std::fs::remove_dir(m);
        }
        let _ = std::fs::remove_dir(&base);
        match filled {
            Ok(()) => cleanup,
            Err(e) => Err(e.with_rollback(cleanup)),
        }
    }

    /// Undoes a container's create, whatever it got to: fill mounts, the volumes it made, its
    /// writable layer with its row.
    pub(super) fn undo_container_create(&mut self, name: &str) -> Result<()> {
        let c = self.store.container(name)?;
        if let Some(c) = &c {
            let base = self.fill_dir(c.layer);
            mount::detach_all_under(&base).map_err(|e| PoolError::backing(&self.name, e))?;
            let _ = std::fs::remove_dir(base.join("root"));
            let _ = std::fs::remove_dir(&base);
        }
        for v in self.store.volumes()? {
            if v.made_by.as_deref() == Some(name) {
                self.undo_create(v.layer)?;
            }
        }
        match c {
            Some(c) => self.undo_create(c.layer),
            None => Ok(()),
        }
    }

    fn container_info(&self, c: &ContainerRecord, measure: bool) -> Result<ContainerInfo> {
        let names = self.names_by_layer()?;
        let size = if measure {
            match self.store.layer(c.layer)? {
                Some(rec) => self
                    .driver
                    .usage(&self.chain(&rec)?)
                    .ok()
                    .map(|u| u.bytes.0),
                None => None,
            }
        } else {
            None
        };
        Ok(ContainerInfo {
            name: c.name.clone(),
            state: c.state,
            image: Self::display_name(&names, c.image),
            image_id: c.image.get(),
            layer_id: c.layer.get(),
            created: c.created,
            mounts: c.mounts.clone(),
            root: c.root.clone(),
            size_bytes: size,
        })
    }

    pub fn container_list(&self) -> Result<Vec<ContainerInfo>> {
        self.store
            .containers()?
            .iter()
            .map(|c| self.container_info(c, false))
            .collect()
    }

    /// `container inspect`: one container, its writable layer's usage measured.
    pub fn container_inspect(&self, name: &str) -> Result<ContainerInfo> {
        self.container_info(&self.container_rec(name)?, true)
    }

    /// `container commit`: a committed image layer `layer` holding the writable layer's
    /// content now (volumes, binds and tmpfs excluded), on the container's image. The
    /// container goes on as it was.
    pub fn container_commit(
        &mut self,
        name: &str,
        layer: &LayerName,
        comment: Option<&LayerComment>,
    ) -> Result<LayerInfo> {
        let c = self.container_rec(name)?;
        if matches!(c.state, ContainerState::Creating | ContainerState::Removing) {
            return Err(refused(
                "container commit",
                name,
                format!("container is {}", c.state),
            ));
        }
        self.ensure_name_free(layer)?;
        let rec = self
            .store
            .layer(c.layer)?
            .ok_or_else(|| PoolError::ContainerNotFound(name.to_string()))?;
        let source = self.chain(&rec)?;
        self.ensure_space()?;
        let (new, chain) = self
            .begin_create(
                NewLayer {
                    label: layer.as_str(),
                    pending_name: Some(layer.to_string()),
                    parent: rec.parent,
                    kind: LayerKind::Container,
                    digest: None,
                    limit: None,
                    steps: ["container-commit:intent", "container-commit:object"],
                    make: Make::Clone(source),
                },
                |t, r| match comment {
                    Some(cm) => t.set_comment(r.id, cm.as_str()).map(drop),
                    None => Ok(()),
                },
            )
            .map_err(|e| user_refusal("container commit", name, e))?;
        let done = (|| {
            let committed = LayerChain {
                active: false,
                ..chain
            };
            self.driver
                .commit(&committed)
                .map_err(|e| PoolError::driver("commit", layer.as_str(), e))?;
            let usage = self.measure(&committed);
            self.store.tx("record container commit done", |t| {
                t.set_committed(new.id, usage, None)?;
                t.bind_name(layer.as_str(), new.id)
            })
        })();
        if let Err(e) = done {
            return Err(e.with_rollback(self.undo_create(new.id)));
        }
        self.info(new.id)
    }

    /// `container rm`: destroys the writable layer with the container; named volumes stay,
    /// anonymous ones go with `volumes` (unless another container names them). A mounted
    /// container is refused unless `force` (which unmounts first).
    pub fn container_remove(
        &mut self,
        name: &str,
        volumes: bool,
        force: bool,
    ) -> Result<ContainerRemoved> {
        let mut c = self.container_rec(name)?;
        match c.state {
            ContainerState::Created | ContainerState::Removing => {}
            ContainerState::Creating => {
                return Err(refused(
                    "container rm",
                    name,
                    "container is being created".into(),
                ))
            }
            _ if !force => {
                return Err(refused(
                    "container rm",
                    name,
                    format!(
                        "container is mounted at {} (run `blkdrv container umount {name}` or use --force)",
                        c.root.as_deref().unwrap_or(Path::new("?")).display()
                    ),
                ))
            }
            _ => {
                self.unmount_container(&c, None)?;
                c = self.container_rec(name)?;
            }
        }
        let others: Vec<ContainerRecord> = self
            .store
            .containers()?
            .into_iter()
            .filter(|o| o.name != name)
            .collect();
        let mut anon = Vec::new();
        if volumes {
            for m in &c.mounts {
                if let MountSource::Volume {
                    name: Some(v),
                    anonymous: true,
                    ..
                } = &m.source
                {
                    if !users_of(&others, v.as_str()).is_empty() {
                        continue;
                    }
                    if let Some(rec) = self.store.volume(v.as_str())? {
                        let st = self.store.layer(rec.layer)?.map(|l| l.state);
                        if matches!(st, Some(LayerState::Active | LayerState::Removing))
                            && !anon
                                .iter()
                                .any(|(n, _): &(String, ObjectId)| n == v.as_str())
                        {
                            anon.push((v.to_string(), rec.layer));
                        }
                    }
                }
            }
        }
        let rec = self
            .store
            .layer(c.layer)?
            .ok_or_else(|| PoolError::ContainerNotFound(name.to_string()))?;
        let outcome = if rec.state == LayerState::Removing {
            // A deferred removal: try again.
            match self.finish_remove(rec.id) {
                Ok(()) => RemoveOutcome::Removed,
                Err(PoolError::Driver { source, .. })
                    if matches!(*source, DriverError::Busy { .. }) =>
                {
                    RemoveOutcome::Deferred
                }
                Err(e) => return Err(e),
            }
        } else {
            let prior: Vec<(ObjectId, LayerState)> = anon
                .iter()
                .filter_map(|(_, id)| self.store.layer(*id).ok().flatten().map(|l| (*id, l.state)))
                .collect();
            self.remove_record(
                &rec,
                name,
                "container-remove:intent",
                |t| {
                    t.set_container_state(name, ContainerState::Removing)?;
                    for (_, id) in &anon {
                        t.set_state(*id, LayerState::Removing)?;
                    }
                    Ok(())
                },
                |t| {
                    t.set_container_state(name, ContainerState::Created)?;
                    for (id, st) in &prior {
                        t.set_state(*id, *st)?;
                    }
                    Ok(())
                },
            )?
        };
        crash::point("container-remove:layer");
        let mut removed = Vec::new();
        for (v, id) in anon {
            match self.finish_remove(id) {
                Ok(()) => removed.push(v),
                Err(PoolError::Driver { source, .. })
                    if matches!(*source, DriverError::Busy { .. }) =>
                {
                    self.notices
                        .push(format!("removal of volume {v} deferred: {source}"));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(ContainerRemoved {
            name: name.to_string(),
            volumes_removed: removed,
            deferred: outcome == RemoveOutcome::Deferred,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(target: &str) -> MountEntry {
        MountEntry {
            source: MountSource::Tmpfs {
                size: None,
                mode: None,
            },
            target: ContainerPath::new(target).unwrap(),
            readonly: false,
        }
    }

    #[test]
    fn mounts_go_parents_first_and_keep_their_order_otherwise() {
        let ms = [
            entry("/a/b/c"),
            entry("/z"),
            entry("/a/b"),
            entry("/a"),
            entry("/y"),
        ];
        let order: Vec<&str> = mount_order(&ms).iter().map(|m| m.target.as_str()).collect();
        assert_eq!(order, ["/z", "/a", "/y", "/a/b", "/a/b/c"]);
        // Every mount comes after each mount it lies below.
        for (i, m) in mount_order(&ms).iter().enumerate() {
            for later in &mount_order(&ms)[i + 1..] {
                assert!(
                    !m.target.is_below(&later.target),
                    "{} before {}",
                    m.target,
                    later.target
                );
            }
        }
    }

    #[test]
    fn two_mounts_on_one_target_are_refused_after_normalisation() {
        assert!(check_targets(&[entry("/data"), entry("/other")]).is_ok());
        let e = check_targets(&[entry("/data/"), entry("//data")]).unwrap_err();
        assert!(e.is_user_error() && e.to_string().contains("/data"), "{e}");
    }
}
