//! Token verification: signature, `exp`, `nbf`, `iss`, `aud`, `sub`, and
//! `--jwt-leeway`, applied here once to the checks; the connection's 4001
//! deadline adds [`TokenVerifier::leeway`] to the raw `exp` it is given.
//!
//! Used on the handshake (tokio) and for `auth.refresh` inline on the shard
//! threads: HS256 costs microseconds, RS256/ES256 tens of microseconds.
//!
//! Owns the decoding keys and the accepted algorithms. The algorithm is
//! chosen by the key the operator configured, never by the token alone:
//! `alg: none` is refused by the decoder, and an HS256 token is only ever
//! checked against the HMAC secret, so a public key can't be used as an
//! HMAC secret (algorithm confusion). It must not log tokens.

use std::path::Path;
use std::time::Duration;

use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::address::JsonId;
use crate::config::AuthConfig;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("token missing")]
    Missing,
    #[error("token malformed")]
    Malformed,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("invalid token signature")]
    BadSignature,
    #[error("token algorithm not accepted")]
    AlgorithmNotAccepted,
    #[error("token has no subject (`sub`)")]
    MissingSubject,
    #[error("token has no expiry (`exp`)")]
    MissingExpiry,
    #[error("token issuer or audience not accepted")]
    WrongIssuerOrAudience,
    #[error("user inactive")]
    UserInactive,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} holds neither an RSA nor an EC public key in PEM form")]
    NotAKey(String),
}

/// What a verified token says about its holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claims {
    pub user_id: String,
    /// The token's `exp` as written, seconds since the epoch: what clients
    /// are told (`expires_at`). The 4001 deadline adds `--jwt-leeway` and
    /// `--token-refresh-grace` to it.
    pub exp: u64,
}

struct KeyedValidation {
    key: DecodingKey,
    validation: Validation,
}

pub struct TokenVerifier {
    hmac: Option<KeyedValidation>,
    public: Option<(Algorithm, KeyedValidation)>,
    /// `--jwt-leeway` in seconds: allowed past `exp` (and before `nbf`).
    leeway_secs: u64,
}

impl TokenVerifier {
    pub fn new(config: &AuthConfig) -> Result<Self, KeyError> {
        let validation_for = |alg: Algorithm| {
            let mut v = Validation::new(alg);
            v.leeway = config.leeway.as_secs();
            v.validate_exp = true;
            v.validate_nbf = true;
            let mut required = vec!["exp"];
            match &config.issuer {
                Some(iss) => {
                    v.set_issuer(&[iss]);
                    required.push("iss");
                }
                None => v.iss = None,
            }
            match &config.audience {
                Some(aud) => {
                    v.set_audience(&[aud]);
                    required.push("aud");
                }
                None => v.validate_aud = false,
            }
            v.set_required_spec_claims(&required);
            v
        };
        let hmac = config.secret.as_ref().map(|secret| KeyedValidation {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation: validation_for(Algorithm::HS256),
        });
        let public = match &config.public_key_path {
            Some(path) => {
                let (alg, key) = load_public_key(path)?;
                Some((
                    alg,
                    KeyedValidation {
                        key,
                        validation: validation_for(alg),
                    },
                ))
            }
            None => None,
        };
        Ok(TokenVerifier {
            hmac,
            public,
            leeway_secs: config.leeway.as_secs(),
        })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let header = decode_header(token).map_err(|_| AuthError::Malformed)?;
        let keyed = match (header.alg, &self.hmac, &self.public) {
            (Algorithm::HS256, Some(hmac), _) => hmac,
            (alg, _, Some((public_alg, keyed))) if alg == *public_alg => keyed,
            _ => return Err(AuthError::AlgorithmNotAccepted),
        };
        let data = decode::<Map<String, Value>>(token, &keyed.key, &keyed.validation)
            .map_err(map_jwt_error)?;
        let mut claims = data.claims;
        let user_id = match claims.remove("sub").map(JsonId::deserialize) {
            Some(Ok(JsonId(sub))) if !sub.is_empty() => sub,
            _ => return Err(AuthError::MissingSubject),
        };
        let exp = claims
            .get("exp")
            .and_then(Value::as_f64)
            .filter(|exp| *exp >= 0.0)
            .ok_or(AuthError::MissingExpiry)? as u64;
        Ok(Claims { user_id, exp })
    }

    /// `--jwt-leeway` as the checks apply it (whole seconds): allowed past
    /// `exp` here, so also before a connection's 4001.
    pub fn leeway(&self) -> Duration {
        Duration::from_secs(self.leeway_secs)
    }
}

fn map_jwt_error(err: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    match err.kind() {
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
            AuthError::AlgorithmNotAccepted
        }
        ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => AuthError::MissingExpiry,
        ErrorKind::MissingRequiredClaim(_) => AuthError::WrongIssuerOrAudience,
        ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => AuthError::WrongIssuerOrAudience,
        _ => AuthError::Malformed,
    }
}

