//! The single-node [`HistoryStore`]: streams in memory, in buckets by a
//! hash of the name, each bucket behind its own `parking_lot` mutex.
//!
//! Why buckets and where the locks are: appends happen on the publish path
//! (tokio threads of the hub), reads at resume on shard threads. A lock per
//! bucket keeps unrelated streams from contending (a user stream is touched
//! by that user's publishes and resumes only), and a lock is held only for
//! the bookkeeping of one stream plus the encoding of the appended event
//! (the frame must carry the offset it gets, and offsets must follow append
//! order), never across I/O or a channel send.
//!
//! Bounds: `--history-size` events per stream; `--history-ttl` after the
//! last append drops a stream's events, `--history-meta-ttl` its epoch and
//! top (checked on every access and by `sweep`); `--history-max-bytes`
//! over the whole node: past it, the streams appended to least recently are
//! dropped whole (metadata and last values too) until the total is at 7/8
//! of the bound, so an append at the bound does not rescan every time.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;

use super::{Epoch, HistorySettings, HistoryStore, LastValue, Meta, Stored, StreamPosition};
use crate::metrics::{EpochCause, Metrics};

const BUCKETS: usize = 64;

struct Stream {
    epoch: Epoch,
    top: u64,
    events: VecDeque<Stored>,
    /// Cached last values by key, with when each was stored.
    last_values: Vec<(String, Stored, Instant)>,
    /// Bytes of the frames held in `events` and `last_values`.
    bytes: usize,
    last_append: Instant,
    /// The store's append counter at the last append (least recent first
    /// when evicting).
    sequence: u64,
}

impl Stream {
    fn meta(&self) -> Meta {
        Meta {
            epoch: self.epoch,
            top: self.top,
            first: self.events.front().map_or(self.top + 1, |e| e.offset),
        }
    }
}

type Bucket = Mutex<HashMap<Arc<str>, Stream>>;

pub struct MemoryStore {
    buckets: Box<[Bucket]>,
    settings: HistorySettings,
    bytes: AtomicUsize,
    sequence: AtomicU64,
    evicting: Mutex<()>,
    metrics: Arc<Metrics>,
}

impl MemoryStore {
    pub fn new(settings: HistorySettings, metrics: Arc<Metrics>) -> MemoryStore {
        MemoryStore {
            buckets: (0..BUCKETS).map(|_| Mutex::new(HashMap::new())).collect(),
            settings,
            bytes: AtomicUsize::new(0),
            sequence: AtomicU64::new(0),
            evicting: Mutex::new(()),
            metrics,
        }
    }

    fn bucket(&self, stream: &str) -> &Bucket {
        let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(stream);
        &self.buckets[(hash % BUCKETS as u64) as usize]
    }

    /// Applies the TTLs to one stream: `false` when its metadata expired
    /// (the caller removes it).
    fn refresh(&self, stream: &mut Stream, now: Instant) -> bool {
        let idle = now.duration_since(stream.last_append);
        if idle >= self.settings.meta_ttl {
            return false;
        }
        let mut freed = 0;
        if idle >= self.settings.ttl && !stream.events.is_empty() {
            freed += stream
                .events
                .drain(..)
                .map(|e| e.frame.len())
                .sum::<usize>();
        }
        let ttl = self.settings.last_value_ttl;
        stream.last_values.retain(|(_, value, stored)| {
            let keep = now.duration_since(*stored) < ttl;
            if !keep {
                freed += value.frame.len();
            }
            keep
        });
        self.release(stream, freed);
        true
    }

    fn release(&self, stream: &mut Stream, bytes: usize) {
        stream.bytes -= bytes;
        self.bytes.fetch_sub(bytes, Relaxed);
    }

    /// Runs `f` on the stream's live state, dropping it first if expired.
    fn with_stream<R>(&self, name: &str, f: impl FnOnce(&Stream) -> R) -> Option<R> {
        let now = Instant::now();
        let mut bucket = self.bucket(name).lock();
        let stream = bucket.get_mut(name)?;
        if !self.refresh(stream, now) {
            self.forget(&mut bucket, name, EpochCause::Expired);
            return None;
        }
        Some(f(stream))
    }

    fn forget(&self, bucket: &mut HashMap<Arc<str>, Stream>, name: &str, cause: EpochCause) {
        if let Some(stream) = bucket.remove(name) {
            self.bytes.fetch_sub(stream.bytes, Relaxed);
            self.metrics.epoch_changed(cause);
        }
    }

    /// Drops the least recently appended streams until the total is back
    /// under 7/8 of the bound. One evictor at a time; the others go on.
    fn evict(&self) {
        let Some(_evicting) = self.evicting.try_lock() else {
            return;
        };
        let target = self.settings.max_bytes / 8 * 7;
        let mut candidates: Vec<(u64, usize, Arc<str>)> = Vec::new();
        for (index, bucket) in self.buckets.iter().enumerate() {
            candidates.extend(
                bucket
                    .lock()
                    .iter()
                    .map(|(name, s)| (s.sequence, index, name.clone())),
            );
        }
        candidates.sort_unstable_by_key(|(sequence, ..)| *sequence);
        for (_, index, name) in candidates {
            if self.bytes.load(Relaxed) <= target {
                break;
            }
            self.forget(&mut self.buckets[index].lock(), &name, EpochCause::Evicted);
        }
    }
}

