//! Offset accounting of one client on one stream: which offsets of the
//! current epoch arrived, which twice or out of order, and which are missing
//! below a known top. Knows nothing of sockets or frames.

/// Offsets further than this above the base are not stored (a bogus offset
/// from the wire cannot make a client allocate: 8 KiB of bits at most).
pub const MAX_SPAN: u64 = 1 << 16;

#[derive(Debug, PartialEq, Eq)]
pub enum Mark {
    New,
    /// Already received, or at or below the position the client resumed from.
    Duplicate,
    /// New, but below the highest offset already received.
    OutOfOrder,
    /// At or below the top a not-recovered resume reported: the client refetched
    /// that state from its backend, so such an offset is neither new nor a duplicate.
    Covered,
    /// Another epoch than the one being tracked.
    WrongEpoch,
    /// Beyond [`MAX_SPAN`] above the base.
    OutOfRange,
}

/// One stream as one client sees it.
#[derive(Debug, Default, Clone)]
pub struct Track {
    epoch: Option<String>,
    /// Offsets at or below it were had before tracking (re)started.
    base: u64,
    /// Bit i: offset base+1+i received.
    bits: Vec<u64>,
    /// Highest offset received (or the base).
    max: u64,
    /// Tracking has a base: false until the first event of the first connection.
    anchored: bool,
    /// Offsets at or below the base are [`Mark::Covered`], not duplicates.
    reset: bool,
    /// Unique offsets received.
    pub received: u64,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub covered: u64,
    pub wrong_epoch: u64,
    pub out_of_range: u64,
    /// Gaps of earlier epochs, closed by [`Track::rebase`].
    lost_before: u64,
}

impl Track {
    /// Accounts one received event at `offset` of `epoch`.
    pub fn mark(&mut self, epoch: &str, offset: u64) -> Mark {
        if !self.anchored {
            // The first event seen: the stream may have had events before this client.
            self.anchored = true;
            self.base = offset.saturating_sub(1);
            self.max = self.base;
        }
        match &self.epoch {
            None => self.epoch = Some(epoch.to_string()),
            Some(e) if e != epoch => {
                self.wrong_epoch += 1;
                return Mark::WrongEpoch;
            }
            Some(_) => {}
        }
        if offset <= self.base {
            if self.reset {
                self.covered += 1;
                return Mark::Covered;
            }
            self.duplicates += 1;
            return Mark::Duplicate;
        }
        let i = offset - self.base - 1;
        if i >= MAX_SPAN {
            self.out_of_range += 1;
            return Mark::OutOfRange;
        }
        let (w, b) = ((i / 64) as usize, i % 64);
        if w >= self.bits.len() {
            self.bits.resize(w + 1, 0);
        }
        if self.bits[w] & (1 << b) != 0 {
            self.duplicates += 1;
            return Mark::Duplicate;
        }
        self.bits[w] |= 1 << b;
        self.received += 1;
        if offset < self.max {
            self.out_of_order += 1;
            return Mark::OutOfOrder;
        }
        self.max = offset;
        Mark::New
    }

    /// The position to resume from: the epoch and the highest offset received.
    pub fn position(&self) -> Option<(&str, u64)> {
        self.epoch.as_deref().map(|e| (e, self.max))
    }

    pub fn epoch(&self) -> Option<&str> {
        self.epoch.as_deref()
    }

    /// A resume did not recover: the gaps so far are closed into the loss count
    /// and tracking restarts at the reported `epoch` (`None`: the stream has none
    /// yet, its next event starts one at offset 1) and top `offset`.
    pub fn rebase(&mut self, epoch: Option<&str>, offset: u64) {
        self.lost_before += self.gaps(self.max);
        self.epoch = epoch.map(str::to_string);
        self.base = offset;
        self.max = offset;
        self.bits.clear();
        self.anchored = true;
        self.reset = true;
    }

    /// Offsets of the current epoch in base+1..=top that never arrived.
    fn gaps(&self, top: u64) -> u64 {
        if top <= self.base {
            return 0;
        }
        let want = (top - self.base).min(MAX_SPAN);
        let have: u64 = (0..want)
            .filter(|i| {
                let w = (i / 64) as usize;
                w < self.bits.len() && self.bits[w] & (1 << (i % 64)) != 0
            })
            .count() as u64;
        want - have
    }

    /// Events lost: the gaps below `top` (the stream's last offset) in the
    /// current epoch plus those of the epochs before a rebase.
    pub fn lost(&self, top: u64) -> u64 {
        self.lost_before + self.gaps(top)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_replay_after_a_blip_is_complete() {
        let mut t = Track::default();
        for o in 11..=15 {
            assert_eq!(t.mark("E", o), Mark::New);
        }
        assert_eq!(t.position(), Some(("E", 15)));
        // recovered: replay 16..=20, then live 21
        for o in 16..=21 {
            assert_eq!(t.mark("E", o), Mark::New);
        }
        assert_eq!(t.lost(21), 0);
        assert_eq!((t.duplicates, t.out_of_order, t.received), (0, 0, 11));
    }

    #[test]
    fn gaps_tails_duplicates_and_reordering_are_counted() {
        let mut t = Track::default();
        for o in [1, 2, 3, 5, 6] {
            assert_eq!(t.mark("E", o), Mark::New);
        }
        assert_eq!(t.lost(6), 1, "offset 4 missing");
        assert_eq!(t.lost(9), 4, "4 and the tail 7..=9");
        assert_eq!(t.mark("E", 5), Mark::Duplicate);
        // a replay of what the client already had is a duplicate too
        assert_eq!(t.mark("E", 1), Mark::Duplicate);
        assert_eq!(t.mark("E", 4), Mark::OutOfOrder);
        assert_eq!(t.lost(6), 0, "late is not lost");
        assert_eq!((t.duplicates, t.out_of_order), (2, 1));
        assert_eq!(t.mark("F", 7), Mark::WrongEpoch);
        assert_eq!(t.mark("E", 1 + MAX_SPAN + 1), Mark::OutOfRange);
        assert_eq!(t.received, 6);
    }

    #[test]
    fn rebase_after_a_new_epoch() {
        let mut t = Track::default();
        for o in [1, 2, 4] {
            t.mark("OLD", o);
        }
        // restart: EPOCH_CHANGED, new epoch top 3; a held event at or below it is covered
        t.rebase(Some("NEW"), 3);
        assert_eq!(t.mark("NEW", 3), Mark::Covered);
        assert_eq!(t.mark("NEW", 4), Mark::New);
        assert_eq!(t.mark("OLD", 5), Mark::WrongEpoch);
        assert_eq!(t.lost(5), 1 + 1, "3 of the old epoch, 5 of the new");
        assert_eq!(t.duplicates, 0);
        // a stream with no epoch yet: the next event starts one at offset 1
        let mut u = Track::default();
        u.mark("OLD", 7);
        u.rebase(None, 0);
        assert_eq!(u.mark("X", 2), Mark::New);
        assert_eq!(u.epoch(), Some("X"));
        assert_eq!(u.lost(2), 1, "offset 1 of the new epoch");
    }
}
