//! The parser and the variable mapping, without a shell or a disk.

use super::*;
use std::collections::BTreeMap;

fn setup(text: &str) -> Result<Setup, SetupError> {
    Setup::from_text(Path::new("f"), text)
}

fn err(text: &str) -> String {
    setup(text).unwrap_err().to_string()
}

#[test]
fn assignments_are_read_like_a_shell_would() {
    let text = "# comment\n\n  export DEVS=\"/dev/vdb /dev/vdc\"  # two\nVG='my vg'\nA=x\\ y\nB=\"q\\\"\\$\"\nC=\nD=a#b\n";
    let a = parse_assignments(text).unwrap();
    let got: Vec<(&str, &str, usize)> = a
        .iter()
        .map(|a| (a.name.as_str(), a.value.as_str(), a.line))
        .collect();
    assert_eq!(
        got,
        [
            ("DEVS", "/dev/vdb /dev/vdc", 3),
            ("VG", "my vg", 4),
            ("A", "x y", 5),
            ("B", "q\"$", 6),
            ("C", "", 7),
            ("D", "a#b", 8),
        ]
    );
}

#[test]
fn shell_constructs_are_refused_with_their_line() {
    for (text, line, what) in [
        ("VG=vg\nDEVS=$(lsblk)\n", 2, "expansions"),
        ("DEVS=\"${DISK}\"\n", 1, "expansions"),
        ("DEVS=`ls`\n", 1, "expansions"),
        ("VG=vg\n\nVG=a rm -rf /\n", 3, "more than one word"),
        ("VG='open\n", 1, "unterminated"),
        ("VG=\"open\n", 1, "unterminated"),
        ("VG=a\\\n", 1, "continuation"),
        ("DEVS=(a b)\n", 1, "shell syntax"),
        ("VG=a;b\n", 1, "shell syntax"),
        ("echo hi\n", 1, "not a NAME=value"),
        ("if true; then\n", 1, "not a NAME=value"),
        ("1VG=a\n", 1, "not a NAME=value"),
        ("exportVG=a b\n", 1, "more than one word"),
    ] {
        let (l, r) = parse_assignments(text).unwrap_err();
        assert_eq!(l, line, "{text:?}: {r}");
        assert!(r.contains(what), "{text:?}: {r}");
    }
}

#[test]
fn a_typical_file_becomes_an_lvm_init_request() {
    let s = setup(
        "STORAGE_DRIVER=devicemapper\nDEVS=vdb\nVG=docker-vg\nDATA_SIZE=60%FREE\n\
         CHUNK_SIZE=256K\nPOOL_AUTOEXTEND_THRESHOLD=70\nWIPE_SIGNATURES=true\n",
    )
    .unwrap();
    assert_eq!(s.devices, [PathBuf::from("/dev/vdb")]);
    assert_eq!(s.pool.as_str(), "docker-pool");
    assert_eq!(s.min_data_size, Some(Bytes::gib(2)), "the default");
    let r = s.init_request();
    assert_eq!(r.driver.as_deref(), Some("devicemapper"));
    assert!(r.force);
    let o: BTreeMap<_, _> = r.options.iter().cloned().collect();
    assert_eq!(o["lvm"], "on");
    assert_eq!(o["vg"], "docker-vg");
    assert_eq!(o["pool_lv"], "docker-pool");
    assert_eq!(o["data_size"], "60%FREE");
    assert_eq!(o["block_size"], (256u64 << 10).to_string());
    assert_eq!(o["min_data_size"], (2u64 << 30).to_string());
    assert_eq!(o["autoextend_threshold"], "70");
    assert_eq!(o["autoextend_percent"], "20");
}

