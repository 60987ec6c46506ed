//! Parsing and validating client messages.
//!
//! Turns one text frame into a [`ClientRequest`] or the [`ProtocolError`] to
//! answer, and recovers the message `id` whenever it can be read so that
//! even errors carry `reply_to`. Pure: no I/O, no connection state, no rate
//! limiting (the caller counts every frame before it gets here).

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::history::Position;

use super::error::{ErrorCode, ProtocolError};
use super::event::Event;

/// The client message types of SPEC §3 and SPEC-v2, by wire name.
pub const CLIENT_MESSAGE_TYPES: [&str; 7] = [
    "ping",
    "heartbeat",
    "subscribe",
    "unsubscribe",
    "upload.cancel",
    "auth.refresh",
    "resume",
];

/// A validated client request.
#[derive(Clone, Debug, PartialEq)]
pub enum ClientRequest {
    /// `pingId` as sent; `None` when absent or `null`.
    Ping {
        ping_id: Option<String>,
    },
    Heartbeat,
    /// The events as the client listed them, in its order (echoed back).
    Subscribe(Vec<Event>),
    Unsubscribe(Vec<Event>),
    UploadCancel {
        upload_id: String,
        /// The whole `data` object, forwarded to the webhook as sent.
        data: Map<String, Value>,
    },
    /// SPEC-v2 §3: a new token for this connection, not yet checked.
    AuthRefresh {
        token: String,
    },
    /// What needs history: `resume`, and `subscribe` with `since` or
    /// `cache` (SPEC-v2 §2.2, §2.3).
    Positioned(Positioned),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Positioned {
    Resume(ResumeRequest),
    Subscribe(SubscribeFrom),
}

/// `resume` data: positions (`None`: subscribe or carry on, nothing to
/// recover).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct ResumeRequest {
    pub user: Option<Position>,
    pub broadcast: Option<Position>,
    /// Events to subscribe, each with its position, in the client's order.
    pub events: Vec<(Event, Option<Position>)>,
    pub cache: bool,
}

/// `subscribe` with positions for some of its events.
#[derive(Clone, Debug, PartialEq)]
pub struct SubscribeFrom {
    pub events: Vec<Event>,
    pub since: Vec<(Event, Position)>,
    pub cache: bool,
}

impl ClientRequest {
    /// Wire name of the request type, for metrics.
    pub fn type_name(&self) -> &'static str {
        match self {
            ClientRequest::Ping { .. } => "ping",
            ClientRequest::Heartbeat => "heartbeat",
            ClientRequest::Subscribe(_) => "subscribe",
            ClientRequest::Unsubscribe(_) => "unsubscribe",
            ClientRequest::UploadCancel { .. } => "upload.cancel",
            ClientRequest::AuthRefresh { .. } => "auth.refresh",
            ClientRequest::Positioned(Positioned::Resume(_)) => "resume",
            ClientRequest::Positioned(Positioned::Subscribe(_)) => "subscribe",
        }
    }
}

/// The outcome of parsing one frame: the id to reply to (when it could be
/// read) and the request or the error to answer.
#[derive(Debug)]
pub struct ParsedMessage {
    pub reply_to: Option<Value>,
    pub request: Result<ClientRequest, ProtocolError>,
}

/// Parses and validates one client text frame.
pub fn parse(text: &str) -> ParsedMessage {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => {
            return ParsedMessage {
                reply_to: None,
                request: Err(ProtocolError::new(
                    ErrorCode::InvalidJson,
                    "Message is not valid JSON",
                )),
            }
        }
    };
    let Value::Object(mut object) = value else {
        return ParsedMessage {
            reply_to: None,
            request: Err(ProtocolError::invalid_message(
                "Message must be a JSON object",
            )),
        };
    };
    let reply_to = match object.remove("id") {
        Some(id @ (Value::String(_) | Value::Number(_))) => Some(id),
        _ => None,
    };
    ParsedMessage {
        reply_to,
        request: validate(object),
    }
}

