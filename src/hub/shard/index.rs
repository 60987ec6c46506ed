//! The shard's two lookup indexes over its slab: open connections per
//! user, and open connections subscribed to each event.
//!
//! Owns one invariant: **a slab key is indexed only while its connection
//! is open.** A connection enters with [`Index::insert`] when it is
//! registered, and the only way out of `Phase::Open` is [`Index::close`],
//! which takes it out of both indexes in the same step. Subscription
//! changes go through [`Index::set_subscriptions`], which does nothing for
//! a connection that is no longer open, so a connection closed while its
//! own message was being handled (its reply overflowed its queue) cannot be
//! put back. A stale key would deliver to a vacant slot or, once the slot
//! is reused, to someone else's connection. This module does not decide
//! when a connection closes or what is delivered.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::connection::{Connection, Phase};
use crate::protocol::{Event, EventSet};

pub(super) struct Index {
    /// Open connections per user (slab keys).
    by_user: HashMap<Arc<str>, Vec<usize>>,
    /// Open connections subscribed to each event, by `Event::index`.
    subscribers: Vec<HashSet<usize>>,
}

impl Index {
    pub(super) fn new() -> Index {
        Index {
            by_user: HashMap::new(),
            subscribers: (0..Event::COUNT).map(|_| HashSet::new()).collect(),
        }
    }

    /// Indexes a connection just registered (open, no subscriptions yet).
    pub(super) fn insert(&mut self, key: usize, conn: &Connection) {
        debug_assert!(conn.is_open(), "only an open connection is indexed");
        debug_assert!(conn.subscriptions.is_empty());
        // Most users hold one connection: an exact-size list keeps the
        // per-connection footprint down (the target is 2 KiB per idle connection).
        let keys = self
            .by_user
            .entry(conn.user().clone())
            .or_insert_with(|| Vec::with_capacity(1));
        debug_assert!(!keys.contains(&key), "key {key} indexed twice");
        keys.push(key);
    }

    /// Sets an open connection's subscriptions and the subscriber index
    /// with them; `false` (and nothing changes) when it is closing.
    pub(super) fn set_subscriptions(
        &mut self,
        key: usize,
        conn: &mut Connection,
        next: EventSet,
    ) -> bool {
        if !conn.is_open() {
            return false;
        }
        let previous = conn.subscriptions;
        conn.subscriptions = next;
        for event in next.difference(previous).iter() {
            self.subscribers[event.index()].insert(key);
        }
        for event in previous.difference(next).iter() {
            self.subscribers[event.index()].remove(&key);
        }
        true
    }

    /// Moves a connection out of `Phase::Open` into `phase`, taking it out
    /// of both indexes first; for a connection already closing only the
    /// phase changes.
    pub(super) fn close(&mut self, key: usize, conn: &mut Connection, phase: Phase) {
        debug_assert!(phase != Phase::Open, "close needs a closing phase");
        if conn.is_open() {
            for event in conn.subscriptions.iter() {
                let removed = self.subscribers[event.index()].remove(&key);
                debug_assert!(removed, "key {key} missing from {}", event.as_str());
            }
            let user = conn.user();
            let keys = self.by_user.get_mut(user);
            debug_assert!(keys.as_ref().is_some_and(|k| k.contains(&key)));
            if let Some(keys) = keys {
                keys.retain(|&k| k != key);
                if keys.is_empty() {
                    self.by_user.remove(user);
                }
            }
        }
        conn.phase = phase;
    }

    /// The user's open connections.
    pub(super) fn user(&self, user: &str) -> &[usize] {
        self.by_user.get(user).map_or(&[], Vec::as_slice)
    }

    /// The open connections subscribed to `event`.
    pub(super) fn subscribers(&self, event: Event) -> &HashSet<usize> {
        &self.subscribers[event.index()]
    }

    /// Users with at least one open connection.
    pub(super) fn users(&self) -> usize {
        self.by_user.len()
    }
}
