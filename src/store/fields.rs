//! Records as Redis hash fields and back.
//!
//! Each field of a record is one hash field: text fields as they are (so `HGET cb:instance:w1
//! status` reads `active`), everything else as JSON text (numbers read as numbers, `roles` as
//! a JSON array). Absent optional fields are left out. Reading is the reverse, driven by the
//! list of text fields, and a field that does not parse is reported by name.

use std::collections::HashMap;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The fields of `record` (a struct serializing to an object); `text` lists the fields kept
/// as plain text.
pub fn to_fields<T: Serialize>(record: &T, text: &[&str]) -> Vec<(String, String)> {
    let Ok(Value::Object(map)) = serde_json::to_value(record) else {
        return Vec::new();
    };
    map.into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) if text.contains(&k.as_str()) => s,
                other => other.to_string(),
            };
            (k, value)
        })
        .collect()
}

/// A record from hash fields; unknown fields are ignored (ClaudeBench's own fields may sit
/// beside ours).
pub fn from_fields<T: DeserializeOwned>(
    fields: HashMap<String, String>,
    text: &[&str],
) -> Result<T, String> {
    let mut map = Map::new();
    for (k, v) in fields {
        if EXTRAS.contains(&k.as_str()) {
            continue;
        }
        let value = if text.contains(&k.as_str()) {
            Value::String(v)
        } else {
            serde_json::from_str(&v).map_err(|e| format!("field {k}: {e}"))?
        };
        map.insert(k, value);
    }
    serde_json::from_value(Value::Object(map)).map_err(|e| e.to_string())
}

/// Fields written only for other readers (ClaudeBench's names), skipped when reading.
pub const EXTRAS: &[&str] = &["lastHeartbeat", "assignedTo", "text"];

/// Instance fields kept as text.
pub const INSTANCE_TEXT: &[&str] = &["id", "status", "owner"];
/// Task fields kept as text.
pub const TASK_TEXT: &[&str] = &[
    "id",
    "status",
    "claimToken",
    "error",
    "requestId",
    "requestOwner",
    "finishedBy",
    "role",
];
/// Lease fields kept as text.
pub const LEASE_TEXT: &[&str] = &["key"];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Epoch, InstanceId, InstanceStatus};
    use crate::store::InstanceRecord;

    #[test]
    fn instance_round_trip_with_text_and_json_fields() {
        let record = InstanceRecord {
            id: InstanceId::parse("123", &crate::config::Limits::default()).unwrap(),
            roles: vec!["worker".into()],
            status: InstanceStatus::Active,
            last_seen_ms: 1_700_000_000_000,
            epoch: Epoch(4),
            ttl_ms: 30_000,
            metadata: serde_json::json!({"zone": "a"}),
            registered_at_ms: 1_699_999_999_000,
            owner: Some("team-a".into()),
        };
        let fields = to_fields(&record, INSTANCE_TEXT);
        let get = |k: &str| fields.iter().find(|(f, _)| f == k).unwrap().1.clone();
        assert_eq!(get("id"), "123");
        assert_eq!(get("status"), "active");
        assert_eq!(get("lastSeen"), "1700000000000");
        assert_eq!(get("roles"), r#"["worker"]"#);
        assert_eq!(get("owner"), "team-a");
        let mut map: HashMap<String, String> = fields.into_iter().collect();
        map.insert("lastHeartbeat".into(), "2026-11-22T10:00:00Z".into());
        let back: InstanceRecord = from_fields(map.clone(), INSTANCE_TEXT).unwrap();
        assert_eq!(back, record);
        map.insert("epoch".into(), "four".into());
        let err = from_fields::<InstanceRecord>(map, INSTANCE_TEXT).unwrap_err();
        assert!(err.contains("epoch"), "{err}");
    }
}
