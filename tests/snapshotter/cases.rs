//! The cases: each gets a driver name, makes its own pool and server (crate::fixture) and
//! returns an error naming the request that broke the contract.

use crate::fixture::{expect_code, hash, labels, Fx, Labels, Mounted, SNAPSHOTTER};
use blkdrv_snapshotter::api::snapshots::v1 as pb;
use blkdrv_snapshotter::tonic::Code;
use kit::snapshotter::Signal;
use kit::{ensure, TestResult};
use std::time::Duration;

pub type Case = fn(&str) -> TestResult;

pub const CASES: &[(&str, Case)] = &[
    ("error_codes", error_codes),
    (
        "keys_as_containerd_sends_them",
        keys_as_containerd_sends_them,
    ),
    ("labels_at_prepare_and_commit", labels_at_prepare_and_commit),
    ("update_masks", update_masks),
    ("walk_filters", walk_filters),
    ("view_semantics", view_semantics),
    ("usage", usage),
    ("timestamps", timestamps),
    ("concurrent_requests", concurrent_requests),
    ("cli_layers_are_not_listed", cli_layers_are_not_listed),
    (
        "sigkill_between_prepare_steps",
        sigkill_between_prepare_steps,
    ),
    ("sigterm_stops_cleanly", sigterm_stops_cleanly),
    ("sigterm_during_prepare", sigterm_during_prepare),
    ("snapshotter_names", snapshotter_names),
    ("nodev_policy", nodev_policy),
    ("sd_notify_ready", sd_notify_ready),
];

const REF: &str = "containerd.io/snapshot.ref";

fn error_codes(driver: &str) -> TestResult {
    let fx = Fx::new(driver)?;
    ensure!(
        fx.names(&[])?.is_empty(),
        "Walk of an empty store lists something"
    );
    expect_code("Stat missing", fx.stat("nope"), Code::NotFound, None)?;
    expect_code("Mounts missing", fx.mounts("nope"), Code::NotFound, None)?;
    expect_code("Usage missing", fx.usage("nope"), Code::NotFound, None)?;
    expect_code("Remove missing", fx.remove("nope"), Code::NotFound, None)?;
    expect_code(
        "Update missing",
        fx.update("nope", Labels::new(), &[]),
        Code::NotFound,
        None,
    )?;
    expect_code(
        "Commit missing",
        fx.commit("n", "nope", Labels::new()),
        Code::NotFound,
        None,
    )?;
    expect_code(
        "Prepare on a missing parent",
        fx.prepare("k", "no-parent", Labels::new()),
        Code::NotFound,
        None,
    )?;
    expect_code(
        "View of a missing parent",
        fx.view("v", "no-parent"),
        Code::NotFound,
        None,
    )?;
    // The failed Prepare left nothing: the key is free.
    expect_code(
        "Stat after a failed Prepare",
        fx.stat("k"),
        Code::NotFound,
        None,
    )?;

    fx.committed("base", "", &[])?;
    fx.prepare("a1", "base", Labels::new())?;
    expect_code(
        "duplicate Prepare",
        fx.prepare("a1", "base", Labels::new()),
        Code::AlreadyExists,
        None,
    )?;
    expect_code(
        "Prepare on a committed name",
        fx.prepare("base", "", Labels::new()),
        Code::AlreadyExists,
        None,
    )?;
    expect_code(
        "duplicate Commit",
        fx.commit("base", "a1", Labels::new()),
        Code::AlreadyExists,
        None,
    )?;
    ensure!(
        fx.stat("a1")?.kind == pb::Kind::Active as i32,
        "a refused Commit changed the active snapshot"
    );
    expect_code(
        "Remove with children",
        fx.remove("base"),
        Code::FailedPrecondition,
        Some("remove"),
    )?;
    expect_code(
        "Mounts of a committed snapshot",
        fx.mounts("base"),
        Code::FailedPrecondition,
        None,
    )?;
    expect_code(
        "Prepare on an active parent",
        fx.prepare("a2", "a1", Labels::new()),
        Code::FailedPrecondition,
        None,
    )?;
    for bad in ["name", "kind", "parent", "created_at", "labelsx"] {
        expect_code(
            &format!("Update mask {bad}"),
            fx.update("a1", Labels::new(), &["labels.a", bad]),
            Code::InvalidArgument,
            None,
        )?;
    }
    for bad in ["name=x", "labels.", "name==\"open", "name~=\"(\"", "==x"] {
        expect_code(
            &format!("Walk filter {bad:?}"),
            fx.walk(&["kind==active", bad]),
            Code::InvalidArgument,
            None,
        )?;
    }
    expect_code(
        "Prepare with an empty key",
        fx.prepare("", "", Labels::new()),
        Code::InvalidArgument,
        None,
    )?;
    fx.remove("a1")?;
    fx.remove("base")?;
    ensure!(
        fx.names(&[])?.is_empty(),
        "snapshots left after removing all"
    );
    fx.cleanup()?;
    Ok(())
}

