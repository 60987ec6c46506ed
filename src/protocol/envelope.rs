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
use crate::history::StreamPosition;
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
    /// A recorded event's position (SPEC-v2 §2.1).
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<&'a StreamPosition>,
}

/// A server message encoded as a complete text frame.
#[derive(Debug)]
pub struct EncodedMessage {
    pub id: String,
    pub frame: Vec<u8>,
}

/// Encodes a server message with a given id and timestamp: a message
/// published on another node of a cluster keeps that node's id and time.
pub fn encode_as<D: Serialize + ?Sized>(
    id: String,
    timestamp: &str,
    kind: &str,
    data: &D,
) -> EncodedMessage {
    encode_envelope(id, timestamp, kind, data, None, None)
}

/// Encodes a recorded event: the envelope of [`encode_as`] plus its
/// `stream` position.
pub fn encode_recorded<D: Serialize + ?Sized>(
    id: &str,
    timestamp: &str,
    kind: &str,
    data: &D,
    stream: &StreamPosition,
) -> Vec<u8> {
    encode_envelope(id.to_owned(), timestamp, kind, data, None, Some(stream)).frame
}

/// The cached copy of a recorded frame (SPEC-v2 §2.5): the same message
/// byte for byte with `"cached":true` added as its last field.
pub fn mark_cached(recorded: &[u8]) -> Vec<u8> {
    let payload = &recorded[recorded.len() - frame::payload_len(recorded)..];
    let body = payload.strip_suffix(b"}").unwrap_or(payload);
    frame::text_frame(|buf| {
        buf.extend_from_slice(body);
        buf.extend_from_slice(b",\"cached\":true}");
    })
}

/// Encodes a server message as a ready-to-write text frame.
pub fn encode<D: Serialize + ?Sized>(
    ids: &MessageIds,
    kind: &str,
    data: &D,
    reply_to: Option<&Value>,
) -> EncodedMessage {
    encode_at(ids, kind, data, reply_to, &clock::now_rfc3339())
}

/// [`encode`] with a timestamp the caller already has (replies whose
/// `data` carries the same instant format the clock once).
pub fn encode_at<D: Serialize + ?Sized>(
    ids: &MessageIds,
    kind: &str,
    data: &D,
    reply_to: Option<&Value>,
    timestamp: &str,
) -> EncodedMessage {
    encode_envelope(ids.next_id(), timestamp, kind, data, reply_to, None)
}

fn encode_envelope<D: Serialize + ?Sized>(
    id: String,
    timestamp: &str,
    kind: &str,
    data: &D,
    reply_to: Option<&Value>,
    stream: Option<&StreamPosition>,
) -> EncodedMessage {
    let frame = frame::text_frame(|buf| {
        let envelope = Envelope {
            kind,
            data,
            timestamp,
            id: &id,
            reply_to,
            stream,
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
        assert!(plain.get("stream").is_none());
    }

    #[test]
    fn recorded_and_cached_copies() {
        let position = StreamPosition {
            name: "user:7".into(),
            epoch: crate::history::Epoch::parse("Xk3f9aQ2").expect("epoch"),
            offset: 42,
        };
        let frame = encode_recorded("m1", "t", "upload.progress", &json!({"p": 1}), &position);
        let value = payload(&frame);
        assert_eq!(
            value["stream"],
            json!({"name": "user:7", "epoch": "Xk3f9aQ2", "offset": 42})
        );
        let cached = mark_cached(&frame);
        let cached_value = payload(&cached);
        assert_eq!(cached_value["cached"], true);
        let mut without = cached_value.clone();
        without.as_object_mut().expect("object").remove("cached");
        assert_eq!(without, value);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;
        use tungstenite::protocol::frame::coding::{Data, OpCode};
        use tungstenite::protocol::frame::FrameHeader;

        /// Any JSON value, nested a few levels deep.
        fn any_json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|n| json!(n)),
                any::<u64>().prop_map(|n| json!(n)),
                // Any finite float (JSON has no NaN or infinity): with
                // serde_json's `float_roundtrip` every one parses back to
                // the same bits (without it, 17-digit ones came back 1 ULP
                // off: found by this test).
                any::<f64>()
                    .prop_filter("finite", |f| f.is_finite())
                    .prop_map(|f| json!(f)),
                any::<String>().prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 64, 8, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                    prop::collection::btree_map(any::<String>(), inner, 0..8)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn is_wire_timestamp(ts: &str) -> bool {
            let b = ts.as_bytes();
            b.len() == 24
                && b.iter().enumerate().all(|(i, c)| match i {
                    4 | 7 => *c == b'-',
                    10 => *c == b'T',
                    13 | 16 => *c == b':',
                    19 => *c == b'.',
                    23 => *c == b'Z',
                    _ => c.is_ascii_digit(),
                })
        }

        proptest! {
            #[test]
            fn envelope_round_trips(
                kind in any::<String>(),
                data in any_json(),
                reply_to in proptest::option::of(prop_oneof![
                    any::<String>().prop_map(Value::String),
                    any::<i64>().prop_map(|n| json!(n)),
                ]),
            ) {
                let ids = MessageIds::new();
                let msg = encode(&ids, &kind, &data, reply_to.as_ref());
                // One final, unmasked text frame whose length is the payload's.
                let mut cursor = std::io::Cursor::new(&msg.frame[..]);
                let (header, len) = FrameHeader::parse(&mut cursor)
                    .expect("valid header")
                    .expect("complete header");
                prop_assert!(header.is_final);
                prop_assert!(header.mask.is_none());
                prop_assert_eq!(header.opcode, OpCode::Data(Data::Text));
                let start = cursor.position() as usize;
                prop_assert_eq!(len as usize, msg.frame.len() - start);
                prop_assert_eq!(frame::payload_len(&msg.frame), msg.frame.len() - start);

                let value: Value = serde_json::from_slice(&msg.frame[start..])
                    .expect("payload is JSON");
                let object = value.as_object().expect("an object");
                let expected_fields = if reply_to.is_some() { 5 } else { 4 };
                prop_assert_eq!(object.len(), expected_fields);
                prop_assert_eq!(&value["type"], &Value::String(kind));
                prop_assert_eq!(&value["data"], &data);
                prop_assert_eq!(&value["id"], &Value::String(msg.id.clone()));
                prop_assert!(!msg.id.is_empty());
                prop_assert!(is_wire_timestamp(value["timestamp"].as_str().expect("string")));
                prop_assert_eq!(value.get("reply_to"), reply_to.as_ref());
            }

            #[test]
            fn frame_header_uses_the_shortest_length_class(size in prop_oneof![
                0usize..=125,
                126usize..=65_535,
                65_536usize..=300_000,
                Just(125usize), Just(126), Just(65_535), Just(65_536),
            ]) {
                let frame = frame::text_frame(|buf| buf.resize(buf.len() + size, b'x'));
                let header_len = match size {
                    0..=125 => 2,
                    126..=65_535 => 4,
                    _ => 10,
                };
                prop_assert_eq!(frame.len(), header_len + size);
                prop_assert_eq!(frame[0], 0x81);
                prop_assert_eq!(frame::payload_len(&frame), size);
                let mut cursor = std::io::Cursor::new(&frame[..]);
                let (_, len) = FrameHeader::parse(&mut cursor)
                    .expect("valid header")
                    .expect("complete header");
                prop_assert_eq!(len as usize, size);
                prop_assert_eq!(cursor.position() as usize, header_len);
            }
        }
    }
}
