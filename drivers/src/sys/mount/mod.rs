//! mount(2)/umount2(2) through nix, the one /proc/<pid>/mountinfo parser, mount namespaces, and
//! which mounts (and processes on them) use a directory or a block device.
//!
//! A mount lives in one mount namespace. Services and container engines run in namespaces of
//! their own, so whether a recorded mount is still there must be asked in the namespace that
//! made it, never only in the caller's (see [`MountNs`] and [`NsTables`]).

use super::blockdev::{self, DevNo, Holder};
use crate::error::{DriverError, Result};
use nix::mount::{MntFlags, MsFlags};
use std::path::{Path, PathBuf};

mod container;
pub use container::{bind_recursive, tmpfs};

/// One line of /proc/self/mountinfo (the fields blkdrv uses). The one parser of it in blkdrv.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    /// The mount ID (first field): still names the mount after a lazy detach.
    pub id: u64,
    /// st_dev of the mounted filesystem (anonymous, 0:N, for btrfs, overlay, tmpfs...).
    pub major_minor: DevNo,
    pub root: String,
    pub target: PathBuf,
    pub options: String,
    pub fstype: String,
    /// The mount source as given to mount(2) ("/dev/vda", "tmpfs", "overlay").
    pub source: String,
    /// The filesystem's own options (overlay's lowerdir=, upperdir=, ...).
    pub super_options: String,
}

/// Where overlay layers get short names for mounts made by other processes: symlinks
/// `<SHORT_LINK_ROOT>/<pool tag>/<id>` to layer dirs (see the overlay driver's `export`). Fixed
/// and short, so that 128 of them fit in one page of mount options wherever the pool lives.
pub const SHORT_LINK_ROOT: &str = "/run/blkdrv/l";

/// The directory an overlay layer path names: a short link is read (not followed further), so
/// that a mount made through one is found by the layer dir it points at.
fn overlay_layer_dir(p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.starts_with(SHORT_LINK_ROOT) {
        if let Ok(target) = std::fs::read_link(p) {
            return target;
        }
    }
    p.to_path_buf()
}

impl MountInfo {
    /// Whether this is an overlay that has `dir`, or a directory below it, as a layer (lower,
    /// upper, work or data dir), named directly or through a short link.
    pub fn overlay_uses(&self, dir: &Path) -> bool {
        self.fstype == "overlay"
            && self
                .super_options
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .filter(|(k, _)| {
                    matches!(
                        *k,
                        "lowerdir" | "upperdir" | "workdir" | "lowerdir+" | "datadir+"
                    )
                })
                .flat_map(|(_, v)| v.split(':'))
                .any(|p| Path::new(p).starts_with(dir) || overlay_layer_dir(p).starts_with(dir))
    }
}

/// mountinfo escapes space, tab, newline and backslash as \ooo octal. Bytes, not text: a mount
/// point need not be UTF-8, and a lossy copy would never compare equal to the real path.
fn unescape_bytes(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

fn unescape(s: &str) -> String {
    String::from_utf8_lossy(&unescape_bytes(s)).into_owned()
}

fn unescape_path(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(unescape_bytes(s)))
}

/// Fields: id parent maj:min root mount-point options [optional...] - fstype source superopts.
/// Malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let post: Vec<&str> = post.split(' ').collect();
            if pre.len() < 6 || post.len() < 2 {
                return None;
            }
            Some(MountInfo {
                id: pre[0].parse().unwrap_or(0),
                major_minor: pre[2].parse().ok()?,
                root: unescape(pre[3]),
                target: unescape_path(pre[4]),
                options: pre[5].to_string(),
                fstype: post[0].to_string(),
                source: unescape(post[1]),
                super_options: post.get(2).map(|s| unescape(s)).unwrap_or_default(),
            })
        })
        .collect()
}

pub fn mountinfo() -> Result<Vec<MountInfo>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| DriverError::io("read", "/proc/self/mountinfo", e))?;
    Ok(parse_mountinfo(&text))
}

/// A mount namespace, named by the inode of its nsfs file (`/proc/<pid>/ns/mnt`), as `lsns`
/// and `findmnt -N` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MountNs(pub u64);

impl std::fmt::Display for MountNs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "mnt:[{}]", self.0)
    }
}

/// The caller's mount namespace.
pub fn own_namespace() -> Result<MountNs> {
    ns_of("/proc/self/ns/mnt")
}

fn ns_of(link: &str) -> Result<MountNs> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(link)
        .map(|m| MountNs(m.ino()))
        .map_err(|e| DriverError::io("stat", link, e))
}

