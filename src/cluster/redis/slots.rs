//! Cluster-wide per-user slots: the atomic admission script, this node's
//! live slots, and the releases waiting to reach Redis.
//!
//! A release that fails is kept and retried (every [`RELEASE_RETRY`]) for
//! as long as the lease it was taken under lives: a release lost while the
//! lease still counts would hold the user's slot cluster-wide. The pending
//! releases are bounded; past the bound the node asks for a rejoin, whose
//! fresh lease registers only the live slots (the backlog then no longer
//! matters). It must never block: `release` runs in a permit's `Drop`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Script;

use super::{
    bounded, user_key, RedisBackplane, Shared, COMMAND_TIMEOUT, INACTIVE_KEY, LEASE_PREFIX,
};
use crate::limits::admission::{SharedSlots, SlotFuture};
use crate::limits::AdmissionError;

/// Releases waiting for Redis; past this the node rejoins instead.
const MAX_PENDING_RELEASES: usize = 65_536;
/// How often failed releases are tried again.
pub(super) const RELEASE_RETRY: Duration = Duration::from_secs(1);

/// A slot id and its user.
pub(super) type SlotOf = (u64, Arc<str>);

/// This node's live cluster slots and the lease they are counted under.
#[derive(Default)]
pub(super) struct Slots {
    pub lease: Option<Arc<str>>,
    pub live: HashMap<u64, Arc<str>>,
    /// Released slots of `lease` whose field is not yet deleted in Redis.
    pub releases: Vec<SlotOf>,
}

impl Slots {
    /// Installs a fresh lease: releases under the old one are moot (its
    /// fields stop counting once the old lease key is deleted).
    pub fn replace_lease(&mut self, lease: Arc<str>) -> Option<Arc<str>> {
        self.releases.clear();
        self.lease.replace(lease)
    }
}

/// Atomic per-user admission: refuse an inactive user; count the user's
/// slots whose node lease is alive (dropping dead ones); add this slot only
/// when under the limit. Returns 1 admitted, 0 over the limit, -1 inactive.
static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return -1 end
local alive = {}
local count = 0
for _, field in ipairs(redis.call('HKEYS', KEYS[1])) do
  local lease = string.match(field, '^(.*)#[^#]*$')
  local ok = false
  if lease then
    ok = alive[lease]
    if ok == nil then
      ok = redis.call('EXISTS', ARGV[4] .. lease) == 1
      alive[lease] = ok
    end
  end
  if ok then count = count + 1 else redis.call('HDEL', KEYS[1], field) end
end
if count >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[3], 1)
return 1
",
    )
});

impl SharedSlots for RedisBackplane {
    fn acquire<'a>(&'a self, user: &'a Arc<str>, limit: usize) -> SlotFuture<'a> {
        Box::pin(async move {
            let shared = &self.shared;
            let slot = shared.next_slot.fetch_add(1, Ordering::Relaxed);
            let lease = {
                let mut slots = shared.slots.lock();
                slots.live.insert(slot, user.clone());
                slots.lease.clone()
            };
            let lease = match lease {
                Some(lease) if shared.up.load(Ordering::Acquire) => lease,
                // Degraded: counted on this node only until the next join
                // registers every live slot.
                _ => return Ok(slot),
            };
            let mut conn = shared.commands.clone();
            let mut invocation = ADMIT.prepare_invoke();
            invocation
                .key(user_key(user))
                .key(INACTIVE_KEY)
                .arg(&**user)
                .arg(limit)
                .arg(format!("{lease}#{slot}"))
                .arg(LEASE_PREFIX);
            let refused = match bounded(COMMAND_TIMEOUT, invocation.invoke_async::<i64>(&mut conn))
                .await
            {
                Ok(1) => return Ok(slot),
                Ok(0) => AdmissionError::TooManyForUser,
                Ok(-1) => AdmissionError::UserInactive,
                Ok(other) => {
                    tracing::warn!(node_id = %shared.node_id, answer = other, "unexpected answer from the admission script; admitting on local counts");
                    return Ok(slot);
                }
                Err(error) => {
                    shared.metrics.backplane_publish_error();
                    tracing::warn!(node_id = %shared.node_id, %error, "cluster admission unavailable; admitting on this node's counts");
                    return Ok(slot);
                }
            };
            shared.slots.lock().live.remove(&slot);
            Err(refused)
        })
    }

    fn release(&self, user: &Arc<str>, slot: u64) {
        let shared = &self.shared;
        let mut slots = shared.slots.lock();
        slots.live.remove(&slot);
        if slots.lease.is_none() {
            return;
        }
        if slots.releases.len() >= MAX_PENDING_RELEASES {
            drop(slots);
            shared.rejoin.notify_one();
            return;
        }
        slots.releases.push((slot, user.clone()));
        drop(slots);
        shared.releases_ready.notify_one();
    }
}

impl Shared {
    /// Deletes the pending releases' fields; on failure keeps them (while
    /// their lease is still this node's) for the next try.
    pub(super) async fn flush_releases(&self, conn: &mut ConnectionManager) {
        if !self.up.load(Ordering::Acquire) {
            return; // the rejoin's fresh lease makes them moot
        }
        let (lease, batch) = {
            let mut slots = self.slots.lock();
            if slots.releases.is_empty() {
                return;
            }
            let Some(lease) = slots.lease.clone() else {
                slots.releases.clear();
                return;
            };
            (lease, std::mem::take(&mut slots.releases))
        };
        let mut pipe = redis::pipe();
        for (slot, user) in &batch {
            pipe.cmd("HDEL")
                .arg(user_key(user))
                .arg(format!("{lease}#{slot}"))
                .ignore();
        }
        if let Err(error) = bounded(COMMAND_TIMEOUT, pipe.query_async::<()>(conn)).await {
            self.metrics.backplane_publish_error();
            tracing::debug!(node_id = %self.node_id, %error, releases = batch.len(), "cannot release slots in the backplane; retrying");
            let mut slots = self.slots.lock();
            if slots.lease.as_ref() == Some(&lease) {
                let room = MAX_PENDING_RELEASES.saturating_sub(slots.releases.len());
                let overflow = batch.len() > room;
                slots.releases.extend(batch.into_iter().take(room));
                if overflow {
                    self.rejoin.notify_one();
                }
            }
        }
    }
}
