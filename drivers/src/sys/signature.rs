//! What is already on a block device, read natively from its first few hundred KiB.
//!
//! `pool init` must never format over somebody's data, so before a driver runs mkfs or builds a
//! thin pool it asks [`super::blockdev::check_device_free`], which asks [`describe_found`]. The magics are the well-known on-disk ones; the checks
//! are deliberately simple (magic plus, where cheap, one sanity field), like `wipefs` rather than a
//! full `blkid` validation: a false "something is there" costs a `--force`, a miss costs data.

use crate::error::{DriverError, Result};
use serde::Serialize;
use std::fs::File;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::Path;

/// How much of a device [`probe`] reads: the first two ZFS labels' first 32 uberblock slots
/// (label 1 starts at 256 KiB, its uberblocks at +128 KiB), which also covers everything else.
pub const PROBE_LEN: usize = 416 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Signature {
    /// ext2/3/4: magic 0xEF53 at 1080.
    Ext4,
    /// "XFSB" at 0.
    Xfs,
    /// "_BHRfS_M" at 65536+64.
    Btrfs,
    /// "SWAPSPACE2" or "SWAP-SPACE" at the end of the first page.
    Swap,
    /// "LABELONE" at the start of one of sectors 0..4 with "LVM2 001" at +24.
    Lvm2Pv,
    /// "LUKS\xba\xbe" at 0.
    Luks,
    /// "EFI PART" at 512 (or 4096 for 4K-sector disks).
    Gpt,
    /// Boot signature 0x55AA with a partition entry, and not a FAT boot sector.
    Mbr,
    /// FAT boot sector.
    Vfat,
    /// ZFS vdev label with an uberblock.
    Zfs,
    /// "hsqs" at 0.
    Squashfs,
    /// dm-thin metadata superblock.
    DmThinMetadata,
}

impl Signature {
    /// The name `blkid` uses for the type, so messages match what an admin sees elsewhere.
    pub fn name(&self) -> &'static str {
        match self {
            Signature::Ext4 => "ext4",
            Signature::Xfs => "xfs",
            Signature::Btrfs => "btrfs",
            Signature::Swap => "swap",
            Signature::Lvm2Pv => "LVM2_member",
            Signature::Luks => "crypto_LUKS",
            Signature::Gpt => "gpt",
            Signature::Mbr => "dos (MBR)",
            Signature::Vfat => "vfat",
            Signature::Zfs => "zfs_member",
            Signature::Squashfs => "squashfs",
            Signature::DmThinMetadata => "thin-pool metadata",
        }
    }

    /// A noun phrase for messages ("an xfs filesystem").
    fn describe(&self) -> String {
        match self {
            Signature::Ext4 | Signature::Xfs => format!("an {} filesystem", self.name()),
            Signature::Btrfs | Signature::Vfat | Signature::Squashfs => {
                format!("a {} filesystem", self.name())
            }
            Signature::Swap => "a swap area".to_string(),
            Signature::Lvm2Pv => "an LVM2 physical volume label (LVM2_member)".to_string(),
            Signature::Luks => "a LUKS header (crypto_LUKS)".to_string(),
            Signature::Gpt => "a gpt partition table".to_string(),
            Signature::Mbr => "a dos (MBR) partition table".to_string(),
            Signature::Zfs => "a ZFS vdev label (zfs_member)".to_string(),
            Signature::DmThinMetadata => "dm thin-pool metadata".to_string(),
        }
    }
}

impl std::fmt::Display for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// `len` bytes at `off`, or None when the buffer is too short (a small device simply has fewer
/// places to look).
fn at(buf: &[u8], off: usize, len: usize) -> Option<&[u8]> {
    buf.get(off..off.checked_add(len)?)
}

fn has(buf: &[u8], off: usize, magic: &[u8]) -> bool {
    at(buf, off, magic.len()) == Some(magic)
}

