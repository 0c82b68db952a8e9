//! Mounting a snapshot's mounts the way containerd 1.6 does (mount/mount_linux.go, written
//! anew): known option words become mount(2) flags, the rest is the data string (at most one
//! page); the type is passed as given (`bind` included: the kernel ignores it for MS_BIND); a
//! bind with `ro` is remounted read-only, and nothing else is remounted, so a flag the kernel
//! ignores on a new bind (`nodev`) stays ignored, as it does in containerd. One place for every
//! suite that mounts what the pool or the server hands out.

use nix::mount::{MntFlags, MsFlags};
use std::path::{Path, PathBuf};

/// One page, what mount(2) copies of the data (containerd refuses longer data itself).
pub const PAGE: usize = 4096;

/// containerd's mount(2) calls for one mount of `fstype` from `source` with `options` at
/// `target` (which must exist).
pub fn mount_like_containerd(
    fstype: &str,
    source: &str,
    options: &[String],
    target: &Path,
) -> Result<(), String> {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in options {
        let (set, f) = match o.as_str() {
            "ro" => (true, MsFlags::MS_RDONLY),
            "rw" => (false, MsFlags::MS_RDONLY),
            "bind" => (true, MsFlags::MS_BIND),
            "rbind" => (true, MsFlags::MS_BIND | MsFlags::MS_REC),
            "nodev" => (true, MsFlags::MS_NODEV),
            "dev" => (false, MsFlags::MS_NODEV),
            "nosuid" => (true, MsFlags::MS_NOSUID),
            "suid" => (false, MsFlags::MS_NOSUID),
            "noexec" => (true, MsFlags::MS_NOEXEC),
            "exec" => (false, MsFlags::MS_NOEXEC),
            "loop" => return Err("loop mounts are not expected".into()),
            _ => {
                data.push(o.as_str());
                continue;
            }
        };
        flags.set(f, set);
    }
    let data = data.join(",");
    if data.len() >= PAGE {
        return Err(format!("mount options are too long ({} bytes)", data.len()));
    }
    let d = (!data.is_empty()).then_some(data.as_str());
    nix::mount::mount(Some(source), target, Some(fstype), flags, d)
        .map_err(|e| format!("mount(2) {fstype} {source} at {}: {e}", target.display()))?;
    let bind_ro = MsFlags::MS_BIND | MsFlags::MS_RDONLY;
    if flags.contains(bind_ro) {
        nix::mount::mount(
            None::<&str>,
            target,
            None::<&str>,
            flags | MsFlags::MS_REMOUNT,
            None::<&str>,
        )
        .map_err(|e| format!("remount {} read-only: {e}", target.display()))?;
    }
    Ok(())
}

/// A mount made by [`mount_like_containerd`] in this process, unmounted when dropped (detached
/// if busy), so that a failed case leaves nothing mounted. Refuses `nosuid`: container mounts
/// never carry it (images hold setuid programs).
pub struct ContainerMount {
    target: PathBuf,
}

impl ContainerMount {
    pub fn new(
        fstype: &str,
        source: &str,
        options: &[String],
        target: &Path,
    ) -> Result<ContainerMount, String> {
        if options.iter().any(|o| o == "nosuid") {
            return Err(format!(
                "nosuid on a container mount: {fstype} {source} {options:?}"
            ));
        }
        std::fs::create_dir_all(target).map_err(|e| format!("{}: {e}", target.display()))?;
        mount_like_containerd(fstype, source, options, target)?;
        Ok(ContainerMount {
            target: target.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.target
    }
}

impl Drop for ContainerMount {
    fn drop(&mut self) {
        if nix::mount::umount2(&self.target, MntFlags::empty()).is_err() {
            if let Err(e) = nix::mount::umount2(&self.target, MntFlags::MNT_DETACH) {
                eprintln!("test cleanup: umount {}: {e}", self.target.display());
            }
        }
    }
}
