//! Spooling: a layer tar (plain or gzip) read once from any reader, its uncompressed bytes
//! copied to a temp file and hashed (the OCI diff_id), every entry parsed and validated on the
//! way. A truncated, oversized or malicious tar is refused here, before any layer exists.
//! [`validate`] is the same walk without the copy, for fuzzers and benches.

use crate::apply::ApplyOptions;
use crate::entry::{classify, device_refused, entry_xattrs, xattr_misfit};
use crate::error::{bad_stream, entry_err, read_err, truncated, Error, Result};
use crate::symlinks::SymlinkTracker;
use crate::tap::{tapped, TappedEntries};
use crate::COPY_BUF;
use flate2::read::MultiGzDecoder;
use sha2::{Digest, Sha256};
use std::io::{self, BufWriter, Read, Write};
use std::path::Path;

/// What spooling found: the digest, the number of entries and the uncompressed length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digested {
    /// "sha256:<64 lowercase hex>" of the uncompressed tar, the form used everywhere.
    pub digest: String,
    pub entries: u64,
    /// Uncompressed tar length.
    pub bytes: u64,
}

/// Bytes allowed after the end-of-archive marker (writers pad to their record size, 10 KiB for
/// GNU tar's default; large blocking factors reach a few hundred KiB).
const MAX_TRAILER: u64 = 1 << 20;

/// Copies everything read into the copy and the hash.
struct Tee<R, W: Write> {
    inner: R,
    out: BufWriter<W>,
    hasher: Sha256,
    bytes: u64,
    write_error: Option<io::Error>,
}

impl<R: Read, W: Write> Read for Tee<R, W> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(e) = self.out.write_all(&buf[..n]) {
            let msg = e.to_string();
            self.write_error = Some(e);
            return Err(io::Error::other(format!("writing spool file: {msg}")));
        }
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Returns a reader of the uncompressed stream, detecting gzip by its magic.
fn decompressed<'a>(mut reader: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let mut head = [0u8; 2];
    let mut got = 0;
    while got < head.len() {
        match reader.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_err(e)),
        }
    }
    let chained = io::Cursor::new(head[..got].to_vec()).chain(reader);
    if got == 2 && head == [0x1f, 0x8b] {
        Ok(Box::new(MultiGzDecoder::new(chained)))
    } else {
        Ok(Box::new(chained))
    }
}

/// Reads a whole layer tar (plain, or gzip detected by the 1f 8b magic) from `reader`, copies
/// the uncompressed tar bytes into a new temp file in `spool_dir` and computes their sha256
/// (an OCI diff_id). Every entry is parsed and validated on the way, so a truncated or malicious
/// tar is rejected before any layer exists.
pub fn spool_tar(
    reader: impl Read,
    spool_dir: &Path,
) -> Result<(tempfile::NamedTempFile, Digested)> {
    spool_tar_with(reader, spool_dir, &ApplyOptions::default())
}

/// [`spool_tar`] with the import options: device nodes are refused here, before any layer
/// exists, unless `opts.allow_devices`.
pub fn spool_tar_with(
    reader: impl Read,
    spool_dir: &Path,
    opts: &ApplyOptions,
) -> Result<(tempfile::NamedTempFile, Digested)> {
    spool_inner(reader, spool_dir, opts).map_err(Error::escaped)
}

/// Reads and validates a whole layer tar (plain or gzip) from `reader` like [`spool_tar_with`],
/// keeping nothing but the digest: for fuzzing and benchmarking the parser. No bound on the
/// data an entry claims (there is no spool filesystem to compare with).
pub fn validate(reader: impl Read, opts: &ApplyOptions) -> Result<Digested> {
    digest_validated(reader, io::sink(), opts, None)
        .map_err(|e| match e {
            CoreError::Stream(e) => e,
            // A sink does not fail.
            CoreError::Write(e) => read_err(e),
        })
        .map_err(Error::escaped)
}

