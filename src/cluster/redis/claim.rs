//! The claim on `--node-id`: the key `wsgate:node-id:{node id}` holds the
//! random instance id of the one process using that node id, with the
//! lease's TTL, renewed with the lease.
//!
//! Two nodes sharing a node id would each drop the other's events as their
//! own echo, so a second process must not join under a claimed id. At
//! start-up a node whose id is claimed watches the claim for up to one TTL:
//! if the holder renews it, the holder is alive and start-up fails; if it
//! expires (the holder died), the node takes it. A node that leaves cleanly
//! deletes its claim, so a restart does not wait. It must not take a claim
//! that is held and being renewed.

use std::sync::LazyLock;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use redis::Script;

use super::{bounded, ClusterError, RedisBackplane, Shared, COMMAND_TIMEOUT};

const CLAIM_PREFIX: &str = "wsgate:node-id:";
/// How often a starting node looks at a claim held by someone else.
const CLAIM_POLL: Duration = Duration::from_millis(100);

/// Takes or renews the claim when it is free or ours: `{1, 0}`; else
/// `{0, the holder's remaining milliseconds}` (-1: no expiry).
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {1, 0}
end
return {0, redis.call('PTTL', KEYS[1])}
",
    )
});

/// Deletes the claim if it is still ours.
static UNCLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
",
    )
});

/// Another running process holds this node id.
#[derive(Debug, thiserror::Error)]
#[error("--node-id {0}: another running node already uses this id on this Redis; give every node its own --node-id")]
pub struct NodeIdTaken(pub String);

impl Shared {
    fn claim_key(&self) -> String {
        format!("{CLAIM_PREFIX}{}", self.node_id)
    }

    /// Takes or renews the claim; `Ok(Some(ttl))` when someone else holds it.
    async fn try_claim(&self, conn: &mut ConnectionManager) -> Result<Option<i64>, ClusterError> {
        let mut invocation = CLAIM.prepare_invoke();
        invocation
            .key(self.claim_key())
            .arg(&*self.instance)
            .arg(self.lease_ttl.as_millis() as u64);
        let (mine, ttl): (i64, i64) =
            bounded(COMMAND_TIMEOUT, invocation.invoke_async(conn)).await?;
        Ok((mine != 1).then_some(ttl))
    }

    /// At join and at every lease refresh: the id must be ours.
    pub(super) async fn claim(&self, conn: &mut ConnectionManager) -> Result<(), ClusterError> {
        match self.try_claim(conn).await? {
            None => Ok(()),
            Some(_) => Err(ClusterError::NodeIdTaken),
        }
    }

    pub(super) async fn unclaim(&self, conn: &mut ConnectionManager) {
        let mut invocation = UNCLAIM.prepare_invoke();
        invocation.key(self.claim_key()).arg(&*self.instance);
        let _ = bounded(COMMAND_TIMEOUT, invocation.invoke_async::<i64>(conn)).await;
    }
}

impl RedisBackplane {
    /// Claims `--node-id` before the node serves. Fails when another live
    /// process holds it; waits (at most one lease TTL) when the holder may
    /// have died. When Redis cannot be reached it returns at once: the
    /// link claims the id when it joins, and stays off the backplane while
    /// the id is held elsewhere.
    pub async fn claim_node_id(&self) -> Result<(), NodeIdTaken> {
        let shared = &self.shared;
        let mut conn = shared.commands.clone();
        let deadline = Instant::now() + shared.lease_ttl + Duration::from_secs(1);
        let mut last_ttl: Option<i64> = None;
        loop {
            let ttl = match shared.try_claim(&mut conn).await {
                Ok(None) => return Ok(()),
                Ok(Some(ttl)) => ttl,
                Err(error) => {
                    tracing::debug!(node_id = %shared.node_id, %error, "cannot claim the node id yet; the backplane link will");
                    return Ok(());
                }
            };
            // Renewed (its TTL went up) or never expiring: the holder lives.
            let renewed = ttl < 0 || last_ttl.is_some_and(|last| ttl > last);
            if renewed || Instant::now() >= deadline {
                return Err(NodeIdTaken(shared.node_id.to_string()));
            }
            if last_ttl.is_none() {
                tracing::warn!(node_id = %shared.node_id, expires_in_ms = ttl, "this node id is claimed in Redis by another process; waiting to see whether it is still alive");
            }
            last_ttl = Some(ttl);
            tokio::time::sleep(CLAIM_POLL).await;
        }
    }
}
