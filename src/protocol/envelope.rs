//! The envelope every server message travels in, encoded straight into a
//! WebSocket frame.
//!
//! `{"type", "data", "timestamp", "id"}` plus `reply_to` on replies. Encoding
//! goes directly into the frame buffer (see `ws::frame::text_frame`), so a
//! message is serialized exactly once whatever the number of recipients.

use serde::Serialize;
use serde_json::Value;

use super::clock;
use super::ids::MessageIds;
use crate::ws::frame;

#[derive(Serialize)]
struct Envelope<'a, D: Serialize + ?Sized> {
    #[serde(rename = "type")]
    kind: &'a str,
    data: &'a D,
    timestamp: &'a str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    reply_to: Option<&'a Value>,
}

/// A server message encoded as a complete text frame.
#[derive(Debug)]
pub struct EncodedMessage {
    pub id: String,
    pub frame: Vec<u8>,
}

/// Encodes a server message as a ready-to-write text frame.
pub fn encode<D: Serialize + ?Sized>(
    ids: &MessageIds,
    kind: &str,
    data: &D,
    reply_to: Option<&Value>,
) -> EncodedMessage {
    let id = ids.next_id();
    let timestamp = clock::now_rfc3339();
    let frame = frame::text_frame(|buf| {
        let envelope = Envelope {
            kind,
            data,
            timestamp: &timestamp,
            id: &id,
            reply_to,
        };
        // Serializing into a Vec fails only for maps with non-string keys,
        // which no type here has; an empty payload would still be a frame.
        let _ = serde_json::to_writer(buf, &envelope);
    });
    EncodedMessage { id, frame }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn payload(frame: &[u8]) -> Value {
        let start = frame.len() - frame::payload_len(frame);
        serde_json::from_slice(&frame[start..]).expect("json payload")
    }

    #[test]
    fn envelope_has_all_fields_and_optional_reply_to() {
        let ids = MessageIds::new();
        let msg = encode(&ids, "pong", &json!({"pingId": "p"}), Some(&json!("m1")));
        let value = payload(&msg.frame);
        assert_eq!(value["type"], "pong");
        assert_eq!(value["data"]["pingId"], "p");
        assert_eq!(value["reply_to"], "m1");
        assert_eq!(value["id"], msg.id.as_str());
        let ts = value["timestamp"].as_str().expect("timestamp");
        assert_eq!(ts.len(), 24);
        assert!(ts.ends_with('Z'));

        let plain = payload(&encode(&ids, "x", &json!({}), None).frame);
        assert!(plain.get("reply_to").is_none());
    }
}