/// "mnt:[4026531840]" (an nsfs link or mount source) -> the namespace.
fn parse_ns_link(s: &str) -> Option<MountNs> {
    s.strip_prefix("mnt:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
        .map(MountNs)
}

fn pids() -> Vec<u32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// What is known of one mount namespace.
#[derive(Debug, Clone)]
pub enum NsView {
    /// A process lives in it: its mount table, read through that process.
    Table { pid: u32, mounts: Vec<MountInfo> },
    /// No process is in it, but something keeps it alive (an open nsfs descriptor or an nsfs
    /// bind mount), so its mounts may still exist and cannot be listed.
    Held,
    /// Nothing refers to it any more: the namespace, and every mount in it, is gone.
    Gone,
}

/// The mount tables of every mount namespace on the host that has a process in it, read once.
/// Judging a mount only in the caller's namespace made a writer in a service's private
/// namespace forget every host mount.
#[derive(Debug, Clone)]
pub struct NsTables {
    own: MountNs,
    tables: Vec<(MountNs, u32, Vec<MountInfo>)>,
}

impl NsTables {
    /// Reads the caller's table and one table per other namespace (through the first process
    /// found in it). Processes that exit meanwhile are skipped.
    pub fn read() -> Result<NsTables> {
        let own = own_namespace()?;
        let mut tables = vec![(own, std::process::id(), mountinfo()?)];
        for pid in pids() {
            let Ok(ns) = ns_of(&format!("/proc/{pid}/ns/mnt")) else {
                continue;
            };
            if tables.iter().any(|(n, _, _)| *n == ns) {
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")) {
                tables.push((ns, pid, parse_mountinfo(&text)));
            }
        }
        Ok(NsTables { own, tables })
    }

    /// Only the caller's table: enough while every mount in question is the caller's.
    pub fn own_only() -> Result<NsTables> {
        Ok(NsTables {
            own: own_namespace()?,
            tables: vec![(own_namespace()?, std::process::id(), mountinfo()?)],
        })
    }

    pub fn own(&self) -> MountNs {
        self.own
    }

    /// Every namespace's table: (namespace, a pid in it, its mounts), the caller's first.
    pub fn tables(&self) -> impl Iterator<Item = (MountNs, u32, &[MountInfo])> {
        self.tables
            .iter()
            .map(|(ns, pid, m)| (*ns, *pid, m.as_slice()))
    }

    /// Every mount in every namespace, with the namespace and a pid in it.
    pub fn all(&self) -> impl Iterator<Item = (MountNs, u32, &MountInfo)> {
        self.tables()
            .flat_map(|(ns, pid, ms)| ms.iter().map(move |m| (ns, pid, m)))
    }

    /// A mount for a message: its target, and where it lives when that is not here.
    pub fn describe(&self, ns: MountNs, pid: u32, m: &MountInfo) -> String {
        if ns == self.own {
            m.target.display().to_string()
        } else {
            format!("{} (mount namespace {ns}, pid {pid})", m.target.display())
        }
    }

    /// What can be known of `ns`. A namespace without a process is looked for among open
    /// descriptors and nsfs mounts before it is called gone.
    pub fn view(&self, ns: MountNs) -> NsView {
        if let Some((_, pid, m)) = self.tables.iter().find(|(n, _, _)| *n == ns) {
            return NsView::Table {
                pid: *pid,
                mounts: m.clone(),
            };
        }
        let bound = self
            .all()
            .any(|(_, _, m)| m.fstype == "nsfs" && parse_ns_link(&m.root) == Some(ns));
        if bound || ns_held_by_fd(ns) {
            NsView::Held
        } else {
            NsView::Gone
        }
    }
}

/// Whether any process holds a descriptor of namespace `ns` (`ip netns`-style holders, or a
/// runtime that keeps a container's namespace open between its processes).
fn ns_held_by_fd(ns: MountNs) -> bool {
    pids().into_iter().any(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| {
                d.flatten().any(|e| {
                    std::fs::read_link(e.path())
                        .ok()
                        .and_then(|l| parse_ns_link(&l.to_string_lossy()))
                        == Some(ns)
                })
            })
            .unwrap_or(false)
    })
}

/// The mounts that use a layer's object, split by where they live.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Users {
    /// Mounts in the caller's namespace, by target.
    pub here: Vec<String>,
    /// Mounts in other namespaces: "TARGET (mount namespace mnt:[N], pid P)".
    pub elsewhere: Vec<String>,
}

