//! Message ids: unique per message, cheap to make.
//!
//! A random per-generator prefix plus a counter: unique across generators
//! (each shard and the hub own one) and across restarts, with no
//! coordination and no global state.

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

    /// `msg_<prefix>_<counter>`, both in hex.
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
}
