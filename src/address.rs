//! Addresses: who a published event is for ([`Target`]) and the compact
//! connection ids ([`ConnId`]: node tag, shard, slot generation, slab key)
//! that name one connection across the cluster.
//!
//! A leaf: the hub, the shards, the connection and the cluster backplane
//! all speak these types, so none of them has to import another to name a
//! recipient. It must hold no state beyond the per-process nonce. It also
//! reads ids as JSON carries them ([`JsonId`]: a string or a number), for
//! the server API's bodies and the token's `sub`.
//!
//! The generation makes a reused slab slot a different id, so a message
//! addressed to a closed connection can never reach the next occupant of
//! its slot. The node tag (a hash of `--node-id` and of a random
//! per-process nonce) makes ids from different nodes of a cluster
//! different, so a `connections: [...]` target reaches only the node that
//! owns each id, and makes ids from different runs of the same node
//! different, so a backend holding an id from before a restart can never
//! reach whoever gets that slot after it. The public `connection_id`
//! string is `c` + 8 hex digits of node tag + 16 hex digits of the rest.
//!
//! It must not be used to recognise a node across restarts: the tag is
//! only stable within one process.

use std::fmt;
use std::sync::LazyLock;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A user or connection id as JSON carries it: a string, or a number (kept
/// as its JSON text, `42` → `"42"`). Emptiness is the caller's rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonId(pub String);

impl<'de> Deserialize<'de> for JsonId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<JsonId, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(text) => Ok(JsonId(text)),
            Value::Number(number) => Ok(JsonId(number.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "an id must be a string or a number, not {other}"
            ))),
        }
    }
}

/// Who receives a published event.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// The connections subscribed to the event's type.
    Subscribers,
    /// Every connection.
    All,
    /// Every connection of these users plus these connections (by public
    /// id), each at most once; unknown ids are skipped.
    Selected {
        users: Vec<String>,
        connections: Vec<String>,
    },
}

impl Target {
    /// Every connection of each of these users.
    pub fn users(users: Vec<String>) -> Target {
        Target::Selected {
            users,
            connections: Vec::new(),
        }
    }

    /// These connections, by `connection_id`.
    pub fn connections(connections: Vec<String>) -> Target {
        Target::Selected {
            users: Vec::new(),
            connections,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    node: u32,
    bits: u64,
}

const GENERATION_BITS: u32 = 24;
const GENERATION_MASK: u32 = (1 << GENERATION_BITS) - 1;
const PUBLIC_LEN: usize = 1 + 8 + 16;

/// Drawn once per process: a restarted node gets a new tag.
static PROCESS_NONCE: LazyLock<u64> = LazyLock::new(rand::random);

/// The tag of a node id in this process's connection ids: 32-bit FNV-1a
/// of the id's bytes, then of the process nonce.
pub fn node_tag(node_id: &str) -> u32 {
    tag_with_nonce(node_id, *PROCESS_NONCE)
}

fn tag_with_nonce(node_id: &str, nonce: u64) -> u32 {
    node_id
        .bytes()
        .chain(nonce.to_le_bytes())
        .fold(0x811c_9dc5u32, |hash, byte| {
            (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
        })
}

impl ConnId {
    pub fn new(node: u32, shard: usize, generation: u32, key: usize) -> ConnId {
        let shard = (shard as u64 & 0xff) << 56;
        let generation = u64::from(generation & GENERATION_MASK) << 32;
        ConnId {
            node,
            bits: shard | generation | (key as u64 & 0xffff_ffff),
        }
    }

    /// The tag of the node that owns this connection.
    pub fn node(self) -> u32 {
        self.node
    }

    pub fn shard(self) -> usize {
        (self.bits >> 56) as usize
    }

    #[cfg(test)]
    pub fn generation(self) -> u32 {
        ((self.bits >> 32) as u32) & GENERATION_MASK
    }

    pub fn key(self) -> usize {
        (self.bits & 0xffff_ffff) as usize
    }

    /// Parses the public form (`c` + 24 hex digits), whatever its node.
    pub fn parse(public: &str) -> Option<ConnId> {
        if public.len() != PUBLIC_LEN || !public.is_ascii() {
            return None;
        }
        let hex = public.strip_prefix('c')?;
        let node = u32::from_str_radix(&hex[..8], 16).ok()?;
        let bits = u64::from_str_radix(&hex[8..], 16).ok()?;
        Some(ConnId { node, bits })
    }

    /// Generations wrap within their 24 bits.
    pub fn next_generation(generation: u32) -> u32 {
        generation.wrapping_add(1) & GENERATION_MASK
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "c{:08x}{:016x}", self.node, self.bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_and_round_trips() {
        let id = ConnId::new(0xdead_beef, 7, 0x00ab_cdef, 123_456);
        assert_eq!(
            (id.node(), id.shard(), id.generation(), id.key()),
            (0xdead_beef, 7, 0x00ab_cdef, 123_456)
        );
        assert_eq!(id.to_string().len(), PUBLIC_LEN);
        assert_eq!(ConnId::parse(&id.to_string()), Some(id));
        assert_ne!(ConnId::new(1, 7, 1, 5), ConnId::new(1, 7, 2, 5));
        assert_ne!(ConnId::new(1, 7, 1, 5), ConnId::new(2, 7, 1, 5));
        assert_eq!(ConnId::parse("nope"), None);
        assert_eq!(ConnId::parse("c123"), None);
        assert_eq!(ConnId::parse("c0000000g0000000000000000"), None);
        assert_eq!(ConnId::parse("cé00000000000000000000000"), None);
        assert_eq!(ConnId::next_generation(GENERATION_MASK), 0);
    }

    #[test]
    fn node_tags_differ_per_node_and_per_process() {
        assert_ne!(node_tag("node-a"), node_tag("node-b"));
        assert_eq!(node_tag("x"), node_tag("x"));
        // Another process (another nonce) with the same --node-id.
        assert_ne!(tag_with_nonce("x", 1), tag_with_nonce("x", 2));
    }
}
