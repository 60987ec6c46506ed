//! SPEC-v2 §2 on a single node: stream positions on deliveries, `resume=1`
//! and the `resume` message, every recovery reason, positioned
//! `subscribe`, the last-value cache, the streams API, and
//! `--history-size 0` being v1.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::ws::{TokenVia, WsClient, ALL_VIAS};
use crate::support::{wait_until, TestServer};

const LONG: Duration = Duration::from_secs(10);

/// Publishes to one user; returns the answer's JSON.
fn to_user(server: &TestServer, user: &str, kind: &str, data: Value) -> Value {
    let answer = server.api_post(
        "/api/v1/events",
        &json!({"type": kind, "data": data, "users": [user]}),
    );
    answer.expect_status(200);
    answer.json
}

fn resume_client(server: &TestServer, user: &str) -> WsClient {
    WsClient::connect_with_query(
        server.addr(),
        TokenVia::Path,
        &server.token(user),
        "resume=1",
    )
}

/// The next message of `kind`, skipping nothing else silently: anything
/// else first fails the test.
fn next_of(c: &mut WsClient, kind: &str) -> Value {
    let m = c.recv_json_within(LONG);
    assert_eq!(m["type"], kind, "expected {kind}, got {m}");
    m
}

fn position(m: &Value) -> Value {
    json!({"epoch": m["stream"]["epoch"], "offset": m["stream"]["offset"]})
}

fn offset(m: &Value) -> u64 {
    m["stream"]["offset"]
        .as_u64()
        .unwrap_or_else(|| panic!("no stream offset in {m}"))
}

#[test]
fn offsets_are_contiguous_and_the_stream_follows_the_target() {
    let server = TestServer::start(&[]);
    let mut c = server.ws("u1");
    let features = &c.established["data"]["features"];
    assert_eq!(
        features,
        &json!([
            "heartbeat",
            "subscriptions",
            "rate_limiting",
            "recovery",
            "last_value",
            "token_refresh"
        ])
    );
    c.send_json(&json!({"type": "subscribe", "data": {"events": ["upload.progress"]}}));
    let confirmed = next_of(&mut c, "subscription.confirmed");
    assert_eq!(
        confirmed["data"]["streams"]["event:upload.progress"],
        json!({"epoch": null, "offset": 0}),
        "a stream never used has no epoch: {confirmed}"
    );

    let mut epoch = None;
    for expected in 1..=3u64 {
        let answer = to_user(&server, "u1", "file.ready", json!({"n": expected}));
        let m = next_of(&mut c, "file.ready");
        assert_eq!(m["id"], answer["id"]);
        assert_eq!(m["stream"]["name"], "user:u1");
        assert_eq!(offset(&m), expected, "offsets grow by exactly 1: {m}");
        let e = m["stream"]["epoch"].as_str().expect("epoch").to_owned();
        assert!(
            e.len() == 8 && e.chars().all(|ch| ch.is_ascii_alphanumeric()),
            "{e}"
        );
        assert_eq!(*epoch.get_or_insert(e.clone()), e, "one epoch");
        assert_eq!(
            answer["streams"],
            json!([{"name": "user:u1", "epoch": e, "offset": expected}]),
            "the publish answer carries the position"
        );
    }

    let answer = server.api_post(
        "/api/v1/events",
        &json!({"type": "system.maintenance", "data": {}, "all": true}),
    );
    let m = next_of(&mut c, "system.maintenance");
    assert_eq!(m["stream"]["name"], "broadcast");
    assert_eq!(offset(&m), 1);
    assert_eq!(answer.json["streams"][0]["name"], "broadcast");

    server
        .api_post(
            "/api/v1/events",
            &json!({"type": "upload.progress", "data": {"upload_id": "x"}}),
        )
        .expect_status(200);
    let m = next_of(&mut c, "upload.progress");
    assert_eq!(m["stream"]["name"], "event:upload.progress");
    assert_eq!(offset(&m), 1);

    let answer = server.api_post(
        "/api/v1/events",
        &json!({"type": "file.ready", "data": {}, "connections": [c.connection_id()]}),
    );
    let m = next_of(&mut c, "file.ready");
    assert!(
        m.get("stream").is_none(),
        "to connections only: no position: {m}"
    );
    assert_eq!(answer.json["streams"], json!([]));

    // Two users: one append each, the same id on both.
    let mut other = server.ws("u2");
    let answer = server.api_post(
        "/api/v1/events",
        &json!({"type": "file.ready", "data": {}, "users": ["u1", "u2"]}),
    );
    let mine = next_of(&mut c, "file.ready");
    let theirs = next_of(&mut other, "file.ready");
    assert_eq!(mine["id"], theirs["id"]);
    assert_eq!((offset(&mine), offset(&theirs)), (4, 1));
    assert_eq!(theirs["stream"]["name"], "user:u2");
    assert_eq!(answer.json["streams"].as_array().map(Vec::len), Some(2));
}