fn le_u32(buf: &[u8], off: usize) -> Option<u32> {
    at(buf, off, 4).map(|b| u32::from_le_bytes(b.try_into().unwrap()))
}

fn le_u64(buf: &[u8], off: usize) -> Option<u64> {
    at(buf, off, 8).map(|b| u64::from_le_bytes(b.try_into().unwrap()))
}

fn be_u64(buf: &[u8], off: usize) -> Option<u64> {
    at(buf, off, 8).map(|b| u64::from_be_bytes(b.try_into().unwrap()))
}

const EXT4_SB: usize = 1024;
const BTRFS_SB: usize = 65536;
const ZFS_LABEL_SIZE: usize = 256 * 1024;
const ZFS_UBERBLOCK_OFFSET: usize = 128 * 1024;
const ZFS_UBERBLOCK_MAGIC: u64 = 0x00ba_b10c;
const THIN_SB_MAGIC: u64 = 27_022_010;

fn is_ext4(buf: &[u8]) -> bool {
    // s_log_block_size above 6 (64 KiB blocks) means the 0xEF53 is a coincidence.
    has(buf, EXT4_SB + 0x38, &[0x53, 0xEF]) && le_u32(buf, EXT4_SB + 24).is_some_and(|l| l <= 6)
}

fn is_swap(buf: &[u8]) -> bool {
    // The magic ends the first page; 4 KiB pages are the norm, the others are cheap to check.
    [4096usize, 8192, 16384, 65536]
        .iter()
        .any(|page| has(buf, page - 10, b"SWAPSPACE2") || has(buf, page - 10, b"SWAP-SPACE"))
}

fn is_lvm2(buf: &[u8]) -> bool {
    (0..4).any(|s| has(buf, s * 512, b"LABELONE") && has(buf, s * 512 + 24, b"LVM2 001"))
}

fn is_gpt(buf: &[u8]) -> bool {
    has(buf, 512, b"EFI PART") || has(buf, 4096, b"EFI PART")
}

fn boot_signature(buf: &[u8]) -> bool {
    has(buf, 510, &[0x55, 0xAA])
}

fn is_vfat(buf: &[u8]) -> bool {
    boot_signature(buf) && (has(buf, 54, b"FAT") || has(buf, 82, b"FAT32"))
}

/// The partition type bytes of the four primary MBR entries.
fn mbr_types(buf: &[u8]) -> Vec<u8> {
    (0..4)
        .filter_map(|i| buf.get(446 + 16 * i + 4).copied())
        .filter(|&t| t != 0)
        .collect()
}

fn is_mbr(buf: &[u8], gpt: bool) -> bool {
    if !boot_signature(buf) || has(buf, 54, b"FAT") || has(buf, 82, b"FAT") {
        return false;
    }
    let types = mbr_types(buf);
    // A GPT disk's protective MBR (one 0xEE entry) is part of the GPT, not a second table.
    let protective_only = gpt && types.iter().all(|&t| t == 0xEE);
    !types.is_empty() && !protective_only
}

fn is_zfs(buf: &[u8]) -> bool {
    (0..2).any(|label| {
        let base = label * ZFS_LABEL_SIZE + ZFS_UBERBLOCK_OFFSET;
        (0..32).any(|slot| {
            let off = base + slot * 1024;
            le_u64(buf, off) == Some(ZFS_UBERBLOCK_MAGIC)
                || be_u64(buf, off) == Some(ZFS_UBERBLOCK_MAGIC)
        })
    })
}

