//! History and recovery (SPEC-v2 §2): streams, positions, the recovery
//! rule, the last-value rules, and the [`HistoryStore`] trait a storage
//! implements (`memory` is the single-node one); `redis` is the cluster
//! store (async, awaited only on the tokio side).
//!
//! A leaf: it knows nothing of connections, shards or the hub. It stores
//! each recorded event as the frame that was delivered (so a replayed or
//! cached copy is byte-identical to the first delivery) and decides, for a
//! position, whether it is recovered and what to replay. It never does
//! socket I/O and never holds a lock across a call into other code except
//! the frame builder it is handed at append time (pure encoding).

mod memory;
mod redis;

use std::sync::Arc;
use std::time::Duration;

use rand::distributions::Alphanumeric;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use memory::MemoryStore;
pub use redis::RedisStore;

/// An epoch: 8 random `[A-Za-z0-9]`, stored inline (no allocation per event).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch([u8; 8]);

impl Epoch {
    pub fn random() -> Epoch {
        let mut bytes = [0u8; 8];
        for (slot, byte) in bytes
            .iter_mut()
            .zip(rand::thread_rng().sample_iter(&Alphanumeric))
        {
            *slot = byte;
        }
        Epoch(bytes)
    }

    pub fn parse(text: &str) -> Option<Epoch> {
        let bytes: [u8; 8] = text.as_bytes().try_into().ok()?;
        bytes
            .iter()
            .all(u8::is_ascii_alphanumeric)
            .then_some(Epoch(bytes))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII alphanumerics ever get in (`random`, `parse`).
        std::str::from_utf8(&self.0).unwrap_or("")
    }
}

impl std::fmt::Debug for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Epoch {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A recorded event's place: the envelope's `stream` field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StreamPosition {
    #[serde(serialize_with = "serialize_str")]
    pub name: Arc<str>,
    pub epoch: Epoch,
    pub offset: u64,
}

fn serialize_str<S: serde::Serializer>(value: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value)
}

/// A position as a client gives it: `{"epoch", "offset"}`. The epoch is
/// kept as text: an epoch that cannot be ours is simply `EPOCH_CHANGED`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Position {
    pub epoch: String,
    pub offset: u64,
}

impl Position {
    /// `EPOCH:OFFSET` (the `since` of `GET /api/v1/streams/{name}`).
    pub fn parse_pair(text: &str) -> Option<Position> {
        let (epoch, offset) = text.rsplit_once(':')?;
        Some(Position {
            epoch: epoch.to_owned(),
            offset: offset.parse().ok()?,
        })
    }
}

/// A stream's metadata: its epoch, top offset and first retained offset
/// (`top + 1` when no event is retained).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub epoch: Epoch,
    pub top: u64,
    pub first: u64,
}

/// One retained event: its offset and the frame exactly as delivered.
#[derive(Debug, Clone)]
pub struct Stored {
    pub offset: u64,
    pub frame: Arc<[u8]>,
}

/// Why a position was not recovered (SPEC-v2 §2.4), in the order the rule
/// checks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRecovered {
    HistoryDisabled,
    Unavailable,
    EpochChanged,
    OffsetAhead,
    TooMany,
    TooOld,
}

impl NotRecovered {
    pub fn code(self) -> &'static str {
        match self {
            NotRecovered::HistoryDisabled => "HISTORY_DISABLED",
            NotRecovered::Unavailable => "UNAVAILABLE",
            NotRecovered::EpochChanged => "EPOCH_CHANGED",
            NotRecovered::OffsetAhead => "OFFSET_AHEAD",
            NotRecovered::TooMany => "TOO_MANY",
            NotRecovered::TooOld => "TOO_OLD",
        }
    }
}

/// The §2.4 rule for a position on a stream with metadata `meta` (`None`:
/// no metadata, so any position is `EPOCH_CHANGED`). `Ok` holds the first
/// offset to replay (`top + 1`: nothing to replay).
pub fn recover(
    position: &Position,
    meta: Option<Meta>,
    max_events: u64,
) -> Result<u64, NotRecovered> {
    let Some(meta) = meta.filter(|m| m.epoch.as_str() == position.epoch) else {
        return Err(NotRecovered::EpochChanged);
    };
    if position.offset > meta.top {
        return Err(NotRecovered::OffsetAhead);
    }
    if meta.top - position.offset > max_events {
        return Err(NotRecovered::TooMany);
    }
    if position.offset != meta.top && position.offset + 1 < meta.first {
        return Err(NotRecovered::TooOld);
    }
    Ok(position.offset + 1)
}

