//! Bench-protocol messages: tokens, client frames, broadcast bodies, and a
//! tolerant parser for server frames.

use std::borrow::Cow;
use std::time::Duration;

use anyhow::Result;
use serde::Deserialize;

pub const EVENT: &str = "system.notification";

/// Tokens outlive any run.
const TOKEN_TTL: Duration = Duration::from_secs(24 * 3600);

/// A token for user `sub`, valid for 24 h, minted by wsgate's own minting
/// ([`wsgate::mint_token`]) so the load generator signs what the tests sign.
pub fn token(secret: &str, sub: &str) -> Result<String> {
    Ok(wsgate::mint_token(secret, sub, TOKEN_TTL, &[])?)
}

/// CLOCK_MONOTONIC in ns: one clock for every process on the machine, so a
/// publish time stamped by the parent can be compared with a receipt time in a child.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists on Linux.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn subscribe_msg(id: &str) -> String {
    format!(r#"{{"type":"subscribe","data":{{"events":["{EVENT}"]}},"id":"{id}"}}"#)
}

pub fn ping_msg(ping_id: &str) -> String {
    format!(r#"{{"type":"ping","data":{{"pingId":"{ping_id}"}},"id":"{ping_id}"}}"#)
}

/// `data` of a broadcast: `{"seq":S,"t":T,"pad":"xxx"}` padded so the serialized
/// object is `size` bytes (or its natural size when that is larger).
pub fn broadcast_data(seq: u64, t: u64, size: usize) -> String {
    let base = format!(r#"{{"seq":{seq},"t":{t},"pad":""}}"#);
    let pad = size.saturating_sub(base.len());
    let mut s = String::with_capacity(base.len() + pad);
    s.push_str(&base[..base.len() - 2]);
    s.extend(std::iter::repeat_n('x', pad));
    s.push_str("\"}");
    s
}

/// Body of `POST /api/v1/events`.
pub fn broadcast_body(seq: u64, t: u64, size: usize) -> String {
    format!(
        r#"{{"type":"{EVENT}","data":{}}}"#,
        broadcast_data(seq, t, size)
    )
}

#[derive(Deserialize, Debug, Default)]
pub struct InData<'a> {
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default)]
    pub t: Option<u64>,
    #[serde(default, rename = "pingId", borrow)]
    pub ping_id: Option<Cow<'a, str>>,
}

/// The parts of a server frame the generator looks at; everything else is skipped.
#[derive(Deserialize, Debug)]
pub struct InMsg<'a> {
    #[serde(rename = "type", borrow)]
    pub ty: Cow<'a, str>,
    #[serde(default, borrow)]
    pub data: Option<InData<'a>>,
}

/// Parses a server text frame; `None` if it is not a JSON object with a string `type`.
pub fn parse(text: &str) -> Option<InMsg<'_>> {
    serde_json::from_str(text).ok()
}

/// Kind of a server frame, for the hot paths.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    Established,
    SubscriptionConfirmed,
    Pong,
    Notification,
    Error,
    Other,
}

pub fn kind(ty: &str) -> Kind {
    match ty {
        "connection.established" => Kind::Established,
        "subscription.confirmed" => Kind::SubscriptionConfirmed,
        "pong" => Kind::Pong,
        EVENT => Kind::Notification,
        "error" => Kind::Error,
        _ => Kind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_padded_to_size() {
        for size in [64usize, 100, 4096, 65536] {
            let d = broadcast_data(12345, 987_654_321_000, size);
            assert_eq!(d.len(), size, "size {size}");
            let v: serde_json::Value = serde_json::from_str(&d).unwrap();
            assert_eq!(v["seq"], 12345);
            assert_eq!(v["t"], 987_654_321_000u64);
        }
        // too small: natural size, still valid JSON
        let d = broadcast_data(1, 2, 1);
        assert_eq!(d, r#"{"seq":1,"t":2,"pad":""}"#);
        let b: serde_json::Value = serde_json::from_str(&broadcast_body(7, 8, 100)).unwrap();
        assert_eq!(b["type"], EVENT);
        assert_eq!(b["data"]["seq"], 7);
    }

    #[test]
    fn parses_server_frames() {
        let m = parse(r#"{"type":"system.notification","data":{"seq":3,"t":99,"pad":"xx"},"timestamp":"t","id":"i"}"#).unwrap();
        assert_eq!(kind(&m.ty), Kind::Notification);
        let d = m.data.unwrap();
        assert_eq!((d.seq, d.t), (Some(3), Some(99)));
        // sorted keys (rust-tokio), null pingId, missing data
        let m = parse(
            r#"{"data":{"pingId":null,"timestamp":"x"},"id":"1","timestamp":"x","type":"pong"}"#,
        )
        .unwrap();
        assert_eq!(kind(&m.ty), Kind::Pong);
        assert!(m.data.unwrap().ping_id.is_none());
        let m = parse(r#"{"type":"pong","data":{"pingId":"a\"b"}}"#).unwrap();
        assert_eq!(m.data.unwrap().ping_id.as_deref(), Some("a\"b"));
        assert_eq!(
            kind(&parse(r#"{"type":"connection.established"}"#).unwrap().ty),
            Kind::Established
        );
        assert!(parse("nope").is_none());
        assert!(parse(r#"{"type":1}"#).is_none());
        assert!(parse(r#"[1]"#).is_none());
        // a seq that is not a number is a parse failure, not a panic
        assert!(parse(r#"{"type":"system.notification","data":{"seq":"x"}}"#).is_none());
    }

    #[test]
    fn client_frames_are_json() {
        let v: serde_json::Value = serde_json::from_str(&subscribe_msg("s1")).unwrap();
        assert_eq!(v["data"]["events"][0], EVENT);
        let v: serde_json::Value = serde_json::from_str(&ping_msg("p1")).unwrap();
        assert_eq!(v["data"]["pingId"], "p1");
        assert_eq!(v["type"], "ping");
    }

    #[test]
    fn tokens_name_the_user_and_last_a_day() {
        use base64::Engine;
        let t = token("s", "user-1").unwrap();
        let payload = t.split('.').nth(1).unwrap();
        let claims: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["sub"], "user-1");
        let ttl = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
        assert_eq!(ttl, 24 * 3600);
    }
}
