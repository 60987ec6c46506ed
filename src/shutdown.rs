//! Shutdown wiring: the process-wide cancellation signal and the tracker
//! of every spawned task, plus the OS signals that trigger it.
//!
//! Nothing is left to process exit: `app` cancels the token, waits for
//! the tracker to drain (with a deadline), and joins the shard threads.

use tokio_util::sync::CancellationToken;

/// Cancels `token` when SIGTERM or SIGINT arrives. The handlers are
/// installed before this returns, so a signal sent right after the ready
/// line is never lost to the default disposition.
pub fn cancel_on_signal(token: CancellationToken) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
                _ = token.cancelled() => return,
            }
            tracing::info!("shutdown signal received");
            token.cancel();
        });
    }
    #[cfg(not(unix))]
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            token.cancel();
        }
    });
    Ok(())
}
