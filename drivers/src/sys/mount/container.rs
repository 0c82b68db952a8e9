//! The mounts of a container's root besides its layers: recursive private binds with their
//! flags on every submount (mount_setattr), and tmpfs.

use super::*;

/// Bind-mounts `source` (a directory or file) recursively at `target` (a container's bind
/// mount: submounts of `source` come along), with `flags` (MS_RDONLY, MS_NODEV, MS_NOSUID,
/// MS_NOEXEC) applied to it and to every submount it brings. The new mounts are made private
/// (rprivate, as Docker's binds): a mount made later below `target` (a volume inside a bind)
/// must not propagate back into the host's `source`. On failure nothing is left mounted.
pub fn bind_recursive(source: &Path, target: &Path, flags: MsFlags) -> Result<()> {
    tracing::debug!(source = %source.display(), target = %target.display(), ?flags, "recursive bind mount");
    let attrs = mount_attrs(flags).ok_or_else(|| {
        DriverError::sys(
            "recursive bind mount",
            target.display(),
            nix::errno::Errno::EINVAL,
        )
    })?;
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| DriverError::sys("recursive bind mount", target.display(), e))?;
    let rest = nix::mount::mount(
        None::<&str>,
        target,
        None::<&str>,
        MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| DriverError::sys("make private", target.display(), e))
    .and_then(|()| {
        if flags.is_empty() {
            Ok(())
        } else {
            set_attrs_recursive(target, flags, attrs)
        }
    });
    if let Err(e) = rest {
        // Detaching the top takes every submount the bind brought with it.
        if let Err(u) = nix::mount::umount2(target, MntFlags::MNT_DETACH) {
            return Err(DriverError::Kernel {
                op: "recursive bind mount",
                target: target.display().to_string(),
                message: format!("{e}; and detaching it again failed: {u}"),
            });
        }
        return Err(e);
    }
    Ok(())
}

/// mount_setattr(2)'s struct mount_attr (linux/mount.h); not in libc yet.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

/// The per-mount flags bind_recursive takes, as mount_setattr attributes; None for any other.
fn mount_attrs(flags: MsFlags) -> Option<u64> {
    let map = [
        (MsFlags::MS_RDONLY, MOUNT_ATTR_RDONLY),
        (MsFlags::MS_NOSUID, MOUNT_ATTR_NOSUID),
        (MsFlags::MS_NODEV, MOUNT_ATTR_NODEV),
        (MsFlags::MS_NOEXEC, MOUNT_ATTR_NOEXEC),
    ];
    let known = map.iter().fold(MsFlags::empty(), |a, (f, _)| a | *f);
    if !known.contains(flags) {
        return None;
    }
    Some(
        map.iter()
            .filter(|(f, _)| flags.contains(*f))
            .fold(0, |a, (_, m)| a | m),
    )
}

/// Sets `attrs` on the mount at `target` and every mount below it: mount_setattr(2) with
/// AT_RECURSIVE (one call, all or nothing), or where the kernel lacks it (before 5.12) a
/// bind remount of each mount found under `target` in mountinfo, top first.
fn set_attrs_recursive(target: &Path, flags: MsFlags, attrs: u64) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(target.as_os_str().as_bytes()).map_err(|_| {
        DriverError::sys(
            "set mount flags",
            target.display(),
            nix::errno::Errno::EINVAL,
        )
    })?;
    let attr = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `c` is a NUL-terminated path, `attr` a mount_attr of the size passed.
    let r = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_mount_setattr,
            nix::libc::AT_FDCWD,
            c.as_ptr(),
            (nix::libc::AT_RECURSIVE | nix::libc::AT_SYMLINK_NOFOLLOW) as nix::libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    match nix::errno::Errno::result(r) {
        Ok(_) => Ok(()),
        Err(nix::errno::Errno::ENOSYS) => remount_under(target, flags),
        Err(e) => Err(DriverError::sys("set mount flags", target.display(), e)),
    }
}

/// The pre-5.12 way: a bind remount with `flags` of `target` and of each mount below it, top
/// first (mountinfo order). Flags a submount had of its own beyond `flags` are not kept.
pub(super) fn remount_under(target: &Path, flags: MsFlags) -> Result<()> {
    let top = canonical_or_self(target);
    let mut under: Vec<PathBuf> = mountinfo()?
        .into_iter()
        .map(|m| m.target)
        .filter(|t| t.starts_with(&top))
        .collect();
    under.dedup();
    for t in under {
        nix::mount::mount(
            None::<&str>,
            &t,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
            None::<&str>,
        )
        .map_err(|e| DriverError::sys("remount with flags", t.display(), e))?;
    }
    Ok(())
}

/// Mounts a fresh tmpfs at `target`: at most `size` bytes (the kernel's default, half of RAM,
/// without), its root directory's permission bits `mode` (default 1777, as Docker's), with
/// `flags` (MS_RDONLY, MS_NODEV, MS_NOSUID).
pub fn tmpfs(
    target: &Path,
    size: Option<crate::Bytes>,
    mode: Option<u32>,
    flags: MsFlags,
) -> Result<()> {
    let mut data = format!("mode={:o}", mode.unwrap_or(0o1777) & 0o7777);
    if let Some(size) = size {
        data = format!("size={},{data}", size.0);
    }
    tracing::debug!(target = %target.display(), ?flags, data, "mount tmpfs");
    nix::mount::mount(
        Some("tmpfs"),
        target,
        Some("tmpfs"),
        flags,
        Some(data.as_str()),
    )
    .map_err(|e| DriverError::sys("mount tmpfs", target.display(), e))
}
