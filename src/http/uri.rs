//! Percent-decoding of request paths and query strings: the one place the
//! gateway turns what a client wrote in a URL into text.
//!
//! Path segments are split on the literal `/` first and decoded after, so
//! an id holding a `/` travels as `%2F` inside one segment. Anything
//! malformed is refused, never guessed at. It must not echo the input in
//! its errors: a path segment may be a token.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not valid percent-encoding: every `%` must start two hex digits, and the decoded text must be UTF-8")]
pub struct BadEncoding;

/// Decodes `%XX` escapes (a `+` stays a `+`).
pub fn decode(raw: &str) -> Result<String, BadEncoding> {
    // percent-encoding passes a `%` without two hex digits through as
    // text; such an escape is a client bug, refused like invalid UTF-8.
    let bytes = raw.as_bytes();
    let escapes_complete = bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'%')
        .all(|(i, _)| {
            bytes
                .get(i + 1..i + 3)
                .is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit))
        });
    if !escapes_complete {
        return Err(BadEncoding);
    }
    percent_decode_str(raw)
        .decode_utf8()
        .map(Cow::into_owned)
        .map_err(|_| BadEncoding)
}

/// The decoded segments of `path`, leading and trailing `/` ignored.
pub fn path_segments(path: &str) -> Result<Vec<String>, BadEncoding> {
    path.trim_matches('/').split('/').map(decode).collect()
}

/// The first value of `name` in a form-encoded query string (`+` is a
/// space there), decoded; `None` when absent.
pub fn query_param(query: Option<&str>, name: &str) -> Result<Option<String>, BadEncoding> {
    query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then_some(value)
        })
        .map(|value| decode(&value.replace('+', " ")))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_escapes_and_refuses_malformed_ones() {
        assert_eq!(decode("a.b-c_d").as_deref(), Ok("a.b-c_d"));
        assert_eq!(decode("a%40b.com").as_deref(), Ok("a@b.com"));
        assert_eq!(decode("a+b").as_deref(), Ok("a+b"));
        assert_eq!(decode("%C3%A9").as_deref(), Ok("é"));
        assert_eq!(decode("bad%zz"), Err(BadEncoding));
        assert_eq!(decode("cut%4"), Err(BadEncoding));
        assert_eq!(decode("%"), Err(BadEncoding));
        assert_eq!(decode("%FF"), Err(BadEncoding));
    }

    #[test]
    fn segments_split_before_decoding() {
        assert_eq!(
            path_segments("/api/v1/users/a%2Fb/deactivate/"),
            Ok(vec![
                "api".into(),
                "v1".into(),
                "users".into(),
                "a/b".into(),
                "deactivate".into()
            ])
        );
        assert_eq!(path_segments("/users/%zz"), Err(BadEncoding));
    }

    #[test]
    fn query_values_are_form_decoded() {
        let q = Some("x=1&user_id=a+b%40c&user_id=second");
        assert_eq!(query_param(q, "user_id"), Ok(Some("a b@c".into())));
        assert_eq!(query_param(q, "missing"), Ok(None));
        assert_eq!(query_param(None, "user_id"), Ok(None));
        assert_eq!(
            query_param(Some("user_id=%zz"), "user_id"),
            Err(BadEncoding)
        );
        assert_eq!(
            query_param(Some("user_id"), "user_id"),
            Ok(Some(String::new()))
        );
    }
}
