//! containerd's snapshot model on the pool (`Pool::snapshot_*`), on every driver: the contract
//! containerd's snapshotters and its metadata layer expect (kinds, error variants, labels,
//! times, usage, keys as containerd sends them), that CLI layers and snapshot layers never see
//! each other, and that a crash between an operation's steps leaves a consistent pool.
//!
//! Mounts are performed here the way containerd performs them: from the specs alone, in this
//! process, by mount(2) (see [`spec_mount`]).

use blkdrv_pool::{
    Access, ExportPolicy, Granularity, LabelUpdate, Labels, LayerOwner, MountSpec, Pool, PoolError,
    SnapshotKind, Source, MAX_KEY_BYTES,
};
use kit::ctrmount::ContainerMount;
use kit::ensure;
use kit::pool::*;
use std::fs;
use std::path::{Path, PathBuf};

/// Set in a child's environment: one snapshot operation to run (JSON [`ChildOp`]); with
/// `BLKDRV_CRASH_AT` it dies at that step. The CLI has no snapshot commands, so the conformance
/// binary runs the operation itself.
const ENV_OP: &str = "BLKDRV_TEST_SNAPSHOT_OP";

/// One operation for a child: `{root, pool, op, key, other}` (`other`: the parent for
/// prepare, the name for commit).
struct ChildOp {
    root: PathBuf,
    pool: String,
    op: String,
    key: String,
    other: Option<String>,
}

impl ChildOp {
    fn to_json(&self) -> String {
        serde_json::json!({
            "root": self.root.to_str(),
            "pool": self.pool,
            "op": self.op,
            "key": self.key,
            "other": self.other,
        })
        .to_string()
    }

    fn from_json(s: &str) -> Option<ChildOp> {
        let v: serde_json::Value = serde_json::from_str(s).ok()?;
        let text = |k: &str| v[k].as_str().map(str::to_string);
        Some(ChildOp {
            root: PathBuf::from(text("root")?),
            pool: text("pool")?,
            op: text("op")?,
            key: text("key")?,
            other: text("other"),
        })
    }
}

/// In snapshot-child mode, runs the operation and exits (0 on success, 1 on failure); else
/// returns. Called first thing in `main`.
pub fn maybe_run_child() {
    let Ok(op) = std::env::var(ENV_OP) else {
        return;
    };
    let op = ChildOp::from_json(&op).expect("child op is JSON");
    let run = || -> Result<(), PoolError> {
        let name = blkdrv_pool::PoolName::new(&op.pool)?;
        let mut pool = Pool::open(&blkdrv_pool::Root::new(&op.root), &name, Access::Write)?;
        match op.op.as_str() {
            "prepare" => pool
                .snapshot_prepare(
                    &op.key,
                    op.other.as_deref(),
                    Labels::new(),
                    ExportPolicy::default(),
                )
                .map(drop),
            "commit" => pool
                .snapshot_commit(op.other.as_deref().unwrap_or(""), &op.key, Labels::new())
                .map(drop),
            "remove" => pool.snapshot_remove(&op.key),
            other => Err(PoolError::Invalid(format!("no snapshot op {other}"))),
        }
    };
    match run() {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("snapshot child {}: {e}", op.op);
            std::process::exit(1);
        }
    }
}

/// Runs `op` in a child of this binary, crashing at `crash_at`; returns its exit code (an abort
/// is 128 + SIGABRT).
fn run_child(
    tp: &TestPool,
    op: &str,
    key: &str,
    other: Option<&str>,
    crash_at: &str,
) -> Result<i32, String> {
    let spec = ChildOp {
        root: tp.root.path.clone(),
        pool: tp.name.to_string(),
        op: op.into(),
        key: key.into(),
        other: other.map(Into::into),
    };
    let out = std::process::Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
        .env(ENV_OP, spec.to_json())
        .env(blkdrv_pool::crash::ENV, crash_at)
        .env_remove(kit::child::ENV_CHILD)
        .env_remove(kit::child::ENV_SCRIPT)
        .env("BLKDRV_CONFIG", "/nonexistent")
        .output()
        .map_err(|e| format!("spawn snapshot child: {e}"))?;
    Ok(out.status.code().unwrap_or(128 + 6))
}

/// A snapshot's one mount made from its specs alone, as containerd makes it.
fn spec_mount(specs: &[MountSpec], target: &Path) -> Result<ContainerMount, String> {
    let [spec] = specs else {
        return Err(format!("expected one mount, got {specs:?}"));
    };
    ContainerMount::new(&spec.fstype, &spec.source, &spec.options, target)
}

