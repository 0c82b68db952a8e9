//! The hostile tar corpus: one conformance case that imports each malicious or malformed tar
//! into a pool of the driver under test, on a base layer that holds a symlink pointing outside
//! the pool. Every tar has one expected outcome, the same on every driver: refused with an error
//! naming the reason (and the pool unchanged: same layers, `check` clean), or imported with the
//! content given (checked on a read-only mount). After each tar a canary directory outside the
//! pool and the scratch directory must be untouched.

use blkdrv_pool::{LayerName, Pool, Source};
use kit::ensure;
use kit::pool::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

type Check = fn(&Path) -> Result<(), String>;

enum Expect {
    /// Refused; the one-line error contains this.
    Refused(&'static str),
    /// Imported; the mounted layer passes the check.
    Imported(Check),
}

struct Case {
    kind: &'static str,
    tar: Vec<u8>,
    expect: Expect,
}

// ---- tar building --------------------------------------------------------------------------

use layertar::testing::{claims, header, TarBuilder as T};

/// A gzip of `parts` then `zeros` bytes of zeros. The zeros are copies of one compressed MiB
/// as further gzip members (which every gzip reader concatenates), so a bomb is cheap to build.
fn gzip(parts: &[&[u8]], zeros: usize) -> Vec<u8> {
    let member = |data: &[&[u8]]| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        for p in data {
            gz.write_all(p).unwrap();
        }
        gz.finish().unwrap()
    };
    let mut out = member(parts);
    let mib = member(&[&vec![0u8; 1 << 20]]);
    for _ in 0..zeros >> 20 {
        out.extend_from_slice(&mib);
    }
    out
}

// ---- checks --------------------------------------------------------------------------------

fn ok(cond: bool, what: &str) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(format!("check failed: {what}"))
    }
}

fn lmeta(p: &Path) -> Result<fs::Metadata, String> {
    fs::symlink_metadata(p).map_err(|e| format!("lstat {}: {e}", p.display()))
}

/// cap_net_raw+ep (VFS_CAP_REVISION_2).
const CAP_NET_RAW: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00,
];

/// The value of xattr `name` of `p` (not following symlinks), None if it has none.
fn xattr(p: &Path, name: &str) -> Result<Option<Vec<u8>>, String> {
    use std::os::unix::ffi::OsStrExt;
    let cp = std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let cn = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 65536];
    // SAFETY: NUL-terminated strings; `buf` is valid for its length.
    let n = unsafe {
        nix::libc::lgetxattr(cp.as_ptr(), cn.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(nix::libc::ENODATA) {
            return Ok(None);
        }
        return Err(format!("getxattr {name} of {}: {e}", p.display()));
    }
    buf.truncate(n as usize);
    Ok(Some(buf))
}

fn missing(p: &Path) -> bool {
    fs::symlink_metadata(p).is_err()
}

