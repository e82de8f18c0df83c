//! The `webhook` step: one JSON POST over TLS 1.3 (plain HTTP only to loopback), with
//! the step's timeout, no redirects and no proxy, and the answer's status and first KiB
//! recorded on the action.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kastell_core::store::ActionRecord;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{redirect, Client, Response, Url};
use serde_json::{json, Map, Value};

use super::{error_chain, param_timeout, RunnerError, RunnerSettings, StepOutcome, StepRunner};

/// How much of the answer's body is kept on the action.
pub const BODY_LIMIT: usize = 1024;

/// Checks a webhook target: `https://` anywhere, `http://` only to a loopback address
/// (127.0.0.0/8, `::1`, `localhost`), nothing else.
///
/// # Errors
/// Why the URL is not allowed, in words for the playbook's author.
pub fn check_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    match url.scheme() {
        "https" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(url),
        "https" => Err(format!("{text:?} has no host")),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(format!(
            "{text:?}: plain http is allowed only to a loopback address \
             (127.0.0.0/8, ::1, localhost); use https"
        )),
        other => Err(format!("scheme {other} is not allowed; use https")),
    }
}

fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    if host == "localhost" {
        return true;
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>()
        .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// Posts the action's `body` parameter as JSON to its `url`.
#[derive(Debug, Clone)]
pub struct WebhookRunner {
    client: Client,
}

impl WebhookRunner {
    /// A runner whose client speaks TLS 1.3 only, through rustls with the ring provider.
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
        Ok(WebhookRunner { client })
    }

    async fn post(&self, action: &ActionRecord) -> Result<StepOutcome, String> {
        let params = &action.params;
        let url = params
            .get("url")
            .and_then(Value::as_str)
            .ok_or("the action has no url parameter")?;
        // The stored parameters are checked again: they may predate a stricter rule or
        // have been written by something other than this stage.
        let url = check_url(url)?;
        let headers = headers(params)?;
        let body = params.get("body").cloned().unwrap_or(Value::Null);
        let timeout = param_timeout(params);

        let response = self
            .client
            .post(url.clone())
            .headers(headers)
            .json(&body)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| describe_error(e, &url, timeout))?;

        let status = response.status();
        let (text, truncated) = read_prefix(response, BODY_LIMIT).await;
        let mut details = Map::new();
        details.insert("url".into(), url.as_str().into());
        details.insert("status".into(), status.as_u16().into());
        details.insert("body".into(), text.into());
        details.insert("body_truncated".into(), truncated.into());
        if status.is_success() {
            return Ok(StepOutcome::succeeded(Value::Object(details)));
        }
        let mut error = format!("webhook answered {status}");
        if status.is_redirection() {
            error.push_str(" (redirects are not followed)");
        }
        Ok(StepOutcome::failed_with(error, details))
    }
}

#[async_trait]
impl StepRunner for WebhookRunner {
    fn step_type(&self) -> &'static str {
        "webhook"
    }

    async fn run(&self, action: &ActionRecord) -> StepOutcome {
        let outcome = self.post(action).await.unwrap_or_else(StepOutcome::failed);
        tracing::info!(
            action_id = action.id,
            playbook = %action.playbook,
            step = %action.step,
            status = ?outcome.result.get("status"),
            outcome = %outcome.status,
            "webhook sent"
        );
        outcome
    }

    fn describe(&self, action: &ActionRecord) -> Value {
        let p = &action.params;
        json!({
            "type": self.step_type(),
            "method": "POST",
            "url": p.get("url"),
            "headers": p.get("headers"),
            "body": p.get("body"),
        })
    }
}

fn tls_config(settings: &RunnerSettings) -> Result<rustls::ClientConfig, RunnerError> {
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

fn headers(params: &Value) -> Result<HeaderMap, String> {
    let mut map = HeaderMap::new();
    let Some(headers) = params.get("headers").and_then(Value::as_object) else {
        return Ok(map);
    };
    for (name, value) in headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("header {name:?} is not a header name"))?;
        // A rendered value holding a line break would otherwise split the request.
        let value = value
            .as_str()
            .and_then(|v| HeaderValue::from_str(v).ok())
            .ok_or_else(|| format!("header {name:?}: the rendered value is not a valid header"))?;
        map.insert(header, value);
    }
    Ok(map)
}

fn describe_error(error: reqwest::Error, url: &Url, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("POST {url}: no answer within {}s", timeout.as_secs());
    }
    // The URL leads the message once, not again inside reqwest's own text.
    let chain = error_chain(&error.without_url());
    format!("POST {url}: {chain}")
}

/// The first `limit` bytes of the body (as text), and whether there was more. A body
/// that breaks off is kept as far as it came.
async fn read_prefix(mut response: Response, limit: usize) -> (String, bool) {
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
    (String::from_utf8_lossy(&bytes).into_owned(), truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_goes_anywhere_and_http_only_to_loopback() {
        for ok in [
            "https://chat.example.eu/hooks/1",
            "http://127.0.0.1:9099/hooks/soc-chat",
            "http://127.8.9.10/",
            "http://[::1]:8080/x",
            "http://localhost/x",
            "http://LOCALHOST:1/x",
            "http://[::ffff:127.0.0.1]/x",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("http://10.0.0.1/", "loopback"),
            ("http://169.254.169.254/latest", "loopback"),
            ("http://localhost.example.eu/", "loopback"),
            ("http://128.0.0.1/", "loopback"),
            ("http://[::2]/", "loopback"),
            ("ftp://127.0.0.1/", "scheme ftp"),
            ("file:///etc/passwd", "scheme file"),
            ("not a url", "not a URL"),
        ] {
            let err = check_url(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn header_values_with_line_breaks_are_refused() {
        let params = json!({"headers": {"x-note": "a\r\nx-injected: 1"}});
        assert!(headers(&params).unwrap_err().contains("x-note"));
        let params = json!({"headers": {"authorization": "Bearer t"}});
        assert_eq!(headers(&params).unwrap()["authorization"], "Bearer t");
    }
}
