//! devicemapper-specific behaviour on a real dm-thin pool. This kernel has no device-mapper:
//! here every case is reported as ignored with the command that runs it; `tests/vm/run
//! devicemapper` (called by scripts/test.sh) runs them in a VM with a stock Debian kernel.

#[path = "../common/mod.rs"]
mod common;

use common::Env;
use libtest_mimic::{Arguments, Failed, Trial};
use std::fs;
use std::path::{Path, PathBuf};

const MIB: u64 = 1 << 20;

type Case = fn() -> Result<(), Failed>;

const CASES: &[(&str, Case)] = &[
    ("snapshots_share_the_base_filesystem", no_mkfs_on_snapshots),
    (
        "crash_between_create_snap_and_store",
        crash_after_create_snap,
    ),
    ("deactivate_then_activate_keeps_layers", deactivate_activate),
    ("discard_returns_space_on_remove", discard_returns_space),
    ("busy_device_goes_to_deferred_removal", deferred_removal),
    ("full_pool_gives_enospc_and_refuses_layers", full_pool),
    ("bad_options_are_refused", bad_options),
    (
        "loopback_data_file_grows_when_free_space_runs_low",
        autoextend,
    ),
    ("swapped_devices_are_refused_on_activation", swapped_devices),
];

fn main() {
    let args = Arguments::from_args();
    let in_vm = std::env::var_os("BLKDRV_IN_VM").is_some();
    let has_dm = Path::new("/sys/class/misc/device-mapper").exists();
    let vm_only = !in_vm && !has_dm;
    if vm_only && !args.list {
        eprintln!(
            "devicemapper: {} cases need device-mapper, which this kernel lacks: run `tests/vm/run devicemapper` (scripts/test.sh does)",
            CASES.len()
        );
    }
    let trials = CASES
        .iter()
        .map(|(name, run)| {
            let run = *run;
            Trial::test(*name, move || {
                std::panic::catch_unwind(run).unwrap_or_else(|p| {
                    Err(Failed::from(format!(
                        "panicked: {}",
                        p.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default()
                    )))
                })
            })
            .with_ignored_flag(vm_only)
        })
        .collect();
    libtest_mimic::run(&args, trials).exit();
}

fn dm_env(extra: &[&str]) -> Env {
    let mut args = vec!["--driver", "devicemapper", "--size", "1G"];
    args.extend_from_slice(extra);
    Env::with_pool(&args)
}

fn json(env: &Env, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    serde_json::from_str(&env.ok(&a).stdout).expect("JSON output")
}

fn detail(status: &serde_json::Value, key: &str) -> String {
    status["space"]["details"]
        .as_array()
        .and_then(|d| d.iter().find(|kv| kv[0] == key))
        .and_then(|kv| kv[1].as_str())
        .unwrap_or_default()
        .to_string()
}

fn fill(p: &Path, bytes: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = fs::File::create(p)?;
    let chunk: Vec<u8> = (0..MIB).map(|i| (i * 7 + 13) as u8).collect();
    for _ in 0..bytes / MIB {
        f.write_all(&chunk)?;
    }
    f.sync_all()
}

/// Source device of the mount at `target`.
fn mounted_device(target: &Path) -> PathBuf {
    let canon = target.canonicalize().unwrap();
    let m = blkdrv_drivers::sys::mount::mountinfo()
        .unwrap()
        .into_iter()
        .find(|m| m.target == canon)
        .expect("mounted");
    PathBuf::from(m.source)
}

fn base(env: &Env) {
    env.base();
}

