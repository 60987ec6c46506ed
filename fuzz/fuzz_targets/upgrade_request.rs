//! `ws::upgrade::check_request` (and `offered_protocols`) on an
//! arbitrary method and header list, as hyper would hand them over: names
//! and values that hyper accepts are kept, the others dropped, so the
//! checker sees exactly what a real request can carry.
//!
//! Beyond "no panic": an accepted request has `Upgrade: websocket`,
//! `Connection: upgrade`, version 13 and a key, and its accept value is
//! `base64(sha1(key + GUID))` of that key.
#![no_main]

use arbitrary::Arbitrary;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::Method;
use libfuzzer_sys::fuzz_target;
use wsgate::internals::{accept_key, check_request, offered_protocols};

#[derive(Arbitrary, Debug)]
enum Name {
    Upgrade,
    Connection,
    Version,
    Key,
    Protocol,
    Other(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    method: String,
    get: bool,
    headers: Vec<(Name, Vec<u8>)>,
}

fuzz_target!(|input: Input| {
    let method = if input.get {
        Method::GET
    } else {
        match Method::from_bytes(input.method.as_bytes()) {
            Ok(m) => m,
            Err(_) => return,
        }
    };
    let mut map = HeaderMap::new();
    for (name, value) in &input.headers {
        let name = match name {
            Name::Upgrade => http::header::UPGRADE,
            Name::Connection => http::header::CONNECTION,
            Name::Version => http::header::SEC_WEBSOCKET_VERSION,
            Name::Key => http::header::SEC_WEBSOCKET_KEY,
            Name::Protocol => http::header::SEC_WEBSOCKET_PROTOCOL,
            Name::Other(s) => match HeaderName::from_bytes(s.as_bytes()) {
                Ok(n) => n,
                Err(_) => continue,
            },
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            map.append(name, value);
        }
    }
    let _ = offered_protocols(&map).count();
    if let Ok(accept) = check_request(&method, &map) {
        assert_eq!(method, Method::GET);
        assert!(map.contains_key(http::header::UPGRADE));
        assert!(map.contains_key(http::header::CONNECTION));
        assert_eq!(
            map.get(http::header::SEC_WEBSOCKET_VERSION)
                .map(|v| v.as_bytes()),
            Some(&b"13"[..])
        );
        let key = map
            .get(http::header::SEC_WEBSOCKET_KEY)
            .expect("an accepted request has a key");
        assert_eq!(
            accept.as_bytes(),
            accept_key(key.as_bytes().trim_ascii()).as_bytes()
        );
    }
});
