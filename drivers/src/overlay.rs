//! overlay: each layer is a directory (`diff/`) stacked by overlayfs; an active layer is the
//! upper dir, its committed ancestors the lower dirs. File-granularity copy-up: whole files are
//! copied into the upper dir on first write (a reflink clone when the backing is xfs).
//!
//! Mounts by other processes (containerd, [`Layers::export`]) cannot use the `/proc/self/fd`
//! handles the driver's own long-chain mounts use, and 128 lower dirs under a pool's state dir
//! do not fit in the one page of options mount(2) takes. So every layer also gets a short name,
//! as in Docker's overlay2 `l/` dir: a symlink `/run/blkdrv/l/<tag>/<id in base 36>` to its
//! `diff/` (`<tag>`: the backing filesystem's UUID, abbreviated), made by each
//! export that finds it missing (`/run` is emptied at boot), removed with the layer, the whole
//! dir on deactivate; pools that are never exported leave nothing there.
//! 128 lower dirs through them take about 3.2 KB wherever the pool lives. containerd 1.6 also
//! compacts long lowerdir options itself (`compactLowerdirOption` in mount/mount_linux.go:
//! from 3584 bytes of options it mounts from the lower dirs' common parent, with relative
//! names, which for these links is the tag dir); nothing here relies on that, so any mount(2)
//! caller can perform the specs, mount(8) included.

use crate::error::{DriverError, Result};
use crate::fsbacked::{self, FsBacking};
use crate::sys::{mount, tree};
use crate::{Backing, BenchSetup, Layers};
use crate::{
    Bytes, Capabilities, Driver, DriverFactory, DriverOptions, Granularity, Identity, LayerChain,
    MountFlags, MountMode, MountSpec, ObjectId, PoolContext, Requirements, Space, Usage,
};
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const NAME: &str = "overlay";
/// The kernel copies at most one page of mount options, including the trailing NUL.
const MAX_MOUNT_DATA: usize = 4095;
/// How many hex digits of the backing's UUID name a pool's link dir: short, since the tag is in
/// every lower path; the marker file inside ([`LINK_MARKER`]) catches the rare collision.
const LINK_TAG_LEN: usize = 6;
/// File in a link dir holding the full UUID of the pool it belongs to.
const LINK_MARKER: &str = ".uuid";

pub struct Factory;

impl DriverFactory for Factory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn suits(&self, _host: &crate::HostFacts) -> Option<crate::Suitability> {
        Some(crate::Suitability {
            rank: 10,
            why: "overlayfs works on any host with xfs or ext4: file-level copy-up".into(),
        })
    }

    fn description(&self) -> &'static str {
        "overlayfs stack of layer directories (file-level copy-up baseline)"
    }

    fn init_help(&self) -> &'static str {
        "overlay formats the backing with --fs (xfs by default) and mounts it under the state dir."
    }

    fn requirements(&self) -> Requirements {
        fsbacked::requirements(&["overlay"])
    }

    fn min_device_size(&self, options: &DriverOptions) -> Bytes {
        fsbacked::min_device_size(options)
    }

    fn options(&self) -> &'static [crate::OptionSpec] {
        fsbacked::OPTIONS
    }

    fn validate_options(&self, options: &DriverOptions) -> Result<DriverOptions> {
        fsbacked::validate_options(NAME, options)
    }

    fn format(&self, ctx: &PoolContext) -> Result<Identity> {
        fsbacked::format(ctx)
    }

    fn bench(&self) -> Option<&dyn BenchSetup> {
        Some(self)
    }

    fn open(&self, ctx: &PoolContext, identity: &Identity) -> Result<Box<dyn Driver>> {
        let backing = FsBacking::open(ctx, identity, NAME)?;
        let tag: String = backing
            .uuid
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(LINK_TAG_LEN)
            .collect::<String>()
            .to_ascii_lowercase();
        Ok(Box::new(Overlay {
            links: Path::new(mount::SHORT_LINK_ROOT).join(tag),
            backing,
        }))
    }
}

