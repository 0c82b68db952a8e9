//! btrfs: every layer is a subvolume. An empty layer is a new subvolume, an active layer a
//! writable snapshot of its committed parent, and commit sets the read-only flag, so a committed
//! layer can never change again. Copy-on-write is per extent and a snapshot costs the same
//! whatever the parent's size.
//!
//! Talks to the kernel through btrfs-uapi (ioctls on file descriptors, no CLI, no process-wide
//! current directory) and reads quota group figures from sysfs. Sizes come from qgroups, never
//! from walking files, so pools are created with quotas on unless `quota=off`.

use crate::error::{DriverError, Result};
use crate::fsbacked::{self, FsBacking, FsType};
use crate::plan::{OptionKind, OptionSpec};
use crate::sys::mount;
use crate::{Backing, BenchHooks, Layers};
use crate::{
    Bytes, Capabilities, Driver, DriverFactory, DriverOptions, Granularity, Identity, LayerChain,
    MountFlags, MountMode, MountSpec, ObjectId, PoolContext, Requirements, Space, Usage,
};
use btrfs_uapi::{filesystem, quota, space, subvolume, tree_search};
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const NAME: &str = "btrfs";
const KEY_QUOTA: &str = "quota";
const OPTIONS: &[OptionSpec] = &[OptionSpec::flag(
    KEY_QUOTA,
    "no-quota",
    "",
    "Do not enable quotas (no per-layer sizes or limits, slightly faster writes); -o quota=off.",
)
.kind(OptionKind::Switch { value: "off" })];
/// mkfs.btrfs refuses single-device filesystems much under this.
const MIN_SIZE: Bytes = Bytes(256 << 20);

// Kernel tree constants (include/uapi/linux/btrfs_tree.h): deleted subvolumes waiting for the
// cleaner are orphan items of the root tree.
const ROOT_TREE_OBJECTID: u64 = 1;
const ORPHAN_OBJECTID: u64 = -5i64 as u64;
const ORPHAN_ITEM_KEY: u32 = 48;

pub struct Factory;

/// The driver's options, parsed: the one reader of its option map.
struct Settings {
    /// Quota groups on (the default): per-layer sizes and limits.
    quota: bool,
}

impl Settings {
    fn parse(options: &DriverOptions) -> Result<Settings> {
        crate::options::check_known(NAME, options, &crate::plan::stored_keys(OPTIONS))?;
        let quota = match options.get(KEY_QUOTA) {
            Some(v) => crate::options::on_off(NAME, KEY_QUOTA, v)?,
            None => true,
        };
        Ok(Settings { quota })
    }
}

impl DriverFactory for Factory {
    fn name(&self) -> &'static str {
        NAME
    }

    // Layers on the state directory's own filesystem: its copy-on-write, no second one.
    fn suits(&self, host: &crate::HostFacts) -> Option<crate::Suitability> {
        (host.state_fs.as_deref() == Some("btrfs")).then(|| crate::Suitability {
            rank: 100,
            why: "the state directory is on btrfs: its own copy-on-write".into(),
        })
    }

    fn description(&self) -> &'static str {
        "btrfs subvolumes and snapshots (extent copy-on-write, qgroup accounting)"
    }

    fn requirements(&self) -> Requirements {
        Requirements {
            filesystems: vec!["btrfs"],
            tools: vec!["mkfs.btrfs"],
            paths: vec!["/dev/loop-control"],
        }
    }

    fn options(&self) -> &'static [OptionSpec] {
        OPTIONS
    }

    fn validate_options(&self, options: &DriverOptions) -> Result<DriverOptions> {
        let s = Settings::parse(options)?;
        let mut out = DriverOptions::new();
        out.insert(KEY_QUOTA.into(), if s.quota { "on" } else { "off" }.into());
        Ok(out)
    }

    fn min_device_size(&self, _options: &DriverOptions) -> Bytes {
        MIN_SIZE
    }

    fn format(&self, ctx: &PoolContext) -> Result<Identity> {
        fsbacked::format_as(ctx, FsType::Btrfs)
    }

    fn open(&self, ctx: &PoolContext, identity: &Identity) -> Result<Box<dyn Driver>> {
        let backing = FsBacking::open_as(ctx, identity, FsType::Btrfs, NAME)?;
        let uuid = backing.uuid.clone();
        let quota = Settings::parse(&ctx.options)?.quota;
        let d = Btrfs {
            backing,
            uuid,
            quota,
        };
        if quota && !d.quota_enabled() {
            // First open (pool init), or quotas turned off behind our back.
            let fd = d.open_dir(&d.backing.mnt)?;
            quota::quota_enable(fd.as_fd(), false)
                .map_err(|e| DriverError::sys("enable quotas on", d.backing.mnt.display(), e))?;
            quota::quota_rescan_wait(fd.as_fd()).map_err(|e| {
                DriverError::sys("wait for quota rescan on", d.backing.mnt.display(), e)
            })?;
        }
        Ok(Box::new(d))
    }
}

