//! The CLI under hostile use (issue: hardening, defects 3, 5, 8, 9 and the driver-option bugs):
//! device nodes and mount flags, a stalled producer on stdin, forged output, exit codes,
//! signals, a deleted store, host config defaults.

use kit::cli::{json, Env};
use kit::trial::trial;
use libtest_mimic::Trial;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "cli::device_nodes_need_allow_devices_and_mounts_are_nodev",
            device_nodes_need_allow_devices_and_mounts_are_nodev,
        ),
        trial(
            "cli::stalled_stdin_does_not_hold_the_writer_lock",
            stalled_stdin_does_not_hold_the_writer_lock,
        ),
        trial(
            "cli::forged_tar_names_cannot_forge_output",
            forged_tar_names_cannot_forge_output,
        ),
        trial(
            "cli::forged_comments_labels_and_mounts_cannot_forge_output",
            forged_comments_labels_and_mounts_cannot_forge_output,
        ),
        trial("cli::bad_paths_exit_2", bad_paths_exit_2),
        trial(
            "cli::sigterm_during_import_rolls_back",
            sigterm_during_import_rolls_back,
        ),
        trial(
            "cli::deleted_store_hint_is_a_command_that_works",
            deleted_store_hint_is_a_command_that_works,
        ),
        trial(
            "cli::host_fs_default_applies_only_to_drivers_that_take_it",
            host_fs_default_applies_only_to_drivers_that_take_it,
        ),
    ]
}

/// One raw tar entry: name bytes, type, data, device numbers.
type Entry<'a> = (&'a [u8], tar::EntryType, &'a [u8], (u32, u32));

fn tar_of(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data, (major, minor)) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(*kind);
        h.set_mode(if kind.is_dir() { 0o755 } else { 0o666 });
        h.set_size(data.len() as u64);
        h.set_mtime(1);
        if kind.is_block_special() || kind.is_character_special() {
            h.set_device_major(*major).unwrap();
            h.set_device_minor(*minor).unwrap();
        }
        // Raw name bytes: the tar crate refuses to build some of the names under test.
        let field = &mut h.as_old_mut().name;
        field.fill(0);
        field[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

fn write_tar(env: &Env, name: &str, data: &[u8]) -> String {
    let p = env.path(name);
    std::fs::write(&p, data).unwrap();
    p.to_str().unwrap().to_string()
}

fn mount_options(target: &Path) -> Option<String> {
    let t = target.canonicalize().ok()?;
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == t.to_str())
        .and_then(|l| l.split(' ').nth(5).map(str::to_string))
}