/// The corpus. `canary` is the absolute path of the directory outside the pool that the base
/// layer's `lowlink` points to.
fn corpus(canary: &Path) -> Vec<Case> {
    use tar::EntryType as E;
    let c = canary.to_str().expect("utf-8 test path");
    let in_canary = format!("{c}/pwned");
    let in_canary_rel = format!("{}/pwned", c.trim_start_matches('/'));
    let r = |kind, tar, want| Case {
        kind,
        tar,
        expect: Expect::Refused(want),
    };
    let i = |kind, tar, check: Check| Case {
        kind,
        tar,
        expect: Expect::Imported(check),
    };
    vec![
        r(
            "traversal ../",
            T::new().raw(E::Regular, b"../../pwned", b"", b"x").done(),
            "`..`",
        ),
        r(
            "traversal inside a path",
            T::new()
                .raw(E::Regular, b"a/../../../pwned", b"", b"x")
                .done(),
            "`..`",
        ),
        r(
            "traversal to the canary",
            T::new()
                .raw(
                    E::Regular,
                    format!("../../../../../../..{in_canary}").as_bytes(),
                    b"",
                    b"x",
                )
                .done(),
            "`..`",
        ),
        r(
            "absolute path",
            T::new()
                .raw(E::Regular, in_canary.as_bytes(), b"", b"x")
                .done(),
            "absolute path",
        ),
        r(
            "absolute directory",
            T::new()
                .raw(E::Directory, b"/tmp/blkdrv-hostile-dir/", b"", b"")
                .done(),
            "absolute path",
        ),
        r(
            "symlink to outside, then a file through it",
            T::new()
                .symlink("esc", c)
                .file("esc/pwned", b"x", 0o644)
                .done(),
            "writes through symlink",
        ),
        r(
            "relative symlink escape, then a file through it",
            T::new()
                .symlink("up", "../../../../../../..")
                .raw(
                    E::Regular,
                    format!("up/{in_canary_rel}").as_bytes(),
                    b"",
                    b"x",
                )
                .done(),
            "writes through symlink",
        ),
        r(
            "symlink of the lower layer, file through it",
            T::new().file("lowlink/pwned", b"x", 0o644).done(),
            "writes through symlink",
        ),
        r(
            "symlink of the lower layer, directory through it",
            T::new().dir("lowlink/sub", 0o755).done(),
            "writes through symlink",
        ),
        r(
            "symlink chain (a -> b -> outside), file through it",
            T::new()
                .symlink("b", c)
                .symlink("a", "b")
                .file("a/pwned", b"x", 0o644)
                .done(),
            "writes through symlink",
        ),
        r(
            "hardlink to an absolute path",
            T::new().raw(E::Link, b"h", b"/etc/passwd", b"").done(),
            "hardlink target: absolute path",
        ),
        r(
            "hardlink with ..",
            T::new()
                .raw(E::Link, b"h", b"../../../etc/passwd", b"")
                .done(),
            "`..`",
        ),
        r(
            "hardlink through a symlink of the tar",
            T::new().symlink("esc", c).hardlink("h", "esc/file").done(),
            "writes through symlink",
        ),
        r(
            "hardlink through a symlink of the lower layer",
            T::new().hardlink("h", "lowlink/file").done(),
            "writes through symlink",
        ),
        r(
            "hardlink to a missing file",
            T::new().hardlink("h", "nothing").done(),
            "does not exist",
        ),
        r(
            "hardlink to a directory",
            T::new().hardlink("h", "d").done(),
            "is a directory",
        ),
        r(
            "block device 7:0 mode 0666",
            T::new().node("loop0", E::Block, 7, 0).done(),
            "block device 7:0 refused",
        ),
        r(
            "char device 1:1 (/dev/mem)",
            T::new().node("mem", E::Char, 1, 1).done(),
            "char device 1:1 refused",
        ),
        i(
            "char device 0:0 = whiteout of a lower file",
            T::new().node("a", E::Char, 0, 0).done(),
            |p| {
                ok(
                    missing(&p.join("a")) && p.join("d/f").exists(),
                    "a whited out, d/f kept",
                )
            },
        ),
        i("fifo", T::new().node("fifo", E::Fifo, 0, 0).done(), |p| {
            ok(lmeta(&p.join("fifo"))?.file_type().is_fifo(), "fifo")
        }),
        i(
            "setuid root file",
            T::new().file("suid", b"#!/bin/sh\n", 0o4755).done(),
            |p| {
                ok(
                    lmeta(&p.join("suid"))?.mode() & 0o7777 == 0o4755,
                    "setuid kept",
                )
            },
        ),
        i(
            "setgid directory",
            T::new().dir("sgid", 0o2775).done(),
            |p| {
                ok(
                    lmeta(&p.join("sgid"))?.mode() & 0o7777 == 0o2775,
                    "setgid dir kept",
                )
            },
        ),
        r(
            "size of 1 PiB with no data",
            claims("huge", 1 << 50, &[]),
            "free where it is spooled",
        ),
        r(
            "data shorter than the size",
            claims("short", 100_000, &[7u8; 1000]),
            "ends inside the data",
        ),
        r(
            "header cut in the middle",
            claims("cut", 10, &[])[..300].to_vec(),
            "reading tar stream",
        ),
        r(
            "bad header checksum",
            {
                let mut v = T::new().file("f", b"x", 0o644).done();
                v[0] ^= 1;
                v
            },
            "reading tar stream",
        ),
        r(
            "PAX size larger than the data",
            T::new()
                .pax(&[("size", b"5000000")])
                .file("paxsize", b"tiny", 0o644)
                .done(),
            "reading tar stream",
        ),
        r(
            "NUL in a PAX path",
            T::new()
                .pax(&[("path", b"a\0b")])
                .file("x", b"x", 0o644)
                .done(),
            "path contains NUL",
        ),
        i(
            "newline in a name",
            T::new().raw(E::Regular, b"new\nline", b"", b"n").done(),
            |p| {
                ok(
                    fs::read(p.join("new\nline")).map_err(|e| e.to_string())? == b"n",
                    "file named new\\nline",
                )
            },
        ),
        r(
            "terminal escape and newline in a refused name",
            T::new()
                .raw(E::Regular, b"\x1b[2J\ncreated layer x/../../y", b"", b"")
                .done(),
            "`..`",
        ),
        i(
            "duplicate file: the last one wins",
            T::new()
                .file("dup", b"one", 0o644)
                .file("dup", b"two", 0o600)
                .done(),
            |p| {
                ok(
                    fs::read(p.join("dup")).map_err(|e| e.to_string())? == b"two",
                    "second content",
                )
            },
        ),
        i(
            "file, then a directory of the same name",
            T::new()
                .file("fd", b"x", 0o644)
                .dir("fd", 0o755)
                .file("fd/in", b"i", 0o644)
                .done(),
            |p| ok(p.join("fd/in").is_file(), "directory replaced the file"),
        ),
        i(
            "symlink to outside replaced by a directory",
            T::new()
                .symlink("esc", c)
                .dir("esc", 0o755)
                .file("esc/x", b"x", 0o644)
                .done(),
            |p| {
                ok(
                    lmeta(&p.join("esc"))?.is_dir() && p.join("esc/x").is_file(),
                    "esc is a real directory",
                )
            },
        ),
        i(
            "dangling absolute symlink is only data",
            T::new().symlink("shadow", "/etc/shadow").done(),
            |p| {
                ok(
                    fs::read_link(p.join("shadow")).map_err(|e| e.to_string())?
                        == Path::new("/etc/shadow"),
                    "link kept as is",
                )
            },
        ),
        r(
            "whiteout named .wh..",
            T::new().raw(E::Regular, b"d/.wh..", b"", b"").done(),
            "invalid whiteout",
        ),
        r(
            "whiteout with ..",
            T::new().raw(E::Regular, b"../.wh.a", b"", b"").done(),
            "`..`",
        ),
        r(
            "absolute whiteout",
            T::new().raw(E::Regular, b"/.wh.etc", b"", b"").done(),
            "absolute path",
        ),
        r(
            "whiteout through a symlink of the lower layer",
            T::new()
                .raw(E::Regular, b"lowlink/.wh.keep", b"", b"")
                .done(),
            "writes through symlink",
        ),
        r(
            "char 0:0 whiteout through a lower symlink",
            T::new().node("lowlink/keep", E::Char, 0, 0).done(),
            "writes through symlink",
        ),
        r(
            "opaque directory through a symlink of the lower layer",
            T::new()
                .raw(E::Regular, b"lowlink/.wh..wh..opq", b"", b"")
                .done(),
            "writes through symlink",
        ),
        i(
            "whiteout of something that does not exist",
            T::new().raw(E::Regular, b".wh.nothing", b"", b"").done(),
            |p| ok(p.join("a").is_file(), "nothing else removed"),
        ),
        i(
            "trusted.overlay.opaque xattr is not imported",
            T::new()
                .pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")])
                .dir("d", 0o755)
                .done(),
            |p| ok(p.join("d/f").is_file(), "lower content of d still visible"),
        ),
        i(
            "file capability (binary security.capability) on a file owned by 1000",
            {
                let mut h = header(E::Regular, 0o755, 4);
                h.set_uid(1000);
                h.set_gid(1000);
                T::new()
                    .pax(&[("SCHILY.xattr.security.capability", &CAP_NET_RAW)])
                    .entry(h, "ping", b"ping")
                    .done()
            },
            |p| {
                ok(
                    xattr(&p.join("ping"), "security.capability")? == Some(CAP_NET_RAW.to_vec()),
                    "capability kept after chown",
                )
            },
        ),
        i(
            "user xattr whose binary value holds newlines and NULs",
            T::new()
                .pax(&[("SCHILY.xattr.user.bin", b"a\nb\0c\n")])
                .file("ux", b"x", 0o644)
                .done(),
            |p| {
                ok(
                    xattr(&p.join("ux"), "user.bin")? == Some(b"a\nb\0c\n".to_vec()),
                    "value byte for byte",
                )
            },
        ),
        r(
            "unsupported entry type (volume label)",
            T::new().raw(E::new(b'V'), b"vol", b"", b"").done(),
            "unsupported entry type",
        ),
        r("not a tar at all", vec![0x42; 4096], "reading tar stream"),
        r("empty stream", Vec::new(), "empty tar stream"),
        r(
            "gzip bomb: 256 MiB of zeros after an entry claiming 1 PiB",
            gzip(&[&claims("bomb", 1 << 50, &[])], 256 << 20),
            "free where it is spooled",
        ),
        r(
            "gzip bomb: 256 MiB of zeros after the end of the tar",
            gzip(&[], 256 << 20),
            "after the end of the tar",
        ),
        r(
            "gzip bomb: a PAX header of 256 MiB",
            {
                let mut h = header(E::XHeader, 0o644, 256 << 20);
                h.set_cksum();
                gzip(&[h.as_bytes()], 256 << 20)
            },
            "extended headers of one entry exceed",
        ),
        r(
            "gzip stream cut in the middle",
            {
                let g = gzip(&[&T::new().file("f", &[9u8; 200_000], 0o644).done()], 0);
                g[..g.len() / 2].to_vec()
            },
            "reading tar stream",
        ),
    ]
}

