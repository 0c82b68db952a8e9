//! File metadata (owner, mode, xattrs, times) read from and applied to one path, never through
//! a symlink: the one helper behind tar import here and the tree copier in the drivers.
//!
//! The order is fixed because each step can undo an earlier one: owner first (chown clears
//! setuid/setgid), then mode, then xattrs (chown clears `security.capability`; an access ACL
//! after the mode keeps the two as the source says), then times (everything before may touch
//! them).

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use std::ffi::{CStr, CString};
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// One extended attribute: name (no NUL) and raw value bytes.
pub type Xattr = (CString, Vec<u8>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    pub atime: TimeSpec,
    pub mtime: TimeSpec,
}

impl Times {
    /// Access and modification time both `t` (a tar carries only the mtime).
    pub fn both(t: TimeSpec) -> Self {
        Times { atime: t, mtime: t }
    }
}

/// What to set on a path. `None` (or no xattrs) leaves that part as it is, so a caller can set
/// the owner now and the rest later (a directory's mode and mtime once its entries exist).
#[derive(Debug, Clone, Copy, Default)]
pub struct Meta<'a> {
    pub owner: Option<Owner>,
    /// Permission bits with setuid/setgid/sticky. Linux has no symlink modes: give `None` for a
    /// symlink (chmod would follow it).
    pub mode: Option<u32>,
    pub xattrs: &'a [Xattr],
    pub times: Option<Times>,
}

/// A filesystem refusing an xattr's namespace (ENOTSUP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    /// Leave that xattr out (a copy onto a filesystem without, say, `trusted.*`).
    Skip,
    /// Fail: the content would not be what the source says.
    Fail,
}

/// Which chown failures, when not root, leave the caller's own owner instead of failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRoot {
    /// EPERM only (the tree copier).
    Eperm,
    /// EPERM, and EINVAL for an id this user namespace does not map (tar import).
    EpermOrEinval,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub unsupported_xattr: Unsupported,
    pub not_root: NotRoot,
}

/// What [`apply`] did beyond what was asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Not root and the owner could not be set: the path keeps the caller's uid/gid.
    pub owner_dropped: bool,
}

/// The step that failed, for the caller's own error wording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Chown,
    Chmod,
    SetXattr(CString),
    SetTimes,
    ListXattrs,
    GetXattr(CString),
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Chown => f.write_str("chown"),
            Step::Chmod => f.write_str("chmod"),
            Step::SetXattr(n) => write!(f, "set xattr {}", n.to_string_lossy()),
            Step::SetTimes => f.write_str("set times of"),
            Step::ListXattrs => f.write_str("list xattrs of"),
            Step::GetXattr(n) => write!(f, "get xattr {}", n.to_string_lossy()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{step} {}: {source}", .path.display())]
pub struct MetaError {
    pub step: Step,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

type MetaResult<T> = std::result::Result<T, MetaError>;

fn cpath(path: &Path, step: &Step) -> MetaResult<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| MetaError {
        step: step.clone(),
        path: path.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"),
    })
}

/// Sets what `meta` gives on `path`, in the order of the module doc, without following a
/// symlink at `path` (chown, xattrs and times act on the link itself).
pub fn apply(path: &Path, meta: &Meta<'_>, policy: Policy) -> MetaResult<Applied> {
    let fail = |step: Step, source: io::Error| MetaError {
        step,
        path: path.to_path_buf(),
        source,
    };
    let mut applied = Applied {
        owner_dropped: false,
    };
    if let Some(o) = meta.owner {
        if let Err(e) = std::os::unix::fs::lchown(path, Some(o.uid), Some(o.gid)) {
            let tolerated = match policy.not_root {
                NotRoot::Eperm => e.raw_os_error() == Some(nix::libc::EPERM),
                NotRoot::EpermOrEinval => matches!(
                    e.raw_os_error(),
                    Some(c) if c == nix::libc::EPERM || c == nix::libc::EINVAL
                ),
            };
            if !tolerated || nix::unistd::geteuid().is_root() {
                return Err(fail(Step::Chown, e));
            }
            applied.owner_dropped = true;
        }
    }
    if let Some(mode) = meta.mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(|e| fail(Step::Chmod, e))?;
    }
    if !meta.xattrs.is_empty() {
        let cp = cpath(path, &Step::SetXattr(meta.xattrs[0].0.clone()))?;
        for (name, value) in meta.xattrs {
            match set_xattr(&cp, name, value) {
                Ok(()) => {}
                Err(e)
                    if policy.unsupported_xattr == Unsupported::Skip
                        && e.raw_os_error() == Some(nix::libc::ENOTSUP) => {}
                Err(e) => return Err(fail(Step::SetXattr(name.clone()), e)),
            }
        }
    }
    if let Some(t) = meta.times {
        utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &t.atime,
            &t.mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|e| fail(Step::SetTimes, e.into()))?;
    }
    Ok(applied)
}

/// The xattrs of `path` (not following a symlink) whose names `keep` accepts, in name order. A
/// filesystem without xattr support has none; one removed between listing and reading is left
/// out.
pub fn read_xattrs(path: &Path, keep: impl Fn(&[u8]) -> bool) -> MetaResult<Vec<Xattr>> {
    let cp = cpath(path, &Step::ListXattrs)?;
    let mut names = match list_xattrs(&cp) {
        Ok(l) => l,
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTSUP) => return Ok(Vec::new()),
        Err(source) => {
            return Err(MetaError {
                step: Step::ListXattrs,
                path: path.to_path_buf(),
                source,
            })
        }
    };
    names.retain(|n| keep(n.as_bytes()));
    names.sort_unstable();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match get_xattr(&cp, &name) {
            Ok(v) => out.push((name, v)),
            Err(e) if e.raw_os_error() == Some(nix::libc::ENODATA) => {}
            Err(source) => {
                return Err(MetaError {
                    step: Step::GetXattr(name),
                    path: path.to_path_buf(),
                    source,
                })
            }
        }
    }
    Ok(out)
}

/// Calls `f(buf)` (an l*xattr call) with a growing buffer until the value fits.
fn xattr_buffer(mut f: impl FnMut(&mut [u8]) -> nix::libc::ssize_t) -> io::Result<Vec<u8>> {
    loop {
        let size = f(&mut []);
        if size < 0 {
            return Err(io::Error::last_os_error());
        }
        // Room for the value to grow between the two calls.
        let mut buf = vec![0u8; size as usize + 256];
        let n = f(&mut buf);
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf);
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(nix::libc::ERANGE) {
            return Err(err);
        }
    }
}

/// The names of `path`'s xattrs (llistxattr: not following a symlink), in the kernel's order.
pub fn list_xattrs(path: &CStr) -> io::Result<Vec<CString>> {
    let raw = xattr_buffer(|buf| {
        // SAFETY: `path` is NUL-terminated; `buf` is valid for `buf.len()` bytes (or empty,
        // which asks for the size).
        unsafe { nix::libc::llistxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) }
    })?;
    Ok(raw
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .filter_map(|n| CString::new(n).ok())
        .collect())
}

/// The value of xattr `name` of `path` (lgetxattr: not following a symlink).
pub fn get_xattr(path: &CStr, name: &CStr) -> io::Result<Vec<u8>> {
    xattr_buffer(|buf| {
        // SAFETY: as in list_xattrs.
        unsafe {
            nix::libc::lgetxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        }
    })
}

/// Sets xattr `name` of `path` (lsetxattr: not following a symlink).
pub fn set_xattr(path: &CStr, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: both strings are NUL-terminated; `value` is valid for its length.
    let rc = unsafe {
        nix::libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests;
