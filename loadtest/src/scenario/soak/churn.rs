//! The soak's churn: `--churn` loops of short-lived connections next to the
//! base population, each cycle a fresh user that subscribes, maybe
//! unsubscribes and resubscribes, maybe pings, receives a while and leaves
//! (sometimes without a close frame). Counted in [`ChurnTotals`].

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use super::book::EVENTS;
use super::rng::Rng;
use super::{close_code, request, sub_msg, Shared};
use crate::ctl::tally;
use crate::proto::{self, mono_ns};
use crate::seq::{Mark, SeqTracker};
use crate::stats::{self, Hist};
use crate::ws;

/// What the churn loops did, summed.
#[derive(Default)]
pub struct ChurnTotals {
    pub cycles: u64,
    pub resubscribed: u64,
    pub abrupt: u64,
    pub deliveries: u64,
    pub dup: u64,
    pub pongs: u64,
    pub errors: BTreeMap<String, u64>,
    pub cycle_hist: Option<Hist>,
}

#[derive(Default)]
struct Cycle {
    deliveries: u64,
    dup: u64,
    resubscribed: bool,
    abrupt: bool,
    pong: bool,
}

fn churn_frame(text: &str, tracker: &mut SeqTracker, c: &mut Cycle) {
    let Some(m) = proto::parse(text) else { return };
    if m.ty == "pong" {
        c.pong = true;
        return;
    }
    if let Some(seq) = m.data.as_ref().and_then(|d| d.seq) {
        if EVENTS.contains(&m.ty.as_ref()) {
            match tracker.mark(seq) {
                Mark::New => c.deliveries += 1,
                Mark::Duplicate => c.dup += 1,
                Mark::OutOfRange => {}
            }
        }
    }
}

/// One churn cycle: connect (a fresh user), subscribe to 1-4 random events, half the
/// time unsubscribe one and subscribe it again, sometimes ping, receive for 0.2-2 s,
/// disconnect (a quarter of the time by dropping the TCP connection without a close).
async fn churn_cycle(sh: &Shared, lp: u64, cycle: u64, rng: &mut Rng) -> Result<Cycle> {
    let op = sh.cli.op_timeout;
    let user = format!("lt-{}-c{lp}-{cycle}", sh.run_id);
    let mut sock = sh.open(&user, lp + cycle).await?;
    let mut tracker = SeqTracker::new();
    let mut c = Cycle::default();
    let k = 1 + rng.below(4) as usize;
    let evs: Vec<&str> = rng
        .distinct(k, EVENTS.len())
        .into_iter()
        .map(|i| EVENTS[i])
        .collect();
    request(
        &mut sock,
        sub_msg("subscribe", &evs, "cs"),
        "subscription.confirmed",
        op,
        &mut |t| churn_frame(t, &mut tracker, &mut c),
    )
    .await
    .context("subscribe")?;
    if rng.chance(1, 2) {
        let one = [evs[rng.below(evs.len() as u64) as usize]];
        request(
            &mut sock,
            sub_msg("unsubscribe", &one, "cu"),
            "unsubscription.confirmed",
            op,
            &mut |t| churn_frame(t, &mut tracker, &mut c),
        )
        .await
        .context("unsubscribe")?;
        request(
            &mut sock,
            sub_msg("subscribe", &one, "cr"),
            "subscription.confirmed",
            op,
            &mut |t| churn_frame(t, &mut tracker, &mut c),
        )
        .await
        .context("resubscribe")?;
        c.resubscribed = true;
    }
    let ping = rng.chance(1, 3);
    if ping {
        sock.send(Message::text(proto::ping_msg(&format!("c{lp}.{cycle}"))))
            .await?;
    }
    let dwell = Duration::from_millis(200 + rng.below(1800));
    let until = tokio::time::Instant::now() + dwell;
    let ping_until = tokio::time::Instant::now() + op;
    // Bounded by `until` (and `ping_until` while a pong is outstanding).
    loop {
        let wait = if ping && !c.pong {
            until.max(ping_until)
        } else {
            until
        };
        let m = match tokio::time::timeout_at(wait, sock.next()).await {
            Ok(m) => m,
            Err(_) => break,
        };
        match m {
            Some(Ok(Message::Text(t))) => churn_frame(t.as_str(), &mut tracker, &mut c),
            Some(Ok(Message::Close(cf))) => bail!("closed by server ({})", close_code(cf)),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("EOF"),
        }
        if (!ping || c.pong) && tokio::time::Instant::now() >= until {
            break;
        }
    }
    if ping && !c.pong {
        bail!("churn pong missing");
    }
    if rng.chance(1, 4) {
        drop(sock);
        c.abrupt = true;
    } else {
        ws::close(sock).await;
    }
    Ok(c)
}

/// One churn loop, until the end of `-d` or `--cycles` in total.
pub async fn churn_loop(sh: Arc<Shared>, lp: u64) {
    let mut rng = Rng::new(mono_ns() ^ lp.wrapping_mul(0x9E37_79B9));
    let mut hist = stats::new_hist();
    let mut cycle = 0u64;
    let limit = sh.cli.op_timeout * 4 + Duration::from_secs(3);
    let max_cycles = sh.cli.cycles.unwrap_or(u64::MAX);
    // Bounded: stops when `stop` is set at the end of -d (each cycle has a timeout).
    while !sh.stopped() && sh.cycles.load(Ordering::Relaxed) < max_cycles {
        cycle += 1;
        let t0 = mono_ns();
        let r = tokio::time::timeout(limit, churn_cycle(&sh, lp, cycle, &mut rng)).await;
        let failed = match r {
            Ok(Ok(c)) => {
                hist.saturating_record(mono_ns().saturating_sub(t0).max(1));
                let mut tot = sh.churn();
                tot.cycles += 1;
                tot.deliveries += c.deliveries;
                tot.dup += c.dup;
                tot.resubscribed += u64::from(c.resubscribed);
                tot.abrupt += u64::from(c.abrupt);
                tot.pongs += u64::from(c.pong);
                sh.cycles.fetch_add(1, Ordering::Relaxed);
                false
            }
            Ok(Err(e)) => {
                tally(
                    &mut sh.churn().errors,
                    format!("churn: {}", ws::describe(&e)),
                );
                true
            }
            Err(_) => {
                tally(&mut sh.churn().errors, "churn: cycle timeout".into());
                false
            }
        };
        if failed {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let mut tot = sh.churn();
    match tot.cycle_hist.as_mut() {
        Some(h) => {
            let _ = stats::merge(h, &hist);
        }
        None => tot.cycle_hist = Some(hist),
    }
}
