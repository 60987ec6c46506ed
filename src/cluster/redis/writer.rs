//! The writer task: owns the outbound queues. It numbers and publishes
//! events in pipelined batches, deletes released slots (retrying failures),
//! and runs (de)activations and disconnect messages, keeping the
//! (de)activations made while Redis was away to replay them on rejoin.
//!
//! Every event it cannot hand to Redis is counted as dropped (reason
//! `backplane_down`). It must never be waited on by a publish.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::slots::RELEASE_RETRY;
use super::{bounded, Control, QueuedEvent, Shared, CHANNEL, COMMAND_TIMEOUT, INACTIVE_KEY};
use crate::cluster::wire;
use crate::cluster::InboundPort;
use crate::metrics::DropReason;

/// Events sent in one pipeline.
const BATCH: usize = 256;
/// Deactivations kept while Redis is away.
const PENDING_CONTROL_MAX: usize = 4096;

impl Shared {
    pub(super) async fn run_writer<P: InboundPort>(
        self: Arc<Self>,
        mut events: mpsc::Receiver<QueuedEvent>,
        mut control: mpsc::Receiver<Control>,
        port: Arc<P>,
        shutdown: CancellationToken,
    ) {
        let mut conn = self.commands.clone();
        let mut pending: VecDeque<Control> = VecDeque::new();
        let mut batch: Vec<QueuedEvent> = Vec::with_capacity(BATCH);
        // This process's event numbering: receivers count the gaps.
        let mut next_seq: u64 = 1;
        let mut retry = tokio::time::interval(RELEASE_RETRY);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = self.joined.notified() => {
                    // Replay what was decided while Redis was away, and
                    // re-apply it here (joining reloaded the shared set).
                    while let Some(op) = pending.pop_front() {
                        match &op {
                            Control::Deactivate(user) => port.restore_local_decision(user, true),
                            Control::Activate(user) => port.restore_local_decision(user, false),
                            Control::Send(_) => {}
                        }
                        if let Err(op) = self.run_control(op, &mut conn).await {
                            pending.push_front(op);
                            break;
                        }
                    }
                }
                _ = self.releases_ready.notified() => self.flush_releases(&mut conn).await,
                _ = retry.tick() => self.flush_releases(&mut conn).await,
                Some(op) = control.recv() => {
                    if let Err(op) = self.run_control(op, &mut conn).await {
                        if pending.len() >= PENDING_CONTROL_MAX {
                            pending.pop_front();
                            tracing::warn!(node_id = %self.node_id, "too many deactivations waiting for the backplane; dropping the oldest");
                        }
                        pending.push_back(op);
                    }
                }
                received = events.recv_many(&mut batch, BATCH) => {
                    if received == 0 {
                        break;
                    }
                    self.publish_batch(&mut batch, &mut next_seq, &mut conn).await;
                }
            }
        }
    }

    async fn publish_batch(
        &self,
        batch: &mut Vec<QueuedEvent>,
        next_seq: &mut u64,
        conn: &mut ConnectionManager,
    ) {
        let bytes: usize = batch.iter().map(|e| e.payload.len()).sum();
        if self.up.load(Ordering::Acquire) {
            let mut pipe = redis::pipe();
            for event in batch.iter() {
                let numbered =
                    wire::sequenced(&self.echo_prefix, &event.payload, self.epoch, *next_seq);
                *next_seq += 1;
                pipe.cmd("PUBLISH")
                    .arg(CHANNEL)
                    .arg(numbered.as_deref().unwrap_or(&event.payload))
                    .ignore();
            }
            match bounded(COMMAND_TIMEOUT, pipe.query_async::<()>(conn)).await {
                Ok(()) => {
                    for event in batch.drain(..) {
                        self.metrics.backplane_published(event.queued_at.elapsed());
                    }
                }
                Err(error) => {
                    tracing::debug!(node_id = %self.node_id, %error, events = batch.len(), "backplane publish failed; those events reached this node only");
                    for _ in 0..batch.len() {
                        self.metrics.backplane_publish_error();
                    }
                }
            }
        }
        let undelivered = batch.len() as u64;
        batch.clear();
        if undelivered > 0 {
            self.metrics
                .backplane_dropped(DropReason::BackplaneDown, undelivered);
        }
        self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Runs a command whose failure is only counted (nothing to retry).
    async fn best_effort(&self, call: redis::Cmd, conn: &mut ConnectionManager) {
        if bounded(COMMAND_TIMEOUT, call.query_async::<()>(conn))
            .await
            .is_err()
        {
            self.metrics.backplane_publish_error();
        }
    }

    /// Runs one control operation; gives back deactivations and
    /// activations that could not reach Redis, to replay on rejoin.
    async fn run_control(&self, op: Control, conn: &mut ConnectionManager) -> Result<(), Control> {
        let up = self.up.load(Ordering::Acquire);
        let (set_cmd, user, message) = match &op {
            Control::Send(message) => {
                if up {
                    let mut call = redis::cmd("PUBLISH");
                    call.arg(CHANNEL).arg(message);
                    self.best_effort(call, conn).await;
                }
                return Ok(());
            }
            Control::Deactivate(user) => {
                ("SADD", user, wire::encode_deactivate(&self.node_id, user))
            }
            Control::Activate(user) => ("SREM", user, wire::encode_activate(&self.node_id, user)),
        };
        if !up {
            return Err(op);
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd(set_cmd)
            .arg(INACTIVE_KEY)
            .arg(user)
            .ignore()
            .cmd("PUBLISH")
            .arg(CHANNEL)
            .arg(message)
            .ignore();
        match bounded(COMMAND_TIMEOUT, pipe.query_async::<()>(conn)).await {
            Ok(()) => Ok(()),
            Err(error) => {
                self.metrics.backplane_publish_error();
                tracing::warn!(node_id = %self.node_id, %error, "cannot record a (de)activation in the backplane; will retry when it is back");
                Err(op)
            }
        }
    }
}
