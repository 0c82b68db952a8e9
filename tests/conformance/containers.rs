//! kill -9 during volume and container operations: each of `crash::CONTAINER_STEPS` is
//! crashed in a child of this binary (the pool's API, not the CLI), then the pool is reopened
//! as a writer and must be whole: what had completed is there, nothing is orphaned (`pool
//! check` clean), nothing is left mounted that the pool does not account for, and the
//! operation can be redone.

use crate::volumes::{anonymous, cn, image, mounts_under, named, spec, vn, with_container};
use blkdrv_pool::{Access, ContainerState, LayerName, Pool, PoolError, PoolName, Root, VolumeSpec};
use kit::ensure;
use kit::pool::*;
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};

/// Set in a child's environment: the pool operation to run, as JSON.
const ENV_OP: &str = "BLKDRV_TEST_CONTAINER_OP";

/// The container every crashed operation works on, its named volume, its commit.
const VICTIM: &str = "victim";
const VICTIM_VOL: &str = "victim-vol";
const VICTIM_LAYER: &str = "victim-layer";

/// The victim's mounts: a named volume filled from the image, an anonymous one.
fn victim_spec() -> blkdrv_pool::ContainerSpec {
    spec(
        "img",
        vec![named(VICTIM_VOL, "/data", false), anonymous("/anon")],
    )
}

/// In child mode, runs the operation passed in the environment and exits; otherwise returns.
pub fn maybe_run_child() {
    let Ok(op) = std::env::var(ENV_OP) else {
        return;
    };
    let op: Value = serde_json::from_str(&op).expect("child op is JSON");
    let s = |k: &str| op[k].as_str().unwrap_or_default().to_string();
    let run = || -> Result<(), PoolError> {
        let name = PoolName::new(&s("pool"))?;
        let mut pool = Pool::open(&Root::new(s("root")), &name, Access::Write)?;
        match s("op").as_str() {
            "volume-create" => pool
                .volume_create(Some(&vn(VICTIM_VOL)), &VolumeSpec::default())
                .map(drop),
            "volume-remove" => pool.volume_remove(VICTIM_VOL),
            "container-create" => pool.container_create(&cn(VICTIM), &victim_spec()).map(drop),
            "container-mount" => pool
                .container_mount(VICTIM, Path::new(&s("target")))
                .map(drop),
            "container-umount" => pool.container_umount(VICTIM).map(drop),
            "container-commit" => pool
                .container_commit(VICTIM, &LayerName::new(VICTIM_LAYER)?, None)
                .map(drop),
            "container-remove" => pool.container_remove(VICTIM, true, false).map(drop),
            other => Err(PoolError::Invalid(format!("no container op {other}"))),
        }
    };
    match run() {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("container child {}: {e}", s("op"));
            std::process::exit(1);
        }
    }
}

