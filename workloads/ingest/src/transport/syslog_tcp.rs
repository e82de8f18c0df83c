//! Syslog over TCP (RFC 6587): one task per connection, framed by
//! [`SyslogFramer`], each message admitted to the Sensor's inlet before the next is read,
//! so a full bus stops the reads and TCP's window slows the sender. A connection's
//! messages are published without waiting for each to be stored ([`StoredInBackground`],
//! at most [`PUBLISH_WINDOW`] in flight), as syslog acknowledges nothing per message. The
//! TLS listener (`syslog_tls`) reuses [`read_stream`] after its handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kastell_core::bus::{Bus, StoredInBackground};
use tokio::io::AsyncRead;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ingestor::IngestError;
use crate::source::PUBLISH_WINDOW;
use crate::transport::connections::Connections;
use crate::transport::inlet::{Frame, Inlet, TransportReject};
use crate::transport::syslog_framing::{Framing, SyslogFrame, SyslogFramer};

/// Accepts connections until `shutdown` is cancelled, then waits for each connection to
/// finish the message it is on. Past the cap of `connections`, a new connection is
/// closed at once.
///
/// # Errors
///
/// When accepting a connection fails for a reason other than the peer going away.
pub async fn serve_tcp(
    listener: TcpListener,
    inlet: Arc<Inlet>,
    framing: Framing,
    connections: Connections,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let tasks = TaskTracker::new();
    let local = listener.local_addr()?;
    tracing::info!(sensor = inlet.sensor(), listen = %local, max_connections = connections.max(), "syslog tcp listening");
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept_next(&listener, inlet.sensor()) => accepted?,
            () = shutdown.cancelled() => break,
        };
        let Some(slot) = connections.admit(peer) else {
            continue;
        };
        let (inlet, shutdown) = (Arc::clone(&inlet), shutdown.clone());
        tasks.spawn(async move {
            let origin = format!("syslog-tcp:{peer}");
            read_stream(stream, peer, &origin, &inlet, framing, &shutdown).await;
            drop(slot);
        });
    }
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// How long the listener waits before accepting again when the process is out of file
/// handles or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The next connection. Errors of one connection are skipped; running out of file handles
/// or memory (a flood of connections) is waited out, since closing connections frees
/// them: a flood must not end the listener for good.
///
/// # Errors
///
/// Any other accept error, which the socket will not recover from.
pub(crate) async fn accept_next(
    listener: &TcpListener,
    sensor: &str,
) -> std::io::Result<(TcpStream, SocketAddr)> {
    let mut exhausted = false;
    loop {
        match listener.accept().await {
            Ok(pair) => {
                if exhausted {
                    tracing::info!(sensor, "accepting connections again");
                }
                return Ok(pair);
            }
            Err(e) if is_transient(&e) => {}
            Err(e) if is_exhaustion(&e) => {
                if !exhausted {
                    tracing::warn!(sensor, reason = %e, retry_ms = ACCEPT_BACKOFF.as_millis(), "accept failed: out of resources, retrying until connections close");
                    exhausted = true;
                }
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Out of file handles (process or system), socket buffers or memory.
fn is_exhaustion(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Errors of one connection that must not stop the listener.
pub(crate) fn is_transient(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, Interrupted};
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionReset | Interrupted
    )
}

/// Reads one connection's messages to its end (or to shutdown) into the inlet.
pub(crate) async fn read_stream<S: AsyncRead + Unpin>(
    stream: S,
    peer: SocketAddr,
    origin: &str,
    inlet: &Inlet,
    framing: Framing,
    shutdown: &CancellationToken,
) {
    let mut framer = SyslogFramer::new(stream, framing, inlet.max_record_bytes());
    let published = StoredInBackground::new(inlet.bus(), PUBLISH_WINDOW);
    let mut seq = 0u64;
    loop {
        let frame = tokio::select! {
            frame = framer.next() => frame,
            () = shutdown.cancelled() => break,
        };
        let frame = match frame {
            Ok(Some(frame)) => frame,
            Ok(None) => break,
            Err(e) => {
                tracing::info!(sensor = inlet.sensor(), peer = %peer, reason = %e, "syslog connection failed");
                break;
            }
        };
        seq += 1;
        if let Err(e) = deliver(inlet, &published, frame, origin, seq, peer).await {
            tracing::warn!(
                sensor = inlet.sensor(),
                peer = %peer,
                reason = %kastell_core::error_chain(&e),
                "syslog connection closed: the bus refused a message"
            );
            break;
        }
    }
    if let Err(e) = published.finish().await {
        tracing::warn!(
            sensor = inlet.sensor(),
            peer = %peer,
            reason = %kastell_core::error_chain(&e),
            "syslog connection: the bus gave up on a message"
        );
    }
    tracing::debug!(sensor = inlet.sensor(), peer = %peer, messages = seq, "syslog connection ended");
}

async fn deliver(
    inlet: &Inlet,
    bus: &dyn Bus,
    frame: SyslogFrame<'_>,
    origin: &str,
    seq: u64,
    peer: SocketAddr,
) -> Result<(), IngestError> {
    // Waiting here, before the next read, is what pushes back on the sender.
    let Some(_admission) = inlet.admit(1).await else {
        return Ok(());
    };
    match frame {
        SyslogFrame::Message { bytes, len } => {
            let mut frame = Frame::new(origin, seq, bytes).from_peer(peer);
            frame.len = len;
            inlet.ingest_on(frame, bus).await?;
        }
        SyslogFrame::InvalidCount { bytes, reason } => {
            let frame = Frame::new(origin, seq, bytes).from_peer(peer);
            inlet
                .reject(frame, TransportReject::InvalidFrame, reason)
                .await?;
        }
        SyslogFrame::Truncated { bytes, expected } => {
            let frame = Frame::new(origin, seq, bytes).from_peer(peer);
            let reason = format!(
                "the connection closed {} bytes into a {expected}-byte message",
                bytes.len()
            );
            inlet
                .reject(frame, TransportReject::TruncatedFrame, reason)
                .await?;
        }
    }
    Ok(())
}
