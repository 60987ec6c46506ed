//! What a client message does: the reply, and at most one action for the
//! shard to carry out (a subscription change for its index; an upload
//! cancel: `upload.cancelled` to this user's connections and a webhook call)
//! or for the connection itself (a refreshed token).
//!
//! Pure: it reads the connection's current subscriptions and the outcome of
//! the token check it is handed (`check_token`, run only for
//! `auth.refresh`) and returns decisions; it never touches sockets, the
//! subscriber index or other connections, so it is unit-tested without a
//! server.

use serde_json::{json, Map, Value};

use crate::auth::{AuthError, Claims};
use crate::metrics::OutKind;
use crate::protocol::client::Positioned;
use crate::protocol::envelope::EncodedMessage;
use crate::protocol::{
    clock, server, ClientRequest, ErrorCode, EventSet, MessageIds, ProtocolError,
};

/// What one client message asks for: the reply, and at most one action.
#[derive(Debug)]
pub struct Dispatched {
    /// `None` when the action builds the reply (it needs history).
    pub reply: Option<EncodedMessage>,
    pub reply_kind: OutKind,
    pub action: Option<Action>,
}

/// What a client message asks beyond its reply.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// The connection's complete new subscription set.
    Subscriptions(EventSet),
    /// An upload the user asked to cancel.
    CancelUpload(CancelledUpload),
    /// `resume` or a positioned `subscribe`: the connection answers it from
    /// history (SPEC-v2 §2), then its subscriptions change.
    Positioned(Positioned),
    /// `auth.refresh` succeeded: these claims replace the connection's.
    Refreshed(Claims),
}

/// How an `auth.refresh` token checked out (SPEC-v2 §3).
#[derive(Debug, PartialEq)]
pub enum TokenCheck {
    /// Acceptable as a connecting token, for this connection's user.
    Valid(Claims),
    /// Not acceptable as a connecting token (v1 §2), expired included.
    Invalid(AuthError),
    /// Valid, but for another user.
    SubMismatch,
}

#[derive(Debug, PartialEq)]
pub struct CancelledUpload {
    pub upload_id: String,
    pub data: Map<String, Value>,
}

pub fn dispatch(
    ids: &MessageIds,
    request: ClientRequest,
    current: EventSet,
    reply_to: Option<&Value>,
    check_token: impl FnOnce(&str) -> TokenCheck,
) -> Dispatched {
    let plain = |reply, reply_kind| Dispatched {
        reply: Some(reply),
        reply_kind,
        action: None,
    };
    match request {
        ClientRequest::Ping { ping_id } => plain(
            server::pong(ids, ping_id.as_deref(), reply_to),
            OutKind::Pong,
        ),
        ClientRequest::Heartbeat => {
            plain(server::heartbeat_ack(ids, reply_to), OutKind::HeartbeatAck)
        }
        ClientRequest::Subscribe(requested) => {
            let next = current.union(requested.iter().copied().collect());
            Dispatched {
                action: Some(Action::Subscriptions(next)),
                ..plain(
                    server::subscription_changed(
                        ids,
                        "subscription.confirmed",
                        &requested,
                        next,
                        reply_to,
                    ),
                    OutKind::SubscriptionConfirmed,
                )
            }
        }
        ClientRequest::Unsubscribe(requested) => {
            let next = current.difference(requested.iter().copied().collect());
            Dispatched {
                action: Some(Action::Subscriptions(next)),
                ..plain(
                    server::subscription_changed(
                        ids,
                        "unsubscription.confirmed",
                        &requested,
                        next,
                        reply_to,
                    ),
                    OutKind::UnsubscriptionConfirmed,
                )
            }
        }
        ClientRequest::UploadCancel { upload_id, data } => Dispatched {
            action: Some(Action::CancelUpload(CancelledUpload {
                upload_id: upload_id.clone(),
                data,
            })),
            ..plain(
                server::upload_cancel_acknowledged(ids, &upload_id, reply_to),
                OutKind::UploadCancelAcknowledged,
            )
        },
        ClientRequest::AuthRefresh { token } => {
            let refused = |code, message: String| {
                let error = ProtocolError::new(code, message);
                plain(server::error(ids, &error, reply_to), OutKind::Error)
            };
            match check_token(&token) {
                TokenCheck::Valid(claims) => Dispatched {
                    reply: Some(server::token_expiry(
                        ids,
                        "auth.refreshed",
                        claims.exp,
                        clock::unix_millis(),
                        reply_to,
                    )),
                    reply_kind: OutKind::AuthRefreshed,
                    action: Some(Action::Refreshed(claims)),
                },
                TokenCheck::Invalid(error) => refused(
                    ErrorCode::TokenInvalid,
                    format!("Token refused ({error}); the current token still applies"),
                ),
                TokenCheck::SubMismatch => refused(
                    ErrorCode::TokenSubMismatch,
                    "The token is for another user; the current token still applies".into(),
                ),
            }
        }
        ClientRequest::Positioned(positioned) => Dispatched {
            reply: None,
            reply_kind: match positioned {
                Positioned::Resume(_) => OutKind::Resumed,
                Positioned::Subscribe(_) => OutKind::SubscriptionConfirmed,
            },
            action: Some(Action::Positioned(positioned)),
        },
    }
}

