//! overlay: each layer is a directory (`diff/`) stacked by overlayfs; an active layer is the
//! upper dir, its committed ancestors the lower dirs. File-granularity copy-up: whole files are
//! copied into the upper dir on first write (a reflink clone when the backing is xfs).

use crate::error::{DriverError, Result};
use crate::fsbacked::{self, FsBacking};
use crate::sys::{mount, tree};
use crate::{Backing, BenchSetup, Layers};
use crate::{
    Bytes, Capabilities, Driver, DriverFactory, DriverOptions, Granularity, Identity, LayerChain,
    MountFlags, MountMode, ObjectId, PoolContext, Requirements, Space, Usage,
};
use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const NAME: &str = "overlay";
/// The kernel copies at most one page of mount options, including the trailing NUL.
const MAX_MOUNT_DATA: usize = 4095;

pub struct Factory;

impl DriverFactory for Factory {
    fn name(&self) -> &'static str {
        NAME
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
        Ok(Box::new(Overlay {
            backing: FsBacking::open(ctx, identity, NAME)?,
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

pub struct Overlay {
    backing: FsBacking,
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
        let (upper, mut lowers): (Option<ObjectId>, Vec<ObjectId>) = match mode {
            MountMode::ReadWrite => (Some(layer.id), layer.ancestors.clone()),
            MountMode::ReadOnly => (
                None,
                std::iter::once(layer.id)
                    .chain(layer.ancestors.iter().copied())
                    .collect(),
            ),
        };
        // A single directory needs no overlay: bind it (overlayfs needs a lower for an upper).
        if lowers.is_empty() || (upper.is_none() && lowers.len() == 1) {
            let only = upper.or_else(|| lowers.pop()).expect("one layer");
            return mount::bind(&self.diff(only), target, flags.ms(mode));
        }
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

    fn unmount(&self, target: &Path) -> Result<()> {
        mount::unmount(target)
    }

    fn remove(&self, id: ObjectId) -> Result<()> {
        // Deleting a directory under a live mount would leave that mount empty: ask the mount
        // tables of every namespace, not only the pool's records.
        mount::users_of_dir(&self.dir(id), &self.backing.mnt)?.check_remove(id, "the layer")?;
        fsbacked::remove_object(&self.dir(id))
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

    fn deactivate(&self) -> Result<()> {
        self.backing.deactivate()
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
    fn special_characters_are_not_plain() {
        assert!(plain(Path::new("/x/a:b")).is_none());
        assert!(plain(Path::new("/x/a,b")).is_none());
        assert_eq!(plain(Path::new("/x/ab")).as_deref(), Some("/x/ab"));
    }
}
