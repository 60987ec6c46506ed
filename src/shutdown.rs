//! Shutdown wiring: the process-wide cancellation signal and the tracker
//! of every spawned task, plus the OS signals that trigger it.
//!
//! Nothing is left to process exit: `app` cancels the token, waits for
//! the tracker to drain (with a deadline), and joins the shard threads.

use tokio_util::sync::CancellationToken;

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn os_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Cancels `token` when an OS signal arrives.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        tokio::select! {
            _ = os_signal() => {
                tracing::info!("shutdown signal received");
                token.cancel();
            }
            _ = token.cancelled() => {}
        }
    });
}
