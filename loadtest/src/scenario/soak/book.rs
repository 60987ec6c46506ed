//! The soak's accounting of the base population: the subscribable events,
//! who each broadcast was addressed to ([`To`], by seq), and the [`Book`] of
//! what every base connection received against that, plus its ping round
//! trips. Pure bookkeeping: no sockets, no clocks.

use std::collections::BTreeMap;

use crate::ctl::tally;
use crate::seq::{Mark, SeqTracker};
use crate::stats::{self, Hist};

/// The subscribable events (SPEC section 3).
pub const EVENTS: [&str; 12] = [
    "upload.progress",
    "upload.completed",
    "upload.error",
    "upload.cancelled",
    "review.updated",
    "review.created",
    "review.deleted",
    "system.notification",
    "system.maintenance",
    "user.status_changed",
    "file.processing",
    "file.ready",
];

/// Who a broadcast was addressed to (indexed by its seq).
#[derive(Clone, Debug, PartialEq)]
pub enum To {
    /// Subscribers of `EVENTS[i]`.
    Subscribers(usize),
    /// These base connections' users (each base connection has its own user).
    Users(Vec<u32>),
    All,
    /// The server did not accept it: nobody should count on it.
    Failed,
}

/// Base connection `conn` is subscribed to event `ev`: a fixed third of the
/// population per event, four events per connection.
pub fn base_subscribed(conn: usize, ev: usize) -> bool {
    (conn + ev).is_multiple_of(3)
}

pub fn base_events(conn: usize) -> Vec<&'static str> {
    (0..EVENTS.len())
        .filter(|e| base_subscribed(conn, *e))
        .map(|e| EVENTS[e])
        .collect()
}

impl To {
    pub fn expects(&self, conn: usize) -> bool {
        match self {
            To::Subscribers(ev) => base_subscribed(conn, *ev),
            To::Users(list) => list.contains(&(conn as u32)),
            To::All => true,
            To::Failed => false,
        }
    }
}

/// Deliveries to the base population, checked against what was published.
pub struct Book {
    pub specs: Vec<To>,
    pub trackers: Vec<SeqTracker>,
    pub alive: Vec<bool>,
    pub live: u64,
    pub latency: Hist,
    /// Expected first receipts (accepted publishes x base connections alive then).
    pub expected: u64,
    /// First receipts that were expected.
    pub got: u64,
    pub dup: u64,
    /// A delivery to a base connection it was not addressed to, or an unknown seq.
    pub misdelivered: u64,
    /// Deliveries of broadcasts whose publish failed (timeout after the server took it).
    pub failed_but_delivered: u64,
    pub unparsable: u64,
    pub errors: BTreeMap<String, u64>,
    pub pings: u64,
    pub pongs: u64,
    pub stray_pongs: u64,
    pub rtt: Hist,
}

impl Book {
    pub fn new(n: usize) -> Self {
        Self {
            specs: Vec::new(),
            trackers: vec![SeqTracker::new(); n],
            alive: vec![false; n],
            live: 0,
            latency: stats::new_hist(),
            expected: 0,
            got: 0,
            dup: 0,
            misdelivered: 0,
            failed_but_delivered: 0,
            unparsable: 0,
            errors: BTreeMap::new(),
            pings: 0,
            pongs: 0,
            stray_pongs: 0,
            rtt: stats::new_hist(),
        }
    }

    /// Registers the next broadcast before it is sent (a delivery may beat the
    /// HTTP answer); returns its seq.
    pub fn register(&mut self, to: To) -> u64 {
        self.specs.push(to);
        self.specs.len() as u64 - 1
    }

    /// The publish of `seq` was accepted: count the deliveries now expected.
    pub fn accepted(&mut self, seq: u64) {
        let Some(to) = self.specs.get(seq as usize) else {
            return;
        };
        let n = (0..self.alive.len())
            .filter(|c| self.alive[*c] && to.expects(*c))
            .count() as u64;
        self.expected += n;
    }

    pub fn failed(&mut self, seq: u64) {
        if let Some(s) = self.specs.get_mut(seq as usize) {
            *s = To::Failed;
        }
    }

    pub fn up(&mut self, conn: usize) {
        if !self.alive[conn] {
            self.alive[conn] = true;
            self.live += 1;
        }
    }

    pub fn dead(&mut self, conn: usize, why: String) {
        if self.alive[conn] {
            self.alive[conn] = false;
            self.live = self.live.saturating_sub(1);
            tally(&mut self.errors, format!("base connection lost: {why}"));
        }
    }

    pub fn delivery(&mut self, conn: usize, seq: u64, t_ns: u64, now_ns: u64) {
        let Some(to) = self.specs.get(seq as usize) else {
            self.misdelivered += 1;
            return;
        };
        let expected = to.expects(conn);
        let failed = *to == To::Failed;
        match self.trackers[conn].mark(seq) {
            Mark::New if expected => {
                self.got += 1;
                self.latency
                    .saturating_record(now_ns.saturating_sub(t_ns).max(1));
            }
            Mark::New if failed => self.failed_but_delivered += 1,
            Mark::New | Mark::OutOfRange => self.misdelivered += 1,
            Mark::Duplicate => self.dup += 1,
        }
    }

    /// Expected deliveries missing on connections that are still open.
    pub fn lost(&self) -> u64 {
        let mut lost = 0;
        for (conn, (t, alive)) in self.trackers.iter().zip(&self.alive).enumerate() {
            if !*alive {
                continue;
            }
            for (seq, to) in self.specs.iter().enumerate() {
                if to.expects(conn) && !t.seen(seq as u64) {
                    lost += 1;
                }
            }
        }
        lost
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_per_target() {
        assert!(To::All.expects(3));
        assert!(!To::Failed.expects(3));
        assert!(To::Users(vec![1, 3]).expects(3) && !To::Users(vec![1]).expects(3));
        let evs = base_events(0);
        assert_eq!(evs.len(), 4);
        for (ev, name) in EVENTS.iter().enumerate() {
            assert_eq!(To::Subscribers(ev).expects(0), evs.contains(name));
        }
        // every event reaches a third of the base population
        for ev in 0..EVENTS.len() {
            assert_eq!((0..300).filter(|c| base_subscribed(*c, ev)).count(), 100);
        }
    }

    #[test]
    fn book_counts_lost_dup_and_misdelivered() {
        let mut b = Book::new(3);
        for c in 0..3 {
            b.up(c);
        }
        let s0 = b.register(To::All);
        b.accepted(s0);
        let s1 = b.register(To::Users(vec![1]));
        b.accepted(s1);
        let s2 = b.register(To::All);
        b.failed(s2);
        assert_eq!(b.expected, 4);
        b.delivery(0, s0, 1, 2);
        b.delivery(1, s0, 1, 2);
        b.delivery(1, s0, 1, 2); // duplicate
        b.delivery(1, s1, 1, 2);
        b.delivery(0, s1, 1, 2); // not addressed to 0
        b.delivery(2, s2, 1, 2); // failed publish that arrived anyway
        b.delivery(2, 99, 1, 2); // unknown seq
        assert_eq!(
            (b.got, b.dup, b.misdelivered, b.failed_but_delivered),
            (3, 1, 2, 1)
        );
        assert_eq!(b.lost(), 1, "conn 2 never got seq 0");
        b.dead(2, "EOF".into());
        assert_eq!(b.lost(), 0, "closed connections are errors, not losses");
        assert_eq!(b.errors.values().sum::<u64>(), 1);
    }
}
