//! A connection's side of history (SPEC-v2 §2): the hold of a `resume=1`
//! connection, the answer to `resume` and to a positioned `subscribe`
//! (positions checked against the store, replays, cached last values), and
//! the per-stream rule that a client never sees an offset twice or out of
//! order.
//!
//! State lives in a boxed [`Recovery`] that exists only once a connection
//! asked for any of this (a `resume=1` upgrade, a positioned subscribe), so
//! a v1 connection pays one null pointer. Reads of the store happen here,
//! on the shard thread, under the store's own short locks; nothing here
//! touches another connection or the shard's indexes (the subscription
//! change goes back to the shard as [`Then::Subscriptions`]).

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Map, Value};

use super::message::{Context, Handled, Then};
use super::{Chunk, Connection, Overflow};
use crate::history::{self, recover, Epoch, History, NotRecovered, Position, StreamPosition};
use crate::metrics::{DropReason, Metrics, OutKind, RecoveryResult};
use crate::protocol::client::{Positioned, ResumeRequest, SubscribeFrom};
use crate::protocol::envelope::mark_cached;
use crate::protocol::{server, Event, EventSet};

/// Events offered while held, in arrival order, within the byte budget.
struct Hold {
    until: Instant,
    events: Vec<(Arc<[u8]>, Option<StreamPosition>)>,
    bytes: usize,
}

/// The highest offset sent on one stream (in its epoch).
struct Sent {
    name: Arc<str>,
    epoch: Epoch,
    offset: u64,
}

#[derive(Default)]
pub struct Recovery {
    hold: Option<Hold>,
    sent: Vec<Sent>,
}

impl Recovery {
    /// Whether an event at `position` may go out: not at or below the
    /// highest offset already sent on its stream in the same epoch.
    fn fresh(&self, position: &StreamPosition) -> bool {
        !self.sent.iter().any(|s| {
            s.name == position.name && s.epoch == position.epoch && s.offset >= position.offset
        })
    }

    fn note(&mut self, name: &Arc<str>, epoch: Epoch, offset: u64) {
        match self.sent.iter_mut().find(|s| s.name == *name) {
            Some(sent) if sent.epoch == epoch => sent.offset = sent.offset.max(offset),
            Some(sent) => {
                sent.epoch = epoch;
                sent.offset = offset;
            }
            None => self.sent.push(Sent {
                name: name.clone(),
                epoch,
                offset,
            }),
        }
    }
}

/// What a position lookup found on one stream.
struct Looked {
    entry: Map<String, Value>,
    /// Given positions only: whether it recovered.
    recovered: Option<bool>,
    reason: Option<NotRecovered>,
    replay: Vec<history::Stored>,
    top: Option<(Epoch, u64)>,
}

fn reason_result(reason: NotRecovered) -> RecoveryResult {
    match reason {
        NotRecovered::HistoryDisabled => RecoveryResult::HistoryDisabled,
        NotRecovered::Unavailable => RecoveryResult::Unavailable,
        NotRecovered::EpochChanged => RecoveryResult::EpochChanged,
        NotRecovered::OffsetAhead => RecoveryResult::OffsetAhead,
        NotRecovered::TooMany => RecoveryResult::TooMany,
        NotRecovered::TooOld => RecoveryResult::TooOld,
    }
}

/// The §2.4 rule for one stream, reading metadata and the events to
/// replay in one step of the store.
fn look_up(history: &History, name: &str, given: Option<&Position>) -> Looked {
    let (meta, outcome) = match (history.store(), given) {
        (None, _) => (None, given.map(|_| Err(history.unreadable()))),
        (Some(store), None) => (store.meta(name), None),
        (Some(store), Some(position)) => {
            let max = history.max_recovery();
            let read = store.read(
                name,
                position.offset.saturating_add(1),
                usize::try_from(max).unwrap_or(usize::MAX),
            );
            let meta = read.as_ref().map(|(meta, _)| *meta);
            let outcome = recover(position, meta, max).and_then(|_| {
                let events = read.map(|(_, events)| events).unwrap_or_default();
                // The read is one step with the metadata, so this holds;
                // were it not, say so rather than replay with a gap.
                let expected = meta.map_or(0, |m| m.top - position.offset);
                if events.len() as u64 == expected {
                    Ok(events)
                } else {
                    Err(NotRecovered::TooOld)
                }
            });
            (meta, Some(outcome.map_err(Some)))
        }
    };
    let mut entry = Map::new();
    match meta {
        Some(meta) => {
            entry.insert("epoch".into(), json!(meta.epoch.as_str()));
            entry.insert("offset".into(), json!(meta.top));
        }
        None => {
            entry.insert("epoch".into(), Value::Null);
            entry.insert("offset".into(), json!(0));
        }
    }
    let top = meta.map(|m| (m.epoch, m.top));
    let (recovered, reason, replay) = match outcome {
        None => (None, None, Vec::new()),
        Some(Ok(events)) => {
            entry.insert("recovered".into(), json!(true));
            entry.insert("replayed".into(), json!(events.len()));
            (Some(true), None, events)
        }
        Some(Err(reason)) => {
            let reason = reason.unwrap_or(NotRecovered::HistoryDisabled);
            entry.insert("recovered".into(), json!(false));
            entry.insert("reason".into(), json!(reason.code()));
            entry.insert("replayed".into(), json!(0));
            (Some(false), Some(reason), Vec::new())
        }
    };
    Looked {
        entry,
        recovered,
        reason,
        replay,
        top,
    }
}

