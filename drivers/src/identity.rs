//! The recorded identity of a formatted pool: what a driver finds on its devices at `pool init`
//! (filesystem UUID, thin-pool prefix, zpool GUID) and checks on every open, so a swapped device
//! is refused.
//!
//! Each driver describes its record as a typed struct (`Recorded` in its module); the pool
//! stores the record without knowing what it means. The stored form is a flat map of text
//! values, the form pool configs have always had, so pools made before records were typed open
//! unchanged: [`text`] and [`yes_no`] keep numbers and flags as the strings they were.

use crate::error::{DriverError, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// A driver's record as the pool stores it: opaque to the pool, typed inside the driver
/// ([`Identity::record`], [`Identity::read`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Identity(BTreeMap<String, String>);

impl Identity {
    /// Encodes a driver's record. Every field must serialize as text (use [`text`] for numbers
    /// and names, [`yes_no`] for flags); `None` fields are left out with
    /// `skip_serializing_if`.
    pub fn record<T: Serialize>(driver: &'static str, record: &T) -> Result<Identity> {
        let bug = |reason: String| DriverError::Record { driver, reason };
        let serde_json::Value::Object(fields) =
            serde_json::to_value(record).map_err(|e| bug(e.to_string()))?
        else {
            return Err(bug("a record must be a struct".into()));
        };
        fields
            .into_iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => Ok((k, s)),
                other => Err(bug(format!("field {k} is not text: {other}"))),
            })
            .collect::<Result<_>>()
            .map(Identity)
    }

    /// Decodes the record a driver made with [`Identity::record`]. A missing or unreadable
    /// field is an identity mismatch on `device`: the record is not one this pool wrote.
    pub fn read<T: DeserializeOwned>(&self, device: &Path) -> Result<T> {
        let value = serde_json::Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
        );
        serde_json::from_value(value).map_err(|e| DriverError::IdentityMismatch {
            device: device.to_path_buf(),
            field: "pool record".into(),
            recorded: e.to_string(),
            found: "a record this driver cannot read".into(),
        })
    }

    /// One recorded field as stored, for error messages naming what was recorded.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

/// Serde adapter for a field stored as its `Display` text and read back with `FromStr`
/// (numbers, names with their own validation).
pub mod text {
    use serde::{de, Deserialize, Deserializer, Serializer};
    use std::fmt::Display;
    use std::str::FromStr;

    pub fn serialize<T: Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e| de::Error::custom(format!("{s:?}: {e}")))
    }
}

/// Serde adapter for a size stored as its number of bytes (not [`crate::Bytes`]'s display form,
/// which rounds).
pub mod bytes {
    use crate::Bytes;
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&v.0)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map(Bytes)
            .map_err(|e| de::Error::custom(format!("{s:?}: {e}")))
    }
}

/// Serde adapter for a flag stored as "yes" or "no".
pub mod yes_no {
    use serde::{de, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &bool, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if *v { "yes" } else { "no" })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        match String::deserialize(d)?.as_str() {
            "yes" => Ok(true),
            "no" => Ok(false),
            other => Err(de::Error::custom(format!("{other:?}: expected yes or no"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Rec {
        name: String,
        #[serde(with = "text")]
        guid: u64,
        #[serde(with = "yes_no")]
        made: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        extra: Option<String>,
    }

    #[test]
    fn records_are_flat_text_maps() {
        let r = Rec {
            name: "p".into(),
            guid: 42,
            made: true,
            extra: None,
        };
        let id = Identity::record("test", &r).unwrap();
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            r#"{"guid":"42","made":"yes","name":"p"}"#
        );
        assert_eq!(id.read::<Rec>(Path::new("/dev/x")).unwrap(), r);
    }

    #[test]
    fn a_stored_map_reads_as_a_record() {
        // What configs written before typed records hold.
        let id: Identity =
            serde_json::from_str(r#"{"name":"p","guid":"7","made":"no","extra":"e"}"#).unwrap();
        let r: Rec = id.read(Path::new("/dev/x")).unwrap();
        assert_eq!((r.guid, r.made, r.extra.as_deref()), (7, false, Some("e")));
    }

    #[test]
    fn missing_or_unreadable_fields_are_mismatches() {
        let id: Identity = serde_json::from_str(r#"{"name":"p","made":"yes"}"#).unwrap();
        let e = id.read::<Rec>(Path::new("/dev/x")).unwrap_err().to_string();
        assert!(
            e.contains("missing field `guid`") && e.contains("/dev/x"),
            "{e}"
        );
        let id: Identity = serde_json::from_str(r#"{"name":"p","guid":"x","made":"yes"}"#).unwrap();
        let e = id.read::<Rec>(Path::new("/dev/x")).unwrap_err().to_string();
        assert!(e.contains("\"x\""), "{e}");
    }

    #[test]
    fn non_text_fields_are_refused() {
        #[derive(Serialize)]
        struct Bad {
            n: u64,
        }
        let e = Identity::record("test", &Bad { n: 1 }).unwrap_err();
        assert!(e.to_string().contains("field n is not text"), "{e}");
    }
}
