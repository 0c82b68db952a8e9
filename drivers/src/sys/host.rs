//! Host capability checks: which kernel filesystems and tools are present.

use super::exec::which;
use crate::error::{DriverError, Result};
use crate::Requirements;

/// Filesystems the running kernel supports, from /proc/filesystems.
pub fn kernel_filesystems() -> Vec<String> {
    std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect()
}

/// Lists what is missing for `req`; empty when the host has everything.
pub fn missing(req: &Requirements) -> Vec<String> {
    let fss = kernel_filesystems();
    let mut out = Vec::new();
    for fs in &req.filesystems {
        if !fss.iter().any(|f| f == fs) {
            out.push(format!("kernel filesystem {fs} (not in /proc/filesystems)"));
        }
    }
    for tool in &req.tools {
        if which(tool).is_none() {
            out.push(format!("program {tool} (run scripts/setup.sh)"));
        }
    }
    for p in &req.paths {
        if !std::path::Path::new(p).exists() {
            out.push(format!("{p} (kernel feature missing)"));
        }
    }
    out
}

/// True when what is missing is only kernel support (a filesystem or a device node), which a
/// VM with another kernel can provide; tools can be installed on this host instead.
pub fn only_kernel_missing(req: &Requirements) -> bool {
    let tools_ok = req.tools.iter().all(|t| which(t).is_some());
    tools_ok && !missing(req).is_empty()
}

pub fn check(driver: &str, req: &Requirements) -> Result<()> {
    let m = missing(req);
    if m.is_empty() {
        Ok(())
    } else {
        Err(DriverError::Unavailable {
            driver: driver.to_string(),
            reason: format!("missing {}", m.join(", ")),
        })
    }
}

/// True when running with root privileges (device nodes, mounts).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether `path` is on a kernel pseudo filesystem (procfs, sysfs, cgroup2, debugfs, tracefs,
/// securityfs), whose files are generated on read and change size while read: nothing in
/// them is a tree to archive. The statfs error is returned as is, for the caller to name.
pub fn on_pseudo_filesystem(path: &std::path::Path) -> std::io::Result<bool> {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, PROC_SUPER_MAGIC, SYSFS_MAGIC};
    // debugfs, tracefs, securityfs: like /sys, nothing in them is an image. nix names none.
    const OTHERS: [i64; 3] = [0x6462_6720, 0x7472_6163, 0x7363_6673];
    let ty = statfs(path)?.filesystem_type();
    Ok(ty == PROC_SUPER_MAGIC
        || ty == SYSFS_MAGIC
        || ty == CGROUP2_SUPER_MAGIC
        || OTHERS.contains(&(ty.0 as i64)))
}

/// What `--driver auto` asks the drivers about: `state_dir` and the type of the filesystem
/// holding it (see [`filesystem_of`]).
pub fn facts(state_dir: &std::path::Path) -> crate::HostFacts {
    crate::HostFacts {
        state_dir: state_dir.to_path_buf(),
        state_fs: filesystem_of(state_dir),
    }
}

/// The type of the filesystem `path` would be made on: that of its nearest existing ancestor,
/// as /proc/self/mountinfo names it. `None` when no ancestor can be resolved or the mount
/// table cannot be read.
pub fn filesystem_of(path: &std::path::Path) -> Option<String> {
    let existing = path
        .ancestors()
        .find_map(|a| std::fs::canonicalize(a).ok())?;
    let mounts = super::mount::mountinfo().ok()?;
    mount_holding(&mounts, &existing).map(|m| m.fstype.clone())
}

/// The mount holding the canonical `path`: the longest mount point above it, the last one
/// listed where mounts are stacked on the same point (the one on top, which path lookups see).
fn mount_holding<'a>(
    mounts: &'a [super::mount::MountInfo],
    path: &std::path::Path,
) -> Option<&'a super::mount::MountInfo> {
    mounts
        .iter()
        .enumerate()
        .filter(|(_, m)| path.starts_with(&m.target))
        .max_by_key(|(i, m)| (m.target.components().count(), *i))
        .map(|(_, m)| m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_deepest_topmost_mount_holds_a_path() {
        let mounts = super::super::mount::parse_mountinfo(
            "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
             2 1 0:30 / /var/lib rw - btrfs /dev/sdb rw\n\
             3 1 0:31 / /var/lib rw - zfs tank/lib rw\n\
             4 1 0:32 / /var/libx rw - xfs /dev/sdc rw\n",
        );
        let fs = |p: &str| mount_holding(&mounts, Path::new(p)).map(|m| m.fstype.as_str());
        assert_eq!(fs("/var/lib/blkdrv"), Some("zfs"), "stacked: the top one");
        assert_eq!(fs("/var/libx/a"), Some("xfs"));
        assert_eq!(
            fs("/var/li"),
            Some("ext4"),
            "components, not string prefixes"
        );
        assert_eq!(fs("/"), Some("ext4"));
        assert_eq!(mount_holding(&[], Path::new("/")), None);
    }

    #[test]
    fn a_missing_path_counts_as_its_nearest_existing_ancestor() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        assert_eq!(filesystem_of(&deep), filesystem_of(dir.path()));
        assert!(filesystem_of(&deep).is_some());
    }

    #[test]
    fn proc_and_sys_are_pseudo_filesystems() {
        assert!(on_pseudo_filesystem(Path::new("/proc/self")).unwrap());
        assert!(on_pseudo_filesystem(Path::new("/sys/kernel")).unwrap());
        let dir = tempfile::tempdir().unwrap();
        assert!(!on_pseudo_filesystem(dir.path()).unwrap());
        assert!(on_pseudo_filesystem(&dir.path().join("missing")).is_err());
    }
}