/// Keys as containerd's metadata layer makes them: `<namespace>/<seq>/<key>`, with spaces,
/// slashes, quotes, commas, non-ASCII, 300+ bytes.
fn hostile_keys() -> Vec<String> {
    vec![
        "default/17/extract-123456789-AbCd sha256:4f1b3c8e2a".into(),
        "k8s.io/3/sha256:4f1b3c8e2a".into(),
        "ns/1/with \"double\" and 'single' quotes".into(),
        "ns/2/commas,and==operators!=~=".into(),
        "ns/3/schön ünïcødé 容器".into(),
        "ns/4/tab\there".into(),
        format!("ns/5/{}", "long-".repeat(70)),
        "/leading/slash/".into(),
        ".".into(),
        "..".into(),
    ]
}

fn keys_as_containerd_sends_them(driver: &str) -> TestResult {
    let fx = Fx::new(driver)?;
    let keys = hostile_keys();
    ensure!(keys.iter().any(|k| k.len() > 300), "no long key");
    for k in &keys {
        fx.prepare(k, "", Labels::new())
            .map_err(|e| format!("Prepare {k:?}: {e}"))?;
        let i = fx.stat(k).map_err(|e| format!("Stat {k:?}: {e}"))?;
        ensure!(&i.name == k, "Stat {k:?} names {:?}", i.name);
        fx.mounts(k).map_err(|e| format!("Mounts {k:?}: {e}"))?;
    }
    let mut want = keys.clone();
    want.sort();
    ensure!(fx.names(&[])? == want, "Walk lists {:?}", fx.names(&[])?);
    // Committed names are just as arbitrary, and children name them as parents.
    for k in &keys {
        let name = format!("committed {k}");
        fx.commit(&name, k, Labels::new())
            .map_err(|e| format!("Commit {k:?}: {e}"))?;
        let child = format!("child of {k}");
        fx.prepare(&child, &name, Labels::new())
            .map_err(|e| format!("Prepare on {name:?}: {e}"))?;
        ensure!(fx.stat(&child)?.parent == name, "parent of {child:?}");
        let f = format!("name=={}", quote(&name));
        ensure!(fx.names(&[&f])? == vec![name.clone()], "Walk {f}");
        let f = format!("parent=={}", quote(&name));
        ensure!(fx.names(&[&f])? == vec![child.clone()], "Walk {f}");
        expect_code(
            &format!("Stat {k:?} after commit"),
            fx.stat(k),
            Code::NotFound,
            None,
        )?;
    }
    for k in &keys {
        fx.remove(&format!("child of {k}"))?;
        fx.remove(&format!("committed {k}"))?;
    }
    ensure!(fx.names(&[])?.is_empty(), "left: {:?}", fx.names(&[])?);
    Ok(())
}

/// A Go-syntax quoted string, as containerd's clients quote filter values.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn labels_at_prepare_and_commit(driver: &str) -> TestResult {
    let fx = Fx::new(driver)?;
    let l = labels(&[
        (REF, "sha256:abc"),
        (
            "containerd.io/snapshot/x",
            "with spaces, commas and \"quotes\"",
        ),
    ]);
    fx.prepare("a", "", l.clone())?;
    ensure!(
        fx.stat("a")?.labels == l,
        "Prepare's labels: {:?}",
        fx.stat("a")?.labels
    );
    // Commit's labels replace the active's.
    let c = labels(&[(REF, "sha256:def")]);
    fx.commit("c", "a", c.clone())?;
    ensure!(
        fx.stat("c")?.labels == c,
        "Commit's labels: {:?}",
        fx.stat("c")?.labels
    );
    fx.commit_empty_labels()?;
    Ok(())
}

impl Fx {
    /// A Commit without labels leaves the committed snapshot without any.
    fn commit_empty_labels(&self) -> TestResult {
        self.prepare("b", "", labels(&[("k", "v")]))?;
        self.commit("bc", "b", Labels::new())?;
        ensure!(
            self.stat("bc")?.labels.is_empty(),
            "labels kept across Commit"
        );
        Ok(())
    }
}

