//! The environment a run was taken in: kernel, CPU, memory, what the pools sat on.

use crate::report::Environment;
use std::collections::BTreeMap;
use std::path::Path;

pub fn collect(dir: &Path) -> Environment {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_bytes = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024);
    let kernel = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into());
    let mut versions = BTreeMap::new();
    versions.insert("blkdrv".to_string(), env!("CARGO_PKG_VERSION").to_string());
    Environment {
        kernel,
        cpu,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_bytes,
        // Set by the test VM's init (tests/vm/init).
        vm: std::env::var_os("BLKDRV_IN_VM").is_some(),
        backing: format!("loopback files on {} ({})", fs_name(dir), dir.display()),
        versions,
        started: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

/// The filesystem type of `dir`, from /proc/self/mountinfo (longest matching mount point).
fn fs_name(dir: &Path) -> String {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        let (Some(target), Some(fstype)) = (fields.get(4), fields.get(sep + 1)) else {
            continue;
        };
        let target = target.replace("\\040", " ");
        if dir.starts_with(&target) && best.as_ref().is_none_or(|(l, _)| target.len() >= *l) {
            best = Some((target.len(), fstype.to_string()));
        }
    }
    best.map_or_else(|| "unknown".into(), |(_, f)| f)
}

#[cfg(test)]
mod tests {
    #[test]
    fn root_has_a_filesystem() {
        let env = super::collect(std::path::Path::new("/"));
        assert!(!env.backing.contains("unknown"), "{}", env.backing);
        assert!(env.cpus >= 1);
        assert!(!env.kernel.is_empty());
    }
}