/// Every layer is a snapshot of the base device: its filesystem is the base's (same UUID),
/// never a new mkfs.
fn no_mkfs_on_snapshots() -> Result<(), Failed> {
    let env = dm_env(&[]);
    base(&env);
    env.ok(&["layer", "snapshot", "base", "c1", "--pool", "t"]);
    let status = json(&env, &["pool", "status", "t"]);
    let uuid = status["identity"]["base_fs_uuid"]
        .as_str()
        .unwrap()
        .to_string();
    for name in ["base", "c1"] {
        let m = env.path(&format!("m-{name}"));
        env.ok(&[
            "layer",
            "mount",
            name,
            m.to_str().unwrap(),
            "--ro",
            "--pool",
            "t",
        ]);
        let dev = mounted_device(&m);
        let found = blkdrv_drivers::sys::signature::fs_uuid(&dev)
            .unwrap()
            .map(|(_, u)| u);
        env.ok(&["layer", "umount", name, "--pool", "t"]);
        if found.as_deref() != Some(uuid.as_str()) {
            return Err(format!("{name}: filesystem {found:?}, base is {uuid}").into());
        }
    }
    Ok(())
}

fn blkdrv_bin() -> String {
    std::env::var("BLKDRV_BIN").unwrap_or_else(|_| "blkdrv".into())
}

/// kill -9 (an abort at the crash point) after create_snap reached the kernel but before the
/// store recorded the layer: the next command rolls it back, the thin id is gone, the
/// transaction id matches the store, and thin_check passes on the metadata.
fn crash_after_create_snap() -> Result<(), Failed> {
    let env = dm_env(&[]);
    base(&env);
    let before = detail(&json(&env, &["pool", "status", "t"]), "Transaction Id");
    let out = std::process::Command::new(blkdrv_bin())
        .args(["--root"])
        .arg(env.root())
        .args([
            "--config",
            "/nonexistent",
            "layer",
            "snapshot",
            "base",
            "victim",
            "--pool",
            "t",
        ])
        .env("BLKDRV_CRASH_AT", "snapshot:object")
        .output()
        .map_err(|e| format!("run blkdrv: {e}"))?;
    if out.status.success() {
        return Err("the child did not crash".into());
    }
    let o = env.ok(&["pool", "check", "t"]);
    if !o.stdout.contains("rolled back interrupted create") || !o.stdout.contains("consistent") {
        return Err(format!("check after crash: {}{}", o.stdout, o.stderr).into());
    }
    if env.run(&["layer", "inspect", "victim", "--pool", "t"]).code == 0 {
        return Err("the half-made layer is visible".into());
    }
    let after = detail(&json(&env, &["pool", "status", "t"]), "Transaction Id");
    // create_snap, then the rollback's delete: two steps.
    let (b, a): (u64, u64) = (before.parse().unwrap(), after.parse().unwrap());
    if a != b + 2 {
        return Err(format!("transaction id {b} -> {a}, expected {}", b + 2).into());
    }
    thin_check_offline(&env)?;
    Ok(())
}

