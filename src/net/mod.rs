//! Network edge: the TCP listener, TLS termination, and the
//! per-connection HTTP server.

pub mod listener;
pub mod tls;
