//! Test tokens. Valid ones and any claim set are signed by the library's
//! one minting code ([`wsgate::mint_token`], [`wsgate::sign_claims`]); only
//! the deliberately unsigned `alg: none` token is built here by hand.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_secs() as i64
}

/// A valid HS256 token for `sub` (`sub`, `iat`, `exp` in `ttl`).
pub fn mint(secret: &str, sub: &str, ttl: Duration) -> String {
    wsgate::mint_token(secret, sub, ttl, &[]).expect("mint a test JWT")
}

/// An HS256 JWT over exactly `claims` (a JSON object): expired, no `sub`,
/// `nbf` in the future, another secret, ...
pub fn sign_hs256(secret: &str, claims: &Value) -> String {
    let claims = claims.as_object().expect("JWT claims are a JSON object");
    wsgate::sign_claims(secret, claims).expect("sign a test JWT")
}

/// An unsigned `alg: none` JWT over `claims` (must be refused).
pub fn alg_none_token(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string().as_bytes());
    format!("{header}.{payload}.")
}