pub struct Btrfs {
    backing: FsBacking,
    uuid: String,
    quota: bool,
}

impl Btrfs {
    fn layers_dir(&self) -> PathBuf {
        self.backing.mnt.join(NAME)
    }

    fn path(&self, id: ObjectId) -> PathBuf {
        self.layers_dir().join(id.to_string())
    }

    fn open_dir(&self, p: &Path) -> Result<OwnedFd> {
        open(
            p,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| DriverError::sys("open", p.display(), e))
    }

    fn no_quota(&self, id: ObjectId) -> DriverError {
        DriverError::Unsupported {
            driver: NAME,
            what: format!("size limits on a pool made with quotas off (object {id})"),
        }
    }

    fn sysfs(&self) -> PathBuf {
        PathBuf::from("/sys/fs/btrfs").join(&self.uuid)
    }

    fn quota_enabled(&self) -> bool {
        std::fs::read_to_string(self.sysfs().join("qgroups/enabled")).is_ok_and(|s| s.trim() == "1")
    }

    /// The subvolume id of a layer (its qgroup is 0/<id>).
    fn subvol_id(&self, id: ObjectId) -> Result<u64> {
        let fd = self.open_dir(&self.path(id))?;
        subvolume::subvolume_info(fd.as_fd())
            .map(|i| i.id)
            .map_err(|e| DriverError::sys("read subvolume info of layer", id, e))
    }

    /// Where a layer's subvolume (or one below it) is mounted, other than our own pool mount,
    /// in any mount namespace (a subvolume mounted in a service's namespace is still in use).
    fn mounted_at(&self, id: ObjectId) -> Result<mount::Users> {
        let tables = mount::NsTables::read()?;
        let Some(pool_mount) = tables
            .tables()
            .next()
            .and_then(|(_, _, own)| own.iter().find(|m| m.target == self.backing.mnt))
            .cloned()
        else {
            return Ok(mount::Users::default());
        };
        let root = format!("/{NAME}/{id}");
        Ok(mount::Users::of(
            &tables,
            tables
                .all()
                .filter(|(_, _, m)| m.fstype == "btrfs" && m.major_minor == pool_mount.major_minor)
                .filter(|(_, _, m)| m.root == root || m.root.starts_with(&format!("{root}/"))),
        ))
    }

    /// Subvolumes nested anywhere below `top`, deepest first (the order to delete them in).
    fn nested(&self, top: u64) -> Result<Vec<u64>> {
        let fd = self.open_dir(&self.backing.mnt)?;
        let all = subvolume::subvolume_list(fd.as_fd())
            .map_err(|e| DriverError::sys("list subvolumes of", self.backing.mnt.display(), e))?;
        let mut found = Vec::new();
        let mut frontier = vec![top];
        while let Some(p) = frontier.pop() {
            for s in all.iter().filter(|s| s.parent_id == p) {
                found.push(s.root_id);
                frontier.push(s.root_id);
            }
        }
        // Children were found after their parents; delete in reverse.
        found.reverse();
        Ok(found)
    }