fn update_masks(driver: &str) -> TestResult {
    let fx = Fx::new(driver)?;
    fx.prepare("a", "", labels(&[("x", "1"), ("y", "2"), ("z", "3")]))?;
    let before = fx.stat("a")?;
    std::thread::sleep(Duration::from_millis(2));
    // labels.KEY: set x, delete y (absent from the new labels), leave z.
    let i = fx.update(
        "a",
        labels(&[("x", "10"), ("w", "ignored")]),
        &["labels.x", "labels.y"],
    )?;
    ensure!(
        i.labels == labels(&[("x", "10"), ("z", "3")]),
        "labels.KEY update: {:?}",
        i.labels
    );
    ensure!(
        fx.stat("a")?.labels == i.labels,
        "Stat disagrees with Update's answer"
    );
    ensure!(i.created_at == before.created_at, "Update changed created");
    ensure!(
        ts(&i.updated_at) > ts(&before.updated_at),
        "Update did not move updated: {:?} -> {:?}",
        before.updated_at,
        i.updated_at
    );
    // Keys with dots and slashes, as containerd's labels have.
    let i = fx.update(
        "a",
        labels(&[(REF, "sha256:1")]),
        &[&format!("labels.{REF}")],
    )?;
    ensure!(
        i.labels.get(REF).map(String::as_str) == Some("sha256:1"),
        "{:?}",
        i.labels
    );
    // No paths: replace all.
    let i = fx.update("a", labels(&[("only", "1")]), &[])?;
    ensure!(
        i.labels == labels(&[("only", "1")]),
        "no-path update: {:?}",
        i.labels
    );
    // `labels`: replace all too.
    let i = fx.update("a", labels(&[("n", "2")]), &["labels"])?;
    ensure!(
        i.labels == labels(&[("n", "2")]),
        "labels update: {:?}",
        i.labels
    );
    let i = fx.update("a", Labels::new(), &[])?;
    ensure!(i.labels.is_empty(), "empty replace: {:?}", i.labels);
    // A refused mask changes nothing.
    fx.update("a", labels(&[("n", "3")]), &["labels.n"])?;
    let _ = fx.update("a", labels(&[("n", "4")]), &["labels.n", "parent"]);
    ensure!(
        fx.stat("a")?.labels == labels(&[("n", "3")]),
        "a refused Update changed labels"
    );
    // Committed snapshots take updates too (the GC labels them).
    fx.commit("c", "a", Labels::new())?;
    let i = fx.update("c", labels(&[("g", "1")]), &["labels.g"])?;
    ensure!(
        i.kind == pb::Kind::Committed as i32 && i.labels == labels(&[("g", "1")]),
        "{i:?}"
    );
    Ok(())
}

fn ts(t: &Option<prost_types::Timestamp>) -> i128 {
    t.as_ref()
        .map(|t| t.seconds as i128 * 1_000_000_000 + t.nanos as i128)
        .unwrap_or(-1)
}