/// A `--last-value-events` rule: the latest `event_type` per value of
/// `data.field`, dropped by any of `end_types` with the same value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastValueRule {
    pub event_type: String,
    pub field: String,
    pub end_types: Vec<String>,
}

impl LastValueRule {
    /// Parses `TYPE:FIELD[:END|END...]`, comma-separated; empty: no rule.
    pub fn parse_list(list: &str) -> Result<Vec<LastValueRule>, String> {
        list.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| {
                let mut parts = item.splitn(3, ':');
                let event_type = parts.next().unwrap_or_default();
                let field = parts.next().unwrap_or_default();
                if event_type.is_empty() || field.is_empty() {
                    return Err(format!("`{item}` is not TYPE:FIELD[:END_TYPE|...]"));
                }
                let end_types = parts
                    .next()
                    .map(|ends| {
                        ends.split('|')
                            .filter(|e| !e.is_empty())
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(LastValueRule {
                    event_type: event_type.to_owned(),
                    field: field.to_owned(),
                    end_types,
                })
            })
            .collect()
    }
}

/// What an append does to the stream's last values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LastValue {
    /// Store this event under the key (the field's value as JSON text, so
    /// `"1"` and `1` are two keys).
    Store(String),
    /// Drop the entry under the key.
    End(String),
}

impl LastValue {
    /// What an event of `event_type` with `data` does under `rules`.
    pub fn of(rules: &[LastValueRule], event_type: &str, data: &Value) -> Vec<LastValue> {
        let key = |field: &str| match data.get(field) {
            Some(v @ (Value::String(_) | Value::Number(_))) => Some(v.to_string()),
            _ => None,
        };
        rules
            .iter()
            .filter_map(|rule| {
                if rule.event_type == event_type {
                    key(&rule.field).map(LastValue::Store)
                } else if rule.end_types.iter().any(|t| t == event_type) {
                    key(&rule.field).map(LastValue::End)
                } else {
                    None
                }
            })
            .collect()
    }
}

/// The knobs of history, from `Config`.
#[derive(Debug, Clone)]
pub struct HistorySettings {
    /// Events kept per stream (> 0: a store exists only then).
    pub size: usize,
    pub ttl: Duration,
    pub meta_ttl: Duration,
    pub max_bytes: usize,
    pub last_value_ttl: Duration,
}

/// Where history lives. Appends are made at publish (the hub), reads at
/// resume (the shard thread of the resuming connection) and by the server
/// API; an implementation is shared by all of them, so it must be cheap
/// to call from many threads and must never block on I/O while a shard
/// waits (a Redis one would serve shard reads from a task, not inline).
pub trait HistoryStore: Send + Sync {
    /// Appends to `stream`: assigns the next offset (a new epoch when the
    /// stream has no metadata), has `encode` build the frame with that
    /// position, retains it and applies `last_values`. Returns the
    /// position and the frame. Appends to one stream are serialized, so
    /// offsets are contiguous.
    fn append(
        &self,
        stream: &Arc<str>,
        last_values: &[LastValue],
        encode: &mut dyn FnMut(&StreamPosition) -> Arc<[u8]>,
    ) -> (StreamPosition, Arc<[u8]>);

    /// The stream's metadata, `None` without any. Creates nothing.
    fn meta(&self, stream: &str) -> Option<Meta>;

    /// The metadata and the retained events with offsets `from..`, at
    /// most `limit`, in offset order, read in one step (so they agree).
    fn read(&self, stream: &str, from: u64, limit: usize) -> Option<(Meta, Vec<Stored>)>;

    /// The stream's cached last values, in offset order.
    fn last_values(&self, stream: &str) -> Vec<Stored>;

    /// Drops the stream, its events and last values; `true` when it had
    /// metadata. The next append starts a new epoch.
    fn delete(&self, stream: &str) -> bool;

    /// Drops what expired (called periodically).
    fn sweep(&self);
}

/// What a connection or the API can do with history on this node.
#[derive(Clone)]
pub enum History {
    /// `--history-size 0`.
    Disabled,
    /// Cluster mode this round: recorded cluster-wide storage is not built
    /// yet, so nothing is recorded and every position is `UNAVAILABLE`.
    Unavailable,
    /// Cluster mode: appends and the streams API on Redis (SPEC-v2 §2.6).
    /// Connection recovery does not read it yet: every position a
    /// connection gives is `UNAVAILABLE` (docs/CLUSTER.md, "History").
    Redis {
        store: Arc<RedisStore>,
        max_recovery: u64,
        last_value_rules: Arc<[LastValueRule]>,
    },
    Store {
        store: Arc<dyn HistoryStore>,
        max_recovery: u64,
        /// `--last-value-events` (empty: last values off).
        last_value_rules: Arc<[LastValueRule]>,
    },
}

