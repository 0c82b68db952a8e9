//! The CLI contract: exit codes, one-line errors, JSON, and "nothing changed" after bad input.
//! Runs the CLI in-process through `blkdrv_cli::run`. Needs root (pools on loop devices).

#[path = "cli/storage_setup.rs"]
mod storage_setup;

use kit::cli::{json, layer, tool, Env};
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

/// Completions and man pages (tests/cli/assets.rs).
#[path = "cli/assets.rs"]
mod assets;

fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    build(&mut b);
    b.into_inner().unwrap()
}

fn header(kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h
}

/// Writes a raw tar entry whose name the tar crate's safe setters would refuse.
fn raw_entry(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: &str,
    data: &[u8],
) {
    let mut h = header(kind, data.len() as u64);
    let gnu = h.as_gnu_mut().unwrap();
    gnu.name[..name.len()].copy_from_slice(name.as_bytes());
    gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_cksum();
    b.append(&h, data).unwrap();
}

fn write_tar(env: &Env, name: &str, data: &[u8]) -> String {
    let p = env.path(name);
    std::fs::write(&p, data).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn bad_layer_names_are_refused() {
    let env = Env::new();
    env.base();
    let long = "x".repeat(129);
    for (name, needle) in [
        ("a/b", "'/'"),
        ("..", "'..'"),
        ("a..b", "'..'"),
        ("", "empty"),
        (long.as_str(), "129 bytes"),
    ] {
        env.refused(&["layer", "snapshot", "base", name, "--pool", "t"], needle);
    }
    env.refused_os(
        vec![
            "layer".into(),
            "snapshot".into(),
            "base".into(),
            OsString::from_vec(b"a\0b".to_vec()),
            "--pool".into(),
            "t".into(),
        ],
        "NUL",
    );
}

#[test]
fn parents_must_exist_and_be_committed() {
    let env = Env::new();
    env.base();
    env.refused(
        &["layer", "snapshot", "nope", "c", "--pool", "t"],
        "does not exist",
    );
    env.ok(&["layer", "snapshot", "base", "active", "--pool", "t"]);
    env.refused(
        &["layer", "snapshot", "active", "c2", "--pool", "t"],
        "only committed layers",
    );
    let src = env.path("src");
    env.refused(
        &[
            "layer",
            "create",
            "x",
            "--parent",
            "active",
            "--from-dir",
            src.to_str().unwrap(),
            "--pool",
            "t",
        ],
        "only committed layers",
    );
    env.refused(
        &["layer", "commit", "base", "--pool", "t"],
        "only active layers",
    );
    env.refused(
        &["layer", "snapshot", "base", "active", "--pool", "t"],
        "already exists",
    );
}

#[test]
fn unsafe_tars_are_refused() {
    let env = Env::new();
    env.base();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "dotdot",
            tar_with(|b| raw_entry(b, "../evil", tar::EntryType::Regular, "", b"x")),
            "..",
        ),
        (
            "absolute",
            tar_with(|b| raw_entry(b, "/etc/evil", tar::EntryType::Regular, "", b"x")),
            "absolute",
        ),
        (
            "symlink-escape",
            tar_with(|b| {
                raw_entry(b, "esc", tar::EntryType::Symlink, "/etc", b"");
                raw_entry(b, "esc/passwd", tar::EntryType::Regular, "", b"x");
            }),
            "symlink",
        ),
        (
            "hardlink-outside",
            tar_with(|b| raw_entry(b, "h", tar::EntryType::Link, "../../etc/passwd", b"")),
            "..",
        ),
        (
            "hardlink-absolute",
            tar_with(|b| raw_entry(b, "h", tar::EntryType::Link, "/etc/passwd", b"")),
            "absolute",
        ),
    ];
    for (name, data, needle) in cases {
        let f = write_tar(&env, &format!("{name}.tar"), &data);
        env.refused(
            &[
                "layer",
                "create",
                name,
                "--parent",
                "base",
                "--from-tar",
                &f,
                "--pool",
                "t",
            ],
            needle,
        );
    }
    assert!(!Path::new("/etc/evil").exists());
}

