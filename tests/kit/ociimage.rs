//! A test OCI image built locally, for containerd (`ctr images import`) without a registry: an
//! OCI layout archive (`oci-layout`, `index.json`, `blobs/sha256/...`) of three uncompressed
//! layers holding a busybox-static userland and every kind of entry an unpacker can get wrong:
//! a whiteout and an opaque directory (layer 3 over layer 1), a symlink, a hardlink, a setuid
//! file, a file capability (`security.capability` in a PAX record).
//!
//! Deterministic: the same busybox gives the same bytes and so the same digests (entries in name
//! order, mtime 0, uid/gid 0), so containerd's content store and the chain IDs repeat from run
//! to run. [`CHECK_SCRIPT`] run inside a container of the image prints [`CHECK_EXPECTED`] when
//! every one of those entries came through the snapshotter intact.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The image's name: `ctr images import` takes it from the `io.containerd.image.name` annotation.
pub const IMAGE_NAME: &str = "docker.io/blkdrv/test:1";

/// Where busybox-static puts its binary (Debian's `busybox-static`; the VM base has it too).
pub const BUSYBOX: &str = "/bin/busybox";

/// `security.capability` of the capability copy of busybox: `vfs_cap_data` revision 2
/// (magic 0x02000000 | VFS_CAP_FLAGS_EFFECTIVE), permitted = CAP_NET_BIND_SERVICE (bit 10),
/// inheritable none, upper 32 capability bits none. Little endian, 20 bytes.
pub const CAP_XATTR: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, // magic_etc
    0x00, 0x04, 0x00, 0x00, // data[0].permitted: 1 << 10
    0x00, 0x00, 0x00, 0x00, // data[0].inheritable
    0x00, 0x00, 0x00, 0x00, // data[1].permitted
    0x00, 0x00, 0x00, 0x00, // data[1].inheritable
];

/// The contents of /etc/motd (layer 1).
pub const MOTD: &str = "blkdrv test image: unpacked by containerd onto a blkdrv pool\n";

/// Applets linked to /bin/busybox: what [`CHECK_SCRIPT`] and the tests call. A fixed list, not
/// `busybox --list`, so the layer does not change with the host's busybox configuration.
const APPLETS: &[&str] = &[
    "cat", "echo", "env", "grep", "head", "id", "ls", "mkdir", "readlink", "rm", "sh", "sleep",
    "stat", "su", "test", "touch", "tr", "true", "wc",
];

/// Run in a container of the image as `sh -c CHECK_SCRIPT`: checks what the layers hold and
/// writes into the rootfs, and that the container's devices work on a `nodev` rootfs (runc
/// mounts its own /dev). Each line names what it shows; [`CHECK_EXPECTED`] is the output when
/// everything came through. The capability is checked the way the kernel uses it: a process of
/// uid 1000 (no capabilities of its own) that executes the file gets CAP_NET_BIND_SERVICE as
/// its permitted set (needs `ctr run --allow-new-privs`: ctr sets no_new_privs by default, which
/// ignores file capabilities). busybox has no getfattr, and this reads the xattr's effect
/// rather than its bytes, so an xattr stored but mangled also fails.
pub const CHECK_SCRIPT: &str = r#"cat /etc/motd
stat -c 'mode %a uid %u links %h %n' /bin/suid /data/file.txt /data/hard
[ "$(stat -c %i /data/file.txt)" = "$(stat -c %i /data/hard)" ] && echo "hardlink: one inode"
echo "symlink: $(readlink /data/sym) -> $(cat /data/sym)"
[ -e /etc/gone ] || echo "whiteout: /etc/gone is gone"
echo "opaque: $(ls -A /opq | tr '\n' ' ')"
echo "capability as uid 1000: $(su tester -c '/opt/caps/busybox grep CapPrm /proc/self/status')"
echo "rootfs is writable" > /written && cat /written
[ -c /dev/null ] && echo x > /dev/null && echo "devices: /dev/null works (runc's /dev tmpfs)""#;

