//! The messages nodes exchange over the backplane's one pub/sub channel,
//! as JSON: `{"v": 1, "node": "<sender>", "kind": "...", ...}`. Events
//! also carry `"epoch"` (random per sender process) and `"seq"` (1, 2, ...
//! within it), inserted by the sender's writer in publishing order, so a
//! receiver can count the events it missed.
//!
//! Owns the format only: encoding borrows the publisher's data (no copy of
//! the event), decoding yields owned values, and anything unknown or
//! malformed is a [`WireError`], never a panic. It knows nothing of Redis.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::OutboundEvent;
use crate::address::Target;
use crate::protocol::Event;

/// Version of this format; a node drops messages of another version.
pub const VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("not a wsgate cluster message: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("cluster message version {0} is not {VERSION}")]
    Version(u8),
    #[error("unknown event type `{0}`")]
    UnknownEvent(String),
}

/// Who receives an event, as sent between nodes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "to", rename_all = "snake_case")]
pub enum WireTarget {
    Subscribers,
    All,
    Selected {
        #[serde(default)]
        users: Vec<String>,
        #[serde(default)]
        connections: Vec<String>,
    },
}

impl From<WireTarget> for Target {
    fn from(target: WireTarget) -> Target {
        match target {
            WireTarget::Subscribers => Target::Subscribers,
            WireTarget::All => Target::All,
            WireTarget::Selected { users, connections } => Target::Selected { users, connections },
        }
    }
}

/// The borrowed form of [`WireTarget`], for encoding without copies.
#[derive(Serialize)]
#[serde(tag = "to", rename_all = "snake_case")]
enum TargetRef<'a> {
    Subscribers,
    All,
    Selected {
        users: &'a [String],
        connections: &'a [String],
    },
}

/// A decoded message from another node.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// An event to deliver to this node's matching connections.
    Publish {
        id: String,
        timestamp: String,
        event: String,
        target: WireTarget,
        data: Value,
    },
    /// A recorded event, published by the append script: `message` is the
    /// JSON delivered (with its `stream` position), byte for byte.
    Recorded {
        target: WireTarget,
        message: String,
    },
    /// An event for the connections of `user` subscribed to `event`.
    SubscribedUser {
        id: String,
        timestamp: String,
        event: String,
        user: String,
        data: Value,
    },
    /// Close this user's connections with 4003 and refuse new ones.
    Deactivate {
        user: String,
    },
    Activate {
        user: String,
    },
    /// Close this connection with 4003 if it is yours, and answer.
    Disconnect {
        request: u64,
        connection_id: String,
    },
    /// The answer to a `Disconnect`, for node `to`.
    Disconnected {
        to: String,
        request: u64,
        closed: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Message {
    pub v: u8,
    pub node: String,
    /// The sender process's numbering of its events (0: not numbered).
    #[serde(default)]
    pub epoch: u64,
    #[serde(default)]
    pub seq: u64,
    #[serde(flatten)]
    pub body: Body,
}

impl Message {
    pub fn decode(payload: &[u8]) -> Result<Message, WireError> {
        let message: Message = serde_json::from_slice(payload)?;
        if message.v != VERSION {
            return Err(WireError::Version(message.v));
        }
        Ok(message)
    }
}

/// The event of a decoded `Publish`.
pub fn event(name: &str) -> Result<Event, WireError> {
    Event::parse(name).ok_or_else(|| WireError::UnknownEvent(name.to_owned()))
}

#[derive(Serialize)]
struct Header<'a, B: Serialize> {
    v: u8,
    node: &'a str,
    #[serde(flatten)]
    body: B,
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum BodyRef<'a> {
    Publish {
        id: &'a str,
        timestamp: &'a str,
        event: &'a str,
        target: TargetRef<'a>,
        data: &'a Value,
    },
    SubscribedUser {
        id: &'a str,
        timestamp: &'a str,
        event: &'a str,
        user: &'a str,
        data: &'a Value,
    },
    Deactivate {
        user: &'a str,
    },
    Activate {
        user: &'a str,
    },
    Disconnect {
        request: u64,
        connection_id: &'a str,
    },
    Disconnected {
        to: &'a str,
        request: u64,
        closed: bool,
    },
}

