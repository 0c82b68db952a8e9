use super::*;

#[test]
fn spool_digest_matches_sha256_of_plain_bytes() {
    let tar = TarBuilder::new()
        .dir("d", 0o755)
        .file("d/f", b"abc", 0o644)
        .done();
    let spool_dir = tempfile::tempdir().unwrap();
    let (file, d) = spool_tar(&tar[..], spool_dir.path()).unwrap();
    assert_eq!(d.digest, sha(&tar));
    assert_eq!(d.bytes, tar.len() as u64);
    assert_eq!(d.entries, 2);
    assert_eq!(fs::read(file.path()).unwrap(), tar);
    assert!(d.digest.starts_with("sha256:") && d.digest.len() == 7 + 64);
    assert_eq!(d.digest, d.digest.to_lowercase());
}

#[test]
fn spool_gzip_gives_same_digest_and_plain_spool() {
    let tar = TarBuilder::new().file("f", &[1u8; 5000], 0o644).done();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    assert_eq!(&gz[..2], &[0x1f, 0x8b]);
    let spool_dir = tempfile::tempdir().unwrap();
    let (file, d) = spool_tar(&gz[..], spool_dir.path()).unwrap();
    assert_eq!(d, spool(&tar).unwrap());
    assert_eq!(fs::read(file.path()).unwrap(), tar);
}

#[test]
fn spool_one_byte_reads_work() {
    struct OneByte<'a>(&'a [u8]);
    impl Read for OneByte<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[0];
            self.0 = &self.0[1..];
            Ok(1)
        }
    }
    let tar = TarBuilder::new().file("f", b"xyz", 0o644).done();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_, d) = spool_tar(OneByte(&gz), dir.path()).unwrap();
    assert_eq!(d.digest, sha(&tar));
}

#[test]
fn rejects_truncated_streams() {
    let data = vec![9u8; 4000];
    let tar = TarBuilder::new()
        .file("first", b"ok", 0o644)
        .file("f", &data, 0o644)
        .done();
    // Offsets: header(512) data(512) header(512) data(4096 padded) trailer(1024).
    for cut in [
        1024 + 100,
        1024 + 512 + 1000,
        1024 + 512 + 4000 - 1,
        700,
        1,
        511,
    ] {
        let part = &tar[..cut];
        match spool(part) {
            Err(Error::Read { .. }) | Err(Error::Entry { .. }) => {}
            other => panic!("spool of {cut} bytes: {other:?}"),
        }
        let root = tempfile::tempdir().unwrap();
        match apply(part, root.path()) {
            Err(Error::Read { .. }) | Err(Error::Entry { .. }) => {}
            other => panic!("apply of {cut} bytes: {other:?}"),
        }
    }
    // Complete entries with a missing trailer are accepted.
    spool(&tar[..1024 + 512 + 4096]).unwrap();
    assert!(matches!(spool(&[]), Err(Error::Read { .. })));
}

#[test]
fn rejects_truncated_gzip() {
    let tar = TarBuilder::new()
        .file("f", &vec![5u8; 100_000], 0o644)
        .done();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let cut = &gz[..gz.len() / 2];
    assert!(matches!(
        spool(cut),
        Err(Error::Read { .. }) | Err(Error::Entry { .. })
    ));
}

#[test]
fn rejects_garbage() {
    let junk = vec![0x42u8; 2048];
    assert!(matches!(spool(&junk), Err(Error::Read { .. })));
}

#[test]
fn entry_claiming_more_than_the_spool_space_is_refused_at_its_header() {
    // 1 PiB claimed, 64 KiB present: refused before reading any data.
    let mut h = header(tar::EntryType::Regular, 0o644, 0);
    h.set_size(1 << 50);
    h.set_path("bomb").unwrap();
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(&[0u8; 65536]);
    assert_entry_err(spool(&tar), "free where it is spooled");
}

#[test]
fn gigabytes_of_trailing_zeros_are_refused() {
    // A gzip of 64 MiB of zeros (64 KiB compressed): an empty tar, then padding without end.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&zeros).unwrap();
    }
    let gz = gz.finish().unwrap();
    let msg = spool(&gz).unwrap_err().to_string();
    assert!(msg.contains("after the end of the tar"), "{msg}");
    // Ordinary padding (GNU tar's 10 KiB record) is fine.
    let mut tar = TarBuilder::new().file("f", b"x", 0o644).done();
    tar.extend_from_slice(&[0u8; 10240]);
    spool(&tar).unwrap();
}

#[test]
fn validate_agrees_with_spool() {
    let tar = TarBuilder::new()
        .dir("d", 0o755)
        .file("d/f", b"abc", 0o644)
        .done();
    let opts = ApplyOptions::default();
    assert_eq!(
        validate(&gzip(&tar)[..], &opts).unwrap(),
        spool(&tar).unwrap()
    );
    let bad = TarBuilder::new()
        .symlink("esc", "/")
        .file("esc/x", b"", 0o644)
        .done();
    assert_entry_err(validate(&bad[..], &opts), "writes through symlink esc");
    assert!(matches!(validate(&[][..], &opts), Err(Error::Read { .. })));
}
