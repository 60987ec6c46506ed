//! Minting HS256 tokens: the one place the project signs a JWT, for
//! `wsgate token`, `serve --dev`, the integration tests and the load
//! generator (`loadtest/`), so they all produce the same claims.
//!
//! Only for operators, development and tests: production tokens come from
//! the application's own identity service. Nothing here verifies a token
//! (that is [`super::jwt`]) or logs one.

use std::time::Duration;

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{Map, Value};

use crate::protocol::clock::unix_seconds;

/// Signs `{sub, iat: now, exp: now + ttl, ...extra}` with HS256 under
/// `secret`: a token the gateway accepts for user `sub` (with the same
/// secret, no issuer or audience configured) until `ttl` has passed. An
/// `extra` claim with the name of one of the three replaces it.
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
    sign_claims(secret, &claims)
}

/// Signs exactly `claims` with HS256 under `secret`, adding nothing: for
/// tokens [`mint_token`] would not make (no `sub`, no `exp`, an `nbf`, an
/// `iss`/`aud`, a past `exp`), which tests need to see refused.
pub fn sign_claims(
    secret: &str,
    claims: &Map<String, Value>,
) -> Result<String, jsonwebtoken::errors::Error> {
    encode(
        &Header::default(),
        claims,
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

    fn payload(token: &str) -> Value {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        let segment = token.split('.').nth(1).expect("payload segment");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).expect("base64url")).expect("json")
    }

    #[test]
    fn minted_claims_are_sub_iat_exp_and_extras() {
        let token = mint_token(
            "s",
            "u1",
            Duration::from_secs(600),
            &[("role".into(), json!("admin")), ("iat".into(), json!(7))],
        )
        .expect("mint");
        let claims = payload(&token);
        let exp = claims["exp"].as_u64().expect("exp");
        assert!(exp.abs_diff(unix_seconds() + 600) <= 2, "{claims}");
        assert_eq!(
            claims,
            json!({"sub": "u1", "iat": 7, "exp": exp, "role": "admin"}),
            "an extra claim replaces a standard one"
        );
        let exact = json!({"exp": 5, "nbf": 9});
        let signed = sign_claims("s", exact.as_object().expect("object")).expect("sign");
        assert_eq!(payload(&signed), exact, "sign_claims adds nothing");
    }
}
