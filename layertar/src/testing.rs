//! Tars built entry by entry, for tests and fuzzers (feature `testing`): hostile ones included,
//! since [`TarBuilder::raw`] writes names and link names byte for byte past the tar crate's
//! checks. Not a stable API.

use std::io::Write;

/// A GNU tar header of `kind`, owned by root, mtime 1600000000.
pub fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_600_000_000);
    h.set_size(size);
    h
}

/// A tar in memory, one entry per call. Panics on what cannot be written (a test's mistake).
pub struct TarBuilder(tar::Builder<Vec<u8>>);

impl Default for TarBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TarBuilder {
    pub fn new() -> Self {
        TarBuilder(tar::Builder::new(Vec::new()))
    }

    pub fn dir(self, path: &str, mode: u32) -> Self {
        self.entry(header(tar::EntryType::Directory, mode, 0), path, b"")
    }

    pub fn file(self, path: &str, data: &[u8], mode: u32) -> Self {
        self.entry(
            header(tar::EntryType::Regular, mode, data.len() as u64),
            path,
            data,
        )
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn hardlink(mut self, path: &str, target: &str) -> Self {
        let mut h = header(tar::EntryType::Link, 0o644, 0);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    /// A device node or fifo entry (`kind` Char, Block or Fifo) with its numbers.
    pub fn node(mut self, path: &str, kind: tar::EntryType, major: u32, minor: u32) -> Self {
        let mut h = header(kind, 0o666, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        self.0.append_data(&mut h, path, std::io::empty()).unwrap();
        self
    }

    /// An entry with a name and link name written raw, bypassing the builder's checks.
    pub fn raw(self, kind: tar::EntryType, name: &[u8], link: &[u8], data: &[u8]) -> Self {
        let mut h = header(kind, 0o644, data.len() as u64);
        {
            let old = h.as_old_mut();
            old.name = [0; 100];
            old.name[..name.len()].copy_from_slice(name);
            old.linkname = [0; 100];
            old.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_cksum();
        self.append(&h, data)
    }

    /// A PAX header of `records` (written as given: values may hold any byte) for the next
    /// entry.
    pub fn pax(mut self, records: &[(&str, &[u8])]) -> Self {
        self.0
            .append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .unwrap();
        self
    }

    /// An entry of header `h` (its path set to `path`, its checksum computed) with `data`.
    pub fn entry(mut self, mut h: tar::Header, path: &str, data: &[u8]) -> Self {
        self.0.append_data(&mut h, path, data).unwrap();
        self
    }

    /// Header `h` exactly as it is (checksum included), then `data` padded to a block.
    pub fn append(mut self, h: &tar::Header, data: &[u8]) -> Self {
        self.0.append(h, data).unwrap();
        self
    }

    /// The tar, with its end-of-archive marker.
    pub fn done(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// A lone header whose size field claims `size` bytes, followed by `data` (no end marker).
pub fn claims(name: &str, size: u64, data: &[u8]) -> Vec<u8> {
    let mut h = header(tar::EntryType::Regular, 0o644, 0);
    h.set_size(size);
    h.set_path(name).unwrap();
    h.set_cksum();
    let mut v = h.as_bytes().to_vec();
    v.extend_from_slice(data);
    v
}

/// `data` gzipped in one member at the fastest level.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}