/// `dd` of the first 4 bytes of `dev` as user nobody.
fn read_as_nobody(dev: &Path) -> Result<Vec<u8>, String> {
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "dd"])
        .arg(format!("if={}", dev.display()))
        .args(["bs=4", "count=1", "status=none"])
        .output()
        .expect("setpriv");
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Defect 3: a block device entry pointing at the pool's own loop device imported as root;
/// mounted read-only at a world-readable target, any user read the raw pool.
fn device_nodes_need_allow_devices_and_mounts_are_nodev() {
    let env = Env::new();
    let status = json(&env, &["pool", "status", "t"]);
    let loopdev = status["backing"]["files"][0]["file"].as_str().map(|_| ());
    assert!(loopdev.is_some(), "a loopback pool: {status}");
    // The pool's loop device, by its numbers.
    let dev = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == env.root().join("pools/t/driver/mnt").to_str())
        .and_then(|l| l.split(" - ").nth(1)?.split(' ').nth(1).map(str::to_string))
        .expect("pool backing mount");
    let rdev = std::fs::metadata(&dev).unwrap().rdev();
    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
    let tar = tar_of(&[
        (b"ok/", tar::EntryType::Directory, b"", (0, 0)),
        (
            b"ok/loop",
            tar::EntryType::Block,
            b"",
            (major as u32, minor as u32),
        ),
    ]);
    let tar = write_tar(&env, "dev.tar", &tar);
    env.refused(
        &["layer", "create", "d", "--from-tar", &tar, "--pool", "t"],
        "ok/loop",
    );
    env.ok(&[
        "layer",
        "create",
        "d",
        "--from-tar",
        &tar,
        "--allow-devices",
        "--pool",
        "t",
    ]);
    // A world-traversable place for the mount.
    std::fs::set_permissions(env.path(""), std::fs::Permissions::from_mode(0o755)).unwrap();
    let m = env.path("pub/d");
    env.ok(&["layer", "mount", "d", m.to_str().unwrap(), "--pool", "t"]);
    let opts = mount_options(&m).expect("mounted");
    assert!(
        opts.contains("nodev") && opts.contains("nosuid"),
        "a view is nodev,nosuid: {opts}"
    );
    // Parents blkdrv made are root's only.
    let mode = std::fs::metadata(env.path("pub")).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o700, "mount parent made with mode {mode:o}");
    std::fs::set_permissions(env.path("pub"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let got = read_as_nobody(&m.join("ok/loop"));
    assert!(
        got.is_err(),
        "user nobody read the pool's raw device: {got:?}"
    );
    env.ok(&["layer", "umount", "d", "--pool", "t"]);
    // --dev is the explicit way back, and shows the test can fail.
    env.ok(&[
        "layer",
        "mount",
        "d",
        m.to_str().unwrap(),
        "--dev",
        "--pool",
        "t",
    ]);
    assert_eq!(
        read_as_nobody(&m.join("ok/loop")).as_deref(),
        Ok(&b"XFSB"[..])
    );
    env.ok(&["layer", "umount", "d", "--pool", "t"]);
    // A container's writable layer: nodev, but setuid programs keep working.
    env.ok(&["layer", "snapshot", "d", "c", "--pool", "t"]);
    let w = env.mount_rw("c", "w");
    let opts = mount_options(&w).expect("mounted");
    assert!(
        opts.contains("nodev") && !opts.contains("nosuid"),
        "rw: {opts}"
    );
    env.ok(&["layer", "umount", "c", "--pool", "t"]);
}

/// Defect 5: `layer create --from-tar -` held the writer lock while it waited on stdin.
fn stalled_stdin_does_not_hold_the_writer_lock() {
    let env = Env::new();
    env.base();
    let root = env.root();
    let args = [
        "--root",
        root.to_str().unwrap(),
        "layer",
        "create",
        "slow",
        "--from-tar",
        "-",
        "--pool",
        "t",
    ];
    let mut producer = crate::child(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let tar = tar_of(&[(b"f", tar::EntryType::Regular, b"hello", (0, 0))]);
    let mut stdin = producer.stdin.take().unwrap();
    stdin.write_all(&tar[..512]).unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Another writer meanwhile: must not wait for the stalled import.
    let other = crate::child(&[
        "--root",
        root.to_str().unwrap(),
        "layer",
        "snapshot",
        "base",
        "c1",
        "--pool",
        "t",
    ])
    .env("BLKDRV_LOCK_TIMEOUT", "2")
    .output()
    .unwrap();
    let other_ok = other.status.success();
    stdin.write_all(&tar[512..]).unwrap();
    drop(stdin);
    let out = producer.wait_with_output().unwrap();
    assert!(
        other_ok,
        "a writer was blocked by the stalled producer: {}",
        String::from_utf8_lossy(&other.stderr)
    );
    assert!(
        out.status.success(),
        "import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    env.ok(&["layer", "inspect", "slow", "--pool", "t"]);
}

/// Defect 8: bytes from a tar header reached the terminal raw.
fn forged_tar_names_cannot_forge_output() {
    let env = Env::new();
    let forged: &[u8] = b"x\ncreated layer forged (id 9)\x1b[2J\x1b]0;title\x07";
    // A refused name, and a size field the tar reader cannot parse (its error quotes the
    // entry's raw path).
    let absolute = tar_of(&[(
        b"/x\ncreated layer forged\x1b[2J",
        tar::EntryType::Regular,
        b"x",
        (0, 0),
    )]);
    let mut bad_size = tar_of(&[(forged, tar::EntryType::Regular, b"x", (0, 0))]);
    bad_size[124..136].copy_from_slice(b"\x1b[31m\n99999\x07");
    let mut h = tar::Header::new_old();
    h.as_mut_bytes().copy_from_slice(&bad_size[..512]);
    h.set_cksum();
    bad_size[..512].copy_from_slice(h.as_bytes());
    for (what, tar) in [("absolute", absolute), ("bad size", bad_size)] {
        let tar = write_tar(&env, "forged.tar", &tar);
        let o = env.run(&["layer", "create", "l", "--from-tar", &tar, "--pool", "t"]);
        assert_eq!(o.code, 2, "{what}: {}", o.stderr);
        assert_eq!(
            o.stderr.lines().count(),
            1,
            "{what}: one line: {:?}",
            o.stderr
        );
        let line = o.stderr.trim_end_matches('\n');
        assert!(
            !line.chars().any(|c| c.is_control()),
            "{what}: control characters reached the terminal: {:?}",
            o.stderr
        );
        assert!(o.stdout.is_empty(), "{:?}", o.stdout);
    }
}

/// Text a user stored (a layer comment, a volume label, a bind source path) comes back from
/// `history`, `volume inspect` and `container ls` escaped: one line per row, no escape
/// sequence reaches the terminal.
fn forged_comments_labels_and_mounts_cannot_forge_output() {
    let env = Env::new();
    let forged = "x\nfake-layer  1 second ago  0B  forged\x1b[2J\x1b]0;title\x07\u{202e}";
    let src = env.path("img");
    std::fs::create_dir_all(&src).unwrap();
    let host = env.path(&format!("bind{forged}"));
    std::fs::create_dir_all(&host).unwrap();
    let host = host.to_str().unwrap().to_string();
    env.ok(&[
        "layer",
        "create",
        "img",
        "--from-dir",
        src.to_str().unwrap(),
        "--comment",
        forged,
        "--pool",
        "t",
    ]);
    env.ok(&[
        "volume",
        "create",
        "vol",
        "--label",
        &format!("k={forged}"),
        "--pool",
        "t",
    ]);
    let bind = format!("{host}:/b");
    env.ok(&[
        "container",
        "create",
        "c1",
        "--image",
        "img",
        "-v",
        &bind,
        "--pool",
        "t",
    ]);
    for (args, rows) in [
        (&["history", "img", "--no-trunc", "--pool", "t"][..], 2),
        (&["volume", "inspect", "vol", "--pool", "t"], 10),
        (&["container", "ls", "--pool", "t"], 2),
        (&["container", "inspect", "c1", "--pool", "t"], 9),
    ] {
        let o = env.ok(args);
        assert_eq!(o.stdout.lines().count(), rows, "{args:?}: {:?}", o.stdout);
        assert!(
            !o.stdout
                .chars()
                .any(|c| c.is_control() && c != '\n' || c == '\u{202e}'),
            "{args:?}: control characters reached the terminal: {:?}",
            o.stdout
        );
        assert!(o.stdout.contains("forged"), "{args:?}: {:?}", o.stdout);
    }
    // JSON carries the text as it was given.
    let h = json(&env, &["history", "img", "--pool", "t"]);
    assert_eq!(h[0]["comment"], forged);
    env.ok(&["container", "rm", "c1", "--pool", "t"]);
}

/// Defect 9: bad input is exit 2 everywhere.
fn bad_paths_exit_2() {
    let env = Env::new();
    env.base();
    env.ok(&["layer", "snapshot", "base", "c1", "--pool", "t"]);
    let long = format!("/tmp/{}", "x".repeat(300));
    let long_target = format!("{long}/m");
    for args in [
        vec![
            "layer",
            "create",
            "a",
            "--from-dir",
            "/nonexistent",
            "--pool",
            "t",
        ],
        vec![
            "layer",
            "create",
            "a",
            "--from-dir",
            "/proc/self",
            "--pool",
            "t",
        ],
        vec!["layer", "create", "a", "--from-tar", &long, "--pool", "t"],
        vec!["layer", "create", "a", "--from-dir", &long, "--pool", "t"],
        vec!["layer", "mount", "c1", &long_target, "--pool", "t"],
    ] {
        env.refused(&args, "");
    }
}

/// Defect 9: SIGTERM ends a command at its next safe point and leaves no temporary mount.
fn sigterm_during_import_rolls_back() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), vec![7u8; 1 << 20]).unwrap();
    let root = env.root();
    let mut child = crate::child(&[
        "--root",
        root.to_str().unwrap(),
        "layer",
        "create",
        "big",
        "--from-dir",
        src.to_str().unwrap(),
        "--pool",
        "t",
    ])
    .env(blkdrv_pool::crash::ENV_STALL, "create:mounted")
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let tmp = root.join("pools/t/tmp");
    let import_mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| {
                l.split(' ')
                    .nth(4)
                    .is_some_and(|t| t.starts_with(tmp.to_str().unwrap()))
            })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !import_mounted() {
        assert!(std::time::Instant::now() < deadline, "import never mounted");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert_eq!(
        status.code(),
        Some(143),
        "exit after SIGTERM: {status:?} {stderr}"
    );
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(!import_mounted(), "a temporary mount was left behind");
    let layers = json(&env, &["layer", "ls", "--pool", "t"]);
    assert_eq!(layers.as_array().map(Vec::len), Some(0), "{layers}");
    let check = env.ok(&["pool", "check", "t"]);
    assert!(
        !check.stdout.contains("recovered") && !check.stderr.contains("recovered"),
        "the interrupted command should have rolled back itself: {}",
        check.stdout
    );
}