impl Connection {
    /// Starts holding deliveries until the first message or `until`.
    pub fn hold(&mut self, until: Instant) {
        self.recovery.get_or_insert_with(Default::default).hold = Some(Hold {
            until,
            events: Vec::new(),
            bytes: 0,
        });
    }

    /// Events waiting in the hold (counted as dropped if it never ends).
    pub(super) fn held_messages(&self) -> usize {
        self.recovery
            .as_ref()
            .and_then(|r| r.hold.as_ref())
            .map_or(0, |h| h.events.len())
    }

    pub fn is_held(&self) -> bool {
        self.recovery.as_ref().is_some_and(|r| r.hold.is_some())
    }

    /// The hold outlived `--resume-timeout`.
    pub fn hold_expired(&self, now: Instant) -> bool {
        self.recovery
            .as_ref()
            .and_then(|r| r.hold.as_ref())
            .is_some_and(|h| now >= h.until)
    }

    /// Offers a delivery: held while the hold lasts (within the byte
    /// budget, counted with the queue), skipped when its stream already got
    /// this offset or a later one, queued otherwise. `Err`: over budget,
    /// close with 4008.
    pub fn offer(
        &mut self,
        frame: &Arc<[u8]>,
        position: Option<&StreamPosition>,
        limit: usize,
        dirty: &mut Vec<usize>,
    ) -> Result<(), Overflow> {
        let Some(recovery) = self.recovery.as_deref_mut() else {
            return self.queue(Chunk::Shared(frame.clone()), limit, dirty);
        };
        if let Some(hold) = &mut recovery.hold {
            if hold.bytes + frame.len() + self.outbound.queued_bytes() > limit {
                return Err(Overflow);
            }
            hold.bytes += frame.len();
            hold.events.push((frame.clone(), position.cloned()));
            return Ok(());
        }
        if let Some(position) = position {
            if !recovery.fresh(position) {
                return Ok(());
            }
            recovery.note(&position.name, position.epoch, position.offset);
        }
        self.queue(Chunk::Shared(frame.clone()), limit, dirty)
    }

    /// Ends the hold: the held events follow, through the skip rule.
    /// `Err` when one does not fit (close with 4008): the caller counts
    /// that one as dropped, and the ones after it are counted here.
    pub fn end_hold(
        &mut self,
        limit: usize,
        dirty: &mut Vec<usize>,
        metrics: &Metrics,
    ) -> Result<(), Overflow> {
        let Some(hold) = self.recovery.as_deref_mut().and_then(|r| r.hold.take()) else {
            return Ok(());
        };
        let mut events = hold.events.into_iter();
        while let Some((frame, position)) = events.next() {
            if self.offer(&frame, position.as_ref(), limit, dirty).is_err() {
                let rest = events.len() as u64;
                if rest > 0 {
                    metrics.dropped(DropReason::SlowConsumer, rest);
                }
                return Err(Overflow);
            }
        }
        Ok(())
    }

    /// Queues a replayed or cached frame and records its offset.
    fn send_recorded(
        &mut self,
        frame: Arc<[u8]>,
        name: &Arc<str>,
        epoch: Epoch,
        offset: u64,
        cx: &mut Context,
    ) -> Result<(), Overflow> {
        self.recovery
            .get_or_insert_with(Default::default)
            .note(name, epoch, offset);
        self.queue(Chunk::Shared(frame), cx.limits.max_queued_bytes, cx.dirty)
    }

