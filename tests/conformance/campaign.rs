//! The reliability campaign (issue #11): the black-box probe's methods as asserting, seeded cases.
//!
//! - `kill_9_campaign`: SIGKILL at a seeded random moment of a random operation (create from a
//!   tar or a directory, snapshot, commit, rm, mount), sometimes also of the writer that recovers
//!   from it; after each round every confirmed layer is there with the same tree, nothing is
//!   orphaned, no mount or loop device is left over.
//! - `enospc_through_mounted_layer`: a pool filled through a mounted layer.
//! - `concurrent_writers`: several processes doing mixed operations on one pool.
//!
//! Every case prints the run's seed; `BLKDRV_TEST_SEED` replays one (see `kit::rng`). Run counts come from the
//! environment so that the VM (device-mapper, ZFS under emulation) can run fewer:
//! `BLKDRV_CAMPAIGN_RUNS` (default 50), `BLKDRV_CAMPAIGN_MAX_DELAY_MS` (the first kill delays, before an operation's duration is
//! known: 100),
//! `BLKDRV_CONCURRENT_PROCS` (8), `BLKDRV_CONCURRENT_OPS` (100).

use blkdrv_drivers::Bytes;
use blkdrv_pool::{LayerInfo, LayerName, LayerState, Pool, PoolError, Source};
use kit::child;
use kit::config::count as env_count;
use kit::ensure;
use kit::leaks::Baseline;
use kit::pool::*;
use kit::rng::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::hash::Hasher;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// The case's stream of the run's seed (printed with the command that replays the case).
fn seed(driver: &str, case: &str) -> (Rng, u64) {
    Rng::for_case("conformance", &format!("{driver}::{case}"))
}

// ----- tree hashes -----

/// A layer's whole tree: relative path ("" is the root) -> type, mode, owner, and the file's
/// size and content hash, a symlink's target or a device number. Compared whole, so a
/// difference names the paths.
pub type Manifest = BTreeMap<String, String>;

pub fn manifest(root: &Path) -> Result<Manifest, String> {
    let mut m = Manifest::new();
    walk(root, root, &mut m)?;
    Ok(m)
}

fn walk(root: &Path, p: &Path, m: &mut Manifest) -> Result<(), String> {
    let e = |e: std::io::Error| format!("{}: {e}", p.display());
    let md = fs::symlink_metadata(p).map_err(e)?;
    let ft = md.file_type();
    let mut d = format!("{:o} {}:{}", md.mode() & 0o7777, md.uid(), md.gid());
    if ft.is_dir() {
        d.insert_str(0, "dir ");
    } else if ft.is_symlink() {
        let t = fs::read_link(p).map_err(e)?;
        d = format!("link {d} -> {}", t.display());
    } else if ft.is_file() {
        let bytes = fs::read(p).map_err(e)?;
        let mut h = std::hash::DefaultHasher::new();
        h.write(&bytes);
        d = format!("file {d} {} bytes #{:016x}", bytes.len(), h.finish());
    } else if ft.is_block_device() || ft.is_char_device() {
        d = format!("dev {d} {:x}", md.rdev());
    } else {
        d = format!("other {d}");
    }
    let rel = p
        .strip_prefix(root)
        .map_err(|_| format!("{} outside {}", p.display(), root.display()))?
        .to_string_lossy()
        .into_owned();
    m.insert(rel, d);
    if ft.is_dir() {
        let mut names: Vec<PathBuf> = fs::read_dir(p)
            .map_err(e)?
            .map(|r| r.map(|x| x.path()))
            .collect::<Result<_, _>>()
            .map_err(e)?;
        names.sort();
        for n in names {
            walk(root, &n, m)?;
        }
    }
    Ok(())
}

/// What differs between two manifests, briefly (for failure messages).
pub fn diff(want: &Manifest, got: &Manifest) -> String {
    let mut out = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            None => out.push(format!("missing {k:?} ({v})")),
            Some(g) if g != v => out.push(format!("{k:?}: want {v}, got {g}")),
            _ => {}
        }
    }
    for (k, v) in got {
        if !want.contains_key(k) {
            out.push(format!("extra {k:?} ({v})"));
        }
    }
    let n = out.len();
    out.truncate(8);
    format!("{n} difference(s): {}", out.join("; "))
}