    fn read_qgroup(&self, subvol: u64, field: &str) -> Option<u64> {
        std::fs::read_to_string(self.sysfs().join(format!("qgroups/0_{subvol}/{field}")))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    /// Subvolume ids of deleted subvolumes the cleaner has not dropped yet (the offset of their
    /// orphan items).
    fn deleted_subvolumes(&self) -> Result<Vec<u64>> {
        let fd = self.open_dir(&self.backing.mnt)?;
        let mut ids = Vec::new();
        let filter = tree_search::SearchFilter::for_objectid_range(
            ROOT_TREE_OBJECTID,
            ORPHAN_ITEM_KEY,
            ORPHAN_OBJECTID,
            ORPHAN_OBJECTID,
        );
        tree_search::tree_search(fd.as_fd(), filter, |h, _| {
            ids.push(h.offset);
            Ok(())
        })
        .map_err(|e| DriverError::sys("search orphan items of", self.backing.mnt.display(), e))?;
        Ok(ids)
    }

    /// What deleted subvolumes still hold: their qgroups keep counting exclusive bytes until
    /// the cleaner has dropped them. `None` when that is unknown (quotas off).
    fn pending_bytes(&self, deleted: &[u64]) -> Option<Bytes> {
        if deleted.is_empty() {
            return Some(Bytes(0));
        }
        if !self.quota {
            return None;
        }
        let sum = deleted
            .iter()
            .map(|&id| self.read_qgroup(id, "exclusive").unwrap_or(0))
            .sum();
        Some(Bytes(sum))
    }
}

fn cname(id: ObjectId) -> CString {
    CString::new(id.to_string()).expect("decimal ids have no NUL")
}

impl Layers for Btrfs {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            granularity: Granularity::Extent,
            native_snapshots: true,
        }
    }

    fn create(&self, layer: &LayerChain) -> Result<()> {
        let dest = self.path(layer.id);
        // A subvolume left by a crash before the store recorded it: start over.
        if dest.exists() {
            self.remove(layer.id)?;
        }
        let dir = self.open_dir(&self.layers_dir())?;
        let name = cname(layer.id);
        match layer.parent() {
            Some(p) => {
                let src = self.open_dir(&self.path(p))?;
                // A snapshot flushes the source's dirty data first; syncing here keeps that
                // cost out of the snapshot itself (941 ms vs 5 ms measured with 200 MiB dirty).
                nix::unistd::syncfs(src.as_fd())
                    .map_err(|e| DriverError::sys("sync parent layer", p, e))?;
                subvolume::snapshot_create(dir.as_fd(), src.as_fd(), &name, false, &[])
                    .map_err(|e| DriverError::sys("snapshot layer", p, e))
            }
            None => subvolume::subvolume_create(dir.as_fd(), &name, &[])
                .map_err(|e| DriverError::sys("create subvolume for layer", layer.id, e)),
        }
    }

    // A subvolume; the limit is its qgroup's, as for layers. A pool with quotas off refuses a
    // limit before anything is made. A failed limit leaves the subvolume for the pool's undo.
    fn create_volume(&self, id: ObjectId, limit: Option<Bytes>) -> Result<()> {
        if limit.is_some() && !self.quota {
            return Err(self.no_quota(id));
        }
        self.create(&LayerChain::volume(id))?;
        match limit {
            Some(l) => self.set_limit(id, l),
            None => Ok(()),
        }
    }

    // A writable snapshot of the source subvolume, mounted or not: btrfs flushes its dirty
    // data and shares every extent. The copy is a subvolume of its own (own qgroup, no limit):
    // either can be deleted first.
    fn clone_active(&self, source: &LayerChain, new: ObjectId) -> Result<()> {
        let dest = self.path(new);
        if dest.exists() {
            self.remove(new)?;
        }
        let dir = self.open_dir(&self.layers_dir())?;
        let src = self.open_dir(&self.path(source.id))?;
        nix::unistd::syncfs(src.as_fd())
            .map_err(|e| DriverError::sys("sync layer", source.id, e))?;
        subvolume::snapshot_create(dir.as_fd(), src.as_fd(), &cname(new), false, &[])
            .map_err(|e| DriverError::sys("snapshot writable layer", source.id, e))
    }

    fn commit(&self, layer: &LayerChain) -> Result<()> {
        let fd = self.open_dir(&self.path(layer.id))?;
        subvolume::subvolume_flags_set(fd.as_fd(), subvolume::SubvolumeFlags::RDONLY)
            .map_err(|e| DriverError::sys("make read-only: layer", layer.id, e))
    }

    fn mount(
        &self,
        layer: &LayerChain,
        target: &Path,
        mode: MountMode,
        flags: MountFlags,
    ) -> Result<()> {
        let subvol = self.subvol_id(layer.id)?;
        let ms = flags.ms(mode);
        mount::mount(
            &self.backing.device,
            target,
            "btrfs",
            ms,
            Some(&format!("subvolid={subvol}")),
        )
    }

    // The same mount `mount` makes, by the other process: the pool's device (a loop device of
    // the pool's file, attached as long as the pool is active) and the subvolume's id, which
    // unlike a subvol= path does not depend on where the top level is mounted.
    fn export(
        &self,
        layer: &LayerChain,
        mode: MountMode,
        flags: MountFlags,
    ) -> Result<Vec<MountSpec>> {
        let subvol = self.subvol_id(layer.id)?;
        Ok(vec![MountSpec::new(
            "btrfs",
            self.backing.device.display().to_string(),
            [format!("subvolid={subvol}")],
            mode,
            flags,
        )])
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        mount::unmount(target)
    }

    fn remove(&self, id: ObjectId) -> Result<()> {
        let path = self.path(id);
        if !path.exists() {
            return Ok(());
        }
        // The kernel deletes a subvolume that is mounted elsewhere and leaves the mount
        // pointing at nothing ("//deleted"); refuse (or defer) instead, and say where.
        self.mounted_at(id)?.check_remove(id, "subvolume")?;
        let fd = self.open_dir(&path)?;
        let subvol = subvolume::subvolume_info(fd.as_fd())
            .map_err(|e| DriverError::sys("read subvolume info of layer", id, e))?
            .id;
        // Writable again so that subvolumes a container nested inside can be unlinked.
        subvolume::subvolume_flags_set(fd.as_fd(), subvolume::SubvolumeFlags::empty())
            .map_err(|e| DriverError::sys("make writable for removal: layer", id, e))?;
        drop(fd);
        let root = self.open_dir(&self.backing.mnt)?;
        for nested in self.nested(subvol)? {
            subvolume::subvolume_delete_by_id(root.as_fd(), nested)
                .map_err(|e| DriverError::sys("delete nested subvolume of layer", id, e))?;
        }
        let dir = self.open_dir(&self.layers_dir())?;
        subvolume::subvolume_delete(dir.as_fd(), &cname(id))
            .map_err(|e| DriverError::sys("delete subvolume of layer", id, e))?;
        // The cleaner thread frees a deleted subvolume's extents only when woken, which sync(2)
        // does not do: without this the space came back at the next periodic commit, up to
        // 30 s later, and a pool at its min-free refused new layers meanwhile. The ioctl
        // commits and wakes it; the layer is gone either way, so a failure only costs the wait.
        if let Err(e) = filesystem::sync(root.as_fd()) {
            tracing::info!(layer = %id, "sync after removal: {e}");
        }
        Ok(())
    }

    fn list(&self) -> Result<Vec<ObjectId>> {
        fsbacked::list_ids(&self.layers_dir())
    }

    fn usage(&self, layer: &LayerChain) -> Result<Usage> {
        if !self.quota {
            return Err(DriverError::Unsupported {
                driver: NAME,
                what: "per-layer sizes on a pool made with quotas off".into(),
            });
        }
        let subvol = self.subvol_id(layer.id)?;
        // qgroup figures are updated when a transaction commits.
        let fd = self.open_dir(&self.path(layer.id))?;
        nix::unistd::syncfs(fd.as_fd()).map_err(|e| DriverError::sys("sync layer", layer.id, e))?;
        let excl = self.read_qgroup(subvol, "exclusive");
        let rfer = self.read_qgroup(subvol, "referenced");
        match (excl, rfer) {
            (Some(e), r) => Ok(Usage {
                bytes: Bytes(e),
                inodes: None,
                referenced: r.map(Bytes),
            }),
            // Kernels without qgroup sysfs: ask the quota tree.
            (None, _) => {
                let list = quota::qgroup_list(fd.as_fd())
                    .map_err(|e| DriverError::sys("list qgroups for layer", layer.id, e))?;
                let q = list.qgroups.iter().find(|q| q.qgroupid == subvol).ok_or(
                    DriverError::NotFound {
                        id: layer.id,
                        op: "find qgroup",
                    },
                )?;
                Ok(Usage {
                    bytes: Bytes(q.excl),
                    inodes: None,
                    referenced: Some(Bytes(q.rfer)),
                })
            }
        }
    }

    fn set_limit(&self, id: ObjectId, limit: Bytes) -> Result<()> {
        if !self.quota {
            return Err(self.no_quota(id));
        }
        let subvol = self.subvol_id(id)?;
        let fd = self.open_dir(&self.backing.mnt)?;
        // Like moby's btrfs driver: the limit covers everything the layer references.
        quota::qgroup_limit(
            fd.as_fd(),
            subvol,
            quota::QgroupLimitFlags::MAX_RFER,
            limit.0,
            0,
        )
        .map_err(|e| DriverError::sys("set qgroup limit of layer", id, e))
    }
}

