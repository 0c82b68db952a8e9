//! zfs-specific behaviour on real OpenZFS. This kernel has no ZFS: here every case is reported
//! as ignored with the command that runs it; `tests/vm/run zfs` runs them in a VM with the
//! OpenZFS modules and tools (the harness adds them when a suite or FILTER mentions zfs).

#[path = "direct.rs"]
mod direct;

use kit::cli::{base_of, detail, json, layer, tool, write_file, Env, MIB};
use kit::trial::{Case, VmTarget};
use libtest_mimic::Failed;
use std::collections::BTreeSet;
use std::fs;
use std::io::{BufRead, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CASES: &[(&str, Case)] = &[
    ("clone_counts_only_the_records_it_writes", clone_accounting),
    ("size_limit_is_a_refquota", size_limit),
    (
        "read_only_view_of_a_layer_mounted_read_write",
        ro_view_of_rw_layer,
    ),
    ("parent_with_clones_is_never_destroyed", parent_with_clones),
    (
        "busy_in_another_mount_namespace_defers_removal",
        busy_elsewhere,
    ),
    ("kill_9_during_clone_creation_leaves_no_orphan", kill_9),
    ("tool_outliving_a_killed_blkdrv_leaves_no_orphan", late_tool),
    (
        "deactivate_exports_and_open_imports_by_guid",
        deactivate_activate,
    ),
    ("existing_zpool_and_dataset", existing_zpool_and_dataset),
    ("bad_input_is_refused", bad_input),
    ("pool_on_a_device", device_pool),
    ("bench_smoke_times_raw_clones", bench_smoke),
    ("volume_copies_and_removal_in_any_order", volume_copies),
    ("volume_limit_is_a_refquota", volume_limit),
    (
        "volume_copy_committed_after_its_source_is_removed",
        copy_commit_after_source_removed,
    ),
    (
        "volume_copy_leftovers_of_a_crash_are_replaced",
        copy_crash_leftovers,
    ),
];

/// Child modes besides the kit's CLI child: this binary re-executed to hold a layer busy from a
/// mount namespace of its own.
const ENV_HOLD: &str = "BLKDRV_ZFS_TEST_HOLD";
/// A stand-in `zfs` that starts late: sleeps, then becomes the real tool named here.
const ENV_LATE: &str = "BLKDRV_ZFS_TEST_LATE_TOOL";

fn main() {
    kit::child::maybe_run_child();
    if let Ok(file) = std::env::var(ENV_HOLD) {
        hold(Path::new(&file));
    }
    if let Ok(real) = std::env::var(ENV_LATE) {
        use std::os::unix::process::CommandExt;
        std::thread::sleep(Duration::from_secs(3));
        let err = Command::new(real)
            .args(std::env::args_os().skip(1))
            .env_remove(ENV_LATE)
            .exec();
        panic!("exec the real tool: {err}");
    }
    VmTarget {
        target: "zfs",
        available: has_zfs,
        lacking: "ZFS (the kernel module, zfs and zpool), which this host lacks",
        note: "",
        missing: Some("no /dev/zfs: this VM was booted without OpenZFS (tests/vm/run adds it for a suite group marked zfs; VM_ZFS=1 forces it)"),
    }
    .run(CASES)
}

fn has_zfs() -> bool {
    Path::new("/dev/zfs").exists()
}

/// Holder child: a private copy of the mount table (so the parent's unmount does not reach
/// it), a file open in the layer, "ready" on stdout, then wait until stdin closes.
fn hold(file: &Path) -> ! {
    // SAFETY: unshare(2) with a plain flag; this process is single-threaded here.
    if unsafe { nix::libc::unshare(nix::libc::CLONE_NEWNS) } != 0 {
        panic!("unshare(CLONE_NEWNS): {}", std::io::Error::last_os_error());
    }
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .expect("make the copied mounts private");
    let _f = fs::File::open(file).expect("open the file in the layer");
    let mut out = std::io::stdout();
    writeln!(out, "ready").and_then(|_| out.flush()).unwrap();
    let mut buf = [0u8; 1];
    let _ = std::io::stdin().read(&mut buf);
    std::process::exit(0)
}

fn zfs_env(extra: &[&str]) -> Env {
    let mut args = vec!["--driver", "zfs", "--size", "1G"];
    args.extend_from_slice(extra);
    Env::with_pool(&args)
}

fn status(env: &Env, pool: &str) -> serde_json::Value {
    json(env, &["pool", "status", pool])
}

fn identity(env: &Env, pool: &str, key: &str) -> String {
    status(env, pool)["identity"][key]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The parent dataset of pool "t" (its zpool's root for a loopback pool).
fn parent_ds(env: &Env) -> String {
    identity(env, "t", "dataset")
}

fn layer_ds(env: &Env, name: &str) -> String {
    format!("{}/{}", parent_ds(env), layer(env, name)["id"])
}

fn tool_try(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn zprop(object: &str, prop: &str) -> String {
    tool("zfs", &["get", "-Hp", "-o", "value", prop, object])
        .trim()
        .to_string()
}

/// Names of the filesystems directly below `ds`.
fn children(ds: &str) -> BTreeSet<String> {
    tool(
        "zfs",
        &[
            "list",
            "-H",
            "-o",
            "name",
            "-t",
            "filesystem",
            "-d",
            "1",
            ds,
        ],
    )
    .lines()
    .filter(|l| *l != ds)
    .map(|l| l.rsplit('/').next().unwrap_or_default().to_string())
    .collect()
}

fn zpools() -> BTreeSet<String> {
    tool("zpool", &["list", "-H", "-o", "name"])
        .lines()
        .map(str::to_string)
        .collect()
}

/// Ids the store knows, as dataset leaf names.
fn recorded_ids(env: &Env) -> BTreeSet<String> {
    json(env, &["layer", "ls", "--pool", "t"])
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].to_string())
        .collect()
}

/// Runs `f` with `name` mounted read-write at a fresh directory.
fn with_rw<T>(env: &Env, name: &str, f: impl FnOnce(&Path) -> T) -> T {
    let m = env.path(&format!("m-{name}"));
    env.ok(&["layer", "mount", name, m.to_str().unwrap(), "--pool", "t"]);
    let out = f(&m);
    env.ok(&["layer", "umount", name, "--pool", "t"]);
    out
}

/// The CLI in a child process (this binary in CLI mode), for crashes and kills.
fn cli_child(env: &Env, args: &[&str]) -> Command {
    let mut full: Vec<String> = vec![
        "blkdrv".into(),
        "--root".into(),
        env.root().display().to_string(),
        "--config".into(),
        "/nonexistent".into(),
    ];
    full.extend(args.iter().map(|s| s.to_string()));
    let mut c = kit::child::command(&full);
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn in_range(v: u64, lo: u64, hi: u64) -> bool {
    (lo..hi).contains(&v)
}

/// A clone of a 100 MiB layer that writes 5 MiB uses about 5 MiB: ZFS charges shared records
/// to the origin's snapshot. The pool sits on a file vdev, and status shows the zpool.
fn clone_accounting() -> Result<(), Failed> {
    let env = zfs_env(&[]);
    base_of(&env, 100 * MIB);
    env.ok(&["layer", "snapshot", "base", "c", "--pool", "t"]);
    with_rw(&env, "c", |m| write_file(&m.join("five"), 5 * MIB))?;
    let c = layer(&env, "c");
    let (used, rfer) = (
        c["size_bytes"].as_u64().unwrap_or(0),
        c["referenced_bytes"].as_u64().unwrap_or(0),
    );
    if !in_range(used, 5 * MIB, 6 * MIB) || !in_range(rfer, 105 * MIB, 108 * MIB) {
        return Err(
            format!("5 MiB into a clone of 100 MiB: used {used}, referenced {rfer}").into(),
        );
    }
    let origin = zprop(&layer_ds(&env, "c"), "origin");
    if origin != format!("{}@committed", layer_ds(&env, "base")) {
        return Err(format!("c is not a clone of base@committed: origin {origin}").into());
    }
    env.ok(&["layer", "commit", "c", "--pool", "t"]);
    let ls = json(&env, &["layer", "ls", "--pool", "t"]);
    let size = |n: &str| {
        ls.as_array()
            .unwrap()
            .iter()
            .find(|l| l["name"] == n)
            .and_then(|l| l["size_bytes"].as_u64())
            .unwrap_or(0)
    };
    if !in_range(size("c"), 5 * MIB, 6 * MIB) || !in_range(size("base"), 100 * MIB, 103 * MIB) {
        return Err(format!("recorded sizes: c {} base {}", size("c"), size("base")).into());
    }
    if zprop(&layer_ds(&env, "c"), "readonly") != "on" {
        return Err("a committed layer is not readonly=on".into());
    }
    let st = status(&env, "t");
    let g = &st["capabilities"]["granularity"];
    if g["unit"] != "block" || g["size"] != 131072 {
        return Err(format!("granularity {g}").into());
    }
    let zpool = st["identity"]["zpool"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let vdevs = tool("zpool", &["status", "-P", &zpool]);
    if !vdevs.contains("backing/data.img") {
        return Err(format!("not a file vdev: {vdevs}").into());
    }
    if detail(&st, "Health") != "ONLINE" || !detail(&st, "Vdev").contains("(file,") {
        return Err(format!("status details: {}", st["space"]["details"]).into());
    }
    let text = env.ok(&["pool", "status", "t"]).stdout;
    for line in [
        "Zpool Size",
        "Capacity",
        "Fragmentation",
        "Compression",
        "Record Size",
    ] {
        if !text.contains(line) {
            return Err(format!("{line} missing from pool status:\n{text}").into());
        }
    }
    Ok(())
}

/// `--size` is the layer's refquota: writing past it fails; a limit under what the clone
/// already references is refused with nothing left behind; a limit that is not a size is a
/// usage error.
fn size_limit() -> Result<(), Failed> {
    let env = zfs_env(&[]);
    base_of(&env, MIB);
    env.ok(&[
        "layer", "snapshot", "base", "small", "--size", "10M", "--pool", "t",
    ]);
    if layer(&env, "small")["limit_bytes"] != 10 * MIB {
        return Err("limit not recorded".into());
    }
    let q = zprop(&layer_ds(&env, "small"), "refquota");
    if q != (10 * MIB).to_string() {
        return Err(format!("refquota {q}").into());
    }
    let r = with_rw(&env, "small", |m| write_file(&m.join("big"), 20 * MIB));
    match r {
        Ok(()) => return Err("writing 20 MiB into a 10 MiB layer succeeded".into()),
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(nix::libc::EDQUOT) | Some(nix::libc::ENOSPC)
            ) => {}
        Err(e) => return Err(format!("write past the limit: {e}, not EDQUOT/ENOSPC").into()),
    }
    let o = env.run(&[
        "layer", "snapshot", "base", "tiny", "--size", "512K", "--pool", "t",
    ]);
    if o.code == 0 || !o.stderr.contains("references") {
        return Err(format!("limit under the parent's data: {} {}", o.code, o.stderr).into());
    }
    if env.run(&["layer", "inspect", "tiny", "--pool", "t"]).code == 0 {
        return Err("the refused layer exists".into());
    }
    env.ok(&["pool", "check", "t"]);
    let o = env.run(&[
        "layer", "snapshot", "base", "x", "--size", "lots", "--pool", "t",
    ]);
    if o.code != 2 {
        return Err(format!("a limit that is not a size: {} {}", o.code, o.stderr).into());
    }
    Ok(())
}

/// ZFS has one superblock per dataset, read-only or read-write. A read-only view of an active
/// layer that is mounted read-write is a read-only bind of that mount; the other way round is
/// refused with the reason.
fn ro_view_of_rw_layer() -> Result<(), Failed> {
    let env = zfs_env(&[]);
    base_of(&env, MIB);
    env.ok(&["layer", "snapshot", "base", "c", "--pool", "t"]);
    let (rw, ro) = (env.path("rw"), env.path("ro"));
    env.ok(&["layer", "mount", "c", rw.to_str().unwrap(), "--pool", "t"]);
    let r = (|| -> Result<(), Failed> {
        env.ok(&[
            "layer",
            "mount",
            "c",
            ro.to_str().unwrap(),
            "--ro",
            "--pool",
            "t",
        ]);
        fs::write(rw.join("live"), "seen")?;
        let seen = fs::read_to_string(ro.join("live")).unwrap_or_default();
        let w = fs::write(ro.join("x"), "x");
        if seen != "seen" || w.map_err(|e| e.raw_os_error()) != Err(Some(nix::libc::EROFS)) {
            return Err(format!("read-only view: {seen:?}").into());
        }
        Ok(())
    })();
    env.ok(&["layer", "umount", "c", "--pool", "t"]);
    r?;
    env.ok(&[
        "layer",
        "mount",
        "c",
        ro.to_str().unwrap(),
        "--ro",
        "--pool",
        "t",
    ]);
    let o = env.run(&["layer", "mount", "c", rw.to_str().unwrap(), "--pool", "t"]);
    env.ok(&["layer", "umount", "c", "--pool", "t"]);
    if o.code == 0 || !o.stderr.contains("read-only or read-write") {
        return Err(format!(
            "read-write mount over a read-only one: {} {}",
            o.code, o.stderr
        )
        .into());
    }
    Ok(())
}

/// Clones made behind blkdrv's back: the driver refuses to destroy their origin (the pool has
/// no record of children, so only the driver stands in the way), `pool check` reports the one
/// named like a layer as an orphan and skips the other, --repair removes it; blkdrv's own
/// leftover bench clone does not block a removal.
fn parent_with_clones() -> Result<(), Failed> {
    let env = zfs_env(&[]);
    base_of(&env, MIB);
    let parent = parent_ds(&env);
    let snap = format!("{}@committed", layer_ds(&env, "base"));
    for leaf in ["777", "not-a-layer"] {
        tool(
            "zfs",
            &[
                "clone",
                "-o",
                "mountpoint=legacy",
                &snap,
                &format!("{parent}/{leaf}"),
            ],
        );
    }
    let o = env.run(&["pool", "check", "t"]);
    if o.code == 0 || !o.stdout.contains("orphan: object 777") || o.stdout.contains("not-a-layer") {
        return Err(format!("check: {} {}{}", o.code, o.stdout, o.stderr).into());
    }
    let o = env.run(&["layer", "rm", "base", "--pool", "t"]);
    if o.code == 0 || !o.stderr.contains("dependent clones") || !o.stderr.contains("777") {
        return Err(format!("rm of a parent with clones: {} {}", o.code, o.stderr).into());
    }
    if layer(&env, "base")["state"] != "committed" || tool_try("zfs", &["list", &snap]).is_err() {
        return Err("the refused removal changed the layer".into());
    }
    env.ok(&["pool", "check", "t", "--repair"]);
    if children(&parent).contains("777") {
        return Err("--repair left the orphan".into());
    }
    env.ok(&["pool", "check", "t"]);
    let o = env.run(&["layer", "rm", "base", "--pool", "t"]);
    if o.code == 0 || !o.stderr.contains("not-a-layer") {
        return Err(format!("a foreign clone must protect its origin: {}", o.stderr).into());
    }
    tool("zfs", &["destroy", &format!("{parent}/not-a-layer")]);
    // An interrupted raw_snapshot leaves this one: blkdrv clears it itself.
    tool(
        "zfs",
        &[
            "clone",
            "-o",
            "mountpoint=legacy",
            &snap,
            &format!("{parent}/bench-raw"),
        ],
    );
    env.ok(&["layer", "rm", "base", "--pool", "t"]);
    let left = children(&parent);
    if !left.is_empty() {
        return Err(format!("left after removing base: {left:?}").into());
    }
    Ok(())
}

/// A layer still mounted in another mount namespace (a leaked container namespace) cannot be
/// destroyed: the removal is deferred, and finished by a later command once it is free.
fn busy_elsewhere() -> Result<(), Failed> {
    let env = zfs_env(&[]);
    base_of(&env, MIB);
    env.ok(&["layer", "snapshot", "base", "held", "--pool", "t"]);
    let m = env.mount_rw("held", "m");
    fs::write(m.join("open-me"), "x")?;
    let mut holder = Command::new(std::env::current_exe()?)
        .env(ENV_HOLD, m.join("open-me"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line)?;
    let result = (|| -> Result<(), Failed> {
        if line.trim() != "ready" {
            return Err(format!("holder: {line:?}").into());
        }
        env.ok(&["layer", "umount", "held", "--pool", "t"]);
        let o = env.ok(&["layer", "rm", "held", "--pool", "t"]);
        let state = layer(&env, "held")["state"].clone();
        if !o.stdout.contains("deferred") || state != "removing" {
            return Err(format!("expected a deferred removal: {:?} / {state}", o.stdout).into());
        }
        Ok(())
    })();
    drop(holder.stdin.take());
    let _ = holder.wait();
    result?;
    // The namespace's mounts go away as its last process exits, possibly a moment later.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let o = env.ok(&["pool", "check", "t"]);
        if o.stdout.contains("finished interrupted remove") {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("removal not finished: {}", o.stdout).into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if env.run(&["layer", "inspect", "held", "--pool", "t"]).code == 0 {
        return Err("layer still there after the retry".into());
    }
    if children(&parent_ds(&env)).len() != 1 {
        return Err(format!("datasets: {:?}", children(&parent_ds(&env))).into());
    }
    Ok(())
}

/// A pool with layer `base` where `layer snapshot base victim` died at crash point `at`; and
/// the pool's parent dataset.
fn crashed_snapshot(at: &str) -> Result<(Env, String), Failed> {
    let env = zfs_env(&[]);
    base_of(&env, MIB);
    let parent = parent_ds(&env);
    let out = cli_child(
        &env,
        &["layer", "snapshot", "base", "victim", "--pool", "t"],
    )
    .env("BLKDRV_CRASH_AT", at)
    .output()?;
    if out.status.success() {
        return Err(format!("the child did not crash at {at}").into());
    }
    Ok((env, parent))
}

/// kill -9 right after the clone exists (the crash point) and at random moments of a snapshot:
/// after `pool check --repair` the datasets are exactly the layers the store knows.
fn kill_9() -> Result<(), Failed> {
    let (env, parent) = crashed_snapshot("snapshot:object")?;
    if children(&parent).len() != 2 {
        return Err(format!("no clone before recovery: {:?}", children(&parent)).into());
    }
    let o = env.ok(&["pool", "check", "t"]);
    if !o.stdout.contains("rolled back interrupted create") || !o.stdout.contains("consistent") {
        return Err(format!("check after crash: {}{}", o.stdout, o.stderr).into());
    }
    if env.run(&["layer", "inspect", "victim", "--pool", "t"]).code == 0 {
        return Err("the half-made layer is visible".into());
    }
    if children(&parent) != recorded_ids(&env) {
        return Err(format!(
            "datasets {:?} vs store {:?}",
            children(&parent),
            recorded_ids(&env)
        )
        .into());
    }
    // Spread the kills over what one snapshot takes here (TCG is slow), and one after.
    let t = Instant::now();
    let out = cli_child(&env, &["layer", "snapshot", "base", "timed", "--pool", "t"]).output()?;
    let took = t.elapsed();
    if !out.status.success() {
        return Err(format!("snapshot: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    env.ok(&["layer", "rm", "timed", "--pool", "t"]);
    let mut outcomes = Vec::new();
    for (i, f) in [0.0, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.5]
        .into_iter()
        .enumerate()
    {
        let delay = took.mul_f64(f);
        let name = format!("k{i}");
        let mut child =
            cli_child(&env, &["layer", "snapshot", "base", &name, "--pool", "t"]).spawn()?;
        std::thread::sleep(delay);
        let _ = child.kill();
        let status = child.wait()?;
        // Killed, or done before the kill landed; never failed on its own.
        let killed = status.signal() == Some(nix::libc::SIGKILL);
        if !killed && !status.success() {
            return Err(format!("the snapshot failed on its own: {status:?}").into());
        }
        env.run(&["pool", "check", "t", "--repair"]);
        env.ok(&["pool", "check", "t"]);
        let (disk, store) = (children(&parent), recorded_ids(&env));
        let complete = store.len() > 1;
        let outcome = if complete { "complete" } else { "rolled back" };
        outcomes.push(format!(
            "{} ms: {outcome} ({})",
            delay.as_millis(),
            if killed { "killed" } else { "exited" }
        ));
        if !killed && !complete {
            return Err(format!(
                "at {} ms: the snapshot exited 0 but is gone",
                delay.as_millis()
            )
            .into());
        }
        if i == 0 && complete {
            return Err("a SIGKILL right after spawn left a complete snapshot".into());
        }
        if disk != store {
            return Err(format!(
                "after a kill at {} ms: datasets {disk:?}, store {store:?}",
                delay.as_millis()
            )
            .into());
        }
        if store.len() > 1 {
            env.ok(&["layer", "rm", &name, "--pool", "t"]);
        }
    }
    eprintln!(
        "zfs: a snapshot takes {} ms; SIGKILL at {}",
        took.as_millis(),
        outcomes.join(", ")
    );
    Ok(())
}

/// A blkdrv killed while its `zfs clone` runs leaves the tool running; its ioctl may land after
/// the next blkdrv rolled the create back. The driver waits for such a tool before it decides
/// the dataset is gone: here a stand-in `zfs` starts its clone 3 s late, while `pool check`
/// rolls the interrupted create back.
fn late_tool() -> Result<(), Failed> {
    let (env, parent) = crashed_snapshot("snapshot:intent")?;
    let ls = json(&env, &["layer", "ls", "--pool", "t"]);
    let id = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["state"] == "creating")
        .map(|l| l["id"].to_string())
        .ok_or_else(|| format!("no creating layer: {ls}"))?;
    let real = blkdrv_drivers::sys::exec::which("zfs").ok_or("no zfs tool")?;
    let dir = tempfile::tempdir_in("/tmp")?;
    let fake = dir.path().join("zfs");
    fs::copy(std::env::current_exe()?, &fake)?;
    let snap = format!("{}@committed", layer_ds(&env, "base"));
    let mut tool = Command::new(&fake)
        .args([
            "clone",
            "-o",
            "mountpoint=legacy",
            &snap,
            &format!("{parent}/{id}"),
        ])
        .env(ENV_LATE, &real)
        .spawn()?;
    let o = env.ok(&["pool", "check", "t"]);
    let status = tool.wait()?;
    if !status.success() || !o.stdout.contains("rolled back interrupted create") {
        return Err(format!("late clone {status}; check: {}", o.stdout).into());
    }
    if children(&parent) != recorded_ids(&env) {
        return Err(format!(
            "orphan left: datasets {:?}, store {:?}",
            children(&parent),
            recorded_ids(&env)
        )
        .into());
    }
    env.ok(&["pool", "check", "t"]);
    Ok(())
}

/// `pool deactivate` exports blkdrv's zpool; the next command imports it from its file, data
/// intact. A different pool imported under the recorded name is refused by its GUID.
fn deactivate_activate() -> Result<(), Failed> {
    let env = zfs_env(&[]);
    base_of(&env, MIB);
    env.ok(&["layer", "snapshot", "base", "c", "--pool", "t"]);
    with_rw(&env, "c", |m| fs::write(m.join("kept"), "still here"))?;
    env.ok(&["layer", "commit", "c", "--pool", "t"]);
    let zpool = identity(&env, "t", "zpool");
    env.ok(&["pool", "deactivate", "t"]);
    if zpools().contains(&zpool) {
        return Err(format!("{zpool} still imported after deactivate").into());
    }
    let m = env.mount_rw("c", "m2");
    let kept = fs::read_to_string(m.join("kept")).unwrap_or_default();
    env.ok(&["layer", "umount", "c", "--pool", "t"]);
    if kept != "still here" || !zpools().contains(&zpool) {
        return Err(format!("after reimport: {kept:?}, pools {:?}", zpools()).into());
    }
    env.ok(&["pool", "deactivate", "t"]);
    let img = env.path("impostor.img");
    fs::File::create(&img)?.set_len(256 * MIB)?;
    tool(
        "zpool",
        &[
            "create",
            "-o",
            "cachefile=none",
            "-O",
            "mountpoint=none",
            &zpool,
            img.to_str().unwrap(),
        ],
    );
    let o = env.run(&["layer", "ls", "--pool", "t"]);
    tool("zpool", &["destroy", &zpool]);
    if o.code == 0 || !o.stderr.contains("GUID") {
        return Err(format!("another pool under the name was accepted: {}", o.stderr).into());
    }
    env.ok(&["layer", "ls", "--pool", "t"]);
    Ok(())
}

/// `--zpool NAME` alone makes `NAME/blkdrv-<pool>` and destroys only it; `--dataset` takes an
/// empty dataset, a non-empty one only with adopt=on, never one with layer-like children, and
/// gives it back without blkdrv's layers.
fn existing_zpool_and_dataset() -> Result<(), Failed> {
    let env = zfs_env(&[]);
    base_of(&env, MIB);
    let z = identity(&env, "t", "zpool");
    let src = env.path("src");
    let layers_in = |pool: &str| {
        env.ok(&[
            "layer",
            "create",
            "b",
            "--from-dir",
            src.to_str().unwrap(),
            "--pool",
            pool,
        ]);
        env.ok(&["layer", "snapshot", "b", "c", "--pool", pool]);
    };

    env.ok(&["pool", "init", "u", "--driver", "zfs", "--zpool", &z]);
    let ds = identity(&env, "u", "dataset");
    if ds != format!("{z}/blkdrv-u") || identity(&env, "u", "created") != "dataset" {
        return Err(format!("pool u: dataset {ds}").into());
    }
    layers_in("u");
    if children(&ds).len() != 2 {
        return Err(format!("layers of u: {:?}", children(&ds)).into());
    }
    env.ok(&["pool", "destroy", "u"]);
    if tool_try("zfs", &["list", &ds]).is_ok() {
        return Err(format!("{ds} left after pool destroy").into());
    }
    env.ok(&["layer", "ls", "--pool", "t"]);

    let shared = format!("{z}/shared");
    tool("zfs", &["create", "-o", "mountpoint=none", &shared]);
    tool(
        "zfs",
        &["create", "-o", "mountpoint=none", &format!("{shared}/app")],
    );
    let o = env.run(&["pool", "init", "v", "--driver", "zfs", "--dataset", &shared]);
    if o.code == 0 || !o.stderr.contains("not empty") || !o.stderr.contains("adopt=on") {
        return Err(format!("non-empty dataset: {} {}", o.code, o.stderr).into());
    }
    env.ok(&[
        "pool",
        "init",
        "v",
        "--driver",
        "zfs",
        "--dataset",
        &shared,
        "-o",
        "adopt=on",
    ]);
    layers_in("v");
    env.ok(&["pool", "destroy", "v"]);
    let left = children(&shared);
    if left != BTreeSet::from(["app".to_string()]) {
        return Err(format!("adopted dataset given back with {left:?}").into());
    }
    tool(
        "zfs",
        &["create", "-o", "mountpoint=none", &format!("{shared}/5")],
    );
    let o = env.run(&[
        "pool",
        "init",
        "w",
        "--driver",
        "zfs",
        "--dataset",
        &shared,
        "-o",
        "adopt=on",
    ]);
    if o.code == 0 || !o.stderr.contains("named like blkdrv's layers") {
        return Err(format!("layer-like child: {} {}", o.code, o.stderr).into());
    }
    Ok(())
}

fn bad_input() -> Result<(), Failed> {
    let env = zfs_env(&[]);
    base_of(&env, MIB);
    let z = identity(&env, "t", "zpool");
    let before = zpools();
    let missing = format!("{z}/none");
    for (args, needle) in [
        (vec!["--size", "1G", "--zpool", &z], "already imported"),
        (vec!["--zpool", "nosuchpool"], "no imported zpool"),
        (
            vec!["--size", "1G", "--zpool", "1bad"],
            "start with a letter",
        ),
        (
            vec!["--size", "1G", "--compression", "fast"],
            "expected off",
        ),
        (
            vec!["--size", "1G", "-o", "adopt=on"],
            "goes with --dataset",
        ),
        (vec!["--size", "100M"], "too small"),
        (vec!["--dataset", &missing], "no such dataset"),
        (vec!["--dataset", "nosuchpool/x"], "no such dataset"),
        (vec!["--dataset", &z], "not empty"),
        (
            vec!["--dataset", &z, "-o", "adopt=on"],
            "named like blkdrv's layers",
        ),
        (vec!["--dataset", &z, "--size", "1G"], "--size"),
    ] {
        let mut a = vec!["pool", "init", "bad", "--driver", "zfs"];
        a.extend(args.iter());
        let o = env.run(&a);
        if o.code == 0 || !o.stderr.contains(needle) {
            return Err(format!("{args:?}: {} {}", o.code, o.stderr).into());
        }
        if env.root().join("pools/bad").exists() {
            return Err(format!("{args:?} left a pool directory").into());
        }
        if zpools() != before {
            return Err(format!("{args:?} changed the zpools: {:?}", zpools()).into());
        }
    }
    // A layer quota that is not a size: a usage error before anything is made.
    let o = env.run(&[
        "layer", "snapshot", "base", "q", "--size", "lots", "--pool", "t",
    ]);
    if o.code != 2 || env.run(&["layer", "inspect", "q", "--pool", "t"]).code == 0 {
        return Err(format!("--size lots: {} {}", o.code, o.stderr).into());
    }
    // A mounted layer is not removed (without --force), and its dataset stays.
    env.ok(&["layer", "snapshot", "base", "busy", "--pool", "t"]);
    let ds = layer_ds(&env, "busy");
    let m = env.mount_rw("busy", "m");
    fs::write(m.join("kept"), "x")?;
    let o = env.run(&["layer", "rm", "busy", "--pool", "t"]);
    let kept = fs::read_to_string(m.join("kept")).unwrap_or_default();
    env.ok(&["layer", "umount", "busy", "--pool", "t"]);
    if o.code == 0 || !o.stderr.contains("mounted") || kept != "x" {
        return Err(format!("rm of a mounted layer: {} {}", o.code, o.stderr).into());
    }
    if zprop(&ds, "type") != "filesystem" {
        return Err(format!("the mounted layer's dataset {ds} went away").into());
    }
    env.ok(&["pool", "check", "t"]);
    Ok(())
}

/// A pool on a block device (a loop device set up by the test, so no udev is needed: libefi
/// does not partition loop devices), exported and imported again from the device.
fn device_pool() -> Result<(), Failed> {
    let dir = tempfile::tempdir_in("/tmp")?;
    let file = dir.path().join("disk.img");
    blkdrv_drivers::sys::loopdev::create_sparse_file(&file, blkdrv_drivers::Bytes(768 * MIB))
        .map_err(|e| e.to_string())?;
    let lo = blkdrv_drivers::sys::loopdev::attach(&file).map_err(|e| e.to_string())?;
    let dev = lo.path.to_str().unwrap().to_string();
    let env = Env::with_pool(&["--driver", "zfs", "--device", &dev, "--compression", "lz4"]);
    base_of(&env, MIB);
    let st = status(&env, "t");
    if !detail(&st, "Vdev").contains("(device)") || !detail(&st, "Compression").starts_with("lz4") {
        return Err(format!("details: {}", st["space"]["details"]).into());
    }
    if zprop(&layer_ds(&env, "base"), "compression") != "lz4" {
        return Err("layers do not get the pool's compression".into());
    }
    // The device is in use by this pool's zpool: refused for its label, and with --force by
    // zpool itself; no zpool appears.
    let before = zpools();
    for extra in [&[][..], &["--force"][..]] {
        let mut a = vec!["pool", "init", "u", "--driver", "zfs", "--device", &dev];
        a.extend(extra);
        let o = env.run(&a);
        if o.code == 0 || zpools() != before || env.root().join("pools/u").exists() {
            return Err(
                format!("init on a device in use {extra:?}: {} {}", o.code, o.stderr).into(),
            );
        }
    }
    env.ok(&["pool", "deactivate", "t"]);
    env.ok(&["layer", "snapshot", "base", "c", "--pool", "t"]);
    drop(env);
    // Whole disks need udev (or the VM's stand-in for it); without either, a quick refusal.
    let udev = Path::new("/run/udev/control").exists() || Path::new("/run/udev/data").is_dir();
    let disk = std::env::var("BLKDRV_VM_DISKS").unwrap_or_default();
    if let (false, Some(d)) = (udev, disk.split_whitespace().next()) {
        let root = dir.path().join("root");
        let t = Instant::now();
        let o = kit::cli::run_cli(
            [
                "blkdrv",
                "--root",
                root.to_str().unwrap(),
                "--config",
                "/nonexistent",
                "pool",
                "init",
                "w",
                "--driver",
                "zfs",
                "--device",
                d,
                "--force",
            ]
            .map(std::ffi::OsString::from)
            .to_vec(),
        );
        if o.code == 0 || !o.stderr.contains("udev") || t.elapsed() > Duration::from_secs(10) {
            return Err(format!("whole disk without udev: {} {}", o.code, o.stderr).into());
        }
    }
    drop(lo);
    Ok(())
}

/// The bench's zfs path: every workload runs, and the raw `zfs clone` is timed.
fn bench_smoke() -> Result<(), Failed> {
    kit::cli::bench_smoke("zfs", "zfs clone", |_| Ok(()))
}

/// Every dataset and snapshot of the direct pools' zpools (`blkdrv-direct-*`), but their root
/// datasets: what a case leaves behind.
fn direct_leftovers() -> Vec<String> {
    tool("zfs", &["list", "-H", "-o", "name", "-t", "all"])
        .lines()
        .filter(|l| l.starts_with("blkdrv-direct-") && l.contains(['/', '@']))
        .map(str::to_string)
        .collect()
}

fn direct_zfs() -> Result<direct::Direct, Failed> {
    Ok(direct::Direct::new(
        "zfs",
        blkdrv_drivers::Bytes::gib(1),
        &[],
    )?)
}

/// A copy is a clone of a snapshot of its source: removing the source first promotes the copy,
/// and both orders leave no dataset and no snapshot.
fn volume_copies() -> Result<(), Failed> {
    let d = direct_zfs()?;
    direct::volume_copies(&d)?;
    let left = direct_leftovers();
    if !left.is_empty() {
        return Err(format!("left after the volume cases: {left:?}").into());
    }
    direct::layer_copy_keeps_deletions(&d)?;
    let left = direct_leftovers();
    if !left.is_empty() {
        return Err(format!("left after the layer case: {left:?}").into());
    }
    Ok(())
}

fn volume_limit() -> Result<(), Failed> {
    use blkdrv_drivers::{Bytes, LayerChain};
    let d = direct_zfs()?;
    let v = LayerChain::volume(direct::id(1));
    d.driver.create_volume(v.id, Some(Bytes::mib(32)))?;
    let m = d.mount_rw(&v)?;
    let r = direct::write_synced(&m.join("big"), 64 << 20);
    d.unmount(&m)?;
    match r {
        Err(e) if e.raw_os_error() == Some(nix::libc::EDQUOT) => {}
        other => return Err(format!("64 MiB into a 32 MiB volume: {other:?}").into()),
    }
    d.driver.remove(v.id)?;
    Ok(())
}

/// `container commit`: a copy of a container's writable layer, committed, with layers built on
/// it; the container removed before the commit (its copy promoted) or after. The committed copy
/// holds the container's data, not a snapshot the promote carried over.
fn copy_commit_after_source_removed() -> Result<(), Failed> {
    use blkdrv_drivers::LayerChain;
    let d = direct_zfs()?;
    let layer = |n: u32, active: bool, ancestors: &[u32]| LayerChain {
        id: direct::id(n),
        active,
        ancestors: ancestors.iter().map(|a| direct::id(*a)).collect(),
    };
    let image = layer(1, true, &[]);
    d.driver.create(&image)?;
    d.driver.commit(&layer(1, false, &[]))?;
    for remove_first in [true, false] {
        let (rw, copy, child) = (
            layer(2, true, &[1]),
            layer(3, true, &[1]),
            layer(4, true, &[3, 1]),
        );
        d.driver.create(&rw)?;
        let m = d.mount_rw(&rw)?;
        fs::write(m.join("work"), b"done")?;
        d.driver.clone_active(&rw, copy.id)?;
        d.unmount(&m)?;
        if remove_first {
            d.driver.remove(rw.id)?;
        }
        d.driver.commit(&layer(3, false, &[1]))?;
        d.driver.create(&child)?;
        if !remove_first {
            d.driver.remove(rw.id)?;
        }
        let mc = d.mount_rw(&child)?;
        let got = fs::read(mc.join("work"));
        d.unmount(&mc)?;
        if got.as_deref().ok() != Some(b"done".as_slice()) {
            return Err(format!("remove first {remove_first}: the child reads {got:?}").into());
        }
        // The committed copy has children: refused, as any parent; then in order.
        if d.driver.remove(copy.id).is_ok() {
            return Err("a committed copy with a child was removed".into());
        }
        d.driver.remove(child.id)?;
        d.driver.remove(copy.id)?;
        if d.list()? != [image.id] {
            return Err(format!("remove first {remove_first}: left {:?}", d.list()).into());
        }
    }
    d.driver.remove(image.id)?;
    let left = direct_leftovers();
    if !left.is_empty() {
        return Err(format!("left: {left:?}").into());
    }
    Ok(())
}

/// The one direct pool's parent dataset (its zpool's root).
fn direct_parent() -> Result<String, Failed> {
    tool("zfs", &["list", "-H", "-o", "name", "-d", "0"])
        .lines()
        .find(|l| l.starts_with("blkdrv-direct-"))
        .map(str::to_string)
        .ok_or_else(|| "no direct zpool".into())
}

/// What kill -9 leaves in `clone_active` and `remove`: a copy snapshot without its clone (the
/// copy's remove takes it, or the copy made again replaces it), a source already promoted away
/// from (a clone of its copy's snapshot: the next remove finishes), and a copy's source removed
/// while the copy is mounted.
fn copy_crash_leftovers() -> Result<(), Failed> {
    use blkdrv_drivers::LayerChain;
    let d = direct_zfs()?;
    let p = direct_parent()?;
    let v = LayerChain::volume(direct::id(1));
    d.driver.create_volume(v.id, None)?;
    // Killed between the snapshot and the clone; the pool undoes the copy.
    tool("zfs", &["snapshot", &format!("{p}/1@clone-2")]);
    d.driver.remove(direct::id(2))?;
    if !direct_leftovers().iter().all(|l| !l.contains('@')) {
        return Err(format!("after the undo: {:?}", direct_leftovers()).into());
    }
    // Killed there again; the pool makes the copy again instead.
    let m = d.mount_rw(&v)?;
    fs::write(m.join("old"), b"1")?;
    tool("zfs", &["snapshot", &format!("{p}/1@clone-2")]);
    fs::write(m.join("new"), b"2")?;
    d.driver.clone_active(&v, direct::id(2))?;
    let c = LayerChain::volume(direct::id(2));
    let mc = d.mount_rw(&c)?;
    if !mc.join("new").exists() {
        return Err("the copy was cloned from the stale snapshot".into());
    }
    // The source goes while its copy is mounted and in use.
    d.unmount(&m)?;
    d.driver.remove(v.id)?;
    fs::write(mc.join("more"), b"3")?;
    d.unmount(&mc)?;
    // Killed after the promote of a remove: the source is a clone of the copy's snapshot.
    d.driver.clone_active(&c, direct::id(3))?;
    tool("zfs", &["promote", &format!("{p}/3")]);
    d.driver.remove(direct::id(2))?;
    d.driver.remove(direct::id(3))?;
    let left = direct_leftovers();
    if !left.is_empty() || !d.list()?.is_empty() {
        return Err(format!("left: {left:?}, objects {:?}", d.list()).into());
    }
    Ok(())
}