    /// Answers `resume` or a positioned `subscribe`: the reply with
    /// `streams`, then replays stream by stream, then cached last values,
    /// then (a hold ends here) the held events; the new subscriptions go
    /// to the shard.
    pub(super) fn on_positioned(
        &mut self,
        request: Positioned,
        reply_to: Option<&Value>,
        cx: &mut Context,
    ) -> Handled {
        let (is_resume, entries, events, cache) = match request {
            Positioned::Resume(ResumeRequest {
                user,
                broadcast,
                mut events,
                cache,
            }) => {
                events.sort_by_key(|(event, _)| event.as_str());
                let mut entries = vec![
                    (history::user_stream(self.user()), user),
                    (Arc::from(history::BROADCAST), broadcast),
                ];
                entries.extend(
                    events
                        .iter()
                        .map(|(event, p)| (history::event_stream(event.as_str()), p.clone())),
                );
                let events: Vec<Event> = events.into_iter().map(|(e, _)| e).collect();
                (true, entries, events, cache)
            }
            Positioned::Subscribe(SubscribeFrom {
                events,
                since,
                cache,
            }) => {
                let mut entries: Vec<(Arc<str>, Option<Position>)> = Vec::new();
                let mut names: Vec<Event> = events.clone();
                names.sort_by_key(|e| e.as_str());
                names.dedup();
                for event in names {
                    let given = since
                        .iter()
                        .find(|(e, _)| *e == event)
                        .map(|(_, p)| p.clone());
                    entries.push((history::event_stream(event.as_str()), given));
                }
                (false, entries, events, cache)
            }
        };
        let next = self
            .subscriptions
            .union(events.iter().copied().collect::<EventSet>());
        let mut streams = Map::new();
        let mut all_recovered = true;
        let mut looked_up = Vec::with_capacity(entries.len());
        for (name, given) in entries {
            let looked = look_up(cx.history, &name, given.as_ref());
            if looked.recovered == Some(true) {
                cx.metrics.recovery(RecoveryResult::Recovered);
            }
            if let Some(reason) = looked.reason {
                all_recovered = false;
                cx.metrics.recovery(reason_result(reason));
            }
            streams.insert(name.to_string(), Value::Object(looked.entry.clone()));
            looked_up.push((name, given, looked));
        }
        let reply = if is_resume {
            server::resumed(cx.ids, all_recovered, &streams, next, reply_to)
        } else {
            server::subscription_confirmed_with_streams(cx.ids, &events, next, &streams, reply_to)
        };
        let kind = if is_resume {
            OutKind::Resumed
        } else {
            OutKind::SubscriptionConfirmed
        };
        let mut handled = Handled {
            overflowed: self.reply(reply, kind, cx),
            then: Some(Then::Subscriptions(next)),
        };
        if handled.overflowed {
            return handled;
        }
        handled.overflowed = self.send_history(looked_up, cache, cx).is_err()
            || self
                .end_hold(cx.limits.max_queued_bytes, cx.dirty, cx.metrics)
                .is_err();
        handled
    }

    /// Replays (stream by stream, offset order), then cached last values
    /// for the streams not recovered when `cache` was asked.
    fn send_history(
        &mut self,
        looked_up: Vec<(Arc<str>, Option<Position>, Looked)>,
        cache: bool,
        cx: &mut Context,
    ) -> Result<(), Overflow> {
        let mut replayed = 0;
        for (name, _, looked) in &looked_up {
            let Some((epoch, top)) = looked.top else {
                continue;
            };
            if looked.recovered == Some(true) {
                for event in &looked.replay {
                    self.send_recorded(event.frame.clone(), name, epoch, event.offset, cx)?;
                    replayed += 1;
                }
                // Recovered up to the top: the client has every offset up
                // to it, so an in-flight copy of one is a duplicate.
                self.recovery
                    .get_or_insert_with(Default::default)
                    .note(name, epoch, top);
            }
        }
        cx.metrics.replayed(replayed);
        let (true, Some(store)) = (cache, cx.history.store()) else {
            return Ok(());
        };
        let mut cached = 0;
        for (name, _, looked) in &looked_up {
            let (Some((epoch, _)), false) = (looked.top, looked.recovered == Some(true)) else {
                continue;
            };
            for value in store.last_values(name) {
                let frame: Arc<[u8]> = Arc::from(mark_cached(&value.frame));
                self.send_recorded(frame, name, epoch, value.offset, cx)?;
                cached += 1;
            }
        }
        cx.metrics.last_values_sent(cached);
        Ok(())
    }
}
