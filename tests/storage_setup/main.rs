//! `blkdrv storage-setup` for real, in the VM on the raw virtio disks (`@devices` in
//! tests/vm/suites: BLKDRV_TEST_DEVICES="/dev/vdb /dev/vdc"): a container-storage-setup file
//! makes a VG and a thin-pool LV with its autoextend profile, a second run changes nothing,
//! `--reset` gives the disk back with no signature; an existing VG's free space; refusals leave
//! the disks as found. Bad files are tests/cli/storage_setup.rs, on the host.

use kit::cli::{run_in, tool, Out};
use kit::trial::{Case, VmTarget};
use libtest_mimic::Failed;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const CASES: &[(&str, Case)] = &[
    (
        "setup_makes_a_thin_pool_and_reset_gives_the_disk_back",
        setup_then_reset,
    ),
    (
        "existing_vg_free_space_exact_size_no_autoextend",
        existing_vg,
    ),
    ("refusals_leave_the_disks_as_found", refusals),
    ("the_vagrant_sample_sets_up_and_resets", vagrant_sample),
];

fn main() {
    kit::child::maybe_run_child();
    VmTarget {
        target: "storage_setup",
        // Two disks it may wipe, too: a host with dm-thin but no spare disks (Fedora, the
        // Vagrant guest) reports the cases ignored instead of failing them.
        available: || Path::new("/sys/class/misc/device-mapper").exists() && spare_disks() >= 2,
        lacking: "device-mapper (LVM thin pools) and two raw disks in BLKDRV_TEST_DEVICES",
        note: " (scripts/test.sh does)",
        missing: None,
    }
    .run(CASES)
}

fn spare_disks() -> usize {
    std::env::var("BLKDRV_TEST_DEVICES")
        .map(|d| d.split_whitespace().count())
        .unwrap_or(0)
}

/// A state root, the disks the cases may wipe, and the VGs they may make: all removed on drop,
/// pass or fail, so a failed case leaves no dm device, VG or label for the next one.
struct Scene {
    dir: tempfile::TempDir,
    disks: Vec<PathBuf>,
    vgs: Vec<&'static str>,
}

