//! Calls to the application backend (`--webhook-url`) for client requests
//! it must act on (`upload.cancel`).
//!
//! Shards hand a ready JSON body to [`WebhookQueue::submit`], which never
//! blocks: the queue is bounded and a full queue drops (and counts) the
//! call. One tracked worker task POSTs each body with the API key as
//! bearer, retrying with exponential backoff. A failing webhook never
//! affects a connection.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::{DropReason, Metrics};

const QUEUE_CAPACITY: usize = 1024;
const MAX_ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct WebhookQueue {
    tx: mpsc::Sender<Bytes>,
    metrics: Arc<Metrics>,
}

impl WebhookQueue {
    /// Queues a POST; never blocks. A full queue drops the call.
    pub fn submit(&self, body: Vec<u8>) {
        if self.tx.try_send(Bytes::from(body)).is_err() {
            self.metrics.dropped(DropReason::WebhookQueueFull, 1);
            tracing::warn!("webhook queue full; call dropped");
        }
    }
}

/// Starts the worker and returns the queue that feeds it.
pub fn spawn(
    url: hyper::Uri,
    api_key: Option<String>,
    metrics: Arc<Metrics>,
    tracker: &TaskTracker,
    shutdown: CancellationToken,
) -> WebhookQueue {
    let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE_CAPACITY);
    let worker_metrics = metrics.clone();
    tracker.spawn(async move {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        loop {
            let body = tokio::select! {
                _ = shutdown.cancelled() => break,
                body = rx.recv() => match body { Some(b) => b, None => break },
            };
            let delivered = tokio::select! {
                _ = shutdown.cancelled() => break,
                ok = deliver(&client, &url, api_key.as_deref(), body) => ok,
            };
            if !delivered {
                worker_metrics.dropped(DropReason::WebhookFailed, 1);
            }
        }
    });
    WebhookQueue { tx, metrics }
}

async fn deliver(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    url: &hyper::Uri,
    api_key: Option<&str>,
    body: Bytes,
) -> bool {
    let mut backoff = FIRST_BACKOFF;
    for attempt in 1..=MAX_ATTEMPTS {
        let mut request = Request::post(url.clone()).header("content-type", "application/json");
        if let Some(key) = api_key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let Ok(request) = request.body(Full::new(body.clone())) else {
            return false;
        };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, client.request(request)).await {
            Ok(Ok(response)) if response.status().is_success() => return true,
            Ok(Ok(response)) => {
                tracing::warn!(attempt, status = %response.status(), "webhook refused the call")
            }
            Ok(Err(error)) => tracing::warn!(attempt, %error, "webhook call failed"),
            Err(_) => tracing::warn!(attempt, "webhook call timed out"),
        }
        if attempt < MAX_ATTEMPTS {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
    false
}
