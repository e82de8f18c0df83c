//! Syslog over UDP (RFC 5426): one message per datagram. UDP cannot slow a sender: while
//! the bus is full the listener stops reading and the kernel's receive buffer drops
//! what does not fit, which is why the docs recommend TCP or TLS for anything that must
//! not be lost.

use std::sync::Arc;

use kastell_core::bus::StoredInBackground;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::source::PUBLISH_WINDOW;
use crate::transport::inlet::{Frame, Inlet};

/// The largest UDP payload; a datagram is read whole or not at all.
const MAX_DATAGRAM: usize = 65_535;

/// Receives datagrams until `shutdown` is cancelled.
///
/// # Errors
///
/// When the bus refuses a message (it was closed).
pub async fn serve_udp(
    socket: UdpSocket,
    inlet: Arc<Inlet>,
    shutdown: CancellationToken,
) -> Result<(), crate::IngestError> {
    let origin = match socket.local_addr() {
        Ok(local) => format!("syslog-udp:{local}"),
        Err(_) => "syslog-udp".to_owned(),
    };
    tracing::info!(sensor = inlet.sensor(), origin = %origin, "syslog udp listening");
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // Datagrams are published without waiting for each to be stored: the kernel drops
    // what arrives while the listener waits, so the listener waits only for a full window.
    let published = StoredInBackground::new(inlet.bus(), PUBLISH_WINDOW);
    let received = receive(&socket, &inlet, &origin, &mut buf, &published, &shutdown).await;
    let stored = published
        .finish()
        .await
        .map_err(|source| crate::IngestError::events_not_stored(&origin, 0, source));
    received.and(stored)
}

/// Reads datagrams into the inlet until shutdown or the bus refuses one.
async fn receive(
    socket: &UdpSocket,
    inlet: &Inlet,
    origin: &str,
    buf: &mut [u8],
    published: &StoredInBackground<'_>,
    shutdown: &CancellationToken,
) -> Result<(), crate::IngestError> {
    let mut seq = 0u64;
    loop {
        let (len, peer) = tokio::select! {
            received = socket.recv_from(buf) => match received {
                Ok(pair) => pair,
                Err(e) => {
                    // ICMP errors of earlier sends and the like: the socket stays usable.
                    tracing::debug!(sensor = inlet.sensor(), reason = %e, "udp receive failed");
                    continue;
                }
            },
            () = shutdown.cancelled() => return Ok(()),
        };
        seq += 1;
        let message = trim_message(&buf[..len]);
        let max = inlet.max_record_bytes();
        let mut frame = Frame::new(origin, seq, &message[..message.len().min(max)]).from_peer(peer);
        frame.len = message.len();
        let Some(_admission) = inlet.admit(1).await else {
            return Ok(());
        };
        inlet.ingest_on(frame, published).await?;
    }
}

/// A datagram without the line end or NUL some senders append.
fn trim_message(datagram: &[u8]) -> &[u8] {
    let end = datagram
        .iter()
        .rposition(|b| !matches!(b, b'\n' | b'\r' | b'\0'))
        .map_or(0, |i| i + 1);
    &datagram[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailing_line_ends_and_nuls_are_trimmed() {
        assert_eq!(trim_message(b"<13>x\r\n\0"), b"<13>x");
        assert_eq!(trim_message(b"\n"), b"");
        assert_eq!(trim_message(b"<13>a\nb"), b"<13>a\nb");
    }
}