#[test]
fn resume_replays_exactly_the_missed_events_in_order_then_live() {
    for via in ALL_VIAS {
        let server = TestServer::start(&[]);
        let mut first = server.ws("u");
        to_user(&server, "u", "file.ready", json!({"n": 0}));
        let seen = next_of(&mut first, "file.ready");
        drop(first);
        let missed: Vec<Value> = (1..=3)
            .map(|n| to_user(&server, "u", "file.ready", json!({"n": n})))
            .collect();

        let mut c =
            WsClient::connect_with_query(server.addr(), via, &server.token("u"), "resume=1");
        c.send_json(&json!({"type": "resume", "id": "r1", "data": {"user": position(&seen)}}));
        let resumed = next_of(&mut c, "resumed");
        assert_eq!(resumed["reply_to"], "r1");
        assert_eq!(resumed["data"]["recovered"], true, "{resumed}");
        let entry = &resumed["data"]["streams"]["user:u"];
        assert_eq!(entry["recovered"], true, "{resumed}");
        assert_eq!(entry["replayed"], 3);
        assert_eq!(entry["offset"], 4);
        assert_eq!(entry["epoch"], seen["stream"]["epoch"]);
        assert_eq!(
            resumed["data"]["streams"]["broadcast"],
            json!({"epoch": null, "offset": 0}),
            "no position given: only the top"
        );
        for (n, answer) in missed.iter().enumerate() {
            let m = next_of(&mut c, "file.ready");
            assert_eq!(
                m["id"], answer["id"],
                "replayed with its original id ({via:?})"
            );
            assert_eq!(m["data"]["n"], n as u64 + 1);
            assert_eq!(offset(&m), n as u64 + 2);
        }
        let live = to_user(&server, "u", "file.ready", json!({"n": 4}));
        let m = next_of(&mut c, "file.ready");
        assert_eq!(m["id"], live["id"]);
        assert_eq!(offset(&m), 5);
        server.assert_nothing_pending(&mut c);
    }
}

/// Publishes keep coming, from several threads at once, while the client
/// resumes: every offset after its position arrives exactly once, in
/// order (replayed, held or live), on the resumed connection and on one
/// that never left.
#[test]
fn a_publish_racing_the_resume_is_neither_lost_nor_duplicated() {
    let server = TestServer::start(&[]);
    let mut first = server.ws("u");
    let mut stayed = server.ws("u");
    to_user(&server, "u", "file.ready", json!({}));
    let seen = next_of(&mut first, "file.ready");
    assert_eq!(offset(&next_of(&mut stayed, "file.ready")), 1);
    drop(first);
    const PUBLISHERS: u64 = 3;
    const EACH: u64 = 100;
    std::thread::scope(|scope| {
        let publishers: Vec<_> = (0..PUBLISHERS)
            .map(|p| {
                let server = &server;
                scope.spawn(move || {
                    for n in 0..EACH {
                        to_user(server, "u", "file.ready", json!({"p": p, "n": n}));
                    }
                })
            })
            .collect();
        // Resume while the publishers are under way.
        assert!(wait_until(LONG, || {
            server.api_get("/api/v1/streams/user%3Au").json["offset"]
                .as_u64()
                .is_some_and(|top| top > 20)
        }));
        let mut c = resume_client(&server, "u");
        c.send_json(&json!({"type": "resume", "data": {"user": position(&seen)}}));
        let resumed = next_of(&mut c, "resumed");
        assert_eq!(
            resumed["data"]["streams"]["user:u"]["recovered"], true,
            "{resumed}"
        );
        let top_at_resume = resumed["data"]["streams"]["user:u"]["offset"]
            .as_u64()
            .expect("top");
        assert!(
            top_at_resume < 1 + PUBLISHERS * EACH,
            "the resume must race the publishes (top {top_at_resume} at the resume)"
        );
        for publisher in publishers {
            publisher.join().expect("publisher");
        }
        let last = 1 + PUBLISHERS * EACH;
        for client in [&mut c, &mut stayed] {
            let mut expected = offset(&seen) + 1;
            while expected <= last {
                let m = next_of(client, "file.ready");
                assert_eq!(offset(&m), expected, "strictly increasing, none missing");
                expected += 1;
            }
            server.assert_nothing_pending(client);
        }
    });
}