impl Users {
    /// Collects `mounts` (namespace, pid, mount) of `tables`.
    pub fn of<'a>(
        tables: &NsTables,
        mounts: impl Iterator<Item = (MountNs, u32, &'a MountInfo)>,
    ) -> Users {
        let mut u = Users::default();
        for (ns, pid, m) in mounts {
            let d = tables.describe(ns, pid, m);
            if ns == tables.own() {
                u.here.push(d);
            } else {
                u.elsewhere.push(d);
            }
        }
        u
    }

    /// Whether removing layer `id` may go ahead. A mount here that blkdrv did not make is
    /// someone's: refused. One only in other namespaces is usually a copy a container's
    /// namespace took of the host's mounts, which goes away with it: the removal is deferred
    /// (the pool retries it), never done under the mount.
    pub fn check_remove(&self, id: crate::ObjectId, what: &str) -> Result<()> {
        if !self.here.is_empty() {
            return Err(DriverError::Refused {
                id,
                op: "remove",
                reason: format!("{what} is mounted at {}", self.here.join(", ")),
            });
        }
        if !self.elsewhere.is_empty() {
            return Err(DriverError::Busy {
                id,
                op: "remove",
                reason: format!("{what} is mounted at {}", self.elsewhere.join(", ")),
            });
        }
        Ok(())
    }
}

/// Mounts, in any mount namespace, that use directory `dir` of the filesystem mounted at
/// `fs_mnt`: binds of it or of anything below it, and overlay mounts that name it (or a
/// directory below it) as a layer. A directory deleted under a mount leaves that mount
/// pointing at nothing, so removal asks this first.
pub fn users_of_dir(dir: &Path, fs_mnt: &Path) -> Result<Users> {
    let tables = NsTables::read()?;
    let own: Vec<&MountInfo> = tables
        .tables()
        .next()
        .map(|(_, _, m)| m.iter().collect())
        .unwrap_or_default();
    let Some(backing) = own.iter().rev().find(|m| m.target == fs_mnt) else {
        return Ok(Users::default());
    };
    let Ok(rel) = dir.strip_prefix(fs_mnt) else {
        return Ok(Users::default());
    };
    let root = Path::new(&backing.root).join(rel);
    Ok(Users::of(
        &tables,
        tables.all().filter(|(_, _, m)| {
            (m.major_minor == backing.major_minor && Path::new(&m.root).starts_with(&root))
                || m.overlay_uses(dir)
        }),
    ))
}

/// A mount found by [`mounts_using`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedMount {
    /// The mount ID (mountinfo's first field): still names the mount after a lazy detach.
    pub id: u64,
    pub target: PathBuf,
}

/// Mounts that use what lives under `dir` or the block devices `devices`: mounts below `dir`,
/// filesystems on those devices mounted anywhere, and overlays whose lowerdir, upperdir or
/// workdir is below `dir`. In reverse mount order, so stacked mounts come before what they
/// stand on.
pub fn mounts_using(dir: &Path, devices: &[PathBuf]) -> Result<Vec<UsedMount>> {
    let mut out = Vec::new();
    for m in mountinfo()? {
        if m.target.starts_with(dir) || m.overlay_uses(dir) || blockdev::mounted_from(&m, devices) {
            out.push(UsedMount {
                id: m.id,
                target: m.target,
            });
        }
    }
    out.reverse();
    out.dedup();
    Ok(out)
}