/// Defect 9: with store.db deleted, the hint must be a command that works.
fn deleted_store_hint_is_a_command_that_works() {
    let env = Env::new();
    std::fs::remove_file(env.root().join("pools/t/store.db")).unwrap();
    let o = env.run(&["pool", "status", "t"]);
    assert_ne!(o.code, 0);
    let hint = o
        .stderr
        .split('`')
        .nth(1)
        .unwrap_or_else(|| panic!("no command in the hint: {}", o.stderr))
        .to_string();
    let words: Vec<&str> = hint.split_whitespace().collect();
    assert_eq!(words.first(), Some(&"blkdrv"), "{hint}");
    let o = env.run(&words[1..]);
    assert_eq!(o.code, 0, "the hint `{hint}` failed: {}", o.stderr);
    assert!(!env.root().join("pools/t").exists());
}

/// `[pool] fs = "xfs"` (the README's example) broke `pool init --driver btrfs`.
fn host_fs_default_applies_only_to_drivers_that_take_it() {
    let env = Env::new();
    let cfg = env.path("blkdrv.toml");
    std::fs::write(&cfg, "[pool]\nfs = \"ext4\"\n").unwrap();
    let root = env.root();
    let with_cfg = |args: &[&str]| {
        let mut full: Vec<std::ffi::OsString> = vec![
            "blkdrv".into(),
            "--root".into(),
            root.clone().into(),
            "--config".into(),
            cfg.clone().into(),
        ];
        full.extend(args.iter().map(Into::into));
        kit::cli::run_cli(full)
    };
    let o = with_cfg(&["pool", "init", "b", "--driver", "btrfs", "--size", "300M"]);
    assert_eq!(o.code, 0, "btrfs with a host fs default: {}", o.stderr);
    env.ok(&["pool", "destroy", "b"]);
    // Where the driver takes it, the default applies.
    let o = with_cfg(&["pool", "init", "v", "--driver", "vfs", "--size", "300M"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    let st = json(&env, &["pool", "status", "v"]);
    assert_eq!(st["options"]["fs"], "ext4", "{st}");
    env.ok(&["pool", "destroy", "v"]);
}
