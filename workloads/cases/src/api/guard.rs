//! Bounds on the connections an API listener serves: how many at once, and how long one
//! may go without a byte in either direction.
//!
//! axum's `serve` gives hyper no timer, so a connection that sends nothing (or a request
//! a byte a minute, or never reads its answer) is held for ever with its task, buffers
//! and file handle; enough of them and the API serves no one. The listener is wrapped
//! instead of the server, so the same bounds serve plain HTTP, HTTPS and the health
//! endpoints: at the cap the listener stops accepting (new clients wait in the kernel's
//! backlog until a connection ends), and a connection idle for the timeout fails its
//! pending read or write, which ends it. The API's handlers answer in milliseconds and it
//! has no streaming answers, so a connection with no byte moving for that long is
//! abandoned, not busy.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use kastell_core::stall::{StallTimeout, Watch};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections an API listener serves at once.
pub const MAX_API_CONNECTIONS: usize = 1024;

/// How long an API connection may go without a byte read or written.
pub const API_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// A listener whose connections are capped in number and closed when idle.
pub struct Guarded<L> {
    inner: L,
    slots: Arc<Semaphore>,
    max: usize,
    idle: Duration,
    /// Whether the last accept found the cap reached, so an episode is logged once.
    at_cap: bool,
}

impl<L> Guarded<L> {
    /// The API's defaults: [`MAX_API_CONNECTIONS`], [`API_IDLE_TIMEOUT`].
    pub fn new(inner: L) -> Self {
        Self::with_limits(inner, MAX_API_CONNECTIONS, API_IDLE_TIMEOUT)
    }

    pub fn with_limits(inner: L, max: usize, idle: Duration) -> Self {
        Guarded {
            inner,
            slots: Arc::new(Semaphore::new(max)),
            max,
            idle,
            at_cap: false,
        }
    }
}

impl<L: Listener> Listener for Guarded<L> {
    /// The connection, failing once no byte has moved either way for the timeout, and
    /// holding its place under the cap until dropped.
    type Io = StallTimeout<L::Io, OwnedSemaphorePermit>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let permit = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => {
                self.at_cap = false;
                permit
            }
            Err(_) => {
                if !self.at_cap {
                    tracing::warn!(
                        max_connections = self.max,
                        "api listener at its connection cap: new connections wait"
                    );
                    self.at_cap = true;
                }
                match Arc::clone(&self.slots).acquire_owned().await {
                    Ok(permit) => permit,
                    // The semaphore is never closed.
                    Err(_) => std::future::pending().await,
                }
            }
        };
        let (io, addr) = self.inner.accept().await;
        let io = StallTimeout::new(io, self.idle, Watch::ReadsAndWrites).holding(permit);
        (io, addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_connection_without_traffic_fails_after_the_timeout_and_frees_its_slot() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut guarded = Guarded::with_limits(listener, 1, Duration::from_millis(300));
        let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut served, _) = guarded.accept().await;
        assert_eq!(guarded.slots.available_permits(), 0);
        // Bytes that move keep it alive.
        client.write_all(b"ab").await.unwrap();
        let mut two = [0u8; 2];
        served.read_exact(&mut two).await.unwrap();
        // Then silence: the pending read fails, not hangs.
        let mut rest = [0u8; 1];
        let silent = tokio::time::timeout(Duration::from_secs(60), served.read(&mut rest))
            .await
            .expect("the idle read did not end");
        assert_eq!(silent.unwrap_err().kind(), io::ErrorKind::TimedOut);
        drop(served);
        assert_eq!(guarded.slots.available_permits(), 1);
        drop(client);
    }

    #[tokio::test]
    async fn at_the_cap_the_next_connection_waits_for_a_slot() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut guarded = Guarded::with_limits(listener, 1, Duration::from_secs(60));
        let _first_client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (first, _) = guarded.accept().await;
        let _second_client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let waiting = tokio::time::timeout(Duration::from_millis(200), guarded.accept()).await;
        assert!(waiting.is_err(), "accepted past the cap");
        drop(first);
        let accepted = tokio::time::timeout(Duration::from_secs(60), guarded.accept()).await;
        assert!(accepted.is_ok(), "a freed slot was not taken");
    }
}
