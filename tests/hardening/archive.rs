//! Hardening: archive. A seeded mutation fuzz of tar import through the CLI: a small valid
//! layer tar, mutated (bit flips, header bytes, truncation, size fields, header fields with the
//! checksum fixed so they get past it, type flags, block splices, gzip-wrapped variants), each
//! run through `layer create --from-tar`. Every case must end with exit code 0, 1 or 2, at most
//! one line on stderr without control characters, no panic and no hang; the pool checks clean
//! at the end. The seed is printed; `BLKDRV_TEST_SEED` replays a run.

use kit::cli::{run_cli, Env, Out};
use kit::trial::trial;
use libtest_mimic::Trial;
use std::ffi::OsString;
use std::io::Write;
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn trials() -> Vec<Trial> {
    vec![
        trial("archive::tar_import_mutation_fuzz", tar_import_fuzz),
        trial(
            "archive::device_nodes_refused_as_root",
            device_nodes_refused,
        ),
        trial("archive::forged_output_line_in_entry_name", forged_line),
        trial(
            "archive::xattrs_through_from_dir_and_diff",
            xattrs_through_cli,
        ),
    ]
}

/// Runs a refused `layer create --from-tar`: exit 2, one clean stderr line containing each of
/// `needles`, layers and `pool check` unchanged.
fn refused_tar(env: &Env, tar: &[u8], needles: &[&str]) -> String {
    let path = env.path("refused.tar");
    std::fs::write(&path, tar).unwrap();
    let before = env.state();
    let o = env.run(&[
        "layer",
        "create",
        "x",
        "--from-tar",
        path.to_str().unwrap(),
        "--pool",
        "t",
    ]);
    assert_eq!(o.code, 2, "exit {}: {}", o.code, o.stderr);
    assert_eq!(judge(&o), None);
    for n in needles {
        assert!(o.stderr.contains(n), "{:?} lacks {n:?}", o.stderr);
    }
    assert_eq!(env.state(), before, "pool changed by a refused tar");
    o.stderr
}

/// #11: a block device 7:0 mode 0666 imported as root.
fn device_nodes_refused() {
    let env = Env::new();
    for (kind, major, minor, what) in [
        (tar::EntryType::Block, 7, 0, "block device 7:0"),
        (tar::EntryType::Char, 1, 1, "char device 1:1"),
    ] {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = header(kind, 0o666, 0);
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        b.append_data(&mut h, "dev/node", std::io::empty()).unwrap();
        let tar = b.into_inner().unwrap();
        refused_tar(&env, &tar, &[what, "\"dev/node\"", "--allow-devices"]);
    }
}

/// #11: a tar entry name that prints a fake "created layer" line and clears the screen.
fn forged_line() {
    let env = Env::new();
    let mut h = header(tar::EntryType::Regular, 0o644, 0);
    let name = b"x\ncreated layer evil\x1b[2J/../../y";
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(&[0u8; 1024]);
    refused_tar(&env, &tar, &["`..`"]);
    // A bad numeric field: the tar crate's message quotes the raw name.
    let mut h = header(tar::EntryType::Regular, 0o644, 0);
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.as_old_mut().size = *b"\n\x1b[31mzzz\0\0\0";
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(&[0u8; 1024]);
    refused_tar(&env, &tar, &["reading tar stream"]);
}

fn get_xattr(p: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let cp = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let cn = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 65536];
    // SAFETY: NUL-terminated strings; `buf` is valid for its length.
    let n = unsafe {
        nix::libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
    };
    if n < 0 {
        return None;
    }
    buf.truncate(n as usize);
    Some(buf)
}

fn set_xattr(p: &std::path::Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let cp = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let cn = std::ffi::CString::new(name).unwrap();
    // SAFETY: NUL-terminated strings; `value` is valid for its length.
    let rc = unsafe {
        nix::libc::lsetxattr(
            cp.as_ptr(),
            cn.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The SCHILY.xattr records of each entry of `tar` that has some.
fn tar_xattrs(tar: &[u8]) -> Vec<(String, String, Vec<u8>)> {
    let mut a = tar::Archive::new(tar);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = String::from_utf8_lossy(&e.path_bytes()).into_owned();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for x in exts.flatten() {
                if let Some(k) = x.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                    out.push((path.clone(), k.to_string(), x.value_bytes().to_vec()));
                }
            }
        }
    }
    out
}

