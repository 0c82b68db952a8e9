//! The backing cases (`DRIVER::backing::*`): what each driver's own tests used to write once per
//! driver (exclusive usage of a snapshot, loopback growth, deactivate and activate), here once
//! for every driver, with upper bounds where those tests had only lower ones.

use crate::campaign::{diff, layer_manifest};
use blkdrv_drivers::{Bytes, Granularity};
use blkdrv_pool::config::{AutoExtend, Backing};
use blkdrv_pool::{LayerName, LayerState, PoolError};
use kit::ensure;
use kit::pool::*;
use kit::rng::Rng;
use kit::MIB;
use std::fs;
use std::io::Write;
use std::path::Path;

fn ln(s: &str) -> LayerName {
    LayerName::new(s).expect("valid test name")
}

/// Writes `bytes` that neither compress nor deduplicate to `p`, then syncs it.
fn write_noise(p: &Path, bytes: u64, rng: &mut Rng) -> std::io::Result<()> {
    let mut f = fs::File::create(p)?;
    let mut chunk = vec![0u8; MIB as usize];
    for _ in 0..bytes.div_ceil(MIB) {
        rng.fill(&mut chunk);
        f.write_all(&chunk)?;
    }
    f.sync_all()
}

/// How far above what a layer wrote its measured size may be. File- and extent-granular
/// drivers count the data plus directory and inode metadata (1 MiB covers it); block-granular
/// ones (dm-thin, ZFS records) also count every block their filesystem's metadata writes
/// copied: 64 blocks more.
fn slack(g: Granularity) -> u64 {
    match g {
        Granularity::File { .. } | Granularity::Extent => MIB,
        Granularity::Block { size } => MIB + 64 * size.0,
    }
}

/// A layer of `lo` bytes measures in `[lo, lo + slack)`.
fn within(what: &str, got: u64, lo: u64, slack: u64) -> Result<(), String> {
    if (lo..lo + slack).contains(&got) {
        Ok(())
    } else {
        Err(format!(
            "{what}: {} measured, expected {} up to {} more",
            Bytes(got),
            Bytes(lo),
            Bytes(slack)
        ))
    }
}

/// 5 MiB written into a snapshot of a 100 MiB layer: the snapshot's size is the 5 MiB (active
/// and committed), not its parent's data; where the driver knows what a layer references, that
/// is 5 MiB more than its parent references. vfs copies the parent into every layer, so there the 100 MiB is the
/// layer's own (no capability tells a full copy from a copy-up stack: overlay and vfs report
/// the same granularity).
pub fn exclusive_usage(driver: &str) -> TestResult {
    let (mut rng, _) = Rng::for_case(
        "conformance",
        &format!("{driver}::backing::exclusive_usage_of_a_snapshot"),
    );
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    let slack = slack(pool.status()?.capabilities.granularity);
    let copies_parent = driver == "vfs";
    import_dir(&tp, &mut pool, "base", None, |p| {
        write_noise(&p.join("blob"), 100 * MIB, &mut rng)
    })?;
    pool.snapshot("base", &ln("c"), None)?;
    with_mount(&tp, &mut pool, "c", false, |p| {
        write_noise(&p.join("five"), 5 * MIB, &mut rng).map_err(|e| e.to_string())
    })?;
    let own = if copies_parent { 105 * MIB } else { 5 * MIB };
    // What the parent references includes what its filesystem takes where the driver counts
    // blocks (a dm-thin device maps its filesystem's own metadata too), so the child's figure
    // is bounded by the parent's, not by the 100 MiB alone.
    let base_referenced = pool.inspect("base")?.referenced_bytes;
    if let Some(r) = base_referenced {
        ensure!(
            r >= 100 * MIB,
            "base references {} of its 100 MiB",
            Bytes(r)
        );
    }
    let check = |i: &blkdrv_pool::LayerInfo, when: &str| -> Result<(), String> {
        let size = i.size_bytes.ok_or(format!("{when}: no size"))?;
        within(&format!("{when} layer"), size, own, slack)?;
        match (i.referenced_bytes, base_referenced) {
            (Some(r), Some(b)) => within(
                &format!("{when} layer, referenced beyond its parent's {}", Bytes(b)),
                r.saturating_sub(b),
                5 * MIB,
                slack,
            )?,
            (None, None) => {}
            (r, b) => return Err(format!("{when}: referenced {r:?}, the parent's {b:?}")),
        }
        Ok(())
    };
    check(&pool.inspect("c")?, "active")?;
    pool.commit("c")?;
    let c = pool.inspect("c")?;
    ensure!(c.state == LayerState::Committed, "committed: {}", c.state);
    check(&c, "committed")?;
    // The list shows what inspect shows (`layer ls` reads it).
    let listed = pool.list()?;
    let lc = listed
        .iter()
        .find(|l| l.name == "c")
        .ok_or("c not listed")?;
    ensure!(
        lc.size_bytes == c.size_bytes,
        "list says {:?}, inspect {:?}",
        lc.size_bytes,
        c.size_bytes
    );
    let base = pool.inspect("base")?.size_bytes.ok_or("base size")?;
    eprintln!(
        "{driver}: 5 MiB into a snapshot of 100 MiB: {:?} bytes, referenced {:?}; base {base} (slack {slack})",
        c.size_bytes, c.referenced_bytes
    );
    within("base", base, 100 * MIB, slack)?;
    Ok(())
}