impl Scene {
    fn new(vgs: &[&'static str]) -> Result<Scene, Failed> {
        let disks = kit::config::get().devices.clone();
        if disks.len() < 2 {
            return Err(
                "needs two raw disks in BLKDRV_TEST_DEVICES (`@devices` in tests/vm/suites)".into(),
            );
        }
        let s = Scene {
            dir: tempfile::tempdir_in("/tmp").unwrap(),
            disks,
            vgs: vgs.to_vec(),
        };
        s.scrub();
        Ok(s)
    }

    fn disk(&self, i: usize) -> &str {
        self.disks[i].to_str().unwrap()
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }

    /// `blkdrv --root R --config /nonexistent [--json] ARGS`.
    fn blkdrv(&self, args: &[&str]) -> Out {
        run_in(&self.root(), args.iter().copied())
    }

    fn ok(&self, args: &[&str]) -> Result<Out, Failed> {
        let o = self.blkdrv(args);
        if o.code != 0 {
            return Err(format!("{args:?}: exit {}: {}{}", o.code, o.stdout, o.stderr).into());
        }
        Ok(o)
    }

    /// Whatever a case made: pools under the root, the VGs, PV labels and signatures.
    fn scrub(&self) {
        if let Ok(pools) = std::fs::read_dir(self.root()) {
            for p in pools.flatten() {
                let name = p.file_name().to_string_lossy().into_owned();
                let _ = self.blkdrv(&["pool", "destroy", "--force", &name]);
            }
        }
        for vg in &self.vgs {
            quiet("lvm", &["vgremove", "-ff", "-y", vg]);
        }
        for d in &self.disks {
            let d = d.to_str().unwrap();
            quiet("lvm", &["pvremove", "-ff", "-y", d]);
            quiet("wipefs", &["-a", "-q", d]);
        }
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        self.scrub();
    }
}

fn quiet(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn lvm(args: &[&str]) -> String {
    tool("lvm", args)
}

fn vgs() -> String {
    lvm(&["vgs", "--noheadings", "-o", "vg_name"])
}

fn pvs() -> String {
    lvm(&["pvs", "--noheadings", "-o", "pv_name"])
}

/// `FIELD` of an LV in bytes / as text.
fn lv_field(lv: &str, field: &str) -> String {
    lvm(&[
        "lvs",
        "--noheadings",
        "--units",
        "b",
        "--nosuffix",
        "-o",
        field,
        lv,
    ])
    .trim()
    .to_string()
}

/// What wipefs and blkid find on `disk`: empty when the disk is blank.
fn signatures(disk: &str) -> String {
    let listed = tool("wipefs", &[disk]);
    let probe = Command::new("blkid").args(["-p", disk]).output().unwrap();
    // blkid -p exits 2 when it finds nothing.
    let blkid = if probe.status.code() == Some(2) {
        String::new()
    } else {
        String::from_utf8_lossy(&probe.stdout).into_owned()
    };
    format!("{}{}", listed.trim(), blkid.trim())
}

fn json(o: &Out) -> Result<serde_json::Value, Failed> {
    serde_json::from_str(&o.stdout).map_err(|e| format!("not JSON ({e}): {}", o.stdout).into())
}

fn setup_then_reset() -> Result<(), Failed> {
    let s = Scene::new(&["blkdrv-css"])?;
    let disk = s.disk(0);
    // Something to wipe: WIPE_SIGNATURES=true overwrites it, as container-storage-setup did.
    tool("mkfs.ext4", &["-q", "-F", disk]);
    let name = Path::new(disk).file_name().unwrap().to_str().unwrap();
    let file = s.file(
        "docker-storage-setup",
        &format!(
            "# as on a Fedora host\nSTORAGE_DRIVER=devicemapper\nexport DEVS=\"{name}\"  # short name\n\
             VG=blkdrv-css\nCONTAINER_THINPOOL=css-pool\nDATA_SIZE=50%FREE\nMIN_DATA_SIZE=1G\n\
             CHUNK_SIZE=128K\nAUTO_EXTEND_POOL=yes\nPOOL_AUTOEXTEND_THRESHOLD=70\n\
             POOL_AUTOEXTEND_PERCENT=25\nWIPE_SIGNATURES=true\nDEVICE_WAIT_TIMEOUT=5\nGROWPART=false\n"
        ),
    );
    let started = std::time::Instant::now();
    let o = s.ok(&["--json", "storage-setup", "--config", &file])?;
    eprintln!("storage-setup took {:.1}s", started.elapsed().as_secs_f64());
    let j = json(&o)?;
    if j["created"] != true || j["status"]["driver"] != "devicemapper" || j["vg"] != "blkdrv-css" {
        return Err(format!("output: {j}").into());
    }
    let lv = "blkdrv-css/css-pool";
    let seg = lv_field(lv, "segtype");
    let chunk = lv_field(lv, "chunk_size");
    let profile = lv_field(lv, "lv_profile");
    if seg != "thin-pool" || chunk != "131072" || profile != "blkdrv-blkdrv-css-css-pool" {
        return Err(format!("lvs {lv}: segtype {seg}, chunk {chunk}, profile {profile}").into());
    }
    // Half of a 4 GiB disk's free space.
    let size: u64 = lv_field(lv, "lv_size").parse().unwrap();
    if !(1900 << 20..=2100 << 20).contains(&size) {
        return Err(format!("thin pool of {size} bytes, not 50%FREE of 4 GiB").into());
    }
    let text =
        std::fs::read_to_string("/etc/lvm/profile/blkdrv-blkdrv-css-css-pool.profile").unwrap();
    if !text.contains("thin_pool_autoextend_threshold = 70")
        || !text.contains("thin_pool_autoextend_percent = 25")
    {
        return Err(format!("autoextend profile: {text}").into());
    }
    // The pool holds data.
    let src = s.dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("hello"), "from storage-setup").unwrap();
    s.ok(&[
        "layer",
        "create",
        "base",
        "--from-dir",
        src.to_str().unwrap(),
        "--pool",
        "css-pool",
    ])?;
    let m = s.dir.path().join("m");
    s.ok(&[
        "layer",
        "mount",
        "base",
        m.to_str().unwrap(),
        "--pool",
        "css-pool",
    ])?;
    let read = std::fs::read_to_string(m.join("hello"));
    s.ok(&["layer", "umount", "base", "--pool", "css-pool"])?;
    if read.as_deref().ok() != Some("from storage-setup") {
        return Err(format!("layer data: {read:?}").into());
    }
    // At every boot: the same file again changes nothing.
    let o = s.ok(&["--json", "storage-setup", "--config", &file])?;
    let j = json(&o)?;
    if j["created"] != false || j["status"]["layers"] != 1 {
        return Err(format!("second run: {j}").into());
    }
    if !s.root().join("pools/css-pool").is_dir() {
        return Err("no pool directory under the root before --reset".into());
    }
    let started = std::time::Instant::now();
    let o = s.ok(&["storage-setup", "--reset", "--config", &file])?;
    eprintln!(
        "storage-setup --reset took {:.1}s",
        started.elapsed().as_secs_f64()
    );
    if !o.stdout.contains("no signature") {
        return Err(format!("reset said: {}", o.stdout).into());
    }
    let (v, p, sig) = (vgs(), pvs(), signatures(disk));
    if v.contains("blkdrv-css") || p.contains(disk) || !sig.is_empty() {
        return Err(format!("after --reset: vgs [{v}] pvs [{p}] signatures [{sig}]").into());
    }
    if s.root().join("pools/css-pool").exists() {
        return Err("the pool's directory is still there".into());
    }
    // A reset with nothing to reset is bad input.
    let o = s.blkdrv(&["storage-setup", "--reset", "--config", &file]);
    if o.code != 2 || !o.stderr.contains("css-pool") {
        return Err(format!("second reset: exit {}: {}", o.code, o.stderr).into());
    }
    Ok(())
}

fn existing_vg() -> Result<(), Failed> {
    let s = Scene::new(&["blkdrv-cssvg"])?;
    let disk = s.disk(1);
    lvm(&["pvcreate", "-y", disk]);
    lvm(&["vgcreate", "blkdrv-cssvg", disk]);
    let file = s.file(
        "dss",
        "VG=blkdrv-cssvg\nCONTAINER_THINPOOL=tp2\nDATA_SIZE=1G\nMIN_DATA_SIZE=\n\
         POOL_META_SIZE=8M\nAUTO_EXTEND_POOL=no\nCHUNK_SIZE=64K\n",
    );
    s.ok(&["storage-setup", "--config", &file])?;
    let lv = "blkdrv-cssvg/tp2";
    let size = lv_field(lv, "lv_size");
    let meta = lv_field(lv, "lv_metadata_size");
    if size != (1u64 << 30).to_string() || meta != (8u64 << 20).to_string() {
        return Err(format!("lvs {lv}: size {size}, metadata {meta}").into());
    }
    let text = std::fs::read_to_string("/etc/lvm/profile/blkdrv-blkdrv-cssvg-tp2.profile").unwrap();
    if !text.contains("thin_pool_autoextend_threshold = 100") {
        return Err(format!("AUTO_EXTEND_POOL=no: profile {text}").into());
    }
    s.ok(&["storage-setup", "--reset", "--config", &file])?;
    // The VG was the admin's: the thin pool goes, the VG and its PV stay.
    let lvs = lvm(&["lvs", "--noheadings", "-o", "lv_name", "blkdrv-cssvg"]);
    if !lvs.trim().is_empty() || !vgs().contains("blkdrv-cssvg") || !pvs().contains(disk) {
        return Err(format!("after --reset: lvs [{lvs}] vgs [{}] pvs [{}]", vgs(), pvs()).into());
    }
    Ok(())
}

fn refusals() -> Result<(), Failed> {
    let s = Scene::new(&["blkdrv-cssmin", "blkdrv-cssx"])?;
    let (a, b) = (s.disk(0).to_string(), s.disk(1).to_string());
    let refused = |file: &str, code: i32, needle: &str| -> Result<(), Failed> {
        let o = s.blkdrv(&["storage-setup", "--config", file]);
        if o.code != code || !o.stderr.contains(needle) || o.stderr.lines().count() != 1 {
            return Err(format!(
                "{file}: exit {} (want {code}), {:?} (want {needle:?})",
                o.code, o.stderr
            )
            .into());
        }
        // Nothing created: no pool (an empty pools directory may stay).
        let ls = s.ok(&["--json", "pool", "ls"])?;
        if json(&ls)? != serde_json::json!([]) {
            return Err(format!("{file}: a pool was left: {}", ls.stdout).into());
        }
        Ok(())
    };
    // A signature without WIPE_SIGNATURES=true: refused, the filesystem left alone.
    tool("mkfs.ext4", &["-q", "-F", &b]);
    let f = s.file(
        "sig",
        &format!("DEVS={b}\nVG=blkdrv-cssx\nDEVICE_WAIT_TIMEOUT=0\n"),
    );
    refused(&f, 2, "WIPE_SIGNATURES=true")?;
    if !signatures(&b).contains("ext4") || vgs().contains("blkdrv-cssx") {
        return Err(format!("after the refusal: {} / vgs {}", signatures(&b), vgs()).into());
    }
    quiet("wipefs", &["-a", "-q", &b]);
    // Less free space than MIN_DATA_SIZE: refused after vgcreate, which is rolled back.
    let f = s.file(
        "min",
        &format!("DEVS={b}\nVG=blkdrv-cssmin\nMIN_DATA_SIZE=100G\nDEVICE_WAIT_TIMEOUT=0\n"),
    );
    refused(&f, 1, "less than the minimum data size")?;
    let (v, p, sig) = (vgs(), pvs(), signatures(&b));
    if v.contains("blkdrv-cssmin") || p.contains(&b) || !sig.is_empty() {
        return Err(format!("rollback left: vgs [{v}] pvs [{p}] signatures [{sig}]").into());
    }
    // DEVS for a VG that exists: blkdrv does not add disks to someone's VG.
    lvm(&["pvcreate", "-y", &b]);
    lvm(&["vgcreate", "blkdrv-cssx", &b]);
    let f = s.file(
        "add",
        &format!("DEVS={a}\nVG=blkdrv-cssx\nDEVICE_WAIT_TIMEOUT=0\n"),
    );
    refused(&f, 1, "exists already")?;
    if pvs().contains(&a) || !signatures(&a).is_empty() {
        return Err(format!("{a} was touched: pvs [{}] [{}]", pvs(), signatures(&a)).into());
    }
    Ok(())
}

/// vagrant/docker-storage-setup as vagrant/provision.sh uses it: DEVS replaced by the disk.
fn vagrant_sample() -> Result<(), Failed> {
    let s = Scene::new(&["blkdrv"])?;
    let disk = s.disk(0);
    let sample = include_str!("../../vagrant/docker-storage-setup");
    let text: String = sample
        .lines()
        .filter(|l| !l.trim_start().starts_with("DEVS="))
        .map(|l| format!("{l}\n"))
        .chain([format!("DEVS=\"{disk}\"\n")])
        .collect();
    let file = s.file("docker-storage-setup", &text);
    let o = s.ok(&["storage-setup", "--config", &file])?;
    if !o.stdout.contains("Pool docker-pool created") || !o.stdout.contains("+20% when 60% full") {
        return Err(format!("storage-setup said: {}", o.stdout).into());
    }
    let seg = lv_field("blkdrv/docker-pool", "segtype");
    let chunk = lv_field("blkdrv/docker-pool", "chunk_size");
    if seg != "thin-pool" || chunk != (512u64 << 10).to_string() {
        return Err(format!("lvs blkdrv/docker-pool: {seg}, chunk {chunk}").into());
    }
    s.ok(&["storage-setup", "--config", &file, "--reset"])?;
    let (v, sig) = (vgs(), signatures(disk));
    if v.split_whitespace().any(|vg| vg == "blkdrv") || !sig.is_empty() {
        return Err(format!("after --reset: vgs [{v}] signatures [{sig}]").into());
    }
    Ok(())
}
