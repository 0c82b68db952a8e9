//! `blkdrv storage-setup` with bad files, on the host: each is refused with one line naming the
//! variable (and line), exit 2, and nothing is created. The real setup on a raw disk is
//! tests/storage_setup (the VM: LVM thin pools need dm-thin).

use kit::cli::{json, run_cli, Env};

fn write(env: &Env, name: &str, text: &str) -> String {
    let p = env.path(name);
    std::fs::write(&p, text).unwrap();
    p.to_string_lossy().into_owned()
}

fn pools(env: &Env) -> usize {
    json(env, &["pool", "ls"]).as_array().unwrap().len()
}

#[test]
fn storage_setup_bad_files_are_refused_and_change_nothing() {
    let env = Env::new();
    for (i, (text, needle)) in [
        ("VG=vg\nDEVS=$(lsblk -no NAME)\n", ":2: DEVS: '$'"),
        ("VG=vg\nDEVS=\"${DISK}\"\n", ":2: DEVS: '$'"),
        (
            "VG=vg\nDEVS=/dev/vdb rm -rf /\n",
            ":2: DEVS: more than one word",
        ),
        ("VG=vg\necho hi\n", ":2: not a NAME=value"),
        ("VG='vg\n", ":1: VG: unterminated"),
        (
            "VG=vg\nDEVZ=/dev/vdb\nDATASIZE=1G\n",
            "DEVZ (line 2), DATASIZE (line 3)",
        ),
        (
            "VG=vg\nGROWPART=true\n",
            "GROWPART=\"true\" is not supported",
        ),
        (
            "VG=vg\nSTORAGE_DRIVER=overlay2\n",
            "STORAGE_DRIVER=\"overlay2\" is not supported",
        ),
        (
            "VG=vg\nCONTAINER_ROOT_LV_NAME=lv\n",
            "CONTAINER_ROOT_LV_NAME=\"lv\" is not supported",
        ),
        (
            "VG=vg\nEXTRA_STORAGE_OPTIONS=\"--storage-opt dm.fs=ext4\"\n",
            "EXTRA_STORAGE_OPTIONS",
        ),
        ("VG=vg\nDATA_SIZE=40%PVS\n", ":2: DATA_SIZE=\"40%PVS\""),
        ("VG=vg\nCHUNK_SIZE=96K\n", "CHUNK_SIZE=\"96K\""),
        (
            "VG=vg\nPOOL_AUTOEXTEND_THRESHOLD=0\n",
            "POOL_AUTOEXTEND_THRESHOLD",
        ),
        ("VG=vg\nWIPE_SIGNATURES=yes\n", "WIPE_SIGNATURES"),
        ("DEVS=/dev/vdb\n", "VG is not set"),
        ("VG=vg\nCONTAINER_THINPOOL=bad/name\n", "CONTAINER_THINPOOL"),
        // Past the parser: the device check runs before anything is made.
        (
            "VG=blkdrv-test-vg\nDEVS=/dev/blkdrv-test-no-such-disk\nDEVICE_WAIT_TIMEOUT=0\n",
            "/dev/blkdrv-test-no-such-disk did not appear",
        ),
        // A name with control characters is no name.
        ("VG=vg\nDEVZ\x1b[31m=1\n", "not a NAME=value"),
    ]
    .into_iter()
    .enumerate()
    {
        let f = write(&env, &format!("dss-{i}"), text);
        env.refused(&["storage-setup", "--config", &f], needle);
    }
    env.refused(
        &[
            "storage-setup",
            "--config",
            "/nonexistent/docker-storage-setup",
        ],
        "/nonexistent/docker-storage-setup",
    );
    assert_eq!(pools(&env), 1, "only the env's own pool");
    assert!(!env.root().join("pools/docker-pool").exists());
}

#[test]
fn storage_setup_config_before_and_after_the_command() {
    let env = Env::new();
    let bad = write(&env, "dss-bad", "VG=vg\nFOO=1\n");
    let toml = write(&env, "blkdrv.toml", "this is = = not toml\n");
    let root = env.root();
    let root = root.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut full = vec!["blkdrv", "--root", root];
        full.extend_from_slice(args);
        run_cli(full.into_iter().map(Into::into).collect())
    };
    // After the command: the container-storage-setup file, in either spelling and position.
    for args in [
        vec![
            "--config",
            "/nonexistent/blkdrv.toml",
            "storage-setup",
            "--config",
            &bad,
        ],
        vec!["storage-setup", "--reset", "--config", &bad],
        vec!["storage-setup", &format!("--config={bad}")],
    ] {
        let o = run(&args);
        assert_eq!(o.code, 2, "{args:?}: {}", o.stderr);
        assert!(o.stderr.contains("FOO (line 2)"), "{args:?}: {}", o.stderr);
    }
    // Before it: blkdrv's own config, read as TOML (a good setup file gets that far).
    let good = write(
        &env,
        "dss-good",
        "VG=vg\nDEVS=/dev/blkdrv-test-no-such-disk\nDEVICE_WAIT_TIMEOUT=0\n",
    );
    let o = run(&["--config", &toml, "storage-setup", "--config", &good]);
    assert_eq!(o.code, 2, "{}", o.stderr);
    assert!(o.stderr.contains("blkdrv.toml"), "{}", o.stderr);
    // The same pair with the host config fine: the setup file is what fails now.
    let o = run(&[
        "--config",
        "/nonexistent/blkdrv.toml",
        "storage-setup",
        "--config",
        &good,
    ]);
    assert!(o.stderr.contains("did not appear"), "{}", o.stderr);
    // `--help` says which is which.
    let o = run(&["storage-setup", "--help"]);
    assert_eq!(o.code, 0);
    assert!(
        o.stdout.contains("/etc/sysconfig/docker-storage-setup"),
        "{}",
        o.stdout
    );
    assert_eq!(pools(&env), 1);
}

#[test]
fn storage_setup_leaves_a_pool_it_did_not_make_alone() {
    // The env's overlay pool "t" has the name the file gives its thin pool.
    let env = Env::new();
    let f = write(
        &env,
        "dss",
        "VG=vg\nCONTAINER_THINPOOL=t\nDEVS=/dev/blkdrv-test-no-such-disk\n",
    );
    env.refused(
        &["storage-setup", "--config", &f],
        "is not the thin pool vg/t",
    );
    env.refused(
        &["storage-setup", "--reset", "--config", &f],
        "is not the thin pool vg/t",
    );
    assert_eq!(pools(&env), 1);
}
