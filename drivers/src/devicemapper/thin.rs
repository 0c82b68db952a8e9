//! Thin devices: the base, snapshots of it as layers, activation, removal and usage.

use super::names::{Names, Role, ThinId};
use super::pool_target::{clear_tableless, pool_status, set_txid, thin_ls};
use super::settings::Settings;
use super::{dm_err, dm_errno, sectors, DmThin, Inner, NAME};
use crate::error::{DriverError, Result};
use crate::fsbacked::FsType;
use crate::sys::{blockdev, mount, signature};
use crate::{
    Bytes, Capabilities, Granularity, LayerChain, Layers, MountFlags, MountMode, MountSpec,
    ObjectId, Usage,
};
use devicemapper as dmc;
use devicemapper::{DevId, DmDevice, DmError, DmFlags, DmOptions, ThinDev, ThinPoolDev, DM};
use std::path::{Path, PathBuf};

/// Where udev (and `dmsetup` without udev) name dm devices.
const MAPPER_DIR: &str = "/dev/mapper";

/// Creates the base thin device, formats it and returns its filesystem UUID.
pub(super) fn make_base(
    dm: &DM,
    names: &Names,
    pool: &ThinPoolDev,
    s: &Settings,
    base_size: Bytes,
) -> Result<String> {
    let id = ThinId::BASE.dev_id();
    let mut base = ThinDev::new(
        dm,
        &names.thin(ThinId::BASE),
        None,
        sectors(base_size),
        pool,
        id,
    )
    .map_err(|e| dm_err("create base thin device in", &*names.pool(), e))?;
    let node = base.devnode();
    let made = crate::fsbacked::mkfs_with(&node, s.fs, &s.mkfs_args).and_then(|()| {
        let (_, uuid) = signature::fs_uuid(&node)?.ok_or_else(|| DriverError::Device {
            device: node.clone(),
            reason: "no filesystem UUID after mkfs".into(),
        })?;
        Ok(uuid)
    });
    let teardown = base
        .teardown(dm)
        .map_err(|e| dm_err("deactivate base device", &*names.thin(ThinId::BASE), e));
    let uuid = made?;
    teardown?;
    set_txid(dm, names, 0, 1)?;
    Ok(uuid)
}

impl DmThin {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn status(&self) -> Result<Box<dmc::ThinPoolWorkingStatus>> {
        let g = self.lock();
        pool_status(&g.dm, &self.names, &g.pool)
    }

    pub(super) fn txid(&self) -> Result<u64> {
        Ok(self.status()?.transaction_id)
    }

    /// Advances the transaction id by one: called once per create and delete.
    pub(super) fn bump(&self) -> Result<()> {
        let t = self.txid()?;
        let g = self.lock();
        set_txid(&g.dm, &self.names, t, t + 1)
    }

