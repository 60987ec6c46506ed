//! Message ids: unique per message, cheap to make.
//!
//! Format: `msg_`, then a random 32-bit per-generator prefix as exactly 8
//! lowercase hex digits, then the generator's counter (from 1) in hex with
//! no padding and no separator, e.g. `msg_4f1c2a9b2a`. The fixed-width
//! prefix keeps ids from different generators (each shard and the hub own
//! one) and from restarts apart without coordination or global state, as
//! long as two generators do not draw the same prefix (1 in 2^32 per pair).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct MessageIds {
    prefix: u32,
    next: AtomicU64,
}

impl MessageIds {
    pub fn new() -> Self {
        MessageIds {
            prefix: rand::random(),
            next: AtomicU64::new(1),
        }
    }

    /// `msg_` + the prefix as 8 hex digits + the counter in hex.
    pub fn next_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("msg_{:08x}{n:x}", self.prefix)
    }
}

impl Default for MessageIds {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ids_are_unique_and_non_empty() {
        let a = MessageIds::new();
        let b = MessageIds::new();
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            assert!(seen.insert(a.next_id()));
            assert!(seen.insert(b.next_id()));
        }
        assert!(seen
            .iter()
            .all(|id| id.starts_with("msg_") && id.len() > 12));
    }

    #[test]
    fn id_is_fixed_width_hex_prefix_then_hex_counter() {
        let ids = MessageIds::new();
        let prefix = format!("{:08x}", ids.prefix);
        for _ in 1..16 {
            ids.next_id();
        }
        // The 16th id: counter 16 is `10` in hex, right after the prefix.
        assert_eq!(ids.next_id(), format!("msg_{prefix}10"));
    }
}
