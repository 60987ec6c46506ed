//! The live nodes of the cluster, for `GET /api/v1/stats` (and so the
//! console): the node ids of the unexpired leases, read with SCAN and
//! reused for a few seconds. Never on a delivery path.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{bounded, Shared, COMMAND_TIMEOUT, LEASE_PREFIX};

/// How long a node list is reused: the console polls stats every few
/// seconds, and a SCAN walks every key of the cluster.
const NODES_FRESH: Duration = Duration::from_secs(3);
/// Keys a SCAN call looks at per round trip.
const SCAN_COUNT: usize = 1000;

impl Shared {
    /// The node ids of the live leases (`wsgate:node:<node-id>/<random>`),
    /// read with SCAN within one command timeout; `None` when Redis is away.
    pub(super) async fn live_nodes(&self) -> Option<Vec<String>> {
        if !self.up.load(Ordering::Acquire) {
            return None;
        }
        if let Some((at, nodes)) = &*self.nodes_seen.lock() {
            if at.elapsed() < NODES_FRESH {
                return Some(nodes.clone());
            }
        }
        let mut conn = self.commands.clone();
        let scan = async {
            let mut nodes = BTreeSet::new();
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(format!("{LEASE_PREFIX}*"))
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .query_async(&mut conn)
                    .await?;
                nodes.extend(keys.iter().filter_map(|key| {
                    let lease = key.strip_prefix(LEASE_PREFIX)?;
                    Some(
                        lease
                            .rsplit_once('/')
                            .map_or(lease, |(node, _)| node)
                            .to_owned(),
                    )
                }));
                if next == 0 {
                    return Ok(nodes.into_iter().collect::<Vec<String>>());
                }
                cursor = next;
            }
        };
        let nodes = bounded(COMMAND_TIMEOUT, scan).await.ok()?;
        *self.nodes_seen.lock() = Some((Instant::now(), nodes.clone()));
        Some(nodes)
    }
}