    /// Filesystem mount options of every layer's mount, the pool's own and exported: each
    /// snapshot carries the base filesystem's UUID, and xfs refuses duplicates without
    /// `nouuid`.
    fn fs_options(&self) -> Option<&'static str> {
        match self.settings.fs {
            FsType::Xfs => Some("nouuid"),
            _ => None,
        }
    }

    pub(super) fn is_active(&self, dm: &DM, id: ThinId) -> Result<bool> {
        dmc::device_exists(dm, &self.names.thin(id))
            .map_err(|e| dm_err("list devices for", &*self.names.thin(id), e))
    }

    /// The virtual size of thin `id`: its own where it was made with one, else the base's.
    pub(super) fn size_of(&self, id: ThinId) -> Result<Bytes> {
        Ok(self.sizes.get(id)?.unwrap_or(self.base_size))
    }

    /// Activates a thin device (or attaches to it if active).
    pub(super) fn activate(&self, g: &Inner, id: ThinId) -> Result<ThinDev> {
        clear_tableless(&g.dm, &self.names.thin(id))?;
        ThinDev::setup(
            &g.dm,
            &self.names.thin(id),
            None,
            sectors(self.size_of(id)?),
            &g.pool,
            id.dev_id(),
        )
        .map_err(|e| dm_err("activate thin device", &*self.names.thin(id), e))
    }

    /// Runs `f` on the node of thin device `id`, deactivating it afterwards if it was not
    /// active before.
    pub(super) fn with_thin<T>(&self, id: ThinId, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
        let g = self.lock();
        let was_active = self.is_active(&g.dm, id)?;
        let mut dev = self.activate(&g, id)?;
        let out = f(&dev.devnode());
        if !was_active {
            dev.teardown(&g.dm)
                .map_err(|e| dm_err("deactivate thin device", &*self.names.thin(id), e))?;
        }
        out
    }

    /// Removes the dm device of thin `id` if it is active and unused. Busy: Ok(false).
    pub(super) fn deactivate(&self, g: &Inner, id: ThinId) -> Result<bool> {
        let name = self.names.thin(id);
        // Gone already: a deferred remove the kernel completed at the last close, which may
        // happen between any two of these calls (ENXIO). A link export made for it is stale.
        let gone = || {
            self.drop_mapper_link(id);
            Ok(true)
        };
        let enxio = |e: &DmError| dm_errno(e) == Some(nix::errno::Errno::ENXIO);
        if !self.is_active(&g.dm, id)? {
            return gone();
        }
        let info = match g.dm.device_info(&DevId::Name(&name)) {
            Ok(info) => info,
            Err(e) if enxio(&e) => return gone(),
            Err(e) => return Err(dm_err("read device info of", &*name, e)),
        };
        if info.open_count() > 0 {
            return Ok(false);
        }
        match g
            .dm
            .device_remove(&DevId::Name(&name), DmOptions::default())
        {
            Ok(_) => gone(),
            Err(e) if enxio(&e) => gone(),
            Err(e) if dm_errno(&e) == Some(nix::errno::Errno::EBUSY) => Ok(false),
            Err(e) => Err(dm_err("deactivate thin device", &*name, e)),
        }
    }

    /// `/dev/mapper/<name>` of thin `id`, the name containerd's devmapper snapshotter hands out
    /// and users know from `dmsetup ls`, made to point at `node` (the device's `/dev/dm-N`).
    /// udev makes these links; without udev (the VM, minimal hosts) the ioctls alone make none,
    /// and a link left from an earlier activation may name a dm minor that is someone else's
    /// now: so the link is checked against the device number, and replaced when it is wrong.
    pub(super) fn mapper_link(&self, id: ThinId, node: &Path) -> Result<PathBuf> {
        use std::os::unix::fs::MetadataExt;
        let name = self.names.thin(id).to_string();
        let link = Path::new(MAPPER_DIR).join(&name);
        let want = std::fs::metadata(node)
            .map_err(|e| DriverError::io("stat", node, e))?
            .rdev();
        if std::fs::metadata(&link).is_ok_and(|m| m.rdev() == want) {
            return Ok(link);
        }
        // A new name renamed over the old: whoever opens the link meanwhile sees one or the
        // other, never none (two exports at once write the same target).
        let tmp = link.with_file_name(format!(".{name}.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(node, &tmp).map_err(|e| DriverError::io("link", &tmp, e))?;
        std::fs::rename(&tmp, &link).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            DriverError::io("rename into place", &link, e)
        })?;
        Ok(link)
    }

    /// Removes a `/dev/mapper` link of thin `id` once its device is gone, so that it cannot
    /// name a reused dm minor. Nodes that are not symlinks are libdevmapper's: left alone.
    fn drop_mapper_link(&self, id: ThinId) {
        let link = Path::new(MAPPER_DIR).join(self.names.thin(id).to_string());
        if std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
            if let Err(e) = std::fs::remove_file(&link) {
                tracing::warn!("remove stale {}: {e}", link.display());
            }
        }
    }

    pub(super) fn thin_ls(&self) -> Result<Vec<(ThinId, Bytes, Bytes)>> {
        let g = self.lock();
        thin_ls(&g.dm, &self.names, &g.pool)
    }

    pub(super) fn discard_all(&self, id: ThinId, node: &Path) -> Result<()> {
        blockdev::discard(node, self.size_of(id)?)
    }

    /// Sends `msg` (`create_snap N O`, `create_thin N`) making thin `new`, replacing a `new`
    /// a crash left before the store recorded it; `origin`, when active, is suspended around
    /// it (kernel thin-provisioning.txt), which also freezes a filesystem mounted on it so the
    /// snapshot is consistent. Advances the transaction id.
    fn make_thin(&self, new: ThinId, msg: &str, origin: Option<ThinId>) -> Result<()> {
        let g = self.lock();
        let pool = DevId::Name(&self.names.pool());
        let suspend = match origin {
            Some(o) if self.is_active(&g.dm, o)? => Some(self.names.thin(o)),
            _ => None,
        };
        if let Some(name) = &suspend {
            g.dm.device_suspend(
                &DevId::Name(name),
                DmOptions::default().set_flags(DmFlags::DM_SUSPEND),
            )
            .map_err(|e| dm_err("suspend origin", &**name, e))?;
        }
        let mut sent = g.dm.target_msg(&pool, None, msg);
        if let Err(e) = &sent {
            if dm_errno(e) == Some(nix::errno::Errno::EEXIST) {
                // Left by a crash before the store recorded it: replace it.
                let _ = g.dm.target_msg(&pool, None, &format!("delete {new}"));
                sent = g.dm.target_msg(&pool, None, msg);
            }
        }
        // Resume whatever happened, or every later I/O to the origin would hang.
        if let Some(name) = &suspend {
            g.dm.device_suspend(&DevId::Name(name), DmOptions::default())
                .map_err(|e| dm_err("resume origin", &**name, e))?;
        }
        sent.map_err(|e| dm_err("create thin device in", &*self.names.pool(), e))?;
        drop(g);
        self.bump()
    }

    /// The smallest volume the pool's filesystem can be made on (mkfs.xfs refuses under
    /// 300 MiB).
    fn min_volume(&self) -> Bytes {
        match self.settings.fs {
            FsType::Ext4 => Bytes::mib(32),
            _ => Bytes::mib(300),
        }
    }
}

