//! What is already on a block device, read natively from its first few hundred KiB.
//!
//! `pool init` must never format over somebody's data, so before a driver runs mkfs or builds a
//! thin pool it asks [`check_device_free`]. The magics are the well-known on-disk ones; the checks
//! are deliberately simple (magic plus, where cheap, one sanity field), like `wipefs` rather than a
//! full `blkid` validation: a false "something is there" costs a `--force`, a miss costs data.

use crate::error::{DriverError, Result};
use serde::Serialize;
use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::{FileExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

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

/// Undoes the octal escapes (`\040` for space...) of /proc/self/mountinfo paths.
fn unescape_mount_path(s: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            if let Ok(v) = u8::try_from(v) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MountEntry {
    pub mount_point: PathBuf,
    /// "maj:min" of the mounted filesystem's st_dev (anonymous, 0:N, for btrfs and others).
    pub devno: String,
    /// The mount source as given to mount(2) ("/dev/vda", "tmpfs", "overlay").
    pub source: String,
}

/// Fields: id parent maj:min root mount-point options [optional...] - fstype source superopts.
fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let sep = f.iter().skip(6).position(|x| *x == "-")? + 6;
            Some(MountEntry {
                mount_point: unescape_mount_path(f.get(4)?),
                devno: f.get(2)?.to_string(),
                source: unescape_mount_path(f.get(sep + 2)?)
                    .to_string_lossy()
                    .into_owned(),
            })
        })
        .collect()
}

/// Every mount in this process's mount namespace.
pub(crate) fn mount_table() -> Result<Vec<MountEntry>> {
    let mountinfo = "/proc/self/mountinfo";
    let text = std::fs::read_to_string(mountinfo)
        .map_err(|e| DriverError::io("read mount table", mountinfo, e))?;
    Ok(parse_mountinfo(&text))
}

fn devno_text(rdev: u64) -> String {
    format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    )
}

/// "maj:min" of the block device and of each of its partitions, from sysfs.
fn device_numbers(rdev: u64) -> Vec<String> {
    device_numbers_in(Path::new("/sys/dev/block"), &devno_text(rdev))
}

/// The devices of every mounted btrfs filesystem that has one of `numbers` as a member: btrfs
/// shows one anonymous st_dev and a single source for all its devices, so a second member would
/// otherwise look unused.
fn btrfs_siblings_in(sys_fs_btrfs: &Path, numbers: &HashSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(filesystems) = std::fs::read_dir(sys_fs_btrfs) else {
        return out;
    };
    for fs_dir in filesystems.flatten() {
        let Ok(members) = std::fs::read_dir(fs_dir.path().join("devices")) else {
            continue;
        };
        let devs: Vec<String> = members
            .flatten()
            .filter_map(|m| std::fs::read_to_string(m.path().join("dev")).ok())
            .map(|d| d.trim().to_string())
            .collect();
        if devs.iter().any(|d| numbers.contains(d)) {
            out.extend(devs);
        }
    }
    out
}

/// `own` and the "maj:min" of the partitions listed under `sys_root/own` (sysfs layout).
fn device_numbers_in(sys_root: &Path, own: &str) -> Vec<String> {
    let mut out = vec![own.to_string()];
    let sys_dir = sys_root.join(own);
    // Partitions are subdirectories named after the disk (sda/sda1, nvme0n1/nvme0n1p1).
    let Some(name) = std::fs::canonicalize(&sys_dir)
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    else {
        return out;
    };
    if let Ok(entries) = std::fs::read_dir(&sys_dir) {
        for entry in entries.flatten() {
            if !entry.file_name().to_string_lossy().starts_with(&name) {
                continue;
            }
            if let Ok(dev) = std::fs::read_to_string(entry.path().join("dev")) {
                out.push(dev.trim().to_string());
            }
        }
    }
    out
}

fn stat_block_device(device: &Path) -> Result<u64> {
    let meta = std::fs::metadata(device).map_err(|e| DriverError::io("stat device", device, e))?;
    if !meta.file_type().is_block_device() {
        return Err(DriverError::Device {
            device: device.to_path_buf(),
            reason: "is not a block device".to_string(),
        });
    }
    Ok(meta.rdev())
}

/// Mount points of the block device `device` or of any of its partitions.
pub fn mounted_at(device: &Path) -> Result<Vec<PathBuf>> {
    let rdev = stat_block_device(device)?;
    let mut numbers: HashSet<String> = device_numbers(rdev).into_iter().collect();
    let siblings = btrfs_siblings_in(Path::new("/sys/fs/btrfs"), &numbers);
    numbers.extend(siblings);
    // Filesystems with an anonymous st_dev (btrfs) are found by their source device instead;
    // only /dev paths are stat'ed, so a dead network mount cannot hang us.
    let source_devno = |source: &str| {
        source
            .starts_with("/dev/")
            .then(|| std::fs::metadata(source).ok())
            .flatten()
            .filter(|m| m.file_type().is_block_device())
            .map(|m| devno_text(m.rdev()))
    };
    Ok(mount_table()?
        .into_iter()
        .filter(|m| {
            numbers.contains(&m.devno)
                || source_devno(&m.source).is_some_and(|d| numbers.contains(&d))
        })
        .map(|m| m.mount_point)
        .fold(Vec::new(), |mut acc, mp| {
            // Stacked mounts list the same point twice.
            if !acc.contains(&mp) {
                acc.push(mp);
            }
            acc
        }))
}

