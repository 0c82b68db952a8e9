//! btrfs-specific behaviour, through the CLI, on real btrfs pools on loop devices. Needs root.
//! (Loopback growth, exclusive usage and deactivate/activate are conformance cases.)

#[path = "direct.rs"]
mod direct;

use kit::cli::{base_of, detail, json, layer, tool, write_file, Env, MIB};
use std::fs;
use std::path::{Path, PathBuf};

fn btrfs_env() -> Env {
    Env::with_pool(&["--driver", "btrfs", "--size", "1G"])
}

fn pool_mnt(env: &Env) -> PathBuf {
    env.root().join("pools/t/driver/mnt")
}

fn subvolumes(env: &Env) -> Vec<String> {
    tool(
        "btrfs",
        &[
            "subvolume".as_ref(),
            "list".as_ref(),
            pool_mnt(env).as_os_str(),
        ],
    )
    .lines()
    .map(|l| l.rsplit(' ').next().unwrap_or("").to_string())
    .collect()
}

#[test]
fn qgroups_report_exclusive_bytes_of_a_snapshot() {
    let env = btrfs_env();
    base_of(&env, 100 * MIB);
    env.ok(&["layer", "snapshot", "base", "c", "--pool", "t"]);
    let m = env.mount_rw("c", "m");
    write_file(&m.join("five"), 5 * MIB).unwrap();
    env.ok(&["layer", "umount", "c", "--pool", "t"]);
    let c = layer(&env, "c");
    let excl = c["size_bytes"].as_u64().unwrap();
    let rfer = c["referenced_bytes"].as_u64().unwrap();
    assert!(
        (5 * MIB..6 * MIB).contains(&excl),
        "5 MiB written into a snapshot of 100 MiB: exclusive {excl}"
    );
    assert!((105 * MIB..107 * MIB).contains(&rfer), "referenced {rfer}");
    assert_eq!(
        c["inodes"],
        serde_json::Value::Null,
        "qgroups count no inodes"
    );
    // The committed size is the qgroup figure too, and `layer ls` shows it.
    env.ok(&["layer", "commit", "c", "--pool", "t"]);
    let ls = json(&env, &["layer", "ls", "--pool", "t"]);
    let c = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "c")
        .unwrap();
    assert!((5 * MIB..6 * MIB).contains(&c["size_bytes"].as_u64().unwrap()));
    let base = ls
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "base")
        .unwrap();
    assert!(base["size_bytes"].as_u64().unwrap() >= 100 * MIB);
}

#[test]
fn size_limit_is_a_qgroup_limit() {
    let env = btrfs_env();
    base_of(&env, MIB);
    env.ok(&[
        "layer", "snapshot", "base", "small", "--size", "10M", "--pool", "t",
    ]);
    assert_eq!(layer(&env, "small")["limit_bytes"], 10 * MIB);
    let m = env.mount_rw("small", "m");
    let big = vec![1u8; 20 * MIB as usize];
    let err = fs::write(m.join("big"), &big).and_then(|_| {
        // The quota is checked as data reaches the disk.
        fs::File::open(m.join("big"))?.sync_all()
    });
    env.ok(&["layer", "umount", "small", "--pool", "t"]);
    let err = err.expect_err("writing 20 MiB into a 10 MiB layer must fail");
    assert_eq!(err.raw_os_error(), Some(nix::libc::EDQUOT), "{err}");
    let o = env.run(&[
        "layer", "snapshot", "base", "x", "--size", "lots", "--pool", "t",
    ]);
    assert_eq!(o.code, 2, "a limit that is not a size: {}", o.stderr);
}

#[test]
fn layer_mounted_outside_blkdrv_is_not_removed() {
    let env = btrfs_env();
    base_of(&env, MIB);
    env.ok(&["layer", "snapshot", "base", "c", "--pool", "t"]);
    // Mount the subvolume behind blkdrv's back, as another tool or a leaked namespace would.
    let status = json(&env, &["pool", "status", "t"]);
    let dev = detail(&status, "Backing Device");
    assert!(!dev.is_empty(), "no Backing Device: {status}");
    let id = layer(&env, "c")["id"].as_u64().unwrap();
    let m = env.path("elsewhere");
    fs::create_dir_all(&m).unwrap();
    nix::mount::mount(
        Some(Path::new(&dev)),
        &m,
        Some("btrfs"),
        nix::mount::MsFlags::empty(),
        Some(format!("subvol=btrfs/{id}").as_str()),
    )
    .unwrap();
    let o = env.run(&["layer", "rm", "c", "--pool", "t"]);
    nix::mount::umount(&m).unwrap();
    assert_ne!(o.code, 0, "removal of a mounted subvolume must fail");
    assert!(
        o.stderr.contains(m.to_str().unwrap()),
        "says where: {}",
        o.stderr
    );
    assert_eq!(
        layer(&env, "c")["state"],
        "active",
        "layer kept, not half-deleted"
    );
    env.ok(&["layer", "rm", "c", "--pool", "t"]);
}

#[test]
fn nested_subvolumes_do_not_block_removal() {
    let env = btrfs_env();
    base_of(&env, MIB);
    env.ok(&["layer", "snapshot", "base", "c", "--pool", "t"]);
    let m = env.mount_rw("c", "m");
    for sub in ["inner", "inner/deeper"] {
        tool(
            "btrfs",
            &[
                "subvolume".as_ref(),
                "create".as_ref(),
                m.join(sub).as_os_str(),
            ],
        );
    }
    fs::write(m.join("inner/deeper/f"), "x").unwrap();
    env.ok(&["layer", "umount", "c", "--pool", "t"]);
    env.ok(&["layer", "commit", "c", "--pool", "t"]);
    assert!(
        subvolumes(&env).len() >= 4,
        "base, c and two nested: {:?}",
        subvolumes(&env)
    );
    env.ok(&["layer", "rm", "c", "--pool", "t"]);
    let left = subvolumes(&env);
    assert_eq!(left.len(), 1, "only base is left: {left:?}");
    let o = env.ok(&["pool", "check", "t"]);
    assert!(o.stdout.contains("consistent"), "{}", o.stdout);
}