fn walk_filters(driver: &str) -> TestResult {
    let fx = Fx::new(driver)?;
    let chain = "sha256:7d0a2c4e3f5b";
    let base = "default/1/sha256:base";
    let p = fx.prepare("default/2/extract base", "", labels(&[(REF, chain)]))?;
    drop(p);
    fx.commit(
        base,
        "default/2/extract base",
        labels(&[(REF, chain), ("tier", "base")]),
    )?;
    fx.prepare(
        "default/3/active one",
        base,
        labels(&[("tier", "top"), ("a.b", "dotted")]),
    )?;
    fx.view("default/4/view one", base)?;
    fx.prepare("default/5/bare", "", Labels::new())?;
    let all = [
        base,
        "default/3/active one",
        "default/4/view one",
        "default/5/bare",
    ];
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (vec![], all.to_vec()),
        (vec!["".into()], all.to_vec()),
        (vec!["kind==committed".into()], vec![base]),
        (
            vec!["kind==active".into()],
            vec!["default/3/active one", "default/5/bare"],
        ),
        (vec!["kind==view".into()], vec!["default/4/view one"]),
        (
            vec![format!("name==\"default/5/bare\"")],
            vec!["default/5/bare"],
        ),
        (
            vec![format!("parent=={base}")],
            vec!["default/3/active one", "default/4/view one"],
        ),
        (vec![format!("labels.\"{REF}\"=={chain}")], vec![base]),
        (vec![format!("labels.\"{REF}\"")], vec![base]),
        (
            vec!["labels.tier".into()],
            vec![base, "default/3/active one"],
        ),
        (
            vec!["labels.tier!=base".into()],
            vec![
                "default/3/active one",
                "default/4/view one",
                "default/5/bare",
            ],
        ),
        (vec!["labels.tier~=^t".into()], vec!["default/3/active one"]),
        (
            vec!["name~=/one$/".into()],
            vec!["default/3/active one", "default/4/view one"],
        ),
        (
            vec!["labels.a.b==dotted".into()],
            vec!["default/3/active one"],
        ),
        (
            vec!["kind==active,labels.tier==top".into()],
            vec!["default/3/active one"],
        ),
        (vec!["kind==active,labels.tier==base".into()], vec![]),
        (
            vec!["kind==view".into(), "kind==committed".into()],
            vec![base, "default/4/view one"],
        ),
        (vec!["nosuch==x".into()], vec![]),
        // What containerd sends after a Prepare answered AlreadyExists (remote snapshots).
        (
            vec![format!("labels.\"{REF}\"=={chain},parent==\"\"")],
            vec![base],
        ),
        (
            vec![format!("labels.\"{REF}\"=={chain},parent==\"{base}\"")],
            vec![],
        ),
    ];
    for (filters, want) in cases {
        let f: Vec<&str> = filters.iter().map(String::as_str).collect();
        let got = fx.names(&f)?;
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        ensure!(got == want, "Walk {filters:?}: got {got:?}, want {want:?}");
    }
    // Walk reports what Stat reports.
    for i in fx.walk(&[])? {
        let s = fx.stat(&i.name)?;
        ensure!(
            s == i,
            "Walk and Stat disagree on {:?}: {i:?} vs {s:?}",
            i.name
        );
    }
    Ok(())
}

fn view_semantics(driver: &str) -> TestResult {
    let fx = Fx::new(driver)?;
    fx.committed("base", "", &[("f", b"from base")])?;
    let m = fx.view("v", "base")?;
    let i = fx.stat("v")?;
    ensure!(
        i.kind == pb::Kind::View as i32 && i.parent == "base",
        "View's info: {i:?}"
    );
    ensure!(m == fx.mounts("v")?, "View's and Mounts' answers differ");
    {
        let g = Mounted::new(&m, &fx.tp.path("v"))?;
        let got = std::fs::read(g.path().join("f")).map_err(|e| format!("read via view: {e}"))?;
        ensure!(got == b"from base", "view shows {got:?}");
        let w = std::fs::write(g.path().join("new"), "x");
        ensure!(
            w.as_ref().err().and_then(|e| e.raw_os_error()) == Some(nix::libc::EROFS),
            "a view is writable: {w:?} (mounts {m:?})"
        );
    }
    // No copy: the view has no delta of its own.
    let u = fx.usage("v")?;
    ensure!(u.size == 0 && u.inodes == 0, "a view uses {u:?}");
    let r = fx.commit("vc", "v", Labels::new());
    ensure!(
        r.as_ref()
            .is_err_and(|s| matches!(s.code(), Code::FailedPrecondition | Code::InvalidArgument)),
        "Commit of a view: {r:?}"
    );
    expect_code(
        "Remove of a viewed parent",
        fx.remove("base"),
        Code::FailedPrecondition,
        Some("remove"),
    )?;
    expect_code(
        "View of a view",
        fx.view("vv", "v"),
        Code::FailedPrecondition,
        None,
    )?;
    fx.remove("v")?;
    expect_code("Stat of a removed view", fx.stat("v"), Code::NotFound, None)?;
    // The parent's content survived the view's removal.
    let m = fx.view("v2", "base")?;
    {
        let g = Mounted::new(&m, &fx.tp.path("v2"))?;
        ensure!(
            kit::pool::read(&g.path().join("f"))? == "from base",
            "parent content after a view's removal"
        );
    }
    fx.remove("v2")?;
    fx.remove("base")?;
    Ok(())
}

const MIB: i64 = 1 << 20;

