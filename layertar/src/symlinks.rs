//! Symlinks created so far by the tar being validated, so that a later entry of the same tar
//! writing through one (`esc -> /`, then `esc/etc/passwd`) is refused before any layer exists.
//! Applying checks the tree itself again (see `apply`), which also covers lower layers.

use crate::entry::{self_and_ancestors, traversed_dir, Item, Kind};
use crate::error::{entry_err, Result};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

#[derive(Default)]
pub(crate) struct SymlinkTracker {
    symlinks: HashSet<PathBuf>,
    /// Ancestors of recorded symlinks, so replacing one of them can forget what it contained.
    symlink_parents: HashSet<PathBuf>,
}

impl SymlinkTracker {
    fn check_dir(&self, name: &str, dir: &Path) -> Result<()> {
        if self.symlinks.is_empty() {
            return Ok(());
        }
        for a in self_and_ancestors(dir) {
            if self.symlinks.contains(a) {
                return Err(entry_err(
                    name,
                    format!("writes through symlink {}", a.display()),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn check(&self, item: &Item) -> Result<()> {
        self.check_dir(&item.name, traversed_dir(item))?;
        if let Kind::Hardlink(target) = &item.kind {
            self.check_dir(&item.name, target.parent().unwrap_or(Path::new("")))?;
        }
        Ok(())
    }

    fn add_symlink(&mut self, rel: &Path) {
        for a in self_and_ancestors(rel).skip(1) {
            self.symlink_parents.insert(a.to_path_buf());
        }
        self.symlinks.insert(rel.to_path_buf());
    }

    pub(crate) fn record(&mut self, item: &Item) {
        let rel = item.rel.as_path();
        match &item.kind {
            Kind::Symlink(_) => self.add_symlink(rel),
            Kind::Hardlink(target) if self.symlinks.contains(target) => self.add_symlink(rel),
            // Whiteouts only hide lower layers, so they never remove this tar's symlinks.
            Kind::Whiteout | Kind::Opaque | Kind::Skip | Kind::Root => {}
            // A directory over a directory merges; over a symlink it replaces just that.
            Kind::Dir => {
                self.symlinks.remove(rel);
            }
            _ => {
                self.symlinks.remove(rel);
                if self.symlink_parents.remove(rel) {
                    // A non-directory replaced a directory holding symlinks.
                    self.symlinks.retain(|s| !s.starts_with(rel));
                }
            }
        }
    }
}
