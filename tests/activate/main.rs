//! `blkdrv pool activate --all` after a simulated reboot (what blkdrv-activate.service runs at
//! boot): one root with a pool of every driver this kernel has, each with committed and active
//! layers holding data and one layer left mounted; then everything a reboot takes away is
//! taken away behind blkdrv's back, with the kernel's own tools (every mount under the root
//! unmounted, zpools exported, dm tables removed, loop devices detached, /run's links gone);
//! one pool's backing file is moved away. `pool activate --all` must bring every other pool
//! back with every layer's data readable, report the broken one and exit 1; with the file
//! back, a second run brings that one back too and exits 0.
//!
//! Runs on the host with the drivers it has (btrfs, overlay, vfs here); in the VM
//! (`tests/vm/run activate`, a group booted with OpenZFS) devicemapper and zfs must be there.

use kit::cli::{run_in, tool, Out};
use kit::trial::result_trial;
use kit::{Failed, TestResult};
use libtest_mimic::Arguments;
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// A state root of its own (under the kit's run dir, which the leak check looks at); every
/// pool in it destroyed on drop, even when the case fails.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        fs::create_dir_all(kit::pool::run_dir()).unwrap();
        Host {
            dir: tempfile::Builder::new()
                .prefix("activate-")
                .tempdir_in(kit::pool::run_dir())
                .unwrap(),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn path(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join("scratch").join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    fn run(&self, args: &[&str]) -> Out {
        run_in(&self.root(), args.iter().copied())
    }

    fn ok(&self, args: &[&str]) -> Result<Out, Failed> {
        let o = self.run(args);
        if o.code != 0 {
            return Err(format!("{args:?}: exit {}: {}{}", o.code, o.stdout, o.stderr).into());
        }
        Ok(o)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let pools = fs::read_dir(self.root().join("pools"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
            .unwrap_or_default();
        for p in pools {
            let p = p.to_string_lossy().into_owned();
            let o = self.run(&["pool", "destroy", &p, "--force"]);
            if o.code != 0 {
                eprintln!("cleanup: destroy {p}: {}", o.stderr.trim());
            }
        }
        if let Err(e) = blkdrv_pool::pool::teardown_dir(self.dir.path()) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// The drivers this case makes pools of: every driver whose host check passes. In the VM
/// every driver must (the activate group boots with dm and OpenZFS); on a host, those that
/// lack only kernel support are left to the VM, and one that lacks tools is a failure.
fn drivers() -> Result<Vec<&'static str>, Failed> {
    static DRIVERS: std::sync::OnceLock<Result<Vec<&'static str>, String>> =
        std::sync::OnceLock::new();
    DRIVERS
        .get_or_init(find_drivers)
        .clone()
        .map_err(Failed::from)
}

fn find_drivers() -> Result<Vec<&'static str>, String> {
    let in_vm = kit::config::get().in_vm;
    let mut out = Vec::new();
    for f in blkdrv_drivers::registry::all() {
        match f.check_host() {
            Ok(()) => out.push(f.name()),
            Err(e)
                if !in_vm && blkdrv_drivers::sys::host::only_kernel_missing(&f.requirements()) =>
            {
                eprintln!("activate: {} left to the VM: {e}", f.name());
            }
            Err(e) => return Err(format!("{}: {e}", f.name())),
        }
    }
    Ok(out)
}

/// Lines of a tool's output, as a set (what exists before and after the pools are made).
fn lines(program: &str, args: &[&str]) -> BTreeSet<String> {
    if which(program).is_none() {
        return BTreeSet::new();
    }
    tool(program, args)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty() && !l.starts_with("No devices found"))
        .collect()
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(program))
            .find(|f| f.is_file())
    })
}

/// What a reboot takes away and that belongs to nobody else: kernel objects made since
/// `Before` was taken.
struct Before {
    zpools: BTreeSet<String>,
    dm: BTreeSet<String>,
    links: BTreeSet<PathBuf>,
}

const LINKS: &str = "/run/blkdrv/l";