fn usage(driver: &str) -> TestResult {
    let fx = Fx::new(driver)?;
    let m = fx.prepare("a", "", Labels::new())?;
    let empty = fx.usage("a")?;
    ensure!(
        empty.size >= 0 && empty.inodes >= 0,
        "negative usage {empty:?}"
    );
    {
        let g = Mounted::new(&m, &fx.tp.path(&hash("a")))?;
        let data: Vec<u8> = (0..16 * MIB).map(|i| (i * 7 + i / 4096) as u8).collect();
        std::fs::write(g.path().join("big"), &data).map_err(|e| e.to_string())?;
        nix::unistd::sync();
    }
    let active = fx.usage("a")?;
    ensure!(
        active.size >= 15 * MIB,
        "16 MiB written, active usage {active:?} (empty {empty:?})"
    );
    fx.commit("c", "a", Labels::new())?;
    let c1 = fx.usage("c")?;
    ensure!(c1.size >= 15 * MIB, "committed usage {c1:?}");
    ensure!(
        c1 == fx.usage("c")?,
        "committed usage is not stable (stored)"
    );
    // A child's usage is its own delta, not its parent's.
    let m = fx.prepare("b", "c", Labels::new())?;
    {
        let g = Mounted::new(&m, &fx.tp.path(&hash("b")))?;
        std::fs::write(g.path().join("small"), "x").map_err(|e| e.to_string())?;
    }
    // vfs copies the parent into the child: the copy is the child's own (removing the child
    // frees it), as containerd's native snapshotter counts it. Every other driver shares the
    // parent's blocks; the child's own are its file and what the filesystem itself wrote (a
    // log, metadata blocks: 2.2 MiB on dm-thin's 64 KiB blocks under xfs).
    let limit = if driver == "vfs" {
        c1.size + 8 * MIB
    } else {
        8 * MIB
    };
    let b = fx.usage("b")?;
    ensure!(
        b.size >= 0 && b.size < limit,
        "child usage counts its parent: {b:?}"
    );
    fx.commit("bc", "b", Labels::new())?;
    let bc = fx.usage("bc")?;
    ensure!(
        bc.size >= 0 && bc.size < limit,
        "committed child usage {bc:?}"
    );
    Ok(())
}

fn timestamps(driver: &str) -> TestResult {
    let fx = Fx::new(driver)?;
    let t0 = now_ns();
    fx.prepare("a", "", Labels::new())?;
    let a = fx.stat("a")?;
    let (c, u) = (ts(&a.created_at), ts(&a.updated_at));
    ensure!(
        c >= t0 - 1_000_000_000 && c <= now_ns(),
        "created {c} not now ({t0})"
    );
    ensure!(u == c, "a new snapshot's updated {u} != created {c}");
    // Nanoseconds arrive: three stamps all on a whole microsecond would be a 1-in-1e9 fluke.
    fx.prepare("b", "", Labels::new())?;
    fx.prepare("d", "", Labels::new())?;
    let stamps: Vec<i128> = ["a", "b", "d"]
        .iter()
        .map(|k| fx.stat(k).map(|i| ts(&i.created_at)))
        .collect::<Result<_, _>>()?;
    ensure!(
        stamps.iter().any(|s| s % 1000 != 0),
        "timestamps rounded to microseconds: {stamps:?}"
    );
    std::thread::sleep(Duration::from_millis(2));
    let upd = fx.update("a", labels(&[("k", "v")]), &[])?;
    ensure!(ts(&upd.created_at) == c, "Update changed created");
    ensure!(ts(&upd.updated_at) > u, "Update did not move updated");
    std::thread::sleep(Duration::from_millis(2));
    fx.commit("ac", "a", Labels::new())?;
    let ac = fx.stat("ac")?;
    ensure!(
        ts(&ac.created_at) > ts(&upd.updated_at),
        "Commit did not stamp a new created: {:?} (active's {c})",
        ac.created_at
    );
    Ok(())
}

fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

fn concurrent_requests(driver: &str) -> TestResult {
    let fx = Fx::new(driver)?;
    fx.committed("base", "", &[("f", b"x")])?;
    let rt = fx.srv().runtime();
    let mut tasks = Vec::new();
    for n in 0..8 {
        let mut c = fx.c();
        tasks.push(rt.spawn(async move {
            let key = format!("default/{n}/extract-{n} sha256:{n}");
            c.prepare(pb::PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.clone(),
                parent: "base".into(),
                labels: Labels::new(),
            })
            .await
            .map(|_| ())
            .map_err(|e| format!("Prepare {key}: {e}"))?;
            c.commit(pb::CommitSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                name: format!("committed-{n}"),
                key: key.clone(),
                labels: Labels::new(),
            })
            .await
            .map(|_| ())
            .map_err(|e| format!("Commit {key}: {e}"))
        }));
        let mut c = fx.c();
        tasks.push(rt.spawn(async move {
            for _ in 0..5 {
                c.stat(pb::StatSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: "base".into(),
                })
                .await
                .map_err(|e| format!("Stat base: {e}"))?;
                c.usage(pb::UsageRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: "base".into(),
                })
                .await
                .map_err(|e| format!("Usage base: {e}"))?;
            }
            Ok(())
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        if let Err(e) = fx.on(t).map_err(|e| e.to_string()).and_then(|r| r) {
            errors.push(e);
        }
    }
    ensure!(
        errors.is_empty(),
        "concurrent requests failed:\n{}",
        errors.join("\n")
    );
    let committed = fx.names(&["kind==committed"])?;
    ensure!(committed.len() == 9, "committed: {committed:?}");
    Ok(())
}

