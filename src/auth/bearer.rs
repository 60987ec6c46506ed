//! The `Authorization: Bearer <credentials>` header, parsed once for the
//! handshake's token and the server API's key.
//!
//! The scheme is matched case-insensitively (RFC 7235 §2.1: `bearer`,
//! `Bearer` and `BEARER` are one scheme); the credentials are returned
//! as sent, without surrounding spaces. It does not judge the credentials.

/// The credentials of a `Bearer` authorization value; `None` for another
/// scheme or no scheme at all.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, credentials) = authorization.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim_matches(' '))
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn the_scheme_is_case_insensitive_and_the_credentials_exact() {
        for value in [
            "Bearer abc.def",
            "bearer abc.def",
            "BEARER abc.def",
            "bEaReR  abc.def ",
        ] {
            assert_eq!(bearer_token(value), Some("abc.def"), "{value:?}");
        }
        assert_eq!(bearer_token("Bearer "), Some(""));
        assert_eq!(bearer_token("Basic YTpi"), None);
        assert_eq!(bearer_token("Bearerabc"), None);
        assert_eq!(bearer_token("abc"), None);
        assert_eq!(bearer_token("Bearer Key-With-Case"), Some("Key-With-Case"));
    }
}