// ---- the case ------------------------------------------------------------------------------

/// Names and contents under `dir`, to see that nothing was written there.
fn listing(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let m = fs::symlink_metadata(&p).ok();
            if m.as_ref().is_some_and(|m| m.is_dir()) {
                stack.push(p.clone());
            }
            let content = if m.is_some_and(|m| m.is_file()) {
                fs::read(&p).unwrap_or_default()
            } else {
                Vec::new()
            };
            out.push((p, content));
        }
    }
    out.sort();
    out
}

fn layer_names(pool: &Pool) -> Result<Vec<String>, String> {
    let mut v: Vec<String> = pool
        .list()
        .map_err(|e| format!("list: {e}"))?
        .into_iter()
        .map(|l| l.name)
        .collect();
    v.sort();
    Ok(v)
}

pub fn hostile_tar_corpus(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    let canary = tempfile::Builder::new()
        .prefix("hostile-canary-")
        .tempdir_in(test_base())
        .map_err(|e| e.to_string())?;
    fs::write(canary.path().join("file"), "canary").map_err(|e| e.to_string())?;
    fs::write(canary.path().join("keep"), "keep").map_err(|e| e.to_string())?;
    let canary_path = canary.path().to_path_buf();
    import_dir(&tp, &mut pool, "base", None, |p| {
        fs::write(p.join("a"), "a")?;
        fs::create_dir(p.join("d"))?;
        fs::write(p.join("d/f"), "f")?;
        std::os::unix::fs::symlink(&canary_path, p.join("lowlink"))
    })?;
    let built = std::time::Instant::now();
    let cases = corpus(canary.path());
    eprintln!(
        "{driver}: hostile corpus of {} tars built in {:.1?}",
        cases.len(),
        built.elapsed()
    );
    ensure!(cases.len() >= 30, "corpus has {} kinds", cases.len());
    let canary_before = listing(canary.path());
    let scratch_before = listing(&tp.scratch);
    let mut failures = Vec::new();
    for (n, case) in cases.into_iter().enumerate() {
        let before = layer_names(&pool)?;
        let name = LayerName::new(&format!("h{n}")).map_err(|e| e.to_string())?;
        let got = pool.create(
            &name,
            Some("base"),
            Source::Tar(Box::new(&case.tar[..])),
            None,
            &mut |_| {},
        );
        let outcome: Result<(), String> = match (&case.expect, got) {
            (Expect::Refused(want), Err(e)) => {
                let msg = e.to_string();
                if !msg.contains(want) {
                    Err(format!("refused with {msg:?}, expected it to say {want:?}"))
                } else if msg.chars().any(char::is_control) {
                    Err(format!("error is not one clean line: {msg:?}"))
                } else if layer_names(&pool)? != before {
                    Err(format!(
                        "layers changed after the refusal: {:?}",
                        layer_names(&pool)?
                    ))
                } else {
                    Ok(())
                }
            }
            (Expect::Refused(want), Ok(_)) => Err(format!("imported, expected refusal ({want})")),
            (Expect::Imported(_), Err(e)) => Err(format!("refused: {e}")),
            (Expect::Imported(check), Ok(_)) => {
                let seen = with_mount(&tp, &mut pool, name.as_str(), true, *check);
                let removed = pool
                    .remove(name.as_str(), false)
                    .map(|_| ())
                    .map_err(|e| format!("remove: {e}"));
                seen.and(removed)
            }
        };
        let checked = pool.check(false).map_err(|e| format!("check: {e}"))?;
        let outcome = outcome.and_then(|()| {
            ok(
                checked.is_clean(),
                &format!("pool check clean: {checked:?}"),
            )?;
            ok(
                listing(canary.path()) == canary_before,
                "canary outside the pool untouched",
            )?;
            ok(
                listing(&tp.scratch) == scratch_before,
                "scratch dir untouched",
            )
        });
        if let Err(e) = outcome {
            failures.push(format!("{n} {}: {e}", case.kind));
        }
    }
    ensure!(failures.is_empty(), "\n  {}", failures.join("\n  "));
    ensure!(
        layer_names(&pool)? == vec!["base".to_string()],
        "layers left: {:?}",
        layer_names(&pool)?
    );
    Ok(())
}