#[test]
fn truncated_and_garbage_tars_are_refused() {
    let env = Env::new();
    env.base();
    let good = tar_with(|b| {
        let data = vec![b'z'; 10_000];
        b.append_data(
            &mut header(tar::EntryType::Regular, data.len() as u64),
            "big",
            &data[..],
        )
        .unwrap();
    });
    let cut = write_tar(&env, "cut.tar", &good[..4096]);
    env.refused(
        &["layer", "create", "cut", "--from-tar", &cut, "--pool", "t"],
        "tar",
    );
    let junk = write_tar(&env, "junk.tar", &[0x55u8; 3000]);
    env.refused(
        &[
            "layer",
            "create",
            "junk",
            "--from-tar",
            &junk,
            "--pool",
            "t",
        ],
        "tar",
    );
    env.refused(
        &[
            "layer",
            "create",
            "missing",
            "--from-tar",
            "/nonexistent.tar",
            "--pool",
            "t",
        ],
        "does not exist",
    );
}

#[test]
fn pool_level_bad_input() {
    let env = Env::new();
    let o = env.run(&["pool", "init", "t", "--size", "400M"]);
    assert_eq!(o.code, 2, "second init: {}", o.stderr);
    assert!(o.stderr.contains("already exists"), "{}", o.stderr);
    let o = env.run(&["pool", "init", "u", "--size", "lots"]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("invalid size"), "{}", o.stderr);
    let o = env.run(&["pool", "init", "u", "--driver", "nosuch", "--size", "400M"]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("unknown driver"), "{}", o.stderr);
    let o = env.run(&["pool", "init", "u", "-o", "colour=blue", "--size", "400M"]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("unknown option"), "{}", o.stderr);
    let o = env.run(&["pool", "init", "u", "--size", "100M"]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("too small"), "{}", o.stderr);
    let o = env.run(&["pool", "init", "u", "--fs", "ntfs", "--size", "400M"]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("xfs or ext4"), "{}", o.stderr);
    assert!(
        !env.root().join("pools/u").exists(),
        "failed inits leave nothing behind"
    );
    let o = env.run(&["layer", "ls", "--pool", "nosuch"]);
    assert_eq!(o.code, 2);
    assert!(
        o.stderr.contains("pool init"),
        "error says how to proceed: {}",
        o.stderr
    );
}

