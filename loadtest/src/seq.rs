//! Per-connection accounting of broadcast sequence numbers: which were received,
//! which twice, which never.

/// Seqs at or above this are counted as unexpected and not stored, so a bogus
/// number from the wire cannot make us allocate without bound (8 MiB per connection at most).
pub const MAX_SEQ: u64 = 1 << 26;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mark {
    New,
    Duplicate,
    OutOfRange,
}

#[derive(Clone, Debug, Default)]
pub struct SeqTracker {
    bits: Vec<u64>,
    pub unique: u64,
    pub duplicates: u64,
    pub out_of_range: u64,
}

impl SeqTracker {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn mark(&mut self, seq: u64) -> Mark {
        if seq >= MAX_SEQ {
            self.out_of_range += 1;
            return Mark::OutOfRange;
        }
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if w >= self.bits.len() {
            self.bits.resize(w + 1, 0);
        }
        let mask = 1u64 << b;
        if self.bits[w] & mask != 0 {
            self.duplicates += 1;
            Mark::Duplicate
        } else {
            self.bits[w] |= mask;
            self.unique += 1;
            Mark::New
        }
    }

    pub fn seen(&self, seq: u64) -> bool {
        let w = (seq / 64) as usize;
        w < self.bits.len() && self.bits[w] & (1u64 << (seq % 64)) != 0
    }

    /// Seqs in `from..to` that were never received, not counting those in `skip`
    /// (broadcasts whose publish failed, so nobody should have them).
    pub fn missing(&self, from: u64, to: u64, skip: &[u64]) -> u64 {
        (from..to)
            .filter(|s| !self.seen(*s) && !skip.contains(s))
            .count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_new_dup_and_missing() {
        let mut t = SeqTracker::new();
        assert_eq!(t.mark(0), Mark::New);
        assert_eq!(t.mark(2), Mark::New);
        assert_eq!(t.mark(2), Mark::Duplicate);
        assert_eq!(t.mark(130), Mark::New);
        assert_eq!(t.unique, 3);
        assert_eq!(t.duplicates, 1);
        assert!(t.seen(130) && !t.seen(129) && !t.seen(10_000));
        // 0..200: 197 missing; skip 1 and 3 (failed publishes)
        assert_eq!(t.missing(0, 200, &[]), 197);
        assert_eq!(t.missing(0, 4, &[1, 3]), 0);
        assert_eq!(t.missing(0, 4, &[1]), 1);
    }

    #[test]
    fn reordering_is_not_loss() {
        let mut t = SeqTracker::new();
        for s in [5u64, 3, 4, 0, 2, 1] {
            assert_eq!(t.mark(s), Mark::New);
        }
        assert_eq!(t.missing(0, 6, &[]), 0);
        assert_eq!(t.duplicates, 0);
    }

    #[test]
    fn out_of_range_is_bounded() {
        let mut t = SeqTracker::new();
        assert_eq!(t.mark(u64::MAX), Mark::OutOfRange);
        assert_eq!(t.mark(MAX_SEQ), Mark::OutOfRange);
        assert_eq!(t.out_of_range, 2);
        assert!(t.bits.is_empty());
    }
}
