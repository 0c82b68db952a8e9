//! The crate's one error type. Every variant names what it is about (the tar entry, or the path
//! and the operation on it); none carries raw bytes of the tar, so each displays as one line
//! without control characters.

use crate::escape::escape_controls;
use crate::meta::{MetaError, Step};
use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A tar entry that would escape the layer, cannot be represented, or is malformed.
    #[error("tar entry {entry:?}: {reason}")]
    Entry { entry: String, reason: String },

    /// The tar stream itself is unreadable (truncated, not a tar, bad compression).
    #[error("reading tar stream: {source}")]
    Read {
        #[source]
        source: io::Error,
    },

    /// The directory a tar is applied onto is not one.
    #[error("apply target {} is not a directory", .path.display())]
    ApplyTarget { path: PathBuf },

    /// The directory to archive or diff is not one.
    #[error("{} is not a directory", .path.display())]
    NotADirectory { path: PathBuf },

    /// A device node of the tree being archived whose numbers a tar header cannot hold.
    #[error("{}: device number does not fit a tar header", .path.display())]
    DeviceNumber { path: PathBuf },

    /// An xattr of the tree being archived whose name a PAX record cannot hold.
    #[error(
        "{}: xattr name {name:?} is not UTF-8, which a PAX record cannot hold",
        escape_controls(&.path.to_string_lossy())
    )]
    XattrName { path: PathBuf, name: String },

    /// A filesystem operation on a path failed.
    #[error("{op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// True when the input (the tar, or the tree given to archive) is at fault rather than the
    /// system: a caller reports these as bad input (the CLI's exit code 2).
    pub fn is_input_error(&self) -> bool {
        !matches!(self, Error::Io { .. })
    }

    /// An I/O error whose path came from the tar may hold control characters: escaped for
    /// display (the OS error itself is kept).
    pub(crate) fn escaped(self) -> Self {
        match self {
            Error::Io { op, path, source } => {
                let shown = path.to_string_lossy();
                let escaped = escape_controls(&shown);
                let path = if escaped == shown {
                    path
                } else {
                    PathBuf::from(escaped)
                };
                Error::Io { op, path, source }
            }
            other => other,
        }
    }
}

/// Metadata steps in the words this crate always used; an xattr the layer's filesystem cannot
/// hold says so, with the xattr's name.
impl From<MetaError> for Error {
    fn from(e: MetaError) -> Self {
        let MetaError { step, path, source } = e;
        let op = match &step {
            Step::Chown => "chown",
            Step::Chmod => "chmod",
            Step::SetXattr(_) => "set xattr of",
            Step::SetTimes => "set mtime of",
            Step::ListXattrs => "list xattrs of",
            Step::GetXattr(_) => "get xattr of",
        };
        let source = match &step {
            Step::SetXattr(name) => {
                let why = if source.raw_os_error() == Some(nix::libc::ENOTSUP) {
                    "the layer's filesystem does not support this xattr".to_string()
                } else {
                    source.to_string()
                };
                io::Error::new(
                    source.kind(),
                    format!("{}: {why}", String::from_utf8_lossy(name.as_bytes())),
                )
            }
            _ => source,
        };
        Error::Io { op, path, source }
    }
}

/// The entry name is shown with `{:?}` by the error (escaped there); the reason may quote paths
/// from the tar, so it is escaped here.
pub(crate) fn entry_err(entry: &str, reason: impl Into<String>) -> Error {
    Error::Entry {
        entry: entry.to_string(),
        reason: escape_controls(&reason.into()),
    }
}

/// The tar crate's messages quote header fields (the entry path among them): escaped.
pub(crate) fn read_err(source: io::Error) -> Error {
    let msg = source.to_string();
    let escaped = escape_controls(&msg);
    if escaped == msg {
        return Error::Read { source };
    }
    Error::Read {
        source: io::Error::new(source.kind(), escaped),
    }
}

/// A read error saying the stream ended inside the data of entry `name`.
pub(crate) fn truncated(name: &str) -> Error {
    read_err(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("tar stream ends inside the data of entry {name:?}"),
    ))
}

/// A read error of our own (a bound exceeded, a malformed stream) with `msg`.
pub(crate) fn bad_stream(kind: io::ErrorKind, msg: impl Into<String>) -> Error {
    read_err(io::Error::new(kind, msg.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_classification() {
        let e = entry_err("a\nb", "writes through symlink l\nk");
        assert_eq!(
            e.to_string(),
            "tar entry \"a\\nb\": writes through symlink l\\nk"
        );
        assert!(e.is_input_error());
        let e = Error::io("chmod", "/x\ny", io::Error::from_raw_os_error(1)).escaped();
        assert_eq!(
            e.to_string(),
            "chmod /x\\ny: Operation not permitted (os error 1)"
        );
        assert!(!e.is_input_error());
        assert_eq!(
            Error::ApplyTarget { path: "/t".into() }.to_string(),
            "apply target /t is not a directory"
        );
    }
}
