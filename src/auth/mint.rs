//! Minting HS256 tokens for `wsgate token` and `serve --dev`.
//!
//! Only for operators and development: production tokens come from the
//! application's own identity service.

use std::time::Duration;

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{Map, Value};

use crate::protocol::clock::unix_seconds;

/// Signs `{sub, iat, exp = now + ttl, ...extra}` with HS256.
pub fn mint_token(
    secret: &str,
    sub: &str,
    ttl: Duration,
    extra: &[(String, Value)],
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = unix_seconds();
    let mut claims = Map::new();
    claims.insert("sub".into(), Value::from(sub));
    claims.insert("iat".into(), Value::from(now));
    claims.insert("exp".into(), Value::from(now + ttl.as_secs()));
    for (key, value) in extra {
        claims.insert(key.clone(), value.clone());
    }
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// Parses `KEY=VALUE`: a VALUE that parses as JSON goes in as JSON,
/// otherwise as a string.
pub fn parse_claim(arg: &str) -> Result<(String, Value), String> {
    let (key, value) = arg
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got `{arg}`"))?;
    if key.is_empty() {
        return Err("claim name must not be empty".into());
    }
    let value = serde_json::from_str(value).unwrap_or_else(|_| Value::from(value));
    Ok((key.to_owned(), value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn claims_parse_as_json_or_string() {
        assert_eq!(parse_claim("n=5").expect("ok"), ("n".into(), json!(5)));
        assert_eq!(
            parse_claim("role=admin").expect("ok"),
            ("role".into(), json!("admin"))
        );
        assert_eq!(parse_claim("o={\"a\":1}").expect("ok").1, json!({"a":1}));
        assert!(parse_claim("novalue").is_err());
        assert!(parse_claim("=x").is_err());
    }
}
