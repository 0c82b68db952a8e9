//! The environment the tests read, read once: a test binary runs its cases on parallel threads,
//! so nothing may change the environment while they run (children get theirs through
//! `Command::env`).

use std::path::PathBuf;
use std::sync::OnceLock;

#[derive(Debug)]
pub struct Config {
    /// `BLKDRV_IN_VM`: running inside the VM harness (tests/vm/run), where what the kernel
    /// lacks on the host must be there.
    pub in_vm: bool,
    /// `BLKDRV_TEST_DEVICES="/dev/vdb /dev/vdc"`: pools on raw block devices instead of loopback
    /// files (the VM harness sets it; cases must then run one at a time).
    pub devices: Vec<PathBuf>,
    /// `BLKDRV_TEST_OPTIONS="lvm=on"`: driver options (KEY=VALUE words) for every test pool.
    pub options: Vec<(String, String)>,
    /// `BLKDRV_TEST_DRIVERS=vfs,overlay`: the drivers the conformance suite runs (all if unset).
    pub drivers: Option<Vec<String>>,
    /// `BLKDRV_TEST_SEED`: replays a seeded run (see [`crate::rng`]).
    pub seed: Option<u64>,
}

/// The configuration, read from the environment on first use.
pub fn get() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| Config {
        in_vm: std::env::var_os("BLKDRV_IN_VM").is_some(),
        devices: std::env::var("BLKDRV_TEST_DEVICES")
            .map(|v| v.split_whitespace().map(PathBuf::from).collect())
            .unwrap_or_default(),
        options: std::env::var("BLKDRV_TEST_OPTIONS")
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        drivers: std::env::var("BLKDRV_TEST_DRIVERS")
            .ok()
            .map(|s| s.split(',').map(str::to_string).collect()),
        seed: std::env::var("BLKDRV_TEST_SEED")
            .ok()
            .and_then(|v| v.trim().parse().ok()),
    })
}

/// A count from the environment (`name`), or `default`: the campaign's sizes, which the VM
/// lowers for emulation.
pub fn count(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}