fn spool_inner(
    reader: impl Read,
    spool_dir: &Path,
    opts: &ApplyOptions,
) -> Result<(tempfile::NamedTempFile, Digested)> {
    let spool = tempfile::NamedTempFile::new_in(spool_dir)
        .map_err(|e| Error::io("create spool file in", spool_dir, e))?;
    // The spool holds the whole uncompressed tar: data claiming more than that filesystem has
    // free can never be imported, so it is refused at its header instead of after writing it
    // (a gzip bomb of a few MiB can claim terabytes).
    // fsblkcnt_t is not u64 on every target.
    #[allow(clippy::useless_conversion)]
    let room = nix::sys::statvfs::statvfs(spool_dir)
        .ok()
        .map(|v| u64::from(v.blocks_available()).saturating_mul(u64::from(v.fragment_size())));
    match digest_validated(reader, spool.as_file(), opts, room) {
        Ok(digested) => Ok((spool, digested)),
        Err(CoreError::Stream(e)) => Err(e),
        Err(CoreError::Write(e)) => Err(Error::io("write spool file", spool.path(), e)),
    }
}

/// A failure of [`digest_validated`]: of the stream, or of writing the copy (which the caller
/// names).
enum CoreError {
    Stream(Error),
    Write(io::Error),
}

impl From<Error> for CoreError {
    fn from(e: Error) -> Self {
        CoreError::Stream(e)
    }
}

/// Decompresses, validates, hashes and copies the tar to `out`; `room` bounds the data the
/// entries may claim in total.
fn digest_validated<W: Write>(
    reader: impl Read,
    out: W,
    opts: &ApplyOptions,
    room: Option<u64>,
) -> std::result::Result<Digested, CoreError> {
    let input = decompressed(reader)?;
    let mut tee = Tee {
        inner: input,
        out: BufWriter::with_capacity(COPY_BUF, out),
        hasher: Sha256::new(),
        bytes: 0,
        write_error: None,
    };
    let walked = validate_stream(&mut tee, opts, room).and_then(|entries| {
        // Keep the trailer and what follows it, as the digest covers the whole stream, but
        // only up to a bound: padding, not gigabytes of decompressed zeros.
        let after =
            io::copy(&mut (&mut tee).take(MAX_TRAILER + 1), &mut io::sink()).map_err(read_err)?;
        if after > MAX_TRAILER {
            return Err(bad_stream(
                io::ErrorKind::InvalidData,
                format!(
                    "more than {} KiB of data after the end of the tar",
                    MAX_TRAILER / 1024
                ),
            ));
        }
        Ok(entries)
    });
    if let Some(e) = tee.write_error.take() {
        return Err(CoreError::Write(e));
    }
    let entries = walked?;
    if tee.bytes == 0 {
        return Err(bad_stream(io::ErrorKind::UnexpectedEof, "empty tar stream").into());
    }
    tee.out.flush().map_err(CoreError::Write)?;
    Ok(Digested {
        digest: format!("sha256:{}", hex::encode(tee.hasher.finalize_reset())),
        entries,
        bytes: tee.bytes,
    })
}

fn validate_stream(input: &mut impl Read, opts: &ApplyOptions, room: Option<u64>) -> Result<u64> {
    let (mut archive, st) = tapped(input);
    let mut entries = TappedEntries::new(&mut archive, st)?;
    let mut tracker = SymlinkTracker::default();
    let mut count = 0u64;
    let mut claimed = 0u64;
    while let Some(next) = entries.next() {
        let (mut entry, pax) = next?;
        let item = classify(&entry)?;
        if !opts.allow_devices {
            if let Some(e) = device_refused(&item.name, &item.kind) {
                return Err(e);
            }
        }
        let xattrs = entry_xattrs(pax.as_deref(), &item.name)?;
        for (xname, _) in &xattrs {
            if let Some(why) = xattr_misfit(&item.kind, xname.as_bytes()) {
                return Err(entry_err(&item.name, why));
            }
        }
        if entry.header().entry_type() != tar::EntryType::XGlobalHeader {
            count += 1;
        }
        tracker.check(&item)?;
        tracker.record(&item);
        let want = entry.size();
        claimed = claimed.saturating_add(want);
        if let Some(room) = room.filter(|r| claimed > *r) {
            return Err(entry_err(
                &item.name,
                format!(
                    "claims {want} bytes of data: the tar would need more than the {room} bytes \
                     free where it is spooled"
                ),
            ));
        }
        // Read the data ourselves: the tar crate's reader stops silently at EOF.
        let got = io::copy(&mut entry, &mut io::sink()).map_err(read_err)?;
        if got != want {
            return Err(truncated(&item.name));
        }
    }
    Ok(count)
}