/// The webhook body for an `upload.cancel` (SPEC §3).
pub fn upload_cancel_webhook_body(
    ids: &MessageIds,
    user_id: &str,
    connection_id: &str,
    upload: &CancelledUpload,
) -> Vec<u8> {
    let body = json!({
        "type": "upload.cancel",
        "user_id": user_id,
        "connection_id": connection_id,
        "data": upload.data,
        "id": ids.next_id(),
        "timestamp": crate::protocol::clock::now_rfc3339(),
    });
    body.to_string().into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{client, Event};
    use crate::ws::frame;

    fn reply_json(d: &Dispatched) -> Value {
        let f = &d.reply.as_ref().expect("a reply").frame;
        serde_json::from_slice(&f[f.len() - frame::payload_len(f)..]).expect("json")
    }

    fn subscriptions(d: &Dispatched) -> EventSet {
        match d.action {
            Some(Action::Subscriptions(next)) => next,
            ref other => panic!("expected a subscription change, got {other:?}"),
        }
    }

    fn run(text: &str, current: EventSet) -> Dispatched {
        let parsed = client::parse(text);
        dispatch(
            &MessageIds::new(),
            parsed.request.expect("valid"),
            current,
            parsed.reply_to.as_ref(),
            |_| panic!("only auth.refresh checks a token"),
        )
    }

    fn refresh(check: TokenCheck) -> Dispatched {
        let parsed = client::parse(r#"{"type":"auth.refresh","data":{"token":"t"},"id":"r1"}"#);
        let mut seen = None;
        let d = dispatch(
            &MessageIds::new(),
            parsed.request.expect("valid"),
            EventSet::EMPTY,
            parsed.reply_to.as_ref(),
            |token| {
                seen = Some(token.to_owned());
                check
            },
        );
        assert_eq!(seen.as_deref(), Some("t"), "the token is the one sent");
        d
    }

    #[test]
    fn auth_refresh_replies_with_the_new_expiry_or_the_refusal() {
        let exp = clock::unix_seconds() + 120;
        let claims = Claims {
            user_id: "7".into(),
            exp,
        };
        let d = refresh(TokenCheck::Valid(claims.clone()));
        let v = reply_json(&d);
        assert_eq!(v["type"], "auth.refreshed");
        assert_eq!(v["reply_to"], "r1");
        assert_eq!(
            v["data"]["expires_at"],
            clock::format_rfc3339_millis(exp * 1000)
        );
        let left = v["data"]["expires_in"].as_u64().expect("whole seconds");
        assert!((118..=120).contains(&left), "{v}");
        assert_eq!(d.action, Some(Action::Refreshed(claims)));
        for (check, code) in [
            (TokenCheck::Invalid(AuthError::Expired), "TOKEN_INVALID"),
            (TokenCheck::SubMismatch, "TOKEN_SUB_MISMATCH"),
        ] {
            let d = refresh(check);
            let v = reply_json(&d);
            assert_eq!(
                (v["type"].as_str(), v["reply_to"].as_str()),
                (Some("error"), Some("r1"))
            );
            assert_eq!(v["data"]["code"], code);
            assert_eq!(d.action, None, "a refused token changes nothing");
        }
    }

    #[test]
    fn subscribe_merges_and_reports_sorted_set() {
        let current: EventSet = [Event::UploadProgress].into_iter().collect();
        let d = run(
            r#"{"type":"subscribe","data":{"events":["file.ready"]},"id":"s1"}"#,
            current,
        );
        let v = reply_json(&d);
        assert_eq!(v["type"], "subscription.confirmed");
        assert_eq!(v["reply_to"], "s1");
        assert_eq!(v["data"]["events"], json!(["file.ready"]));
        assert_eq!(
            v["data"]["subscriptions"],
            json!(["file.ready", "upload.progress"])
        );
        assert_eq!(
            subscriptions(&d).names(),
            vec!["file.ready", "upload.progress"]
        );
    }

    #[test]
    fn confirmed_events_keep_the_client_order() {
        let d = run(
            r#"{"type":"subscribe","data":{"events":["upload.progress","file.ready","review.created"]}}"#,
            EventSet::EMPTY,
        );
        let v = reply_json(&d);
        assert_eq!(
            v["data"]["events"],
            json!(["upload.progress", "file.ready", "review.created"])
        );
        assert_eq!(
            v["data"]["subscriptions"],
            json!(["file.ready", "review.created", "upload.progress"])
        );
        let d = run(
            r#"{"type":"unsubscribe","data":{"events":["upload.progress","file.ready"]}}"#,
            subscriptions(&d),
        );
        let v = reply_json(&d);
        assert_eq!(
            v["data"]["events"],
            json!(["upload.progress", "file.ready"])
        );
        assert_eq!(v["data"]["subscriptions"], json!(["review.created"]));
    }

    #[test]
    fn unsubscribe_removes() {
        let current: EventSet = [Event::UploadProgress, Event::FileReady]
            .into_iter()
            .collect();
        let d = run(
            r#"{"type":"unsubscribe","data":{"events":["file.ready"]}}"#,
            current,
        );
        assert_eq!(
            reply_json(&d)["data"]["subscriptions"],
            json!(["upload.progress"])
        );
    }

    #[test]
    fn ping_echoes_ping_id_or_null() {
        let d = run(
            r#"{"type":"ping","data":{"pingId":"abc"},"id":"m"}"#,
            EventSet::EMPTY,
        );
        let v = reply_json(&d);
        assert_eq!(
            (v["type"].as_str(), v["data"]["pingId"].as_str()),
            (Some("pong"), Some("abc"))
        );
        assert!(v["data"]["timestamp"].is_string());
        let d = run(r#"{"type":"ping"}"#, EventSet::EMPTY);
        assert!(reply_json(&d)["data"]["pingId"].is_null());
    }

    #[test]
    fn upload_cancel_acknowledges_and_asks_for_fanout() {
        let d = run(
            r#"{"type":"upload.cancel","data":{"upload_id":"u1","reason":"user"}}"#,
            EventSet::EMPTY,
        );
        assert_eq!(reply_json(&d)["type"], "upload.cancel.acknowledged");
        let Some(Action::CancelUpload(upload)) = d.action else {
            panic!("expected a cancel, got {:?}", d.action);
        };
        assert_eq!(upload.upload_id, "u1");
        let body: Value = serde_json::from_slice(&upload_cancel_webhook_body(
            &MessageIds::new(),
            "7",
            "c1",
            &upload,
        ))
        .expect("json");
        assert_eq!(body["type"], "upload.cancel");
        assert_eq!(body["user_id"], "7");
        assert_eq!(body["data"]["reason"], "user");
    }
}