/// Every signature found in `buf` (the start of a device), in [`Signature`] declaration order.
pub fn probe_bytes(buf: &[u8]) -> Vec<Signature> {
    let gpt = is_gpt(buf);
    let checks = [
        (Signature::Ext4, is_ext4(buf)),
        (Signature::Xfs, has(buf, 0, b"XFSB")),
        (Signature::Btrfs, has(buf, BTRFS_SB + 64, b"_BHRfS_M")),
        (Signature::Swap, is_swap(buf)),
        (Signature::Lvm2Pv, is_lvm2(buf)),
        (Signature::Luks, has(buf, 0, b"LUKS\xba\xbe")),
        (Signature::Gpt, gpt),
        (Signature::Mbr, is_mbr(buf, gpt)),
        (Signature::Vfat, is_vfat(buf)),
        (Signature::Zfs, is_zfs(buf)),
        (Signature::Squashfs, has(buf, 0, b"hsqs")),
        (
            Signature::DmThinMetadata,
            le_u64(buf, 32) == Some(THIN_SB_MAGIC),
        ),
    ];
    checks
        .into_iter()
        .filter_map(|(sig, found)| found.then_some(sig))
        .collect()
}

/// Reads up to [`PROBE_LEN`] bytes from the start of `path` (fewer if it is shorter).
fn read_head(path: &Path) -> Result<Vec<u8>> {
    let file = File::open(path).map_err(|e| DriverError::io("open for probing", path, e))?;
    if file
        .metadata()
        .is_ok_and(|m| m.file_type().is_block_device())
    {
        // Cached pages of a device can predate an O_DIRECT write (mkfs.xfs, another host's
        // wipefs on shared storage); drop the clean ones so the probe reads the disk. Advisory.
        let _ = nix::fcntl::posix_fadvise(
            &file,
            0,
            PROBE_LEN as nix::libc::off_t,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
    }
    let mut buf = vec![0u8; PROBE_LEN];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(DriverError::io("read for probing", path, e)),
        }
    }
    buf.truncate(filled);
    Ok(buf)
}

/// Probes the start of a device or image file. Returns every signature found, in declaration order.
pub fn probe(path: &Path) -> Result<Vec<Signature>> {
    Ok(probe_bytes(&read_head(path)?))
}

/// Lowercase hyphenated text of a 16-byte UUID, None for the all-zero (unset) one.
fn format_uuid(b: &[u8]) -> Option<String> {
    if b.len() != 16 || b.iter().all(|&x| x == 0) {
        return None;
    }
    let mut s = String::with_capacity(36);
    for (i, x) in b.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{x:02x}"));
    }
    Some(s)
}

/// The filesystem UUID of an ext4, xfs or btrfs filesystem in `buf`.
pub fn fs_uuid_bytes(buf: &[u8]) -> Option<(Signature, String)> {
    probe_bytes(buf).into_iter().find_map(|sig| {
        let off = match sig {
            Signature::Ext4 => EXT4_SB + 0x68,
            Signature::Xfs => 32,
            Signature::Btrfs => BTRFS_SB + 32,
            _ => return None,
        };
        format_uuid(at(buf, off, 16)?).map(|u| (sig, u))
    })
}

/// The filesystem UUID of the ext4, xfs or btrfs filesystem on `path`, if any.
pub fn fs_uuid(path: &Path) -> Result<Option<(Signature, String)>> {
    Ok(fs_uuid_bytes(&read_head(path)?))
}