pub fn without_root(m: &Manifest) -> Manifest {
    m.iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub fn layer_manifest(tp: &TestPool, pool: &mut Pool, name: &str) -> Result<Manifest, String> {
    with_mount(tp, pool, name, true, manifest)
}

/// Bytes that neither compress nor deduplicate.
fn noise(rng: &mut Rng, len: usize) -> Vec<u8> {
    rng.noise(len)
}

// ----- kill -9 campaign -----

/// What an import source adds to its parent.
struct ImportSource {
    dir: PathBuf,
    tar: PathBuf,
    adds: Manifest,
}

/// Three sources of different shape: many small files (kills land between entries), one big
/// file (kills land mid-write), and modes, owners and a symlink (what a bad rollback garbles).
fn make_sources(tp: &TestPool, rng: &mut Rng) -> Result<Vec<ImportSource>, String> {
    let io = |e: std::io::Error| e.to_string();
    let mut out = Vec::new();
    for k in 0..3 {
        let dir = tp.path(&format!("src{k}"));
        let top = dir.join(format!("v{k}"));
        fs::create_dir_all(&top).map_err(io)?;
        match k {
            0 => {
                for d in 0..6 {
                    let sub = top.join(format!("d{d}"));
                    fs::create_dir_all(&sub).map_err(io)?;
                    for f in 0..40 {
                        fs::write(sub.join(format!("f{f}")), noise(rng, 512)).map_err(io)?;
                    }
                }
            }
            1 => {
                fs::write(top.join("big"), noise(rng, 6 << 20)).map_err(io)?;
                fs::write(top.join("small"), "s").map_err(io)?;
            }
            _ => {
                let priv_dir = top.join("private");
                fs::create_dir_all(&priv_dir).map_err(io)?;
                fs::write(priv_dir.join("key"), noise(rng, 300)).map_err(io)?;
                fs::set_permissions(priv_dir.join("key"), fs::Permissions::from_mode(0o600))
                    .map_err(io)?;
                std::os::unix::fs::chown(&priv_dir, Some(1000), Some(1000)).map_err(io)?;
                fs::set_permissions(&priv_dir, fs::Permissions::from_mode(0o750)).map_err(io)?;
                fs::write(top.join("suid"), noise(rng, 2000)).map_err(io)?;
                fs::set_permissions(top.join("suid"), fs::Permissions::from_mode(0o4755))
                    .map_err(io)?;
                std::os::unix::fs::symlink("private/key", top.join("link")).map_err(io)?;
                std::os::unix::fs::symlink("/nonexistent/abs", top.join("dangling")).map_err(io)?;
            }
        }
        let tar = tp.scratch.join(format!("src{k}.tar"));
        let mut b = tar::Builder::new(fs::File::create(&tar).map_err(io)?);
        b.follow_symlinks(false);
        b.append_dir_all(format!("v{k}"), &top).map_err(io)?;
        b.into_inner().map_err(io)?;
        let adds = without_root(&manifest(&dir)?);
        out.push(ImportSource { dir, tar, adds });
    }
    Ok(out)
}

/// An operation of a round, and what it may change.
#[derive(Debug, Clone)]
enum Op {
    Create {
        name: String,
        parent: Option<String>,
        src: usize,
        tar: bool,
    },
    Snapshot {
        name: String,
        parent: String,
    },
    Commit {
        name: String,
    },
    Rm {
        name: String,
    },
    Mount {
        name: String,
        target: PathBuf,
    },
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::Create { tar: true, .. } => "create-tar",
            Op::Create { tar: false, .. } => "create-dir",
            Op::Snapshot { .. } => "snapshot",
            Op::Commit { .. } => "commit",
            Op::Rm { .. } => "rm",
            Op::Mount { .. } => "mount",
        }
    }

    fn args(&self, sources: &[ImportSource]) -> Vec<String> {
        let s = |x: &str| x.to_string();
        let mut a: Vec<String> = vec![s("layer")];
        match self {
            Op::Create {
                name,
                parent,
                src,
                tar,
            } => {
                a.extend([s("create"), name.clone()]);
                if let Some(p) = parent {
                    a.extend([s("--parent"), p.clone()]);
                }
                if *tar {
                    a.extend([s("--from-tar"), sources[*src].tar.display().to_string()]);
                } else {
                    a.extend([s("--from-dir"), sources[*src].dir.display().to_string()]);
                }
            }
            Op::Snapshot { name, parent } => {
                a.extend([s("snapshot"), parent.clone(), name.clone()])
            }
            Op::Commit { name } => a.extend([s("commit"), name.clone()]),
            Op::Rm { name } => a.extend([s("rm"), name.clone()]),
            Op::Mount { name, target } => {
                a.extend([s("mount"), name.clone(), target.display().to_string()])
            }
        }
        a
    }
}

/// A layer the test has seen confirmed: its tree and whether it is committed.
#[derive(Debug, Clone)]
struct Known {
    tree: Manifest,
    committed: bool,
}

/// Every name of every layer in `list`, with its layer.
fn by_name(list: &[LayerInfo]) -> BTreeMap<String, &LayerInfo> {
    let mut m = BTreeMap::new();
    for l in list {
        for n in &l.names {
            m.insert(n.clone(), l);
        }
    }
    m
}

