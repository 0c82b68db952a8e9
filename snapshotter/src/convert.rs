//! Between the pool's snapshot model and containerd's wire types: infos, mounts, timestamps,
//! update masks, and pool errors as the gRPC codes containerd's errdefs expects.

use crate::api::snapshots::v1 as pb;
use crate::api::types::Mount;
use blkdrv_pool::snapshot::{
    LabelUpdate, Labels, SnapshotInfo, SnapshotKind, SnapshotUsage, Timestamp,
};
use blkdrv_pool::{MountSpec, PoolError};
use std::collections::HashMap;
use tonic::{Code, Status};

pub fn timestamp(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.seconds(),
        nanos: t.subsec_nanos(),
    }
}

pub fn kind(k: SnapshotKind) -> pb::Kind {
    match k {
        SnapshotKind::View => pb::Kind::View,
        SnapshotKind::Active => pb::Kind::Active,
        SnapshotKind::Committed => pb::Kind::Committed,
    }
}

pub fn info(i: SnapshotInfo) -> pb::Info {
    pb::Info {
        name: i.key,
        parent: i.parent.unwrap_or_default(),
        kind: kind(i.kind) as i32,
        created_at: Some(timestamp(i.created)),
        updated_at: Some(timestamp(i.updated)),
        labels: i.labels.into_iter().collect(),
    }
}

pub fn mounts(specs: Vec<MountSpec>) -> Vec<Mount> {
    specs
        .into_iter()
        .map(|m| Mount {
            r#type: m.fstype,
            source: m.source,
            // containerd fills in the target itself.
            target: String::new(),
            options: m.options,
        })
        .collect()
}

pub fn labels(l: HashMap<String, String>) -> Labels {
    l.into_iter().collect()
}

/// The wire's i64 fields; a usage never goes negative (the CRI divides by it).
pub fn usage(u: SnapshotUsage) -> pb::UsageResponse {
    pb::UsageResponse {
        size: i64::try_from(u.bytes).unwrap_or(i64::MAX),
        inodes: i64::try_from(u.inodes).unwrap_or(i64::MAX),
    }
}

/// containerd's Update mask: no paths, or `labels`, replace the labels; `labels.KEY` sets or
/// deletes one key; anything else (name, kind, parent, times) cannot be changed.
pub fn label_update(paths: &[String]) -> Result<LabelUpdate, Status> {
    let mut keys = Vec::new();
    for p in paths {
        if p == "labels" {
            return Ok(LabelUpdate::ReplaceAll);
        }
        match p.strip_prefix("labels.") {
            Some(k) if !k.is_empty() => keys.push(k.to_string()),
            _ => {
                return Err(Status::invalid_argument(format!(
                    "cannot update {p:?} of a snapshot: only labels and labels.KEY can be updated"
                )))
            }
        }
    }
    Ok(if keys.is_empty() {
        LabelUpdate::ReplaceAll
    } else {
        LabelUpdate::Keys(keys)
    })
}

/// The gRPC code containerd's errdefs maps back to its own errors (the unpacker, the metadata
/// layer and the GC branch on them), with the whole error chain as the message.
pub fn status(e: &PoolError) -> Status {
    let code = match e {
        PoolError::SnapshotNotFound(_) | PoolError::PoolNotFound { .. } => Code::NotFound,
        PoolError::SnapshotExists(_) => Code::AlreadyExists,
        // The GC tolerates only FailedPrecondition from Remove, and looks for "remove".
        PoolError::SnapshotHasChildren { .. } | PoolError::Refused { .. } => {
            Code::FailedPrecondition
        }
        PoolError::Invalid(_) => Code::InvalidArgument,
        // Another process holds the pool, or this server is stopping and undid the operation:
        // both are worth a retry later, which is what Unavailable tells a client.
        PoolError::Busy { .. } | PoolError::Interrupted { .. } => Code::Unavailable,
        _ => Code::Internal,
    };
    Status::new(code, chain(e))
}

/// An error and its sources, `: `-joined (thiserror messages usually embed their source
/// already; a source whose text is already there is not repeated).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        src = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_keep_nanoseconds() {
        let t = timestamp(Timestamp(1_700_000_000_123_456_789));
        assert_eq!((t.seconds, t.nanos), (1_700_000_000, 123_456_789));
        // Before the epoch the nanoseconds stay positive, as protobuf requires.
        let t = timestamp(Timestamp(-1));
        assert_eq!((t.seconds, t.nanos), (-1, 999_999_999));
    }

    #[test]
    fn update_masks() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(label_update(&[]).unwrap(), LabelUpdate::ReplaceAll);
        assert_eq!(
            label_update(&s(&["labels"])).unwrap(),
            LabelUpdate::ReplaceAll
        );
        assert_eq!(
            label_update(&s(&["labels.containerd.io/snapshot/x", "labels.b"])).unwrap(),
            LabelUpdate::Keys(vec!["containerd.io/snapshot/x".into(), "b".into()])
        );
        assert_eq!(
            label_update(&s(&["labels.a", "labels"])).unwrap(),
            LabelUpdate::ReplaceAll
        );
        for bad in ["name", "parent", "kind", "labels.", "labelsx", "created_at"] {
            let e = label_update(&s(&["labels.a", bad])).unwrap_err();
            assert_eq!(e.code(), Code::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn error_codes() {
        let c = |e: PoolError| status(&e).code();
        assert_eq!(c(PoolError::SnapshotNotFound("k".into())), Code::NotFound);
        assert_eq!(
            c(PoolError::SnapshotExists("k".into())),
            Code::AlreadyExists
        );
        let s = status(&PoolError::SnapshotHasChildren {
            key: "k".into(),
            children: 2,
        });
        assert_eq!(s.code(), Code::FailedPrecondition);
        assert!(s.message().contains("remove"), "{}", s.message());
        assert_eq!(c(PoolError::Invalid("x".into())), Code::InvalidArgument);
        assert_eq!(
            c(PoolError::Interrupted { signal: "SIGTERM" }),
            Code::Unavailable
        );
        let io = PoolError::io("read", "/x", std::io::Error::other("disk on fire"));
        let s = status(&io);
        assert_eq!(s.code(), Code::Internal);
        assert!(s.message().contains("disk on fire"), "{}", s.message());
    }

    #[test]
    fn usage_is_never_negative() {
        let u = usage(SnapshotUsage {
            bytes: u64::MAX,
            inodes: 3,
        });
        assert_eq!((u.size, u.inodes), (i64::MAX, 3));
    }
}