fn resume_reason(server: &TestServer, user: &str, at: Value) -> Value {
    let mut c = resume_client(server, user);
    c.send_json(&json!({"type": "resume", "data": {"user": at}}));
    let resumed = next_of(&mut c, "resumed");
    assert_eq!(resumed["data"]["recovered"], false, "{resumed}");
    let entry = resumed["data"]["streams"][format!("user:{user}")].clone();
    assert_eq!(entry["recovered"], false);
    assert_eq!(entry["replayed"], 0);
    server.assert_nothing_pending(&mut c);
    entry
}

#[test]
fn each_reason_of_an_unrecovered_position() {
    let server = TestServer::start(&["--recovery-max-events", "2", "--history-size", "3"]);
    let mut c = server.ws("u");
    to_user(&server, "u", "file.ready", json!({}));
    let first = next_of(&mut c, "file.ready");
    let epoch = first["stream"]["epoch"].clone();

    let ahead = resume_reason(&server, "u", json!({"epoch": epoch, "offset": 5}));
    assert_eq!(ahead["reason"], "OFFSET_AHEAD");
    assert_eq!(
        (ahead["epoch"].clone(), ahead["offset"].clone()),
        (epoch.clone(), json!(1))
    );

    let other = resume_reason(&server, "u", json!({"epoch": "Zz0a9Yb1", "offset": 1}));
    assert_eq!(other["reason"], "EPOCH_CHANGED");

    for _ in 0..3 {
        to_user(&server, "u", "file.ready", json!({}));
    }
    // Top 4, position 1: 3 missed, over --recovery-max-events 2.
    let many = resume_reason(&server, "u", json!({"epoch": epoch, "offset": 1}));
    assert_eq!(many["reason"], "TOO_MANY");
    for _ in 0..2 {
        to_user(&server, "u", "file.ready", json!({}));
    }
    // Top 6, 3 kept (4..6): position 4 misses 2, within the cap: recovered.
    let mut ok = resume_client(&server, "u");
    ok.send_json(&json!({"type": "resume", "data": {"user": {"epoch": epoch, "offset": 4}}}));
    let resumed = next_of(&mut ok, "resumed");
    assert_eq!(
        resumed["data"]["streams"]["user:u"]["replayed"], 2,
        "{resumed}"
    );

    server
        .api_delete("/api/v1/streams/user%3Au")
        .expect_status(204);
    server
        .api_get("/api/v1/streams/user%3Au")
        .expect_error(404, "NOT_FOUND");
    let gone = resume_reason(&server, "u", json!({"epoch": epoch, "offset": 6}));
    assert_eq!(gone["reason"], "EPOCH_CHANGED");
    assert_eq!(gone["epoch"], Value::Null);
    assert_eq!(gone["offset"], 0);
    to_user(&server, "u", "file.ready", json!({}));
    let fresh = server.api_get("/api/v1/streams/user%3Au");
    fresh.expect_status(200);
    assert_ne!(fresh.json["epoch"], epoch, "a new epoch after DELETE");
    assert_eq!(fresh.json["offset"], 1);
    let metrics = server.metrics();
    for line in [
        "wsgate_recovery_total{result=\"recovered\"} 1\n",
        "wsgate_recovery_total{result=\"offset_ahead\"} 1\n",
        "wsgate_recovery_total{result=\"too_many\"} 1\n",
        "wsgate_recovery_total{result=\"epoch_changed\"} 2\n",
        "wsgate_replayed_events_total 2\n",
        "wsgate_epoch_changes_total{cause=\"created\"} 2\n",
        "wsgate_epoch_changes_total{cause=\"deleted\"} 1\n",
        "wsgate_messages_in_total{type=\"resume\"} 5\n",
        "wsgate_messages_out_total{type=\"resumed\"} 5\n",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[test]
fn missed_events_no_longer_retained_are_too_old_and_the_top_still_recovers() {
    let server = TestServer::start(&["--history-size", "2"]);
    let mut c = server.ws("u");
    let mut last = Value::Null;
    for _ in 0..5 {
        to_user(&server, "u", "file.ready", json!({}));
        last = next_of(&mut c, "file.ready");
    }
    let epoch = last["stream"]["epoch"].clone();
    // Kept: 4 and 5. Position 2 needs 3.
    let old = resume_reason(&server, "u", json!({"epoch": epoch, "offset": 2}));
    assert_eq!(old["reason"], "TOO_OLD");
    // Position 3 needs 4 and 5: recovered.
    let mut r = resume_client(&server, "u");
    r.send_json(&json!({"type": "resume", "data": {"user": {"epoch": epoch, "offset": 3}}}));
    let resumed = next_of(&mut r, "resumed");
    assert_eq!(
        resumed["data"]["streams"]["user:u"]["replayed"], 2,
        "{resumed}"
    );
    assert_eq!(offset(&next_of(&mut r, "file.ready")), 4);
    assert_eq!(offset(&next_of(&mut r, "file.ready")), 5);
}

#[test]
fn the_top_recovers_with_nothing_replayed_even_after_the_events_expired() {
    let server = TestServer::start(&["--history-ttl", "1s"]);
    let mut c = server.ws("u");
    to_user(&server, "u", "file.ready", json!({}));
    to_user(&server, "u", "file.ready", json!({}));
    next_of(&mut c, "file.ready");
    let top = next_of(&mut c, "file.ready");
    let epoch = top["stream"]["epoch"].clone();
    assert!(
        wait_until(LONG, || {
            server.api_get("/api/v1/streams/user%3Au").json["events"]
                .as_array()
                .is_some_and(Vec::is_empty)
        }),
        "events expire after --history-ttl"
    );
    let old = resume_reason(&server, "u", json!({"epoch": epoch, "offset": 1}));
    assert_eq!(old["reason"], "TOO_OLD");
    let mut r = resume_client(&server, "u");
    r.send_json(&json!({"type": "resume", "data": {"user": position(&top)}}));
    let resumed = next_of(&mut r, "resumed");
    let entry = &resumed["data"]["streams"]["user:u"];
    assert_eq!(
        (entry["recovered"].clone(), entry["replayed"].clone()),
        (json!(true), json!(0)),
        "{resumed}"
    );
    assert_eq!(resumed["data"]["recovered"], true);
    server.assert_nothing_pending(&mut r);
}

#[test]
fn a_restart_gives_every_stream_a_new_epoch() {
    let secret = crate::support::random_string(32);
    let server = TestServer::builder().secret(&secret).start();
    let mut c = server.ws("u");
    to_user(&server, "u", "file.ready", json!({}));
    let seen = next_of(&mut c, "file.ready");
    drop(c);
    drop(server);
    let server = TestServer::builder().secret(&secret).start();
    to_user(&server, "u", "file.ready", json!({}));
    let entry = resume_reason(&server, "u", position(&seen));
    assert_eq!(entry["reason"], "EPOCH_CHANGED");
    assert_ne!(entry["epoch"], seen["stream"]["epoch"]);
    assert_eq!(entry["offset"], 1);
}

#[test]
fn the_hold_ends_on_another_first_message_and_on_the_timeout() {
    let server = TestServer::start(&["--resume-timeout", "1s"]);
    let mut c = resume_client(&server, "u");
    let held = to_user(&server, "u", "file.ready", json!({}));
    assert_eq!(held["delivered"], 1, "a held event counts as handed over");
    c.send_json(&json!({"type": "ping", "data": {"pingId": "p"}}));
    let pong = next_of(&mut c, "pong");
    assert_eq!(
        pong["data"]["pingId"], "p",
        "the first message is handled normally"
    );
    let m = next_of(&mut c, "file.ready");
    assert_eq!(m["id"], held["id"], "then the held event follows");
    server.assert_nothing_pending(&mut c);

    let started = Instant::now();
    let mut t = resume_client(&server, "t");
    let held = to_user(&server, "t", "file.ready", json!({}));
    let m = next_of(&mut t, "file.ready");
    assert_eq!(m["id"], held["id"]);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "held until --resume-timeout, got it after {:?}",
        started.elapsed()
    );
    // No `resumed` after a hold that ended without `resume`.
    server.assert_nothing_pending(&mut t);
}

#[test]
fn held_events_count_against_the_queue_budget() {
    let server = TestServer::start(&["--max-queued-bytes", "4096", "--max-message-size", "4096"]);
    let mut c = resume_client(&server, "u");
    let big = "x".repeat(1500);
    for _ in 0..3 {
        to_user(&server, "u", "file.ready", json!({"pad": big}));
    }
    let (code, _) = c.expect_close_within(LONG);
    assert_eq!(code, 4008);
    // The one that did not fit and the two held before it: all counted.
    let dropped = || -> f64 {
        server
            .metrics()
            .lines()
            .filter(|l| l.starts_with("wsgate_messages_dropped_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        wait_until(LONG, || dropped() == 3.0),
        "dropped {}",
        dropped()
    );
}

#[test]
fn malformed_positions_are_invalid_messages_and_keep_the_connection() {
    let server = TestServer::start(&[]);
    let mut c = server.ws("u");
    for bad in [
        json!({"type": "subscribe", "id": 1, "data": {"events": ["file.ready"],
            "since": {"upload.progress": {"epoch": "AAAAAAAA", "offset": 1}}}}),
        json!({"type": "subscribe", "id": 2, "data": {"events": ["file.ready"],
            "since": {"file.ready": {"epoch": "AAAAAAAA", "offset": -1}}}}),
        json!({"type": "subscribe", "id": 3, "data": {"events": ["file.ready"], "cache": "yes"}}),
        json!({"type": "resume", "id": 4, "data": {"user": {"offset": 1}}}),
        json!({"type": "resume", "id": 5, "data": {"events": ["file.ready"]}}),
    ] {
        c.send_json(&bad);
        let error = next_of(&mut c, "error");
        assert_eq!(error["data"]["code"], "INVALID_MESSAGE", "{bad} -> {error}");
        assert_eq!(error["reply_to"], bad["id"]);
    }
    server.assert_nothing_pending(&mut c);
}

#[test]
fn resume_subscribes_and_a_bad_event_name_ends_the_hold_after_the_error() {
    let server = TestServer::start(&[]);
    let mut c = resume_client(&server, "u");
    let held = to_user(&server, "u", "file.ready", json!({}));
    c.send_json(&json!({"type": "resume", "id": 7, "data": {"events": {"no.such": null}}}));
    let error = next_of(&mut c, "error");
    assert_eq!(error["data"]["code"], "INVALID_SUBSCRIPTION");
    assert_eq!(error["reply_to"], 7);
    assert_eq!(next_of(&mut c, "file.ready")["id"], held["id"]);

    let mut r = resume_client(&server, "v");
    r.send_json(&json!({"type": "resume", "data": {"events": {"review.updated": null}}}));
    let resumed = next_of(&mut r, "resumed");
    assert_eq!(resumed["data"]["subscriptions"], json!(["review.updated"]));
    assert_eq!(resumed["data"]["topics"], json!([]));
    assert_eq!(
        resumed["data"]["streams"]["event:review.updated"],
        json!({"epoch": null, "offset": 0})
    );
    server
        .api_post("/api/v1/reviews/9/updated", &json!({"changes": {"a": 1}}))
        .expect_status(200);
    let m = next_of(&mut r, "review.updated");
    assert_eq!(m["stream"]["name"], "event:review.updated");
}

#[test]
fn subscribe_since_a_position_replays_what_came_after_it() {
    let server = TestServer::start(&[]);
    let mut c = server.ws("u");
    c.send_json(&json!({"type": "subscribe", "data": {"events": ["upload.progress"]}}));
    next_of(&mut c, "subscription.confirmed");
    let mut sent = Vec::new();
    for n in 0..3 {
        let answer = server.api_post(
            "/api/v1/events",
            &json!({"type": "upload.progress", "data": {"upload_id": "a", "n": n}}),
        );
        sent.push(answer.json);
    }
    let first = next_of(&mut c, "upload.progress");

    let mut late = server.ws("w");
    late.send_json(&json!({"type": "subscribe", "id": "s", "data": {
        "events": ["upload.progress", "file.ready"],
        "since": {"upload.progress": position(&first)}}}));
    let confirmed = next_of(&mut late, "subscription.confirmed");
    let entry = &confirmed["data"]["streams"]["event:upload.progress"];
    assert_eq!(entry["recovered"], true, "{confirmed}");
    assert_eq!(entry["replayed"], 2);
    assert_eq!(
        confirmed["data"]["streams"]["event:file.ready"],
        json!({"epoch": null, "offset": 0})
    );
    for answer in &sent[1..] {
        assert_eq!(next_of(&mut late, "upload.progress")["id"], answer["id"]);
    }
    server.assert_nothing_pending(&mut late);
}

#[test]
fn the_last_value_cache_sends_current_progress_and_an_end_clears_it() {
    let server = TestServer::start(&[]);
    let progress = |id: &str, p: u64| {
        to_user(
            &server,
            "u",
            "upload.progress",
            json!({"upload_id": id, "progress": p}),
        )
    };
    progress("a", 10);
    let a = progress("a", 50);
    let b = progress("b", 20);
    to_user(&server, "u", "file.ready", json!({}));

    let mut c = resume_client(&server, "u");
    c.send_json(&json!({"type": "resume", "data": {"cache": true}}));
    let resumed = next_of(&mut c, "resumed");
    assert_eq!(
        resumed["data"]["streams"]["user:u"]["offset"], 4,
        "{resumed}"
    );
    let first = next_of(&mut c, "upload.progress");
    let second = next_of(&mut c, "upload.progress");
    assert_eq!(
        (first["id"].clone(), second["id"].clone()),
        (a["id"].clone(), b["id"].clone())
    );
    assert_eq!(first["cached"], true);
    assert_eq!(first["data"]["progress"], 50);
    assert_eq!((offset(&first), offset(&second)), (2, 3), "offset order");
    server.assert_nothing_pending(&mut c);

    to_user(&server, "u", "upload.completed", json!({"upload_id": "a"}));
    let mut d = resume_client(&server, "u");
    d.send_json(&json!({"type": "resume", "data": {"cache": true}}));
    next_of(&mut d, "resumed");
    let only = next_of(&mut d, "upload.progress");
    assert_eq!(only["id"], b["id"], "upload a ended: only b is cached");
    server.assert_nothing_pending(&mut d);

    let metrics = server.metrics();
    assert!(
        metrics.contains("wsgate_last_value_sent_total 3\n"),
        "{metrics}"
    );
}

#[test]
fn the_streams_api_reads_by_the_recovery_rule() {
    let server = TestServer::start(&[]);
    let mut c = server.ws("u");
    let mut delivered = Vec::new();
    for n in 0..4 {
        to_user(&server, "u", "file.ready", json!({"n": n}));
        delivered.push(next_of(&mut c, "file.ready"));
    }
    let epoch = delivered[0]["stream"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_owned();
    let all = server.api_get("/api/v1/streams/user%3Au");
    all.expect_status(200);
    assert_eq!(all.json["name"], "user:u");
    assert_eq!(all.json["offset"], 4);
    assert!(all.json.get("recovered").is_none());
    assert_eq!(all.json["events"], json!(delivered), "exactly as delivered");

    let since = server.api_get(&format!("/api/v1/streams/user%3Au?since={epoch}:1&limit=2"));
    assert_eq!(since.json["recovered"], true);
    assert_eq!(since.json["events"], json!(delivered[1..3]));
    let wrong = server.api_get("/api/v1/streams/user%3Au?since=AAAAAAAA:1");
    assert_eq!(wrong.json["recovered"], false);
    assert_eq!(wrong.json["reason"], "EPOCH_CHANGED");
    assert_eq!(wrong.json["events"], json!([]));
    server
        .api_get("/api/v1/streams/user%3Au?since=nonsense")
        .expect_error(400, "BAD_REQUEST");
    server
        .api_get("/api/v1/streams/user%3Anobody")
        .expect_error(404, "NOT_FOUND");
    let metrics = server.metrics();
    assert!(
        metrics.contains("wsgate_history_appends_total{kind=\"user\"} 4\n"),
        "{metrics}"
    );
}

#[test]
fn history_size_0_is_v1() {
    let server = TestServer::start(&["--history-size", "0"]);
    let mut c = server.ws("u");
    // v1's three, then only what SPEC-v2 §1 lists always (no recovery).
    assert_eq!(
        c.established["data"]["features"],
        json!([
            "heartbeat",
            "subscriptions",
            "rate_limiting",
            "token_refresh"
        ])
    );
    c.send_json(&json!({"type": "subscribe", "data": {"events": ["file.ready"]}}));
    let confirmed = next_of(&mut c, "subscription.confirmed");
    assert!(confirmed["data"].get("streams").is_none(), "{confirmed}");
    let answer = to_user(&server, "u", "file.ready", json!({}));
    assert!(answer.get("streams").is_none(), "{answer}");
    let m = next_of(&mut c, "file.ready");
    assert!(m.get("stream").is_none(), "{m}");
    let mut r = resume_client(&server, "u");
    r.send_json(&json!({"type": "resume", "data": {"user": {"epoch": "AAAAAAAA", "offset": 1}}}));
    let resumed = next_of(&mut r, "resumed");
    assert_eq!(
        resumed["data"]["streams"]["user:u"]["reason"],
        "HISTORY_DISABLED"
    );
    server
        .api_get("/api/v1/streams/user%3Au")
        .expect_error(404, "NOT_FOUND");
}
