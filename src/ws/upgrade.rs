//! The WebSocket opening handshake, server side (RFC 6455 §4.2), by hand.
//!
//! Checks that a request is a valid upgrade and computes
//! `Sec-WebSocket-Accept`. It does not authenticate, admit or register the
//! connection: `http::ws_route` does that before answering 101.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use hyper::header::{
    HeaderMap, HeaderValue, CONNECTION, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION, UPGRADE,
};
use hyper::Method;
use sha1::{Digest, Sha1};

const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    #[error("a WebSocket upgrade must be a GET request")]
    NotGet,
    #[error("missing `Upgrade: websocket` header")]
    NoUpgradeHeader,
    #[error("missing `Connection: upgrade` header")]
    NoConnectionUpgrade,
    #[error("`Sec-WebSocket-Version` must be 13")]
    BadVersion,
    #[error("missing or malformed `Sec-WebSocket-Key`")]
    BadKey,
}

/// Validates an upgrade request and returns the `Sec-WebSocket-Accept` value.
pub fn check_request(method: &Method, headers: &HeaderMap) -> Result<HeaderValue, UpgradeError> {
    if method != Method::GET {
        return Err(UpgradeError::NotGet);
    }
    if !header_has_token(headers, UPGRADE, "websocket") {
        return Err(UpgradeError::NoUpgradeHeader);
    }
    if !header_has_token(headers, CONNECTION, "upgrade") {
        return Err(UpgradeError::NoConnectionUpgrade);
    }
    if headers.get(SEC_WEBSOCKET_VERSION).map(|v| v.as_bytes()) != Some(b"13") {
        return Err(UpgradeError::BadVersion);
    }
    let key = headers.get(SEC_WEBSOCKET_KEY).ok_or(UpgradeError::BadKey)?;
    let key = key.as_bytes().trim_ascii();
    // The key must be base64 of 16 bytes (RFC 6455 §4.1).
    match BASE64.decode(key) {
        Ok(raw) if raw.len() == 16 => {}
        _ => return Err(UpgradeError::BadKey),
    }
    let accept = accept_key(key);
    HeaderValue::from_str(&accept).map_err(|_| UpgradeError::BadKey)
}

/// `base64(sha1(key + GUID))`.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID);
    BASE64.encode(sha.finalize())
}

/// True when a comma-separated header contains `token` (case-insensitive).
fn header_has_token(headers: &HeaderMap, name: hyper::header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .to_str()
            .map(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
            .unwrap_or(false)
    })
}

/// The subprotocols offered in `Sec-WebSocket-Protocol`, in order.
pub fn offered_protocols(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(hyper::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    const GOOD: [(&str, &str); 4] = [
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn rfc_example_accept_key() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
        let accept = check_request(&Method::GET, &headers(&GOOD)).expect("valid");
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn rejects_each_missing_piece() {
        assert_eq!(
            check_request(&Method::POST, &headers(&GOOD)),
            Err(UpgradeError::NotGet)
        );
        for (skip, expected) in [
            (0, UpgradeError::NoUpgradeHeader),
            (1, UpgradeError::NoConnectionUpgrade),
            (2, UpgradeError::BadVersion),
            (3, UpgradeError::BadKey),
        ] {
            let partial: Vec<_> = GOOD
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, p)| *p)
                .collect();
            assert_eq!(
                check_request(&Method::GET, &headers(&partial)),
                Err(expected)
            );
        }
        let mut bad_key = GOOD;
        bad_key[3] = ("sec-websocket-key", "c2hvcnQ=");
        assert_eq!(
            check_request(&Method::GET, &headers(&bad_key)),
            Err(UpgradeError::BadKey)
        );
    }

    #[test]
    fn lists_offered_protocols() {
        let map = headers(&[("sec-websocket-protocol", "wsgate.v1, bearer.abc")]);
        assert_eq!(
            offered_protocols(&map).collect::<Vec<_>>(),
            ["wsgate.v1", "bearer.abc"]
        );
    }
}