impl Backing for Btrfs {
    fn space(&self) -> Result<Space> {
        let mut s = self.backing.space()?;
        let fd = self.open_dir(&self.backing.mnt)?;
        let mnt = self.backing.mnt.display();
        let dev = btrfs_uapi::device::device_info(fd.as_fd(), 1)
            .map_err(|e| DriverError::sys("read device info of", &mnt, e))?;
        if let Some(d) = &dev {
            s.unallocated = Some(Bytes(d.total_bytes.saturating_sub(d.bytes_used)));
            s.details.push((
                "Device Size".into(),
                format!(
                    "{} ({} allocated to chunks)",
                    Bytes(d.total_bytes),
                    Bytes(d.bytes_used)
                ),
            ));
        }
        for info in space::space_info(fd.as_fd())
            .map_err(|e| DriverError::sys("read space info of", &mnt, e))?
        {
            let kind = if info.flags.contains(space::BlockGroupFlags::DATA) {
                "Data"
            } else if info.flags.contains(space::BlockGroupFlags::METADATA) {
                "Metadata"
            } else {
                continue;
            };
            s.details.push((
                kind.into(),
                format!(
                    "{} used of {} allocated",
                    Bytes(info.used_bytes),
                    Bytes(info.total_bytes)
                ),
            ));
        }
        if let Some(u) = s.unallocated {
            s.details.push(("Unallocated".into(), u.to_string()));
        }
        let quota = if !self.quota {
            "off".to_string()
        } else if std::fs::read_to_string(self.sysfs().join("qgroups/inconsistent"))
            .is_ok_and(|v| v.trim() == "1")
        {
            "on (inconsistent: sizes are approximate until a rescan)".to_string()
        } else {
            "on".to_string()
        };
        s.details.push(("Quotas".into(), quota));
        let deleted = self.deleted_subvolumes()?;
        s.pending = self.pending_bytes(&deleted);
        s.details.push((
            "Pending Subvolume Cleanups".into(),
            deleted.len().to_string(),
        ));
        Ok(s)
    }

