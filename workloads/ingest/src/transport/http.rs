//! The HTTP transport: JSON lines POSTed to `/api/v1/ingest/{sensor}`, and an
//! Elasticsearch-compatible `_bulk` API (with the start-up probes shippers make) so
//! Filebeat, Fluent Bit, Vector and Logstash ship to Kastell unchanged.
//!
//! A request is answered only after each of its records is on the bus (published or
//! dead-lettered); when a sensor's queue is full the whole request is refused with 429
//! and `Retry-After`, which every one of those shippers retries.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use kastell_core::bus::{Bus, Pipelined};
use serde_json::{json, Value};

use crate::ingestor::IngestError;
use crate::source::PUBLISH_WINDOW;
use crate::transport::body_stall::limit_body_stall;
use crate::transport::bulk::{split_bulk, BulkBody, BulkItem};
use crate::transport::connections::{Connections, Slot, DEFAULT_BODY_STALL_TIMEOUT};
use crate::transport::http_conn::Incoming;
use crate::transport::inlet::{Admission, Delivered, Frame, Inlet, TransportReject};
use crate::transport::syslog_tcp::accept_next;

/// The default bound on a request body, compressed and after decompression: above
/// Filebeat's and Logstash's default batch sizes, small enough to hold in memory.
pub const DEFAULT_MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// The Elasticsearch version `GET /` reports; shippers refuse servers older than
/// themselves, so it is set to a current 8.x.
pub const DEFAULT_ES_VERSION: &str = "8.17.0";

/// Seconds a 429 asks the sender to wait.
pub const RETRY_AFTER_SECONDS: u64 = 1;

/// Rejections listed in a `/api/v1/ingest` answer; later ones are only counted.
const LISTED_REJECTIONS: usize = 100;

/// The longest request target answered: nginx's default header buffer. Below hyper's own
/// limit (64 KiB), which answers 414 with an empty body before any layer runs, so the
/// lengths in between get a JSON reason.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// The most of a plain-text error body (an extractor's rejection) kept as the reason of
/// its JSON replacement.
const MAX_REASON_BYTES: usize = 1024;

/// The sensors one HTTP listener serves, by name.
#[derive(Clone)]
pub struct HttpIngest {
    inlets: Arc<BTreeMap<String, Arc<Inlet>>>,
    max_body_bytes: usize,
    body_stall_timeout: Duration,
    es_version: String,
    requests: Arc<AtomicU64>,
}

impl HttpIngest {
    pub fn new(inlets: impl IntoIterator<Item = Arc<Inlet>>) -> Self {
        let inlets = inlets
            .into_iter()
            .map(|inlet| (inlet.sensor().to_owned(), inlet))
            .collect();
        HttpIngest {
            inlets: Arc::new(inlets),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_stall_timeout: DEFAULT_BODY_STALL_TIMEOUT,
            es_version: DEFAULT_ES_VERSION.to_owned(),
            requests: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn with_max_body_bytes(mut self, max: usize) -> Self {
        self.max_body_bytes = max;
        self
    }

    /// How long a request body may go without a byte before the request is answered 408
    /// (see [`DEFAULT_BODY_STALL_TIMEOUT`]).
    #[must_use]
    pub fn with_body_stall_timeout(mut self, timeout: Duration) -> Self {
        self.body_stall_timeout = timeout;
        self
    }

    pub fn with_es_version(mut self, version: impl Into<String>) -> Self {
        self.es_version = version.into();
        self
    }

    /// The sensor a `_bulk` item goes to: the one named by its index, else the only one.
    fn route(&self, index: Option<&str>) -> Option<&Arc<Inlet>> {
        if let Some(inlet) = index.and_then(|name| self.inlets.get(name)) {
            return Some(inlet);
        }
        match self.inlets.len() {
            1 => self.inlets.values().next(),
            _ => None,
        }
    }

    fn origin(&self, peer: SocketAddr) -> String {
        let request = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        format!("http:{peer}:{request}")
    }
}

/// The listener's routes.
pub fn router(ingest: HttpIngest) -> Router {
    let limit = ingest.max_body_bytes;
    let stall = ingest.body_stall_timeout;
    Router::new()
        .route("/", get(root).head(root_head))
        .route(
            "/api/v1/ingest/{sensor}",
            post(ingest_lines).route_layer(axum::middleware::from_fn_with_state(
                ingest.clone(),
                known_sensor,
            )),
        )
        .route("/_bulk", post(bulk).put(bulk))
        .route("/{index}/_bulk", post(bulk_into).put(bulk_into))
        .route("/_license", get(license))
        .route("/_xpack", get(xpack))
        .route("/_cluster/health", get(cluster_health))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(move |request, next| {
            limit_body_stall(stall, request, next)
        }))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(move |request, next| {
            limit_declared_length(limit, request, next)
        }))
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn(limit_uri))
        .layer(axum::middleware::from_fn(
            crate::transport::http_conn::limit_head,
        ))
        .layer(axum::middleware::map_response(elastic_product_header))
        .with_state(ingest)
}