fn dm_names() -> BTreeSet<String> {
    if !Path::new("/sys/class/misc/device-mapper").exists() {
        return BTreeSet::new();
    }
    lines("dmsetup", &["ls"])
        .into_iter()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn zpools() -> BTreeSet<String> {
    if !Path::new("/dev/zfs").exists() {
        return BTreeSet::new();
    }
    lines("zpool", &["list", "-H", "-o", "name"])
}

fn links() -> BTreeSet<PathBuf> {
    fs::read_dir(LINKS)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

impl Before {
    fn take() -> Before {
        Before {
            zpools: zpools(),
            dm: dm_names(),
            links: links(),
        }
    }
}

/// Mount points under `dir`.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    kit::leaks::mounts_in(dir).unwrap_or_default()
}

/// Loop devices whose backing file is under `dir`.
fn loops_of(dir: &Path) -> Vec<PathBuf> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    blkdrv_drivers::sys::loopdev::list()
        .unwrap_or_default()
        .into_iter()
        .filter(|(_, file)| file.starts_with(&dir))
        .map(|(dev, _)| dev)
        .collect()
}

/// The reboot, without rebooting: everything the kernel held for the pools under `dir` goes,
/// through the tools an admin would use, without blkdrv knowing. Then checks it is all gone.
fn simulate_reboot(dir: &Path, before: &Before) -> TestResult {
    let mut m = mounts_under(dir);
    // Deepest first: a layer mounted inside a pool's mounted filesystem goes before it.
    m.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for t in &m {
        tool("umount", &[t]);
    }
    for z in zpools().difference(&before.zpools) {
        tool("zpool", &["export", z.as_str()]);
    }
    // Thin devices hold their pool open: remove in passes until nothing new is left.
    for _ in 0..8 {
        let left: Vec<String> = dm_names().difference(&before.dm).cloned().collect();
        if left.is_empty() {
            break;
        }
        for d in left {
            let _ = std::process::Command::new("dmsetup")
                .args(["remove", &d])
                .output();
        }
    }
    for l in loops_of(dir) {
        tool("losetup", &["-d".as_ref(), l.as_os_str()]);
    }
    // /run is a fresh tmpfs after a boot: overlay's lower-dir links are gone too.
    for l in links().difference(&before.links) {
        let _ = fs::remove_file(l).or_else(|_| fs::remove_dir_all(l));
    }
    let left = [
        (
            "mounts",
            mounts_under(dir)
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>(),
        ),
        (
            "loop devices",
            loops_of(dir)
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
        ),
        (
            "dm tables",
            dm_names().difference(&before.dm).cloned().collect(),
        ),
        (
            "zpools",
            zpools().difference(&before.zpools).cloned().collect(),
        ),
    ];
    for (what, l) in left {
        if !l.is_empty() {
            return Err(format!("the simulated reboot left {what}: {l:?}").into());
        }
    }
    Ok(())
}

/// A pool of `driver` named `pool` with data: `base` (committed, from a directory), `app`
/// (committed, on base, with a file written through a mount), `work` (active, on app, written
/// and left mounted at `<scratch>/<pool>-work`: the reboot takes that mount away).
fn fill(h: &Host, pool: &str, driver: &str) -> TestResult {
    h.ok(&["pool", "init", pool, "--driver", driver, "--size", "512M"])?;
    let src = h.path(&format!("{pool}-src"));
    fs::create_dir_all(src.join("etc")).unwrap();
    fs::write(src.join("etc/hostname"), format!("{pool}\n")).unwrap();
    fs::write(src.join("data"), vec![b'x'; 256 * 1024]).unwrap();
    let p = ["--pool", pool];
    let with = |args: &[&str]| -> Vec<String> {
        args.iter().chain(p.iter()).map(|s| s.to_string()).collect()
    };
    let okv = |v: Vec<String>| h.ok(&v.iter().map(String::as_str).collect::<Vec<_>>());
    okv(with(&[
        "layer",
        "create",
        "base",
        "--from-dir",
        src.to_str().unwrap(),
    ]))?;
    okv(with(&["layer", "snapshot", "base", "app"]))?;
    let m = h.path(&format!("{pool}-app"));
    okv(with(&["layer", "mount", "app", m.to_str().unwrap()]))?;
    fs::write(m.join("app.txt"), format!("app of {pool}")).unwrap();
    okv(with(&["layer", "umount", "app"]))?;
    okv(with(&["layer", "commit", "app"]))?;
    okv(with(&["layer", "snapshot", "app", "work"]))?;
    let w = h.path(&format!("{pool}-work"));
    okv(with(&["layer", "mount", "work", w.to_str().unwrap()]))?;
    fs::write(w.join("work.txt"), format!("work of {pool}")).unwrap();
    Ok(())
}