/// #11: xattrs (a file capability, user xattrs) vanished on import and export.
fn xattrs_through_cli() {
    let env = Env::new();
    let src = env.path("src");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("bin/ping"), b"ping").unwrap();
    std::fs::write(src.join("plain"), b"p").unwrap();
    // cap_net_raw+ep: no newline byte, which the tar crate's own PAX reader (used by
    // tar_xattrs here) needs.
    let cap: [u8; 20] = [
        1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    if let Err(e) = set_xattr(&src.join("bin/ping"), "user.note", b"n") {
        eprintln!("SKIP: {} cannot hold user xattrs: {e}", src.display());
        return;
    }
    set_xattr(&src.join("bin/ping"), "security.capability", &cap).unwrap();
    env.create_from_dir("base", &src);
    let out = env.path("base.tar");
    env.diff_to("base", &out);
    let x = tar_xattrs(&std::fs::read(&out).unwrap());
    assert_eq!(
        x,
        vec![
            (
                "bin/ping".to_string(),
                "security.capability".to_string(),
                cap.to_vec()
            ),
            (
                "bin/ping".to_string(),
                "user.note".to_string(),
                b"n".to_vec()
            ),
        ]
    );
    // A change of xattrs alone is a modification.
    env.ok(&["layer", "snapshot", "base", "c1", "--pool", "t"]);
    let m = env.mount_rw("c1", "m");
    set_xattr(&m.join("plain"), "user.new", b"1").unwrap();
    env.ok(&["layer", "umount", "c1", "--pool", "t"]);
    env.ok(&["layer", "commit", "c1", "--pool", "t"]);
    let out = env.path("c1.tar");
    env.diff_to("c1", &out);
    let x = tar_xattrs(&std::fs::read(&out).unwrap());
    assert_eq!(
        x,
        vec![("plain".to_string(), "user.new".to_string(), b"1".to_vec())]
    );
    // And the exported tar imports with the capability on the file.
    env.ok(&[
        "layer",
        "create",
        "again",
        "--from-tar",
        env.path("base.tar").to_str().unwrap(),
        "--pool",
        "t",
    ]);
    let m = env.mount_rw("again", "m2");
    let got = get_xattr(&m.join("bin/ping"), "security.capability");
    env.ok(&["layer", "umount", "again", "--pool", "t"]);
    assert_eq!(got.as_deref(), Some(&cap[..]));
}

const CASES: u64 = 1000;
/// A case still running after this counts as a hang.
const HANG: Duration = Duration::from_secs(20);

/// Mutation picks, drawn from the suite's one PRNG (the same stream for the same seed).
struct Rng(kit::rng::Rng);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn byte(&mut self) -> u8 {
        // Bytes that mean something in a tar header, or anything.
        const SPECIAL: &[u8] = b"\0 /.\n\x1b7x0gLKS5";
        if self.below(2) == 0 {
            SPECIAL[self.below(SPECIAL.len())]
        } else {
            self.next() as u8
        }
    }
}

use layertar::testing::header;

