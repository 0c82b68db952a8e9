//! The raw extension headers before each entry. The tar crate splits PAX records at newlines,
//! which breaks binary xattr values (a capability or an ACL holding a 0x0a byte), so a tap under
//! its reader records the bytes before each entry and the PAX data is cut out of them by length,
//! as POSIX says. Also where a decompression bomb of huge extension headers is stopped.

use crate::error::{bad_stream, read_err, Result};
use std::io::{self, Read};

/// Bytes of extension headers (PAX, GNU long names) allowed before one entry: real ones are a
/// few KiB; this bounds what a decompression bomb can make the tar reader hold in memory.
const MAX_EXT_HEADERS: usize = 16 << 20;

/// What the tar reader consumed while looking for the next entry.
#[derive(Default)]
pub(crate) struct TapState {
    armed: bool,
    /// Stream offset of `buf[0]`.
    start: u64,
    /// Stream offset read so far.
    pos: u64,
    buf: Vec<u8>,
    /// Stream offset where the previous entry's data (padded) ends.
    prev_end: u64,
}

/// Shared by the tap (which records) and the entry loop (which arms it and reads the record).
pub(crate) type SharedTap = std::rc::Rc<std::cell::RefCell<TapState>>;

/// Sits under the tar reader and records the raw headers before each entry: the tar crate
/// splits PAX records at newlines, which breaks binary xattr values (a capability or an ACL
/// holding a 0x0a byte), so the records are parsed here by their length, as POSIX says.
pub(crate) struct Tap<R> {
    inner: R,
    st: SharedTap,
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut st = self.st.borrow_mut();
        if st.armed {
            if st.buf.len() + n > MAX_EXT_HEADERS {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "extended headers of one entry exceed {} MiB",
                        MAX_EXT_HEADERS >> 20
                    ),
                ));
            }
            st.buf.extend_from_slice(&buf[..n]);
        }
        st.pos += n as u64;
        Ok(n)
    }
}

/// Entries of a tar read through a [`Tap`], each with its raw PAX data (if any).
pub(crate) struct TappedEntries<'a, R: Read> {
    entries: tar::Entries<'a, Tap<R>>,
    st: SharedTap,
}

pub(crate) fn tapped<R: Read>(reader: R) -> (tar::Archive<Tap<R>>, SharedTap) {
    let st = std::rc::Rc::new(std::cell::RefCell::new(TapState::default()));
    let tap = Tap {
        inner: reader,
        st: st.clone(),
    };
    (tar::Archive::new(tap), st)
}

impl<'a, R: Read> TappedEntries<'a, R> {
    pub(crate) fn new(archive: &'a mut tar::Archive<Tap<R>>, st: SharedTap) -> Result<Self> {
        let entries = archive.entries().map_err(read_err)?;
        Ok(TappedEntries { entries, st })
    }

    /// The next entry and the data of the PAX header before it. Must be called only after the
    /// previous entry's data was read to its end.
    #[allow(clippy::type_complexity)]
    pub(crate) fn next(&mut self) -> Option<Result<(tar::Entry<'a, Tap<R>>, Option<Vec<u8>>)>> {
        {
            let mut st = self.st.borrow_mut();
            st.buf.clear();
            st.start = st.pos;
            st.armed = true;
        }
        let next = self.entries.next();
        self.st.borrow_mut().armed = false;
        let entry = match next? {
            Ok(e) => e,
            Err(e) => return Some(Err(read_err(e))),
        };
        let mut st = self.st.borrow_mut();
        let pax = pax_before(&st, entry.raw_header_position());
        st.prev_end = entry
            .raw_file_position()
            .saturating_add(entry.size().div_ceil(512).saturating_mul(512));
        Some(pax.map(|p| (entry, p)))
    }
}

/// Finds the PAX header among the extension headers between the previous entry and the header
/// at `header_pos`, all of which the tap recorded.
fn pax_before(st: &TapState, header_pos: u64) -> Result<Option<Vec<u8>>> {
    let bad = || {
        bad_stream(
            io::ErrorKind::InvalidData,
            "extension headers do not line up",
        )
    };
    let mut off = st.prev_end;
    if off < st.start || header_pos < off {
        return Err(bad());
    }
    let mut pax = None;
    while off < header_pos {
        let i = usize::try_from(off - st.start).map_err(|_| bad())?;
        let block = st.buf.get(i..i + 512).ok_or_else(bad)?;
        let mut h = tar::Header::new_old();
        h.as_mut_bytes().copy_from_slice(block);
        let size = h.entry_size().map_err(|_| bad())?;
        let data_len = usize::try_from(size).map_err(|_| bad())?;
        if h.entry_type() == tar::EntryType::XHeader {
            let end = (i + 512).checked_add(data_len).ok_or_else(bad)?;
            pax = Some(st.buf.get(i + 512..end).ok_or_else(bad)?.to_vec());
        }
        off = off
            .saturating_add(512)
            .saturating_add(size.div_ceil(512).saturating_mul(512));
    }
    if off != header_pos {
        return Err(bad());
    }
    Ok(pax)
}
