//! The HTTPS client every HTTP-speaking step shares: TLS 1.3 only, no redirects, no
//! proxy, plain HTTP only to loopback; and the summary of each exchange (method,
//! redacted URL, status, timing) recorded for the step's result.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{redirect, Client, Method, Response, Url};
use serde_json::{json, Value};

use super::{error_chain, RunContext, RunnerError, RunnerSettings};
use crate::redact;

/// How much of an answer's body is kept as text on the action.
pub const BODY_LIMIT: usize = 1024;
/// How much of an answer's body is read to parse it as JSON.
const JSON_LIMIT: usize = 1024 * 1024;

/// One request's answer.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub status: u16,
    /// The body parsed as JSON, `Null` when it is not JSON.
    pub json: Value,
    /// The first [`BODY_LIMIT`] bytes of the body as text.
    pub text: String,
    pub truncated: bool,
}

impl Exchange {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// The shared client.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: Client,
}

impl HttpClient {
    /// A client whose TLS is 1.3 only, through rustls with the ring provider.
    ///
    /// # Errors
    /// When the TLS configuration or the client cannot be built.
    pub fn new(settings: &RunnerSettings) -> Result<Self, RunnerError> {
        let tls = tls_config(settings)?;
        let client = Client::builder()
            .use_preconfigured_tls(tls)
            // A redirect could lead away from the host the playbook was checked for.
            .redirect(redirect::Policy::none())
            // Proxies from the environment would send response traffic to a host
            // nobody reviewed; egress goes where the playbook says or nowhere.
            .no_proxy()
            .user_agent(concat!("kastell-respond/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(RunnerError::Client)?;
        Ok(HttpClient { client })
    }

    /// Sends one request and records its summary on `ctx`. `Err` only when no answer
    /// came (connection, TLS, timeout); any status is an answer.
    ///
    /// # Errors
    /// Why no answer came, with the method and redacted URL.
    pub async fn send(
        &self,
        ctx: &RunContext,
        method: Method,
        url: &Url,
        headers: HeaderMap,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<Exchange, String> {
        let shown = redact::url(url);
        let mut request = self
            .client
            .request(method.clone(), url.clone())
            .headers(headers)
            .header("idempotency-key", ctx.idempotency_key.as_str())
            .timeout(timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        let started = Instant::now();
        let sent = request.send().await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let response = match sent {
            Ok(response) => response,
            Err(e) => {
                let reason = if e.is_timeout() {
                    format!("{method} {shown}: no answer within {}s", timeout.as_secs())
                } else {
                    format!("{method} {shown}: {}", error_chain(&e.without_url()))
                };
                ctx.record_request(json!({
                    "method": method.as_str(), "url": shown, "error": reason,
                    "duration_ms": elapsed_ms, "attempt": ctx.attempt(),
                }));
                return Err(reason);
            }
        };
        let status = response.status().as_u16();
        let (bytes, truncated_json) = read_prefix(response, JSON_LIMIT).await;
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let text_end = bytes.len().min(BODY_LIMIT);
        let exchange = Exchange {
            status,
            json,
            text: String::from_utf8_lossy(&bytes[..text_end]).into_owned(),
            truncated: truncated_json || bytes.len() > BODY_LIMIT,
        };
        ctx.record_request(json!({
            "method": method.as_str(), "url": shown, "status": status,
            "duration_ms": started.elapsed().as_millis() as u64, "attempt": ctx.attempt(),
        }));
        Ok(exchange)
    }
}

pub(crate) fn tls_config(settings: &RunnerSettings) -> Result<rustls::ClientConfig, RunnerError> {
    let mut roots = rustls::RootCertStore::empty();
    if settings.native_roots {
        let found = rustls_native_certs::load_native_certs();
        for error in &found.errors {
            tracing::warn!(reason = %error, "unreadable system CA certificate");
        }
        let (added, ignored) = roots.add_parsable_certificates(found.certs);
        tracing::debug!(added, ignored, "system CA certificates loaded");
    }
    for cert in &settings.extra_roots {
        roots.add(cert.clone()).map_err(RunnerError::Certificate)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(RunnerError::Tls)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// Request headers from a rendered `{name: value}` map.
///
/// # Errors
/// A name that is not a header name, or a value that is not a valid header value (a
/// rendered value holding a line break would otherwise split the request).
pub fn headers(rendered: Option<&Value>) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    let Some(headers) = rendered.and_then(Value::as_object) else {
        return Ok(map);
    };
    for (name, value) in headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("header {name:?} is not a header name"))?;
        let value = value
            .as_str()
            .and_then(|v| HeaderValue::from_str(v).ok())
            .ok_or_else(|| format!("header {name:?}: the rendered value is not a valid header"))?;
        map.insert(header, value);
    }
    Ok(map)
}

/// A header value holding a secret, marked sensitive so it is never logged by reqwest.
///
/// # Errors
/// When the secret is not a valid header value.
pub fn secret_header(value: &str) -> Result<HeaderValue, String> {
    let mut value =
        HeaderValue::from_str(value).map_err(|_| "a secret is not a valid header value")?;
    value.set_sensitive(true);
    Ok(value)
}

/// The first `limit` bytes of the body, and whether there was more. A body that breaks
/// off is kept as far as it came.
pub(crate) async fn read_prefix(mut response: Response, limit: usize) -> (Vec<u8>, bool) {
    let mut bytes = Vec::new();
    let mut truncated = false;
    while let Ok(Some(chunk)) = response.chunk().await {
        let room = limit - bytes.len();
        if chunk.len() > room {
            bytes.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    (bytes, truncated)
}