/// A loopback pool grows its file when the driver's unallocated space runs low: the next
/// writer (here `layer umount` in a child, as a user runs it) grows the file by one step and
/// says so; the driver takes the room up, and the pool's config records the new size.
pub fn loopback_pool_grows(driver: &str) -> TestResult {
    let (mut rng, _) = Rng::for_case(
        "conformance",
        &format!("{driver}::backing::loopback_pool_grows_when_space_runs_low"),
    );
    let size = Bytes::mib(512);
    let tp = TestPool::with_options(
        driver,
        PoolOptions {
            size,
            autoextend: true,
            min_free_pct: 0,
        },
    )?;
    let mut pool = tp.open()?;
    import_dir(&tp, &mut pool, "base", None, |p| {
        fs::write(p.join("a"), "a")
    })?;
    pool.snapshot("base", &ln("filler"), None)?;
    let status = pool.status()?;
    let Backing::Loopback { files } = &status.backing else {
        return Err(format!("not a loopback pool: {:?}", status.backing).into());
    };
    let file = status.dir.join(&files[0].file);
    let before = fs::metadata(&file).map_err(|e| e.to_string())?.len();
    ensure!(before == size.0, "file of {before} bytes, made {size}");
    let total_before = status.space.total;
    let unallocated = |pool: &blkdrv_pool::Pool| -> Result<Bytes, String> {
        pool.status()
            .map_err(|e| e.to_string())?
            .space
            .unallocated
            .ok_or_else(|| format!("{driver} reports no unallocated space: it cannot grow"))
    };
    let threshold = before / 100 * 20;
    let target = tp.path("filler");
    pool.mount("filler", &target, false)?;
    // Fill until under the threshold. `status` is a reader and never grows the pool, so the
    // fill can be watched; sync(2) makes the space the data took visible (ZFS, btrfs chunks).
    let mut low = unallocated(&pool)?;
    for i in 0..16 {
        if low.0 < threshold {
            break;
        }
        write_noise(&target.join(format!("f{i}")), 32 * MIB, &mut rng)
            .map_err(|e| format!("fill: {e}"))?;
        nix::unistd::sync();
        low = unallocated(&pool)?;
    }
    ensure!(
        low.0 < threshold,
        "the fill left {low} unallocated, not under {}",
        Bytes(threshold)
    );
    drop(pool);
    let out = kit::child::layer_command(&tp, &["layer", "umount", "filler"])
        .output()
        .map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(out.status.success(), "umount: {stderr}");
    ensure!(stderr.contains("grew pool"), "says it grew: {stderr}");
    let after = fs::metadata(&file).map_err(|e| e.to_string())?.len();
    // One step: a quarter more (the pool's default policy), never past the ceiling.
    let step = AutoExtend::for_size(size, None)
        .next_size(Bytes(before), low)
        .ok_or("no growth due")?;
    ensure!(
        after == step.0,
        "file {before} -> {after} bytes, expected one step to {}",
        step.0
    );
    let pool = tp.open()?;
    let st = pool.status()?;
    ensure!(
        st.space.total > total_before,
        "the driver took the room up: total {total_before} -> {}",
        st.space.total
    );
    let now = st.space.unallocated.ok_or("no unallocated")?;
    ensure!(now > low, "unallocated {low} -> {now}");
    let Backing::Loopback { files } = &st.backing else {
        return Err("backing changed".into());
    };
    ensure!(
        files[0].size.0 == after,
        "config records {}, file is {after}",
        files[0].size
    );
    Ok(())
}

