//! Mounts in other mount namespaces (issue: hardening, defect 1). A writer running in a
//! service's private namespace must neither forget the host's mounts nor delete a layer that is
//! mounted where it cannot see; and a mount blkdrv never recorded still keeps its layer alive.

use kit::cli::{json, Env};
use kit::trial::trial;
use libtest_mimic::Trial;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "namespaces::writer_in_private_namespace_keeps_host_mounts",
            writer_in_private_namespace_keeps_host_mounts,
        ),
        trial(
            "namespaces::mount_in_other_namespace_blocks_remove::overlay",
            || mount_in_other_namespace_blocks_remove("overlay"),
        ),
        trial(
            "namespaces::mount_in_other_namespace_blocks_remove::vfs",
            || mount_in_other_namespace_blocks_remove("vfs"),
        ),
        trial(
            "namespaces::mount_in_other_namespace_blocks_remove::btrfs",
            || mount_in_other_namespace_blocks_remove("btrfs"),
        ),
        trial(
            "namespaces::record_of_a_dead_namespace_is_forgotten",
            record_of_a_dead_namespace_is_forgotten,
        ),
    ]
}

/// A process alone in a new, private mount namespace; killed on drop.
struct PrivateNs {
    child: Child,
}

impl PrivateNs {
    fn new() -> PrivateNs {
        let child = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare");
        let ns = PrivateNs { child };
        // Wait until the sleep runs in its own namespace.
        let own = std::fs::read_link("/proc/self/ns/mnt").unwrap();
        for _ in 0..200 {
            let theirs = std::fs::read_link(format!("/proc/{}/ns/mnt", ns.pid()));
            if theirs.is_ok_and(|t| t != own) {
                return ns;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("unshare did not enter a new mount namespace");
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `blkdrv <args>` run inside the namespace (this test binary in child mode, via nsenter).
    fn blkdrv(&self, env: &Env, args: &[&str]) -> (i32, String) {
        let root = env.root();
        let mut full = vec!["--root", root.to_str().unwrap()];
        full.extend_from_slice(args);
        let child = crate::child(&full);
        let mut cmd = Command::new("nsenter");
        cmd.args(["-t", &self.pid().to_string(), "-m", "--"])
            .arg(child.get_program())
            .envs(child.get_envs().filter_map(|(k, v)| Some((k, v?))));
        let out = cmd.output().expect("nsenter");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// A shell command run inside the namespace.
    fn sh(&self, script: &str) {
        let st = Command::new("nsenter")
            .args([
                "-t",
                &self.pid().to_string(),
                "-m",
                "--",
                "sh",
                "-c",
                script,
            ])
            .status()
            .expect("nsenter");
        assert!(st.success(), "in the namespace: {script}");
    }
}

impl Drop for PrivateNs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mounted_here(p: &Path) -> bool {
    let p = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(p.to_str().unwrap()))
}

/// Where `driver` keeps layer `name`'s files in the pool's backing mount.
fn layer_dir_of(env: &Env, driver: &str, name: &str) -> PathBuf {
    let id = json(env, &["layer", "inspect", name, "--pool", "t"])["id"]
        .as_u64()
        .unwrap();
    let dir = env.root().join(format!("pools/t/driver/mnt/{driver}/{id}"));
    match driver {
        "overlay" => dir.join("diff"),
        _ => dir,
    }
}

fn layer_dir(env: &Env, name: &str) -> PathBuf {
    layer_dir_of(env, "overlay", name)
}

/// The reproduction: `pool check` from a private namespace forgot the host's mount,
/// after which `layer rm` deleted a mounted layer and `pool destroy` leaked the mount.
fn writer_in_private_namespace_keeps_host_mounts() {
    let env = Env::new();
    env.base();
    env.ok(&["layer", "snapshot", "base", "c1", "--pool", "t"]);
    let ns = PrivateNs::new();
    // Mounted after the namespace was made: invisible from inside it.
    let m = env.mount_rw("c1", "m");
    std::fs::write(m.join("data"), "in use").unwrap();

    let (code, out) = ns.blkdrv(&env, &["pool", "check", "t"]);
    assert_eq!(code, 0, "pool check in the private namespace: {out}");
    assert!(
        !out.contains("forgot mount"),
        "the host mount was forgotten: {out}"
    );
    let (code, out) = ns.blkdrv(&env, &["layer", "snapshot", "base", "c2", "--pool", "t"]);
    assert_eq!(code, 0, "snapshot in the private namespace: {out}");
    assert!(
        !out.contains("forgot mount"),
        "the host mount was forgotten: {out}"
    );

    let rm = env.run(&["layer", "rm", "c1", "--pool", "t"]);
    assert_ne!(
        rm.code, 0,
        "layer rm removed a mounted layer: {}",
        rm.stdout
    );
    assert!(rm.stderr.contains("mounted"), "{}", rm.stderr);
    let (code, out) = ns.blkdrv(&env, &["layer", "rm", "c1", "--pool", "t"]);
    assert_ne!(
        code, 0,
        "layer rm from the namespace removed a mounted layer: {out}"
    );
    assert_eq!(std::fs::read_to_string(m.join("data")).unwrap(), "in use");

    // Unmounting from the private namespace unmounts where the mount lives.
    let (code, out) = ns.blkdrv(&env, &["layer", "umount", "c1", "--pool", "t"]);
    assert_eq!(code, 0, "umount from the namespace: {out}");
    assert!(!mounted_here(&m), "the host mount is still there");
    assert!(layer_dir(&env, "c1").exists());

    // destroy --force from the namespace takes the host's mounts down too.
    env.mount_rw("c1", "m2");
    let (code, out) = ns.blkdrv(&env, &["pool", "destroy", "t", "--force"]);
    assert_eq!(code, 0, "destroy from the namespace: {out}");
    assert!(
        !mounted_here(&env.path("m2")),
        "destroy leaked the host mount"
    );
}

/// A mount blkdrv never recorded, in another namespace: the kernel's mount tables keep the
/// layer from being deleted under it.
fn mount_in_other_namespace_blocks_remove(driver: &str) {
    let size = if driver == "btrfs" { "1G" } else { "400M" };
    let env = Env::with_pool(&["--driver", driver, "--size", size]);
    env.base();
    env.ok(&["layer", "snapshot", "base", "c1", "--pool", "t"]);
    let dir = layer_dir_of(&env, driver, "c1");
    std::fs::write(dir.join("kept"), "x").unwrap();
    let ns = PrivateNs::new();
    let target = env.path("elsewhere");
    std::fs::create_dir_all(&target).unwrap();
    ns.sh(&format!(
        "mount --bind '{}' '{}'",
        dir.display(),
        target.display()
    ));
    // Only in another namespace (a container's copy of the host's mounts, typically): the
    // removal is deferred, never done under the mount.
    let rm = env.run(&["layer", "rm", "c1", "--pool", "t"]);
    assert_eq!(rm.code, 0, "{}", rm.stderr);
    assert!(rm.stdout.contains("deferred"), "{}", rm.stdout);
    assert!(
        rm.stderr.contains("mount namespace"),
        "the note should say where: {}",
        rm.stderr
    );
    assert_eq!(
        json(&env, &["layer", "inspect", "c1", "--pool", "t"])["state"],
        "removing"
    );
    assert!(dir.join("kept").exists(), "the layer's data was deleted");
    drop(ns);
    // The namespace is gone, and its mount with it: the next writer finishes the removal.
    let check = env.ok(&["pool", "check", "t"]);
    assert!(
        check.stdout.contains("finished interrupted remove"),
        "{}",
        check.stdout
    );
    assert_ne!(env.run(&["layer", "inspect", "c1", "--pool", "t"]).code, 0);
    // A mount in this namespace that blkdrv did not make is refused outright.
    env.ok(&["layer", "snapshot", "base", "c2", "--pool", "t"]);
    let dir = layer_dir_of(&env, driver, "c2");
    let here = env.path("here");
    std::fs::create_dir_all(&here).unwrap();
    let st = Command::new("mount")
        .arg("--bind")
        .arg(&dir)
        .arg(&here)
        .status()
        .unwrap();
    assert!(st.success());
    let rm = env.run(&["layer", "rm", "c2", "--pool", "t"]);
    let _ = Command::new("umount").arg(&here).status();
    assert_ne!(rm.code, 0, "removed a layer under a mount: {}", rm.stdout);
    assert!(rm.stderr.contains("mounted at"), "{}", rm.stderr);
}

/// A mount recorded in a namespace that no longer exists is gone with it.
fn record_of_a_dead_namespace_is_forgotten() {
    let env = Env::new();
    env.base();
    env.ok(&["layer", "snapshot", "base", "c1", "--pool", "t"]);
    let ns = PrivateNs::new();
    let target = env.path("inner");
    let (code, out) = ns.blkdrv(
        &env,
        &[
            "layer",
            "mount",
            "c1",
            target.to_str().unwrap(),
            "--pool",
            "t",
        ],
    );
    assert_eq!(code, 0, "mount in the namespace: {out}");
    assert!(
        !mounted_here(&target),
        "a private mount showed up on the host"
    );
    // Alive: kept, and the layer is protected.
    let check = env.run(&["pool", "check", "t"]);
    assert_eq!(check.code, 0, "{}{}", check.stdout, check.stderr);
    assert_ne!(env.run(&["layer", "rm", "c1", "--pool", "t"]).code, 0);
    drop(ns);
    let check = env.ok(&["pool", "check", "t"]);
    assert!(
        check.stdout.contains("forgot mount") || check.stderr.contains("forgot mount"),
        "the dead namespace's mount should be forgotten: {}{}",
        check.stdout,
        check.stderr
    );
    env.ok(&["layer", "rm", "c1", "--pool", "t"]);
}