/// The body every refusal of this listener carries, shaped as Elasticsearch writes its
/// errors so shippers log the reason.
pub(crate) fn error_response(status: StatusCode, kind: &str, reason: String) -> Response {
    let body = json!({"error": {"type": kind, "reason": reason}, "status": status.as_u16()});
    (status, Json(body)).into_response()
}

async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "no_route",
        format!("no endpoint {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not answer {method}", uri.path()),
    )
}

/// Refuses an over-long request target before routing, with a JSON reason.
async fn limit_uri(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let length = request
        .uri()
        .path_and_query()
        .map_or(0, |target| target.as_str().len());
    if length > MAX_URI_BYTES {
        return error_response(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target is {length} bytes, over the {MAX_URI_BYTES}-byte limit"),
        );
    }
    next.run(request).await
}

/// Refuses at once a request whose `Content-Length` is over the body limit: reading the
/// body first would keep the connection busy for nothing, and for ever when the client
/// never sends it.
async fn limit_declared_length(
    limit: usize,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(length) = declared.filter(|&n| n > limit as u64) {
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request declares a body of {length} bytes, over the {limit}-byte limit"),
        );
    }
    next.run(request).await
}

/// Rewrites the error responses axum's extractors answer with in plain text (a body over
/// the limit, a path segment that is not UTF-8, …) into this listener's JSON errors,
/// keeping their status, headers (`Allow`) and text as the reason.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_REASON_BYTES)
        .await
        .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
        .unwrap_or_default();
    let reason = if text.is_empty() {
        status.canonical_reason().unwrap_or("refused").to_owned()
    } else {
        text
    };
    let kind = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        _ => "refused",
    };
    let fresh = error_response(status, kind, reason);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let (_, body) = fresh.into_parts();
    Response::from_parts(parts, body)
}

/// Serves the router on `listener` until `shutdown` resolves, with each request's peer
/// address known to the handlers, and hyper's refusals answered in JSON where it can be
/// done (see [`crate::transport::http_conn`]). At most `connections.max()` connections
/// are served at once (later ones are answered 503), and a connection idle for
/// `connections.idle_timeout()` between requests is closed.
///
/// # Errors
///
/// When accepting connections fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    connections: Connections,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    crate::transport::http_conn::serve_listener(listener, router, connections, shutdown).await
}

/// Serves the router over HTTPS (TLS 1.3 only, see
/// [`crate::transport::syslog_tls::tls_acceptor`]) on `listener` until `shutdown`
/// resolves, with each request's peer address known to the handlers as in [`serve`].
/// A connection takes its place under the cap of `connections` before its handshake, so
/// handshakes in progress are bounded by the same cap; past it a connection is closed
/// before its handshake (an answer would need one).
///
/// # Errors
///
/// When accepting connections fails.
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: Router,
    connections: Connections,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = TlsListener::new(listener, acceptor, connections.clone())?;
    crate::transport::http_conn::serve_listener(listener, router, connections, shutdown).await
}

