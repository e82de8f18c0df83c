//! How many connections a listener holds open at once, and how long an HTTP connection
//! may sit idle or stall in a request body.
//!
//! Each open connection costs a file handle, a task and its buffers (about 50 KB for an
//! idle HTTP connection), so without bounds a client that opens connections and sends
//! nothing (or a request body one byte a minute) can take a listener's memory and file
//! handles until it serves no one. A listener therefore counts its connections against a
//! cap: past it, a new connection is refused at once (HTTP with a 503 and a reason,
//! syslog by closing it), counted, and logged once per episode, while the connections
//! already open carry on. Syslog connections get no idle timeout: syslog senders keep one
//! connection for ever and may be quiet for hours, and rsyslog loses the first message it
//! sends on a connection the server closed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::transport::metrics::IngestMetrics;

/// Connections one listener holds open at once unless configured otherwise: a few
/// thousand shippers each keeping a connection, at most about 200 MB of idle buffers.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// How long an HTTP connection may wait for its next request, or take to send a request
/// head, before it is closed: longer than the keep-alive of the usual shippers (Filebeat
/// 60 s, Fluent Bit, Vector and Logstash less), so they close first.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How long a request body may go without a byte before the request is answered 408
/// and the connection closed (nginx's `client_body_timeout` is 60 s).
pub const DEFAULT_BODY_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long an HTTP answer may wait for its client to read it before the connection is
/// closed: without it, a client that sends requests and never reads the answers keeps
/// its connection, and its place under the cap, for ever (hyper's timers only watch the
/// reading side).
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a stopping listener lets a connection finish what it is in the middle of (an
/// HTTP request, a syslog message). A client still sending then is cut off (an HTTP
/// request unanswered, which a shipper sends again; a syslog message dead-lettered with
/// what arrived), so the stage's shutdown does not wait on it.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A listener's connection cap and the metrics that show it.
#[derive(Clone)]
pub struct Connections {
    slots: Arc<Semaphore>,
    max: usize,
    open: IntGauge,
    refused: IntCounter,
    refusing: Arc<AtomicBool>,
    listener: Arc<str>,
    idle_timeout: Duration,
    write_stall_timeout: Duration,
}

impl Connections {
    /// A cap of `max` connections for the listener named `listener` (its transport and
    /// address, as the metrics label it), counted in `metrics`.
    pub fn new(max: usize, listener: &str, metrics: &IngestMetrics) -> Self {
        let (open, refused) = metrics.listener(listener);
        Connections {
            slots: Arc::new(Semaphore::new(max)),
            max,
            open,
            refused,
            refusing: Arc::new(AtomicBool::new(false)),
            listener: listener.into(),
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            write_stall_timeout: WRITE_STALL_TIMEOUT,
        }
    }

    /// The defaults, with metrics nobody serves: for tests and tools.
    pub fn unmetered(listener: &str) -> Self {
        Self::new(
            DEFAULT_MAX_CONNECTIONS,
            listener,
            &IngestMetrics::unregistered(),
        )
    }

    /// How long an HTTP connection may be idle between requests (see
    /// [`DEFAULT_IDLE_TIMEOUT`]); syslog listeners ignore it.
    #[must_use]
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How long an HTTP answer may wait for its client to read it (see
    /// [`WRITE_STALL_TIMEOUT`]); syslog listeners write nothing.
    #[must_use]
    pub fn with_write_stall_timeout(mut self, timeout: Duration) -> Self {
        self.write_stall_timeout = timeout;
        self
    }

    pub fn write_stall_timeout(&self) -> Duration {
        self.write_stall_timeout
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn idle_timeout(&self) -> Duration {
        self.idle_timeout
    }

    /// Connections open now.
    pub fn open(&self) -> i64 {
        self.open.get()
    }

    /// Connections refused because the cap was reached, since the start.
    pub fn refused(&self) -> u64 {
        self.refused.get()
    }

    /// A slot for a new connection, held until the connection ends; `None` (counted,
    /// logged once until a slot is free again) when the listener is at its cap.
    pub(crate) fn admit(&self, peer: std::net::SocketAddr) -> Option<Slot> {
        match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => {
                if self.refusing.swap(false, Ordering::Relaxed) {
                    tracing::info!(listener = %self.listener, max_connections = self.max, "accepting connections again");
                }
                self.open.inc();
                Some(Slot {
                    _permit: permit,
                    open: self.open.clone(),
                })
            }
            Err(_) => {
                self.refused.inc();
                if !self.refusing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(listener = %self.listener, max_connections = self.max, peer = %peer, "connection refused: the listener is at its connection cap");
                }
                None
            }
        }
    }
}

/// One connection's place under the cap.
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    open: IntGauge,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.open.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_past_the_cap_are_refused_and_counted_until_one_closes() {
        let connections = Connections::new(2, "test", &IngestMetrics::unregistered());
        let peer = "127.0.0.1:9".parse().unwrap();
        let first = connections.admit(peer).unwrap();
        let _second = connections.admit(peer).unwrap();
        assert_eq!(connections.open(), 2);
        assert!(connections.admit(peer).is_none());
        assert!(connections.admit(peer).is_none());
        assert_eq!(connections.refused(), 2);
        drop(first);
        assert_eq!(connections.open(), 1);
        assert!(connections.admit(peer).is_some());
        assert_eq!(connections.refused(), 2);
    }
}
