//! Authentication: verifying JWTs on the handshake and minting them for
//! development. Nothing here logs or stores a token.

pub mod jwt;
pub mod mint;

pub use jwt::{AuthError, Claims, TokenVerifier};
