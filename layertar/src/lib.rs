//! Container image layer tars, treated as hostile input: spooling with digest and validation,
//! applying with OCI whiteouts, and writing deterministic tars of a directory or of the
//! difference between two directories. Also the one helper that sets file metadata (owner,
//! mode, xattrs, times) without following symlinks, shared with the drivers' tree copier.
//!
//! Everything here treats tar input as hostile: paths are normalised and checked before use, and
//! nothing is ever created, chowned, chmodded or given xattrs through a symlink.
//!
//! Rules that make one tar give the same content on every driver:
//! - Device nodes (char and block) are refused by `spool_tar` unless
//!   [`ApplyOptions::allow_devices`] (`layer create --allow-devices`): an image has no business
//!   shipping `/dev/sda`. FIFOs are allowed. Setuid/setgid bits are kept, as moby and containerd do.
//! - A char device 0:0 is overlayfs's on-disk whiteout, and some tools put it in tars: it is read
//!   as a whiteout of its own path on every driver, whatever `allow_devices` says, never as a node.
//! - Extended attributes travel as PAX `SCHILY.xattr.NAME` records, in both directions, for the
//!   names [`xattr_kept`] accepts: `user.*`, `security.capability` (file capabilities) and the
//!   POSIX ACLs. Others (`trusted.*` would steer overlayfs, `security.selinux` is host policy)
//!   are skipped on import and never exported, so a tar of a directory does not depend on the
//!   host's labels. Import sets them after chown, which clears `security.capability`.
//! - Errors never carry raw bytes of the tar: entry names, link targets and tar-crate messages are
//!   escaped, so every error is one line without control characters.
//!
//! Files by concern: `entry` (one header: path, type, PAX xattrs, metadata), `tap` (raw PAX
//! records), `spool` (read once, digest, validate), `symlinks` (escapes within one tar),
//! `apply`, `write` (`tar_dir`), `diff` (`write_diff`), `meta`, `escape`, `error`.

mod apply;
mod diff;
mod entry;
mod error;
mod escape;
pub mod meta;
mod spool;
mod symlinks;
mod tap;
mod write;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use apply::{apply_tar, ApplyOptions, ApplyStats};
pub use diff::{write_diff, DiffStats};
pub use entry::xattr_kept;
pub use error::{Error, Result};
pub use escape::escape_controls;
pub use spool::{spool_tar, spool_tar_with, validate, Digested};
pub use write::tar_dir;

/// Buffer for copying file data and spooled bytes.
const COPY_BUF: usize = 128 * 1024;

#[cfg(test)]
mod tests;