impl Layers for DmThin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            granularity: Granularity::Block { size: self.block },
            native_snapshots: true,
        }
    }

    fn create(&self, layer: &LayerChain) -> Result<()> {
        let new = ThinId::of(layer.id);
        let origin = layer.parent().map_or(ThinId::BASE, ThinId::of);
        // A size left by a crashed volume create of this id is not this layer's.
        self.sizes.forget(new)?;
        self.make_thin(new, &format!("create_snap {new} {origin}"), Some(origin))
    }

    // No limit: a snapshot of the formatted base, as an empty layer. A limit: a thin device of
    // that virtual size with the pool's filesystem made on it, as the base was (same mkfs and
    // arguments), so the filesystem itself ends at the limit (ENOSPC). Its size is recorded
    // before the device is made, for activation after a reboot.
    fn create_volume(&self, id: ObjectId, limit: Option<Bytes>) -> Result<()> {
        let Some(limit) = limit else {
            return self.create(&LayerChain::volume(id));
        };
        let min = self.min_volume();
        if limit < min {
            return Err(DriverError::Refused {
                id,
                op: "create volume",
                reason: format!(
                    "a size of {limit} is below the smallest {} filesystem ({min})",
                    self.settings.fs.name()
                ),
            });
        }
        // Whole 4 KiB blocks: the filesystems' block size, and a whole number of sectors.
        let size = Bytes(limit.div_ceil(Bytes::kib(4)) * 4096);
        let new = ThinId::of(id);
        self.sizes.set(new, size)?;
        self.make_thin(new, &format!("create_thin {new}"), None)?;
        self.with_thin(new, |node| {
            crate::fsbacked::mkfs_with(node, self.settings.fs, &self.settings.mkfs_args)
        })
    }

    // `create_snap NEW SOURCE`: the copy shares every block and has the source's size. A
    // mounted source is frozen for the instant of the snapshot (the suspend) and stays
    // writable. Either can be deleted first: thin devices share blocks, not ancestry.
    fn clone_active(&self, source: &LayerChain, new: ObjectId) -> Result<()> {
        let (from, to) = (ThinId::of(source.id), ThinId::of(new));
        match self.sizes.get(from)? {
            Some(size) => self.sizes.set(to, size)?,
            None => self.sizes.forget(to)?,
        }
        self.make_thin(to, &format!("create_snap {to} {from}"), Some(from))
            .map_err(|e| match e.errno() {
                Some(nix::errno::Errno::ENODATA) => DriverError::NotFound {
                    id: source.id,
                    op: "clone",
                },
                _ => e,
            })
    }

    // The pool mounts committed layers read-only; nothing to freeze at the block level.
    fn commit(&self, _layer: &LayerChain) -> Result<()> {
        Ok(())
    }

    fn mount(
        &self,
        layer: &LayerChain,
        target: &Path,
        mode: MountMode,
        flags: MountFlags,
    ) -> Result<()> {
        let g = self.lock();
        let id = ThinId::of(layer.id);
        let dev = self.activate(&g, id)?;
        let ms = flags.ms(mode);
        let data = self.fs_options();
        let r = mount::mount(&dev.devnode(), target, self.settings.fs.name(), ms, data);
        if r.is_err() {
            let _ = self.deactivate(&g, id);
        }
        r
    }

    // The device stays active for the other process's mounts; `remove` (or an `unmount` of
    // the pool's own that finds it unused) deactivates it. Each snapshot carries the base's
    // filesystem UUID, hence the same `fs_options` as the pool's own mounts.
    fn export(
        &self,
        layer: &LayerChain,
        mode: MountMode,
        flags: MountFlags,
    ) -> Result<Vec<MountSpec>> {
        let g = self.lock();
        let id = ThinId::of(layer.id);
        let was_active = self.is_active(&g.dm, id)?;
        let mut dev = self.activate(&g, id)?;
        let link = match self.mapper_link(id, &dev.devnode()) {
            Ok(l) => l,
            Err(e) => {
                if !was_active {
                    let _ = dev.teardown(&g.dm);
                }
                return Err(e);
            }
        };
        Ok(vec![MountSpec::new(
            self.settings.fs.name(),
            link.display().to_string(),
            self.fs_options().map(str::to_string),
            mode,
            flags,
        )])
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        // Which thin device is mounted there, to deactivate it once unused.
        let canon = target
            .canonicalize()
            .unwrap_or_else(|_| target.to_path_buf());
        let source = mount::mountinfo()?
            .into_iter()
            .find(|m| m.target == canon)
            .map(|m| m.source);
        mount::unmount(target)?;
        let Some(src) = source else { return Ok(()) };
        let Some(dm_n) = Path::new(&src)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
        else {
            return Ok(());
        };
        let name = blockdev::dm_name(&dm_n).unwrap_or_default();
        // Only layers are mounted (the base never is).
        let Some(Role::Thin(id)) = self.names.role_of(&name) else {
            return Ok(());
        };
        if id.layer().is_none() {
            return Ok(());
        }
        let g = self.lock();
        // Still mounted elsewhere (another view): leave it active.
        self.deactivate(&g, id).map(drop)
    }

    fn remove(&self, id: ObjectId) -> Result<()> {
        let n = ThinId::of(id);
        let g = self.lock();
        if self.settings.discard && !self.is_active(&g.dm, n)? {
            // Discard while the device is unused, so the pool and the loopback file get the
            // space back (deleting a thin id frees pool blocks but passes no discard down).
            if let Ok(mut dev) = self.activate(&g, n) {
                let r = self.discard_all(n, &dev.devnode());
                let _ = dev.teardown(&g.dm);
                if let Err(e) = r {
                    tracing::info!(layer = %id, "discard skipped: {e}");
                }
            }
        }
        if !self.deactivate(&g, n)? {
            // Open somewhere, perhaps in a leaked mount namespace: let the kernel remove the
            // device when its last user goes, and delete the thin id on a later try.
            let name = self.names.thin(n);
            let _ = g.dm.device_remove(
                &DevId::Name(&name),
                DmOptions::default().set_flags(DmFlags::DM_DEFERRED_REMOVE),
            );
            return Err(DriverError::Busy {
                id,
                op: "remove",
                reason: format!("thin device {} is open", &*name),
            });
        }
        let pool = DevId::Name(&self.names.pool());
        let msg = format!("delete {n}");
        let mut tries = 0;
        loop {
            match g.dm.target_msg(&pool, None, &msg) {
                Ok(_) => break,
                // Not in the pool: a crash after the delete, or never created.
                Err(e) if dm_errno(&e) == Some(nix::errno::Errno::ENODATA) => {
                    return self.sizes.forget(n)
                }
                // Right after a deferred remove the kernel may still hold the device briefly.
                Err(e) if dm_errno(&e) == Some(nix::errno::Errno::EBUSY) && tries < 10 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(30));
                }
                Err(e) if dm_errno(&e) == Some(nix::errno::Errno::EBUSY) => {
                    return Err(DriverError::Busy {
                        id,
                        op: "remove",
                        reason: "the thin id is still in use".into(),
                    })
                }
                Err(e) => return Err(dm_err("delete thin device from", &*self.names.pool(), e)),
            }
        }
        drop(g);
        // After the delete: a crash in between leaves a record the retried remove drops.
        self.sizes.forget(n)?;
        self.bump()
    }

    fn list(&self) -> Result<Vec<ObjectId>> {
        Ok(self
            .thin_ls()?
            .into_iter()
            .filter_map(|(id, _, _)| id.layer())
            .collect())
    }

    fn usage(&self, layer: &LayerChain) -> Result<Usage> {
        self.usage_many(std::slice::from_ref(layer))
            .pop()
            .expect("one result per layer")
    }

    // One thin_ls for all: 200 layers took 57 s one by one in the VM.
    fn usage_many(&self, layers: &[LayerChain]) -> Vec<Result<Usage>> {
        let all = match self.thin_ls() {
            Ok(all) => all,
            Err(e) => {
                return DriverError::for_each_layer("read usage (thin_ls) of layer", layers, &e)
            }
        };
        let by_id: std::collections::HashMap<ThinId, (Bytes, Bytes)> =
            all.into_iter().map(|(i, e, m)| (i, (e, m))).collect();
        layers
            .iter()
            .map(|l| {
                let (excl, mapped) = by_id.get(&ThinId::of(l.id)).ok_or(DriverError::NotFound {
                    id: l.id,
                    op: "usage",
                })?;
                Ok(Usage {
                    bytes: *excl,
                    inodes: None,
                    referenced: Some(*mapped),
                })
            })
            .collect()
    }
}
