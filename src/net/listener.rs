//! The accept loop: binds with a deep backlog, sets `TCP_NODELAY`, runs
//! the TLS handshake when TLS is on, and serves each connection with
//! hyper's HTTP/1.1 (upgrades enabled).
//!
//! It bounds the connections that have not upgraded yet (TLS handshakes,
//! requests being read, idle keep-alive API connections) to
//! `--max-pending-connections`: past it a new connection is accepted and
//! closed at once, so the kernel backlog keeps draining and the refusal is
//! counted. `--header-read-timeout` bounds how long each may stay idle.
//! (Accept-then-close refusals hold a place of that cap too, after their
//! upgrade: see `http::refusal`.)
//!
//! It stops accepting when shutdown is signalled and asks open HTTP
//! connections to finish gracefully. Upgraded WebSockets are not its
//! business: they belong to the shards from the 101 on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::rt::{Read, Write};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::tls::TlsState;
use crate::http::{route, AppState};
use crate::metrics::RefusalReason;

const BACKLOG: u32 = 4096;
/// hyper's read buffer, which also caps the request head's size.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Pause after `accept` fails (e.g. out of file descriptors) so the loop
/// doesn't spin while the condition lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

pub async fn accept_loop(
    listener: TcpListener,
    state: Arc<AppState>,
    tls: Option<Arc<TlsState>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
) {
    let pending = state.pending.clone();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Held until the connection closes or is handed to a shard.
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            state.metrics.refused(RefusalReason::TooManyPending);
            tracing::debug!("too many pending connections; closed at accept");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let shutdown = shutdown.clone();
        match &tls {
            None => {
                tracker.spawn(serve_http(
                    TokioIo::new(stream),
                    peer,
                    state,
                    shutdown,
                    permit,
                ));
            }
            Some(tls) => {
                let acceptor = tls.acceptor();
                tracker.spawn(async move {
                    // The handshake shares the header timeout: a client
                    // that stalls it holds nothing for long.
                    let timeout = state.config.header_read_timeout;
                    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            serve_http(TokioIo::new(stream), peer, state, shutdown, permit).await
                        }
                        Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

/// Serves one connection until it closes or upgrades; `_pending` is its
/// place among the pending connections, given back on return.
async fn serve_http<IO>(
    io: IO,
    peer: SocketAddr,
    state: Arc<AppState>,
    shutdown: CancellationToken,
    _pending: OwnedSemaphorePermit,
) where
    IO: Read + Write + Unpin + Send + 'static,
{
    // Also the idle limit of a keep-alive connection: hyper restarts this
    // timer whenever it waits for a next request head.
    let header_timeout = state.config.header_read_timeout;
    let service = service_fn(move |request| route(state.clone(), peer, request));
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