impl BenchSetup for Factory {
    // Copy-up is a whole-file copy on ext4 and a reflink on xfs: both are worth a number.
    fn variants(&self) -> Vec<(String, DriverOptions)> {
        ["ext4", "xfs"]
            .iter()
            .map(|fs| {
                let opts = DriverOptions::from([("fs".to_string(), fs.to_string())]);
                (format!("{NAME}-{fs}"), opts)
            })
            .collect()
    }
}

/// How a layer in a mode is stacked: one directory needs no overlay (a bind; overlayfs refuses
/// an upper without a lower), else an optional upper on lower dirs, nearest parent first.
enum Stack {
    Single(ObjectId),
    Overlay {
        upper: Option<ObjectId>,
        lowers: Vec<ObjectId>,
    },
}

impl Stack {
    fn of(layer: &LayerChain, mode: MountMode) -> Stack {
        let (upper, lowers): (Option<ObjectId>, Vec<ObjectId>) = match mode {
            MountMode::ReadWrite => (Some(layer.id), layer.ancestors.clone()),
            MountMode::ReadOnly => (
                None,
                std::iter::once(layer.id)
                    .chain(layer.ancestors.iter().copied())
                    .collect(),
            ),
        };
        match (upper, lowers.as_slice()) {
            (Some(only), []) | (None, &[only]) => Stack::Single(only),
            _ => Stack::Overlay { upper, lowers },
        }
    }
}

pub struct Overlay {
    backing: FsBacking,
    /// This pool's dir of short layer names (see the module doc).
    links: PathBuf,
}

/// A layer's short name: its id in base 36 (at most 5 characters for 24-bit ids).
fn link_name(id: ObjectId) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut v = id.get();
    let mut out = Vec::new();
    while v > 0 {
        out.push(DIGITS[(v % 36) as usize]);
        v /= 36;
    }
    out.reverse();
    String::from_utf8(out).expect("ascii digits")
}

impl Overlay {
    fn dir(&self, id: ObjectId) -> PathBuf {
        self.backing.mnt.join(NAME).join(id.to_string())
    }

    fn diff(&self, id: ObjectId) -> PathBuf {
        self.dir(id).join("diff")
    }

    fn work(&self, id: ObjectId) -> PathBuf {
        self.dir(id).join("work")
    }

    fn link(&self, id: ObjectId) -> PathBuf {
        self.links.join(link_name(id))
    }

    /// Makes this pool's link dir, or checks that an existing one is this pool's: another
    /// pool's backing with the same abbreviated UUID would have its layers mounted instead.
    fn ensure_link_dir(&self, id: ObjectId) -> Result<()> {
        let marker = self.links.join(LINK_MARKER);
        match std::fs::read_to_string(&marker) {
            Ok(s) if s.trim() == self.backing.uuid => return Ok(()),
            Ok(s) => {
                return Err(DriverError::Refused {
                    id,
                    op: "export",
                    reason: format!(
                        "the short link dir {} belongs to the pool whose filesystem UUID is {}                          (this pool's is {})",
                        self.links.display(),
                        s.trim(),
                        self.backing.uuid
                    ),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(DriverError::io("read", &marker, e)),
        }
        // Root's alone (0700), like the pool's own dirs and the snapshotter's socket dir: the
        // links name every layer's directory.
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(&self.links)
            .map_err(|e| DriverError::io("create", &self.links, e))?;
        std::fs::write(&marker, format!("{}\n", self.backing.uuid))
            .map_err(|e| DriverError::io("write", &marker, e))
    }

    /// The short name of layer `id`, made (or corrected) to point at its `diff/`.
    fn ensure_link(&self, id: ObjectId) -> Result<PathBuf> {
        let link = self.link(id);
        // Canonical, so that the mount tables' users of the layer dir find mounts through it
        // (sys::mount::overlay_uses reads the link).
        let target = match std::fs::canonicalize(self.diff(id)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DriverError::NotFound { id, op: "export" })
            }
            Err(e) => return Err(DriverError::io("resolve", self.diff(id), e)),
        };
        if std::fs::read_link(&link).is_ok_and(|t| t == target) {
            return Ok(link);
        }
        // Renamed into place: a mount resolving the name meanwhile sees the old link or the new.
        let tmp = self
            .links
            .join(format!(".{}.{}", link_name(id), std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp).map_err(|e| DriverError::io("link", &tmp, e))?;
        std::fs::rename(&tmp, &link).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            DriverError::io("rename into place", &link, e)
        })?;
        Ok(link)
    }
}