impl HistoryStore for MemoryStore {
    fn append(
        &self,
        name: &Arc<str>,
        last_values: &[LastValue],
        encode: &mut dyn FnMut(&StreamPosition) -> Arc<[u8]>,
    ) -> (StreamPosition, Arc<[u8]>) {
        let now = Instant::now();
        let sequence = self.sequence.fetch_add(1, Relaxed);
        let (position, frame, over) = {
            let mut bucket = self.bucket(name).lock();
            if let Some(stream) = bucket.get_mut(&**name) {
                if !self.refresh(stream, now) {
                    self.forget(&mut bucket, name, EpochCause::Expired);
                }
            }
            let stream = bucket.entry(name.clone()).or_insert_with(|| {
                self.metrics.epoch_changed(EpochCause::Created);
                Stream {
                    epoch: Epoch::random(),
                    top: 0,
                    events: VecDeque::new(),
                    last_values: Vec::new(),
                    bytes: 0,
                    last_append: now,
                    sequence,
                }
            });
            stream.top += 1;
            stream.last_append = now;
            stream.sequence = sequence;
            let position = StreamPosition {
                name: name.clone(),
                epoch: stream.epoch,
                offset: stream.top,
            };
            let frame = encode(&position);
            let stored = Stored {
                offset: position.offset,
                frame: frame.clone(),
            };
            let mut added = frame.len();
            let mut freed = 0;
            stream.events.push_back(stored.clone());
            while stream.events.len() > self.settings.size {
                freed += stream.events.pop_front().map_or(0, |e| e.frame.len());
            }
            for change in last_values {
                let key = match change {
                    LastValue::Store(key) | LastValue::End(key) => key,
                };
                if let Some(at) = stream.last_values.iter().position(|(k, ..)| k == key) {
                    freed += stream.last_values.remove(at).1.frame.len();
                }
                if let LastValue::Store(key) = change {
                    stream.last_values.push((key.clone(), stored.clone(), now));
                    added += frame.len();
                }
            }
            stream.bytes = stream.bytes + added - freed;
            let total = self.bytes.fetch_add(added, Relaxed) + added;
            self.bytes.fetch_sub(freed, Relaxed);
            (position, frame, total - freed > self.settings.max_bytes)
        };
        if over {
            self.evict();
        }
        (position, frame)
    }

    fn meta(&self, name: &str) -> Option<Meta> {
        self.with_stream(name, Stream::meta)
    }

    fn read(&self, name: &str, from: u64, limit: usize) -> Option<(Meta, Vec<Stored>)> {
        self.with_stream(name, |stream| {
            let events = stream
                .events
                .iter()
                .filter(|e| e.offset >= from)
                .take(limit)
                .cloned()
                .collect();
            (stream.meta(), events)
        })
    }

    fn last_values(&self, name: &str) -> Vec<Stored> {
        self.with_stream(name, |stream| {
            let mut values: Vec<Stored> = stream
                .last_values
                .iter()
                .map(|(_, v, _)| v.clone())
                .collect();
            values.sort_unstable_by_key(|v| v.offset);
            values
        })
        .unwrap_or_default()
    }

    fn delete(&self, name: &str) -> bool {
        let mut bucket = self.bucket(name).lock();
        let existed = bucket.contains_key(name);
        self.forget(&mut bucket, name, EpochCause::Deleted);
        existed
    }

    fn sweep(&self) {
        let now = Instant::now();
        for bucket in self.buckets.iter() {
            let mut bucket = bucket.lock();
            let expired: Vec<Arc<str>> = bucket
                .iter_mut()
                .filter_map(|(name, stream)| (!self.refresh(stream, now)).then(|| name.clone()))
                .collect();
            for name in expired {
                self.forget(&mut bucket, &name, EpochCause::Expired);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn store(size: usize, max_bytes: usize) -> MemoryStore {
        MemoryStore::new(
            HistorySettings {
                size,
                ttl: Duration::from_secs(60),
                meta_ttl: Duration::from_secs(600),
                max_bytes,
                last_value_ttl: Duration::from_secs(60),
            },
            Arc::new(Metrics::default()),
        )
    }

    fn append(store: &MemoryStore, name: &str, bytes: usize) -> StreamPosition {
        store
            .append(&Arc::from(name), &[], &mut |_| Arc::from(vec![0u8; bytes]))
            .0
    }

    #[test]
    fn offsets_are_contiguous_and_size_trims() {
        let store = store(2, 1 << 20);
        for expected in 1..=5 {
            assert_eq!(append(&store, "s", 10).offset, expected);
        }
        let (meta, events) = store.read("s", 1, 100).expect("stream");
        assert_eq!((meta.top, meta.first), (5, 4));
        assert_eq!(events.iter().map(|e| e.offset).collect::<Vec<_>>(), [4, 5]);
        assert!(store.delete("s"));
        assert_eq!(store.meta("s"), None);
        assert_eq!(append(&store, "s", 10).offset, 1);
    }

    #[test]
    fn the_byte_bound_drops_least_recent_streams_whole() {
        let store = store(100, 1000);
        append(&store, "old", 400);
        append(&store, "mid", 400);
        append(&store, "new", 400);
        assert_eq!(store.meta("old"), None, "least recent stream dropped");
        assert!(store.meta("new").is_some());
        assert!(store.bytes.load(Relaxed) <= 1000);
    }

    #[test]
    fn last_values_are_replaced_and_ended() {
        let store = store(100, 1 << 20);
        let name: Arc<str> = Arc::from("s");
        let put = |lv: LastValue| store.append(&name, &[lv], &mut |_| Arc::from(vec![1u8])).0;
        put(LastValue::Store("a".into()));
        let second = put(LastValue::Store("b".into()));
        let third = put(LastValue::Store("a".into()));
        let offsets: Vec<u64> = store.last_values("s").iter().map(|v| v.offset).collect();
        assert_eq!(offsets, [second.offset, third.offset]);
        put(LastValue::End("a".into()));
        assert_eq!(store.last_values("s").len(), 1);
    }
}
