//! Syslog over TCP (RFC 6587): one task per connection, framed by
//! [`SyslogFramer`], each message admitted to the Sensor's inlet before the next is read,
//! so a full bus stops the reads and TCP's window slows the sender. A connection's
//! messages are published without waiting for each to be stored ([`StoredInBackground`],
//! at most [`PUBLISH_WINDOW`] in flight), as syslog acknowledges nothing per message. The
//! TLS listener (`syslog_tls`) reuses [`read_stream`] after its handshake.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kastell_core::bus::{Bus, StoredInBackground};
use tokio::io::AsyncRead;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
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

/// How long a connection that is inside a message when the listener stops may take to
/// finish it (the listeners' common grace); what it has not sent by then is
/// dead-lettered as `truncated_frame`.
pub use crate::transport::connections::SHUTDOWN_GRACE;

/// What [`next_frame`] found.
enum Next<'a> {
    Frame(std::io::Result<Option<SyslogFrame<'a>>>),
    /// The listener stopped with no message begun: nothing of the stream is held.
    Stop,
    /// The listener stopped inside a message that did not end within the grace.
    Cut,
}

/// The connection's next frame. Once `shutdown` is cancelled (and `stop_by` set), only a
/// message already begun is waited for, and only until `stop_by`.
async fn next_frame<'f, S: AsyncRead + Unpin>(
    framer: &'f mut SyslogFramer<S>,
    begun: &AtomicBool,
    shutdown: &CancellationToken,
    stop_by: &mut Option<Instant>,
) -> Next<'f> {
    let next = framer.next();
    tokio::pin!(next);
    if stop_by.is_none() {
        tokio::select! {
            biased;
            frame = &mut next => return Next::Frame(frame),
            () = shutdown.cancelled() => *stop_by = Some(Instant::now() + SHUTDOWN_GRACE),
        }
    } else {
        // Polled once, so that it takes in what is already buffered.
        tokio::select! {
            biased;
            frame = &mut next => return Next::Frame(frame),
            () = std::future::ready(()) => {}
        }
    }
    if !begun.load(Ordering::Relaxed) {
        return Next::Stop;
    }
    let deadline = stop_by.unwrap_or_else(Instant::now);
    tokio::select! {
        frame = &mut next => Next::Frame(frame),
        () = tokio::time::sleep_until(deadline) => Next::Cut,
    }
}

/// Reads one connection's messages to its end (or to shutdown) into the inlet. At
/// shutdown a message in progress gets [`SHUTDOWN_GRACE`] to arrive whole; one that does
/// not is dead-lettered with what was received of it, so nothing read is lost.
pub(crate) async fn read_stream<S: AsyncRead + Unpin>(
    stream: S,
    peer: SocketAddr,
    origin: &str,
    inlet: &Inlet,
    framing: Framing,
    shutdown: &CancellationToken,
) {
    let mut framer = SyslogFramer::new(stream, framing, inlet.max_record_bytes());
    let begun = framer.begun();
    let published = StoredInBackground::new(inlet.bus(), PUBLISH_WINDOW);
    let mut seq = 0u64;
    let mut stop_by = None;
    loop {
        let frame = match next_frame(&mut framer, &begun, shutdown, &mut stop_by).await {
            Next::Frame(Ok(Some(frame))) => frame,
            Next::Frame(Ok(None)) | Next::Stop => break,
            Next::Frame(Err(e)) => {
                tracing::info!(sensor = inlet.sensor(), peer = %peer, reason = %e, "syslog connection failed");
                break;
            }
            Next::Cut => {
                let (held, received) = framer.unfinished().unwrap_or_default();
                seq += 1;
                let mut frame = Frame::new(origin, seq, held).from_peer(peer);
                frame.len = received;
                let reason = format!(
                    "the listener stopped {received} bytes into a message, which did not end \
                     within {} s",
                    SHUTDOWN_GRACE.as_secs()
                );
                if let Err(e) = inlet
                    .reject(frame, TransportReject::TruncatedFrame, reason)
                    .await
                {
                    tracing::warn!(sensor = inlet.sensor(), peer = %peer, reason = %kastell_core::error_chain(&e), "syslog connection: the bus refused a cut message");
                }
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
        SyslogFrame::Truncated {
            bytes,
            received,
            expected,
        } => {
            let mut frame = Frame::new(origin, seq, bytes).from_peer(peer);
            frame.len = received;
            let reason =
                format!("the connection closed {received} bytes into a {expected}-byte message");
            inlet
                .reject(frame, TransportReject::TruncatedFrame, reason)
                .await?;
        }
    }
    Ok(())
}