fn validate(mut object: Map<String, Value>) -> Result<ClientRequest, ProtocolError> {
    let kind = match object.remove("type") {
        Some(Value::String(kind)) => kind,
        Some(_) => return Err(ProtocolError::invalid_message("`type` must be a string")),
        None => return Err(ProtocolError::invalid_message("Missing `type`")),
    };
    let data = match object.remove("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(data)) => data,
        Some(_) => return Err(ProtocolError::invalid_message("`data` must be an object")),
    };
    match kind.as_str() {
        "ping" => match data.get("pingId") {
            None | Some(Value::Null) => Ok(ClientRequest::Ping { ping_id: None }),
            Some(Value::String(id)) => Ok(ClientRequest::Ping {
                ping_id: Some(id.clone()),
            }),
            Some(_) => Err(ProtocolError::invalid_message(
                "`data.pingId` must be a string",
            )),
        },
        "heartbeat" => Ok(ClientRequest::Heartbeat),
        "subscribe" => {
            let events = events(&data, true)?;
            if data.get("since").is_none() && data.get("cache").is_none() {
                return Ok(ClientRequest::Subscribe(events));
            }
            let since = match data.get("since") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Object(map)) => {
                    let mut since = Vec::with_capacity(map.len());
                    for (name, position) in map {
                        let event = Event::parse(name).filter(|e| events.contains(e));
                        let Some(event) = event else {
                            return Err(ProtocolError::invalid_message(format!(
                                "`data.since` names `{name}`, which is not in `data.events`"
                            )));
                        };
                        if let Some(position) = self::position(position, "data.since")? {
                            since.push((event, position));
                        }
                    }
                    since
                }
                Some(_) => {
                    return Err(ProtocolError::invalid_message(
                        "`data.since` must be an object of positions",
                    ))
                }
            };
            Ok(ClientRequest::Positioned(Positioned::Subscribe(
                SubscribeFrom {
                    events,
                    since,
                    cache: flag(&data, "cache")?,
                },
            )))
        }
        "resume" => Ok(ClientRequest::Positioned(Positioned::Resume(resume(
            &data,
        )?))),
        "unsubscribe" => Ok(ClientRequest::Unsubscribe(events(&data, false)?)),
        "upload.cancel" => match data.get("upload_id") {
            Some(Value::String(id)) if !id.is_empty() => Ok(ClientRequest::UploadCancel {
                upload_id: id.clone(),
                data,
            }),
            _ => Err(ProtocolError::invalid_message(
                "`data.upload_id` must be a non-empty string",
            )),
        },
        "auth.refresh" => match data.get("token") {
            Some(Value::String(token)) => Ok(ClientRequest::AuthRefresh {
                token: token.clone(),
            }),
            _ => Err(ProtocolError::invalid_message(
                "`data.token` must be a string",
            )),
        },
        other => Err(ProtocolError::new(
            ErrorCode::InvalidMessageType,
            format!("Unknown message type: {other}"),
        )),
    }
}

/// A position `{"epoch": string, "offset": integer ≥ 0}`, or `null`.
fn position(value: &Value, field: &str) -> Result<Option<Position>, ProtocolError> {
    if value.is_null() {
        return Ok(None);
    }
    Position::deserialize(value).map(Some).map_err(|_| {
        ProtocolError::invalid_message(format!(
            "`{field}` positions must be {{\"epoch\": string, \"offset\": integer}} or null"
        ))
    })
}

fn flag(data: &Map<String, Value>, name: &str) -> Result<bool, ProtocolError> {
    match data.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ProtocolError::invalid_message(format!(
            "`data.{name}` must be a boolean"
        ))),
    }
}

/// `resume` data (SPEC-v2 §2.2); unknown `events` names are
/// `INVALID_SUBSCRIPTION` as for `subscribe`.
fn resume(data: &Map<String, Value>) -> Result<ResumeRequest, ProtocolError> {
    let single = |name: &str| match data.get(name) {
        None => Ok(None),
        Some(value) => position(value, &format!("data.{name}")),
    };
    let mut request = ResumeRequest {
        user: single("user")?,
        broadcast: single("broadcast")?,
        cache: flag(data, "cache")?,
        events: Vec::new(),
    };
    match data.get("events") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            let mut invalid = Vec::new();
            for (name, value) in map {
                match Event::parse(name) {
                    Some(event) => request
                        .events
                        .push((event, position(value, "data.events")?)),
                    None => invalid.push(Value::String(name.clone())),
                }
            }
            if !invalid.is_empty() {
                return Err(unknown_events(invalid));
            }
        }
        Some(_) => {
            return Err(ProtocolError::invalid_message(
                "`data.events` must be an object of event names to positions",
            ))
        }
    }
    Ok(request)
}