#[test]
fn a_pool_whose_filesystem_changed_is_refused() {
    let env = btrfs_env();
    base_of(&env, MIB);
    // Take the pool's filesystem down and put a different btrfs on its file.
    let mnt = pool_mnt(&env);
    nix::mount::umount(&mnt).unwrap();
    let file = env.root().join("pools/t/backing/data.img");
    tool(
        "mkfs.btrfs",
        &["-q".as_ref(), "-f".as_ref(), file.as_os_str()],
    );
    let o = env.run(&["layer", "ls", "--pool", "t"]);
    assert_ne!(o.code, 0);
    assert!(
        o.stderr.contains("identity mismatch") && o.stderr.contains("fs_uuid"),
        "{}",
        o.stderr
    );
    assert!(
        !blkdrv_drivers::sys::mount::is_mountpoint(&mnt).unwrap(),
        "not mounted"
    );
}

#[test]
fn status_shows_allocation_and_check_finds_orphan_subvolumes() {
    let env = btrfs_env();
    base_of(&env, MIB);
    let o = env.ok(&["pool", "status", "t"]);
    for line in [
        "Data:",
        "Metadata:",
        "Unallocated:",
        "Quotas: on",
        "Pending Subvolume Cleanups:",
    ] {
        assert!(o.stdout.contains(line), "{line} in {}", o.stdout);
    }
    let orphan = pool_mnt(&env).join("btrfs/777");
    tool(
        "btrfs",
        &["subvolume".as_ref(), "create".as_ref(), orphan.as_os_str()],
    );
    let o = env.run(&["pool", "check", "t"]);
    assert_eq!(o.code, 2);
    assert!(o.stdout.contains("orphan: object 777"), "{}", o.stdout);
    env.ok(&["pool", "check", "t", "--repair"]);
    assert!(!pool_mnt(&env).join("btrfs/777").exists());
}

#[test]
fn quotas_off_means_no_sizes_and_no_limits() {
    let env = Env::with_pool(&["--driver", "btrfs", "--size", "1G", "--no-quota"]);
    base_of(&env, MIB);
    assert_eq!(layer(&env, "base")["size_bytes"], serde_json::Value::Null);
    let o = env.run(&[
        "layer", "snapshot", "base", "c", "--size", "10M", "--pool", "t",
    ]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("quotas off"), "{}", o.stderr);
    env.ok(&["layer", "snapshot", "base", "c", "--pool", "t"]);
    let o = env.ok(&["pool", "status", "t"]);
    assert!(o.stdout.contains("Quotas: off"), "{}", o.stdout);
}

#[test]
fn limits_are_refused_by_drivers_without_them() {
    let env = Env::new();
    env.base();
    let o = env.run(&[
        "layer", "snapshot", "base", "c", "--size", "10M", "--pool", "t",
    ]);
    assert_ne!(o.code, 0);
    assert!(o.stderr.contains("does not support"), "{}", o.stderr);
    let o = env.ok(&["layer", "ls", "--json", "--pool", "t"]);
    assert!(
        !o.stdout.contains("\"c\""),
        "nothing left of the refused snapshot"
    );
}

fn direct_btrfs(options: &[(&str, &str)]) -> direct::Direct {
    direct::Direct::new("btrfs", blkdrv_drivers::Bytes::gib(1), options).unwrap()
}

#[test]
fn volumes_and_copies_are_subvolumes_and_snapshots() {
    let d = direct_btrfs(&[]);
    direct::volume_copies(&d).unwrap();
    direct::layer_copy_keeps_deletions(&d).unwrap();
}

#[test]
fn volume_limit_is_a_qgroup_limit() {
    use blkdrv_drivers::{Bytes, LayerChain};
    let d = direct_btrfs(&[]);
    let v = LayerChain::volume(direct::id(1));
    d.driver.create_volume(v.id, Some(Bytes::mib(10))).unwrap();
    let m = d.mount_rw(&v).unwrap();
    let err = direct::write_synced(&m.join("big"), 20 << 20)
        .expect_err("writing 20 MiB into a 10 MiB volume must fail");
    assert_eq!(err.raw_os_error(), Some(nix::libc::EDQUOT), "{err}");
    // Below the limit is fine, and the copy of a limited volume is a subvolume of its own.
    fs::remove_file(m.join("big")).unwrap();
    direct::write_synced(&m.join("small"), 4 << 20).unwrap();
    d.driver.clone_active(&v, direct::id(2)).unwrap();
    d.unmount(&m).unwrap();
    let u = d.driver.usage(&v).unwrap();
    assert!(u.referenced.unwrap().0 >= 4 << 20, "{u:?}");
    d.driver.remove(v.id).unwrap();
    d.driver.remove(direct::id(2)).unwrap();
    assert!(d.list().unwrap().is_empty());
}

#[test]
fn volume_limits_need_quotas() {
    let d = direct_btrfs(&[("quota", "off")]);
    let e = d
        .driver
        .create_volume(direct::id(1), Some(blkdrv_drivers::Bytes::mib(10)))
        .unwrap_err();
    assert!(
        matches!(e, blkdrv_drivers::DriverError::Unsupported { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("quotas off"), "{e}");
    assert!(d.list().unwrap().is_empty(), "the refused volume was made");
    d.driver.create_volume(direct::id(1), None).unwrap();
    assert_eq!(d.list().unwrap(), [direct::id(1)]);
}
