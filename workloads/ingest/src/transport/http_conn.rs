//! Serving the HTTP listener's connections with hyper, so that refusals hyper makes
//! before any handler runs still carry the listener's JSON error body.
//!
//! hyper answers a request it cannot parse (bytes that are not HTTP, a malformed header,
//! a request target over its fixed 64 KiB limit, a head over its buffer) with a status
//! and an empty body, and offers no hook to change that answer. Two measures keep those
//! cases rare:
//!
//! - The head of each connection's first request is read and checked here, with
//!   `httparse` (hyper's own parser) and this listener's limits, before hyper sees the
//!   connection; a head that fails is answered with a JSON error and the connection is
//!   closed. That first request is where non-HTTP bytes arrive (a TLS client on a plain
//!   port, a syslog sender pointed at the wrong port).
//! - hyper's own header limits are set above the listener's ([`HYPER_MAX_HEADERS`],
//!   [`HYPER_MAX_BUF_BYTES`]), so heads of later keep-alive requests that break only the
//!   listener's limits reach [`limit_head`] and get JSON too.
//!
//! What stays hyper's empty answer: a later request on a kept-alive connection that is
//! malformed, whose request target is over 64 KiB or whose head is over
//! [`HYPER_MAX_BUF_BYTES`] (see docs/ingest-transports.md).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Router;
use hyper_util::rt::TokioIo;
use kastell_core::stall::{StallTimeout, Watch};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use crate::transport::connections::{Connections, Slot};
use crate::transport::http::{error_response, MAX_URI_BYTES};
use crate::transport::syslog_tcp::accept_next;

/// The most header fields a request may carry: hyper's own default.
pub const MAX_HEADERS: usize = 100;

/// The longest request head (request line and header fields) answered: nginx's
/// `large_client_header_buffers` allows 4 × 8 KiB lines, this allows a little more.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// hyper's limits, above the listener's so that [`limit_head`] sees what is in between.
const HYPER_MAX_HEADERS: usize = 4 * MAX_HEADERS;
const HYPER_MAX_BUF_BYTES: usize = 1024 * 1024;

/// A client that has not sent its first request head by then is dropped, so idle
/// connections cannot pile up before hyper takes them over.
pub const FIRST_HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a stopping listener lets a request in flight finish (the listeners' common
/// grace).
pub use crate::transport::connections::SHUTDOWN_GRACE;

/// What a client refused because the listener is at its connection cap is told to wait:
/// long enough for idle connections to time out or shippers to close theirs.
const RETRY_AFTER_FULL: Duration = Duration::from_secs(5);

/// How much of a refused request is read and dropped before the connection is closed,
/// and for how long at most.
const LINGER_BYTES: usize = 1024 * 1024;
const LINGER_TIME: Duration = Duration::from_secs(2);

/// How a connection's first request head fared.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// Complete and within the limits: hand the connection to hyper.
    Fine,
    /// Refused with this status, error type and reason.
    Refused(StatusCode, &'static str, String),
    /// The peer closed or stalled before sending a whole head: nothing to answer.
    Gone,
}

/// Checks the head at the start of `buffer`, which holds all that was read so far.
/// `None` means more bytes are needed.
fn check_head(buffer: &[u8]) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let parsed = match request.parse(buffer) {
        Ok(status) => status,
        Err(httparse::Error::TooManyHeaders) => {
            return Some(Head::Refused(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "headers_too_large",
                format!("the request has more than {MAX_HEADERS} header fields"),
            ))
        }
        Err(e) => {
            return Some(Head::Refused(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!(
                    "the request is not valid HTTP/1.1: {e}{}",
                    what_it_looks_like(buffer)
                ),
            ))
        }
    };
    if let httparse::Status::Complete(_) = parsed {
        if let Some(refused) = framing_problem(request.headers) {
            return Some(refused);
        }
    }
    let target_len = request.path.map(str::len).or_else(|| {
        // The request line is not complete yet: its target so far is what follows the
        // first space.
        let start = buffer.iter().position(|b| *b == b' ')?;
        (!buffer.contains(&b'\n')).then(|| buffer.len() - start - 1)
    });
    if let Some(length) = target_len.filter(|l| *l > MAX_URI_BYTES) {
        return Some(Head::Refused(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!(
                "the request target is over the {MAX_URI_BYTES}-byte limit ({length} bytes \
                 read)"
            ),
        ));
    }
    match parsed {
        httparse::Status::Complete(length) if length > MAX_HEAD_BYTES => Some(head_too_large()),
        httparse::Status::Complete(_) => Some(Head::Fine),
        httparse::Status::Partial if buffer.len() > MAX_HEAD_BYTES => Some(head_too_large()),
        httparse::Status::Partial => None,
    }
}