/// Ok if `device` is a block device that is not mounted and carries no known signature.
/// Mounted devices are refused even with `force`; `force` only skips the signature check.
pub fn check_device_free(device: &Path, force: bool) -> Result<()> {
    let refuse = |reason: String| DriverError::Device {
        device: device.to_path_buf(),
        reason,
    };
    let mounts = mounted_at(device)?;
    if !mounts.is_empty() {
        let list: Vec<String> = mounts.iter().map(|m| m.display().to_string()).collect();
        return Err(refuse(format!("is mounted at {}", list.join(", "))));
    }
    if force {
        return Ok(());
    }
    let head = read_head(device)?;
    let found = probe_bytes(&head);
    if found.is_empty() {
        return Ok(());
    }
    let uuid = fs_uuid_bytes(&head);
    let parts: Vec<String> = found
        .iter()
        .map(|sig| match &uuid {
            Some((s, u)) if s == sig => format!("{} (UUID {u})", sig.describe()),
            _ => sig.describe(),
        })
        .collect();
    Err(refuse(format!(
        "has {}; pass --force to overwrite",
        parts.join(" and ")
    )))
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

    #[test]
    fn mountinfo_parsing() {
        let text = "22 1 253:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
                    40 22 7:1 / /mnt/my\\040disk rw - xfs /dev/loop1 rw\n\
                    43 22 0:39 / /data rw,relatime shared:5 master:2 - btrfs /dev/loop2 rw\n";
        let entry = |mp: &str, devno: &str, source: &str| MountEntry {
            mount_point: PathBuf::from(mp),
            devno: devno.to_string(),
            source: source.to_string(),
        };
        assert_eq!(
            parse_mountinfo(text),
            vec![
                entry("/", "253:0", "/dev/vda"),
                entry("/mnt/my disk", "7:1", "/dev/loop1"),
                entry("/data", "0:39", "/dev/loop2"),
            ]
        );
        assert_eq!(unescape_mount_path("a\\134b\\011"), PathBuf::from("a\\b\t"));
        assert_eq!(
            unescape_mount_path("trailing\\04"),
            PathBuf::from("trailing\\04")
        );
    }

    #[test]
    fn partitions_from_sysfs_layout() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("devices/virtual/block/loop3");
        for (sub, dev) in [
            ("loop3p1", "259:4\n"),
            ("loop3p2", "259:5\n"),
            ("queue", ""),
        ] {
            std::fs::create_dir_all(disk.join(sub)).unwrap();
            if !dev.is_empty() {
                std::fs::write(disk.join(sub).join("dev"), dev).unwrap();
            }
        }
        std::fs::write(disk.join("dev"), "7:3\n").unwrap();
        let root = dir.path().join("dev-block");
        std::fs::create_dir(&root).unwrap();
        std::os::unix::fs::symlink(&disk, root.join("7:3")).unwrap();
        let mut got = device_numbers_in(&root, "7:3");
        got.sort();
        assert_eq!(got, vec!["259:4", "259:5", "7:3"]);
        assert_eq!(device_numbers_in(&root, "8:0"), vec!["8:0"]);
    }

    #[test]
    fn btrfs_members_from_sysfs_layout() {
        let dir = tempfile::tempdir().unwrap();
        for (fsid, member, dev) in [
            ("aaaa", "loop1", "7:1"),
            ("aaaa", "loop2", "7:2"),
            ("bbbb", "loop3", "7:3"),
        ] {
            let m = dir.path().join(fsid).join("devices").join(member);
            std::fs::create_dir_all(&m).unwrap();
            std::fs::write(m.join("dev"), format!("{dev}\n")).unwrap();
        }
        let numbers: HashSet<String> = ["7:2".to_string()].into();
        let mut got = btrfs_siblings_in(dir.path(), &numbers);
        got.sort();
        assert_eq!(got, vec!["7:1", "7:2"]);
        let none: HashSet<String> = ["8:0".to_string()].into();
        assert!(btrfs_siblings_in(dir.path(), &none).is_empty());
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

    #[test]
    fn regular_file_is_not_a_device() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("img");
        File::create(&img).unwrap().set_len(1 << 20).unwrap();
        for force in [false, true] {
            match check_device_free(&img, force) {
                Err(DriverError::Device { device, reason }) => {
                    assert_eq!(device, img);
                    assert!(reason.contains("not a block device"), "{reason}");
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// The device holding / (when / is a plain block device, as on a VM) is reported mounted,
    /// and refused even with force.
    #[test]
    fn root_device_is_mounted() {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        // Fields: id parent maj:min root mount-point options [optional...] - fstype source ...
        let source = text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            if f.get(4) != Some(&"/") {
                return None;
            }
            let sep = f.iter().position(|x| *x == "-")?;
            f.get(sep + 2).map(|s| s.to_string())
        });
        let Some(source) = source else { return };
        let dev = Path::new(&source);
        let is_blk = std::fs::metadata(dev).is_ok_and(|m| m.file_type().is_block_device());
        if !is_blk {
            eprintln!("skipping: / is on {source}, not a block device");
            return;
        }
        let mounts = mounted_at(dev).unwrap();
        assert!(mounts.contains(&PathBuf::from("/")), "{mounts:?}");
        match check_device_free(dev, true) {
            Err(DriverError::Device { reason, .. }) => {
                assert!(reason.contains("is mounted at"), "{reason}")
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
