//! Paths inside a container's root filesystem, resolved as the container would see them:
//! symlinks (absolute or with `..`) planted in a writable layer are followed, but never out of
//! the root (openat2 `RESOLVE_IN_ROOT`), so a mount point always lands inside the root.
//!
//! Every lookup is one openat2(2) from the root's descriptor with `RESOLVE_IN_ROOT |
//! RESOLVE_NO_MAGICLINKS`: the kernel, not a lexical walk, decides where `..` and absolute
//! links go. What is missing is made under the descriptor of its already resolved parent, so
//! nothing is ever created by a path a symlink could redirect.

use crate::error::{DriverError, Result};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// What to do about components of the path that do not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Nothing: a missing component is an error (NotFound).
    No,
    /// Make every missing component a directory (mode 0755, root's).
    Dir,
    /// Make missing parents directories and the last component an empty file (a bind mount
    /// point for a file source).
    File,
}

/// Symlinks followed by hand (dangling ones, whose target must be created) before the path is
/// called a loop: the kernel's own limit (MAXSYMLINKS).
const MAX_LINK_HOPS: usize = 40;

const DIR_MODE: u32 = 0o755;
const FILE_MODE: u32 = 0o644;

/// Resolves `components` (a path below the root, one name each, none `.`/`..`) inside `root`
/// as if `root` were `/`, creating what is missing as `create` says. Returns the host path the
/// last component resolved to: always `root` or below it.
pub fn resolve_in_root(root: &Path, components: &[&str], create: Create) -> Result<PathBuf> {
    let shown = components.iter().fold(root.to_path_buf(), |p, c| p.join(c));
    let fail = |e: std::io::Error| DriverError::io("resolve inside root", shown.clone(), e);
    for c in components {
        if c.is_empty() || *c == "." || *c == ".." || c.contains('/') || c.contains('\0') {
            return Err(fail(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("path component {:?} is not a plain name", c),
            )));
        }
    }
    let root_fd = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(e.into()))?;
    let root_real = fd_path(&root_fd).map_err(fail)?;
    let fd = walk(&root_fd, components, create).map_err(fail)?;
    let got = fd_path(&fd).map_err(fail)?;
    // Defence in depth: openat2 already kept the walk inside; a path outside means the
    // kernel's view and ours disagree, and nothing may be mounted there.
    if !got.starts_with(&root_real) {
        return Err(fail(std::io::Error::other(format!(
            "resolved to {}, outside the root {}",
            got.display(),
            root_real.display()
        ))));
    }
    Ok(got)
}