/// `pool deactivate` (what a shutdown does) takes every kernel object of the pool down
/// (mounts, loop devices; dm tables, an exported zpool) and is refused while a layer is
/// mounted; `pool activate` (or any command) brings it back with every layer, committed and
/// active, and their content.
pub fn deactivate_activate(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    import_dir(&tp, &mut pool, "base", None, |p| {
        fs::write(p.join("a"), "a")?;
        fs::create_dir_all(p.join("d"))?;
        fs::write(p.join("d/f"), "f")
    })?;
    derive(&tp, &mut pool, "base", "c", |p| {
        fs::write(p.join("kept"), "still here")
    })?;
    pool.snapshot("c", &ln("act"), None)?;
    with_mount(&tp, &mut pool, "act", false, |p| {
        fs::write(p.join("active"), "written").map_err(|e| e.to_string())
    })?;
    let trees = ["base", "c", "act"]
        .into_iter()
        .map(|n| Ok((n, layer_manifest(&tp, &mut pool, n)?)))
        .collect::<Result<Vec<_>, String>>()?;
    // Refused while a layer is mounted, and nothing taken down.
    let target = tp.path("m");
    pool.mount("act", &target, false)?;
    let err = pool
        .deactivate()
        .err()
        .ok_or("deactivate with a mounted layer must fail")?;
    ensure!(
        matches!(err, PoolError::Refused { .. }) && err.to_string().contains("mounted"),
        "refusal says mounted: {err}"
    );
    let mut pool = tp.open()?;
    ensure!(
        blkdrv_drivers::sys::mount::is_mountpoint(&target)?,
        "the refused deactivate kept the mount"
    );
    pool.umount("act", None)?;
    pool.deactivate()?;
    let left = kit::leaks::under(tp.dir());
    ensure!(left.is_empty(), "deactivate left: {left:?}");
    let code = kit::child::run_full(&kit::child::pool_args(&tp, &["pool", "activate", "t"]))?;
    ensure!(code == 0, "pool activate exit {code}");
    let mut pool = tp.open()?;
    ensure!(pool.check(false)?.is_clean(), "drift after activate");
    for (n, want) in &trees {
        let got = layer_manifest(&tp, &mut pool, n)?;
        ensure!(&got == want, "{n} after activate: {}", diff(want, &got));
    }
    ensure!(
        pool.inspect("c")?.state == LayerState::Committed
            && pool.inspect("act")?.state == LayerState::Active,
        "states kept"
    );
    // Still writable, and committable.
    with_mount(&tp, &mut pool, "act", false, |p| {
        fs::write(p.join("after"), "x").map_err(|e| e.to_string())
    })?;
    pool.commit("act")?;
    Ok(())
}
