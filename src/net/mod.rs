//! Network edge: the TCP listener and the per-connection HTTP server.

pub mod listener;
