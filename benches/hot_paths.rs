//! Criterion benchmarks of wsgate's per-message hot paths.
//!
//! Run: `cargo bench --bench hot_paths` (pin with `taskset -c 0`).

use std::collections::HashSet;
use std::hint::black_box;
use std::io::{self, IoSlice, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde_json::json;
use wsgate::internals::{
    encode, format_rfc3339_millis, parse_client_message, text_frame, Chunk, DropReason, EventSet,
    InKind, MessageIds, Metrics, OutKind, Outbound, RateLimiter, RefusalReason,
};
use wsgate::Event;

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
            b.iter(|| black_box(parse_client_message(black_box(text))))
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

/// Every server message carries a timestamp: `clock` (humantime) against
/// the hand-written formatter it replaced, kept here as the baseline
/// (docs/PERFORMANCE.md, "Timestamps").
fn timestamps(c: &mut Criterion) {
    let mut group = c.benchmark_group("rfc3339_millis");
    let millis = 1_736_332_200_123u64;
    group.bench_function("hand_written", |b| {
        b.iter(|| black_box(hand_written_rfc3339_millis(black_box(millis))))
    });
    group.bench_function("humantime", |b| {
        b.iter(|| black_box(format_rfc3339_millis(black_box(millis))))
    });
    group.finish();
}

/// The formatter `protocol::clock` had before humantime (days-to-civil).
fn hand_written_rfc3339_millis(millis: u64) -> String {
    let secs = millis / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        millis % 1000
    )
}

type Labels = [(&'static str, &'static str); 1];

/// The same families as the crate's `metrics`, registered with
/// `prometheus-client`, for the comparison in docs/PERFORMANCE.md.
fn prometheus_client_registry() -> (Registry, Family<Labels, Counter>, Histogram) {
    let mut registry = Registry::default();
    let counter_family =
        |registry: &mut Registry, name: &str, label: &'static str, values: Vec<&'static str>| {
            let family = Family::<Labels, Counter>::default();
            for value in values {
                let _ = family.get_or_create(&[(label, value)]);
            }
            registry.register(name, "help", family.clone());
            family
        };
    registry.register("wsgate_connections", "help", Gauge::<i64>::default());
    let messages_in = counter_family(
        &mut registry,
        "wsgate_messages_in",
        "type",
        InKind::ALL.iter().map(|k| k.label()).collect(),
    );
    counter_family(
        &mut registry,
        "wsgate_messages_out",
        "type",
        OutKind::all().map(|k| k.label()).collect(),
    );
    registry.register("wsgate_rate_limited", "help", Counter::<u64>::default());
    counter_family(
        &mut registry,
        "wsgate_upgrades_refused",
        "reason",
        RefusalReason::ALL.iter().map(|r| r.label()).collect(),
    );
    counter_family(
        &mut registry,
        "wsgate_messages_dropped",
        "reason",
        DropReason::ALL.iter().map(|r| r.label()).collect(),
    );
    registry.register(
        "wsgate_webhook_attempts_failed",
        "help",
        Counter::<u64>::default(),
    );
    let fanout = Histogram::new([
        0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        0.5, 1.0,
    ]);
    registry.register("wsgate_fanout_seconds", "help", fanout.clone());
    for name in [
        "wsgate_backplane_up",
        "wsgate_backplane_publish_lag_seconds",
    ] {
        registry.register(name, "help", Gauge::<i64>::default());
    }
    for name in [
        "wsgate_backplane_published",
        "wsgate_backplane_received",
        "wsgate_backplane_publish_errors",
        "wsgate_backplane_dropped",
        "wsgate_backplane_malformed",
        "wsgate_backplane_reconnects",
        "wsgate_backplane_publish_lag_seconds",
    ] {
        registry.register(name, "help", Counter::<u64>::default());
    }
    (registry, messages_in, fanout)
}

/// Shard threads count per message and per broadcast; `/metrics` renders
/// per scrape. Ours against `prometheus-client` (docs/PERFORMANCE.md,
/// "Metrics").
fn metrics(c: &mut Criterion) {
    let ours = Metrics::default();
    ours.set_node_id("node-1");
    ours.backplane_enabled();
    let (registry, messages_in, fanout) = prometheus_client_registry();
    let ping: Labels = [("type", "ping")];
    let handle = messages_in.get_or_create(&ping).clone();
    let elapsed = Duration::from_micros(300);

    let mut group = c.benchmark_group("metrics_increment");
    group.bench_function("wsgate", |b| {
        b.iter(|| ours.message_in(black_box(InKind::Ping)))
    });
    group.bench_function("prometheus_client_family_lookup", |b| {
        b.iter(|| messages_in.get_or_create(black_box(&ping)).inc())
    });
    group.bench_function("prometheus_client_held_handle", |b| {
        b.iter(|| black_box(&handle).inc())
    });
    group.finish();

    let mut group = c.benchmark_group("metrics_observe_fanout");
    group.bench_function("wsgate", |b| {
        b.iter(|| ours.observe_fanout(black_box(elapsed)))
    });
    group.bench_function("prometheus_client", |b| {
        b.iter(|| fanout.observe(black_box(elapsed).as_secs_f64()))
    });
    group.finish();

    let mut group = c.benchmark_group("metrics_render");
    group.bench_function("wsgate", |b| b.iter(|| black_box(ours.render())));
    group.bench_function("prometheus_client", |b| {
        b.iter(|| {
            let mut out = String::with_capacity(4096);
            let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
            black_box(out)
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    timestamps,
    metrics,
    framing,
    envelope,
    parse,
    rate_limiter,
    subscriber_lookup,
    fanout
);
criterion_main!(benches);