/// A listener that hands over connections whose TLS handshake is done, each with its
/// place under the cap. Handshakes run in their own tasks, each within the handshake
/// timeout, so a client that stalls in its handshake holds up no one else.
struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream, SocketAddr, Slot)>,
    accepting: tokio::task::JoinHandle<()>,
}

type TlsStream = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

impl TlsListener {
    fn new(
        listener: tokio::net::TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
        connections: Connections,
    ) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        // Finished handshakes wait here only until the serving loop takes them.
        let (done, ready) = tokio::sync::mpsc::channel(64);
        let accepting = tokio::spawn(async move {
            loop {
                // Running out of file handles is waited out there, as for syslog.
                let (tcp, peer) = match accept_next(&listener, "https").await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::error!(listen = %local, reason = %e, "https listener stopped accepting");
                        return;
                    }
                };
                let Some(slot) = connections.admit(peer) else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(
                        crate::transport::syslog_tls::HANDSHAKE_TIMEOUT,
                        acceptor.accept(tcp),
                    );
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            let _ = done.send((stream, peer, slot)).await;
                        }
                        Ok(Err(e)) => {
                            tracing::info!(peer = %peer, reason = %e, "https handshake failed");
                        }
                        Err(_) => tracing::info!(peer = %peer, "https handshake timed out"),
                    }
                });
            }
        });
        Ok(TlsListener { ready, accepting })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl Incoming for TlsListener {
    type Io = TlsStream;

    async fn accept(&mut self) -> (Self::Io, SocketAddr, Option<Slot>) {
        match self.ready.recv().await {
            Some((stream, peer, slot)) => (stream, peer, Some(slot)),
            // The accepting task only ends when the listener is dropped or its socket
            // fails for good, which it has logged.
            None => std::future::pending().await,
        }
    }
}

/// Elasticsearch clients since 7.14 check this header before they trust an answer.
async fn elastic_product_header(mut response: Response) -> Response {
    response.headers_mut().insert(
        "x-elastic-product",
        HeaderValue::from_static("Elasticsearch"),
    );
    response
}

/// Why a whole request was refused.
enum Refusal {
    UnknownSensor(String),
    Body(StatusCode, String),
    QueueFull,
    BusClosed(IngestError),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, kind, reason) = match self {
            Refusal::UnknownSensor(name) => (
                StatusCode::NOT_FOUND,
                "unknown_sensor",
                format!("no sensor named {name:?} is served here"),
            ),
            Refusal::Body(status, reason) => (status, "invalid_body", reason),
            Refusal::QueueFull => {
                let body = json!({"error": {"type": "es_rejected_execution_exception",
                    "reason": "the sensor's ingest queue is full; retry later"}, "status": 429});
                let retry = [(header::RETRY_AFTER, RETRY_AFTER_SECONDS.to_string())];
                return (StatusCode::TOO_MANY_REQUESTS, retry, Json(body)).into_response();
            }
            Refusal::BusClosed(e) => {
                tracing::warn!(reason = %kastell_core::error_chain(&e), "ingest bus refused a record");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "ingest is shutting down; retry later".to_owned(),
                )
            }
        };
        error_response(status, kind, reason)
    }
}

/// The body as sent, gunzipped when `Content-Encoding` says so, never above `max` bytes.
fn decode_body(headers: &HeaderMap, body: Bytes, max: usize) -> Result<Bytes, Refusal> {
    // Every `Content-Encoding` field, each a list: the codings applied, in order.
    let mut codings = Vec::new();
    for value in headers.get_all(header::CONTENT_ENCODING) {
        let text = value.to_str().unwrap_or("?");
        codings.extend(
            text.split(',')
                .map(|c| c.trim().to_ascii_lowercase())
                .filter(|c| !c.is_empty() && c != "identity"),
        );
    }
    match codings.as_slice() {
        [] => Ok(body),
        [one] if one == "gzip" || one == "x-gzip" => gunzip(&body, max),
        [other] => Err(Refusal::Body(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("content encoding {other:?} is not supported; send gzip or none"),
        )),
        several => Err(Refusal::Body(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "content encodings {:?} applied in turn are not supported; send one gzip \
                 layer or none",
                several.join(", ")
            ),
        )),
    }
}