impl std::fmt::Debug for History {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            History::Disabled => "History::Disabled",
            History::Unavailable => "History::Unavailable",
            History::Store { .. } => "History::Store",
            History::Redis { .. } => "History::Redis",
        })
    }
}

impl History {
    pub fn store(&self) -> Option<&Arc<dyn HistoryStore>> {
        match self {
            History::Store { store, .. } => Some(store),
            _ => None,
        }
    }

    /// Whether publishes are appended somewhere (memory or Redis).
    pub fn records(&self) -> bool {
        matches!(self, History::Store { .. } | History::Redis { .. })
    }

    /// The reason every position gets when nothing can be read.
    pub fn unreadable(&self) -> Option<NotRecovered> {
        match self {
            History::Disabled => Some(NotRecovered::HistoryDisabled),
            History::Unavailable | History::Redis { .. } => Some(NotRecovered::Unavailable),
            History::Store { .. } => None,
        }
    }

    /// The last-value rules; empty when last values are off.
    pub fn last_value_rules(&self) -> &[LastValueRule] {
        match self {
            History::Store {
                last_value_rules, ..
            }
            | History::Redis {
                last_value_rules, ..
            } => last_value_rules,
            _ => &[],
        }
    }

    pub fn max_recovery(&self) -> u64 {
        match self {
            History::Store { max_recovery, .. } | History::Redis { max_recovery, .. } => {
                *max_recovery
            }
            _ => 0,
        }
    }
}

/// The stream of a user's events.
pub fn user_stream(user: &str) -> Arc<str> {
    Arc::from(format!("user:{user}"))
}

pub const BROADCAST: &str = "broadcast";

pub fn event_stream(event_type: &str) -> Arc<str> {
    Arc::from(format!("event:{event_type}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(top: u64, first: u64) -> Option<Meta> {
        Some(Meta {
            epoch: Epoch::parse("AAAAAAAA").expect("epoch"),
            top,
            first,
        })
    }

    fn at(epoch: &str, offset: u64) -> Position {
        Position {
            epoch: epoch.into(),
            offset,
        }
    }

    #[test]
    fn recovery_rule_and_reason_order() {
        let e = "AAAAAAAA";
        assert_eq!(recover(&at(e, 3), meta(5, 1), 300), Ok(4));
        assert_eq!(recover(&at(e, 5), meta(5, 6), 300), Ok(6));
        assert_eq!(
            recover(&at("BBBBBBBB", 3), meta(5, 1), 300),
            Err(NotRecovered::EpochChanged)
        );
        assert_eq!(
            recover(&at(e, 0), None, 300),
            Err(NotRecovered::EpochChanged)
        );
        assert_eq!(
            recover(&at(e, 6), meta(5, 1), 300),
            Err(NotRecovered::OffsetAhead)
        );
        assert_eq!(
            recover(&at(e, 2), meta(5, 1), 2),
            Err(NotRecovered::TooMany)
        );
        assert_eq!(recover(&at(e, 3), meta(5, 1), 2), Ok(4));
        assert_eq!(
            recover(&at(e, 2), meta(5, 4), 300),
            Err(NotRecovered::TooOld)
        );
        assert_eq!(recover(&at(e, 3), meta(5, 4), 300), Ok(4));
    }

    #[test]
    fn epochs_are_eight_alphanumerics() {
        let epoch = Epoch::random();
        assert_eq!(epoch.as_str().len(), 8);
        assert_eq!(Epoch::parse(epoch.as_str()), Some(epoch));
        assert_eq!(Epoch::parse("short"), None);
        assert_eq!(Epoch::parse("ab-cdefg"), None);
    }

    #[test]
    fn last_value_rules_parse_and_apply() {
        let rules = LastValueRule::parse_list(
            "upload.progress:upload_id:upload.completed|upload.error,file.processing:file_id",
        )
        .expect("rules");
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0].end_types, vec!["upload.completed", "upload.error"]);
        assert!(rules[1].end_types.is_empty());
        let data = serde_json::json!({"upload_id": "u1"});
        assert_eq!(
            LastValue::of(&rules, "upload.progress", &data),
            vec![LastValue::Store("\"u1\"".into())]
        );
        assert_eq!(
            LastValue::of(&rules, "upload.error", &data),
            vec![LastValue::End("\"u1\"".into())]
        );
        assert!(LastValue::of(&rules, "upload.progress", &serde_json::json!({})).is_empty());
        assert!(LastValueRule::parse_list("").expect("empty").is_empty());
        assert!(LastValueRule::parse_list("nofield").is_err());
    }
}