    fn deactivate(&self) -> Result<()> {
        self.backing.deactivate()
    }

    // The transaction kthread wakes the cleaner once per commit interval (30 s), so a removed
    // layer's space came back 20-40 s late. BTRFS_IOC_SYNC commits and wakes the cleaner; poll
    // until no deleted subvolume is left, then commit once more: extents the cleaner freed are
    // pinned until the transaction that freed them commits.
    fn reclaim(&self, timeout: Duration) -> Result<()> {
        let fd = self.open_dir(&self.backing.mnt)?;
        let mnt = self.backing.mnt.display();
        let deadline = Instant::now() + timeout;
        loop {
            filesystem::sync(fd.as_fd()).map_err(|e| DriverError::sys("sync", &mnt, e))?;
            if self.deleted_subvolumes()?.is_empty() {
                return filesystem::sync(fd.as_fd()).map_err(|e| DriverError::sys("sync", &mnt, e));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            std::thread::sleep(left.min(Duration::from_millis(100)));
        }
    }

    fn grow(&self) -> Result<()> {
        let fd = self.open_dir(&self.backing.mnt)?;
        filesystem::resize(
            fd.as_fd(),
            filesystem::ResizeArgs::new(filesystem::ResizeAmount::Max),
        )
        .map_err(|e| DriverError::sys("grow filesystem", self.backing.mnt.display(), e))
    }
}

impl Driver for Btrfs {
    fn bench(&self) -> Option<&dyn BenchHooks> {
        Some(self)
    }
}

impl BenchHooks for Btrfs {
    // What `btrfs subvolume snapshot` does: one ioctl, no sync, no bookkeeping.
    fn raw_snapshot(&self, parent: &LayerChain) -> Result<Duration> {
        let dir = self.open_dir(&self.layers_dir())?;
        let src = self.open_dir(&self.path(parent.id))?;
        let name = CString::new(".bench-raw").expect("no NUL");
        let t = Instant::now();
        subvolume::snapshot_create(dir.as_fd(), src.as_fd(), &name, false, &[])
            .map_err(|e| DriverError::sys("snapshot (raw) layer", parent.id, e))?;
        let took = t.elapsed();
        subvolume::subvolume_delete(dir.as_fd(), &name)
            .map_err(|e| DriverError::sys("delete raw snapshot of layer", parent.id, e))?;
        Ok(took)
    }
}
