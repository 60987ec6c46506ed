//! The WebSocket layer: the hand-made opening handshake, server frame
//! encoding, the in-memory stream tungstenite runs over, and close reasons.
//!
//! Everything here is socket-free; `connection` owns the sockets.

pub mod close;
pub mod frame;
pub mod io;
pub mod upgrade;

pub use close::CloseReason;
