//! Hardening: loop devices held by other processes, deleted backing files, and what `pool
//! destroy` leaves behind (issue #11, defects 2 and 4).

use blkdrv_drivers::sys::{loopdev, mount};
use kit::cli::Env;
use kit::trial::trial;
use libtest_mimic::Trial;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub fn trials() -> Vec<Trial> {
    vec![
        trial(
            "loopdev::init_after_destroy_with_held_loop_keeps_new_pool",
            init_after_destroy_with_held_loop_keeps_new_pool,
        ),
        trial(
            "loopdev::destroy_with_held_loop_refused_without_force",
            destroy_with_held_loop_refused_without_force,
        ),
        trial(
            "loopdev::destroy_force_corrupt_store_leaves_no_mount",
            || destroy_force_corrupt_store_leaves_no_mount("overlay"),
        ),
        trial(
            "loopdev::destroy_force_corrupt_store_leaves_no_mount_btrfs",
            || destroy_force_corrupt_store_leaves_no_mount("btrfs"),
        ),
        trial(
            "loopdev::destroy_names_process_using_pool_mount",
            destroy_names_process_using_pool_mount,
        ),
        trial(
            "loopdev::destroy_force_names_process_in_lazily_detached_layer",
            || destroy_force_names_process_in_lazily_detached_layer(true),
        ),
        trial("loopdev::destroy_force_names_process_in_busy_layer", || {
            destroy_force_names_process_in_lazily_detached_layer(false)
        }),
        trial(
            "loopdev::find_matches_inode_not_path",
            find_matches_inode_not_path,
        ),
    ]
}

/// A process keeping a loop device attached; killed on drop.
struct Holder {
    child: Child,
}