#[test]
fn defaults_sizes_and_switches() {
    let s = setup("VG=vg\nMIN_DATA_SIZE=\nDATA_SIZE=2048\nAUTO_EXTEND_POOL=no\n").unwrap();
    assert_eq!(s.data_size, DataSize::Exact(Bytes::gib(2)), "no unit: MiB");
    assert_eq!(s.min_data_size, None, "empty: no minimum");
    assert!(s.devices.is_empty(), "an existing VG's free space");
    assert_eq!(s.chunk_size, Bytes::kib(512));
    let o: BTreeMap<_, _> = s.init_request().options.into_iter().collect();
    assert_eq!(o["autoextend_threshold"], "100", "LVM's never");
    let s = setup("VG=vg\nDATA_SIZE=95%VG\nPOOL_META_SIZE=16M\nCHUNK_SIZE=64\n").unwrap();
    assert_eq!(s.data_size, DataSize::VgPct(95));
    assert_eq!(s.metadata_size, Some(Bytes::mib(16)));
    assert_eq!(s.chunk_size, Bytes::kib(64), "no unit: KiB, as lvconvert");
    assert_eq!(css_size("1GiB", Bytes(1)), Some(Bytes::gib(1)));
    assert_eq!(css_size("1gb", Bytes(1)), Some(Bytes::gib(1)));
    assert_eq!(css_size("4s", Bytes(1)), Some(Bytes(2048)));
    assert_eq!(css_size("10b", Bytes(1)), Some(Bytes(10)));
    assert_eq!(css_size("1.5G", Bytes(1)), None);
    assert_eq!(css_size("99999999999E", Bytes(1)), None, "overflow");
}

#[test]
fn the_vagrant_sample_is_read() {
    let text = include_str!("../../../vagrant/docker-storage-setup");
    let s = setup(text).unwrap();
    assert_eq!(s.devices, [PathBuf::from("/dev/vdb")]);
    assert_eq!((s.vg.as_str(), s.pool.as_str()), ("blkdrv", "docker-pool"));
    assert_eq!(s.data_size, DataSize::FreePct(60));
    assert!(s.wipe_signatures);
}

#[test]
fn bad_values_name_the_variable_and_line() {
    for (text, want) in [
        ("VG=vg\nDATA_SIZE=40%PVS\n", "f:2: DATA_SIZE=\"40%PVS\""),
        ("VG=vg\nDATA_SIZE=0%FREE\n", "DATA_SIZE"),
        ("VG=vg\nCHUNK_SIZE=96K\n", "CHUNK_SIZE"),
        (
            "VG=vg\nPOOL_AUTOEXTEND_PERCENT=0\n",
            "POOL_AUTOEXTEND_PERCENT",
        ),
        (
            "VG=vg\nPOOL_AUTOEXTEND_THRESHOLD=101\n",
            "POOL_AUTOEXTEND_THRESHOLD",
        ),
        ("VG=vg\nAUTO_EXTEND_POOL=maybe\n", "AUTO_EXTEND_POOL"),
        ("VG=vg\nWIPE_SIGNATURES=yes\n", "WIPE_SIGNATURES"),
        ("VG=vg\nDEVICE_WAIT_TIMEOUT=soon\n", "DEVICE_WAIT_TIMEOUT"),
        ("VG=a/b\n", "VG=\"a/b\""),
        ("VG=vg\nCONTAINER_THINPOOL=a/b\n", "CONTAINER_THINPOOL"),
        ("VG=vg\nDEVS=\"vdb vdb\"\n", "listed twice"),
        ("VG=vg\nDEVS=/tmp/disk\n", "under /dev"),
        ("VG=vg\nSTORAGE_DRIVER=zfs\n", "expected devicemapper"),
        ("DEVS=vdb\n", "VG is not set"),
    ] {
        let e = err(text);
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

#[test]
fn unknown_and_unsupported_variables_are_named() {
    let e = err("VG=vg\nDEVZ=/dev/vdb\nFOO=1\n");
    assert!(e.contains("DEVZ (line 2), FOO (line 3)"), "{e}");
    for (text, var) in [
        ("VG=vg\nGROWPART=true\n", "GROWPART"),
        ("VG=vg\nSTORAGE_DRIVER=overlay2\n", "STORAGE_DRIVER"),
        ("VG=vg\nSTORAGE_DRIVER=\n", "STORAGE_DRIVER"),
        ("VG=vg\nROOT_SIZE=8G\n", "ROOT_SIZE"),
        (
            "VG=vg\nCONTAINER_ROOT_LV_NAME=lv\n",
            "CONTAINER_ROOT_LV_NAME",
        ),
        (
            "VG=vg\nEXTRA_STORAGE_OPTIONS=\"--storage-opt dm.fs=ext4\"\n",
            "EXTRA_STORAGE_OPTIONS",
        ),
    ] {
        let e = err(text);
        assert!(
            e.contains(&format!("{var}=")) && e.contains("not supported"),
            "{e}"
        );
    }
    // Set to empty, they mean "not used": fine.
    setup("VG=vg\nEXTRA_STORAGE_OPTIONS=\nGROWPART=false\nCONTAINER_ROOT_LV_NAME=\"\"\n").unwrap();
}
