//! Criterion benchmarks of wsgate's per-message hot paths.
//!
//! Run: `cargo bench --bench hot_paths` (pin with `taskset -c 0`).

use std::collections::HashSet;
use std::hint::black_box;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use serde_json::json;
use wsgate::connection::outbound::{Chunk, Outbound};
use wsgate::limits::RateLimiter;
use wsgate::protocol::envelope::encode;
use wsgate::protocol::{client, Event, EventSet, MessageIds};
use wsgate::ws::frame::text_frame;

/// A socket that accepts everything, like a fast reader's kernel buffer.
struct NullSocket;

impl Write for NullSocket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(bufs.iter().map(|b| b.len()).sum())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn payload(size: usize) -> serde_json::Value {
    json!({"message": "x".repeat(size), "level": "info", "seq": 42})
}

fn framing(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_broadcast");
    for size in [200usize, 4096, 65_000] {
        let bytes = vec![b'a'; size];
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::from_parameter(size), &bytes, |b, bytes| {
            b.iter(|| {
                let frame = text_frame(|buf| buf.extend_from_slice(bytes));
                let shared: Arc<[u8]> = Arc::from(frame);
                black_box(shared)
            })
        });
    }
    group.finish();
}

fn envelope(c: &mut Criterion) {
    let ids = MessageIds::new();
    let mut group = c.benchmark_group("serialize_envelope");
    for size in [100usize, 4096] {
        let data = payload(size);
        group.bench_with_input(BenchmarkId::from_parameter(size), &data, |b, data| {
            b.iter(|| black_box(encode(&ids, "system.notification", data, None)))
        });
    }
    group.finish();
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_client_message");
    let ping = r#"{"type":"ping","data":{"pingId":"p-123"},"timestamp":"2025-01-08T10:30:00Z","id":"msg_123"}"#;
    let subscribe = r#"{"type":"subscribe","data":{"events":["upload.progress","upload.completed","system.notification"]},"id":"s1"}"#;
    let invalid = r#"{"type":"subscribe","data":{"events":["upload.progress","nope"]},"id":"s2"}"#;
    for (name, text) in [
        ("ping", ping),
        ("subscribe", subscribe),
        ("invalid_subscription", invalid),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| black_box(client::parse(black_box(text))))
        });
    }
    group.finish();
}

fn rate_limiter(c: &mut Criterion) {
    c.bench_function("rate_limiter_check", |b| {
        let mut limiter = RateLimiter::new(100, Duration::from_secs(60));
        let users: Vec<Arc<str>> = (0..1000).map(|i| Arc::from(format!("user-{i}"))).collect();
        let start = Instant::now();
        let mut i = 0usize;
        b.iter(|| {
            i = i.wrapping_add(1);
            // Sliding time so windows keep moving and entries are evicted.
            let now = start + Duration::from_micros(i as u64 * 700);
            black_box(limiter.check(&users[i % users.len()], now))
        })
    });
}

fn subscriber_lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("subscriber_lookup");
    // The shard's per-event index: iterate the subscribers of one event.
    let index: Vec<HashSet<usize>> = (0..Event::COUNT)
        .map(|e| {
            (0..10_000)
                .filter(|k| k % Event::COUNT == e || k % 3 == 0)
                .collect()
        })
        .collect();
    group.bench_function("iterate_10k_conns_one_event", |b| {
        b.iter(|| {
            let mut sum = 0usize;
            for &key in &index[Event::SystemNotification.index()] {
                sum = sum.wrapping_add(key);
            }
            black_box(sum)
        })
    });
    let set: EventSet = [
        Event::UploadProgress,
        Event::FileReady,
        Event::SystemNotification,
    ]
    .into_iter()
    .collect();
    group.bench_function("bitmask_contains", |b| {
        b.iter(|| black_box(black_box(set).contains(black_box(Event::FileReady))))
    });
    group.finish();
}

fn fanout(c: &mut Criterion) {
    let ids = MessageIds::new();
    let data = payload(200);
    let mut queues: Vec<Outbound> = (0..1000).map(|_| Outbound::default()).collect();
    let mut group = c.benchmark_group("shard_fanout");
    group.throughput(Throughput::Elements(1000));
    group.bench_function("1000_in_memory_sinks_200B", |b| {
        b.iter(|| {
            let frame: Arc<[u8]> =
                Arc::from(encode(&ids, "system.notification", &data, None).frame);
            let mut socket = NullSocket;
            for queue in queues.iter_mut() {
                let _ = queue.push(Chunk::Shared(frame.clone()), 1 << 20);
                let _ = queue.flush(&mut socket);
            }
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    framing,
    envelope,
    parse,
    rate_limiter,
    subscriber_lookup,
    fanout
);
criterion_main!(benches);