impl Holder {
    /// `sleep 600 < /dev/loopN`: holds the device open.
    fn new(dev: &Path) -> Holder {
        let f = std::fs::File::open(dev).unwrap_or_else(|e| panic!("open {}: {e}", dev.display()));
        let child = Command::new("sleep")
            .arg("600")
            .stdin(Stdio::from(f))
            .spawn()
            .expect("spawn sleep");
        Holder { child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `sleep 600` with its working directory in `dir` (keeps that mount busy).
    fn in_dir(dir: &Path) -> Holder {
        let child = Command::new("sleep")
            .arg("600")
            .current_dir(dir)
            .spawn()
            .expect("spawn sleep");
        Holder { child }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The loop devices attached to files under `dir` (deleted ones included).
fn loops_under(dir: &Path) -> Vec<PathBuf> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    loopdev::list()
        .unwrap()
        .into_iter()
        .filter(|(_, f)| f.starts_with(&dir))
        .map(|(d, _)| d)
        .collect()
}

/// The pool's one loop device (overlay pools have one backing file); a device left attached to
/// an earlier pool's deleted file is not it.
fn pool_loop(env: &Env) -> PathBuf {
    let file = env.root().join("pools/t/backing/data.img");
    let devs = loopdev::find_by_backing_file(&file.canonicalize().unwrap()).unwrap();
    assert_eq!(devs.len(), 1, "one loop device for the pool: {devs:?}");
    devs[0].clone()
}

fn from_dir(env: &Env, name: &str) {
    let src = env.path(&format!("src-{name}"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("file"), name).unwrap();
    env.ok(&[
        "layer",
        "create",
        name,
        "--from-dir",
        src.to_str().unwrap(),
        "--pool",
        "t",
    ]);
}

/// The reproduction: a loop device still attached to the previous pool's deleted
/// backing file must not receive the new pool (it would live in the dead inode and be gone at
/// the next deactivate).
fn init_after_destroy_with_held_loop_keeps_new_pool() {
    let env = Env::with_pool(&["--driver", "overlay", "--size", "1G"]);
    let old = pool_loop(&env);
    let holder = Holder::new(&old);
    let o = env.run(&["pool", "destroy", "t", "--force"]);
    assert!(
        o.stderr.contains(&format!("pid {} (sleep)", holder.pid())),
        "destroy --force names the holder of {}: {}{}",
        old.display(),
        o.stdout,
        o.stderr
    );
    env.ok(&["pool", "init", "t", "--driver", "overlay", "--size", "1G"]);
    let new = pool_loop(&env);
    assert_ne!(
        new, old,
        "the new pool must not reuse the held, deleted device"
    );
    from_dir(&env, "precious");
    drop(holder);
    env.ok(&["pool", "deactivate", "t"]);
    let ls = env.ok(&["layer", "ls", "--pool", "t"]);
    assert!(ls.stdout.contains("precious"), "layer lost: {}", ls.stdout);
}

/// Without --force, a held loop device stops destroy before anything is torn down; with
/// --force the directory goes but the command says which device stays and who holds it.
fn destroy_with_held_loop_refused_without_force() {
    let env = Env::with_pool(&["--driver", "overlay", "--size", "1G"]);
    env.base();
    let dev = pool_loop(&env);
    let holder = Holder::new(&dev);
    let o = env.run(&["pool", "destroy", "t"]);
    assert_eq!(
        o.code, 1,
        "destroy of a held pool: {}{}",
        o.stdout, o.stderr
    );
    let who = format!("pid {} (sleep)", holder.pid());
    assert!(
        o.stderr.contains(&who) && o.stderr.contains(dev.to_str().unwrap()),
        "names {} and its holder {who}: {}",
        dev.display(),
        o.stderr
    );
    assert!(!o.stdout.contains("destroyed"), "{}", o.stdout);
    // Still usable.
    env.state();
    from_dir(&env, "after");

    let o = env.run(&["pool", "destroy", "t", "--force"]);
    assert_eq!(
        o.code, 1,
        "held device with --force: {}{}",
        o.stdout, o.stderr
    );
    assert!(
        o.stderr.contains("still attached") && o.stderr.contains(&who),
        "reports the device still attached and its holder: {}",
        o.stderr
    );
    assert!(
        !env.root().join("pools/t").exists(),
        "pool directory removed"
    );
    drop(holder);
    // The holder was the last user: autoclear detaches the device (or the guard's teardown).
    let _ = loopdev::detach(&dev);
}

/// With the store unreadable, --force still finds the pool's mounts from the mount table: a
/// layer mounted outside the pool directory (overlay: an overlay whose layers live under it;
/// btrfs: a subvolume mount of the pool's loop device).
fn destroy_force_corrupt_store_leaves_no_mount(driver: &str) {
    let env = Env::with_pool(&["--driver", driver, "--size", "1G"]);
    env.base();
    let m = env.mount_rw("base", "m");
    let m = m.canonicalize().unwrap();
    std::fs::write(env.root().join("pools/t/store.db"), vec![0x5au8; 8192]).unwrap();
    let o = env.run(&["pool", "destroy", "t", "--force"]);
    assert_eq!(o.code, 0, "destroy --force: {}{}", o.stdout, o.stderr);
    let left: Vec<_> = mount::mountinfo()
        .unwrap()
        .into_iter()
        .filter(|i| i.target == m || i.target.starts_with(env.root()))
        .map(|i| i.target)
        .collect();
    assert!(left.is_empty(), "mounts left behind: {left:?}");
    assert!(
        loops_under(&env.root()).is_empty(),
        "loop devices left: {:?}",
        loops_under(&env.root())
    );
}

/// A process working inside the pool's own filesystem mount would make destroy's unmount fail
/// half-way: destroy names it first and leaves the pool as it was.
fn destroy_names_process_using_pool_mount() {
    let env = Env::with_pool(&["--driver", "overlay", "--size", "1G"]);
    env.base();
    let inner = mount::mounts_under(&env.root().join("pools/t")).unwrap();
    assert!(!inner.is_empty(), "the overlay pool mounts its filesystem");
    let holder = Holder::in_dir(&inner[0]);
    let o = env.run(&["pool", "destroy", "t"]);
    assert_eq!(
        o.code, 1,
        "destroy of a busy pool: {}{}",
        o.stdout, o.stderr
    );
    assert!(
        o.stderr.contains(&format!("pid {} (sleep)", holder.pid())),
        "names the process: {}",
        o.stderr
    );
    env.state();
    drop(holder);
    env.ok(&["pool", "destroy", "t"]);
    assert!(loops_under(&env.root()).is_empty(), "loop device detached");
}

/// A shell left in a layer mount keeps the lazily detached filesystem, and so the loop device,
/// alive after destroy --force: the report names that process. With a readable store the
/// layer's unmount fails (busy) and --force goes on the same way.
fn destroy_force_names_process_in_lazily_detached_layer(corrupt_store: bool) {
    let env = Env::with_pool(&["--driver", "overlay", "--size", "1G"]);
    env.base();
    let m = env.mount_rw("base", "m");
    let holder = Holder::in_dir(&m);
    if corrupt_store {
        std::fs::write(env.root().join("pools/t/store.db"), vec![0x5au8; 8192]).unwrap();
    }
    let o = env.run(&["pool", "destroy", "t", "--force"]);
    assert_eq!(o.code, 1, "destroy --force: {}{}", o.stdout, o.stderr);
    assert!(
        o.stderr.contains("still attached")
            && o.stderr.contains(&format!("pid {} (sleep)", holder.pid())),
        "names the process in the layer: {}",
        o.stderr
    );
    let m = m.canonicalize().unwrap_or(m);
    assert!(
        !mount::mountinfo().unwrap().iter().any(|i| i.target == m),
        "layer mount left in the table"
    );
    assert!(
        !env.root().join("pools/t").exists(),
        "pool directory removed"
    );
    let left = loops_under(&env.root());
    drop(holder);
    // The lazily detached filesystem goes with the holder, then autoclear detaches the device;
    // detach explicitly in case the kernel defers it.
    for d in left {
        let _ = loopdev::detach(&d);
    }
}

/// A device attached to a file that was deleted and recreated at the same path is not that
/// file's device.
fn find_matches_inode_not_path() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let img = dir.path().join("x.img");
    loopdev::create_sparse_file(&img, blkdrv_drivers::Bytes::mib(16)).unwrap();
    let lo = loopdev::attach(&img).unwrap();
    let img = img.canonicalize().unwrap();
    assert_eq!(
        loopdev::find_by_backing_file(&img).unwrap(),
        vec![lo.path.clone()]
    );
    std::fs::remove_file(&img).unwrap();
    loopdev::create_sparse_file(&img, blkdrv_drivers::Bytes::mib(16)).unwrap();
    assert!(
        loopdev::find_by_backing_file(&img).unwrap().is_empty(),
        "{} is attached to the deleted file, not the new one",
        lo.path.display()
    );
    let again = loopdev::attach(&img).unwrap();
    assert_ne!(
        again.path, lo.path,
        "attach reused the deleted file's device"
    );
    let _ = loopdev::detach(&again.path);
    let _ = loopdev::detach(&lo.path);
}
