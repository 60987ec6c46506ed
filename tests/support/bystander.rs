//! The well-behaved bystander of a hostile-client test: a subscribed client
//! read on its own thread, and a publisher numbering every event with
//! `data.seq`, so a test can prove the bystander got every message, in
//! order, while something else misbehaves.

use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::server::TestServer;
use super::ws::{Incoming, WsClient};

/// The event the bystander subscribes to and the publisher sends.
pub const EVENT: &str = "review.created";

pub struct Bystander {
    rx: Receiver<Value>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    /// The next `seq` to publish.
    published: u64,
    /// The next `seq` the bystander must receive.
    received: u64,
}

impl Bystander {
    /// Connects `user`, subscribes to [`EVENT`] and starts reading.
    pub fn start(server: &TestServer, user: &str) -> Bystander {
        let mut c = server.ws(user);
        c.subscribe(&[EVENT]);
        Self::watch(c)
    }

    /// Starts reading an already subscribed client.
    pub fn watch(mut c: WsClient) -> Bystander {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                let v = match c.next_within(Duration::from_millis(100)) {
                    Some(Incoming::Text(t)) => {
                        serde_json::from_str(&t).unwrap_or(json!({"raw": t}))
                    }
                    Some(Incoming::Close(code, reason)) => {
                        json!({"closed": code, "reason": reason})
                    }
                    Some(Incoming::Gone(e)) => json!({"gone": e}),
                    _ => continue,
                };
                let last = v.get("closed").is_some() || v.get("gone").is_some();
                if tx.send(v).is_err() || last {
                    return;
                }
            }
        });
        Bystander {
            rx,
            stop,
            handle: Some(handle),
            published: 0,
            received: 0,
        }
    }

    /// Publishes `n` numbered events to the subscribers (`extra` fields are
    /// merged into `data`).
    pub fn publish(&mut self, server: &TestServer, n: u64, extra: &Value) {
        for _ in 0..n {
            let mut data = json!({"seq": self.published});
            if let (Some(d), Some(e)) = (data.as_object_mut(), extra.as_object()) {
                for (k, v) in e {
                    d.insert(k.clone(), v.clone());
                }
            }
            server
                .api_post("/api/v1/events", &json!({"type": EVENT, "data": data}))
                .expect_status(200);
            self.published += 1;
        }
    }

    /// Asserts the bystander received every published seq so far, in order.
    pub fn expect_all(&mut self) {
        while self.received < self.published {
            let m = self
                .rx
                .recv_timeout(Duration::from_secs(15))
                .unwrap_or_else(|_| {
                    panic!(
                        "the well-behaved subscriber stopped receiving at seq {} of {}",
                        self.received, self.published
                    )
                });
            assert_eq!(m["type"], EVENT, "well-behaved subscriber got {m}");
            assert_eq!(
                m["data"]["seq"], self.received,
                "the well-behaved subscriber must get every message in order"
            );
            self.received += 1;
        }
    }

    /// Publishes `n` more events and checks the bystander got everything.
    pub fn publish_and_check(&mut self, server: &TestServer, n: u64) {
        self.publish(server, n, &json!({}));
        self.expect_all();
    }

    pub fn published(&self) -> u64 {
        self.published
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Asserts `GET /health` answers 200 `{"status": "ok"}` within a second.
pub fn assert_healthy(server: &TestServer) {
    let started = Instant::now();
    let r = server.get_public("/health");
    r.expect_status(200);
    assert_eq!(r.json["status"], "ok", "health body {:?}", r.text);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "/health took {:?}",
        started.elapsed()
    );
}