/// Mount data for an overlay with `lowers` (topmost first) and optional upper/work dirs.
fn mount_data(lowers: &[String], upper: Option<(&str, &str)>) -> String {
    let mut s = format!("lowerdir={}", lowers.join(":"));
    if let Some((u, w)) = upper {
        s.push_str(&format!(",upperdir={u},workdir={w}"));
    }
    s
}

/// Overlay option values cannot contain ',' and lowerdir paths not ':' unescaped; such paths
/// (and over-long option strings) go through /proc/self/fd handles instead.
fn plain(p: &Path) -> Option<String> {
    let s = p.to_str()?;
    (!s.contains([',', ':', '\\'])).then(|| s.to_string())
}

/// Mount data with the paths spelled out (readable in `findmnt`), if every path can be written
/// plainly and the whole fits in the kernel's page.
fn plain_mount_data(lowers: &[PathBuf], upper: Option<&(PathBuf, PathBuf)>) -> Option<String> {
    let l = lowers
        .iter()
        .map(|p| plain(p))
        .collect::<Option<Vec<_>>>()?;
    let u = match upper {
        Some((d, w)) => Some((plain(d)?, plain(w)?)),
        None => None,
    };
    let data = mount_data(&l, u.as_ref().map(|(a, b)| (a.as_str(), b.as_str())));
    (data.len() <= MAX_MOUNT_DATA).then_some(data)
}

fn open_path(p: &Path) -> Result<OwnedFd> {
    open(
        p,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| DriverError::sys("open layer dir", p.display(), e))
}

/// Copies owner, mode and times of the parent's root onto the new layer's root, so the merged
/// root looks like the parent's (overlayfs takes root attributes from the upper dir).
fn copy_root_attrs(from: &Path, to: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::metadata(from).map_err(|e| DriverError::io("stat", from, e))?;
    std::os::unix::fs::chown(to, Some(md.uid()), Some(md.gid()))
        .map_err(|e| DriverError::io("chown", to, e))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(md.mode() & 0o7777))
        .map_err(|e| DriverError::io("chmod", to, e))
}

