//! Compact connection ids: shard, slot generation and slab key in one u64.
//!
//! The generation makes a reused slab slot a different id, so a message
//! addressed to a closed connection can never reach the next occupant of
//! its slot. The public `connection_id` string is this id in hex.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(u64);

const GENERATION_BITS: u32 = 24;
const GENERATION_MASK: u32 = (1 << GENERATION_BITS) - 1;

impl ConnId {
    pub fn new(shard: usize, generation: u32, key: usize) -> ConnId {
        let shard = (shard as u64 & 0xff) << 56;
        let generation = u64::from(generation & GENERATION_MASK) << 32;
        ConnId(shard | generation | (key as u64 & 0xffff_ffff))
    }

    pub fn shard(self) -> usize {
        (self.0 >> 56) as usize
    }

    pub fn generation(self) -> u32 {
        ((self.0 >> 32) as u32) & GENERATION_MASK
    }

    pub fn key(self) -> usize {
        (self.0 & 0xffff_ffff) as usize
    }

    /// Parses the public form (`c` + 16 hex digits).
    pub fn parse(public: &str) -> Option<ConnId> {
        let hex = public.strip_prefix('c')?;
        if hex.len() != 16 {
            return None;
        }
        u64::from_str_radix(hex, 16).ok().map(ConnId)
    }

    /// Generations wrap within their 24 bits.
    pub fn next_generation(generation: u32) -> u32 {
        generation.wrapping_add(1) & GENERATION_MASK
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{:016x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_round_trips() {
        let id = ConnId::new(7, 0x00ab_cdef, 123_456);
        assert_eq!(
            (id.shard(), id.generation(), id.key()),
            (7, 0x00ab_cdef, 123_456)
        );
        assert_eq!(ConnId::parse(&id.to_string()), Some(id));
        assert_ne!(ConnId::new(7, 1, 5), ConnId::new(7, 2, 5));
        assert_eq!(ConnId::parse("nope"), None);
        assert_eq!(ConnId::parse("c123"), None);
        assert_eq!(ConnId::next_generation(GENERATION_MASK), 0);
    }
}
