//! The signals that stop a long-running `kastell` process gracefully.

use std::future::Future;

/// Installs the SIGINT (Ctrl-C) and SIGTERM (what Kubernetes sends a pod it stops)
/// handlers now, and returns what resolves, with the signal's name, on the first of them.
///
/// The handlers are installed before the future is first polled: a signal that arrives
/// while the process is still starting must not end it with the default action.
///
/// # Errors
///
/// When the signal handlers cannot be installed.
pub fn on_signal() -> std::io::Result<impl Future<Output = &'static str> + Send> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => "SIGINT",
            _ = terminate.recv() => "SIGTERM",
        }
    })
}
