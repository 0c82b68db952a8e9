//! mount(2)/umount2(2) through nix, and /proc/self/mountinfo parsing.

use crate::error::{DriverError, Result};
use nix::mount::{MntFlags, MsFlags};
use std::path::{Path, PathBuf};

/// One line of /proc/self/mountinfo (the fields blkdrv uses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub major_minor: String,
    pub root: String,
    pub target: PathBuf,
    pub options: String,
    pub fstype: String,
    pub source: String,
}

/// mountinfo escapes space, tab, newline and backslash as \ooo octal.
fn unescape(s: &str) -> String {
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
                out.push(v as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

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
                major_minor: pre[2].to_string(),
                root: unescape(pre[3]),
                target: PathBuf::from(unescape(pre[4])),
                options: pre[5].to_string(),
                fstype: post[0].to_string(),
                source: unescape(post[1]),
            })
        })
        .collect()
}

pub fn mountinfo() -> Result<Vec<MountInfo>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| DriverError::io("read", "/proc/self/mountinfo", e))?;
    Ok(parse_mountinfo(&text))
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

/// Bind-mounts `source` at `target`, read-only if asked. A read-only bind needs a second,
/// remount call: the kernel ignores MS_RDONLY on the initial bind.
pub fn bind(source: &Path, target: &Path, read_only: bool) -> Result<()> {
    tracing::debug!(source = %source.display(), target = %target.display(), read_only, "bind mount");
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| DriverError::sys("bind mount", target.display(), e))?;
    if read_only {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        if let Err(e) = nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>) {
            let _ = nix::mount::umount2(target, MntFlags::MNT_DETACH);
            return Err(DriverError::sys("remount read-only", target.display(), e));
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
    for m in &mounts {
        match nix::mount::umount2(m.as_path(), MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => return Err(DriverError::sys("detach mount", m.display(), e)),
        }
    }
    Ok(mounts.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_lines() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    40 1 0:50 / /var/lib/x/merged rw,relatime shared:5 - overlay overlay rw,lowerdir=/a\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].target, PathBuf::from("/mnt/with space"));
        assert_eq!(m[0].major_minor, "98:0");
        assert_eq!(m[0].fstype, "ext3");
        assert_eq!(m[1].fstype, "overlay");
        assert_eq!(m[1].source, "overlay");
    }

    #[test]
    fn unescape_handles_octal_and_plain_backslash() {
        assert_eq!(unescape("a\\011b"), "a\tb");
        assert_eq!(unescape("a\\b"), "a\\b");
        assert_eq!(unescape("end\\"), "end\\");
    }
}