#[test]
fn corrupt_store_is_reported() {
    let env = Env::new();
    env.base();
    let store = env.root().join("pools/t/store.db");
    // Overwrite the header and the first pages: what a bad disk or a stray `dd` would do.
    let mut bytes = std::fs::read(&store).unwrap();
    for b in bytes.iter_mut().take(8192) {
        *b = 0x42;
    }
    std::fs::write(&store, bytes).unwrap();
    for f in ["store.db-wal", "store.db-shm"] {
        let _ = std::fs::remove_file(env.root().join("pools/t").join(f));
    }
    let o = env.run(&["layer", "ls", "--pool", "t"]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("corrupt"), "{}", o.stderr);
    assert_eq!(o.stderr.lines().count(), 1, "{}", o.stderr);
    // destroy --force still cleans up a pool whose store is unreadable.
    let o = env.run(&["pool", "destroy", "t", "--force"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(!env.root().join("pools/t").exists());
}

#[test]
fn device_with_signature_is_refused_unless_forced() {
    let env = Env::new();
    let img = env.path("dev.img");
    blkdrv_drivers::sys::loopdev::create_sparse_file(&img, blkdrv_drivers::Bytes::mib(400))
        .unwrap();
    tool(
        "mkfs.ext4",
        &["-q".as_ref(), "-F".as_ref(), img.as_os_str()],
    );
    // The loop device stays attached while this handle lives; autoclear detaches it after.
    let lo = blkdrv_drivers::sys::loopdev::attach(&img).unwrap();
    let dev = lo.path.to_str().unwrap().to_string();
    let o = env.run(&["pool", "init", "dev", "--device", &dev, "--driver", "vfs"]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(
        o.stderr.contains("ext4") && o.stderr.contains("--force"),
        "{}",
        o.stderr
    );
    let o = env.run(&[
        "pool", "init", "dev", "--device", &dev, "--driver", "vfs", "--force",
    ]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let o = env.run(&["pool", "status", "dev", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["driver"], "vfs");
    assert_eq!(v["backing"]["type"], "devices");
    env.ok(&["pool", "destroy", "dev"]);
    drop(lo);
}

#[test]
fn json_output_and_reuse() {
    let env = Env::new();
    env.base();
    let src = env.path("src");
    let v = json(
        &env,
        &[
            "layer",
            "create",
            "again",
            "--from-dir",
            src.to_str().unwrap(),
            "--pool",
            "t",
        ],
    );
    assert_eq!(v["reused"], true);
    let o = env.create_from_dir("again2", &src);
    assert!(o.stdout.contains("reused"), "{}", o.stdout);
    let v = json(&env, &["layer", "ls", "--pool", "t"]);
    assert_eq!(v.as_array().unwrap().len(), 1, "one layer, three names");
    assert_eq!(v[0]["names"].as_array().unwrap().len(), 3);
    let v = json(&env, &["info"]);
    assert!(v["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["name"] == "overlay"));
    assert_eq!(v["pools"][0]["name"], "t");
}

#[test]
fn mount_write_commit_flow_and_tree() {
    let env = Env::new();
    env.base();
    env.ok(&["layer", "snapshot", "base", "c1", "--pool", "t"]);
    let m = env.path("mnt");
    let ms = m.to_str().unwrap();
    env.ok(&["layer", "mount", "c1", ms, "--pool", "t"]);
    std::fs::write(m.join("new"), vec![1u8; 1 << 20]).unwrap();
    let o = env.run(&["layer", "rm", "c1", "--pool", "t"]);
    assert_eq!(o.code, 2);
    assert!(o.stderr.contains("mounted at"), "{}", o.stderr);
    let o = env.run(&["pool", "destroy", "t"]);
    assert_eq!(o.code, 2, "destroy refused while mounted: {}", o.stderr);
    env.ok(&["layer", "umount", "c1", "--pool", "t"]);
    env.ok(&["layer", "commit", "c1", "--pool", "t"]);
    let o = env.ok(&["layer", "ls", "--tree", "--pool", "t"]);
    assert!(o.stdout.contains("└─ c1"), "{}", o.stdout);
    assert!(
        o.stdout.contains("1MiB") || o.stdout.contains("1.0MiB"),
        "size shown: {}",
        o.stdout
    );
    let out = env.path("c1.tar");
    env.diff_to("c1", &out);
    assert!(std::fs::metadata(&out).unwrap().len() > 1 << 20);
}

#[test]
fn help_and_usage_errors() {
    let env = Env::new();
    let o = env.run(&["--help"]);
    assert_eq!(o.code, 0);
    assert!(o.stdout.contains("Exit codes"));
    for sub in [
        &["pool", "init", "--help"][..],
        &["layer", "create", "--help"],
        &["layer", "snapshot", "--help"],
        &["info", "--help"],
    ] {
        let o = env.run(sub);
        assert_eq!(o.code, 0, "{sub:?}");
        assert!(o.stdout.len() > 100, "{sub:?} explains itself");
    }
    let o = env.run(&["layer", "frobnicate"]);
    assert_eq!(o.code, 2);
    let o = env.run(&["layer", "create", "x", "--pool", "t"]);
    assert_eq!(o.code, 2, "a source is required");
}

#[test]
fn readers_are_not_blocked_and_second_writer_is_busy() {
    let env = Env::new();
    env.base();
    // Hold the writer lock as a long import would.
    let lock_path = env.root().join("pools/t/lock");
    let _held = blkdrv_pool::lock::PoolLock::acquire("t", &lock_path, std::time::Duration::ZERO)
        .expect("take the writer lock");
    let started = std::time::Instant::now();
    let o = env.ok(&["layer", "ls", "--pool", "t"]);
    assert!(o.stdout.contains("base"));
    env.ok(&["pool", "status", "t"]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "readers waited"
    );
    // The second writer runs in a child with its own environment: setting a variable in this
    // process would race the other tests' threads.
    let root = env.root().display().to_string();
    let o = kit::child::command_of(
        std::path::Path::new(env!("CARGO_BIN_EXE_blkdrv-test-child")),
        &kit::child::blkdrv_args(&[
            "--root", &root, "layer", "snapshot", "base", "c", "--pool", "t",
        ]),
    )
    .env("BLKDRV_LOCK_TIMEOUT", "0")
    .output()
    .expect("run the second writer");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("busy") && stderr.contains(&std::process::id().to_string()),
        "{stderr}"
    );
}

#[test]
fn new_layers_are_refused_below_min_free() {
    let env = Env::new();
    let o = env.run(&["pool", "init", "full", "--size", "400M", "--min-free", "99"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let o = env.run(&[
        "layer",
        "create",
        "x",
        "--from-dir",
        src.to_str().unwrap(),
        "--pool",
        "full",
    ]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr.contains("minimum is 99%") && o.stderr.contains("free of"),
        "numbers given: {}",
        o.stderr
    );
    env.ok(&["pool", "destroy", "full"]);
}

#[test]
fn pool_check_reports_and_repairs_drift() {
    let env = Env::new();
    env.base();
    env.ok(&["layer", "snapshot", "base", "gone", "--pool", "t"]);
    let objects = env.root().join("pools/t/driver/mnt/overlay");
    // An object the store does not know (as a crash outside blkdrv's protocol would leave).
    std::fs::create_dir_all(objects.join("999/diff")).unwrap();
    // A layer whose data vanished behind blkdrv's back.
    let gone_id = layer(&env, "gone")["id"].as_u64().unwrap();
    std::fs::remove_dir_all(objects.join(gone_id.to_string())).unwrap();
    let o = env.run(&["pool", "check", "t"]);
    assert_eq!(o.code, 2, "drift is reported as an error: {}", o.stderr);
    assert!(o.stdout.contains("orphan: object 999"), "{}", o.stdout);
    assert!(
        o.stdout.contains(&format!("missing: layer {gone_id}")),
        "{}",
        o.stdout
    );
    let v = json(&env, &["pool", "check", "t", "--repair"]);
    assert_eq!(v["repaired"].as_array().unwrap().len(), 2, "{v}");
    assert!(!objects.join("999").exists());
    let o = env.ok(&["pool", "check", "t"]);
    assert!(o.stdout.contains("consistent"), "{}", o.stdout);
    assert!(env.run(&["layer", "inspect", "gone", "--pool", "t"]).code == 2);
    assert!(env.run(&["layer", "inspect", "base", "--pool", "t"]).code == 0);
}

#[test]
fn mounted_device_is_refused_even_with_force() {
    let env = Env::new();
    let img = env.path("mounted.img");
    blkdrv_drivers::sys::loopdev::create_sparse_file(&img, blkdrv_drivers::Bytes::mib(300))
        .unwrap();
    tool(
        "mkfs.btrfs",
        &["-q".as_ref(), "-f".as_ref(), img.as_os_str()],
    );
    let lo = blkdrv_drivers::sys::loopdev::attach(&img).unwrap();
    let m = env.path("busy");
    std::fs::create_dir_all(&m).unwrap();
    nix::mount::mount(
        Some(&lo.path),
        &m,
        Some("btrfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    let dev = lo.path.to_str().unwrap().to_string();
    let o = env.run(&[
        "pool", "init", "x", "--device", &dev, "--driver", "btrfs", "--force",
    ]);
    nix::mount::umount(&m).unwrap();
    drop(lo);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("mounted at"), "{}", o.stderr);
    assert!(!env.root().join("pools/x").exists());
}

/// Layers (and `pool check`), volumes and containers: what a bad container or volume command
/// must leave as it was.
fn storage_state(env: &Env) -> String {
    let v = env.ok(&["volume", "ls", "--json", "--pool", "t"]).stdout;
    let c = env.ok(&["container", "ls", "--json", "--pool", "t"]).stdout;
    format!("{}\n{v}\n{c}", env.state())
}

/// A bad container or volume command: exit 2, one line naming `needle`, nothing created.
fn refused_storage(env: &Env, args: &[&str], needle: &str) {
    let before = storage_state(env);
    let mut full = args.to_vec();
    full.extend(["--pool", "t"]);
    let o = env.run(&full);
    assert_eq!(
        o.code, 2,
        "{args:?}: exit {} ({}{})",
        o.code, o.stdout, o.stderr
    );
    assert_eq!(
        o.stderr.lines().count(),
        1,
        "{args:?}: one line: {:?}",
        o.stderr
    );
    assert!(
        o.stderr.contains(needle),
        "{args:?}: {:?} should mention {needle:?}",
        o.stderr
    );
    assert_eq!(storage_state(env), before, "{args:?} changed the pool");
}

fn names(env: &Env, what: &str) -> Vec<String> {
    env.ok(&[what, "ls", "--quiet", "--pool", "t"])
        .stdout
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn container_and_volume_bad_input_creates_nothing() {
    let env = Env::new();
    env.base();
    let create = |extra: &[&'static str]| {
        let mut a = vec!["container", "create", "c0", "--image", "base"];
        a.extend_from_slice(extra);
        a
    };
    for (extra, needle) in [
        (&["-v", "vol:../../etc"][..], "invalid container path"),
        (&["-v", "vol:data"], "must be absolute"),
        (
            &["-v", "/nonexistent/blkdrv-src:/data"],
            "/nonexistent/blkdrv-src",
        ),
        (&["--mount", "type=nfs,target=/x"], "unknown mount type"),
        (
            &["--mount", "type=volume,src=v1,target=/x,color=red"],
            "unknown key",
        ),
        (&["-v", "v1:/x:rx"], "unknown option"),
        (&["-v", "v1:/x:Z"], "SELinux"),
        (
            &["--mount", "type=tmpfs,source=foo,target=/x"],
            "takes no source",
        ),
        (
            &["--mount", "type=tmpfs,target=/x,volume-nocopy"],
            "type=volume",
        ),
        (
            &["-v", "a1:/data", "-v", "b1:/data"],
            "duplicate mount point",
        ),
        (
            &["-v", "a1:/data", "--mount", "type=tmpfs,dst=/data/"],
            "duplicate mount point",
        ),
        (&["-v", "a/b:/data"], "absolute path"),
        (&["-v", "./rel:/data"], "absolute path"),
        // Control characters come back escaped, on one line.
        (&["-v", "v1:/x\n\x1b[31mforged"], "\\n\\x1b[31mforged"),
        (&["--mount", "type=bind,source=rel,target=/x"], "absolute"),
        (&["--size", "lots"], "invalid size"),
        // overlay has no per-layer limit at all.
        (&["--size", "100M"], "size limits"),
    ] {
        refused_storage(&env, &create(extra), needle);
    }
    refused_storage(
        &env,
        &["container", "create", "a/b", "--image", "base"],
        "invalid container name",
    );
    refused_storage(
        &env,
        &["container", "create", "c0", "--image", "nope"],
        "nope",
    );
    refused_storage(&env, &["volume", "create", "a/b"], "invalid volume name");
    refused_storage(
        &env,
        &["volume", "create", "v1", "--size", "lots"],
        "invalid size",
    );
    refused_storage(
        &env,
        &["volume", "create", "v1", "--size", "100T"],
        "larger than the pool",
    );
    refused_storage(&env, &["volume", "create", "v1", "--from", "nope"], "nope");
    refused_storage(
        &env,
        &["volume", "create", "v1", "--label", "k=1", "--label", "k=2"],
        "twice",
    );
    refused_storage(&env, &["volume", "rm", "nope"], "nope");
    refused_storage(&env, &["container", "rm", "nope"], "nope");
    refused_storage(&env, &["container", "commit", "nope", "x"], "nope");
    refused_storage(&env, &["history", "nope"], "nope");
    assert!(names(&env, "volume").is_empty());
    assert!(names(&env, "container").is_empty());
}

#[test]
fn sizes_larger_than_the_pool_are_refused() {
    // btrfs: qgroup limits, so --size is taken and checked against the pool.
    let env = Env::with_pool(&["--driver", "btrfs", "--size", "400M"]);
    env.base();
    refused_storage(
        &env,
        &["volume", "create", "v1", "--size", "100T"],
        "larger than the pool",
    );
    refused_storage(
        &env,
        &[
            "container",
            "create",
            "c0",
            "--image",
            "base",
            "--size",
            "100T",
        ],
        "larger than the pool",
    );
    env.ok(&["volume", "create", "v1", "--size", "10M", "--pool", "t"]);
    let v = json(&env, &["volume", "inspect", "v1", "--pool", "t"]);
    assert_eq!(v[0]["limit_bytes"], 10 << 20);
}

#[test]
fn a_volume_in_use_is_not_removed() {
    let env = Env::new();
    env.base();
    env.ok(&["volume", "create", "db", "--pool", "t"]);
    env.ok(&[
        "container",
        "create",
        "c1",
        "--image",
        "base",
        "-v",
        "db:/data",
        "--pool",
        "t",
    ]);
    refused_storage(&env, &["volume", "rm", "db"], "c1");
    // prune --all spares it too.
    env.ok(&["volume", "prune", "--all", "--pool", "t"]);
    assert_eq!(names(&env, "volume"), ["db"]);
    // The container's name is taken; its image must be committed.
    refused_storage(
        &env,
        &["container", "create", "c1", "--image", "base"],
        "c1",
    );
    env.ok(&["container", "rm", "c1", "--pool", "t"]);
    env.ok(&["volume", "rm", "db", "--pool", "t"]);
    assert!(names(&env, "volume").is_empty());
}

#[test]
fn containers_volumes_and_history_flow() {
    let env = Env::new();
    let src = env.path("img");
    std::fs::create_dir_all(src.join("data")).unwrap();
    std::fs::write(src.join("data/seed"), "from the image").unwrap();
    env.ok(&[
        "layer",
        "create",
        "img",
        "--from-dir",
        src.to_str().unwrap(),
        "--comment",
        "COPY rootfs /",
        "--pool",
        "t",
    ]);
    let o = env.ok(&["volume", "create", "--pool", "t"]);
    let anon = o.stdout.trim().to_string();
    assert_eq!(anon.len(), 64, "a random name like Docker's: {anon:?}");
    let o = env.ok(&["volume", "create", "db", "--label", "team=x", "--pool", "t"]);
    assert_eq!(o.stdout, "db\n", "prints the name, like docker");
    let v = json(&env, &["volume", "inspect", "db", "--pool", "t"]);
    assert_eq!(v[0]["name"], "db");
    assert_eq!(v[0]["labels"]["team"], "x");

    let o = env.ok(&[
        "container",
        "create",
        "c1",
        "--image",
        "img",
        "-v",
        "db:/data",
        "--mount",
        "type=tmpfs,target=/scratch,tmpfs-size=1m",
        "--pool",
        "t",
    ]);
    assert_eq!(o.stdout, "c1\n");
    let c = json(&env, &["container", "inspect", "c1", "--pool", "t"]);
    assert_eq!(c["image"], "img");
    assert_eq!(c["mounts"].as_array().unwrap().len(), 2);
    let ls = env.ok(&["container", "ls", "--pool", "t"]).stdout;
    assert!(ls.starts_with("NAME") && ls.contains("db:/data"), "{ls}");

    let root = env.path("c1root");
    let m = json(
        &env,
        &[
            "container",
            "mount",
            "c1",
            root.to_str().unwrap(),
            "--pool",
            "t",
        ],
    );
    assert_eq!(m["mounts"].as_array().unwrap().len(), 3, "{m}");
    std::fs::write(root.join("data/kept"), "volume data").unwrap();
    std::fs::write(root.join("layer-file"), "writable layer").unwrap();
    env.ok(&["container", "umount", "c1", "--pool", "t"]);
    assert!(!root.join("data/kept").exists(), "unmounted");

    let o = env.ok(&[
        "container",
        "commit",
        "c1",
        "img2",
        "--comment",
        "touch layer-file",
        "--pool",
        "t",
    ]);
    assert!(o.stdout.contains("img2"), "{}", o.stdout);
    let h = json(&env, &["history", "img2", "--pool", "t"]);
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0]["layer"], "img2");
    assert_eq!(h[0]["comment"], "touch layer-file");
    assert_eq!(h[1]["comment"], "COPY rootfs /");
    let text = env.ok(&["history", "img2", "--pool", "t"]).stdout;
    assert!(text.starts_with("LAYER") && text.contains("ago"), "{text}");

    env.ok(&["container", "rm", "c1", "--pool", "t"]);
    assert!(names(&env, "container").is_empty());
    assert!(names(&env, "volume").contains(&"db".to_string()));
    env.ok(&[
        "container",
        "create",
        "c2",
        "--image",
        "img",
        "-v",
        "db:/data",
        "--pool",
        "t",
    ]);
    let root2 = env.path("c2root");
    env.ok(&[
        "container",
        "mount",
        "c2",
        root2.to_str().unwrap(),
        "--pool",
        "t",
    ]);
    assert_eq!(
        std::fs::read_to_string(root2.join("data/kept")).unwrap(),
        "volume data"
    );
    assert!(!root2.join("layer-file").exists(), "a new writable layer");
    env.ok(&["container", "rm", "--force", "c2", "--pool", "t"]);

    let o = env.ok(&["volume", "prune", "--pool", "t"]);
    assert!(o.stdout.contains(&anon), "{}", o.stdout);
    assert_eq!(names(&env, "volume"), ["db"]);
    let o = env.ok(&["volume", "prune", "--all", "--force", "--pool", "t"]);
    assert!(o.stdout.contains("db"), "{}", o.stdout);
    assert!(names(&env, "volume").is_empty());
}

#[test]
fn info_shows_the_auto_pick() {
    let env = Env::new();
    let o = env.ok(&["info"]);
    assert!(o.stdout.contains("auto would pick: "), "{}", o.stdout);
    let j = json(&env, &["info"]);
    assert!(j["auto_driver"]["driver"].is_string(), "{j}");
    let o = env.ok(&["pool", "init", "--help"]);
    assert!(o.stdout.contains("auto"), "{}", o.stdout);
    // Without --driver, pool init picks and says why; the pool records the driver, not "auto".
    let o = env.ok(&["pool", "init", "t2", "--size", "400M"]);
    let pick = j["auto_driver"]["driver"].as_str().unwrap();
    assert!(
        o.stderr.contains(&format!("driver auto: {pick} (")),
        "{}",
        o.stderr
    );
    let st = json(&env, &["pool", "status", "t2"]);
    assert_eq!(st["driver"], pick);
    env.ok(&["pool", "destroy", "t2"]);
}

#[test]
fn mount_targets_behind_planted_symlinks_stay_in_the_root() {
    let env = Env::new();
    let src = env.path("img");
    std::fs::create_dir_all(src.join("etc")).unwrap();
    std::os::unix::fs::symlink("../../../../../etc", src.join("up")).unwrap();
    std::os::unix::fs::symlink("/etc", src.join("abs")).unwrap();
    env.create_from_dir("img", &src);
    env.ok(&[
        "container",
        "create",
        "c1",
        "--image",
        "img",
        "-v",
        "v1:/up/blkdrv-escape-a",
        "-v",
        "v2:/abs/blkdrv-escape-b",
        "--pool",
        "t",
    ]);
    let root = env.path("root1");
    let m = json(
        &env,
        &[
            "container",
            "mount",
            "c1",
            root.to_str().unwrap(),
            "--pool",
            "t",
        ],
    );
    for p in m["mounts"].as_array().unwrap() {
        assert!(
            p.as_str().unwrap().starts_with(root.to_str().unwrap()),
            "{m}"
        );
    }
    assert!(root.join("etc/blkdrv-escape-a").is_dir());
    assert!(root.join("etc/blkdrv-escape-b").is_dir());
    assert!(!Path::new("/etc/blkdrv-escape-a").exists());
    assert!(!Path::new("/etc/blkdrv-escape-b").exists());
    env.ok(&["container", "rm", "--force", "c1", "--pool", "t"]);
}

#[test]
fn short_v_is_verbose_before_the_command_only() {
    let env = Env::new();
    env.ok(&["-v", "volume", "ls", "--pool", "t"]);
    env.ok(&["volume", "ls", "--verbose", "--pool", "t"]);
    // After a command other than container's, -v is not verbose: a usage error.
    assert_eq!(env.run(&["volume", "ls", "-v", "--pool", "t"]).code, 2);
}
