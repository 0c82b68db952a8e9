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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn proc_and_sys_are_pseudo_filesystems() {
        assert!(on_pseudo_filesystem(Path::new("/proc/self")).unwrap());
        assert!(on_pseudo_filesystem(Path::new("/sys/kernel")).unwrap());
        let dir = tempfile::tempdir().unwrap();
        assert!(!on_pseudo_filesystem(dir.path()).unwrap());
        assert!(on_pseudo_filesystem(&dir.path().join("missing")).is_err());
    }
}
