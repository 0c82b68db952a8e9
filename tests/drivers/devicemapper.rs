//! devicemapper-specific behaviour on a real dm-thin pool. This kernel has no device-mapper:
//! here every case is reported as ignored with the command that runs it; `tests/vm/run
//! devicemapper` (called by scripts/test.sh) runs them in a VM with a stock Debian kernel.

#[path = "direct.rs"]
mod direct;

use kit::cli::{detail, fill, json, layer, tool, Env, MIB};
use kit::trial::{Case, VmTarget};
use libtest_mimic::Failed;
use std::fs;
use std::path::{Path, PathBuf};

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
    ("swapped_devices_are_refused_on_activation", swapped_devices),
    (
        "lvm_mode_makes_vg_and_thinpool_with_autoextend_profile",
        lvm_mode,
    ),
    (
        "metadata_snapshot_left_by_a_killed_process_is_released",
        stale_metadata_snapshot,
    ),
    ("lvm_thinpool_is_adopted_only_when_empty", lvm_adopt),
    ("bench_smoke_runs_every_workload", bench_smoke),
    ("volume_copies_and_removal_in_any_order", volume_copies),
    ("volume_with_a_size_refuses_writes_past_it", sized_volume),
];

fn main() {
    kit::child::maybe_run_child();
    VmTarget {
        target: "devicemapper",
        available: || Path::new("/sys/class/misc/device-mapper").exists(),
        lacking: "device-mapper, which this kernel lacks",
        note: " (scripts/test.sh does)",
        missing: None,
    }
    .run(CASES)
}

