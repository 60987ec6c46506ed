//! SPEC section 1: `--jwt-public-key` (RS256 / ES256 tokens). The key
//! pairs under tests/support/keys were generated for these tests only.

use crate::support::raw::Upgrade;
use crate::support::{now_secs, sign_hs256, TestServer};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;

const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/keys");

fn sign(alg: Algorithm, private_pem: &[u8], claims: &serde_json::Value) -> String {
    let key = match alg {
        Algorithm::ES256 => EncodingKey::from_ec_pem(private_pem),
        _ => EncodingKey::from_rsa_pem(private_pem),
    }
    .expect("parse the test private key");
    encode(&Header::new(alg), claims, &key).expect("sign a test token")
}

fn check_public_key(alg: Algorithm, name: &str) {
    let public = format!("{KEYS}/{name}.pub.pem");
    let private = std::fs::read(format!("{KEYS}/{name}.key.pem")).expect("read test key");
    let public_pem = std::fs::read(&public).expect("read test public key");
    let server = TestServer::builder()
        .without_credentials()
        .args(&["--jwt-public-key", &public, "--api-key", "k"])
        .start();
    let claims = json!({"sub": "pk-user", "exp": now_secs() + 600});
    let token = sign(alg, &private, &claims);
    let mut c = server.ws_token(&token);
    assert_eq!(c.established["data"]["user_id"], "pk-user");
    c.assert_alive();

    // Algorithm confusion: HS256 "signed" with the public key as secret.
    let forged = sign_hs256(&String::from_utf8_lossy(&public_pem), &claims);
    Upgrade::get(&format!("/api/v1/ws/{forged}"))
        .send(server.addr())
        .assert_error(401, "UNAUTHORIZED");
    // The same forgery with the key's bytes in other spellings (no
    // trailing newline, CRLF line ends), in case a verifier normalises.
    let pem_text = String::from_utf8_lossy(&public_pem).to_string();
    for secret in [
        pem_text.trim_end().to_string(),
        pem_text.replace('\n', "\r\n"),
    ] {
        let forged = sign_hs256(&secret, &claims);
        Upgrade::get(&format!("/api/v1/ws/{forged}"))
            .send(server.addr())
            .assert_error(401, "UNAUTHORIZED");
    }
    // `alg: none` (any capitalisation) is refused with a public key too.
    for alg in ["none", "None", "NONE"] {
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            Upgrade::get(&format!("/api/v1/ws/{token}"))
                .send(server.addr())
                .assert_error(401, "UNAUTHORIZED");
        }
    }
    assert_eq!(
        crate::support::raw::raw_request(server.addr(), b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .status,
        200
    );
    // Expired tokens are still refused.
    let expired = sign(
        alg,
        &private,
        &json!({"sub": "pk-user", "exp": now_secs() - 60}),
    );
    Upgrade::get(&format!("/api/v1/ws/{expired}"))
        .send(server.addr())
        .assert_error(401, "UNAUTHORIZED");
}

#[test]
fn es256_public_key_tokens() {
    check_public_key(Algorithm::ES256, "es256");
}

#[test]
fn rs256_public_key_tokens() {
    check_public_key(Algorithm::RS256, "rs256");
}