fn cli_layers_are_not_listed(driver: &str) -> TestResult {
    let mut fx = Fx::new(driver)?;
    fx.committed("api-base", "", &[])?;
    // The server holds the writer: stop it, make CLI layers, start again.
    let code = fx.take().stop()?;
    ensure!(code.success(), "stop: {code}");
    {
        let mut pool = fx.tp.open()?;
        kit::pool::import_dir(&fx.tp, &mut pool, "cli-base", None, |d| {
            std::fs::write(d.join("f"), "cli")
        })?;
        kit::pool::derive(&fx.tp, &mut pool, "cli-base", "cli-top", |d| {
            std::fs::write(d.join("g"), "cli")
        })?;
    }
    fx.start(&[])?;
    ensure!(
        fx.names(&[])? == vec!["api-base".to_string()],
        "Walk: {:?}",
        fx.names(&[])?
    );
    for name in ["cli-base", "cli-top"] {
        expect_code(&format!("Stat {name}"), fx.stat(name), Code::NotFound, None)?;
        expect_code(
            &format!("Remove {name}"),
            fx.remove(name),
            Code::NotFound,
            None,
        )?;
        expect_code(
            &format!("Prepare on {name}"),
            fx.prepare("x", name, Labels::new()),
            Code::NotFound,
            None,
        )?;
    }
    fx.take().stop()?;
    let pool = fx.tp.open()?;
    let names: Vec<String> = pool
        .list()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|l| l.name.to_string())
        .collect();
    for n in ["cli-base", "cli-top"] {
        ensure!(
            names.iter().any(|x| x == n),
            "CLI layer {n} gone: {names:?}"
        );
    }
    Ok(())
}