/// Decompresses at most `max` bytes: a small gzip bomb must not fill memory.
fn gunzip(body: &[u8], max: usize) -> Result<Bytes, Refusal> {
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::MultiGzDecoder::new(body)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| {
            Refusal::Body(
                StatusCode::BAD_REQUEST,
                format!("body is not valid gzip: {e}"),
            )
        })?;
    if out.len() > max {
        return Err(Refusal::Body(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("decompressed body is over the {max}-byte limit"),
        ));
    }
    Ok(Bytes::from(out))
}

/// Refuses a request for a sensor this listener does not serve before its body is read:
/// a shipper pointed at the wrong name learns it at once, not after its upload.
async fn known_sensor(
    State(ingest): State<HttpIngest>,
    Path(sensor): Path<String>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if ingest.inlets.contains_key(&sensor) {
        next.run(request).await
    } else {
        Refusal::UnknownSensor(sensor).into_response()
    }
}

/// `POST /api/v1/ingest/{sensor}`: newline-delimited records for one sensor.
async fn ingest_lines(
    State(ingest): State<HttpIngest>,
    Path(sensor): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let inlet = ingest
        .inlets
        .get(&sensor)
        .cloned()
        .ok_or_else(|| Refusal::UnknownSensor(sensor.clone()))?;
    let body = decode_body(&headers, body, ingest.max_body_bytes)?;
    let lines: Vec<(u64, &[u8])> = body
        .split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, line)| (i as u64 + 1, line.strip_suffix(b"\r").unwrap_or(line)))
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
        .collect();
    let _admission = inlet.try_admit(lines.len()).ok_or(Refusal::QueueFull)?;

    let origin = ingest.origin(peer);
    let (mut published, mut rejected, mut rejections) = (0u64, 0u64, Vec::new());
    // The body's events in flight together; answered only after the flush below.
    let pipelined = Pipelined::new(inlet.bus(), PUBLISH_WINDOW);
    let last_line = lines.last().map_or(0, |(number, _)| *number);
    for (number, line) in lines {
        let frame = Frame::new(&origin, number, line).from_peer(peer);
        match inlet
            .ingest_on(frame, &pipelined)
            .await
            .map_err(Refusal::BusClosed)?
        {
            Delivered::Published => published += 1,
            Delivered::Rejected { kind, reason } => {
                rejected += 1;
                if rejections.len() < LISTED_REJECTIONS {
                    rejections.push(json!({"line": number, "kind": kind, "reason": reason}));
                }
            }
        }
    }
    flush(&pipelined, &origin, last_line).await?;
    let answer = json!({
        "sensor": sensor,
        "records": published + rejected,
        "published": published,
        "rejected": rejected,
        "rejections": rejections,
    });
    Ok((StatusCode::OK, Json(answer)).into_response())
}

/// `POST /_bulk`: items routed by their `_index`.
async fn bulk(
    State(ingest): State<HttpIngest>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    run_bulk(ingest, None, peer, &headers, body).await
}

/// `POST /{index}/_bulk`: items without an `_index` of their own go to `index`.
async fn bulk_into(
    State(ingest): State<HttpIngest>,
    Path(index): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    run_bulk(ingest, Some(index), peer, &headers, body).await
}

