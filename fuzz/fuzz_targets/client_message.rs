//! `protocol::client::parse` on whatever a client can put in a text
//! frame: the input as UTF-8 when it is, lossily decoded otherwise (a text
//! frame that is not UTF-8 never reaches `parse`: tungstenite closes 1007).
//!
//! Beyond "no panic, no hang": a `reply_to` is a string or a number, and a
//! valid request came from a JSON object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsgate::internals::{parse_client_message as parse, CLIENT_MESSAGE_TYPES};

fn check(text: &str) {
    let parsed = parse(text);
    if let Some(id) = &parsed.reply_to {
        assert!(id.is_string() || id.is_number(), "reply_to {id:?}");
    }
    if let Ok(request) = &parsed.request {
        assert!(CLIENT_MESSAGE_TYPES.contains(&request.type_name()));
        let value: serde_json::Value = serde_json::from_str(text).expect("a valid request is JSON");
        assert!(value.is_object());
    }
}

fuzz_target!(|data: &[u8]| {
    match std::str::from_utf8(data) {
        Ok(text) => check(text),
        Err(_) => check(&String::from_utf8_lossy(data)),
    }
});