/// What bytes that are not HTTP seem to be, for the reason: the usual mistakes are a TLS
/// client on the plain port and a byte-order mark written before the request.
fn what_it_looks_like(buffer: &[u8]) -> &'static str {
    match buffer {
        [0x16, 0x03, ..] => " (the bytes look like a TLS handshake: this port serves plain HTTP)",
        [0xef, 0xbb, 0xbf, ..] => " (the request starts with a UTF-8 byte-order mark)",
        _ => "",
    }
}

/// The refusal of a head whose body framing hyper would refuse with a bare status: a
/// `Transfer-Encoding` that does not end in `chunked`, an unusable `Content-Length`, or
/// one beyond any body limit (hyper answers that 431).
fn framing_problem(headers: &[httparse::Header<'_>]) -> Option<Head> {
    let bad = |reason: String| {
        Some(Head::Refused(
            StatusCode::BAD_REQUEST,
            "bad_request",
            reason,
        ))
    };
    for header in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
    {
        let value = String::from_utf8_lossy(header.value);
        let last = value.rsplit(',').next().unwrap_or("").trim();
        if !last.eq_ignore_ascii_case("chunked") {
            return bad(format!(
                "Transfer-Encoding {:?} does not end in chunked",
                value.trim()
            ));
        }
    }
    match declared_length(headers) {
        Err(problem) => bad(problem),
        Ok(Some(length)) if length > i64::MAX as u64 => Some(Head::Refused(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request declares a body of {length} bytes, over any body limit"),
        )),
        Ok(_) => None,
    }
}

/// The body length the `Content-Length` fields declare (`None` without one), or why they
/// are unusable: a value that is not a decimal number, or several that disagree (RFC 9112
/// section 6.3). hyper answers these with a bare 400.
fn declared_length(headers: &[httparse::Header<'_>]) -> Result<Option<u64>, String> {
    let mut seen: Option<u64> = None;
    for header in headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        for value in header.value.split(|b| *b == b',') {
            let text = String::from_utf8_lossy(value);
            let text = text.trim();
            let Some(length) = text
                .bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| text.parse::<u64>().ok())
                .flatten()
            else {
                return Err(format!("Content-Length {text:?} is not a number of bytes"));
            };
            match seen {
                Some(earlier) if earlier != length => {
                    return Err(format!(
                        "the request declares two Content-Lengths, {earlier} and {length}"
                    ))
                }
                _ => seen = Some(length),
            }
        }
    }
    Ok(seen)
}

fn head_too_large() -> Head {
    Head::Refused(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "headers_too_large",
        format!("the request head is over the {MAX_HEAD_BYTES}-byte limit"),
    )
}

/// Reads from `io` into `buffer` until the first request head is complete, refused, or
/// the peer goes away.
async fn read_first_head<IO: AsyncRead + Unpin>(io: &mut IO, buffer: &mut Vec<u8>) -> Head {
    let reading = async {
        let mut chunk = [0u8; 8 * 1024];
        loop {
            match io.read(&mut chunk).await {
                Ok(0) | Err(_) => return Head::Gone,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            }
            if let Some(head) = check_head(buffer) {
                return head;
            }
        }
    };
    tokio::time::timeout(FIRST_HEAD_TIMEOUT, reading)
        .await
        .unwrap_or(Head::Gone)
}