async fn run_bulk(
    ingest: HttpIngest,
    default_index: Option<String>,
    peer: SocketAddr,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, Refusal> {
    let started = Instant::now();
    let body = decode_body(headers, body, ingest.max_body_bytes)?;
    let items = split_bulk(&body);
    let routed: Vec<(BulkItem<'_>, Option<Arc<Inlet>>)> = items
        .into_iter()
        .map(|item| {
            let index = item.index.as_deref().or(default_index.as_deref());
            let inlet = ingest.route(index).cloned();
            (item, inlet)
        })
        .collect();
    let _admissions = admit_all(&routed)?;

    let origin = ingest.origin(peer);
    // Each Sensor's events in flight together, as for the lines endpoint; the answer is
    // written only after every one is flushed.
    let mut pipelines: BTreeMap<&str, Pipelined<'_>> = BTreeMap::new();
    for inlet in routed.iter().filter_map(|(_, inlet)| inlet.as_ref()) {
        pipelines
            .entry(inlet.sensor())
            .or_insert_with(|| Pipelined::new(inlet.bus(), PUBLISH_WINDOW));
    }
    let mut answers = Vec::with_capacity(routed.len());
    let mut errors = false;
    let mut last_line = 0;
    for (seq, (item, inlet)) in routed.iter().enumerate() {
        last_line = item.line;
        let index = item
            .index
            .clone()
            .or_else(|| default_index.clone())
            .unwrap_or_default();
        let id = item
            .id
            .clone()
            .unwrap_or_else(|| format!("{origin}:{}", seq + 1));
        let frame = |bytes| Frame::new(&origin, item.line, bytes).from_peer(peer);
        let outcome = match (&item.body, inlet) {
            // An action line that cannot be read names no index the client meant, so
            // "no such sensor" would mislead; without a sensor there is no dead-letter
            // stream to record it under, and the 400 is the whole answer.
            (BulkBody::Malformed { reason, .. }, None) => {
                tracing::info!(peer = %peer, line = item.line, reason = %reason, "bulk action line refused; no sensor to dead-letter it under");
                ItemOutcome::error(400, "illegal_argument_exception", reason.clone())
            }
            (_, None) => ItemOutcome::error(
                404,
                "index_not_found_exception",
                format!("no sensor is named {index:?} and this listener serves more than one"),
            ),
            (BulkBody::Source(source), Some(inlet)) => {
                let bus: &dyn Bus = match pipelines.get(inlet.sensor()) {
                    Some(pipelined) => pipelined,
                    None => inlet.bus(),
                };
                match inlet
                    .ingest_on(frame(source), bus)
                    .await
                    .map_err(Refusal::BusClosed)?
                {
                    Delivered::Published => ItemOutcome::Created,
                    Delivered::Rejected { reason, .. } => {
                        ItemOutcome::error(400, "document_parsing_exception", reason)
                    }
                }
            }
            (BulkBody::Malformed { raw, reason }, Some(inlet)) => {
                inlet
                    .reject(
                        frame(raw),
                        TransportReject::InvalidBulkAction,
                        reason.clone(),
                    )
                    .await
                    .map_err(Refusal::BusClosed)?;
                ItemOutcome::error(400, "illegal_argument_exception", reason.clone())
            }
            (BulkBody::MissingSource { action }, Some(inlet)) => {
                let reason = "the action has no source line: the body ends after it".to_owned();
                inlet
                    .reject(
                        frame(action),
                        TransportReject::InvalidBulkAction,
                        reason.clone(),
                    )
                    .await
                    .map_err(Refusal::BusClosed)?;
                ItemOutcome::error(400, "illegal_argument_exception", reason)
            }
            (BulkBody::Unsupported, Some(_)) => ItemOutcome::error(
                400,
                "action_request_validation_exception",
                format!(
                    "{} is not supported: Kastell's event stream is append-only",
                    item.op
                ),
            ),
        };
        errors |= !matches!(outcome, ItemOutcome::Created);
        answers.push(outcome.into_json(item.op, &index, &id, seq));
    }
    for pipelined in pipelines.values() {
        flush(pipelined, &origin, last_line).await?;
    }
    let answer = json!({
        "took": started.elapsed().as_millis() as u64,
        "errors": errors,
        "items": answers,
    });
    Ok((StatusCode::OK, Json(answer)).into_response())
}

/// Waits until a request's events are stored; the bus giving up on one refuses the
/// whole request (503), since the client cannot tell which were kept.
async fn flush(pipelined: &Pipelined<'_>, origin: &str, last_line: u64) -> Result<(), Refusal> {
    pipelined.flush().await.map_err(|source| {
        Refusal::BusClosed(IngestError::events_not_stored(origin, last_line, source))
    })
}

/// Admits each sensor's share of a bulk request, or none of them.
fn admit_all(routed: &[(BulkItem<'_>, Option<Arc<Inlet>>)]) -> Result<Vec<Admission>, Refusal> {
    let mut counts: BTreeMap<&str, (usize, &Arc<Inlet>)> = BTreeMap::new();
    for inlet in routed.iter().filter_map(|(_, inlet)| inlet.as_ref()) {
        counts.entry(inlet.sensor()).or_insert((0, inlet)).0 += 1;
    }
    counts
        .values()
        .map(|(count, inlet)| inlet.try_admit(*count).ok_or(Refusal::QueueFull))
        .collect()
}

enum ItemOutcome {
    Created,
    Failed {
        status: u16,
        kind: &'static str,
        reason: String,
    },
}

impl ItemOutcome {
    fn error(status: u16, kind: &'static str, reason: String) -> Self {
        ItemOutcome::Failed {
            status,
            kind,
            reason,
        }
    }

    /// One entry of the bulk response's `items`, shaped as Elasticsearch writes it.
    fn into_json(self, op: &str, index: &str, id: &str, seq: usize) -> Value {
        let result = match self {
            ItemOutcome::Created => json!({
                "_index": index, "_id": id, "_version": 1, "result": "created",
                "_shards": {"total": 1, "successful": 1, "failed": 0},
                "_seq_no": seq, "_primary_term": 1, "status": 201,
            }),
            ItemOutcome::Failed {
                status,
                kind,
                reason,
            } => json!({
                "_index": index, "_id": id, "status": status,
                "error": {"type": kind, "reason": reason},
            }),
        };
        json!({ op: result })
    }
}

/// `GET /`: the cluster banner shippers read the version from.
async fn root(State(ingest): State<HttpIngest>) -> Json<Value> {
    Json(json!({
        "name": "kastell",
        "cluster_name": "kastell",
        "cluster_uuid": "kastell-ingest",
        "version": {
            "number": ingest.es_version,
            "build_flavor": "default",
            "build_type": "kastell",
            "lucene_version": "9.12.0",
            "minimum_wire_compatibility_version": "7.17.0",
            "minimum_index_compatibility_version": "7.0.0",
        },
        "tagline": "You Know, for Search",
    }))
}

/// `HEAD /`: the liveness probe of Fluent Bit and Logstash.
async fn root_head() -> StatusCode {
    StatusCode::OK
}

/// `GET /_license`: Logstash reads it at start-up and wants an active licence.
async fn license() -> Json<Value> {
    Json(json!({"license": {
        "status": "active", "uid": "kastell-ingest", "type": "basic",
        "issue_date_in_millis": 0, "max_nodes": 1000, "issued_to": "kastell",
        "issuer": "kastell", "start_date_in_millis": -1,
    }}))
}

/// `GET /_xpack`: Beats ask which features exist; none that need setting up do.
async fn xpack() -> Json<Value> {
    Json(json!({
        "build": {"hash": "kastell", "date": "1970-01-01T00:00:00Z"},
        "license": {"uid": "kastell-ingest", "type": "basic", "mode": "basic", "status": "active"},
        "features": {"ilm": {"available": false, "enabled": false}},
    }))
}

/// `GET /_cluster/health`: Vector's health check.
async fn cluster_health() -> Json<Value> {
    Json(
        json!({"cluster_name": "kastell", "status": "green", "timed_out": false,
        "number_of_nodes": 1, "number_of_data_nodes": 1}),
    )
}