fn labels(kv: &[(&str, &str)]) -> Labels {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const MIB: u64 = 1 << 20;

/// `got` in `[lo, lo + slack)`.
fn within(what: &str, got: u64, lo: u64, slack: u64) -> TestResult {
    ensure!(
        (lo..lo + slack).contains(&got),
        "{what}: {got} bytes measured, expected {lo} up to {slack} more"
    );
    Ok(())
}

const NO_POLICY: ExportPolicy = ExportPolicy { dev: false };

fn is_erofs(r: std::io::Result<()>) -> bool {
    matches!(r, Err(e) if e.raw_os_error() == Some(nix::libc::EROFS))
}

/// Keys as containerd's metadata layer sends them: namespace/sequence/key, spaces, quotes,
/// commas, a chain ID, several hundred bytes.
fn odd_keys() -> Vec<String> {
    vec![
        "default/17/extract-123456789-AbCd sha256:abc".to_string(),
        "k8s.io/3/\"quoted\" 'key', with commas/and/slashes".to_string(),
        format!("default/18/long {}", "x/y z".repeat(70)),
        "default/19/ünïcödé ✓".to_string(),
    ]
}

/// Prepare, Mounts, Commit, View and Remove with their error variants, and the content the
/// mounts show: a file written through an active snapshot's mount is in its committed form,
/// in a view of it and in a child, and never in the parent.
pub fn prepare_commit_view_remove(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    let base_key = "default/1/extract-1 sha256:base";
    let l1 = labels(&[("containerd.io/snapshot.ref", "sha256:base")]);
    let specs = pool.snapshot_prepare(base_key, None, l1.clone(), NO_POLICY)?;
    let info = pool.snapshot_stat(base_key)?;
    ensure!(info.kind == SnapshotKind::Active, "kind {:?}", info.kind);
    ensure!(info.parent.is_none(), "parent {:?}", info.parent);
    ensure!(info.labels == l1, "labels {:?}", info.labels);
    ensure!(
        info.created == info.updated,
        "created == updated at prepare: {info:?}"
    );
    {
        let m = spec_mount(&specs, &tp.path("m-base"))?;
        fs::write(m.path().join("a"), "base").map_err(|e| e.to_string())?;
        fs::create_dir_all(m.path().join("etc")).map_err(|e| e.to_string())?;
    }
    // Mounts of an active snapshot: the same layer again, read-write.
    {
        let again = pool.snapshot_mounts(base_key, NO_POLICY)?;
        let m = spec_mount(&again, &tp.path("m-base2"))?;
        ensure!(
            read(&m.path().join("a"))? == "base",
            "Mounts shows the written file"
        );
    }

    let err = pool
        .snapshot_prepare(base_key, None, Labels::new(), NO_POLICY)
        .err()
        .ok_or("duplicate Prepare must fail")?;
    ensure!(
        matches!(err, PoolError::SnapshotExists(_)),
        "duplicate Prepare: {err}"
    );
    let err = pool
        .snapshot_prepare("k2", Some("no such parent"), Labels::new(), NO_POLICY)
        .err()
        .ok_or("Prepare on a missing parent must fail")?;
    ensure!(
        matches!(err, PoolError::SnapshotNotFound(_)),
        "missing parent: {err}"
    );
    let err = pool
        .snapshot_prepare("k2", Some(base_key), Labels::new(), NO_POLICY)
        .err()
        .ok_or("Prepare on an active parent must fail")?;
    ensure!(
        matches!(err, PoolError::Refused { .. }),
        "active parent: {err}"
    );
    let err = pool
        .snapshot_view("k2", base_key, Labels::new(), NO_POLICY)
        .err()
        .ok_or("View of an active parent must fail")?;
    ensure!(
        matches!(err, PoolError::Refused { .. }),
        "view of active: {err}"
    );
    // A failed Prepare leaves nothing: the key is still free.
    ensure!(
        matches!(
            pool.snapshot_stat("k2"),
            Err(PoolError::SnapshotNotFound(_))
        ),
        "a failed Prepare left a snapshot"
    );

    let base = "sha256:base-chain";
    let l2 = labels(&[("containerd.io/snapshot.ref", "sha256:base-chain")]);
    let err = pool
        .snapshot_commit(base, "no such key", Labels::new())
        .err()
        .ok_or("Commit of a missing key must fail")?;
    ensure!(
        matches!(err, PoolError::SnapshotNotFound(_)),
        "commit missing: {err}"
    );
    let c = pool.snapshot_commit(base, base_key, l2.clone())?;
    ensure!(
        c.kind == SnapshotKind::Committed,
        "kind after commit {:?}",
        c.kind
    );
    ensure!(c.key == base, "committed under its name: {}", c.key);
    ensure!(
        c.labels == l2,
        "commit labels replace the active's: {:?}",
        c.labels
    );
    ensure!(
        c.created == c.updated && c.created >= info.created,
        "commit stamps a new created: {c:?} vs {info:?}"
    );
    ensure!(
        matches!(
            pool.snapshot_stat(base_key),
            Err(PoolError::SnapshotNotFound(_))
        ),
        "the active key is gone after commit"
    );
    let err = pool
        .snapshot_commit(base, base_key, Labels::new())
        .err()
        .ok_or("Commit onto a taken name must fail")?;
    ensure!(
        matches!(err, PoolError::SnapshotExists(_)),
        "name taken: {err}"
    );
    let err = pool
        .snapshot_commit("other", base, Labels::new())
        .err()
        .ok_or("Commit of a committed snapshot must fail")?;
    ensure!(
        matches!(err, PoolError::Refused { .. }),
        "commit committed: {err}"
    );
    let err = pool
        .snapshot_mounts(base, NO_POLICY)
        .err()
        .ok_or("Mounts of a committed snapshot must fail")?;
    ensure!(
        matches!(err, PoolError::Refused { .. }),
        "mounts committed: {err}"
    );
    let err = pool
        .snapshot_mounts("no such key", NO_POLICY)
        .err()
        .ok_or("Mounts of a missing key must fail")?;
    ensure!(
        matches!(err, PoolError::SnapshotNotFound(_)),
        "mounts missing: {err}"
    );

    // A view: read-only, the parent's content, no layer of its own.
    let layers_before = pool.list()?.len();
    let vspecs = pool.snapshot_view("view 1", base, labels(&[("v", "1")]), NO_POLICY)?;
    ensure!(pool.list()?.len() == layers_before, "a view made a layer");
    let v = pool.snapshot_stat("view 1")?;
    ensure!(v.kind == SnapshotKind::View, "view kind {:?}", v.kind);
    ensure!(
        v.parent.as_deref() == Some(base),
        "view parent {:?}",
        v.parent
    );
    {
        let m = spec_mount(&vspecs, &tp.path("m-view"))?;
        ensure!(
            read(&m.path().join("a"))? == "base",
            "view shows the parent's file"
        );
        ensure!(
            is_erofs(fs::write(m.path().join("x"), "x")),
            "a view is read-only"
        );
    }
    {
        let again = pool.snapshot_mounts("view 1", NO_POLICY)?;
        let m = spec_mount(&again, &tp.path("m-view2"))?;
        ensure!(
            is_erofs(fs::write(m.path().join("a"), "x")),
            "Mounts of a view is read-only"
        );
    }
    let err = pool
        .snapshot_view("view 1", base, Labels::new(), NO_POLICY)
        .err()
        .ok_or("duplicate View must fail")?;
    ensure!(
        matches!(err, PoolError::SnapshotExists(_)),
        "duplicate view: {err}"
    );
    let err = pool
        .snapshot_view("view 2", "no such parent", Labels::new(), NO_POLICY)
        .err()
        .ok_or("View of a missing parent must fail")?;
    ensure!(
        matches!(err, PoolError::SnapshotNotFound(_)),
        "view missing: {err}"
    );

    // A child: sees the parent, writes only to itself.
    let cspecs = pool.snapshot_prepare("default/2/c1", Some(base), Labels::new(), NO_POLICY)?;
    ensure!(
        pool.snapshot_stat("default/2/c1")?.parent.as_deref() == Some(base),
        "child's parent"
    );
    {
        let m = spec_mount(&cspecs, &tp.path("m-child"))?;
        ensure!(
            read(&m.path().join("a"))? == "base",
            "child sees the parent's file"
        );
        fs::write(m.path().join("a"), "child").map_err(|e| e.to_string())?;
        fs::write(m.path().join("etc/new"), "n").map_err(|e| e.to_string())?;
    }
    {
        let again = pool.snapshot_mounts("view 1", NO_POLICY)?;
        let m = spec_mount(&again, &tp.path("m-view3"))?;
        ensure!(
            read(&m.path().join("a"))? == "base",
            "child's write leaked into the parent"
        );
        ensure!(
            !m.path().join("etc/new").exists(),
            "child's file leaked into the parent"
        );
    }

    // The view and the child.
    let err = pool
        .snapshot_remove(base)
        .err()
        .ok_or("Remove with children must fail")?;
    ensure!(
        matches!(err, PoolError::SnapshotHasChildren { children: 2, .. }),
        "remove with children: {err}"
    );
    ensure!(
        err.to_string().contains("remove"),
        "GC needs 'remove' in: {err}"
    );
    let err = pool
        .snapshot_remove("no such key")
        .err()
        .ok_or("Remove of a missing key must fail")?;
    ensure!(
        matches!(err, PoolError::SnapshotNotFound(_)),
        "remove missing: {err}"
    );
    pool.snapshot_remove("view 1")?;
    ensure!(
        pool.list()?.len() == layers_before + 1,
        "removing a view removed a layer"
    );
    pool.snapshot_remove("default/2/c1")?;
    pool.snapshot_remove(base)?;
    ensure!(
        pool.snapshot_list()?.is_empty(),
        "all removed: {:?}",
        pool.snapshot_list()?
    );
    ensure!(pool.list()?.is_empty(), "layers left: {:?}", pool.list()?);
    let report = pool.check(false)?;
    ensure!(report.is_clean(), "check after removal: {report:?}");
    Ok(())
}

/// Keys and names as containerd sends them round-trip through every operation and the list;
/// empty keys, NUL and keys over the limit are refused as invalid.
pub fn keys_with_slashes_spaces_and_quotes(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    let keys = odd_keys();
    ensure!(keys[2].len() > 300, "a long key: {}", keys[2].len());
    let parent = format!("{} committed", keys[2]);
    pool.snapshot_prepare(&keys[0], None, Labels::new(), NO_POLICY)?;
    pool.snapshot_commit(&parent, &keys[0], Labels::new())?;
    pool.snapshot_prepare(&keys[1], Some(&parent), labels(&[("k", "v")]), NO_POLICY)?;
    pool.snapshot_view(&keys[2], &parent, Labels::new(), NO_POLICY)?;
    pool.snapshot_prepare(&keys[3], Some(&parent), Labels::new(), NO_POLICY)?;
    let mut want = vec![
        parent.clone(),
        keys[1].clone(),
        keys[2].clone(),
        keys[3].clone(),
    ];
    want.sort();
    let mut got: Vec<String> = pool.snapshot_list()?.into_iter().map(|s| s.key).collect();
    got.sort();
    ensure!(got == want, "list: {got:?}\nwant {want:?}");
    for k in &want {
        ensure!(pool.snapshot_stat(k)?.key == *k, "stat of {k:?}");
    }
    ensure!(
        pool.snapshot_stat(&keys[1])?.parent.as_deref() == Some(parent.as_str()),
        "parent by its long name"
    );
    // The same keys from a read-only handle in another open (how a second reader sees them).
    let reader = Pool::open(&tp.root, &tp.name, Access::Read)?;
    let mut seen: Vec<String> = reader.snapshot_list()?.into_iter().map(|s| s.key).collect();
    seen.sort();
    ensure!(seen == want, "reader's list: {seen:?}");
    drop(reader);

    let max = "k".repeat(MAX_KEY_BYTES);
    pool.snapshot_prepare(&max, None, Labels::new(), NO_POLICY)?;
    pool.snapshot_remove(&max)?;
    let over = "k".repeat(MAX_KEY_BYTES + 1);
    for bad in ["", "a\0b", over.as_str()] {
        let err = pool
            .snapshot_prepare(bad, None, Labels::new(), NO_POLICY)
            .err()
            .ok_or(format!("key of {} bytes accepted", bad.len()))?;
        ensure!(matches!(err, PoolError::Invalid(_)), "bad key: {err}");
        let err = pool
            .snapshot_commit(bad, &keys[1], Labels::new())
            .err()
            .ok_or("bad commit name accepted")?;
        ensure!(matches!(err, PoolError::Invalid(_)), "bad name: {err}");
    }
    for k in [&keys[1], &keys[2], &keys[3], &parent] {
        pool.snapshot_remove(k)?;
    }
    ensure!(pool.list()?.is_empty(), "layers left: {:?}", pool.list()?);
    Ok(())
}

/// Update: named keys set or deleted, no paths replace all; updated moves, created never;
/// Stat of a missing key is SnapshotNotFound.
pub fn update_labels(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    let key = "default/5/extract-5 sha256:x";
    pool.snapshot_prepare(
        key,
        None,
        labels(&[("a", "1"), ("b", "2"), ("c", "3")]),
        NO_POLICY,
    )?;
    let before = pool.snapshot_stat(key)?;
    let u = pool.snapshot_update(
        key,
        labels(&[("a", "new"), ("z", "not named")]),
        LabelUpdate::Keys(vec!["a".into(), "b".into()]),
    )?;
    ensure!(
        u.labels == labels(&[("a", "new"), ("c", "3")]),
        "named keys: {:?}",
        u.labels
    );
    ensure!(
        u.created == before.created,
        "created changed: {u:?} vs {before:?}"
    );
    ensure!(
        u.updated > before.updated,
        "updated did not move: {u:?} vs {before:?}"
    );
    ensure!(
        pool.snapshot_stat(key)? == u,
        "Stat agrees with Update's answer"
    );
    let u2 = pool.snapshot_update(key, labels(&[("only", "this")]), LabelUpdate::ReplaceAll)?;
    ensure!(
        u2.labels == labels(&[("only", "this")]),
        "replace all: {:?}",
        u2.labels
    );
    ensure!(
        u2.updated >= u.updated && u2.created == before.created,
        "times: {u2:?}"
    );
    let u3 = pool.snapshot_update(key, Labels::new(), LabelUpdate::ReplaceAll)?;
    ensure!(
        u3.labels.is_empty(),
        "replace with nothing: {:?}",
        u3.labels
    );
    // Labels survive the handle.
    pool.snapshot_update(key, labels(&[("p", "q")]), LabelUpdate::ReplaceAll)?;
    drop(pool);
    let reader = Pool::open(&tp.root, &tp.name, Access::Read)?;
    ensure!(
        reader.snapshot_stat(key)?.labels == labels(&[("p", "q")]),
        "labels persisted"
    );
    let err = reader
        .snapshot_stat("missing")
        .err()
        .ok_or("Stat of a missing key must fail")?;
    ensure!(
        matches!(err, PoolError::SnapshotNotFound(_)),
        "stat missing: {err}"
    );
    drop(reader);
    let mut pool = tp.open()?;
    let err = pool
        .snapshot_update("missing", Labels::new(), LabelUpdate::ReplaceAll)
        .err()
        .ok_or("Update of a missing key must fail")?;
    ensure!(
        matches!(err, PoolError::SnapshotNotFound(_)),
        "update missing: {err}"
    );
    pool.snapshot_remove(key)?;
    Ok(())
}

/// Usage: an active snapshot's own delta (not its parent's), a committed one's as stored at
/// commit (what the layer recorded), a view's 0; readable from a read-only handle.
pub fn usage_is_the_own_delta(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    // As the backing cases bound a layer's measured size: data plus the metadata it costs.
    let slack = match pool.status()?.capabilities.granularity {
        Granularity::File { .. } | Granularity::Extent => MIB,
        Granularity::Block { size } => MIB + 64 * size.0,
    };
    let specs = pool.snapshot_prepare("base-key", None, Labels::new(), NO_POLICY)?;
    {
        let m = spec_mount(&specs, &tp.path("m-base"))?;
        kit::cli::write_file(&m.path().join("big"), 4 << 20).map_err(|e| e.to_string())?;
    }
    pool.snapshot_commit("base", "base-key", Labels::new())?;
    let stored = pool.snapshot_usage("base")?;
    ensure!(
        stored.bytes >= 4 << 20,
        "committed base counts its 4 MiB: {stored:?}"
    );
    // Stored: what the layer recorded at commit.
    let layer = pool
        .list()?
        .into_iter()
        .find(|l| l.owner == Some(LayerOwner::Containerd))
        .ok_or("the base snapshot's layer is listed")?;
    ensure!(
        layer.size_bytes == Some(stored.bytes),
        "stored usage {stored:?} vs layer {layer:?}"
    );

    let cspecs = pool.snapshot_prepare("child", Some("base"), Labels::new(), NO_POLICY)?;
    // vfs copies the parent into the child (its own bytes, removed with it); the others share.
    let copied = if driver == "vfs" { 4 * MIB } else { 0 };
    let fresh = pool.snapshot_usage("child")?;
    within("a fresh child", fresh.bytes, copied, slack)?;
    {
        let m = spec_mount(&cspecs, &tp.path("m-child"))?;
        kit::cli::write_file(&m.path().join("own"), MIB).map_err(|e| e.to_string())?;
    }
    let active = pool.snapshot_usage("child")?;
    within("the child's own MiB", active.bytes, copied + MIB, slack)?;
    pool.snapshot_view("v", "base", Labels::new(), NO_POLICY)?;
    ensure!(pool.snapshot_usage("v")?.bytes == 0, "a view costs nothing");
    drop(pool);
    let reader = Pool::open(&tp.root, &tp.name, Access::Read)?;
    ensure!(
        reader.snapshot_usage("base")? == stored,
        "stored usage from a reader"
    );
    ensure!(
        reader.snapshot_usage("child")?.bytes >= 1 << 20,
        "live usage from a reader"
    );
    let err = reader
        .snapshot_usage("missing")
        .err()
        .ok_or("Usage of a missing key must fail")?;
    ensure!(
        matches!(err, PoolError::SnapshotNotFound(_)),
        "usage missing: {err}"
    );
    drop(reader);
    let mut pool = tp.open()?;
    pool.snapshot_commit("child-c", "child", Labels::new())?;
    let c = pool.snapshot_usage("child-c")?;
    within("the committed child", c.bytes, copied + MIB, slack)?;
    ensure!(
        pool.snapshot_usage("child-c")? == c,
        "stored usage does not change"
    );
    for k in ["v", "child-c", "base"] {
        pool.snapshot_remove(k)?;
    }
    Ok(())
}

/// CLI layers never appear to containerd, and containerd's layers are out of the CLI's reach:
/// not a parent, not listed, not removable or committable by name or id; `layer ls` marks
/// them as containerd's; `pool check` finds nothing wrong.
pub fn cli_and_snapshot_layers_stay_apart(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    let src = tp.path("src");
    fs::write(src.join("f"), "cli").map_err(|e| e.to_string())?;
    pool.create(
        &blkdrv_pool::LayerName::new("base").map_err(|e| e.to_string())?,
        None,
        Source::Dir(&src),
        None,
        &mut |_| {},
    )?;
    ensure!(
        pool.snapshot_list()?.is_empty(),
        "a CLI layer listed as a snapshot"
    );
    let err = pool
        .snapshot_prepare("k", Some("base"), Labels::new(), NO_POLICY)
        .err()
        .ok_or("a CLI layer is no parent for containerd")?;
    ensure!(
        matches!(err, PoolError::SnapshotNotFound(_)),
        "CLI parent: {err}"
    );
    ensure!(
        matches!(
            pool.snapshot_stat("base"),
            Err(PoolError::SnapshotNotFound(_))
        ),
        "Stat reaches a CLI layer"
    );
    ensure!(
        matches!(
            pool.snapshot_remove("base"),
            Err(PoolError::SnapshotNotFound(_))
        ),
        "Remove reaches a CLI layer"
    );

    pool.snapshot_prepare("k", None, Labels::new(), NO_POLICY)?;
    pool.snapshot_commit("c", "k", Labels::new())?;
    pool.snapshot_prepare("a", Some("c"), Labels::new(), NO_POLICY)?;
    let mine: Vec<_> = pool
        .list()?
        .into_iter()
        .filter(|l| l.owner == Some(LayerOwner::Containerd))
        .collect();
    ensure!(mine.len() == 2, "two containerd layers: {mine:?}");
    ensure!(
        pool.list()?.iter().filter(|l| l.owner.is_none()).count() == 1,
        "the CLI layer has no owner"
    );
    // `layer ls` names the child's parent as it names the parent.
    let child = mine
        .iter()
        .find(|l| l.parent_id.is_some())
        .ok_or("a child")?;
    let parent = mine
        .iter()
        .find(|l| l.parent_id.is_none())
        .ok_or("a parent")?;
    ensure!(
        child.parent.as_deref() == Some(parent.name.as_str()) && parent.name.contains("containerd"),
        "parent shown as {:?}, the parent as {:?}",
        child.parent,
        parent.name
    );
    for l in &mine {
        ensure!(l.names.is_empty(), "a containerd layer has a name: {l:?}");
        let id = l.id.to_string();
        for what in [l.name.as_str(), id.as_str()] {
            ensure!(
                matches!(pool.remove(what, true), Err(PoolError::LayerNotFound(_))),
                "layer rm {what:?} reached a containerd layer"
            );
            ensure!(
                matches!(pool.commit(what), Err(PoolError::LayerNotFound(_))),
                "layer commit {what:?} reached a containerd layer"
            );
            ensure!(
                pool.inspect(what).is_err(),
                "layer inspect {what:?} reached it"
            );
        }
        ensure!(
            pool.snapshot(
                &l.name,
                &blkdrv_pool::LayerName::new("x").map_err(|e| e.to_string())?,
                None
            )
            .is_err(),
            "layer snapshot on a containerd layer"
        );
    }
    drop(pool);
    // The CLI itself, in a child: `layer rm` by the displayed name and by id fails, and
    // `layer ls --json` marks the layers.
    for what in [mine[0].name.clone(), mine[0].id.to_string()] {
        let out = kit::child::layer_command(&tp, &["layer", "rm", &what])
            .output()
            .map_err(|e| e.to_string())?;
        ensure!(!out.status.success(), "`layer rm {what}` succeeded");
    }
    let out = kit::child::layer_command(&tp, &["--json", "layer", "ls"])
        .output()
        .map_err(|e| e.to_string())?;
    ensure!(
        out.status.success(),
        "layer ls: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ls: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let owners: Vec<&str> = ls
        .as_array()
        .ok_or("layer ls --json is a list")?
        .iter()
        .filter_map(|l| l["owner"].as_str())
        .collect();
    ensure!(
        owners == ["containerd", "containerd"],
        "owners in layer ls --json: {owners:?}"
    );
    let mut pool = tp.open()?;
    let report = pool.check(false)?;
    ensure!(
        report.is_clean(),
        "check with both kinds of layers: {report:?}"
    );
    ensure!(
        pool.snapshot_list()?.len() == 2,
        "both snapshots still there"
    );
    pool.snapshot_remove("a")?;
    pool.snapshot_remove("c")?;
    ensure!(
        pool.list()?.len() == 1,
        "only the CLI layer is left: {:?}",
        pool.list()?
    );
    pool.remove("base", false)?;
    Ok(())
}

/// A process killed at each step of Prepare, Commit and Remove: the reopened pool is
/// consistent (no row without its layer, no layer of containerd's without its row, no orphan),
/// a Prepare is all or nothing, a Commit and a Remove are rolled forward, and a committed
/// snapshot's usage was stored.
pub fn crash_between_steps(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let steps: Vec<(&str, &str)> = vec![
        ("prepare", "prepare:intent"),
        ("prepare", "prepare:object"),
        ("commit", "snapshot-commit:intent"),
        ("commit", "commit:object"),
        ("remove", "snapshot-remove:intent"),
        ("remove", "remove:object"),
    ];
    {
        let mut pool = tp.open()?;
        let specs = pool.snapshot_prepare("base-key", None, Labels::new(), NO_POLICY)?;
        {
            let m = spec_mount(&specs, &tp.path("m"))?;
            fs::write(m.path().join("f"), "base").map_err(|e| e.to_string())?;
        }
        pool.snapshot_commit("base", "base-key", Labels::new())?;
    }
    let victim = "default/9/extract-9 sha256:victim";
    for (op, step) in steps {
        {
            let mut pool = tp.open()?;
            match op {
                "commit" | "remove" => {
                    pool.snapshot_prepare(victim, Some("base"), Labels::new(), NO_POLICY)?;
                }
                _ => {}
            }
        }
        let other = match op {
            "prepare" => Some("base"),
            "commit" => Some("victim-committed"),
            _ => None,
        };
        let code = run_child(&tp, op, victim, other, step)?;
        ensure!(
            code != 0 && code != 1,
            "{step}: child did not crash (exit {code})"
        );
        let mut pool = tp.open()?;
        let report = pool.check(false)?;
        ensure!(
            report.is_clean(),
            "{step}: drift after recovery: {report:?}"
        );
        consistent(&pool, step)?;
        let present = |k: &str| pool.snapshot_stat(k).is_ok();
        match op {
            "prepare" => ensure!(!present(victim), "{step}: half a Prepare is visible"),
            "commit" => {
                ensure!(
                    !present(victim),
                    "{step}: the active key survived its commit"
                );
                let c = pool.snapshot_stat("victim-committed")?;
                ensure!(
                    c.kind == SnapshotKind::Committed,
                    "{step}: rolled forward: {c:?}"
                );
                let layer = pool
                    .list()?
                    .into_iter()
                    .filter(|l| l.owner.is_some())
                    .max_by_key(|l| l.id)
                    .ok_or("victim's layer")?;
                ensure!(
                    layer.size_bytes.is_some(),
                    "{step}: usage stored at the rolled-forward commit"
                );
                ensure!(
                    Some(pool.snapshot_usage("victim-committed")?.bytes) == layer.size_bytes,
                    "{step}: stored usage is the layer's"
                );
                pool.snapshot_remove("victim-committed")?;
            }
            _ => ensure!(!present(victim), "{step}: a removed snapshot came back"),
        }
        ensure!(
            pool.snapshot_list()?
                .iter()
                .map(|s| s.key.as_str())
                .collect::<Vec<_>>()
                == ["base"],
            "{step}: only base left: {:?}",
            pool.snapshot_list()?
        );
        ensure!(
            pool.list()?.len() == 1,
            "{step}: layers: {:?}",
            pool.list()?
        );
        // The base is intact.
        let specs = pool.snapshot_view("look", "base", Labels::new(), NO_POLICY)?;
        {
            let m = spec_mount(&specs, &tp.path("look"))?;
            ensure!(read(&m.path().join("f"))? == "base", "{step}: base content");
        }
        pool.snapshot_remove("look")?;
    }
    let mut pool = tp.open()?;
    pool.snapshot_remove("base")?;
    ensure!(pool.check(false)?.is_clean(), "clean at the end");
    Ok(())
}

/// Every snapshot row has its layer, every layer of containerd's is some row's (a view shares
/// its parent's), and none is in flight.
fn consistent(pool: &Pool, when: &str) -> TestResult {
    let layers = pool.list()?;
    let snaps = pool.snapshot_list()?;
    let owned: Vec<_> = layers.iter().filter(|l| l.owner.is_some()).collect();
    let with_layer = snaps
        .iter()
        .filter(|s| s.kind != SnapshotKind::View)
        .count();
    ensure!(
        owned.len() == with_layer,
        "{when}: {} containerd layers for {with_layer} snapshots with a layer: {owned:?} {snaps:?}",
        owned.len()
    );
    for l in &layers {
        ensure!(
            l.state.is_settled(),
            "{when}: layer {} left {}",
            l.name,
            l.state
        );
    }
    Ok(())
}

/// A process in a mount namespace of its own, holding copies of the mounts there were when it
/// started (as a container's namespace holds the host's): killed and reaped when dropped.
struct NsHolder {
    child: std::process::Child,
}

impl NsHolder {
    fn start() -> Result<NsHolder, String> {
        let child = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sleep", "120"])
            .spawn()
            .map_err(|e| format!("spawn unshare: {e}"))?;
        let holder = NsHolder { child };
        let own = fs::read_link("/proc/self/ns/mnt").map_err(|e| e.to_string())?;
        let theirs = format!("/proc/{}/ns/mnt", holder.child.id());
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        // unshare(1) execs sleep once its namespace is made: wait for that.
        while fs::read_link(&theirs).map_or(true, |l| l == own) {
            if std::time::Instant::now() > until {
                return Err("the namespace holder never got its namespace".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        Ok(holder)
    }
}

impl Drop for NsHolder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Snapshots whose layers are busy (mounted only in another process's namespace, which
/// containerd's GC cannot see) are gone for containerd at once; their layers go when free:
/// a child's at Cleanup; a parent removed while its child's removal is pending waits for it,
/// and the next writer removes both, the child first. A mount in this namespace is refused
/// (the snapshot stays whole) or deferred likewise.
pub fn busy_remove_is_deferred(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    pool.snapshot_prepare("base-key", None, Labels::new(), NO_POLICY)?;
    pool.snapshot_commit("base", "base-key", Labels::new())?;

    let specs = pool.snapshot_prepare("k", Some("base"), Labels::new(), NO_POLICY)?;
    let m = spec_mount(&specs, &tp.path("here"))?;
    match pool.snapshot_remove("k") {
        // Refused (a mount blkdrv did not make, in its own namespace): the snapshot stays whole.
        Err(e) => {
            ensure!(
                pool.snapshot_stat("k").is_ok(),
                "a refused Remove lost the snapshot: {e}"
            );
            eprintln!("{driver}: Remove of a snapshot mounted here: refused: {e}");
            drop(m);
            pool.snapshot_remove("k")?;
        }
        // Deferred (device-mapper lets the kernel remove an open device when it closes).
        Ok(()) => {
            ensure!(
                matches!(pool.snapshot_stat("k"), Err(PoolError::SnapshotNotFound(_))),
                "a deferred Remove left the snapshot"
            );
            eprintln!("{driver}: Remove of a snapshot mounted here: deferred");
            drop(m);
            pool.snapshot_cleanup()?;
        }
    }
    ensure!(
        pool.list()?.len() == 1,
        "only base left: {:?}",
        pool.list()?
    );

    for round in ["cleanup", "reopen"] {
        let specs = pool.snapshot_prepare("c", Some("base"), Labels::new(), NO_POLICY)?;
        let m = spec_mount(&specs, &tp.path(&format!("held-{round}")))?;
        let holder = NsHolder::start()?;
        drop(m);
        pool.snapshot_remove("c")?;
        ensure!(
            matches!(pool.snapshot_stat("c"), Err(PoolError::SnapshotNotFound(_))),
            "{round}: removed snapshot still there"
        );
        let left = pool.list()?.len();
        eprintln!("{driver}: {round}: Remove of a snapshot busy elsewhere left {left} layer(s)");
        // 2: deferred; 1: a driver that could remove it under the other namespace's mount.
        ensure!(left == 1 || left == 2, "{round}: {left} layers");
        if round == "reopen" {
            pool.snapshot_remove("base")?;
            ensure!(pool.snapshot_list()?.is_empty(), "{round}: snapshots left");
        }
        pool.snapshot_cleanup()?;
        ensure!(
            pool.check(false)?.is_clean(),
            "{round}: pending removals are no drift"
        );
        drop(holder);
        let want = if round == "cleanup" { 1 } else { 0 };
        if round == "reopen" {
            // The next writer finishes what is pending.
            drop(pool);
            pool = tp.open()?;
        }
        // Cases run in parallel: another case's holder, started meanwhile, may hold a copy of
        // this one's mounts for a moment. Cleanup again until it is gone.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while pool.list()?.len() > want && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(100));
            pool.snapshot_cleanup()?;
        }
        ensure!(
            pool.list()?.len() == want,
            "{round}: {want} layer(s) should be left: {:?}",
            pool.list()?
        );
    }
    ensure!(pool.check(false)?.is_clean(), "clean at the end");
    Ok(())
}