/// Every layer of `pool` mounted and read: the files written before the reboot are there.
fn check_data(h: &Host, pool: &str) -> TestResult {
    let expect: [(&str, &[(&str, String)]); 3] = [
        ("base", &[("etc/hostname", format!("{pool}\n"))]),
        (
            "app",
            &[
                ("etc/hostname", format!("{pool}\n")),
                ("app.txt", format!("app of {pool}")),
            ],
        ),
        (
            "work",
            &[
                ("app.txt", format!("app of {pool}")),
                ("work.txt", format!("work of {pool}")),
            ],
        ),
    ];
    for (layer, files) in expect {
        let m = h.path(&format!("{pool}-check-{layer}"));
        let ms = m.to_str().unwrap();
        let ro = layer != "work";
        let mut args = vec!["layer", "mount", layer, ms, "--pool", pool];
        if ro {
            args.push("--ro");
        }
        h.ok(&args)?;
        let mut bad = Vec::new();
        for (f, want) in files {
            let got = fs::read_to_string(m.join(f)).unwrap_or_else(|e| format!("<{e}>"));
            if &got != want {
                bad.push(format!("{layer}:{f} = {got:?}, want {want:?}"));
            }
        }
        let data = fs::metadata(m.join("data")).map(|d| d.len()).unwrap_or(0);
        if data != 256 * 1024 {
            bad.push(format!("{layer}:data is {data} bytes"));
        }
        h.ok(&["layer", "umount", layer, ms, "--pool", pool])?;
        if !bad.is_empty() {
            return Err(format!("pool {pool} after activation: {}", bad.join("; ")).into());
        }
    }
    Ok(())
}

fn activate_json(h: &Host) -> (i32, Vec<Value>, String) {
    let o = h.run(&["pool", "activate", "--all", "--json"]);
    let v: Vec<Value> = serde_json::from_str(&o.stdout).unwrap_or_default();
    (o.code, v, o.stderr)
}

fn entry<'a>(report: &'a [Value], pool: &str) -> Result<&'a Value, Failed> {
    report
        .iter()
        .find(|e| e["pool"] == pool)
        .ok_or_else(|| format!("pool {pool} missing from the report: {report:?}").into())
}

fn reboot_brings_every_pool_back() -> TestResult {
    let drivers = drivers()?;
    let before = Before::take();
    let h = Host::new();
    for d in &drivers {
        fill(&h, d, d)?;
    }
    // The pool whose backing file goes missing: the first driver's again, on its own file.
    let broken = "zz-missing";
    fill(&h, broken, drivers[0])?;
    simulate_reboot(h.dir.path(), &before)?;
    let backing = h.root().join("pools").join(broken).join("backing");
    let away = h.dir.path().join("backing-away");
    fs::rename(&backing, &away).map_err(|e| format!("move {}: {e}", backing.display()))?;

    let t = std::time::Instant::now();
    let (code, report, stderr) = activate_json(&h);
    eprintln!(
        "activate: {} pools ({}) in {:.1} s",
        report.len(),
        drivers.join(", "),
        t.elapsed().as_secs_f64()
    );
    if code != 1 {
        return Err(format!(
            "activate --all with a missing backing file: exit {code}, want 1: {stderr}"
        )
        .into());
    }
    if report.len() != drivers.len() + 1 {
        return Err(format!(
            "report has {} pools, want {}: {report:?}",
            report.len(),
            drivers.len() + 1
        )
        .into());
    }
    let b = entry(&report, broken)?;
    if b["state"] != "failed"
        || b["driver"] != drivers[0]
        || !b["error"].as_str().unwrap_or("").contains("backing")
    {
        return Err(format!("the broken pool's entry: {b}").into());
    }
    if !stderr.contains(broken) {
        return Err(format!("the verdict does not name {broken}: {stderr:?}").into());
    }
    for d in &drivers {
        let e = entry(&report, d)?;
        if e["state"] != "active" || e["layers"] != 3 || e["driver"] != *d {
            return Err(format!("pool {d}: {e}").into());
        }
        // The mount of `work` went with the reboot: recovery says it forgot it.
        let rec = e["recovered"].to_string();
        if !rec.contains("forgot mount") || !rec.contains(&format!("{d}-work")) {
            return Err(format!("pool {d}: recovery did not report the lost mount: {rec}").into());
        }
        check_data(&h, d)?;
    }

    // The file back: a second run brings that pool up too, and every pool stays up.
    fs::rename(&away, &backing).map_err(|e| format!("move back: {e}"))?;
    let (code, report, stderr) = activate_json(&h);
    if code != 0 {
        return Err(format!("second activate --all: exit {code}: {stderr}").into());
    }
    for e in &report {
        if e["state"] != "active" {
            return Err(format!("second activate --all: {e}").into());
        }
    }
    check_data(&h, broken)?;
    Ok(())
}