/// What [`probe`] finds on `path`, as a phrase for a refusal ("an xfs filesystem (UUID ...)
/// and a swap area"); None when nothing is there.
pub fn describe_found(path: &Path) -> Result<Option<String>> {
    let head = read_head(path)?;
    let found = probe_bytes(&head);
    if found.is_empty() {
        return Ok(None);
    }
    let uuid = fs_uuid_bytes(&head);
    let parts: Vec<String> = found
        .iter()
        .map(|sig| match &uuid {
            Some((s, u)) if s == sig => format!("{} (UUID {u})", sig.describe()),
            _ => sig.describe(),
        })
        .collect();
    Ok(Some(parts.join(" and ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn buf() -> Vec<u8> {
        vec![0u8; PROBE_LEN]
    }

    fn put(b: &mut [u8], off: usize, bytes: &[u8]) {
        b[off..off + bytes.len()].copy_from_slice(bytes);
    }

    #[test]
    fn zero_and_short_buffers_have_nothing() {
        assert!(probe_bytes(&buf()).is_empty());
        assert!(probe_bytes(&[]).is_empty());
        assert!(probe_bytes(&[0u8; 100]).is_empty());
        assert!(fs_uuid_bytes(&buf()).is_none());
    }

    #[test]
    fn detects_each_magic() {
        type Fill = Box<dyn Fn(&mut Vec<u8>)>;
        let cases: Vec<(Signature, Fill)> = vec![
            (Signature::Ext4, Box::new(|b| put(b, 1080, &[0x53, 0xEF]))),
            (Signature::Xfs, Box::new(|b| put(b, 0, b"XFSB"))),
            (
                Signature::Btrfs,
                Box::new(|b| put(b, 65536 + 64, b"_BHRfS_M")),
            ),
            (Signature::Swap, Box::new(|b| put(b, 4086, b"SWAPSPACE2"))),
            (Signature::Swap, Box::new(|b| put(b, 4086, b"SWAP-SPACE"))),
            (
                Signature::Lvm2Pv,
                Box::new(|b| {
                    put(b, 512, b"LABELONE");
                    put(b, 512 + 24, b"LVM2 001");
                }),
            ),
            (Signature::Luks, Box::new(|b| put(b, 0, b"LUKS\xba\xbe"))),
            (Signature::Gpt, Box::new(|b| put(b, 512, b"EFI PART"))),
            (
                Signature::Mbr,
                Box::new(|b| {
                    put(b, 510, &[0x55, 0xAA]);
                    put(b, 446 + 16 + 4, &[0x83]);
                }),
            ),
            (
                Signature::Vfat,
                Box::new(|b| {
                    put(b, 510, &[0x55, 0xAA]);
                    put(b, 82, b"FAT32   ");
                    // Boot code bytes overlapping the partition table must not make it an MBR.
                    put(b, 446 + 4, &[0x12]);
                }),
            ),
            (
                Signature::Vfat,
                Box::new(|b| {
                    put(b, 510, &[0x55, 0xAA]);
                    put(b, 54, b"FAT16   ");
                }),
            ),
            (
                Signature::Zfs,
                Box::new(|b| put(b, 128 * 1024 + 3 * 1024, &0x00bab10cu64.to_le_bytes())),
            ),
            (
                Signature::Zfs,
                Box::new(|b| put(b, 128 * 1024, &0x00bab10cu64.to_be_bytes())),
            ),
            (
                Signature::Zfs,
                Box::new(|b| put(b, 384 * 1024 + 31 * 1024, &0x00bab10cu64.to_le_bytes())),
            ),
            (Signature::Squashfs, Box::new(|b| put(b, 0, b"hsqs"))),
            (
                Signature::DmThinMetadata,
                Box::new(|b| put(b, 32, &27022010u64.to_le_bytes())),
            ),
        ];
        for (want, fill) in cases {
            let mut b = buf();
            fill(&mut b);
            assert_eq!(probe_bytes(&b), vec![want.clone()], "{want:?}");
        }
    }

    #[test]
    fn near_misses_are_ignored() {
        let mut b = buf();
        put(&mut b, 510, &[0x55, 0xAA]); // boot signature but no partition entry
        put(&mut b, 1024, b"LABELONE"); // no "LVM2 001"
        put(&mut b, 128 * 1024 + 512, &0x00bab10cu64.to_le_bytes()); // not on a slot boundary
        put(&mut b, 4086, b"SWAPSPACE1");
        assert!(probe_bytes(&b).is_empty());
        let mut b = buf();
        put(&mut b, 1080, &[0x53, 0xEF]);
        put(&mut b, 1024 + 24, &20u32.to_le_bytes()); // absurd block size
        assert!(probe_bytes(&b).is_empty());
    }

    #[test]
    fn gpt_protective_mbr_is_not_reported_twice() {
        let mut b = buf();
        put(&mut b, 510, &[0x55, 0xAA]);
        put(&mut b, 446 + 4, &[0xEE]);
        put(&mut b, 512, b"EFI PART");
        assert_eq!(probe_bytes(&b), vec![Signature::Gpt]);
        // A hybrid MBR (real entries beside the 0xEE one) is reported.
        put(&mut b, 446 + 16 + 4, &[0x0c]);
        assert_eq!(probe_bytes(&b), vec![Signature::Gpt, Signature::Mbr]);
    }

    #[test]
    fn several_signatures_come_in_order() {
        let mut b = buf();
        put(&mut b, 0, b"XFSB");
        put(&mut b, 1080, &[0x53, 0xEF]);
        put(&mut b, 4086, b"SWAPSPACE2");
        assert_eq!(
            probe_bytes(&b),
            vec![Signature::Ext4, Signature::Xfs, Signature::Swap]
        );
    }

    #[test]
    fn names() {
        assert_eq!(Signature::Lvm2Pv.name(), "LVM2_member");
        assert_eq!(Signature::Mbr.to_string(), "dos (MBR)");
        assert_eq!(
            serde_json::to_string(&Signature::DmThinMetadata).unwrap(),
            "\"DmThinMetadata\""
        );
    }

    #[test]
    fn uuid_formatting() {
        let mut b = buf();
        put(&mut b, 0, b"XFSB");
        let raw: Vec<u8> = (0..16).map(|i| i * 17).collect();
        put(&mut b, 32, &raw);
        assert_eq!(
            fs_uuid_bytes(&b),
            Some((
                Signature::Xfs,
                "00112233-4455-6677-8899-aabbccddeeff".to_string()
            ))
        );
        let mut b = buf();
        put(&mut b, 1080, &[0x53, 0xEF]);
        assert_eq!(fs_uuid_bytes(&b), None, "zero UUID is no UUID");
        put(&mut b, 1024 + 0x68, &[0xAB; 16]);
        assert_eq!(
            fs_uuid_bytes(&b).unwrap().1,
            "abababab-abab-abab-abab-abababababab"
        );
    }

    /// Makes a sparse image of `size_mib`, formats it with `mkfs`, and compares with blkid.
    fn check_real_image(mkfs: &str, args: &[&str], size_mib: u64, want: Signature) {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        File::create(&img).unwrap().set_len(size_mib << 20).unwrap();
        let st = Command::new(mkfs)
            .args(args)
            .arg(&img)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "{mkfs} failed");
        assert_eq!(probe(&img).unwrap(), vec![want.clone()]);
        if want == Signature::Swap {
            return;
        }
        let blkid = Command::new("blkid")
            .args(["-s", "UUID", "-o", "value"])
            .arg(&img)
            .output()
            .unwrap();
        let expected = String::from_utf8(blkid.stdout).unwrap().trim().to_string();
        assert!(!expected.is_empty());
        assert_eq!(fs_uuid(&img).unwrap(), Some((want, expected)));
        // What wipefs erases is exactly what makes a device look used.
        let st = Command::new("wipefs")
            .arg("-qa")
            .arg(&img)
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(probe(&img).unwrap(), vec![]);
    }

    #[test]
    fn real_swap_image() {
        check_real_image("mkswap", &["-q"], 4, Signature::Swap);
    }

    #[test]
    fn real_ext4_image() {
        check_real_image("mkfs.ext4", &["-q", "-F"], 16, Signature::Ext4);
    }

    #[test]
    fn real_xfs_image() {
        check_real_image("mkfs.xfs", &["-q", "-f"], 320, Signature::Xfs);
    }

    #[test]
    fn real_btrfs_image() {
        check_real_image("mkfs.btrfs", &["-q", "-f"], 128, Signature::Btrfs);
    }

    #[test]
    fn short_file_is_probed() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("small");
        std::fs::write(&img, b"hsqs and not much more").unwrap();
        assert_eq!(probe(&img).unwrap(), vec![Signature::Squashfs]);
        assert!(probe(&dir.path().join("missing")).is_err());
    }
}