fn load_public_key(path: &Path) -> Result<(Algorithm, DecodingKey), KeyError> {
    let pem = std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })?;
    if let Ok(key) = DecodingKey::from_rsa_pem(&pem) {
        return Ok((Algorithm::RS256, key));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(&pem) {
        return Ok((Algorithm::ES256, key));
    }
    Err(KeyError::NotAKey(path.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(secret: &str) -> AuthConfig {
        AuthConfig {
            secret: Some(secret.into()),
            public_key_path: None,
            issuer: None,
            audience: None,
            leeway: Duration::ZERO,
        }
    }
    use crate::auth::mint::mint_token;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
    use base64::Engine;
    use serde_json::json;

    fn raw_token(header: Value, claims: Value, secret: &[u8]) -> String {
        use hmac_sign::sign;
        let h = B64.encode(header.to_string());
        let c = B64.encode(claims.to_string());
        let input = format!("{h}.{c}");
        format!("{input}.{}", B64.encode(sign(secret, input.as_bytes())))
    }

    /// HS256 by hand (via jsonwebtoken's encoder) for hostile headers.
    mod hmac_sign {
        pub fn sign(secret: &[u8], input: &[u8]) -> Vec<u8> {
            let key = jsonwebtoken::EncodingKey::from_secret(secret);
            let sig = jsonwebtoken::crypto::sign(input, &key, jsonwebtoken::Algorithm::HS256)
                .expect("sign");
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(sig)
                .expect("b64")
        }
    }

    fn now() -> u64 {
        crate::protocol::clock::unix_seconds()
    }

    #[test]
    fn accepts_string_and_numeric_sub() {
        let verifier = TokenVerifier::new(&config("s3cret")).expect("verifier");
        let token = mint_token("s3cret", "alice", Duration::from_secs(60), &[]).expect("mint");
        assert_eq!(verifier.verify(&token).expect("valid").user_id, "alice");
        let numeric = raw_token(
            json!({"alg":"HS256","typ":"JWT"}),
            json!({"sub": 42, "exp": now() + 60}),
            b"s3cret",
        );
        assert_eq!(verifier.verify(&numeric).expect("valid").user_id, "42");
    }

    #[test]
    fn refuses_bad_tokens() {
        let verifier = TokenVerifier::new(&config("s3cret")).expect("verifier");
        let hs = json!({"alg":"HS256","typ":"JWT"});
        let cases = [
            (
                raw_token(hs.clone(), json!({"sub":"a","exp": now() - 10}), b"s3cret"),
                AuthError::Expired,
            ),
            (
                raw_token(hs.clone(), json!({"sub":"a","exp": now() + 60}), b"other"),
                AuthError::BadSignature,
            ),
            (
                raw_token(hs.clone(), json!({"exp": now() + 60}), b"s3cret"),
                AuthError::MissingSubject,
            ),
            (
                raw_token(hs.clone(), json!({"sub":"","exp": now() + 60}), b"s3cret"),
                AuthError::MissingSubject,
            ),
            (
                raw_token(hs.clone(), json!({"sub":"a"}), b"s3cret"),
                AuthError::MissingExpiry,
            ),
            (
                raw_token(
                    hs.clone(),
                    json!({"sub":"a","exp": now() + 60, "nbf": now() + 600}),
                    b"s3cret",
                ),
                AuthError::NotYetValid,
            ),
            ("garbage".to_string(), AuthError::Malformed),
            (String::new(), AuthError::Missing),
        ];
        for (token, expected) in cases {
            assert_eq!(verifier.verify(&token), Err(expected));
        }
        let none = format!(
            "{}.{}.",
            B64.encode(r#"{"alg":"none","typ":"JWT"}"#),
            B64.encode(json!({"sub":"a","exp": now() + 60}).to_string())
        );
        assert!(verifier.verify(&none).is_err());
        let rs = raw_token(
            json!({"alg":"RS256"}),
            json!({"sub":"a","exp": now() + 60}),
            b"s3cret",
        );
        assert_eq!(verifier.verify(&rs), Err(AuthError::AlgorithmNotAccepted));
    }

    #[test]
    fn the_leeway_accepts_a_just_expired_token_and_keeps_its_raw_exp() {
        let mut cfg = config("k");
        cfg.leeway = Duration::from_millis(30_900);
        let verifier = TokenVerifier::new(&cfg).expect("verifier");
        assert_eq!(verifier.leeway(), Duration::from_secs(30));
        let exp = now() - 10;
        let token = raw_token(json!({"alg":"HS256"}), json!({"sub":"a","exp": exp}), b"k");
        assert_eq!(verifier.verify(&token).expect("within leeway").exp, exp);
        let strict = TokenVerifier::new(&config("k")).expect("verifier");
        assert_eq!(strict.verify(&token), Err(AuthError::Expired));
    }

    #[test]
    fn checks_issuer_and_audience_when_configured() {
        let mut cfg = config("k");
        cfg.issuer = Some("reviewpoint".into());
        cfg.audience = Some("wsgate".into());
        let verifier = TokenVerifier::new(&cfg).expect("verifier");
        let hs = json!({"alg":"HS256"});
        let good = raw_token(
            hs.clone(),
            json!({"sub":"a","exp": now()+60,"iss":"reviewpoint","aud":"wsgate"}),
            b"k",
        );
        assert!(verifier.verify(&good).is_ok());
        let bad = raw_token(
            hs,
            json!({"sub":"a","exp": now()+60,"iss":"evil","aud":"wsgate"}),
            b"k",
        );
        assert_eq!(verifier.verify(&bad), Err(AuthError::WrongIssuerOrAudience));
    }
}
