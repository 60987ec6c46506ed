//! The wire protocol of SPEC §3: events, client messages, the server
//! envelope, replies and error codes.
//!
//! Pure data and encoding: no sockets, no connection state, no limits.

pub mod client;
pub mod clock;
pub mod envelope;
pub mod error;
pub mod event;
pub mod ids;
pub mod server;

pub use client::ClientRequest;
pub use error::{ErrorCode, ProtocolError};
pub use event::{Event, EventSet};
pub use ids::MessageIds;
