//! The server API's request bodies, as serde types: the one place their
//! shapes, defaults and field rules are written down (SPEC §4).
//!
//! A body that does not fit its type is a 400 `BAD_REQUEST` whose detail is
//! serde's account of what did not fit (a missing field, a wrong type, an
//! unknown event or level). Unknown fields are ignored, as they always
//! were; `notifications` keeps them, as the event's `...extra`. `null`
//! counts as absent wherever a field is optional, except `changes` (an
//! object when given) and `data` (delivered as sent).

use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::address::JsonId;
use crate::protocol::Event;

/// Ids as plain strings, for the hub.
pub fn ids(ids: Vec<JsonId>) -> Vec<String> {
    ids.into_iter().map(|JsonId(id)| id).collect()
}

/// `POST /events`.
#[derive(Debug, Deserialize)]
pub struct PublishBody {
    #[serde(rename = "type", deserialize_with = "subscribable_event")]
    pub event: Event,
    #[serde(default = "empty_object")]
    pub data: Value,
    pub users: Option<Vec<JsonId>>,
    pub connections: Option<Vec<JsonId>>,
    pub all: Option<bool>,
}

/// `POST /notifications`: every field it does not name is `extra`.
#[derive(Debug, Deserialize)]
pub struct NotificationBody {
    pub message: String,
    pub level: Option<Level>,
    pub users: Option<Vec<JsonId>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// `POST /reviews/{id}/updated`.
#[derive(Debug, Deserialize)]
pub struct ReviewUpdatedBody {
    #[serde(default)]
    pub changes: Map<String, Value>,
    pub users: Option<Vec<JsonId>>,
}

/// `POST /files/{id}/status`.
#[derive(Debug, Deserialize)]
pub struct FileStatusBody {
    pub user_id: JsonId,
    pub status: String,
    pub progress: Option<f64>,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

fn subscribable_event<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Event, D::Error> {
    let name = String::deserialize(deserializer)
        .map_err(|_| de::Error::custom("`type` must be a subscribable event type"))?;
    Event::parse(&name)
        .ok_or_else(|| de::Error::custom(format!("`{name}` is not a subscribable event type")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse<T: for<'de> Deserialize<'de>>(body: Value) -> Result<T, String> {
        T::deserialize(body).map_err(|e| e.to_string())
    }

    #[test]
    fn ids_are_strings_or_numbers() {
        let body: PublishBody =
            parse(json!({"type": "review.created", "users": ["a", 7], "connections": null}))
                .expect("ok");
        assert_eq!(body.users.map(ids), Some(vec!["a".into(), "7".into()]));
        assert_eq!(body.connections, None);
        assert_eq!(body.data, json!({}), "data defaults to an empty object");
        let bad = parse::<PublishBody>(json!({"type": "review.created", "users": [true]}));
        assert!(bad.expect_err("refused").contains("string or a number"));
        assert!(parse::<PublishBody>(json!({"type": "review.created", "users": "a"})).is_err());
    }

    #[test]
    fn event_types_must_be_subscribable() {
        let unknown = parse::<PublishBody>(json!({"type": "ping"})).expect_err("refused");
        assert!(
            unknown.contains("`ping` is not a subscribable event type"),
            "{unknown}"
        );
        let number = parse::<PublishBody>(json!({"type": 5})).expect_err("refused");
        assert!(number.contains("`type` must be"), "{number}");
        let missing = parse::<PublishBody>(json!({"data": {}})).expect_err("refused");
        assert!(missing.contains("`type`"), "{missing}");
    }

    #[test]
    fn notifications_keep_what_they_do_not_name() {
        let body: NotificationBody = parse(json!({
            "message": "m", "level": "warning", "users": null, "action_url": "/x", "count": 3
        }))
        .expect("ok");
        assert_eq!(body.level, Some(Level::Warning));
        assert_eq!(body.users, None);
        assert_eq!(
            Value::Object(body.extra),
            json!({"action_url": "/x", "count": 3})
        );
        assert!(parse::<NotificationBody>(json!({"message": "m", "level": "loud"})).is_err());
        assert!(parse::<NotificationBody>(json!({"message": 5})).is_err());
    }

    #[test]
    fn review_changes_default_to_empty_but_null_is_refused() {
        let body: ReviewUpdatedBody = parse(json!({})).expect("ok");
        assert!(body.changes.is_empty());
        assert!(parse::<ReviewUpdatedBody>(json!({"changes": null})).is_err());
        assert!(parse::<ReviewUpdatedBody>(json!({"changes": [1]})).is_err());
    }
}
