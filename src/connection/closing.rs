//! How a connection closes: which reasons fail it at once, the `Closing`
//! phase it enters, and the close frame it sends.
//!
//! Leaving `Open` is the shard's step, not this module's: the shard's index
//! takes the connection out of the user and subscriber indexes in the same
//! step (see `hub::shard::index`), and only then is the close frame queued
//! here. Nothing here decides *when* a connection closes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Chunk, Connection, Phase};
use crate::metrics::{DropReason, Metrics};
use crate::ws::io::BufferedIo;
use crate::ws::CloseReason;

/// How long a closing connection may take to finish the close handshake.
pub const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Whether a server close for `reason` drops the connection as soon as the
/// close frame is out. RFC 6455 §7.1.7: failing the connection on bad
/// input means closing TCP then, not waiting for a peer that already
/// misbehaves.
pub fn fails_connection(reason: CloseReason) -> bool {
    matches!(
        reason,
        CloseReason::ProtocolViolation | CloseReason::InvalidPayload | CloseReason::MessageTooBig
    )
}

impl Phase {
    /// The phase of a connection leaving `Open` now.
    pub fn closing(drop_when_flushed: bool) -> Phase {
        Phase::Closing {
            deadline: Instant::now() + CLOSE_GRACE,
            drop_when_flushed,
        }
    }
}

impl Connection {
    /// Queues the close frame for `reason` after what is queued (for a slow
    /// consumer, instead of it: the frames not yet started are dropped and
    /// counted, and their number joins the reason's `dropped`), and counts
    /// it in `wsgate_closes_total`. Called once the shard has moved the
    /// connection out of `Open`.
    pub fn send_close(&mut self, reason: CloseReason, metrics: &Metrics, dirty: &mut Vec<usize>) {
        debug_assert!(
            !self.is_open(),
            "the index moves a connection out of Open first"
        );
        let reason = match reason {
            CloseReason::SlowConsumer { dropped } => {
                let discarded = self.outbound.discard_unstarted() as u64;
                metrics.dropped(DropReason::SlowConsumer, discarded);
                CloseReason::SlowConsumer {
                    dropped: dropped + discarded,
                }
            }
            other => other,
        };
        metrics.closed(reason.code());
        let mut io = BufferedIo::new(&[]);
        let _ = self.ws.close(&mut io, Some(reason.frame()));
        self.outbound
            .push_unbounded(Chunk::Control(Arc::from(io.output)));
        tracing::debug!(shard = self.id.shard(), connection = %self.id, code = reason.code(), reason = reason.label(), "closing");
        self.mark_dirty(dirty);
    }

    /// Brings a closing connection's drop deadline forward to `deadline`
    /// (a shutdown must not wait out every connection's full grace).
    pub fn close_by(&mut self, deadline: Instant) {
        if let Phase::Closing { deadline: d, .. } = &mut self.phase {
            *d = (*d).min(deadline);
        }
    }
}