/// Every kind of entry the importer handles: directories, files, a long name, a PAX header with
/// an xattr, symlink, hardlink, fifo, whiteout, opaque directory.
fn base_tar() -> Vec<u8> {
    use tar::EntryType as E;
    let mut b = tar::Builder::new(Vec::new());
    let add = |b: &mut tar::Builder<Vec<u8>>, kind, path: &str, data: &[u8], mode| {
        let mut h = header(kind, mode, data.len() as u64);
        b.append_data(&mut h, path, data).unwrap();
    };
    add(&mut b, E::Directory, "etc", b"", 0o755);
    add(
        &mut b,
        E::Regular,
        "etc/passwd",
        b"root:x:0:0::/root:/bin/sh\n",
        0o644,
    );
    add(&mut b, E::Directory, "usr/bin", b"", 0o755);
    b.append_pax_extensions([("SCHILY.xattr.user.k", &b"v\n1"[..])])
        .unwrap();
    add(&mut b, E::Regular, "usr/bin/tool", &[0x7f; 700], 0o4755);
    add(
        &mut b,
        E::Regular,
        &format!("usr/{}", "n".repeat(120)),
        b"long",
        0o644,
    );
    let mut h = header(E::Symlink, 0o777, 0);
    b.append_link(&mut h, "usr/bin/sh", "tool").unwrap();
    let mut h = header(E::Link, 0o644, 0);
    b.append_link(&mut h, "etc/hard", "etc/passwd").unwrap();
    add(&mut b, E::Fifo, "run.fifo", b"", 0o600);
    add(&mut b, E::Regular, "etc/.wh.old", b"", 0o644);
    add(&mut b, E::Regular, "var/.wh..wh..opq", b"", 0o644);
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// Offsets of the 512-byte headers in a (valid) tar.
fn header_offsets(tar: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 512 <= tar.len() {
        let block = &tar[off..off + 512];
        if block.iter().all(|b| *b == 0) {
            break;
        }
        let mut h = tar::Header::new_old();
        h.as_mut_bytes().copy_from_slice(block);
        out.push(off);
        let size = h.entry_size().unwrap_or(0) as usize;
        off += 512 + size.div_ceil(512) * 512;
    }
    out
}

/// Recomputes the checksum of the header at `off`.
fn fix_cksum(tar: &mut [u8], off: usize) {
    let mut h = tar::Header::new_old();
    h.as_mut_bytes().copy_from_slice(&tar[off..off + 512]);
    h.set_cksum();
    tar[off..off + 512].copy_from_slice(h.as_bytes());
}

/// Header fields (offset, length) of the ustar/GNU layout.
const FIELDS: &[(usize, usize)] = &[
    (0, 100),   // name
    (100, 8),   // mode
    (108, 8),   // uid
    (116, 8),   // gid
    (124, 12),  // size
    (136, 12),  // mtime
    (156, 1),   // typeflag
    (157, 100), // linkname
    (257, 8),   // magic + version
    (329, 8),   // devmajor
    (337, 8),   // devminor
    (345, 155), // prefix (ustar) / atime, ctime, ... (GNU)
];

/// One mutation of `base`; returns the bytes and what was done (for the failure report).
fn mutate(rng: &mut Rng, base: &[u8], heads: &[usize]) -> (Vec<u8>, String) {
    let mut t = base.to_vec();
    let head = heads[rng.below(heads.len())];
    let what = match rng.below(9) {
        0 => {
            let n = 1 + rng.below(8);
            for _ in 0..n {
                let i = rng.below(t.len());
                t[i] ^= 1 << rng.below(8);
            }
            format!("{n} bit flips")
        }
        1 => {
            let i = head + rng.below(512);
            t[i] = rng.byte();
            format!("header byte {i} overwritten")
        }
        2 => {
            let len = rng.below(t.len());
            t.truncate(len);
            format!("truncated to {len}")
        }
        3 => {
            let size: u64 = match rng.below(4) {
                0 => rng.next() % 4096,
                1 => rng.next() % (1 << 33),
                2 => u64::MAX >> rng.below(64),
                _ => 0,
            };
            let mut h = tar::Header::new_old();
            h.as_mut_bytes().copy_from_slice(&t[head..head + 512]);
            h.set_size(size);
            t[head..head + 512].copy_from_slice(h.as_bytes());
            fix_cksum(&mut t, head);
            format!("size of header at {head} set to {size}, checksum fixed")
        }
        4 => {
            let (off, len) = FIELDS[rng.below(FIELDS.len())];
            let n = 1 + rng.below(len);
            for _ in 0..n {
                t[head + off + rng.below(len)] = rng.byte();
            }
            fix_cksum(&mut t, head);
            format!("field {off} of header at {head}: {n} bytes, checksum fixed")
        }
        5 => {
            const TYPES: &[u8] = b"0123456789xgLKSVDM\0";
            let ty = if rng.below(4) == 0 {
                rng.next() as u8
            } else {
                TYPES[rng.below(TYPES.len())]
            };
            t[head + 156] = ty;
            fix_cksum(&mut t, head);
            format!("type of header at {head} set to {ty:#x}, checksum fixed")
        }
        6 => {
            // Duplicate or drop a 512-byte block.
            let blocks = t.len() / 512;
            let b = rng.below(blocks) * 512;
            let block = t[b..b + 512].to_vec();
            if rng.below(2) == 0 {
                t.splice(b..b, block);
                format!("block at {b} duplicated")
            } else {
                t.drain(b..b + 512);
                format!("block at {b} removed")
            }
        }
        7 => {
            // A mutated tar, gzip-wrapped.
            let (inner, what) = mutate(rng, base, heads);
            t = gzip(&inner);
            format!("gzip of ({what})")
        }
        _ => {
            // A valid gzip, damaged.
            t = gzip(base);
            let n = 1 + rng.below(4);
            for _ in 0..n {
                let i = rng.below(t.len());
                t[i] = rng.byte();
            }
            if rng.below(3) == 0 {
                let len = rng.below(t.len());
                t.truncate(len);
            }
            format!("gzip with {n} bytes changed")
        }
    };
    (t, what)
}

/// What is wrong with one CLI run, if anything.
fn judge(out: &Out) -> Option<String> {
    if !matches!(out.code, 0..=2) {
        return Some(format!("exit code {}", out.code));
    }
    let err = out.stderr.strip_suffix('\n').unwrap_or(&out.stderr);
    if err.contains('\n') {
        return Some(format!("stderr has several lines: {:?}", out.stderr));
    }
    if err.chars().any(char::is_control) {
        return Some(format!("control character on stderr: {:?}", out.stderr));
    }
    None
}

fn tar_import_fuzz() {
    let seed = kit::rng::run_seed();
    eprintln!("archive fuzz: seed {seed} (BLKDRV_TEST_SEED={seed} replays), {CASES} cases");
    let env = Env::new();
    let base = base_tar();
    let heads = header_offsets(&base);
    assert!(heads.len() >= 10, "base tar headers: {heads:?}");
    // The unmutated tar imports: the mutations start from something valid.
    let path = env.path("case.tar");
    std::fs::write(&path, &base).unwrap();
    let root = env.root();
    let args = |name: &str| -> Vec<OsString> {
        ["blkdrv", "--root"]
            .iter()
            .map(OsString::from)
            .chain([root.clone().into_os_string()])
            .chain(
                [
                    "--config",
                    "/nonexistent/blkdrv.toml",
                    "layer",
                    "create",
                    name,
                    "--from-tar",
                    path.to_str().unwrap(),
                    "--pool",
                    "t",
                ]
                .iter()
                .map(OsString::from),
            )
            .collect()
    };
    let o = run_cli(args("valid"));
    assert_eq!(o.code, 0, "the base tar imports: {}", o.stderr);

    let mut rng = Rng(kit::rng::Rng::new(seed));
    let mut failures = Vec::new();
    let mut codes = [0u32; 3];
    let started = Instant::now();
    for case in 0..CASES {
        let (bytes, what) = mutate(&mut rng, &base, &heads);
        std::fs::write(&path, &bytes).unwrap();
        let a = args(&format!("f{case}"));
        // In a thread of its own, so a hang is reported instead of hanging the suite.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(|| run_cli(a));
            let _ = tx.send(r);
        });
        let out = match rx.recv_timeout(HANG) {
            Ok(Ok(out)) => out,
            Ok(Err(p)) => {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("seed {seed} case {case} ({what}): panic: {msg}"));
                continue;
            }
            Err(_) => {
                // The stuck thread holds the pool: nothing more can run.
                panic!(
                    "archive fuzz: seed {seed} case {case} ({what}): no answer after {HANG:?} (hang)"
                );
            }
        };
        if let Some(bad) = judge(&out) {
            failures.push(format!("seed {seed} case {case} ({what}): {bad}"));
        }
        if out.code == 1 {
            // A system error caused by input: allowed, but worth seeing.
            eprintln!(
                "archive fuzz: case {case} ({what}): exit 1: {}",
                out.stderr.trim_end()
            );
        }
        if let Some(c) = codes.get_mut(out.code as usize) {
            *c += 1;
        }
    }
    eprintln!(
        "archive fuzz: {CASES} cases in {:.1?}: exit 0: {}, 1: {}, 2: {}",
        started.elapsed(),
        codes[0],
        codes[1],
        codes[2]
    );
    assert!(
        failures.is_empty(),
        "{} of {CASES} cases failed:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
    let check = env.run(&["pool", "check", "t"]);
    assert_eq!(
        check.code, 0,
        "pool check after the fuzz: {}{}",
        check.stdout, check.stderr
    );
}