/// Processes whose working directory, root or an open file lies on one of the mounts `ids`
/// (what keeps a lazily detached filesystem, and so its loop device, alive). Best effort, like
/// [`blockdev::holders`]; memory mappings are not looked at.
pub fn mount_users(ids: &[u64]) -> Vec<Holder> {
    let mut out = Vec::new();
    if ids.is_empty() {
        return out;
    }
    for (pid, dir) in blockdev::proc_dirs() {
        let on = |path: &Path| mount_id(path).is_some_and(|id| ids.contains(&id));
        let uses = on(&dir.join("cwd"))
            || on(&dir.join("root"))
            || std::fs::read_dir(dir.join("fd"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|fd| on(&fd.path()));
        if uses {
            out.push(blockdev::process(pid, &dir));
        }
    }
    out
}

/// The mount ID of what `path` resolves to (statx STATX_MNT_ID; follows /proc magic links).
fn mount_id(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: all-zero is a valid statx (plain integers).
    let mut stx: nix::libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `stx` a statx buffer the kernel fills.
    let r = unsafe {
        nix::libc::statx(
            nix::libc::AT_FDCWD,
            c.as_ptr(),
            0,
            nix::libc::STATX_MNT_ID,
            &mut stx,
        )
    };
    (r == 0 && stx.stx_mask & nix::libc::STATX_MNT_ID != 0).then_some(stx.stx_mnt_id)
}

/// Unmounts `target` inside the mount namespace of process `pid`: a forked child enters the
/// namespace (setns needs a single-threaded caller) and runs umount(8) there.
pub fn unmount_in(pid: u32, target: &Path) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let ns_path = format!("/proc/{pid}/ns/mnt");
    let ns = std::fs::File::open(&ns_path).map_err(|e| DriverError::io("open", &ns_path, e))?;
    let umount = super::exec::which("umount").ok_or_else(|| DriverError::MissingTool {
        program: "umount".into(),
        purpose: "unmount a layer in another mount namespace",
    })?;
    tracing::debug!(pid, target = %target.display(), "umount in another mount namespace");
    let mut cmd = std::process::Command::new(umount);
    cmd.arg(target).stdin(std::process::Stdio::null());
    // SAFETY: only setns(2) runs between fork and exec; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNS)
                .map_err(std::io::Error::from)
        });
    }
    let out = cmd
        .output()
        .map_err(|e| DriverError::io("unmount in the namespace of pid", format!("{pid}"), e))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Already gone there: what unmount() treats as done, too.
    if stderr.contains("not mounted") || stderr.contains("no mount point") {
        return Ok(());
    }
    Err(DriverError::Command {
        command: format!(
            "umount {} (in mount namespace of pid {pid})",
            target.display()
        ),
        status: out.status.to_string(),
        stderr: stderr.lines().collect::<Vec<_>>().join("; "),
    })
}

/// True when something is mounted exactly at `path`.
pub fn is_mountpoint(path: &Path) -> Result<bool> {
    let path = canonical_or_self(path);
    Ok(mountinfo()?.iter().any(|m| m.target == path))
}

/// Mounts at or below `prefix`, deepest first (the order to unmount them in).
pub fn mounts_under(prefix: &Path) -> Result<Vec<PathBuf>> {
    let prefix = canonical_or_self(prefix);
    let mut v: Vec<PathBuf> = mountinfo()?
        .into_iter()
        .map(|m| m.target)
        .filter(|t| t.starts_with(&prefix))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v.dedup();
    Ok(v)
}

fn canonical_or_self(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// mount(2). `data` is the filesystem's option string.
pub fn mount(
    source: &Path,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<()> {
    tracing::debug!(source = %source.display(), target = %target.display(), fstype, ?flags, data, "mount");
    nix::mount::mount(Some(source), target, Some(fstype), flags, data)
        .map_err(|e| DriverError::sys("mount", target.display(), e))
}

/// Bind-mounts `source` at `target` with `flags` (MS_RDONLY, MS_NODEV, MS_NOSUID). Those need
/// a second, remount call: the kernel ignores them on the initial bind.
pub fn bind(source: &Path, target: &Path, flags: MsFlags) -> Result<()> {
    tracing::debug!(source = %source.display(), target = %target.display(), ?flags, "bind mount");
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| DriverError::sys("bind mount", target.display(), e))?;
    if !flags.is_empty() {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags;
        if let Err(e) = nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
            let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
            return Err(DriverError::sys("remount with flags", target.display(), e));
        }
    }
    Ok(())
}

/// umount2(2). EINVAL (not a mount point) counts as already unmounted.
///
/// EBUSY is retried for a short while: a child process forked by another thread holds copies
/// of our descriptors (files inside the mount) until it execs, which makes the mount briefly busy.
pub fn unmount(target: &Path) -> Result<()> {
    tracing::debug!(target = %target.display(), "umount");
    let mut attempts = 0;
    loop {
        match nix::mount::umount2(target, MntFlags::empty()) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {
                return Ok(())
            }
            Err(nix::errno::Errno::EBUSY) if attempts < UNMOUNT_BUSY_RETRIES => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(DriverError::sys("unmount", target.display(), e)),
        }
    }
}

/// 50 x 20 ms: long enough for a fork-to-exec window, short enough to report a real holder.
const UNMOUNT_BUSY_RETRIES: u32 = 50;

/// Detaches every mount below `prefix` lazily. For cleanup paths (test guards, `--force`) where
/// leaving a mount behind is worse than a lazy detach.
pub fn detach_all_under(prefix: &Path) -> Result<usize> {
    let mounts = mounts_under(prefix)?;
    detach_mounts(&mounts)?;
    Ok(mounts.len())
}

