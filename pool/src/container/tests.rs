//! The parsers' and the names' tests.

use super::*;

#[test]
fn names_follow_dockers_rule() {
    for ok in ["db", "my-vol_1.0", "A1"] {
        assert!(VolumeName::new(ok).is_ok(), "{ok}");
        assert!(ContainerName::new(ok).is_ok(), "{ok}");
    }
    for bad in ["", "a", "a/b", "-x", ".x", "_x", "a b", "a:b", "é1"] {
        assert!(VolumeName::new(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn container_paths_stay_inside_the_root() {
    assert_eq!(ContainerPath::new("/data//x/").unwrap().as_str(), "/data/x");
    for bad in [
        "",
        "data",
        "../../etc",
        "/",
        "//",
        "/a/../b",
        "/a/./b",
        "/a\nb",
    ] {
        assert!(ContainerPath::new(bad).is_err(), "{bad:?} accepted");
    }
    let (a, ab, ax) = (
        ContainerPath::new("/a").unwrap(),
        ContainerPath::new("/ab").unwrap(),
        ContainerPath::new("/a/x").unwrap(),
    );
    assert!(ax.is_below(&a) && !ab.is_below(&a) && !a.is_below(&a));
}

fn vol(name: Option<&str>, anonymous: bool, nocopy: bool) -> MountSource {
    MountSource::Volume {
        name: name.map(|n| VolumeName::new(n).unwrap()),
        anonymous,
        nocopy,
    }
}

fn entry(source: MountSource, target: &str, readonly: bool) -> MountEntry {
    MountEntry {
        source,
        target: ContainerPath::new(target).unwrap(),
        readonly,
    }
}

fn v(spec: &str) -> MountEntry {
    MountEntry::from_volume_flag(spec).unwrap_or_else(|e| panic!("-v {spec:?}: {e}"))
}

fn m(spec: &str) -> MountEntry {
    MountEntry::from_mount_flag(spec).unwrap_or_else(|e| panic!("--mount {spec:?}: {e}"))
}

/// The error for a bad spec: Invalid, one line, and containing each of `says`.
fn refused(r: Result<MountEntry>, spec: &str, says: &[&str]) {
    match r {
        Err(PoolError::Invalid(msg)) => {
            assert!(!msg.contains('\n'), "{spec:?}: two lines: {msg}");
            for s in says {
                assert!(msg.contains(s), "{spec:?}: {msg:?} does not say {s:?}");
            }
        }
        other => panic!("{spec:?}: not refused as Invalid: {other:?}"),
    }
}

#[test]
fn volume_flag_forms() {
    assert_eq!(
        v("db:/var/lib/db"),
        entry(vol(Some("db"), false, false), "/var/lib/db", false)
    );
    assert_eq!(
        v("db:/data:ro"),
        entry(vol(Some("db"), false, false), "/data", true)
    );
    assert_eq!(
        v("db:/data:rw"),
        entry(vol(Some("db"), false, false), "/data", false)
    );
    assert_eq!(
        v("db:/data:nocopy"),
        entry(vol(Some("db"), false, true), "/data", false)
    );
    assert_eq!(
        v("db:/data:ro,nocopy"),
        entry(vol(Some("db"), false, true), "/data", true)
    );
    assert_eq!(
        v("db:/data:nocopy,ro"),
        entry(vol(Some("db"), false, true), "/data", true)
    );
    assert_eq!(v("/data"), entry(vol(None, true, false), "/data", false));
    assert_eq!(
        v("/data//x/"),
        entry(vol(None, true, false), "/data/x", false)
    );
    let bind = |p: &str| MountSource::Bind {
        source: PathBuf::from(p),
    };
    assert_eq!(
        v("/srv/site:/usr/share/www"),
        entry(bind("/srv/site"), "/usr/share/www", false)
    );
    assert_eq!(
        v("/srv/site:/www:ro"),
        entry(bind("/srv/site"), "/www", true)
    );
    assert_eq!(
        v("/etc/hosts:/etc/hosts:ro"),
        entry(bind("/etc/hosts"), "/etc/hosts", true)
    );
}

#[test]
fn volume_flag_refuses_escaping_targets() {
    for spec in [
        "vol:../../etc",
        "vol:data",
        "vol:/a/../../etc",
        "../x",
        "vol:/",
        "vol:/a/./b",
    ] {
        refused(
            MountEntry::from_volume_flag(spec),
            spec,
            &["invalid container path"],
        );
    }
    refused(
        MountEntry::from_volume_flag("vol:../../etc"),
        "",
        &["\"vol:../../etc\"", "absolute"],
    );
}

#[test]
fn volume_flag_refuses_relative_sources_and_bad_names() {
    for spec in ["./x:/data", "x/y:/data", "../up:/data", ".hidden:/data"] {
        refused(
            MountEntry::from_volume_flag(spec),
            spec,
            &["invalid volume name", "absolute path"],
        );
    }
    refused(
        MountEntry::from_volume_flag("a:/data"),
        "a:/data",
        &["invalid volume name"],
    );
    refused(
        MountEntry::from_volume_flag("my vol:/data"),
        "",
        &["invalid volume name"],
    );
}

#[test]
fn volume_flag_refuses_bad_shapes_and_options() {
    for (spec, says) in [
        (":/data", "empty section"),
        ("vol::ro", "empty section"),
        ("vol:/data:", "empty section"),
        ("", "empty section"),
        ("a:/b:ro:x", "too many colons"),
        ("/data:ro", "anonymous volume"),
        ("/data:ro,nocopy", "anonymous volume"),
        ("vol:/data:ro,rw", "use one of ro, rw"),
        ("vol:/data:ro,ro", "use one of ro, rw"),
        ("vol:/data:nocopy,nocopy", "twice"),
        ("vol:/data:rx", "unknown option \"rx\""),
        ("vol:/data:ro,", "unknown option \"\""),
        ("vol:/data:z", "SELinux"),
        ("vol:/data:Z", "SELinux"),
        ("/h:/data:rshared", "propagation"),
        ("/h:/data:ro,private", "propagation"),
        ("vol:/data:cached", "consistency"),
        ("/host:/data:nocopy", "not to a bind"),
    ] {
        refused(MountEntry::from_volume_flag(spec), spec, &[says]);
    }
}

#[test]
fn errors_escape_control_characters() {
    let r = MountEntry::from_volume_flag("vol:/data:\x1b[31mro");
    refused(r, "esc", &["\\x1b[31m"]);
    let Err(PoolError::Invalid(msg)) = MountEntry::from_mount_flag("type=vol\nume,target=/x")
    else {
        panic!("accepted");
    };
    assert!(!msg.contains('\n') && msg.contains("vol\\nume"), "{msg}");
}

#[test]
fn mount_flag_forms() {
    assert_eq!(
        m("type=volume,source=db,target=/data"),
        entry(vol(Some("db"), false, false), "/data", false)
    );
    assert_eq!(
        m("type=volume,src=db,dst=/data,readonly"),
        entry(vol(Some("db"), false, false), "/data", true)
    );
    assert_eq!(
        m("type=volume,src=db,destination=/data,ro=true"),
        entry(vol(Some("db"), false, false), "/data", true)
    );
    assert_eq!(
        m("type=volume,src=db,target=/data,readonly=false"),
        entry(vol(Some("db"), false, false), "/data", false)
    );
    assert_eq!(
        m("type=volume,src=db,target=/data,readonly=0"),
        entry(vol(Some("db"), false, false), "/data", false)
    );
    assert_eq!(
        m("type=volume,src=db,target=/data,volume-nocopy"),
        entry(vol(Some("db"), false, true), "/data", false)
    );
    assert_eq!(
        m("type=volume,src=db,target=/data,volume-nocopy=true"),
        entry(vol(Some("db"), false, true), "/data", false)
    );
    assert_eq!(
        m("type=volume,src=db,target=/data,volume-nocopy=false"),
        entry(vol(Some("db"), false, false), "/data", false)
    );
    // Docker's default type is volume; no source is an anonymous one.
    assert_eq!(
        m("target=/data"),
        entry(vol(None, true, false), "/data", false)
    );
    assert_eq!(
        m("type=volume,target=/data"),
        entry(vol(None, true, false), "/data", false)
    );
    assert_eq!(
        m("type=volume,source=,target=/data"),
        entry(vol(None, true, false), "/data", false)
    );
    // Keys and the type are case-insensitive, as in Docker; values are not.
    assert_eq!(
        m("Type=VOLUME,Source=DB,Target=/Data"),
        entry(vol(Some("DB"), false, false), "/Data", false)
    );
    assert_eq!(
        m("type=bind,source=/srv/x,target=/x,readonly"),
        entry(
            MountSource::Bind {
                source: PathBuf::from("/srv/x")
            },
            "/x",
            true
        )
    );
    assert_eq!(
        m("type=tmpfs,target=/run/cache"),
        entry(
            MountSource::Tmpfs {
                size: None,
                mode: None
            },
            "/run/cache",
            false
        )
    );
    assert_eq!(
        m("type=tmpfs,target=/t,tmpfs-size=64m,tmpfs-mode=0700,readonly"),
        entry(
            MountSource::Tmpfs {
                size: Some(Bytes::mib(64)),
                mode: Some(0o700)
            },
            "/t",
            true
        )
    );
    assert_eq!(
        m("type=tmpfs,dst=/t,tmpfs-mode=1777,tmpfs-size=1048576"),
        entry(
            MountSource::Tmpfs {
                size: Some(Bytes::mib(1)),
                mode: Some(0o1777)
            },
            "/t",
            false
        )
    );
    // A quoted CSV field may hold a comma.
    assert_eq!(
        m("type=bind,\"source=/srv/a,b\",target=/x"),
        entry(
            MountSource::Bind {
                source: PathBuf::from("/srv/a,b")
            },
            "/x",
            false
        )
    );
}

#[test]
fn mount_flag_refusals() {
    for (spec, says) in [
        ("type=nfs,target=/x", "unknown mount type \"nfs\""),
        ("type=npipe,target=/x", "not supported"),
        ("type=image,source=x,target=/x", "not supported"),
        ("type=volume,source=db", "target is required"),
        ("type=volume,source=db,target=", "target is required"),
        (
            "type=volume,source=db,target=../../etc",
            "invalid container path",
        ),
        ("type=volume,source=db,target=data", "must be absolute"),
        (
            "type=bind,source=/h,target=/a/../../etc",
            "invalid container path",
        ),
        (
            "type=volume,source=db,target=/x,color=red",
            "unknown key \"color\"",
        ),
        (
            "type=volume,source=db,target=/x,target=/y",
            "key \"target\" given twice",
        ),
        ("type=volume,src=db,source=db,target=/y", "repeats \"src\""),
        ("type=volume,type=bind,target=/y", "given twice"),
        ("type=volume,source=db,target=/x,ro,readonly", "repeats"),
        (
            "type=volume,source=db,target=/x,readonly=yes",
            "not a boolean",
        ),
        (
            "type=volume,source=db,target=/x,volume-nocopy=2",
            "not a boolean",
        ),
        ("type,source=db,target=/x", "key=value pair"),
        ("type=volume,source,target=/x", "key=value pair"),
        ("type=tmpfs,source=foo,target=/x", "takes no source"),
        (
            "type=tmpfs,target=/x,volume-nocopy",
            "type=volume mounts, not of type=tmpfs",
        ),
        (
            "type=bind,source=/h,target=/x,tmpfs-size=1m",
            "type=tmpfs mounts, not of type=bind",
        ),
        (
            "type=volume,source=v,target=/x,tmpfs-mode=700",
            "type=tmpfs mounts, not of type=volume",
        ),
        (
            "type=volume,source=v,target=/x,bind-propagation=rshared",
            "type=bind mounts",
        ),
        (
            "type=bind,source=/h,target=/x,bind-propagation=rshared",
            "rprivate",
        ),
        (
            "type=bind,source=/h,target=/x,bind-nonrecursive",
            "recursive",
        ),
        (
            "type=volume,source=v,target=/x,volume-driver=local",
            "not supported",
        ),
        (
            "type=volume,source=v,target=/x,volume-subpath=a",
            "not supported",
        ),
        (
            "type=volume,source=v,target=/x,consistency=cached",
            "not supported",
        ),
        ("type=bind,target=/x", "needs a source"),
        ("type=bind,source=rel/dir,target=/x", "absolute"),
        ("type=bind,source=./x,target=/x", "absolute"),
        ("type=volume,source=/host,target=/x", "type=bind"),
        ("type=volume,source=a/b,target=/x", "invalid volume name"),
        ("type=tmpfs,target=/x,tmpfs-size=big", "invalid size"),
        ("type=tmpfs,target=/x,tmpfs-size=0", "more than 0"),
        ("type=tmpfs,target=/x,tmpfs-mode=999", "octal"),
        ("type=tmpfs,target=/x,tmpfs-mode=17777", "octal"),
        ("type=tmpfs,target=/x,tmpfs-mode=+7", "octal"),
        ("type=volume,,target=/x", "empty field"),
        ("type=volume,target=/x,", "empty field"),
        ("", "empty field"),
        ("type=bind,\"source=/a,target=/x", "never closed"),
        ("type=bind,\"source=/a\"x,target=/x", "closing quote"),
    ] {
        refused(MountEntry::from_mount_flag(spec), spec, &[says]);
    }
}

#[test]
fn duplicate_targets_are_refused() {
    let a = v("db:/data");
    let b = m("type=tmpfs,target=/data/");
    let c = v("/other");
    assert!(MountEntry::check_distinct_targets(&[a.clone(), c.clone()]).is_ok());
    let Err(PoolError::Invalid(msg)) = MountEntry::check_distinct_targets(&[a, c, b]) else {
        panic!("accepted");
    };
    assert!(msg.contains("\"/data\""), "{msg}");
}

#[test]
fn entries_round_trip_through_json() {
    for e in [
        v("db:/data:ro,nocopy"),
        v("/anon"),
        v("/h:/x"),
        m("type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=755"),
    ] {
        let j = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<MountEntry>(&j).unwrap(), e, "{j}");
    }
}