/// Waits until the server's log shows `needle` (a stall point reached).
fn wait_log(fx: &Fx, needle: &str) -> TestResult {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !fx.srv().log().contains(needle) {
        ensure!(
            std::time::Instant::now() < deadline,
            "server never logged {needle:?}:\n{}",
            fx.srv().log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn sigkill_between_prepare_steps(driver: &str) -> TestResult {
    for step in ["prepare:intent", "prepare:object"] {
        let mut fx = Fx::with_env(driver, &[(blkdrv_pool::crash::ENV_STALL, step)])?;
        ensure!(
            fx.names(&[])?.is_empty(),
            "{step}: a fresh pool lists snapshots"
        );
        let victim = "default/9/extract-9 sha256:victim";
        let mut c = fx.c();
        let pending = fx.srv().runtime().spawn(async move {
            c.prepare(pb::PrepareSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: victim.into(),
                parent: String::new(),
                labels: Labels::new(),
            })
            .await
        });
        wait_log(&fx, &format!("stall point {step} reached"))?;
        let mut srv = fx.take();
        let status = srv.signal_and_wait(Signal::SIGKILL)?;
        ensure!(!status.success(), "{step}: SIGKILL gave {status}");
        let answer = srv.block_on(pending).map_err(|e| e.to_string())?;
        drop(srv);
        ensure!(answer.is_err(), "{step}: a killed Prepare answered Ok");
        // The socket of the dead server is stale: the restart replaces it.
        ensure!(
            fx.dir.join("snapshotter.sock").exists(),
            "{step}: no stale socket"
        );
        fx.start(&[])?;
        expect_code(
            &format!("{step}: Stat of the killed Prepare"),
            fx.stat(victim),
            Code::NotFound,
            None,
        )?;
        ensure!(
            fx.names(&[])?.is_empty(),
            "{step}: Walk after recovery: {:?}",
            fx.names(&[])?
        );
        fx.prepare(victim, "", Labels::new())
            .map_err(|e| format!("{step}: Prepare again after recovery: {e}"))?;
        fx.commit("v", victim, Labels::new())?;
        fx.remove("v")?;
        let status = fx.take().stop()?;
        ensure!(status.success(), "{step}: stop after recovery: {status}");
        fx.check_pool()?;
    }
    Ok(())
}

fn sigterm_stops_cleanly(driver: &str) -> TestResult {
    let mut fx = Fx::new(driver)?;
    fx.committed("base", "", &[])?;
    fx.prepare("a", "base", Labels::new())?;
    let socket = fx.dir.join("snapshotter.sock");
    let srv = fx.take();
    let log_before = srv.log();
    let status = srv.stop()?;
    ensure!(
        status.code() == Some(0),
        "SIGTERM: exit {status}:\n{log_before}"
    );
    ensure!(!socket.exists(), "socket left after SIGTERM");
    fx.check_pool()?;
    // A second server on the same socket serves what the first made.
    fx.start(&[])?;
    ensure!(fx.stat("a")?.parent == "base", "state after restart");
    // A second server while one runs is refused, and leaves the live socket alone.
    let second = kit::snapshotter::Server::start(fx.spec(&[]));
    ensure!(second.is_err(), "a second server started on a live socket");
    ensure!(
        socket.exists(),
        "the refused server removed the live socket"
    );
    fx.stat("a")?;
    Ok(())
}

fn sigterm_during_prepare(driver: &str) -> TestResult {
    let mut fx = Fx::with_env(driver, &[(blkdrv_pool::crash::ENV_STALL, "prepare:object")])?;
    let mut c = fx.c();
    let pending = fx.srv().runtime().spawn(async move {
        c.prepare(pb::PrepareSnapshotRequest {
            snapshotter: SNAPSHOTTER.into(),
            key: "default/1/extract in flight".into(),
            parent: String::new(),
            labels: Labels::new(),
        })
        .await
    });
    wait_log(&fx, "stall point prepare:object reached")?;
    let mut srv = fx.take();
    let status = srv.signal_and_wait(Signal::SIGTERM)?;
    ensure!(
        status.code() == Some(0),
        "SIGTERM during Prepare: exit {status}:\n{}",
        srv.log()
    );
    let answer = srv.block_on(pending).map_err(|e| e.to_string())?;
    drop(srv);
    fx.start(&[])?;
    let present = fx.stat("default/1/extract in flight").is_ok();
    // Finished or undone, never half: the answer and the state agree.
    ensure!(
        present == answer.is_ok(),
        "Prepare answered {answer:?} but the snapshot is {}",
        if present { "there" } else { "gone" }
    );
    if present {
        fx.mounts("default/1/extract in flight")?;
    }
    fx.take().stop()?;
    fx.check_pool()?;
    Ok(())
}

/// Several pools, one per snapshotter name; an unknown name is NotFound naming it.
fn snapshotter_names(driver: &str) -> TestResult {
    let mut fx = Fx::new(driver)?;
    fx.take().stop()?;
    let second = SecondPool::new(&fx, driver)?;
    let mut spec = fx.spec(&[]);
    spec.pools = vec![
        format!("{}={SNAPSHOTTER}", fx.tp.name),
        format!("{}=other", second.name),
    ];
    let srv = kit::snapshotter::Server::start(spec)?;
    let mut c = srv.client();
    let prep = |c: &mut kit::snapshotter::Client, snapshotter: &str, key: &str| {
        srv.block_on(c.prepare(pb::PrepareSnapshotRequest {
            snapshotter: snapshotter.into(),
            key: key.into(),
            parent: String::new(),
            labels: Labels::new(),
        }))
    };
    prep(&mut c, SNAPSHOTTER, "in-first").map_err(|e| format!("first: {e}"))?;
    prep(&mut c, "other", "in-second").map_err(|e| format!("second: {e}"))?;
    let r = prep(&mut c, "nosuch", "k");
    expect_code(
        "unknown snapshotter",
        r.map(|_| ()),
        Code::NotFound,
        Some("nosuch"),
    )?;
    let stat = |c: &mut kit::snapshotter::Client, s: &str, k: &str| {
        srv.block_on(c.stat(pb::StatSnapshotRequest {
            snapshotter: s.into(),
            key: k.into(),
        }))
    };
    ensure!(
        stat(&mut c, SNAPSHOTTER, "in-first").is_ok(),
        "first pool lost its key"
    );
    expect_code(
        "key of the other pool",
        stat(&mut c, SNAPSHOTTER, "in-second").map(|_| ()),
        Code::NotFound,
        None,
    )?;
    ensure!(
        stat(&mut c, "other", "in-second").is_ok(),
        "second pool lost its key"
    );
    let status = srv.stop()?;
    ensure!(status.success(), "stop: {status}");
    Ok(())
}

/// Another pool in the first one's root (a server serves pools of one root), destroyed on drop.
struct SecondPool {
    root: blkdrv_pool::Root,
    name: blkdrv_pool::PoolName,
}

impl SecondPool {
    fn new(fx: &Fx, driver: &str) -> Result<SecondPool, String> {
        let name = blkdrv_pool::PoolName::new("u").map_err(|e| e.to_string())?;
        if !kit::pool::on_loopback() {
            return Err("a second pool needs loopback files (raw devices are taken)".into());
        }
        blkdrv_pool::Pool::init(
            &fx.tp.root,
            blkdrv_pool::InitSpec {
                name: name.clone(),
                driver: driver.to_string(),
                backing: blkdrv_pool::BackingSpec::Loopback {
                    size: blkdrv_pool::Bytes::mib(512),
                },
                options: kit::config::get().options.iter().cloned().collect(),
                min_free_pct: 0,
                force: true,
                autoextend: None,
            },
        )
        .map_err(|e| format!("second pool: {e}"))?;
        Ok(SecondPool {
            root: fx.tp.root.clone(),
            name,
        })
    }
}

impl Drop for SecondPool {
    fn drop(&mut self) {
        match blkdrv_pool::Pool::open(&self.root, &self.name, blkdrv_pool::Access::Write) {
            Ok(p) => {
                if let Err(e) = p.destroy(true) {
                    eprintln!("test cleanup: destroy the second pool: {e}");
                }
            }
            Err(e) => eprintln!("test cleanup: open the second pool: {e}"),
        }
    }
}

/// Container mounts never carry `nosuid` (images hold setuid programs); `nodev` unless the
/// server runs with `--allow-devices`.
fn nodev_policy(driver: &str) -> TestResult {
    let mut fx = Fx::new(driver)?;
    fx.committed("base", "", &[])?;
    let has = |m: &[blkdrv_snapshotter::api::types::Mount], o: &str| {
        m.iter().any(|m| m.options.iter().any(|x| x == o))
    };
    let a = fx.prepare("a", "base", Labels::new())?;
    let v = fx.view("v", "base")?;
    for (what, m) in [("Prepare", &a), ("View", &v)] {
        ensure!(!has(m, "nosuid"), "{what} mounts with nosuid: {m:?}");
        ensure!(
            has(m, "nodev"),
            "{what} mounts without nodev by default: {m:?}"
        );
    }
    fx.take().stop()?;
    let mut spec = fx.spec(&[]);
    spec.args = vec!["--allow-devices".into()];
    let srv = kit::snapshotter::Server::start(spec)?;
    let mut c = srv.client();
    for key in ["a", "v"] {
        let m = srv
            .block_on(c.mounts(pb::MountsRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.into(),
            }))
            .map_err(|e| format!("Mounts {key}: {e}"))?
            .into_inner()
            .mounts;
        ensure!(
            !has(&m, "nodev") && !has(&m, "nosuid"),
            "--allow-devices: Mounts {key}: {m:?}"
        );
    }
    srv.stop()?;
    Ok(())
}

/// Under a `Type=notify` unit (blkdrv-snapshotter.service): `READY=1` on `$NOTIFY_SOCKET`, sent
/// once the socket listens (Server::start has seen it answer before the datagram is read).
fn sd_notify_ready(driver: &str) -> TestResult {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let path = dir.path().join("notify");
    let rx = std::os::unix::net::UnixDatagram::bind(&path).map_err(|e| e.to_string())?;
    rx.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let fx = Fx::with_env(driver, &[("NOTIFY_SOCKET", path.to_str().unwrap())])?;
    let mut buf = [0u8; 256];
    let n = rx
        .recv(&mut buf)
        .map_err(|e| format!("no sd_notify message from the server: {e}"))?;
    ensure!(
        &buf[..n] == b"READY=1",
        "sd_notify message {:?}, want READY=1",
        String::from_utf8_lossy(&buf[..n])
    );
    ensure!(
        fx.names(&[])?.is_empty(),
        "the ready server does not answer"
    );
    Ok(())
}