impl Layers for Overlay {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            granularity: Granularity::File {
                reflink: self.backing.fs.reflink(),
            },
            native_snapshots: false,
        }
    }

    fn create(&self, layer: &LayerChain) -> Result<()> {
        let parent_diff = layer.parent().map(|p| self.diff(p));
        fsbacked::create_atomically(&self.dir(layer.id), |tmp| {
            for sub in ["diff", "work"] {
                let d = tmp.join(sub);
                std::fs::create_dir(&d).map_err(|e| DriverError::io("create", &d, e))?;
            }
            match &parent_diff {
                Some(p) => copy_root_attrs(p, &tmp.join("diff")),
                None => Ok(()),
            }
        })?;
        // No short link here: only exports need one and each export makes any that is missing,
        // so pools no container engine uses leave nothing in /run.
        Ok(())
    }

    fn create_volume(&self, id: ObjectId, limit: Option<Bytes>) -> Result<()> {
        if let Some(limit) = limit {
            return Err(fsbacked::refuse_volume_limit(NAME, id, limit));
        }
        self.create(&LayerChain::volume(id))
    }

    // The new layer sits on the source's ancestors, so a copy of the upper dir is the whole
    // difference: whiteouts (0:0 char devices), opaque and redirect xattrs, owners, modes,
    // hardlinks and file data (reflinked on xfs) all come along with copy_tree. A fresh work
    // dir: the kernel's scratch space belongs to one mount.
    fn clone_active(&self, source: &LayerChain, new: ObjectId) -> Result<()> {
        let from = self.diff(source.id);
        if !from.is_dir() {
            return Err(DriverError::NotFound {
                id: source.id,
                op: "clone",
            });
        }
        fsbacked::create_atomically(&self.dir(new), |tmp| {
            for sub in ["diff", "work"] {
                let d = tmp.join(sub);
                std::fs::create_dir(&d).map_err(|e| DriverError::io("create", &d, e))?;
            }
            tree::copy_tree(&from, &tmp.join("diff"))
        })
    }

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
        let (upper, lowers) = match Stack::of(layer, mode) {
            Stack::Single(only) => return mount::bind(&self.diff(only), target, flags.ms(mode)),
            Stack::Overlay { upper, lowers } => (upper, lowers),
        };
        let lower_paths: Vec<PathBuf> = lowers.iter().map(|id| self.diff(*id)).collect();
        let up = upper.map(|u| (self.diff(u), self.work(u)));
        let flags = flags.ms(mode);

        if let Some(data) = plain_mount_data(&lower_paths, up.as_ref()) {
            return mount::mount(Path::new("overlay"), target, "overlay", flags, Some(&data));
        }
        // Long chains: refer to each dir by an O_PATH descriptor, "/proc/self/fd/N" is short.
        // The descriptors only need to live until mount(2) has resolved them.
        let fds = lower_paths
            .iter()
            .map(|p| open_path(p))
            .collect::<Result<Vec<_>>>()?;
        let up_fds = match &up {
            Some((d, w)) => Some((open_path(d)?, open_path(w)?)),
            None => None,
        };
        let fdpath = |fd: &OwnedFd| format!("/proc/self/fd/{}", fd.as_raw_fd());
        let l: Vec<String> = fds.iter().map(fdpath).collect();
        let u = up_fds.as_ref().map(|(d, w)| (fdpath(d), fdpath(w)));
        let data = mount_data(&l, u.as_ref().map(|(a, b)| (a.as_str(), b.as_str())));
        if data.len() > MAX_MOUNT_DATA {
            return Err(DriverError::Refused {
                id: layer.id,
                op: "mount",
                reason: format!(
                    "{} layers need {} bytes of overlay options, the kernel takes {}",
                    lowers.len(),
                    data.len(),
                    MAX_MOUNT_DATA
                ),
            });
        }
        mount::mount(Path::new("overlay"), target, "overlay", flags, Some(&data))
    }

    // containerd's overlayfs snapshotter's layout of mounts: one dir is a bind; an upper needs
    // a lower (overlayfs refuses an upper alone), lower dirs nearest parent first.
    fn export(
        &self,
        layer: &LayerChain,
        mode: MountMode,
        flags: MountFlags,
    ) -> Result<Vec<MountSpec>> {
        let (upper, lowers) = match Stack::of(layer, mode) {
            Stack::Single(only) => {
                let dir = self.diff(only);
                if !dir.is_dir() {
                    return Err(DriverError::NotFound {
                        id: only,
                        op: "export",
                    });
                }
                let source = self.backing.export_source(&dir, flags)?;
                return Ok(vec![MountSpec::bind(&source, mode, flags)]);
            }
            Stack::Overlay { upper, lowers } => (upper, lowers),
        };
        self.ensure_link_dir(layer.id)?;
        let lower = lowers
            .iter()
            .map(|id| self.ensure_link(*id).map(|l| l.display().to_string()))
            .collect::<Result<Vec<_>>>()?;
        let mut own = Vec::new();
        if let Some(u) = upper {
            // Upper and work dirs stay real paths: one each, and the mount tables then name
            // the active layer's dir plainly. They must be expressible in an option string.
            let (d, w) = (self.diff(u), self.work(u));
            if !d.is_dir() {
                return Err(DriverError::NotFound {
                    id: u,
                    op: "export",
                });
            }
            let (Some(d), Some(w)) = (plain(&d), plain(&w)) else {
                return Err(DriverError::Refused {
                    id: u,
                    op: "export",
                    reason: format!(
                        "its dir {} contains ',', ':' or '\\', which mount options cannot carry",
                        self.dir(u).display()
                    ),
                });
            };
            // As containerd's overlayfs snapshotter: an upper dir is never tied to one set of
            // lowers by the kernel's index feature, whatever the module's default.
            own.push("index=off".to_string());
            own.push(format!("lowerdir={}", lower.join(":")));
            own.push(format!("upperdir={d}"));
            own.push(format!("workdir={w}"));
        } else {
            own.push(format!("lowerdir={}", lower.join(":")));
        }
        let spec = MountSpec::new("overlay", "overlay", own, mode, flags);
        let size = spec.options.join(",").len();
        if size > MAX_MOUNT_DATA {
            return Err(DriverError::Refused {
                id: layer.id,
                op: "export",
                reason: format!(
                    "{} layers need {size} bytes of overlay options, the kernel takes {}",
                    lowers.len() + usize::from(upper.is_some()),
                    MAX_MOUNT_DATA
                ),
            });
        }
        Ok(vec![spec])
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        mount::unmount(target)
    }

    fn remove(&self, id: ObjectId) -> Result<()> {
        // Deleting a directory under a live mount would leave that mount empty: ask the mount
        // tables of every namespace, not only the pool's records (mounts made through the
        // layer's short link count: overlay_uses reads it).
        mount::users_of_dir(&self.dir(id), &self.backing.mnt)?.check_remove(id, "the layer")?;
        fsbacked::remove_object(&self.dir(id))?;
        // After the dir: a crash in between leaves a dangling link, which the next export of a
        // layer with this id corrects, rather than a layer no export can name.
        match std::fs::remove_file(self.link(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(DriverError::io("remove", self.link(id), e))
            }
            _ => Ok(()),
        }
    }

    fn list(&self) -> Result<Vec<ObjectId>> {
        fsbacked::list_ids(&self.backing.mnt.join(NAME))
    }

    fn usage(&self, layer: &LayerChain) -> Result<Usage> {
        let (bytes, inodes) = tree::disk_usage(&self.diff(layer.id))?;
        Ok(Usage {
            bytes,
            inodes: Some(inodes),
            referenced: None,
        })
    }
}