/// Picks the next operation from the confirmed state (the pool at rest, nothing mounted).
fn plan(
    rng: &mut Rng,
    round: u64,
    known: &BTreeMap<String, Known>,
    list: &[LayerInfo],
    tp: &TestPool,
    cap: usize,
) -> Op {
    let names = by_name(list);
    let committed: Vec<&String> = known.keys().filter(|n| known[*n].committed).collect();
    let active: Vec<&String> = known.keys().filter(|n| !known[*n].committed).collect();
    // Leaves: layers no other layer builds on. The base stays, so a parent always exists.
    let leaves: Vec<&String> = known
        .keys()
        .filter(|n| *n != "base")
        .filter(|n| {
            names
                .get(*n)
                .is_some_and(|l| !list.iter().any(|c| c.parent_id == Some(l.id)))
        })
        .collect();
    let mut kinds = vec!["create", "create", "snapshot", "mount"];
    if !active.is_empty() {
        kinds.extend(["commit", "commit"]);
    }
    if !leaves.is_empty() {
        kinds.push("rm");
        if known.len() >= cap {
            kinds = vec!["rm"];
        }
    }
    match *rng.pick(&kinds) {
        "create" => Op::Create {
            name: format!("c{round}"),
            parent: if rng.chance(1, 3) {
                None
            } else {
                Some(rng.pick(&committed).to_string())
            },
            src: rng.below(3) as usize,
            tar: rng.chance(1, 2),
        },
        "snapshot" => Op::Snapshot {
            name: format!("s{round}"),
            parent: rng.pick(&committed).to_string(),
        },
        "commit" => Op::Commit {
            name: rng.pick(&active).to_string(),
        },
        "rm" => Op::Rm {
            name: rng.pick(&leaves).to_string(),
        },
        _ => Op::Mount {
            name: rng.pick(&known.keys().collect::<Vec<_>>()).to_string(),
            target: tp.scratch.join(format!("m{round}")),
        },
    }
}