fn dm_env(extra: &[&str]) -> Env {
    let mut args = vec!["--driver", "devicemapper", "--size", "1G"];
    args.extend_from_slice(extra);
    Env::with_pool(&args)
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

/// kill -9 (an abort at the crash point) after create_snap reached the kernel but before the
/// store recorded the layer: the next command rolls it back, the thin id is gone, the
/// transaction id matches the store, and thin_check passes on the metadata.
fn crash_after_create_snap() -> Result<(), Failed> {
    let env = dm_env(&[]);
    base(&env);
    let before = detail(&json(&env, &["pool", "status", "t"]), "Transaction Id");
    let root = env.root().display().to_string();
    let out = kit::child::command(&kit::child::blkdrv_args(&[
        "--root", &root, "layer", "snapshot", "base", "victim", "--pool", "t",
    ]))
    .env(blkdrv_pool::crash::ENV, "snapshot:object")
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

/// A process killed between reserve_metadata_snap and its release (thin_ls for usage) left the
/// pool's one metadata snapshot reserved: every later usage or list got EBUSY (the campaign's
/// random kills found it). The next thin_ls releases it.
fn stale_metadata_snapshot() -> Result<(), Failed> {
    let env = dm_env(&[]);
    base(&env);
    env.ok(&["layer", "snapshot", "base", "c", "--pool", "t"]);
    let pools = std::process::Command::new("dmsetup")
        .args(["ls", "--target", "thin-pool"])
        .output()
        .map_err(|e| e.to_string())?;
    let pools = String::from_utf8_lossy(&pools.stdout).into_owned();
    let pool = match pools.split_whitespace().next() {
        Some(p) if pools.lines().count() == 1 => p.to_string(),
        _ => return Err(format!("expected one thin pool: {pools:?}").into()),
    };
    let st = std::process::Command::new("dmsetup")
        .args(["message", &pool, "0", "reserve_metadata_snap"])
        .status()
        .map_err(|e| e.to_string())?;
    if !st.success() {
        return Err("dmsetup message reserve_metadata_snap failed".into());
    }
    let o = env.run(&["pool", "check", "t"]);
    if o.code != 0 {
        return Err(format!("pool check after a stale reservation: {}", o.stderr).into());
    }
    let ls = json(&env, &["layer", "ls", "--pool", "t"]);
    let c = ls
        .as_array()
        .and_then(|a| a.iter().find(|l| l["name"] == "c"));
    if c.is_none_or(|c| c["size_bytes"].is_null()) {
        return Err(format!("the active layer's size is unknown: {ls}").into());
    }
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
    let m = env.mount_rw("c", "m");
    fs::write(m.join("kept"), "still here").unwrap();
    env.ok(&["layer", "umount", "c", "--pool", "t"]);
    env.ok(&["layer", "commit", "c", "--pool", "t"]);
    thin_check_offline(&env)?;
    let m2 = env.mount_rw("c", "m2");
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
    let m = env.mount_rw("big", "m");
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
    let m = env.mount_rw("held", "m");
    let leak = env.path("leak");
    fs::create_dir_all(&leak).unwrap();
    blkdrv_drivers::sys::mount::bind(&m, &leak, nix::mount::MsFlags::empty())
        .map_err(|e| e.to_string())?;
    env.ok(&["layer", "umount", "held", "--pool", "t"]);
    let o = env.ok(&["layer", "rm", "held", "--pool", "t"]);
    let deferred = o.stdout.contains("deferred");
    let state = layer(&env, "held")["state"].clone();
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
    let m = env.mount_rw("hog", "m");
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
        // The admin's mkfs arguments reach mkfs (and a bad one fails init cleanly).
        (vec!["--mkfs-arg=--no-such-flag"], "mkfs.xfs"),
        (vec!["--vg", "x"], "--lvm"),
        (vec!["-o", "thinpool=novg"], "VG/LV"),
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

fn lvm(args: &[&str]) -> String {
    tool("lvm", args)
}

/// A loop device on a sparse file for LVM to use as a PV; on drop the VG is force-removed and
/// the label wiped whatever the test left (a failed test must not leave dm devices behind).
struct LvmDisk {
    vg: &'static str,
    dev: PathBuf,
    _loop: blkdrv_drivers::sys::loopdev::AttachedLoop,
    _dir: tempfile::TempDir,
}

impl LvmDisk {
    fn new(vg: &'static str, size: u64) -> LvmDisk {
        let dir = tempfile::tempdir_in("/tmp").unwrap();
        let file = dir.path().join("pv.img");
        blkdrv_drivers::sys::loopdev::create_sparse_file(&file, blkdrv_drivers::Bytes(size))
            .unwrap();
        let l = blkdrv_drivers::sys::loopdev::attach(&file).unwrap();
        LvmDisk {
            vg,
            dev: l.path.clone(),
            _loop: l,
            _dir: dir,
        }
    }

    fn dev(&self) -> &str {
        self.dev.to_str().unwrap()
    }
}

impl Drop for LvmDisk {
    fn drop(&mut self) {
        let run = |args: &[&str]| {
            let _ = std::process::Command::new("lvm")
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        };
        run(&["vgremove", "-ff", self.vg]);
        run(&["pvremove", "-ff", "-y", self.dev()]);
    }
}

fn lv_size(lv: &str) -> u64 {
    lvm(&[
        "lvs",
        "--noheadings",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        "lv_size",
        lv,
    ])
    .trim()
    .parse()
    .unwrap()
}

/// `--lvm --device`: a VG and a thin-pool LV with an autoextend profile (container-storage-
/// setup's layout); the pool grows by the profile's policy at the next command once over the
/// threshold; deactivate + activate keeps data; destroy removes the LV, VG and PV label.
fn lvm_mode() -> Result<(), Failed> {
    let disk = LvmDisk::new("blkdrv-lvmtest", 1 << 30);
    let env = Env::with_pool(&[
        "--driver",
        "devicemapper",
        "--lvm",
        "--device",
        disk.dev(),
        "--vg",
        "blkdrv-lvmtest",
        "-o",
        "autoextend_threshold=50",
        "--min-free",
        "0",
    ]);
    let lv = "blkdrv-lvmtest/thinpool";
    let attrs = lvm(&["lvs", "--noheadings", "-o", "segtype,lv_profile", lv]);
    if !attrs.contains("thin-pool") || !attrs.contains("blkdrv-blkdrv-lvmtest-thinpool") {
        return Err(format!("lvs {lv}: {attrs}").into());
    }
    let profile =
        fs::read_to_string("/etc/lvm/profile/blkdrv-blkdrv-lvmtest-thinpool.profile").unwrap();
    if !profile.contains("thin_pool_autoextend_threshold = 50")
        || !profile.contains("thin_pool_autoextend_percent = 20")
    {
        return Err(format!("profile: {profile}").into());
    }
    let status = json(&env, &["pool", "status", "t"]);
    let home = detail(&status, "Pool Home");
    if !home.contains("LVM thin-pool LV blkdrv-lvmtest/thinpool") {
        return Err(format!("Pool Home: {home}").into());
    }
    base(&env);
    env.ok(&["layer", "snapshot", "base", "c", "--pool", "t"]);
    let m = env.mount_rw("c", "m");
    let before = lv_size(lv);
    // Over half of the ~400 MiB pool: the next command extends it by 20%.
    fill(&m.join("f"), 260 * MIB).map_err(|e| format!("fill: {e}"))?;
    let o = env.ok(&["layer", "umount", "c", "--pool", "t"]);
    let after = lv_size(lv);
    if !o.stderr.contains("grew LVM thin pool") || after <= before {
        return Err(format!("no autoextend: {before} -> {after}; {}", o.stderr).into());
    }
    eprintln!("lvm autoextend: {before} -> {after} bytes");
    env.ok(&["pool", "deactivate", "t"]);
    let active = lvm(&["lvs", "--noheadings", "-o", "lv_active", lv]);
    if active.contains("active") && !active.contains("inactive") && !active.trim().is_empty() {
        return Err(format!("pool LV still active after deactivate: {active}").into());
    }
    env.ok(&["layer", "mount", "c", m.to_str().unwrap(), "--pool", "t"]);
    let len = fs::metadata(m.join("f")).map(|md| md.len()).unwrap_or(0);
    env.ok(&["layer", "umount", "c", "--pool", "t"]);
    if len != 260 * MIB {
        return Err(format!("data after deactivate/activate: {len} bytes").into());
    }
    env.ok(&["pool", "destroy", "t"]);
    let vgs = lvm(&["vgs", "--noheadings", "-o", "vg_name"]);
    let pvs = lvm(&["pvs", "--noheadings", "-o", "pv_name"]);
    if vgs.contains("blkdrv-lvmtest") || pvs.contains(disk.dev()) {
        return Err(format!("destroy left LVM objects: vgs {vgs} pvs {pvs}").into());
    }
    Ok(())
}

/// `--thinpool VG/LV` takes an existing thin pool only while it is empty (no LVM thin LVs, no
/// foreign thin ids), and gives it back empty on destroy.
fn lvm_adopt() -> Result<(), Failed> {
    let disk = LvmDisk::new("blkdrv-adopt", 1 << 30);
    lvm(&["pvcreate", "-y", disk.dev()]);
    lvm(&["vgcreate", "blkdrv-adopt", disk.dev()]);
    for lv in ["tp", "used"] {
        lvm(&[
            "lvcreate",
            "-y",
            "--type",
            "thin-pool",
            "-L",
            "400m",
            "-n",
            lv,
            "blkdrv-adopt",
        ]);
    }
    lvm(&[
        "lvcreate",
        "-y",
        "-V",
        "100m",
        "-T",
        "blkdrv-adopt/used",
        "-n",
        "vol",
    ]);
    let env = Env::with_pool(&["--driver", "devicemapper", "--thinpool", "blkdrv-adopt/tp"]);
    base(&env);
    env.ok(&["layer", "snapshot", "base", "c", "--pool", "t"]);
    let status = json(&env, &["pool", "status", "t"]);
    if !detail(&status, "Pool Home").contains("adopted") {
        return Err(format!("status: {status}").into());
    }
    // Already blkdrv's, and a pool with an LVM thin volume: both refused, both untouched.
    for (lv, needle) in [
        ("blkdrv-adopt/tp", "only an empty thin pool"),
        ("blkdrv-adopt/used", "LVM thin volume"),
        ("blkdrv-adopt/nosuch", "nosuch"),
    ] {
        let o = env.run(&[
            "pool",
            "init",
            "u",
            "--driver",
            "devicemapper",
            "--thinpool",
            lv,
        ]);
        if o.code == 0 || !o.stderr.contains(needle) {
            return Err(format!("init on {lv}: {} {}", o.code, o.stderr).into());
        }
    }
    env.ok(&["layer", "ls", "--pool", "t"]);
    env.ok(&["pool", "destroy", "t"]);
    // `-o thinpool=VG/LV` means what --thinpool means: existing storage, no loopback files
    // (it took the loopback branch and made two unused loop files).
    env.ok(&[
        "pool",
        "init",
        "o",
        "--driver",
        "devicemapper",
        "-o",
        "thinpool=blkdrv-adopt/tp",
    ]);
    let status = json(&env, &["pool", "status", "o"]);
    if status["backing"]["type"] != "existing" || env.root().join("pools/o/backing").exists() {
        return Err(format!("-o thinpool= made a loopback pool: {status}").into());
    }
    env.ok(&["pool", "destroy", "o"]);
    // Given back empty: LVM can make thin volumes in it again (its transaction id matches).
    lvm(&["lvchange", "-ay", "blkdrv-adopt/tp"]);
    lvm(&[
        "lvcreate",
        "-y",
        "-V",
        "100m",
        "-T",
        "blkdrv-adopt/tp",
        "-n",
        "again",
    ]);
    Ok(())
}

/// The bench's devicemapper path (raw create_snap timing, space accounting) on a real pool.
fn bench_smoke() -> Result<(), Failed> {
    kit::cli::bench_smoke("devicemapper", "create_snap", |rows| {
        // Space comes back when a thin device is deleted.
        let returned = rows
            .iter()
            .find(|r| r["phase"] == "space_returned")
            .and_then(|r| r["values"][0].as_f64())
            .ok_or("no space_returned")?;
        if returned < 3.0 * MIB as f64 {
            return Err(
                format!("only {returned} bytes came back after removing a 4 MiB layer").into(),
            );
        }
        Ok(())
    })
}

fn volume_copies() -> Result<(), Failed> {
    let d = direct::Direct::new("devicemapper", blkdrv_drivers::Bytes::gib(1), &[])?;
    direct::volume_copies(&d)?;
    direct::layer_copy_keeps_deletions(&d)?;
    Ok(())
}

/// Size in bytes of the block device mounted at `target` (sysfs counts 512-byte sectors).
fn mounted_size(target: &Path) -> Result<u64, Failed> {
    let dev = mounted_device(target).canonicalize()?;
    let name = dev.file_name().unwrap().to_string_lossy().into_owned();
    let sectors: u64 = fs::read_to_string(format!("/sys/class/block/{name}/size"))?
        .trim()
        .parse()?;
    Ok(sectors * 512)
}

/// A volume with a size is a thin device of that size with its own filesystem: writes past it
/// fail with ENOSPC, its size survives a deactivation (the driver's size record), a copy has
/// the same size, and removal leaves no record behind. Below the filesystem's minimum the
/// volume is refused before anything is made.
fn sized_volume() -> Result<(), Failed> {
    use blkdrv_drivers::{Bytes, LayerChain};
    let mut d = direct::Direct::new("devicemapper", Bytes::gib(1), &[("fs", "ext4")])?;
    let v = LayerChain::volume(direct::id(1));
    d.driver.create_volume(v.id, Some(Bytes::mib(64)))?;
    let m = d.mount_rw(&v)?;
    if mounted_size(&m)? != 64 * MIB {
        return Err(format!("the thin device has {} bytes", mounted_size(&m)?).into());
    }
    let err = match direct::write_synced(&m.join("big"), 100 << 20) {
        Ok(()) => return Err("100 MiB fit in a 64 MiB volume".into()),
        Err(e) => e,
    };
    if err.raw_os_error() != Some(nix::libc::ENOSPC) {
        return Err(format!("writing past the size: {err}, not ENOSPC").into());
    }
    fs::remove_file(m.join("big"))?;
    direct::write_synced(&m.join("kept"), 8 << 20)?;
    d.unmount(&m)?;
    d.reopen()?;
    let m = d.mount_rw(&v)?;
    let after = mounted_size(&m)?;
    let kept = fs::metadata(m.join("kept"))?.len();
    d.unmount(&m)?;
    if (after, kept) != (64 * MIB, 8 * MIB) {
        return Err(format!("after reopening: device {after} bytes, file {kept}").into());
    }
    d.driver.clone_active(&v, direct::id(2))?;
    let mc = d.mount_rw(&LayerChain::volume(direct::id(2)))?;
    let copy = mounted_size(&mc)?;
    d.unmount(&mc)?;
    if copy != 64 * MIB {
        return Err(format!("the copy of a 64 MiB volume has {copy} bytes").into());
    }
    d.driver.remove(v.id)?;
    d.driver.remove(direct::id(2))?;
    let records: Vec<_> = fs::read_dir(d.dir.join("driver/thin-sizes"))?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    if !records.is_empty() || !d.list()?.is_empty() {
        return Err(format!("left: records {records:?}, objects {:?}", d.list()).into());
    }
    // xfs (the default) cannot be made that small: refused, nothing made.
    drop(d);
    let d = direct::Direct::new("devicemapper", Bytes::gib(1), &[])?;
    match d.driver.create_volume(direct::id(1), Some(Bytes::mib(64))) {
        Err(e) if e.to_string().contains("smallest xfs") => {}
        other => return Err(format!("a 64 MiB xfs volume: {other:?}").into()),
    }
    if !d.list()?.is_empty() {
        return Err("the refused volume was made".into());
    }
    Ok(())
}