fn unknown_events(invalid: Vec<Value>) -> ProtocolError {
    let list = invalid
        .iter()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join(", ");
    ProtocolError::new(
        ErrorCode::InvalidSubscription,
        format!("Unknown events: {list}"),
    )
    .with("invalid_events", Value::Array(invalid))
}

/// Reads `data.events` in the client's order; all-or-nothing: any unknown
/// name rejects the whole request with `INVALID_SUBSCRIPTION` naming every
/// unknown event.
fn events(data: &Map<String, Value>, non_empty: bool) -> Result<Vec<Event>, ProtocolError> {
    let Some(Value::Array(names)) = data.get("events") else {
        return Err(ProtocolError::invalid_message(
            "`data.events` must be an array of event names",
        ));
    };
    if non_empty && names.is_empty() {
        return Err(ProtocolError::invalid_message(
            "`data.events` must not be empty",
        ));
    }
    let mut requested = Vec::with_capacity(names.len());
    let mut invalid = Vec::new();
    for name in names {
        let Value::String(name) = name else {
            return Err(ProtocolError::invalid_message(
                "`data.events` must contain only strings",
            ));
        };
        match Event::parse(name) {
            Some(event) => requested.push(event),
            None => invalid.push(Value::String(name.clone())),
        }
    }
    if invalid.is_empty() {
        Ok(requested)
    } else {
        Err(unknown_events(invalid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn code(text: &str) -> ErrorCode {
        parse(text).request.expect_err("should be an error").code
    }

    #[test]
    fn ping_with_and_without_id() {
        let parsed = parse(r#"{"type":"ping","data":{"pingId":"p1"},"id":"m1"}"#);
        assert_eq!(parsed.reply_to, Some(json!("m1")));
        assert_eq!(
            parsed.request.expect("ping"),
            ClientRequest::Ping {
                ping_id: Some("p1".into())
            }
        );
        let parsed = parse(r#"{"type":"ping"}"#);
        assert_eq!(parsed.reply_to, None);
        assert_eq!(
            parsed.request.expect("ping"),
            ClientRequest::Ping { ping_id: None }
        );
    }

    #[test]
    fn ping_id_of_the_wrong_type_is_invalid_and_keeps_the_id() {
        for bad in ["5", "{}", "[\"p\"]", "true"] {
            let parsed = parse(&format!(
                r#"{{"type":"ping","data":{{"pingId":{bad}}},"id":"m"}}"#
            ));
            assert_eq!(parsed.reply_to, Some(json!("m")), "{bad}");
            assert_eq!(
                parsed.request.expect_err(bad).code,
                ErrorCode::InvalidMessage
            );
        }
        let parsed = parse(r#"{"type":"ping","data":{"pingId":null}}"#);
        assert_eq!(
            parsed.request.expect("null is absent"),
            ClientRequest::Ping { ping_id: None }
        );
    }

    #[test]
    fn errors_by_code() {
        assert_eq!(code("not json"), ErrorCode::InvalidJson);
        assert_eq!(code("[1,2]"), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"data":{}}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":5}"#), ErrorCode::InvalidMessage);
        assert_eq!(
            code(r#"{"type":"ping","data":[]}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(code(r#"{"type":"PING"}"#), ErrorCode::InvalidMessageType);
        assert_eq!(
            code(r#"{"type":"subscribe","data":{"events":"x"}}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"subscribe","data":{"events":[]}}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"upload.cancel","data":{"upload_id":""}}"#),
            ErrorCode::InvalidMessage
        );
    }

    #[test]
    fn auth_refresh_needs_a_string_token() {
        let parsed = parse(r#"{"type":"auth.refresh","data":{"token":"a.b.c"},"id":"r"}"#);
        assert_eq!(parsed.reply_to, Some(json!("r")));
        assert_eq!(
            parsed.request.expect("valid"),
            ClientRequest::AuthRefresh {
                token: "a.b.c".into()
            }
        );
        for bad in [
            r#"{"type":"auth.refresh"}"#,
            r#"{"type":"auth.refresh","data":{"token":5}}"#,
            r#"{"type":"auth.refresh","data":{"token":null}}"#,
        ] {
            assert_eq!(code(bad), ErrorCode::InvalidMessage, "{bad}");
        }
    }

    #[test]
    fn unknown_type_message_names_it() {
        let err = parse(r#"{"type":"nope","id":7}"#);
        assert_eq!(err.reply_to, Some(json!(7)));
        assert_eq!(
            err.request.expect_err("unknown").message,
            "Unknown message type: nope"
        );
    }

    #[test]
    fn subscription_is_all_or_nothing() {
        let parsed = parse(
            r#"{"type":"subscribe","data":{"events":["upload.progress","bogus","x.y"]},"id":"s"}"#,
        );
        let err = parsed.request.expect_err("invalid");
        assert_eq!(err.code, ErrorCode::InvalidSubscription);
        assert_eq!(err.extra["invalid_events"], json!(["bogus", "x.y"]));
        let ok =
            parse(r#"{"type":"subscribe","data":{"events":["upload.progress","file.ready"]}}"#);
        let ClientRequest::Subscribe(requested) = ok.request.expect("valid") else {
            panic!("not a subscribe")
        };
        assert_eq!(requested, vec![Event::UploadProgress, Event::FileReady]);
    }

    #[test]
    fn deep_nesting_is_invalid_json_not_a_crash() {
        let deep = "[".repeat(100_000);
        assert_eq!(code(&deep), ErrorCode::InvalidJson);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Strings shaped like client messages, so parsing gets past the
        /// JSON stage often.
        fn messageish() -> impl Strategy<Value = String> {
            let ty = prop_oneof![
                Just("ping".to_string()),
                Just("subscribe".to_string()),
                Just("unsubscribe".to_string()),
                Just("upload.cancel".to_string()),
                Just("heartbeat".to_string()),
                any::<String>(),
            ];
            let data = prop_oneof![
                Just("{}".to_string()),
                Just("null".to_string()),
                Just("[]".to_string()),
                prop::collection::vec(
                    prop_oneof![
                        Just("\"file.ready\"".to_string()),
                        Just("\"bogus\"".to_string()),
                        Just("1".to_string()),
                        Just("null".to_string()),
                    ],
                    0..5
                )
                .prop_map(|v| format!(r#"{{"events":[{}]}}"#, v.join(","))),
                any::<String>().prop_map(|s| format!(r#"{{"upload_id":{}}}"#, Value::String(s))),
            ];
            (ty, data).prop_map(|(t, d)| format!(r#"{{"type":{},"data":{d}}}"#, Value::String(t)))
        }

        proptest! {
            #[test]
            fn parse_never_panics_on_arbitrary_strings(text in any::<String>()) {
                let parsed = parse(&text);
                if parsed.request.is_ok() {
                    prop_assert!(serde_json::from_str::<Value>(&text).is_ok());
                }
            }

            #[test]
            fn parse_never_panics_on_message_shaped_input(text in messageish()) {
                let _ = parse(&text);
            }

            /// Any string or number `id` on a ping comes back as
            /// `reply_to`, unchanged.
            #[test]
            fn ping_id_is_echoed_as_reply_to(id in prop_oneof![
                any::<String>().prop_map(Value::String),
                any::<i64>().prop_map(|n| json!(n)),
                any::<u64>().prop_map(|n| json!(n)),
                any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
            ]) {
                let text = json!({"type": "ping", "id": id}).to_string();
                let parsed = parse(&text);
                prop_assert_eq!(parsed.reply_to, Some(id));
                prop_assert_eq!(
                    parsed.request.expect("a valid ping"),
                    ClientRequest::Ping { ping_id: None }
                );
            }

            /// Other `id` shapes (null, bool, array, object) are not read
            /// as an id: no `reply_to` (wsgate choice), still a pong.
            #[test]
            fn non_scalar_ids_are_not_echoed(id in prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                prop::collection::vec(any::<i8>(), 0..3).prop_map(|v| json!(v)),
                any::<String>().prop_map(|s| json!({"k": s})),
            ]) {
                let parsed = parse(&json!({"type": "ping", "id": id}).to_string());
                prop_assert_eq!(parsed.reply_to, None);
                prop_assert!(parsed.request.is_ok());
            }
        }
    }
}