/// Text output: one line per pool with its state, a failed pool's error under it; `--all` with
/// a name is bad usage; an empty root has nothing to do.
fn text_report_and_usage() -> TestResult {
    let h = Host::new();
    let o = h.ok(&["pool", "activate", "--all"])?;
    if o.stdout.trim() != "no pools" {
        return Err(format!("empty root: {:?}", o.stdout).into());
    }
    let o = h.run(&["pool", "activate", "--all", "p"]);
    if o.code != 2 {
        return Err(format!("--all with a name: exit {}, want 2", o.code).into());
    }
    // A pool whose loopback file is gone: its line says FAILED, its error follows indented.
    let d = drivers()?[0];
    h.ok(&["pool", "init", "p", "--driver", d, "--size", "512M"])?;
    h.ok(&["pool", "deactivate", "p"])?;
    let backing = h.root().join("pools/p/backing");
    let away = h.dir.path().join("away");
    fs::rename(&backing, &away).unwrap();
    let o = h.run(&["pool", "activate", "--all"]);
    fs::rename(&away, &backing).unwrap();
    if o.code != 1 {
        return Err(format!("missing backing: exit {} ({})", o.code, o.stderr).into());
    }
    let first = o.stdout.lines().next().unwrap_or("");
    if !first.starts_with("p ") || !first.contains("FAILED") || !o.stdout.contains("  error: ") {
        return Err(format!("text report: {:?}", o.stdout).into());
    }
    let o = h.ok(&["pool", "activate", "--all"])?;
    if !o.stdout.contains("active, 0 layers") {
        return Err(format!("after the file came back: {:?}", o.stdout).into());
    }
    // A pool directory whose store is gone (deleted by hand): reported, and no store made.
    let bare = h.root().join("pools/gone");
    fs::create_dir_all(&bare).unwrap();
    let o = h.run(&["pool", "activate", "--all"]);
    let made = bare.join("store.db").exists();
    fs::remove_dir(&bare).unwrap();
    if o.code != 1 || !o.stdout.contains("gone") || !o.stdout.contains("store") || made {
        return Err(format!(
            "a pool without its store: exit {}, {:?}, store made: {made}",
            o.code, o.stdout
        )
        .into());
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let root = nix::unistd::geteuid().is_root();
    let trials = vec![
        result_trial(
            "reboot_brings_every_pool_back",
            reboot_brings_every_pool_back,
        ),
        result_trial("text_report_and_usage", text_report_and_usage),
    ]
    .into_iter()
    .map(|t| if root { t } else { t.with_ignored_flag(true) })
    .collect();
    if !root && !args.list {
        eprintln!("activate: needs root (loop devices, mounts)");
    }
    let c = libtest_mimic::run(&args, trials);
    kit::trial::conclude(&args, "activate", c)
}
