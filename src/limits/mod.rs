//! Limits: admission before the upgrade (capacity, per-user slots,
//! deactivation) and the per-user sliding-window message rate limiter.
//! Pure data structures; no sockets.

pub mod admission;
pub mod connect_rate;
pub mod rate;

pub use admission::{Admission, AdmissionError, ConnectionPermit};
pub use connect_rate::ConnectRateLimiter;
pub use rate::{RateDecision, RateLimiter};