/// The output of [`CHECK_SCRIPT`] on an intact image.
pub const CHECK_EXPECTED: &str = "blkdrv test image: unpacked by containerd onto a blkdrv pool
mode 4755 uid 0 links 1 /bin/suid
mode 644 uid 0 links 2 /data/file.txt
mode 644 uid 0 links 2 /data/hard
hardlink: one inode
symlink: file.txt -> hello from layer 2
whiteout: /etc/gone is gone
opaque: new.txt 
capability as uid 1000: CapPrm:\t0000000000000400
rootfs is writable
devices: /dev/null works (runc's /dev tmpfs)
";

/// The built archive and what containerd will make of it.
#[derive(Debug, Clone)]
pub struct TestImage {
    /// The OCI archive (a tar of the layout) for `ctr images import`.
    pub archive: PathBuf,
    pub name: String,
    /// `sha256:...` of each layer's tar, lowest first (= the digests: layers are uncompressed).
    pub diff_ids: Vec<String>,
    /// The chain ID of each layer: containerd's name for the committed snapshot of the chain
    /// up to it.
    pub chain_ids: Vec<String>,
    /// Bytes of the archive.
    pub size: u64,
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// Chain IDs from diff IDs, as the OCI image spec defines them:
/// chain(0) = diff(0), chain(n) = sha256(chain(n-1) + " " + diff(n)).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// One entry of a layer, before it is written.
enum Entry {
    Dir(u32),
    File(Vec<u8>, u32),
    /// A file with PAX records before it (xattrs as SCHILY.xattr.NAME).
    PaxFile(Vec<u8>, u32, Vec<(String, Vec<u8>)>),
    Symlink(String),
    Hardlink(String),
}

/// A deterministic tar: entries sorted by path (a parent sorts before its children), ustar
/// headers owned by 0:0 with mtime 0.
fn layer_tar(mut entries: Vec<(String, Entry)>) -> Result<Vec<u8>, String> {
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut b = tar::Builder::new(Vec::new());
    let head = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(size);
        h
    };
    for (path, e) in entries {
        let r = match e {
            Entry::Dir(mode) => {
                let mut h = head(tar::EntryType::Directory, mode, 0);
                b.append_data(&mut h, format!("{path}/"), std::io::empty())
            }
            Entry::File(data, mode) => {
                let mut h = head(tar::EntryType::Regular, mode, data.len() as u64);
                b.append_data(&mut h, &path, data.as_slice())
            }
            Entry::PaxFile(data, mode, records) => b
                .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .and_then(|()| {
                    let mut h = head(tar::EntryType::Regular, mode, data.len() as u64);
                    b.append_data(&mut h, &path, data.as_slice())
                }),
            Entry::Symlink(target) => {
                let mut h = head(tar::EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, &path, &target)
            }
            Entry::Hardlink(target) => {
                let mut h = head(tar::EntryType::Link, 0o644, 0);
                b.append_link(&mut h, &path, &target)
            }
        };
        r.map_err(|e| format!("layer tar: write {path}: {e}"))?;
    }
    b.into_inner()
        .map_err(|e| format!("layer tar: finish: {e}"))
}

/// The three layers, lowest first.
fn layers(busybox: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    use Entry::*;
    let s = |p: &str| p.to_string();
    let mut l1 = vec![
        (s("bin"), Dir(0o755)),
        (s("dev"), Dir(0o755)),
        (s("etc"), Dir(0o755)),
        (s("opq"), Dir(0o755)),
        (s("proc"), Dir(0o555)),
        (s("root"), Dir(0o700)),
        (s("sys"), Dir(0o555)),
        (s("tmp"), Dir(0o1777)),
        (s("bin/busybox"), File(busybox.to_vec(), 0o755)),
        (s("etc/motd"), File(MOTD.into(), 0o644)),
        (
            s("etc/passwd"),
            File(
                b"root:x:0:0:root:/root:/bin/sh\ntester:x:1000:1000:tester:/tmp:/bin/sh\n".to_vec(),
                0o644,
            ),
        ),
        (
            s("etc/group"),
            File(b"root:x:0:\ntester:x:1000:\n".to_vec(), 0o644),
        ),
        (
            s("etc/gone"),
            File(b"whited out by layer 3\n".to_vec(), 0o644),
        ),
        (
            s("opq/old.txt"),
            File(b"hidden by layer 3\n".to_vec(), 0o644),
        ),
        (s("opq/olddir"), Dir(0o755)),
        (
            s("opq/olddir/deep.txt"),
            File(b"hidden too\n".to_vec(), 0o644),
        ),
    ];
    l1.extend(
        APPLETS
            .iter()
            .map(|a| (format!("bin/{a}"), Symlink(s("busybox")))),
    );
    let l2 = vec![
        (s("bin"), Dir(0o755)),
        (s("data"), Dir(0o755)),
        (s("opt"), Dir(0o755)),
        (s("opt/caps"), Dir(0o755)),
        // A script: the kernel ignores setuid on it; only the mode is checked.
        (s("bin/suid"), File(b"#!/bin/sh\nid -u\n".to_vec(), 0o4755)),
        (
            s("data/file.txt"),
            File(b"hello from layer 2\n".to_vec(), 0o644),
        ),
        (s("data/hard"), Hardlink(s("data/file.txt"))),
        (s("data/sym"), Symlink(s("file.txt"))),
        // Named busybox so that busybox takes its first argument as the applet.
        (
            s("opt/caps/busybox"),
            PaxFile(
                busybox.to_vec(),
                0o755,
                vec![(s("SCHILY.xattr.security.capability"), CAP_XATTR.to_vec())],
            ),
        ),
    ];
    let l3 = vec![
        (s("etc"), Dir(0o755)),
        (s("etc/.wh.gone"), File(Vec::new(), 0o644)),
        (s("etc/layer3"), File(b"layer 3 was here\n".to_vec(), 0o644)),
        (s("opq"), Dir(0o755)),
        (s("opq/.wh..wh..opq"), File(Vec::new(), 0o644)),
        (
            s("opq/new.txt"),
            File(b"the only entry of the opaque dir\n".to_vec(), 0o644),
        ),
    ];
    [l1, l2, l3].into_iter().map(layer_tar).collect()
}

/// containerd's name for this host's architecture (GOARCH).
fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// Builds the image from [`BUSYBOX`] into `dir` (`dir/image-oci.tar`).
pub fn build(dir: &Path) -> Result<TestImage, String> {
    let busybox = std::fs::read(BUSYBOX)
        .map_err(|e| format!("test image: read {BUSYBOX}: {e} (package busybox-static)"))?;
    build_from(dir, &busybox)
}

/// Builds the image with `busybox` as its userland.
pub fn build_from(dir: &Path, busybox: &[u8]) -> Result<TestImage, String> {
    use serde_json::json;
    let layers = layers(busybox)?;
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let mut blobs: Vec<(String, Vec<u8>)> = Vec::new();
    let config = json!({
        "architecture": goarch(),
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh", "-c", "cat /etc/motd"],
            "WorkingDir": "/",
        },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": [
            { "created_by": "blkdrv test kit: busybox userland, whiteout and opaque targets" },
            { "created_by": "blkdrv test kit: setuid, hardlink, symlink, file capability" },
            { "created_by": "blkdrv test kit: whiteout, opaque dir" },
        ],
    });
    let config = serde_json::to_vec(&config).map_err(|e| format!("test image: config: {e}"))?;
    let config_desc = json!({
        "mediaType": "application/vnd.oci.image.config.v1+json",
        "digest": sha256(&config),
        "size": config.len(),
    });
    blobs.push((sha256(&config), config));
    let layer_descs: Vec<_> = layers
        .iter()
        .zip(&diff_ids)
        .map(|(l, d)| {
            json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": d,
                "size": l.len(),
            })
        })
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config_desc,
        "layers": layer_descs,
    });
    let manifest =
        serde_json::to_vec(&manifest).map_err(|e| format!("test image: manifest: {e}"))?;
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": sha256(&manifest),
            "size": manifest.len(),
            "platform": { "architecture": goarch(), "os": "linux" },
            "annotations": {
                "io.containerd.image.name": IMAGE_NAME,
                "org.opencontainers.image.ref.name": IMAGE_NAME.rsplit(':').next().unwrap_or("latest"),
            },
        }],
    });
    let index = serde_json::to_vec(&index).map_err(|e| format!("test image: index: {e}"))?;
    blobs.push((sha256(&manifest), manifest));
    for (l, d) in layers.into_iter().zip(&diff_ids) {
        blobs.push((d.clone(), l));
    }
    blobs.sort_by(|a, b| a.0.cmp(&b.0));

    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("index.json".into(), index),
        (
            "oci-layout".into(),
            br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
        ),
    ];
    files.extend(blobs.into_iter().map(|(d, data)| {
        let hex = d.trim_start_matches("sha256:").to_string();
        (format!("blobs/sha256/{hex}"), data)
    }));
    let mut entries: Vec<(String, Entry)> = vec![
        ("blobs".into(), Entry::Dir(0o755)),
        ("blobs/sha256".into(), Entry::Dir(0o755)),
    ];
    entries.extend(files.into_iter().map(|(p, d)| (p, Entry::File(d, 0o644))));
    let archive_bytes = layer_tar(entries)?;
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("test image: mkdir {}: {e}", dir.display()))?;
    let archive = dir.join("image-oci.tar");
    std::fs::write(&archive, &archive_bytes)
        .map_err(|e| format!("test image: write {}: {e}", archive.display()))?;
    Ok(TestImage {
        archive,
        name: IMAGE_NAME.to_string(),
        chain_ids: chain_ids(&diff_ids),
        diff_ids,
        size: archive_bytes.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry as the tests look at it: path, type, mode, PAX records.
    type Seen = (String, tar::EntryType, u32, Vec<(String, Vec<u8>)>);

    fn entries(tar_bytes: &[u8]) -> Vec<Seen> {
        let mut a = tar::Archive::new(tar_bytes);
        a.entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let pax = e
                    .pax_extensions()
                    .unwrap()
                    .map(|exts| {
                        exts.map(|x| {
                            let x = x.unwrap();
                            (x.key().unwrap().to_string(), x.value_bytes().to_vec())
                        })
                        .collect()
                    })
                    .unwrap_or_default();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.entry_type(),
                    h.mode().unwrap(),
                    pax,
                )
            })
            .collect()
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        let d = vec!["sha256:a".to_string(), "sha256:b".to_string()];
        let c = chain_ids(&d);
        assert_eq!(c[0], "sha256:a");
        assert_eq!(c[1], sha256(b"sha256:a sha256:b"));
        assert_ne!(c[1], d[1]);
    }

    #[test]
    fn layers_hold_what_the_check_script_looks_for() {
        let l = layers(b"not really busybox").unwrap();
        assert_eq!(l.len(), 3);
        let (l1, l2, l3) = (entries(&l[0]), entries(&l[1]), entries(&l[2]));
        let find = |es: &[Seen], p: &str| {
            es.iter()
                .find(|e| e.0 == p)
                .cloned()
                .unwrap_or_else(|| panic!("{p} missing"))
        };
        assert_eq!(find(&l1, "bin/sh").1, tar::EntryType::Symlink);
        assert_eq!(find(&l2, "bin/suid").2, 0o4755);
        assert_eq!(find(&l2, "data/hard").1, tar::EntryType::Link);
        let caps = find(&l2, "opt/caps/busybox").3;
        assert_eq!(
            caps,
            vec![(
                "SCHILY.xattr.security.capability".to_string(),
                CAP_XATTR.to_vec()
            )]
        );
        find(&l3, "etc/.wh.gone");
        find(&l3, "opq/.wh..wh..opq");
        // Sorted, parents first: what makes the tar deterministic and applicable in order.
        let names: Vec<_> = l1
            .iter()
            .map(|e| e.0.trim_end_matches('/').to_string())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    #[test]
    fn the_archive_is_deterministic_and_complete() {
        let d1 = tempfile::tempdir().unwrap();
        let d2 = tempfile::tempdir().unwrap();
        let a = build_from(d1.path(), b"bb").unwrap();
        let b = build_from(d2.path(), b"bb").unwrap();
        let (ba, bb) = (
            std::fs::read(&a.archive).unwrap(),
            std::fs::read(&b.archive).unwrap(),
        );
        assert_eq!(ba, bb, "two builds differ");
        assert_eq!(a.diff_ids.len(), 3);
        let es = entries(&ba);
        let names: Vec<_> = es.iter().map(|e| e.0.clone()).collect();
        assert!(names.contains(&"oci-layout".to_string()));
        assert!(names.contains(&"index.json".to_string()));
        for d in &a.diff_ids {
            let p = format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
            assert!(names.contains(&p), "{p} missing from {names:?}");
        }
        // Every blob's name is its digest.
        let mut ar = tar::Archive::new(ba.as_slice());
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            if let Some(hex) = p.strip_prefix("blobs/sha256/").filter(|h| !h.is_empty()) {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut data).unwrap();
                assert_eq!(sha256(&data), format!("sha256:{hex}"));
            }
        }
    }

    #[test]
    fn the_capability_blob_is_revision_2_with_effective() {
        let magic = u32::from_le_bytes(CAP_XATTR[0..4].try_into().unwrap());
        assert_eq!(magic & 0xff00_0000, 0x0200_0000);
        assert_eq!(magic & 1, 1);
        let permitted = u32::from_le_bytes(CAP_XATTR[4..8].try_into().unwrap());
        assert_eq!(permitted, 1 << 10);
    }
}
