//! Reading what the tools print (`-H` scripted output: properties, lists) and what their
//! failures say.

use crate::error::{DriverError, Result};
use crate::Bytes;
use std::collections::BTreeMap;

/// Property values of one pool or dataset, from `get -Hp -o property,value`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props {
    object: String,
    values: BTreeMap<String, String>,
}

impl Props {
    /// Parses `-o property,value` output about one object.
    pub fn parse(object: &str, text: &str) -> Result<Props> {
        let mut values = BTreeMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (k, v) = line.split_once('\t').ok_or_else(|| DriverError::Kernel {
                op: "parse ZFS properties of",
                target: object.to_string(),
                message: format!("expected `property<TAB>value`, got {line:?}"),
            })?;
            values.insert(k.to_string(), v.to_string());
        }
        Ok(Props {
            object: object.to_string(),
            values,
        })
    }

    /// Parses `-o name,property,value` output about many objects, by name.
    pub fn parse_many(whole: &str, text: &str) -> Result<BTreeMap<String, Props>> {
        let mut by_name: BTreeMap<String, String> = BTreeMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (name, rest) = line.split_once('\t').ok_or_else(|| DriverError::Kernel {
                op: "parse ZFS properties of",
                target: whole.to_string(),
                message: format!("expected `name<TAB>property<TAB>value`, got {line:?}"),
            })?;
            let text = by_name.entry(name.to_string()).or_default();
            text.push_str(rest);
            text.push('\n');
        }
        by_name
            .into_iter()
            .map(|(name, text)| Props::parse(&name, &text).map(|p| (name, p)))
            .collect()
    }

    /// The value, or None when the property is missing or unset ("-").
    pub fn get(&self, prop: &str) -> Option<&str> {
        self.values
            .get(prop)
            .map(String::as_str)
            .filter(|v| *v != "-")
    }

    fn bad(&self, prop: &str, message: String) -> DriverError {
        DriverError::Kernel {
            op: "read ZFS property",
            target: format!("{prop} of {}", self.object),
            message,
        }
    }

    pub fn text(&self, prop: &str) -> Result<&str> {
        self.get(prop)
            .ok_or_else(|| self.bad(prop, "missing from the tool's output".into()))
    }

    pub fn num(&self, prop: &str) -> Result<u64> {
        let v = self.text(prop)?;
        v.parse()
            .map_err(|_| self.bad(prop, format!("{v:?} is not a whole number")))
    }

    pub fn bytes(&self, prop: &str) -> Result<Bytes> {
        self.num(prop).map(Bytes)
    }
}

/// What a failed `zfs`/`zpool` command said, for the cases callers act on. The tools have no
/// error codes beyond exit status 1, so this reads libzfs's messages (stable across releases).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// "dataset does not exist", "no such pool", "no such pool available".
    Missing,
    /// "dataset already exists", "pool already exists".
    Exists,
    /// EBUSY: "dataset is busy", "pool or dataset is busy", "pool is busy".
    Busy,
    /// `zfs destroy` of a filesystem whose snapshot has clones.
    DependentClones,
    /// A quota below what the dataset already uses.
    BelowUsage,
    /// "out of space": the pool (or a quota) has no room for the operation.
    NoSpace,
    Other,
}

pub fn classify(stderr: &str) -> Failure {
    if stderr.contains("dependent clones") {
        Failure::DependentClones
    } else if stderr.contains("does not exist")
        || stderr.contains("no such pool")
        // `zfs destroy POOL/DS@SNAP` of a snapshot that is not there.
        || stderr.contains("could not find any snapshots")
    {
        Failure::Missing
    } else if stderr.contains("already exists") {
        Failure::Exists
    } else if stderr.contains("busy") {
        Failure::Busy
    } else if stderr.contains("less than current used") {
        Failure::BelowUsage
    } else if stderr.contains("out of space") {
        Failure::NoSpace
    } else {
        Failure::Other
    }
}