/// Lazily detaches each mount in `targets` (for `--force` teardown, where a mount left behind is
/// worse than one that finishes unmounting when its last user goes).
pub fn detach_mounts(targets: &[PathBuf]) -> Result<()> {
    for t in targets {
        match nix::mount::umount2(t.as_path(), MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(DriverError::sys("detach mount", t.display(), e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::container::remount_under;
    use super::*;

    /// Detaches everything under a test's tempdir, even when the test fails.
    struct Unmounter(PathBuf);
    impl Drop for Unmounter {
        fn drop(&mut self) {
            let _ = detach_all_under(&self.0);
        }
    }

    fn errno_of(e: std::io::Error) -> Option<i32> {
        e.raw_os_error()
    }

    #[test]
    fn recursive_ro_bind_is_read_only_in_submounts_too() {
        let tmp = tempfile::tempdir().unwrap();
        let _g = Unmounter(tmp.path().canonicalize().unwrap());
        let src = tmp.path().join("src");
        let dst = tmp.path().join("dst");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::create_dir_all(&dst).unwrap();
        tmpfs(&src.join("sub"), None, None, MsFlags::empty()).unwrap();
        bind_recursive(&src, &dst, MsFlags::MS_RDONLY | MsFlags::MS_NODEV).unwrap();
        assert!(
            is_mountpoint(&dst.join("sub")).unwrap(),
            "the submount came along"
        );
        for f in [dst.join("top"), dst.join("sub/inner")] {
            let e = std::fs::write(&f, b"x").unwrap_err();
            assert_eq!(errno_of(e), Some(nix::libc::EROFS), "{}", f.display());
        }
        // The source itself stays writable, and what is written shows through.
        std::fs::write(src.join("sub/inner"), b"x").unwrap();
        assert_eq!(std::fs::read(dst.join("sub/inner")).unwrap(), b"x");
    }

    #[test]
    fn recursive_bind_without_flags_is_writable_and_private() {
        let tmp = tempfile::tempdir().unwrap();
        let _g = Unmounter(tmp.path().canonicalize().unwrap());
        let src = tmp.path().join("src");
        let dst = tmp.path().join("dst");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::create_dir_all(&dst).unwrap();
        // A shared source: without rprivate, a mount under dst would appear in src too.
        tmpfs(&src, None, None, MsFlags::empty()).unwrap();
        nix::mount::mount(
            None::<&str>,
            &src,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .unwrap();
        std::fs::create_dir(src.join("later")).unwrap();
        bind_recursive(&src, &dst, MsFlags::empty()).unwrap();
        std::fs::write(dst.join("f"), b"y").unwrap();
        assert_eq!(std::fs::read(src.join("f")).unwrap(), b"y");
        tmpfs(&dst.join("later"), None, None, MsFlags::empty()).unwrap();
        assert!(is_mountpoint(&dst.join("later")).unwrap());
        assert!(
            !is_mountpoint(&src.join("later")).unwrap(),
            "propagated back into the source"
        );
    }

    #[test]
    fn remount_fallback_reaches_submounts() {
        let tmp = tempfile::tempdir().unwrap();
        let _g = Unmounter(tmp.path().canonicalize().unwrap());
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::create_dir_all(&dst).unwrap();
        tmpfs(&src.join("sub"), None, None, MsFlags::empty()).unwrap();
        bind_recursive(&src, &dst, MsFlags::empty()).unwrap();
        remount_under(&dst, MsFlags::MS_RDONLY).unwrap();
        for f in [dst.join("top"), dst.join("sub/inner")] {
            let e = std::fs::write(&f, b"x").unwrap_err();
            assert_eq!(errno_of(e), Some(nix::libc::EROFS), "{}", f.display());
        }
    }

    #[test]
    fn recursive_ro_bind_of_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let _g = Unmounter(tmp.path().canonicalize().unwrap());
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        std::fs::write(&src, b"host").unwrap();
        std::fs::write(&dst, b"").unwrap();
        bind_recursive(&src, &dst, MsFlags::MS_RDONLY).unwrap();
        assert_eq!(std::fs::read(&dst).unwrap(), b"host");
        let e = std::fs::write(&dst, b"x").unwrap_err();
        assert_eq!(errno_of(e), Some(nix::libc::EROFS));
    }

    #[test]
    fn recursive_bind_refuses_unknown_flags_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let _g = Unmounter(tmp.path().canonicalize().unwrap());
        let dst = tmp.path().join("dst");
        std::fs::create_dir_all(&dst).unwrap();
        assert!(bind_recursive(tmp.path(), &dst, MsFlags::MS_SYNCHRONOUS).is_err());
        assert!(!is_mountpoint(&dst).unwrap());
        assert!(bind_recursive(&tmp.path().join("missing"), &dst, MsFlags::MS_RDONLY).is_err());
        assert!(!is_mountpoint(&dst).unwrap());
    }

    #[test]
    fn tmpfs_size_and_mode_are_applied() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let _g = Unmounter(tmp.path().canonicalize().unwrap());
        let t = tmp.path().join("t");
        std::fs::create_dir(&t).unwrap();
        tmpfs(
            &t,
            Some(crate::Bytes(64 * 1024)),
            Some(0o700),
            MsFlags::MS_NOSUID,
        )
        .unwrap();
        let mode = std::fs::metadata(&t).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        let e = std::fs::write(t.join("big"), vec![0u8; 1024 * 1024]).unwrap_err();
        assert_eq!(errno_of(e), Some(nix::libc::ENOSPC));
        // What the failed write got in fills it: gone, a small file fits.
        std::fs::remove_file(t.join("big")).unwrap();
        std::fs::write(t.join("small"), vec![0u8; 4096]).unwrap();
        let d = tmp.path().join("d");
        std::fs::create_dir(&d).unwrap();
        tmpfs(&d, None, None, MsFlags::empty()).unwrap();
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o1777, "Docker's default");
        std::fs::write(d.join("big"), vec![0u8; 1024 * 1024]).unwrap();
    }

    #[test]
    fn parses_mountinfo_lines() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    40 1 0:50 / /var/lib/x/merged rw,relatime shared:5 - overlay overlay rw,lowerdir=/a\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].target, PathBuf::from("/mnt/with space"));
        assert_eq!(
            m[0].major_minor,
            DevNo {
                major: 98,
                minor: 0
            }
        );
        assert_eq!(m[0].fstype, "ext3");
        assert_eq!(m[1].fstype, "overlay");
        assert_eq!(m[1].source, "overlay");
    }

    #[test]
    fn ns_links_parse() {
        assert_eq!(parse_ns_link("mnt:[4026531840]"), Some(MountNs(4026531840)));
        assert_eq!(parse_ns_link("net:[4026531840]"), None);
        assert_eq!(parse_ns_link("mnt:[x]"), None);
    }

    #[test]
    fn own_namespace_is_in_the_tables() {
        let t = NsTables::read().unwrap();
        assert_eq!(t.tables().next().map(|(ns, _, _)| ns), Some(t.own()));
        assert!(matches!(t.view(t.own()), NsView::Table { .. }));
        // No inode 1 is a live namespace.
        assert!(matches!(t.view(MountNs(1)), NsView::Gone));
    }

    #[test]
    fn unescape_handles_octal_and_plain_backslash() {
        assert_eq!(unescape("a\\011b"), "a\tb");
        assert_eq!(unescape("a\\b"), "a\\b");
        assert_eq!(unescape("end\\"), "end\\");
        assert_eq!(unescape("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
        // Above \377 is no byte: kept as written.
        assert_eq!(unescape("x\\777"), "x\\777");
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(
            unescape_path("/mnt/\\377").as_os_str().as_bytes(),
            b"/mnt/\xff"
        );
    }

    #[test]
    fn parses_every_field() {
        let text = "22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    40 22 7:1 / /mnt/my\\040disk rw - xfs /dev/loop1 rw\n\
                    43 22 0:39 /sub /data rw,relatime shared:5 master:2 - btrfs /dev/loop2 rw,ssd\n\
                    garbage line\n\
                    44 22 x:y / /bad rw - ext4 /dev/vdb rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3, "{m:?}");
        let got: Vec<(&str, String, &str)> = m
            .iter()
            .map(|m| {
                (
                    m.target.to_str().unwrap(),
                    m.major_minor.to_string(),
                    m.source.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("/", "253:0".to_string(), "/dev/vda"),
                ("/mnt/my disk", "7:1".to_string(), "/dev/loop1"),
                ("/data", "0:39".to_string(), "/dev/loop2"),
            ]
        );
        assert_eq!(m[2].id, 43);
        assert_eq!(m[2].root, "/sub");
        assert_eq!(m[2].options, "rw,relatime");
        assert_eq!(m[2].fstype, "btrfs");
        assert_eq!(m[2].super_options, "rw,ssd");
    }
}
