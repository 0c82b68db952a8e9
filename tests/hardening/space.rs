//! Hardening: space. Space freed by `layer rm` that is not reusable yet (btrfs cleaner), and
//! loopback pools on xfs/ext4 that must grow and give freed blocks back to the host.

use crate::common::{fill, json, Env, MIB};
use crate::trial;
use libtest_mimic::Trial;

pub fn trials() -> Vec<Trial> {
    vec![trial(
        "space::btrfs_new_layer_waits_for_space_freed_by_rm",
        btrfs_new_layer_waits_for_space_freed_by_rm,
    )]
}

fn status(env: &Env) -> serde_json::Value {
    json(env, &["pool", "status", "t"])
}

fn space(env: &Env, field: &str) -> u64 {
    status(env)["space"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("pool status has no space.{field}"))
}

/// An empty committed layer "base" to take active layers of.
fn empty_base(env: &Env) {
    let src = env.path("empty");
    std::fs::create_dir_all(&src).unwrap();
    env.ok(&[
        "layer",
        "create",
        "base",
        "--from-dir",
        src.to_str().unwrap(),
        "--pool",
        "t",
    ]);
}

/// Active layer `name` on "base" holding `bytes` of data, unmounted again.
fn filled_layer(env: &Env, name: &str, bytes: u64) {
    env.ok(&["layer", "snapshot", "base", name, "--pool", "t"]);
    let m = env.mount_rw(name, name);
    fill(&m.join("blob"), bytes).unwrap();
    env.ok(&["layer", "umount", name, "--pool", "t"]);
}

/// Issue #11.6: btrfs deletes subvolumes in its cleaner thread, woken every commit interval
/// (30 s), so the space of a removed layer comes back late and a new layer was refused
/// meanwhile. Now `pool status` shows it as pending and the new layer waits for it.
fn btrfs_new_layer_waits_for_space_freed_by_rm() {
    let env = Env::with_pool(&[
        "--driver",
        "btrfs",
        "--size",
        "1G",
        "--min-free",
        "10",
        "--no-autoextend",
    ]);
    empty_base(&env);
    // Fill to under the threshold: about 5% of the pool left free.
    let total = space(&env, "total");
    let avail = space(&env, "available");
    let data = avail.saturating_sub(total / 100 * 5) / MIB * MIB;
    filled_layer(&env, "a", data);
    let o = env.run(&["layer", "snapshot", "base", "b", "--pool", "t"]);
    assert!(
        o.code != 0 && o.stderr.contains("not enough free"),
        "the filled pool refuses a new layer: {}",
        o.stderr
    );
    env.ok(&["layer", "rm", "a", "--pool", "t"]);
    let s = status(&env);
    let pending = s["space"]["pending"].as_u64();
    eprintln!(
        "after rm: available {} of {}, pending {pending:?}, cleanups {:?}",
        s["space"]["available"],
        s["space"]["total"],
        crate::common::detail(&s, "Pending Subvolume Cleanups")
    );
    let o = env.run(&["layer", "snapshot", "base", "b", "--pool", "t"]);
    eprintln!("{}", o.stderr);
    assert_eq!(
        o.code, 0,
        "a new layer right after rm of a {data}-byte layer: {}",
        o.stderr
    );
    let pending = pending.unwrap_or_else(|| panic!("pool status --json shows pending space: {s}"));
    // The cleaner may have run by itself in between (it wakes every 30 s); if it had not, the
    // new layer waited for it.
    if pending > data / 2 {
        assert!(o.stderr.contains("waited"), "{}", o.stderr);
    }
    let s = status(&env);
    assert_eq!(s["space"]["pending"].as_u64(), Some(0), "{s}");
    assert!(
        space(&env, "available") > total / 2,
        "the removed layer's space is free again"
    );
}