/// Where the kernel says `fd` is: /proc/self/fd/N.
fn fd_path(fd: &OwnedFd) -> std::io::Result<PathBuf> {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn in_root(root: &OwnedFd, path: &str, flags: OFlag) -> nix::Result<OwnedFd> {
    let how = OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    nix::fcntl::openat2(root.as_fd(), if path.is_empty() { "." } else { path }, how)
}

/// The walk itself. `todo` is the path still to resolve, as components that may include `..`
/// and `.` once a followed link brought them (the kernel resolves those, clamped at the root).
fn walk(root: &OwnedFd, components: &[&str], create: Create) -> std::io::Result<OwnedFd> {
    let mut done: Vec<String> = Vec::new();
    let mut todo: Vec<String> = components.iter().map(|c| c.to_string()).collect();
    todo.reverse();
    // The descriptor of `done`, resolved: the parent under which a missing name is made.
    let mut parent = nix::fcntl::openat(
        root.as_fd(),
        ".",
        OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_DIRECTORY,
        Mode::empty(),
    )?;
    let mut hops = 0;
    while let Some(name) = todo.pop() {
        let last = todo.is_empty();
        let mut prefix = done.clone();
        prefix.push(name.clone());
        let path = prefix.join("/");
        // Only the last component may be something other than a directory, and only when a
        // file (or anything, for Create::No) is asked for.
        let want_dir = !last || create == Create::Dir;
        let flags = OFlag::O_PATH
            | if want_dir {
                OFlag::O_DIRECTORY
            } else {
                OFlag::empty()
            };
        match in_root(root, &path, flags) {
            Ok(fd) => {
                parent = fd;
                done = prefix;
                continue;
            }
            Err(Errno::ENOENT) if create != Create::No => {}
            Err(e) => return Err(e.into()),
        }
        // `name` is missing under `parent`, or is a symlink to something missing.
        if let Some(target) = dangling_link(&parent, &name)? {
            hops += 1;
            if hops > MAX_LINK_HOPS {
                return Err(Errno::ELOOP.into());
            }
            if target.starts_with('/') {
                done.clear();
                parent = in_root(root, "", OFlag::O_PATH | OFlag::O_DIRECTORY)?;
            }
            // The link's text replaces its name: its components go first.
            for c in target.split('/').filter(|c| !c.is_empty()).rev() {
                todo.push(c.to_string());
            }
            continue;
        }
        if name == "." || name == ".." {
            // Always there: ENOENT above came from a parent removed under us.
            return Err(Errno::ENOENT.into());
        }
        if !last || create == Create::Dir {
            match nix::sys::stat::mkdirat(
                parent.as_fd(),
                name.as_str(),
                Mode::from_bits_truncate(DIR_MODE),
            ) {
                Ok(()) => set_mode_dir(&parent, &name)?,
                // Made meanwhile: the next lookup finds it.
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
        } else {
            match nix::fcntl::openat(
                parent.as_fd(),
                name.as_str(),
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_WRONLY
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(FILE_MODE),
            ) {
                // The umask must not narrow a mount point's mode.
                Ok(fd) => nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(FILE_MODE))?,
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Look the new name up again, through the kernel's resolution like every other.
        todo.push(name);
    }
    Ok(parent)
}

/// The text of `name` under `dir` when it is a symlink (one that led nowhere), else None.
fn dangling_link(dir: &OwnedFd, name: &str) -> std::io::Result<Option<String>> {
    if name == "." || name == ".." {
        return Ok(None);
    }
    match nix::fcntl::readlinkat(dir.as_fd(), name) {
        Ok(t) => Ok(Some(t.to_string_lossy().into_owned())),
        // Not a link (EINVAL) or not there at all.
        Err(Errno::EINVAL) | Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Gives a directory just made exactly 0755, whatever the umask. Opened without following a
/// link, so a name swapped for one meanwhile fails instead of changing what it points at.
fn set_mode_dir(parent: &OwnedFd, name: &str) -> std::io::Result<()> {
    let fd = nix::fcntl::openat(
        parent.as_fd(),
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    nix::sys::stat::fchmod(fd.as_fd(), Mode::from_bits_truncate(DIR_MODE))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    struct Root {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
    }

    /// A tempdir holding `root/` and a sibling `outside/` that no resolution may reach.
    fn setup() -> Root {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&root).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::create_dir(root.join("etc")).unwrap();
        Root {
            root: root.canonicalize().unwrap(),
            outside: outside.canonicalize().unwrap(),
            _tmp: tmp,
        }
    }

    #[test]
    fn plain_paths_resolve_and_are_created() {
        let r = setup();
        assert_eq!(resolve_in_root(&r.root, &[], Create::No).unwrap(), r.root);
        assert_eq!(
            resolve_in_root(&r.root, &["etc"], Create::No).unwrap(),
            r.root.join("etc")
        );
        let got = resolve_in_root(&r.root, &["a", "b", "c"], Create::Dir).unwrap();
        assert_eq!(got, r.root.join("a/b/c"));
        assert!(got.is_dir());
        let mode = std::fs::metadata(&got).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755);
        let f = resolve_in_root(&r.root, &["x", "file"], Create::File).unwrap();
        assert_eq!(f, r.root.join("x/file"));
        let m = std::fs::metadata(&f).unwrap();
        assert!(m.is_file());
        assert_eq!(m.len(), 0);
        assert_eq!(m.permissions().mode() & 0o7777, 0o644);
        // Again: found, not made twice (and a file already there is kept).
        std::fs::write(&f, b"data").unwrap();
        assert_eq!(
            resolve_in_root(&r.root, &["x", "file"], Create::File).unwrap(),
            f
        );
        assert_eq!(std::fs::read(&f).unwrap(), b"data");
    }

    #[test]
    fn missing_without_create_is_not_found() {
        let r = setup();
        let e = resolve_in_root(&r.root, &["nope", "x"], Create::No).unwrap_err();
        assert!(
            matches!(&e, DriverError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
            "{e}"
        );
        assert!(!r.root.join("nope").exists());
    }

    #[test]
    fn bad_components_are_refused() {
        let r = setup();
        for bad in [&[".."][..], &["a", "."], &[""], &["a/b"]] {
            assert!(
                resolve_in_root(&r.root, bad, Create::Dir).is_err(),
                "{bad:?}"
            );
        }
        assert!(!r.root.join("a").exists());
    }

    #[test]
    fn absolute_link_stays_in_root() {
        let r = setup();
        // The classic: /etc in the image pointing at the host's /etc.
        symlink("/etc", r.root.join("hostetc")).unwrap();
        assert_eq!(
            resolve_in_root(&r.root, &["hostetc"], Create::No).unwrap(),
            r.root.join("etc")
        );
        symlink(&r.outside, r.root.join("out")).unwrap();
        let got = resolve_in_root(&r.root, &["out", "made"], Create::Dir).unwrap();
        assert!(got.starts_with(&r.root), "{}", got.display());
        assert!(!r.outside.join("made").exists());
    }

    #[test]
    fn dotdot_links_stay_in_root() {
        let r = setup();
        symlink("../../../etc", r.root.join("up")).unwrap();
        assert_eq!(
            resolve_in_root(&r.root, &["up"], Create::No).unwrap(),
            r.root.join("etc")
        );
        // A dangling one: its target is made inside the root, not beside it.
        symlink("../../outside/new", r.root.join("escape")).unwrap();
        let got = resolve_in_root(&r.root, &["escape", "deeper"], Create::Dir).unwrap();
        assert_eq!(got, r.root.join("outside/new/deeper"));
        assert!(!r.outside.join("new").exists());
        let f = resolve_in_root(&r.root, &["escape2"], Create::No);
        assert!(f.is_err());
        symlink("../../outside/file", r.root.join("escape2")).unwrap();
        let got = resolve_in_root(&r.root, &["escape2"], Create::File).unwrap();
        assert_eq!(got, r.root.join("outside/file"));
        assert!(!r.outside.join("file").exists());
    }

    #[test]
    fn link_chains_stay_in_root() {
        let r = setup();
        std::fs::create_dir(r.root.join("etc/real")).unwrap();
        symlink("/l2", r.root.join("l1")).unwrap();
        symlink("../l3", r.root.join("l2")).unwrap();
        symlink("/../../etc/real", r.root.join("l3")).unwrap();
        assert_eq!(
            resolve_in_root(&r.root, &["l1"], Create::No).unwrap(),
            r.root.join("etc/real")
        );
        // A dangling chain ending outside: created inside.
        symlink("/d2", r.root.join("d1")).unwrap();
        symlink(r.outside.join("d3"), r.root.join("d2")).unwrap();
        let got = resolve_in_root(&r.root, &["d1", "x"], Create::Dir).unwrap();
        assert!(got.starts_with(&r.root), "{}", got.display());
        assert!(!r.outside.join("d3").exists());
        // A loop ends.
        symlink("/loop2", r.root.join("loop1")).unwrap();
        symlink("/loop1", r.root.join("loop2")).unwrap();
        assert!(resolve_in_root(&r.root, &["loop1", "x"], Create::Dir).is_err());
    }

    #[test]
    fn link_to_file_where_dir_needed_fails() {
        let r = setup();
        std::fs::write(r.root.join("etc/passwd"), b"x").unwrap();
        symlink("/etc/passwd", r.root.join("pw")).unwrap();
        let e = resolve_in_root(&r.root, &["pw", "sub"], Create::Dir).unwrap_err();
        assert!(e.to_string().contains("Not a directory"), "{e}");
        let e = resolve_in_root(&r.root, &["pw"], Create::Dir).unwrap_err();
        assert!(e.to_string().contains("Not a directory"), "{e}");
        // As a file mount point it is the file, inside the root.
        assert_eq!(
            resolve_in_root(&r.root, &["pw"], Create::File).unwrap(),
            r.root.join("etc/passwd")
        );
    }

    #[test]
    fn magic_links_are_refused() {
        let r = setup();
        symlink("/proc/self/root", r.root.join("proc-root")).unwrap();
        // IN_ROOT makes /proc the root's own (missing) /proc: never the host's.
        let e = resolve_in_root(&r.root, &["proc-root"], Create::No);
        assert!(e.is_err());
        std::fs::create_dir(r.root.join("proc")).unwrap();
        let got = resolve_in_root(&r.root, &["proc-root", "x"], Create::Dir).unwrap();
        assert!(got.starts_with(&r.root), "{}", got.display());
    }
}