impl Backing for Overlay {
    fn space(&self) -> Result<Space> {
        self.backing.space()
    }

    // The links point into the backing, which is gone once unmounted: they go with it (and
    // are made again by the next export after activation).
    fn deactivate(&self) -> Result<()> {
        self.backing.deactivate()?;
        crate::sys::tree::remove_tree(&self.links)
    }

    fn grow(&self) -> Result<()> {
        self.backing.grow()
    }
}

impl Driver for Overlay {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_data_orders_layers() {
        let d = mount_data(&["/a".into(), "/b".into()], Some(("/u", "/w")));
        assert_eq!(d, "lowerdir=/a:/b,upperdir=/u,workdir=/w");
        assert_eq!(mount_data(&["/a".into()], None), "lowerdir=/a");
    }

    #[test]
    fn link_names_are_base_36_and_short() {
        let id = |v| ObjectId::new(v).unwrap();
        assert_eq!(link_name(id(1)), "1");
        assert_eq!(link_name(id(35)), "z");
        assert_eq!(link_name(id(36)), "10");
        assert_eq!(link_name(id(ObjectId::MAX)), "9zldr");
        // 128 lower dirs through links of the longest names still fit in a page beside upper
        // and work dirs of 200 bytes each.
        let one = format!(
            "{}/{}/9zldr",
            mount::SHORT_LINK_ROOT,
            "a".repeat(LINK_TAG_LEN)
        );
        let lowers = vec![one; 128].join(":");
        let up = format!("/{}", "u".repeat(199));
        let data = mount_data(&[lowers], Some((&up, &up)));
        assert!(
            data.len() + ",index=off,nodev".len() <= MAX_MOUNT_DATA,
            "{}",
            data.len()
        );
    }

    #[test]
    fn special_characters_are_not_plain() {
        assert!(plain(Path::new("/x/a:b")).is_none());
        assert!(plain(Path::new("/x/a,b")).is_none());
        assert_eq!(plain(Path::new("/x/ab")).as_deref(), Some("/x/ab"));
    }
}