/// Writes a JSON refusal as a whole HTTP/1.1 response and closes the connection.
async fn refuse<IO: AsyncRead + AsyncWrite + Unpin>(
    io: &mut IO,
    status: StatusCode,
    kind: &str,
    reason: String,
) {
    let response = error_response(status, kind, reason);
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let retry_after = if status == StatusCode::SERVICE_UNAVAILABLE {
        format!("retry-after: {}\r\n", RETRY_AFTER_FULL.as_secs())
    } else {
        String::new()
    };
    let head = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         x-elastic-product: Elasticsearch\r\n{retry_after}connection: close\r\n\r\n",
        status.as_str(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    );
    let _ = io.write_all(head.as_bytes()).await;
    let _ = io.write_all(&body).await;
    let _ = io.shutdown().await;
    // Closing with the rest of the request unread would make the kernel reset the
    // connection, and a reset can overtake the answer on its way to the client; so what
    // the client is still sending is read and dropped first, within bounds.
    let draining = async {
        let mut sink = [0u8; 8 * 1024];
        let mut left = LINGER_BYTES;
        while left > 0 {
            match io.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, draining).await;
}

/// Serves one connection: its first head checked here, then hyper with the router, the
/// peer's address known to the handlers as `ConnectInfo`.
async fn serve_connection<IO>(
    io: IO,
    peer: SocketAddr,
    router: Router,
    idle_timeout: Duration,
    write_stall_timeout: Duration,
    stop: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Reads are bounded by hyper's header timer and the body stall timeout.
    let mut io = StallTimeout::new(io, write_stall_timeout, Watch::Writes);
    let mut buffer = Vec::with_capacity(4 * 1024);
    // A client still silent when the listener stops has sent nothing to finish.
    let head = tokio::select! {
        head = read_first_head(&mut io, &mut buffer) => head,
        () = stop.cancelled() => Head::Gone,
    };
    match head {
        Head::Fine => {}
        Head::Gone => return,
        Head::Refused(status, kind, reason) => {
            tracing::info!(peer = %peer, status = status.as_u16(), reason = %reason, "http request refused before routing");
            refuse(&mut io, status, kind, reason).await;
            return;
        }
    }
    // What was read is put back in front of the stream for hyper to read again.
    let (read, write) = tokio::io::split(io);
    let io = tokio::io::join(std::io::Cursor::new(buffer).chain(read), write);

    let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        async move {
            Ok::<Response, Infallible>(router.oneshot(request).await.unwrap_or_else(|e| match e {}))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    // hyper starts this timer whenever it waits for a request head, from the end of the
    // previous response on: it is the kept-alive connection's idle timeout, and it bounds
    // a head sent slowly.
    builder
        .max_headers(HYPER_MAX_HEADERS)
        .max_buf_size(HYPER_MAX_BUF_BYTES)
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(idle_timeout);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let ended = tokio::select! {
        ended = connection.as_mut() => ended,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, connection).await {
                Ok(ended) => ended,
                Err(_) => {
                    tracing::info!(peer = %peer, grace_s = SHUTDOWN_GRACE.as_secs(), "http connection closed at shutdown with a request unfinished");
                    return;
                }
            }
        }
    };
    match ended {
        Err(e) if e.is_timeout() => {
            tracing::debug!(peer = %peer, idle_s = idle_timeout.as_secs(), "http connection closed: idle or slow request head");
        }
        Err(e) => tracing::debug!(peer = %peer, reason = %e, "http connection ended with an error"),
        Ok(()) => {}
    }
}

/// Answers a connection the listener has no room for, in its own task and within
/// [`LINGER_TIME`] more than the answer takes, so a flood of them cannot hold the
/// accept loop.
fn refuse_over_cap<IO>(mut io: IO, connections: &Connections)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let reason = format!(
        "the listener is at its cap of {} open connections; retry in {} s",
        connections.max(),
        RETRY_AFTER_FULL.as_secs()
    );
    tokio::spawn(async move {
        let answering = refuse(
            &mut io,
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_connections",
            reason,
        );
        let _ = tokio::time::timeout(LINGER_TIME * 2, answering).await;
    });
}

/// Where a listener's connections come from: a plain TCP listener, or one that hands
/// over connections after their TLS handshake, having taken their place under the cap
/// itself (`Some` slot) before it.
pub(crate) trait Incoming: Send {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    fn accept(
        &mut self,
    ) -> impl std::future::Future<Output = (Self::Io, SocketAddr, Option<Slot>)> + Send;
}

impl Incoming for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept(&mut self) -> (Self::Io, SocketAddr, Option<Slot>) {
        // Running out of file handles is waited out there, as for syslog.
        match accept_next(self, "http").await {
            Ok((stream, peer)) => (stream, peer, None),
            Err(e) => {
                tracing::error!(reason = %e, "http listener stopped accepting");
                std::future::pending().await
            }
        }
    }
}

/// Accepts connections from `listener` until `shutdown` resolves, serving each with
/// [`serve_connection`] while `connections` has room and refusing it otherwise, then lets
/// the requests in flight finish.
pub(crate) async fn serve_listener<L: Incoming>(
    mut listener: L,
    router: Router,
    connections: Connections,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (io, peer, slot) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let Some(slot) = slot.or_else(|| connections.admit(peer)) else {
            refuse_over_cap(io, &connections);
            continue;
        };
        let serving = serve_connection(
            io,
            peer,
            router.clone(),
            connections.idle_timeout(),
            connections.write_stall_timeout(),
            stop.clone(),
        );
        tasks.spawn(async move {
            serving.await;
            drop(slot);
        });
    }
    stop.cancel();
    tasks.close();
    tasks.wait().await;
    Ok(())
}