/// Spawns `full` and SIGKILLs it `kill_after` later unless it has exited by then (`None`: lets it
/// finish). Returns its output and, if it exited on its own, how long it took.
fn run_and_kill(
    full: &[String],
    kill_after: Option<Duration>,
) -> Result<(Output, Option<Duration>), String> {
    let mut c = child::piped(full)
        .env_remove(blkdrv_pool::crash::ENV)
        .spawn()
        .map_err(|e| format!("spawn {full:?}: {e}"))?;
    let t0 = std::time::Instant::now();
    let mut took = None;
    loop {
        if c.try_wait().map_err(|e| e.to_string())?.is_some() {
            took = Some(t0.elapsed());
            break;
        }
        if kill_after.is_some_and(|d| t0.elapsed() >= d) {
            let _ = c.kill();
            break;
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    // The status is kept once reaped; the pipes hold what the child wrote.
    Ok((c.wait_with_output().map_err(|e| e.to_string())?, took))
}

/// Kill delays that land inside an operation wherever it runs (a debug build here, emulation in
/// the VM): uniform up to a little more than the longest of the last few runs of that kind (the
/// last few: one slow run on a busy host must not spread the kills thin for the whole case).
struct Timing {
    recent: BTreeMap<&'static str, std::collections::VecDeque<Duration>>,
    default: Duration,
}

impl Timing {
    fn top(&self, kind: &str) -> Duration {
        self.recent
            .get(kind)
            .and_then(|v| v.iter().max().copied())
            .unwrap_or(self.default)
    }

    fn delay(&self, rng: &mut Rng, kind: &str) -> Duration {
        let top_us = self.top(kind).as_micros() as u64 * 6 / 5;
        Duration::from_micros(rng.below(top_us + 1))
    }

    fn saw(&mut self, kind: &'static str, took: Option<Duration>) {
        if let Some(t) = took {
            let v = self.recent.entry(kind).or_default();
            v.push_back(t);
            if v.len() > 5 {
                v.pop_front();
            }
        }
    }
}

fn was_killed(o: &Output) -> bool {
    use std::os::unix::process::ExitStatusExt;
    o.status.signal() == Some(nix::libc::SIGKILL)
}

/// SIGKILL at a seeded random moment of a random operation, and sometimes of the writer that
/// recovers from it; after every round the pool, recovered by a writer, must hold every layer
/// confirmed so far with the same tree, no orphan, no stale mount, no leftover kernel object.
pub fn kill_9_campaign(driver: &str) -> TestResult {
    let (mut rng, seed) = seed(driver, "kill_9_campaign");
    let runs = env_count("BLKDRV_CAMPAIGN_RUNS", 50);
    let max_delay = env_count("BLKDRV_CAMPAIGN_MAX_DELAY_MS", 100);
    let tp = TestPool::new(driver)?;
    let sources = make_sources(&tp, &mut rng)?;
    let mut known: BTreeMap<String, Known> = BTreeMap::new();
    let (baseline, mut list) = {
        let mut pool = tp.open()?;
        pool.create(
            &LayerName::new("base").map_err(|e| e.to_string())?,
            None,
            Source::Dir(&sources[0].dir),
            None,
            &mut |_| {},
        )?;
        let tree = layer_manifest(&tp, &mut pool, "base")?;
        known.insert(
            "base".into(),
            Known {
                tree,
                committed: true,
            },
        );
        (Baseline::take(tp.dir())?, pool.list()?)
    };
    let mut timing = Timing {
        recent: BTreeMap::new(),
        default: Duration::from_millis(max_delay),
    };
    // op kind -> [finished, killed, recovery killed]
    let mut stats: BTreeMap<&str, [u32; 3]> = BTreeMap::new();
    for round in 0..runs {
        // Each round draws from its own stream: a replay that diverges in one round (kill
        // timing is never exact) still makes the same draws in the next.
        let mut rng = rng.fork(round);
        let op = plan(&mut rng, round, &known, &list, &tp, 7);
        // One round in four runs to completion: progress, and the operation's duration.
        let kill_after = (!rng.chance(1, 4)).then(|| timing.delay(&mut rng, op.kind()));
        let args = op.args(&sources);
        let full = child::layer_args(&tp, &args.iter().map(String::as_str).collect::<Vec<_>>());
        let ctx = format!(
            "round {round} (seed {seed}): {} {:?} killed after {kill_after:?}",
            op.kind(),
            op
        );
        let (out, took) = run_and_kill(&full, kill_after)?;
        timing.saw(op.kind(), took);
        let killed = was_killed(&out);
        ensure!(
            killed || out.status.success(),
            "{ctx}: failed: {:?} {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let st = stats.entry(op.kind()).or_default();
        st[usize::from(killed)] += 1;
        // Kill the recovery too: a writer reconciles on open (`pool check` is one).
        if killed && rng.chance(1, 2) {
            let d = timing.delay(&mut rng, "check");
            let (o, took) = run_and_kill(&child::pool_args(&tp, &["pool", "check", "t"]), Some(d))?;
            timing.saw("check", took);
            ensure!(
                was_killed(&o) || o.status.success(),
                "{ctx}: recovery `pool check` failed: {:?} {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            );
            if was_killed(&o) {
                st[2] += 1;
            }
        }
        list = verify_round(&tp, &baseline, &mut known, &op, !killed, &sources, &ctx)?;
    }
    eprintln!(
        "{driver}::kill_9_campaign: {runs} rounds, op: [finished, killed, recovery killed] {stats:?}; kill window {:?}; {} layers at the end",
        timing
            .recent
            .keys()
            .map(|k| (*k, timing.top(k)))
            .collect::<BTreeMap<_, _>>(),
        known.len()
    );
    Ok(())
}

/// Recovers the pool as a writer and checks everything a round may have touched; updates
/// `known` with what the round confirmed. Returns the pool's layers at rest.
fn verify_round(
    tp: &TestPool,
    baseline: &Baseline,
    known: &mut BTreeMap<String, Known>,
    op: &Op,
    succeeded: bool,
    sources: &[ImportSource],
    ctx: &str,
) -> Result<Vec<LayerInfo>, String> {
    let mut pool = tp.open()?;
    let es = |e: PoolError| format!("{ctx}: {e}");
    let repair = pool.check(true).map_err(es)?;
    ensure_r(repair.is_clean(), || {
        format!("{ctx}: drift after recovery: {repair:?}")
    })?;
    let report = pool.check(false).map_err(es)?;
    ensure_r(report.is_clean(), || {
        format!("{ctx}: drift after repair: {report:?}")
    })?;
    let list = pool.list().map_err(es)?;
    for l in &list {
        ensure_r(l.state.is_settled(), || {
            format!("{ctx}: layer {} left {} after recovery", l.name, l.state)
        })?;
    }
    let names = by_name(&list);
    let present = |n: &str| names.contains_key(n);
    // What the operation may have changed.
    let mut expect: BTreeSet<String> = known.keys().cloned().collect();
    match op {
        Op::Create { name, .. } | Op::Snapshot { name, .. } => {
            ensure_r(present(name) || !succeeded, || {
                format!("{ctx}: confirmed layer {name} is gone")
            })?;
            if present(name) {
                expect.insert(name.clone());
            }
        }
        Op::Rm { name } => {
            ensure_r(!(present(name) && succeeded), || {
                format!("{ctx}: removed layer {name} is back")
            })?;
            if !present(name) {
                expect.remove(name);
            }
        }
        Op::Commit { .. } | Op::Mount { .. } => {}
    }
    let got: BTreeSet<String> = names.keys().cloned().collect();
    ensure_r(got == expect, || {
        format!("{ctx}: layers {got:?}, expected {expect:?}")
    })?;
    // Mounts: live exactly where recorded; then unmount them so the pool is at rest.
    let recorded: Vec<PathBuf> = list
        .iter()
        .flat_map(|l| l.mounts.iter().map(|m| m.target.clone()))
        .collect();
    if let Op::Mount { name, target } = op {
        let canon = target.canonicalize().unwrap_or_else(|_| target.clone());
        let at = recorded.contains(&canon);
        ensure_r(at || !succeeded, || {
            format!(
                "{ctx}: confirmed mount of {name} at {} not recorded",
                canon.display()
            )
        })?;
        ensure_r(recorded.iter().all(|r| r == &canon), || {
            format!(
                "{ctx}: mounts recorded {recorded:?}, only {} expected",
                canon.display()
            )
        })?;
    } else {
        ensure_r(recorded.is_empty(), || {
            format!("{ctx}: mounts recorded {recorded:?}, none expected")
        })?;
    }
    baseline.check(&recorded, ctx)?;
    for l in &list {
        if !l.mounts.is_empty() {
            pool.umount(&l.name, None).map_err(es)?;
        }
    }
    baseline.check(&[], &format!("{ctx}: after unmounting"))?;
    // States.
    for (n, l) in &names {
        let committed = l.state == LayerState::Committed;
        match (op, known.get(n)) {
            // A commit rolls forward once its intent is recorded: either state may result.
            (Op::Commit { name }, Some(_)) if name == n => {
                ensure_r(committed || !succeeded, || {
                    format!("{ctx}: confirmed commit of {n} left it {}", l.state)
                })?;
            }
            (_, Some(k)) => ensure_r(k.committed == committed, || {
                format!("{ctx}: {n} is {}, was committed={}", l.state, k.committed)
            })?,
            (_, None) => {}
        }
    }
    // Trees: every known layer unchanged; a new one as its operation made it.
    for (n, k) in known.iter_mut() {
        if !present(n) {
            continue;
        }
        let tree = layer_manifest(tp, &mut pool, n)?;
        ensure_r(tree == k.tree, || {
            format!("{ctx}: tree of {n} changed: {}", diff(&k.tree, &tree))
        })?;
        k.committed = names[n].state == LayerState::Committed;
    }
    if let Op::Rm { name } = op {
        if !present(name) {
            known.remove(name);
        }
    }
    match op {
        Op::Create {
            name, parent, src, ..
        } if present(name) => {
            let l = names[name.as_str()];
            ensure_r(l.state == LayerState::Committed, || {
                format!("{ctx}: created layer {name} is {}", l.state)
            })?;
            let mut want = match parent {
                Some(p) => without_root(&known[p].tree),
                None => Manifest::new(),
            };
            want.extend(sources[*src].adds.clone());
            let tree = layer_manifest(tp, &mut pool, name)?;
            ensure_r(without_root(&tree) == want, || {
                format!(
                    "{ctx}: created layer {name} incomplete: {}",
                    diff(&want, &without_root(&tree))
                )
            })?;
            known.insert(
                name.clone(),
                Known {
                    tree,
                    committed: true,
                },
            );
        }
        Op::Snapshot { name, parent } if present(name) => {
            let l = names[name.as_str()];
            ensure_r(l.state == LayerState::Active, || {
                format!("{ctx}: snapshot {name} is {}", l.state)
            })?;
            let tree = layer_manifest(tp, &mut pool, name)?;
            ensure_r(tree == known[parent].tree, || {
                format!(
                    "{ctx}: snapshot {name} differs from {parent}: {}",
                    diff(&known[parent].tree, &tree)
                )
            })?;
            // Give it content of its own, so that a later commit has something to keep.
            let tree = with_mount(tp, &mut pool, name, false, |p| {
                fs::write(p.join(format!("w-{name}")), name.as_bytes())
                    .map_err(|e| e.to_string())?;
                manifest(p)
            })?;
            known.insert(
                name.clone(),
                Known {
                    tree,
                    committed: false,
                },
            );
        }
        _ => {}
    }
    Ok(list)
}

fn ensure_r(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(msg())
    }
}

// ----- a full pool -----

/// Below the case's 10% min-free (whole numbers: the float comparison reads badly in `ensure!`).
fn under_min_free(available: Bytes, total: Bytes) -> bool {
    total.0 > 0 && u128::from(available.0) * 10 < u128::from(total.0)
}

/// How a fill ended: bytes written, the error, and which call gave it.
struct Fill {
    written: u64,
    error: std::io::Error,
    call: &'static str,
}

/// Writes `p` in 1 MiB chunks until a write fails (or `limit`). Syncs every 64 MiB: thin
/// provisioning (device-mapper) only learns at writeback that the pool is full.
fn fill_until_error(p: &Path, limit: u64, rng: &mut Rng) -> Result<Fill, String> {
    use std::io::Write;
    let chunk = noise(rng, 1 << 20);
    let mut f = fs::File::create(p).map_err(|e| format!("create {}: {e}", p.display()))?;
    let mut written = 0u64;
    while written < limit {
        if let Err(error) = f.write_all(&chunk) {
            return Ok(Fill {
                written,
                error,
                call: "write",
            });
        }
        written += chunk.len() as u64;
        if written.is_multiple_of(64 << 20) {
            if let Err(error) = f.sync_data() {
                return Ok(Fill {
                    written,
                    error,
                    call: "fsync",
                });
            }
        }
    }
    match f.sync_data() {
        Err(error) => Ok(Fill {
            written,
            error,
            call: "fsync",
        }),
        Ok(()) => Err(format!(
            "wrote {} into {} without an error",
            Bytes(written),
            p.display()
        )),
    }
}

/// Fills the pool through the layer mounted at `target` (file `fill<attempt>`): the write must
/// fail with ENOSPC and the space stay readable, to the library and to `pool status`. Returns
/// the pool's total size when full.
fn fill_once(
    driver: &str,
    tp: &TestPool,
    pool: &mut Pool,
    target: &Path,
    attempt: u32,
    before: &blkdrv_drivers::Space,
    rng: &mut Rng,
) -> Result<Bytes, String> {
    let fill = fill_until_error(
        &target.join(format!("fill{attempt}")),
        before.total.0 * 4,
        rng,
    )?;
    let errno = fill.error.raw_os_error();
    let full = matches!(errno, Some(nix::libc::ENOSPC) | Some(nix::libc::EDQUOT));
    // A thin pool reports the failed writeback (error_if_no_space) to fsync, as EIO on some
    // kernels; file-level drivers and ZFS must say ENOSPC to write(2) itself.
    let thin_writeback = fill.call == "fsync" && errno == Some(nix::libc::EIO);
    if !(full || thin_writeback) {
        return Err(format!(
            "{driver}: filling the pool ended with {} from {} after {}, expected ENOSPC",
            fill.error,
            fill.call,
            Bytes(fill.written)
        ));
    }
    eprintln!(
        "{driver}: fill: {} from {} after {} (pool {} total, {} available before)",
        fill.error,
        fill.call,
        Bytes(fill.written),
        before.total,
        before.available
    );
    let after = pool.status().map_err(|e| e.to_string())?.space;
    if !under_min_free(after.available, after.total) {
        return Err(format!(
            "{driver}: after the fill {} of {} available",
            after.available, after.total
        ));
    }
    let st = child::piped(&child::pool_args(tp, &["pool", "status", "t"]))
        .output()
        .map_err(|e| e.to_string())?;
    if !st.status.success() {
        return Err(format!(
            "{driver}: pool status on a full pool: {}",
            String::from_utf8_lossy(&st.stderr)
        ));
    }
    Ok(after.total)
}

/// A pool filled through a mounted layer: the writer gets ENOSPC, the pool's space stays
/// readable, new layers are refused with the numbers, and removing the layer gives the space back.
pub fn enospc_through_mounted_layer(driver: &str) -> TestResult {
    let (mut rng, _) = seed(driver, "enospc_through_mounted_layer");
    // Autoextend off: the file must not grow away from the fill.
    let tp = TestPool::with_options(
        driver,
        PoolOptions {
            size: Bytes::mib(512),
            autoextend: false,
            min_free_pct: 10,
        },
    )?;
    let mut pool = tp.open()?;
    import_dir(&tp, &mut pool, "base", None, |p| {
        fs::write(p.join("a"), "a")
    })?;
    pool.snapshot(
        "base",
        &LayerName::new("hog").map_err(|e| e.to_string())?,
        None,
    )?;
    let before = pool.status()?.space;
    let target = tp.path("hog");
    pool.mount("hog", &target, false)?;
    // A driver with a growth policy of its own (an LVM thin pool's autoextend profile) grows
    // when a new layer asks for space: then the refusal must come after filling the growth too.
    let mut attempt = 0;
    loop {
        let total_at_fill = fill_once(driver, &tp, &mut pool, &target, attempt, &before, &mut rng)?;
        // New layers are refused with the numbers: a snapshot (the error itself)...
        match pool.snapshot(
            "base",
            &LayerName::new("more").map_err(|e| e.to_string())?,
            None,
        ) {
            Err(e @ PoolError::LowSpace { .. }) => {
                let PoolError::LowSpace {
                    available, total, ..
                } = &e
                else {
                    unreachable!()
                };
                let msg = e.to_string();
                ensure!(
                    msg.contains(&available.to_string()) && msg.contains(&total.to_string()),
                    "{driver}: refusal without the numbers: {msg}"
                );
                ensure!(
                    under_min_free(*available, *total),
                    "{driver}: refusal says {available} of {total} free"
                );
                break;
            }
            Ok(_) if pool.status()?.space.total > total_at_fill && attempt < 8 => {
                eprintln!(
                    "{driver}: the pool grew from {total_at_fill} to {} for a new layer; filling again",
                    pool.status()?.space.total
                );
                pool.remove("more", false)?;
                attempt += 1;
            }
            other => return Err(format!("{driver}: expected LowSpace, got {other:?}").into()),
        }
    }
    // ...and an import (as the CLI shows it).
    let msg = import_dir(&tp, &mut pool, "more2", None, |p| {
        fs::write(p.join("b"), "b")
    })
    .err()
    .ok_or_else(|| format!("{driver}: import on a full pool succeeded"))?;
    ensure!(
        msg.contains("not enough free") && msg.contains("--min-free"),
        "{driver}: import on a full pool refused, but not for space: {msg}"
    );
    // Removing the layer gives the space back, promptly. Freeing is asynchronous on btrfs (the
    // cleaner thread) and ZFS (async destroy), and a commit makes it visible: sync(2) commits,
    // so a bounded number of sync rounds must do (btrfs left alone waits for its 30 s commit).
    pool.umount("hog", None)?;
    pool.remove("hog", false)?;
    let want = before.available.0 / 10 * 9;
    let mut got = Bytes(0);
    let mut rounds = 0;
    while rounds < 75 {
        nix::unistd::sync();
        got = pool.status()?.space.available;
        if got.0 >= want {
            break;
        }
        rounds += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("{driver}: {got} available after the removal and {rounds} sync round(s)");
    ensure!(
        got.0 >= want,
        "{driver}: {got} available after removing the filled layer and {rounds} sync rounds, {} before the fill",
        before.available
    );
    pool.snapshot(
        "base",
        &LayerName::new("again").map_err(|e| e.to_string())?,
        None,
    )?;
    let report = pool.check(false)?;
    ensure!(report.is_clean(), "{driver}: drift: {report:?}");
    Ok(())
}

// ----- concurrent writers -----

/// One process's plan: its command lines, and the layers (name -> committed) it leaves.
struct Plan {
    script: Vec<Vec<String>>,
    left: BTreeMap<String, bool>,
}

/// A seeded plan of `ops` operations for process `p`, on its own layers (`p<p>-...`) and the
/// shared `base`, valid whatever the other processes do; mounts go to its own directory and are
/// all undone by the end.
fn plan_process(tp: &TestPool, p: u64, ops: u64, rng: &mut Rng) -> Result<Plan, String> {
    let dir = tp.path(&format!("p{p}"));
    // name -> (committed, parent (own layers only), mounted at)
    let mut own: BTreeMap<String, (bool, Option<String>, Option<PathBuf>)> = BTreeMap::new();
    let mut script = Vec::new();
    let la = |a: &[&str]| child::layer_args(tp, a);
    for i in 0..ops {
        let mounted: Vec<String> = own
            .iter()
            .filter(|(_, v)| v.2.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        // The tail unmounts whatever is still mounted, so the pool ends at rest.
        let remaining = ops - i;
        if !mounted.is_empty() && remaining <= mounted.len() as u64 {
            let n = &mounted[0];
            script.push(la(&["layer", "umount", n]));
            own.get_mut(n).expect("own").2 = None;
            continue;
        }
        let committed: Vec<String> = own
            .iter()
            .filter(|(_, v)| v.0)
            .map(|(k, _)| k.clone())
            .collect();
        let active: Vec<String> = own
            .iter()
            .filter(|(_, v)| !v.0 && v.2.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        let unmounted: Vec<String> = own
            .iter()
            .filter(|(_, v)| v.2.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        let leaves: Vec<String> = unmounted
            .iter()
            .filter(|n| !own.values().any(|v| v.1.as_deref() == Some(n.as_str())))
            .cloned()
            .collect();
        let mut kinds = vec!["create", "snapshot"];
        if !active.is_empty() {
            kinds.push("commit");
        }
        if !unmounted.is_empty() && remaining > mounted.len() as u64 + 1 {
            kinds.push("mount");
        }
        if !mounted.is_empty() {
            kinds.push("umount");
        }
        if !leaves.is_empty() {
            kinds.push("rm");
            if own.len() >= 8 {
                kinds = vec!["rm"];
            }
        }
        let parent = |rng: &mut Rng| -> Option<String> {
            if committed.is_empty() || rng.chance(1, 3) {
                None
            } else {
                Some(rng.pick(&committed).clone())
            }
        };
        match *rng.pick(&kinds) {
            "create" => {
                let name = format!("p{p}-c{i}");
                let par = parent(rng);
                // Content unique to this operation: no build-cache reuse across names.
                let tar = dir.join(format!("{name}.tar"));
                let mut b = tar::Builder::new(Vec::new());
                let mut h = tar::Header::new_gnu();
                let data = noise(rng, 4096);
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_entry_type(tar::EntryType::Regular);
                b.append_data(&mut h, format!("{name}/data"), &data[..])
                    .map_err(|e| e.to_string())?;
                fs::write(&tar, b.into_inner().map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?;
                let t = tar.display().to_string();
                let mut a = vec!["layer", "create", &name, "--from-tar", &t];
                let pa = par.clone().unwrap_or_else(|| "base".into());
                if par.is_some() || rng.chance(1, 2) {
                    a.extend(["--parent", &pa]);
                }
                script.push(la(&a));
                own.insert(name, (true, par, None));
            }
            "snapshot" => {
                let name = format!("p{p}-s{i}");
                let par = parent(rng);
                let pa = par.clone().unwrap_or_else(|| "base".into());
                script.push(la(&["layer", "snapshot", &pa, &name]));
                own.insert(name, (false, par, None));
            }
            "commit" => {
                let n = rng.pick(&active).clone();
                script.push(la(&["layer", "commit", &n]));
                own.get_mut(&n).expect("own").0 = true;
            }
            "mount" => {
                let n = rng.pick(&unmounted).clone();
                let t = dir.join(format!("m{i}"));
                let ts = t.display().to_string();
                let mut a = vec!["layer", "mount", &n, &ts];
                if rng.chance(1, 4) {
                    a.push("--ro");
                }
                script.push(la(&a));
                own.get_mut(&n).expect("own").2 = Some(t);
            }
            "umount" => {
                let n = rng.pick(&mounted).clone();
                script.push(la(&["layer", "umount", &n]));
                own.get_mut(&n).expect("own").2 = None;
            }
            _ => {
                let n = rng.pick(&leaves).clone();
                script.push(la(&["layer", "rm", &n]));
                own.remove(&n);
            }
        }
    }
    Ok(Plan {
        script,
        left: own.into_iter().map(|(k, v)| (k, v.0)).collect(),
    })
}

/// `BLKDRV_CONCURRENT_PROCS` processes, each running `BLKDRV_CONCURRENT_OPS` mixed operations
/// from a seeded plan on one pool, all at once: no operation fails, the pool ends with exactly
/// the layers the plans leave, and `pool check` is clean.
pub fn concurrent_writers(driver: &str) -> TestResult {
    let (mut rng, seed) = seed(driver, "concurrent_writers");
    let procs = env_count("BLKDRV_CONCURRENT_PROCS", 8);
    let ops = env_count("BLKDRV_CONCURRENT_OPS", 100);
    let tp = TestPool::new(driver)?;
    {
        let mut pool = tp.open()?;
        import_dir(&tp, &mut pool, "base", None, |p| {
            fs::write(p.join("a"), "a")
        })?;
    }
    let mut expect: BTreeMap<String, bool> = BTreeMap::from([("base".to_string(), true)]);
    let mut children = Vec::new();
    for p in 0..procs {
        let plan = plan_process(&tp, p, ops, &mut rng)?;
        expect.extend(plan.left);
        let c = child::script_command(&plan.script)
            // Writers queue on the pool lock; the bound is only against a hang.
            .env("BLKDRV_LOCK_TIMEOUT", "600")
            .env_remove(blkdrv_pool::crash::ENV)
            .spawn()
            .map_err(|e| e.to_string())?;
        children.push(c);
    }
    let t0 = std::time::Instant::now();
    let mut failures = Vec::new();
    for (p, c) in children.into_iter().enumerate() {
        let o = c.wait_with_output().map_err(|e| e.to_string())?;
        if !o.status.success() {
            failures.push(format!(
                "process {p}: {:?}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            ));
        }
    }
    ensure!(failures.is_empty(), "seed {seed}: {}", failures.join("\n"));
    eprintln!(
        "{driver}::concurrent_writers: {procs} processes x {ops} operations in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    let mut pool = tp.open()?;
    let list = pool.list()?;
    let got: BTreeMap<String, bool> = by_name(&list)
        .into_iter()
        .map(|(n, l)| (n, l.state == LayerState::Committed))
        .collect();
    ensure!(
        got == expect,
        "seed {seed}: layers (name -> committed) {got:?}, expected {expect:?}"
    );
    ensure!(
        list.iter().all(|l| l.mounts.is_empty()),
        "seed {seed}: mounts left: {:?}",
        list.iter()
            .flat_map(|l| l.mounts.clone())
            .collect::<Vec<_>>()
    );
    let report = pool.check(false)?;
    ensure!(report.is_clean(), "seed {seed}: drift: {report:?}");
    ensure!(
        report.recovered.is_empty(),
        "seed {seed}: something needed recovery: {:?}",
        report.recovered
    );
    Ok(())
}