pub fn failure(e: &DriverError) -> Failure {
    match e {
        DriverError::Command { stderr, .. } => classify(stderr),
        _ => Failure::Other,
    }
}

/// The datasets a refused `zfs destroy` lists after "use '-R' to destroy the following
/// datasets:" (exec folds lines with "; ", which no dataset name can contain).
pub fn dependents(e: &DriverError) -> Vec<String> {
    let DriverError::Command { stderr, .. } = e else {
        return Vec::new();
    };
    stderr
        .split("; ")
        .skip_while(|l| !l.contains("following datasets"))
        .skip(1)
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// One line of `zfs list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: String,
    pub origin: Option<String>,
}

/// Parses `zfs list -H -o name,type,origin` output. Lines that do not have the three fields are
/// skipped (and logged): one odd entry must not hide the others.
pub fn parse_list(text: &str) -> Vec<Entry> {
    text.lines()
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            match f.as_slice() {
                [name, kind, origin] => Some(Entry {
                    name: name.to_string(),
                    kind: kind.to_string(),
                    origin: Some(origin.to_string()).filter(|o| o != "-"),
                }),
                _ => {
                    tracing::warn!(line = l, "skipping an unreadable `zfs list` line");
                    None
                }
            }
        })
        .collect()
}

/// Parses `zfs list -Hp -o name,createtxg,clones -t snapshot`; `-` (or nothing) is no clones.
/// Lines that do not parse are skipped and logged.
pub fn parse_snapshots(text: &str) -> Vec<super::SnapshotInfo> {
    text.lines()
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let parsed = match f.as_slice() {
                [name, txg, clones] => super::Snapshot::parse(name).ok().zip(txg.parse().ok()).map(
                    |(snapshot, txg)| super::SnapshotInfo {
                        snapshot,
                        txg,
                        clones: clones
                            .split(',')
                            .filter(|c| !c.is_empty() && *c != "-")
                            .filter_map(|c| super::Dataset::new(c).ok())
                            .collect(),
                    },
                ),
                _ => None,
            };
            if parsed.is_none() {
                tracing::warn!(line = l, "skipping an unreadable `zfs list` snapshot line");
            }
            parsed
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_lists_give_order_and_clones() {
        let s = parse_snapshots(
            "t/p/7@clone-9\t120\tt/p/9\nt/p/7@committed\t130\t-\n\
             t/p/8@clone-10\t140\tt/p/10,t/p/11\nbroken line\n",
        );
        assert_eq!(s.len(), 3);
        assert_eq!(s[0].snapshot.as_str(), "t/p/7@clone-9");
        assert_eq!(s[0].txg, 120);
        assert_eq!(s[0].clones, [super::super::Dataset::new("t/p/9").unwrap()]);
        assert!(s[1].clones.is_empty());
        let names: Vec<&str> = s[2].clones.iter().map(|d| d.as_str()).collect();
        assert_eq!(names, ["t/p/10", "t/p/11"]);
    }

    #[test]
    fn get_output_is_parsed_into_numbers() {
        // `zfs get -Hp -o property,value used,referenced,written,usedbysnapshots,refquota`
        let text = "used\t5373952\nreferenced\t110100480\nwritten\t5373952\nusedbysnapshots\t0\nrefquota\t0\n";
        let p = Props::parse("tank/7", text).unwrap();
        assert_eq!(p.bytes("used").unwrap(), Bytes(5_373_952));
        assert_eq!(p.num("referenced").unwrap(), 110_100_480);
        assert_eq!(p.num("usedbysnapshots").unwrap(), 0);
        let e = p.num("guid").unwrap_err().to_string();
        assert!(e.contains("guid of tank/7"), "{e}");
        // `zpool get -Hp`: fragmentation is "-" where it is not known.
        let z = Props::parse(
            "tank",
            "size\t1073741824\ncapacity\t3\nfragmentation\t-\nhealth\tONLINE\n",
        )
        .unwrap();
        assert_eq!(z.get("fragmentation"), None);
        assert_eq!(z.text("health").unwrap(), "ONLINE");
        assert_eq!(z.num("capacity").unwrap(), 3);
        let bad = Props::parse("tank", "size\tlots\n").unwrap();
        assert!(bad.num("size").is_err());
        assert!(Props::parse("tank", "no tab here\n").is_err());
    }

    #[test]
    fn recursive_get_output_is_grouped_by_name() {
        // `zfs get -Hp -r -d 1 -o name,property,value used,referenced tank/p`
        let text = "tank/p\tused\t900\ntank/p\treferenced\t100\n\
                    tank/p/1\tused\t500\ntank/p/1\treferenced\t400\n\
                    tank/p/2\tused\t7\ntank/p/2\treferenced\t407\n";
        let m = Props::parse_many("tank/p", text).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m["tank/p/1"].num("used").unwrap(), 500);
        assert_eq!(m["tank/p/2"].num("referenced").unwrap(), 407);
        let e = m["tank/p"].num("guid").unwrap_err().to_string();
        assert!(e.contains("guid of tank/p"), "{e}");
        assert!(Props::parse_many("tank/p", "tank/p\tused\n").is_err());
        assert!(Props::parse_many("tank/p", "nothing\n").is_err());
    }

    #[test]
    fn list_output_skips_unreadable_lines() {
        let text = "tank/l\tfilesystem\t-\ntank/l/1\tfilesystem\t-\ngarbage\ntank/l/2\tfilesystem\ttank/l/1@committed\n";
        let e = parse_list(text);
        assert_eq!(e.len(), 3);
        assert_eq!(e[1].origin, None);
        assert_eq!(e[2].origin.as_deref(), Some("tank/l/1@committed"));
    }

    fn command_error(stderr: &str) -> DriverError {
        DriverError::Command {
            command: "zfs destroy -r tank/l/1".into(),
            status: "exit status: 1".into(),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn tool_messages_are_classified() {
        for (msg, want) in [
            (
                "cannot open 'tank/l/9': dataset does not exist",
                Failure::Missing,
            ),
            ("cannot open 'nosuch': no such pool", Failure::Missing),
            (
                "could not find any snapshots to destroy; check snapshot names.",
                Failure::Missing,
            ),
            (
                "cannot destroy 'tank/7@clone-9': snapshot has dependent clones; use '-R' to \
                 destroy the following datasets:; tank/9",
                Failure::DependentClones,
            ),
            (
                "cannot import '123': no such pool available",
                Failure::Missing,
            ),
            (
                "cannot create 'tank/l/3': dataset already exists",
                Failure::Exists,
            ),
            ("cannot destroy 'tank/l/3': dataset is busy", Failure::Busy),
            (
                "cannot export 'tank': pool is busy",
                Failure::Busy,
            ),
            (
                "cannot set property for 'tank/l/3': size is less than current used or reserved space",
                Failure::BelowUsage,
            ),
            (
                "cannot create 'blkdrv-t-a2cf63b2/3': out of space",
                Failure::NoSpace,
            ),
            ("cannot open 'tank': permission denied", Failure::Other),
        ] {
            assert_eq!(classify(msg), want, "{msg}");
        }
        assert_eq!(
            failure(&DriverError::MissingTool {
                program: "zfs".into(),
                purpose: "x"
            }),
            Failure::Other
        );
    }

    #[test]
    fn dependents_are_read_from_a_refused_destroy() {
        let e = command_error(
            "cannot destroy 'tank/l/1': filesystem has dependent clones; use '-R' to destroy the following datasets:; tank/l/2; tank/l/bench-raw",
        );
        assert_eq!(failure(&e), Failure::DependentClones);
        assert_eq!(dependents(&e), ["tank/l/2", "tank/l/bench-raw"]);
        assert!(dependents(&command_error("dataset is busy")).is_empty());
    }
}
