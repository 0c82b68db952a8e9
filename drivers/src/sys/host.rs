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
