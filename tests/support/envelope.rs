//! Checks of the server message envelope (SPEC section 3).

use serde_json::Value;

/// `^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$`, without a regex dependency.
pub fn is_timestamp(s: &str) -> bool {
    let pattern = "dddd-dd-ddTdd:dd:dd.dddZ";
    s.len() == pattern.len()
        && s.bytes().zip(pattern.bytes()).all(|(c, p)| match p {
            b'd' => c.is_ascii_digit(),
            other => c == other,
        })
}

/// Asserts a server message carries `type`, `data` (an object), a
/// millisecond UTC `timestamp` and a non-empty string `id`.
pub fn assert_envelope(msg: &Value) {
    let ty = msg.get("type").and_then(Value::as_str);
    assert!(
        ty.is_some_and(|t| !t.is_empty()),
        "server message without a string `type`: {msg}"
    );
    assert!(
        msg.get("data").is_some_and(Value::is_object),
        "server message without an object `data`: {msg}"
    );
    let ts = msg.get("timestamp").and_then(Value::as_str);
    assert!(
        ts.is_some_and(is_timestamp),
        "server message `timestamp` is not RFC 3339 UTC with milliseconds and Z: {msg}"
    );
    let id = msg.get("id").and_then(Value::as_str);
    assert!(
        id.is_some_and(|i| !i.is_empty()),
        "server message without a non-empty string `id`: {msg}"
    );
}

#[test]
fn timestamp_shape() {
    assert!(is_timestamp("2025-01-08T10:30:00.000Z"));
    assert!(!is_timestamp("2025-01-08T10:30:00Z"));
    assert!(!is_timestamp("2025-01-08T10:30:00.000+00:00"));
    assert!(!is_timestamp("2025-01-08 10:30:00.000Z"));
}