/// Deactivates the pool, runs thin_check on its metadata file, reactivates.
fn thin_check_offline(env: &Env) -> Result<(), Failed> {
    env.ok(&["pool", "deactivate", "t"]);
    let meta = env.root().join("pools/t/backing/metadata.img");
    let lo = blkdrv_drivers::sys::loopdev::attach(&meta).map_err(|e| e.to_string())?;
    let out = std::process::Command::new("thin_check")
        .arg(&lo.path)
        .output()
        .map_err(|e| e.to_string())?;
    drop(lo);
    if !out.status.success() {
        return Err(format!("thin_check: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    env.ok(&["pool", "activate", "t"]);
    Ok(())
}

/// dm tables do not survive a reboot: after deactivate (what a reboot does) and activate,
/// every layer is back with its data.
fn deactivate_activate() -> Result<(), Failed> {
    let env = dm_env(&[]);
    base(&env);
    env.ok(&["layer", "snapshot", "base", "c", "--pool", "t"]);
    let m = env.path("m");
    env.ok(&["layer", "mount", "c", m.to_str().unwrap(), "--pool", "t"]);
    fs::write(m.join("kept"), "still here").unwrap();
    env.ok(&["layer", "umount", "c", "--pool", "t"]);
    env.ok(&["layer", "commit", "c", "--pool", "t"]);
    thin_check_offline(&env)?;
    let m2 = env.path("m2");
    env.ok(&["layer", "mount", "c", m2.to_str().unwrap(), "--pool", "t"]);
    let content = fs::read_to_string(m2.join("kept")).unwrap_or_default();
    let host = fs::read_to_string(m2.join("etc/hostname")).unwrap_or_default();
    env.ok(&["layer", "umount", "c", "--pool", "t"]);
    if content != "still here" || host != "h" {
        return Err(format!("after reactivation: {content:?} {host:?}").into());
    }
    Ok(())
}

fn used(env: &Env) -> u64 {
    json(env, &["pool", "status", "t"])["space"]["used"]
        .as_u64()
        .unwrap()
}

fn data_file_allocated(env: &Env) -> u64 {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(env.root().join("pools/t/backing/data.img"))
        .unwrap()
        .blocks()
        * 512
}

fn discard_returns_space() -> Result<(), Failed> {
    let env = dm_env(&[]);
    base(&env);
    env.ok(&["layer", "snapshot", "base", "big", "--pool", "t"]);
    let m = env.path("m");
    env.ok(&["layer", "mount", "big", m.to_str().unwrap(), "--pool", "t"]);
    fill(&m.join("blob"), 64 * MIB).unwrap();
    env.ok(&["layer", "umount", "big", "--pool", "t"]);
    let (u1, a1) = (used(&env), data_file_allocated(&env));
    env.ok(&["layer", "rm", "big", "--pool", "t"]);
    let (u2, a2) = (used(&env), data_file_allocated(&env));
    if u1 < u2 + 60 * MIB {
        return Err(format!("pool used {u1} -> {u2}: blocks not returned").into());
    }
    if a1 < a2 + 60 * MIB {
        return Err(format!("loop file allocated {a1} -> {a2}: no discard").into());
    }
    Ok(())
}

/// A device held open outside blkdrv (a leaked mount) makes removal deferred; once it is
/// released, the next command finishes the removal.
fn deferred_removal() -> Result<(), Failed> {
    let env = dm_env(&[]);
    base(&env);
    env.ok(&["layer", "snapshot", "base", "held", "--pool", "t"]);
    let m = env.path("m");
    env.ok(&["layer", "mount", "held", m.to_str().unwrap(), "--pool", "t"]);
    let leak = env.path("leak");
    fs::create_dir_all(&leak).unwrap();
    blkdrv_drivers::sys::mount::bind(&m, &leak, false).map_err(|e| e.to_string())?;
    env.ok(&["layer", "umount", "held", "--pool", "t"]);
    let o = env.ok(&["layer", "rm", "held", "--pool", "t"]);
    let deferred = o.stdout.contains("deferred");
    let state = json(&env, &["layer", "inspect", "held", "--pool", "t"])["state"].clone();
    blkdrv_drivers::sys::mount::unmount(&leak).map_err(|e| e.to_string())?;
    if !deferred || state != "removing" {
        return Err(format!("expected a deferred removal, got {:?} / {state}", o.stdout).into());
    }
    // Any writer retries it.
    let o = env.ok(&["pool", "check", "t"]);
    if !o.stdout.contains("finished interrupted remove") {
        return Err(format!("not retried: {}", o.stdout).into());
    }
    if env.run(&["layer", "inspect", "held", "--pool", "t"]).code == 0 {
        return Err("layer still there after the retry".into());
    }
    Ok(())
}

fn full_pool() -> Result<(), Failed> {
    let env = dm_env(&["--no-autoextend", "--min-free", "10"]);
    base(&env);
    env.ok(&["layer", "snapshot", "base", "hog", "--pool", "t"]);
    let m = env.path("m");
    env.ok(&["layer", "mount", "hog", m.to_str().unwrap(), "--pool", "t"]);
    // More than the pool holds: the write must fail, not hang (error_if_no_space).
    let r = fill(&m.join("hog"), 1200 * MIB);
    let _ = env.run(&["layer", "umount", "hog", "--pool", "t"]);
    let err = match r {
        Ok(()) => return Err("writing past the pool's end succeeded".into()),
        Err(e) => e,
    };
    let o = env.run(&["layer", "snapshot", "base", "another", "--pool", "t"]);
    if o.code == 0 || !o.stderr.contains("not enough free data space") {
        return Err(format!("new layer on a full pool: {} {}", o.code, o.stderr).into());
    }
    let status = json(&env, &["pool", "status", "t"]);
    let state = detail(&status, "Pool State");
    eprintln!("full pool: write error {err}; pool state {state}");
    Ok(())
}

fn bad_options() -> Result<(), Failed> {
    let env = dm_env(&[]);
    for (args, needle) in [
        (vec!["-o", "block_size=96K"], "multiple of 64KiB"),
        (vec!["-o", "base_size=100G"], "overcommit"),
        (vec!["-o", "metadata_size=1M"], "2MiB"),
    ] {
        let mut a = vec![
            "pool",
            "init",
            "bad",
            "--driver",
            "devicemapper",
            "--size",
            "1G",
        ];
        a.extend(args.iter());
        let o = env.run(&a);
        if o.code == 0 || !o.stderr.contains(needle) {
            return Err(format!("{args:?}: {} {}", o.code, o.stderr).into());
        }
        if env.root().join("pools/bad").exists() {
            return Err(format!("{args:?} left a pool directory").into());
        }
    }
    Ok(())
}

/// The loopback pool's data file grows (and the pool table is reloaded) once free data falls
/// under the autoextend threshold.
fn autoextend() -> Result<(), Failed> {
    let env = Env::with_pool(&[
        "--driver",
        "devicemapper",
        "--size",
        "512M",
        "--max-size",
        "2G",
    ]);
    base(&env);
    env.ok(&["layer", "snapshot", "base", "filler", "--pool", "t"]);
    let m = env.path("m");
    env.ok(&[
        "layer",
        "mount",
        "filler",
        m.to_str().unwrap(),
        "--pool",
        "t",
    ]);
    let total_before = json(&env, &["pool", "status", "t"])["space"]["total"]
        .as_u64()
        .unwrap();
    // Under the 20% threshold but not full: blkdrv has no daemon, so growth happens at the
    // next command, not on the kernel's low-water event.
    fill(&m.join("f"), 400 * MIB).map_err(|e| format!("fill: {e}"))?;
    // The unmount is a writer: it grows the pool before doing its work.
    let o = env.ok(&["layer", "umount", "filler", "--pool", "t"]);
    let total_after = json(&env, &["pool", "status", "t"])["space"]["total"]
        .as_u64()
        .unwrap();
    let file = fs::metadata(env.root().join("pools/t/backing/data.img"))
        .unwrap()
        .len();
    if !o.stderr.contains("grew pool") || total_after <= total_before || file <= 512 * MIB {
        return Err(format!(
            "no growth: {} total {total_before} -> {total_after}, file {file}",
            o.stderr
        )
        .into());
    }
    Ok(())
}

/// Data and metadata files swapped behind blkdrv's back: activation must refuse, not corrupt.
fn swapped_devices() -> Result<(), Failed> {
    let env = dm_env(&[]);
    base(&env);
    env.ok(&["pool", "deactivate", "t"]);
    let dir = env.root().join("pools/t/backing");
    fs::rename(dir.join("data.img"), dir.join("tmp.img")).unwrap();
    fs::rename(dir.join("metadata.img"), dir.join("data.img")).unwrap();
    fs::rename(dir.join("tmp.img"), dir.join("metadata.img")).unwrap();
    let o = env.run(&["layer", "ls", "--pool", "t"]);
    // Put them back so the guard can clean up normally.
    fs::rename(dir.join("data.img"), dir.join("tmp.img")).unwrap();
    fs::rename(dir.join("metadata.img"), dir.join("data.img")).unwrap();
    fs::rename(dir.join("tmp.img"), dir.join("metadata.img")).unwrap();
    if o.code == 0 {
        return Err(format!("a pool with swapped devices activated: {}", o.stdout).into());
    }
    eprintln!("swapped devices refused: {}", o.stderr.trim());
    env.ok(&["layer", "ls", "--pool", "t"]);
    Ok(())
}