fn encode(node: &str, body: BodyRef<'_>) -> String {
    // Only string-keyed maps are serialized here, so this cannot fail;
    // an empty string would be dropped by every receiver as malformed.
    serde_json::to_string(&Header {
        v: VERSION,
        node,
        body,
    })
    .unwrap_or_default()
}

impl<'a> TargetRef<'a> {
    fn of(target: &'a Target) -> TargetRef<'a> {
        match target {
            Target::Subscribers => TargetRef::Subscribers,
            Target::All => TargetRef::All,
            Target::Selected { users, connections } => TargetRef::Selected { users, connections },
        }
    }
}

pub fn encode_publish(node: &str, event: &OutboundEvent<'_>) -> String {
    let target = TargetRef::of(event.target);
    encode(
        node,
        BodyRef::Publish {
            id: event.id,
            timestamp: event.timestamp,
            event: event.event.as_str(),
            target,
            data: event.data,
        },
    )
}

pub fn encode_subscribed_user(
    node: &str,
    user: &str,
    id: &str,
    timestamp: &str,
    event: Event,
    data: &Value,
) -> String {
    encode(
        node,
        BodyRef::SubscribedUser {
            id,
            timestamp,
            event: event.as_str(),
            user,
            data,
        },
    )
}

/// How every message `node` sends starts: `{"v":1,"node":"<node>",`.
/// The start of a `recorded` message, up to its `message` string, which the
/// append script adds (with the closing brace).
pub fn recorded_prefix(node: &str, target: &Target) -> String {
    let mut prefix = header_prefix(node);
    prefix.push_str("\"kind\":\"recorded\",\"target\":");
    prefix.push_str(&serde_json::to_string(&TargetRef::of(target)).unwrap_or_default());
    prefix.push_str(",\"message\":");
    prefix
}

/// The parts of a recorded message a receiver needs to route it.
#[derive(Debug, Deserialize)]
pub struct RecordedHead {
    #[serde(rename = "type")]
    pub event: String,
    pub stream: RecordedStream,
}

#[derive(Debug, Deserialize)]
pub struct RecordedStream {
    pub name: String,
    pub epoch: String,
    pub offset: u64,
}

pub fn header_prefix(node: &str) -> String {
    let mut prefix = format!("{{\"v\":{VERSION},\"node\":");
    prefix.push_str(&serde_json::to_string(node).unwrap_or_default());
    prefix.push(',');
    prefix
}

/// `payload` (starting with `prefix`, see [`header_prefix`]) with the
/// sender's event numbering inserted after the header; `None` when the
/// payload does not start with `prefix`.
pub fn sequenced(prefix: &str, payload: &str, epoch: u64, seq: u64) -> Option<String> {
    let rest = payload.strip_prefix(prefix)?;
    Some(format!("{prefix}\"epoch\":{epoch},\"seq\":{seq},{rest}"))
}

pub fn encode_deactivate(node: &str, user: &str) -> String {
    encode(node, BodyRef::Deactivate { user })
}

pub fn encode_activate(node: &str, user: &str) -> String {
    encode(node, BodyRef::Activate { user })
}

pub fn encode_disconnect(node: &str, request: u64, connection_id: &str) -> String {
    encode(
        node,
        BodyRef::Disconnect {
            request,
            connection_id,
        },
    )
}

pub fn encode_disconnected(node: &str, to: &str, request: u64, closed: bool) -> String {
    encode(
        node,
        BodyRef::Disconnected {
            to,
            request,
            closed,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn publish_round_trips_with_id_and_target() {
        let data = json!({"review_id": "r1", "n": 2});
        let target = Target::Selected {
            users: vec!["u1".into()],
            connections: vec!["c0000000100000000000000001".into()],
        };
        let text = encode_publish(
            "node-a",
            &OutboundEvent {
                id: "msg_1",
                timestamp: "2025-01-08T10:30:00.000Z",
                event: Event::ReviewUpdated,
                data: &data,
                target: &target,
            },
        );
        let message = Message::decode(text.as_bytes()).expect("decodes");
        assert_eq!(message.node, "node-a");
        let Body::Publish {
            id,
            timestamp,
            event: name,
            target: wire_target,
            data: decoded,
        } = message.body
        else {
            panic!("not a publish: {text}");
        };
        assert_eq!(id, "msg_1");
        assert_eq!(timestamp, "2025-01-08T10:30:00.000Z");
        assert_eq!(event(&name).expect("known"), Event::ReviewUpdated);
        assert_eq!(Target::from(wire_target), target);
        assert_eq!(decoded, data);
    }

    #[test]
    fn numbered_events_round_trip_and_keep_the_echo_prefix() {
        let data = json!({"upload_id": "u", "connection_id": "c"});
        let text = encode_subscribed_user(
            "node-\"a\"",
            "u1",
            "msg_1",
            "t",
            Event::UploadCancelled,
            &data,
        );
        let prefix = header_prefix("node-\"a\"");
        assert!(text.starts_with(&prefix), "{text}");
        let numbered = sequenced(&prefix, &text, 77, 5).expect("prefix matches");
        assert!(numbered.starts_with(&prefix));
        let message = Message::decode(numbered.as_bytes()).expect("decodes");
        assert_eq!((message.epoch, message.seq), (77, 5));
        assert_eq!(
            message.body,
            Body::SubscribedUser {
                id: "msg_1".into(),
                timestamp: "t".into(),
                event: "upload.cancelled".into(),
                user: "u1".into(),
                data,
            }
        );
        assert_eq!(sequenced("{\"v\":1,\"node\":\"b\",", &text, 1, 1), None);
        let unnumbered = Message::decode(text.as_bytes()).expect("decodes");
        assert_eq!((unnumbered.epoch, unnumbered.seq), (0, 0));
    }

    #[test]
    fn control_messages_round_trip() {
        let m = Message::decode(encode_deactivate("n", "u7").as_bytes()).expect("ok");
        assert_eq!(m.body, Body::Deactivate { user: "u7".into() });
        let m = Message::decode(encode_activate("n", "u7").as_bytes()).expect("ok");
        assert_eq!(m.body, Body::Activate { user: "u7".into() });
        let m = Message::decode(encode_disconnect("n", 9, "cX").as_bytes()).expect("ok");
        assert_eq!(
            m.body,
            Body::Disconnect {
                request: 9,
                connection_id: "cX".into()
            }
        );
        let m = Message::decode(encode_disconnected("n", "m", 9, true).as_bytes()).expect("ok");
        assert_eq!(
            m.body,
            Body::Disconnected {
                to: "m".into(),
                request: 9,
                closed: true
            }
        );
        for target in [Target::All, Target::Subscribers] {
            let text = encode_publish(
                "n",
                &OutboundEvent {
                    id: "i",
                    timestamp: "t",
                    event: Event::FileReady,
                    data: &json!(null),
                    target: &target,
                },
            );
            let Body::Publish { target: t, .. } =
                Message::decode(text.as_bytes()).expect("ok").body
            else {
                panic!("publish")
            };
            assert_eq!(Target::from(t), target);
        }
    }

    #[test]
    fn garbage_and_other_versions_are_errors() {
        assert!(matches!(
            Message::decode(b"not json"),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            Message::decode(br#"{"v":1,"node":"n","kind":"nope"}"#),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            Message::decode(br#"{"v":2,"node":"n","kind":"activate","user":"u"}"#),
            Err(WireError::Version(2))
        ));
        assert!(matches!(event("nope"), Err(WireError::UnknownEvent(_))));
    }
}