/// Runs `op` in a child, crashing at `step`; returns its exit code and stderr.
fn run_child(tp: &TestPool, op: &str, target: &Path, step: &str) -> Result<(i32, String), String> {
    let spec = json!({
        "root": tp.root.path, "pool": tp.name.to_string(), "op": op, "target": target,
    });
    let out = std::process::Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .env(ENV_OP, spec.to_string())
        .env(blkdrv_pool::crash::ENV, step)
        .env_remove(kit::child::ENV_CHILD)
        .env_remove(kit::child::ENV_SCRIPT)
        .env("BLKDRV_CONFIG", "/nonexistent")
        .output()
        .map_err(|e| format!("spawn container child: {e}"))?;
    Ok((
        out.status.code().unwrap_or(128 + 6),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn settled(s: ContainerState) -> bool {
    matches!(s, ContainerState::Created | ContainerState::Mounted)
}

/// The data that must survive every crash: a volume with a file, a container using it.
fn keeper_intact(tp: &TestPool, pool: &mut Pool, step: &str) -> Result<(), String> {
    let v = pool
        .volume_inspect("keep")
        .map_err(|e| format!("{step}: volume keep lost: {e}"))?;
    if v.users != ["keeper"] {
        return Err(format!("{step}: keep's users {:?}", v.users));
    }
    with_container(tp, pool, "keeper", |root| {
        let got = read(&root.join("data/kept"))?;
        if got != "kept" {
            return Err(format!("{step}: keep's data {got:?}"));
        }
        Ok(())
    })
}

/// Sets up what `op` needs (in this process), runs nothing else.
fn prepare(tp: &TestPool, op: &str, target: &Path) -> Result<(), String> {
    let mut pool = tp.open()?;
    let e = |what: &'static str| move |err: PoolError| format!("prepare {what}: {err}");
    match op {
        "volume-remove" => {
            pool.volume_create(Some(&vn(VICTIM_VOL)), &VolumeSpec::default())
                .map_err(e("volume"))?;
        }
        "container-mount" | "container-commit" | "container-remove" => {
            pool.container_create(&cn(VICTIM), &victim_spec())
                .map_err(e("container"))?;
            with_container(tp, &mut pool, VICTIM, |root| {
                fs::write(root.join("app/layer-file"), "l").map_err(|e| e.to_string())
            })?;
        }
        "container-umount" => {
            pool.container_create(&cn(VICTIM), &victim_spec())
                .map_err(e("container"))?;
            pool.container_mount(VICTIM, target)
                .map_err(e("container mount"))?;
        }
        _ => {}
    }
    Ok(())
}

/// After recovery: the state is settled and matches reality; redoes the operation where it
/// did not complete, and checks the result.
fn redo_and_check(
    tp: &TestPool,
    pool: &mut Pool,
    op: &str,
    target: &Path,
    step: &str,
) -> Result<String, String> {
    let err = |what: &'static str| move |e: PoolError| format!("{step}: {what}: {e}");
    let victim = pool.container_inspect(VICTIM).ok();
    if let Some(c) = &victim {
        if !settled(c.state) {
            return Err(format!("{step}: container left {:?}", c.state));
        }
        let live = mounts_under(target)?;
        match c.state {
            ContainerState::Mounted if c.root.as_deref() != Some(target) || live.is_empty() => {
                return Err(format!(
                    "{step}: recorded mounted at {:?}, mounts under the target {live:?}",
                    c.root
                ));
            }
            ContainerState::Mounted => {}
            _ if !live.is_empty() => {
                return Err(format!(
                    "{step}: container not mounted but mounts left under the target: {live:?}"
                ))
            }
            _ => {}
        }
    } else if !mounts_under(target)?.is_empty() {
        return Err(format!(
            "{step}: mounts left under the target of a gone container"
        ));
    }
    let outcome;
    match op {
        "volume-create" | "volume-remove" => {
            let present = pool.volume_inspect(VICTIM_VOL).is_ok();
            outcome = format!("volume present={present}");
            if op == "volume-create" && !present {
                pool.volume_create(Some(&vn(VICTIM_VOL)), &VolumeSpec::default())
                    .map_err(err("redo volume create"))?;
            }
            if op == "volume-remove" && present {
                pool.volume_remove(VICTIM_VOL)
                    .map_err(err("redo volume rm"))?;
            }
        }
        "container-create" => {
            outcome = format!("container present={}", victim.is_some());
            if victim.is_none() {
                pool.container_create(&cn(VICTIM), &victim_spec())
                    .map_err(err("redo container create"))?;
            }
            with_container(tp, pool, VICTIM, |root| {
                let seed = read(&root.join("data/seed"))?;
                if seed != "from the image" {
                    return Err(format!("{step}: volume filled: {seed:?}"));
                }
                Ok(())
            })?;
        }
        "container-mount" | "container-umount" => {
            let c = victim.ok_or_else(|| format!("{step}: the container is lost"))?;
            outcome = format!("state {:?}", c.state);
            if c.state == ContainerState::Mounted {
                pool.container_umount(VICTIM)
                    .map_err(err("umount after recovery"))?;
            }
            let left = mounts_under(target)?;
            if !left.is_empty() {
                return Err(format!("{step}: mounts left after umount: {left:?}"));
            }
            pool.container_mount(VICTIM, target)
                .map_err(err("redo mount"))?;
            let ok = target.join("app/layer-file").exists() || op == "container-umount";
            let filled = target.join("data/seed").exists();
            pool.container_umount(VICTIM).map_err(err("redo umount"))?;
            if !ok || !filled {
                return Err(format!("{step}: remounted root incomplete"));
            }
        }
        "container-commit" => {
            ensure_present(victim.is_some(), step, "the container survives its commit")?;
            let done = pool.inspect(VICTIM_LAYER).ok();
            outcome = format!("layer present={}", done.is_some());
            if let Some(l) = &done {
                if l.state != blkdrv_pool::LayerState::Committed {
                    return Err(format!("{step}: committed layer left {}", l.state));
                }
            } else {
                pool.container_commit(VICTIM, &LayerName::new(VICTIM_LAYER).expect("name"), None)
                    .map_err(err("redo commit"))?;
            }
            with_mount(tp, pool, VICTIM_LAYER, true, |p| {
                if read(&p.join("app/layer-file"))? != "l" || p.join("anon/x").exists() {
                    return Err(format!("{step}: committed layer's content"));
                }
                Ok(())
            })?;
            pool.remove(VICTIM_LAYER, true)
                .map_err(err("remove commit"))?;
        }
        "container-remove" => {
            outcome = format!("container present={}", victim.is_some());
            if victim.is_some() {
                pool.container_remove(VICTIM, true, false)
                    .map_err(err("redo container rm"))?;
            }
            let vols: Vec<String> = pool
                .volume_list()
                .map_err(err("volume ls"))?
                .into_iter()
                .filter(|v| v.anonymous)
                .map(|v| v.name)
                .collect();
            if !vols.is_empty() {
                return Err(format!("{step}: anonymous volumes left: {vols:?}"));
            }
        }
        other => return Err(format!("no check for {other}")),
    }
    // Back to the baseline for the next step.
    if pool.container_inspect(VICTIM).is_ok() {
        pool.container_remove(VICTIM, true, true)
            .map_err(err("clean up container"))?;
    }
    if pool.volume_inspect(VICTIM_VOL).is_ok() {
        pool.volume_remove(VICTIM_VOL)
            .map_err(err("clean up volume"))?;
    }
    Ok(outcome)
}

fn ensure_present(cond: bool, step: &str, what: &str) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(format!("{step}: {what}"))
    }
}

/// Every crash point of volumes and containers, one after another on one pool.
pub fn crash_at_every_step(driver: &str) -> kit::TestResult {
    let tp = TestPool::new(driver)?;
    let started = std::time::Instant::now();
    {
        let mut pool = tp.open()?;
        image(&tp, &mut pool)?;
        pool.container_create(
            &cn("keeper"),
            &spec("img", vec![named("keep", "/data", false)]),
        )?;
        with_container(&tp, &mut pool, "keeper", |root| {
            fs::write(root.join("data/kept"), "kept").map_err(|e| e.to_string())
        })?;
    }
    let baseline = kit::leaks::Baseline::take(tp.dir())?;
    let target: PathBuf = tp.path("victim-root");
    let mut outcomes = Vec::new();
    for step in blkdrv_pool::crash::CONTAINER_STEPS {
        let op = step.split(':').next().unwrap_or_default();
        prepare(&tp, op, &target)?;
        let (code, stderr) = run_child(&tp, op, &target, step)?;
        ensure!(
            code != 0 && code != 1,
            "{step}: child did not crash (exit {code}): {stderr}"
        );
        let mut pool = tp.open()?;
        let report = pool.check(false)?;
        ensure!(
            report.is_clean(),
            "{step}: drift after recovery: {report:?}"
        );
        keeper_intact(&tp, &mut pool, step)?;
        let outcome = redo_and_check(&tp, &mut pool, op, &target, step)?;
        ensure!(
            pool.check(false)?.is_clean(),
            "{step}: clean after redoing and cleaning up"
        );
        baseline.check(&[], &format!("{step}: after cleaning up"))?;
        let vols: Vec<String> = pool.volume_list()?.into_iter().map(|v| v.name).collect();
        ensure!(
            vols == ["keep"],
            "{step}: volumes after cleaning up (an orphaned anonymous one?): {vols:?}"
        );
        outcomes.push(format!("{step}: {outcome}"));
    }
    eprintln!(
        "container crash steps ({driver}, {:.1}s): {}",
        started.elapsed().as_secs_f64(),
        outcomes.join("; ")
    );
    Ok(())
}
