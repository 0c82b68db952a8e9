//! What a test left behind: mounts and loop devices under a directory. Every test object lives
//! under [`crate::pool::run_dir`] or a test's own directory, so a check looks only there and
//! never at what other processes on the host hold.

use std::path::{Path, PathBuf};

/// Mount points under `dir`, each as often as it is mounted (stacked mounts count twice).
pub fn mounts_in(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let dir = dir.canonicalize().map_err(|e| e.to_string())?;
    let mut v: Vec<PathBuf> = blkdrv_drivers::sys::mount::mountinfo()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|m| m.target)
        .filter(|t| t.starts_with(&dir))
        .collect();
    v.sort();
    Ok(v)
}

/// Backing files of loop devices under `dir`, each as often as it is attached.
pub fn loops_in(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let dir = dir.canonicalize().map_err(|e| e.to_string())?;
    let mut v: Vec<PathBuf> = blkdrv_drivers::sys::loopdev::list()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|(_, f)| f)
        .filter(|f| f.starts_with(&dir))
        .collect();
    v.sort();
    Ok(v)
}

/// Mounts and loop devices under `dir`, one line each ("mount P", "loop DEV -> FILE"); a
/// directory that does not exist holds none.
pub fn under(dir: &Path) -> Vec<String> {
    if !dir.exists() {
        return Vec::new();
    }
    let mut out: Vec<String> = mounts_in(dir)
        .unwrap_or_default()
        .into_iter()
        .map(|m| format!("mount {}", m.display()))
        .collect();
    if let (Ok(canon), Ok(ls)) = (dir.canonicalize(), blkdrv_drivers::sys::loopdev::list()) {
        out.extend(
            ls.into_iter()
                .filter(|(_, f)| f.starts_with(&canon))
                .map(|(d, f)| format!("loop {} -> {}", d.display(), f.display())),
        );
    }
    out
}

/// The kernel objects a pool holds while it is open (backing mount, loop devices), to compare
/// with after a crash or a kill.
pub struct Baseline {
    dir: PathBuf,
    mounts: Vec<PathBuf>,
    loops: Vec<PathBuf>,
}

impl Baseline {
    /// What is mounted and attached under `dir` now.
    pub fn take(dir: &Path) -> Result<Baseline, String> {
        Ok(Baseline {
            dir: dir.to_path_buf(),
            mounts: mounts_in(dir)?,
            loops: loops_in(dir)?,
        })
    }

    /// Fails unless the mounts under the directory are the baseline's plus `layer_mounts`, and
    /// the loop devices are exactly the baseline's.
    pub fn check(&self, layer_mounts: &[PathBuf], when: &str) -> Result<(), String> {
        let mut want = self.mounts.clone();
        want.extend(layer_mounts.iter().cloned());
        want.sort();
        let got = mounts_in(&self.dir)?;
        if got != want {
            return Err(format!(
                "{when}: mounts under the test dir: {got:?}, expected {want:?}"
            ));
        }
        let loops = loops_in(&self.dir)?;
        if loops != self.loops {
            return Err(format!(
                "{when}: loop devices on test files: {loops:?}, expected {:?}",
                self.loops
            ));
        }
        Ok(())
    }
}
