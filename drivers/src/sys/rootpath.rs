//! Paths inside a container's root filesystem, resolved as the container would see them:
//! symlinks (absolute or with `..`) planted in a writable layer are followed, but never out of
//! the root (openat2 `RESOLVE_IN_ROOT`), so a mount point always lands inside the root.

use crate::error::{DriverError, Result};
use std::path::{Path, PathBuf};

/// What to do about components of the path that do not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Create {
    /// Nothing: a missing component is an error (NotFound).
    No,
    /// Make every missing component a directory (mode 0755, root's).
    Dir,
    /// Make missing parents directories and the last component an empty file (a bind mount
    /// point for a file source).
    File,
}

/// Resolves `components` (a path below the root, one name each, none `.`/`..`) inside `root`
/// as if `root` were `/`, creating what is missing as `create` says. Returns the host path the
/// last component resolved to: always `root` or below it.
pub fn resolve_in_root(root: &Path, components: &[&str], create: Create) -> Result<PathBuf> {
    let _ = (components, create);
    Err(DriverError::io(
        "resolve inside root",
        root,
        std::io::Error::other("not implemented yet"),
    ))
}
