//! Layer content spooled and validated before any layer or lock exists.

use super::types::Source;
use super::{mkdir, Root, STORE};
use crate::error::{PoolError, Result};
use crate::layer::PoolName;
use blkdrv_drivers::sys::host;
use std::path::Path;

/// A layer's content, spooled to a temp file and validated (every entry parsed, digest
/// computed) before any layer or lock exists: bad input changes nothing.
pub struct Spooled {
    pub(super) file: tempfile::NamedTempFile,
    pub(super) digested: layertar::Digested,
    /// What the content was validated against, and is applied with.
    pub(super) opts: layertar::ApplyOptions,
}

impl Spooled {
    /// Spools `source` into a temp file in `dir`. Device nodes are refused unless
    /// `allow_devices` (`layer create --allow-devices`).
    pub fn new(dir: &Path, source: Source<'_>, allow_devices: bool) -> Result<Spooled> {
        let opts = layertar::ApplyOptions { allow_devices };
        let (file, digested) = match source {
            Source::Tar(r) => layertar::spool_tar_with(r, dir, &opts)?,
            Source::Dir(d) => {
                check_import_dir(d)?;
                let mut t = tempfile::NamedTempFile::new_in(dir)
                    .map_err(|e| PoolError::io("create temp file", dir, e))?;
                layertar::tar_dir(d, std::io::BufWriter::new(t.as_file_mut()))?;
                // By descriptor: without the lock, another writer's recovery may sweep tmp/.
                let f = reopen(&t, "reopen")?;
                layertar::spool_tar_with(f, dir, &opts)?
            }
        };
        Ok(Spooled {
            file,
            digested,
            opts,
        })
    }

    /// Spools for pool `name` under `root`, without its lock (`layer create` does this first).
    pub fn for_pool(
        root: &Root,
        name: &PoolName,
        source: Source<'_>,
        allow_devices: bool,
    ) -> Result<Spooled> {
        let dir = root.pool_dir(name);
        if !dir.join(STORE).is_file() {
            return Err(PoolError::PoolNotFound {
                pool: name.to_string(),
                root: root.path.clone(),
            });
        }
        let tmp = dir.join("tmp");
        mkdir(&tmp)?;
        Spooled::new(&tmp, source, allow_devices)
    }

    pub fn digest(&self) -> &str {
        &self.digested.digest
    }
}

/// A directory to import must be a real tree: not missing, not a file, not a kernel pseudo
/// filesystem (procfs, sysfs ...), whose files change size while read.
fn check_import_dir(d: &Path) -> Result<()> {
    let md = std::fs::metadata(d).map_err(|e| PoolError::user_path("read directory", d, e))?;
    if !md.is_dir() {
        return Err(PoolError::Invalid(format!(
            "{} is not a directory",
            d.display()
        )));
    }
    if host::on_pseudo_filesystem(d).map_err(|e| PoolError::io("statfs", d, e))? {
        return Err(PoolError::Invalid(format!(
            "{} is on a kernel pseudo filesystem (procfs, sysfs ...), not a tree to import",
            d.display()
        )));
    }
    Ok(())
}

/// A second descriptor on `file`, at its start. Spooled files are read back through the
/// descriptor, never the path: a writer that spooled without the lock may find its temp dir
/// swept by another writer's recovery.
pub(super) fn reopen(file: &tempfile::NamedTempFile, op: &'static str) -> Result<std::fs::File> {
    file.as_file()
        .try_clone()
        .and_then(|mut f| std::io::Seek::rewind(&mut f).map(|()| f))
        .map_err(|e| PoolError::io(op, file.path(), e))
}