/// The listener's own limits on every request's head, for the requests hyper parsed
/// itself (those after the first on a connection): JSON refusals instead of hyper's.
pub(crate) async fn limit_head(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let headers = request.headers();
    if headers.len() > MAX_HEADERS {
        return error_response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("the request has more than {MAX_HEADERS} header fields"),
        );
    }
    // Each field as `name: value\r\n`, as it was sent.
    let size: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if size > MAX_HEAD_BYTES {
        return error_response(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("the request head is over the {MAX_HEAD_BYTES}-byte limit"),
        );
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused_status(bytes: &[u8]) -> Option<u16> {
        match check_head(bytes) {
            Some(Head::Refused(status, _, _)) => Some(status.as_u16()),
            _ => None,
        }
    }

    #[test]
    fn heads_are_checked_as_they_arrive() {
        assert_eq!(check_head(b"POST /_bulk HTTP/1.1\r\nhost: x\r\n"), None);
        assert_eq!(
            check_head(b"POST /_bulk HTTP/1.1\r\nhost: x\r\n\r\n"),
            Some(Head::Fine)
        );
        assert_eq!(
            refused_status(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
            Some(400)
        );
        assert_eq!(
            refused_status(b"<34>Oct 11 22:14:15 mymachine su: x\n"),
            Some(400)
        );
        assert_eq!(
            refused_status(b"GET / HTTP/1.1\r\nbad header\r\n\r\n"),
            Some(400)
        );
    }

    fn refused_reason(bytes: &[u8]) -> String {
        match check_head(bytes) {
            Some(Head::Refused(_, _, reason)) => reason,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn common_mistakes_are_named_in_the_reason() {
        assert!(refused_reason(b"\x16\x03\x01\x02\x00\x01")
            .ends_with("(the bytes look like a TLS handshake: this port serves plain HTTP)"));
        assert!(refused_reason(b"\xef\xbb\xbfPOST / HTTP/1.1\r\n\r\n")
            .ends_with("(the request starts with a UTF-8 byte-order mark)"));
        for (head, reason) in [
            (
                "content-length: -1",
                "Content-Length \"-1\" is not a number of bytes",
            ),
            (
                "content-length: 1e3",
                "Content-Length \"1e3\" is not a number of bytes",
            ),
            (
                "content-length: 3\r\ncontent-length: 4",
                "the request declares two Content-Lengths, 3 and 4",
            ),
            (
                "content-length: 3, 4",
                "the request declares two Content-Lengths, 3 and 4",
            ),
        ] {
            let request = format!("POST / HTTP/1.1\r\nhost: x\r\n{head}\r\n\r\n");
            assert_eq!(refused_status(request.as_bytes()), Some(400), "{head}");
            assert_eq!(refused_reason(request.as_bytes()), reason, "{head}");
        }
        let huge = "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 18446744073709551615\r\n\r\n";
        assert_eq!(refused_status(huge.as_bytes()), Some(413));
        let gzip_only = "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip\r\n\r\n";
        assert_eq!(
            refused_reason(gzip_only.as_bytes()),
            "Transfer-Encoding \"gzip\" does not end in chunked"
        );
        let chunked = "POST / HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked\r\n\r\n";
        assert_eq!(check_head(chunked.as_bytes()), Some(Head::Fine));
        for fine in [
            "content-length: 3",
            "content-length: 3, 3",
            "Content-Length:  0 ",
        ] {
            let request = format!("POST / HTTP/1.1\r\nhost: x\r\n{fine}\r\n\r\n");
            assert_eq!(check_head(request.as_bytes()), Some(Head::Fine), "{fine}");
        }
    }

    #[test]
    fn a_long_target_is_refused_before_its_line_ends() {
        let mut head = b"GET /".to_vec();
        head.extend(std::iter::repeat_n(b'a', MAX_URI_BYTES + 1));
        assert_eq!(refused_status(&head), Some(414));
        let mut head = b"GET /".to_vec();
        head.extend(std::iter::repeat_n(b'a', MAX_URI_BYTES - 10));
        assert_eq!(check_head(&head), None);
    }

    #[test]
    fn too_many_or_too_large_headers_are_431() {
        let mut head = b"GET / HTTP/1.1\r\n".to_vec();
        for i in 0..=MAX_HEADERS {
            head.extend(format!("x-{i}: 1\r\n").bytes());
        }
        head.extend(b"\r\n");
        assert_eq!(refused_status(&head), Some(431));
        let mut head = b"GET / HTTP/1.1\r\nx-big: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', MAX_HEAD_BYTES));
        assert_eq!(refused_status(&head), Some(431));
    }
}
