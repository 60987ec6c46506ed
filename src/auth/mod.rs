//! Authentication: verifying JWTs on the handshake (with the leeway),
//! minting them for development, parsing `Authorization: Bearer`, and
//! checking the server API key. Nothing here logs or stores a token.

pub mod bearer;
pub mod jwt;
pub mod mint;

pub use bearer::bearer_token;
pub use jwt::{AuthError, Claims, TokenVerifier};

use subtle::ConstantTimeEq;

/// True when `presented` is the server API key. Constant-time in the
/// contents, so timing reveals at most the length.
pub fn api_key_matches(presented: &str, expected: &str) -> bool {
    presented.as_bytes().ct_eq(expected.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::api_key_matches;

    #[test]
    fn api_keys_match_exactly() {
        assert!(api_key_matches("key", "key"));
        assert!(!api_key_matches("key", "kez"));
        assert!(!api_key_matches("key", "keys"));
        assert!(!api_key_matches("", "key"));
    }
}
