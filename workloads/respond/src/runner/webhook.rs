//! The `webhook` step: one JSON POST over TLS 1.3 (plain HTTP only to loopback), with
//! the step's timeout, no redirects and no proxy, and the answer's status and first KiB
//! recorded on the action.

use std::net::IpAddr;

use async_trait::async_trait;
use kastell_core::store::ActionRecord;
use reqwest::{Method, Url};
use serde_json::{json, Map, Value};

use super::client::headers;
use super::{
    param_timeout, HttpClient, RunContext, RunnerError, RunnerSettings, StepOutcome, StepRunner,
};
use crate::redact;

pub use super::client::BODY_LIMIT;

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
    client: HttpClient,
}

impl WebhookRunner {
    /// A runner whose client speaks TLS 1.3 only, through rustls with the ring provider.
    ///
    /// # Errors
    /// When the TLS configuration or the client cannot be built.
    pub fn new(settings: &RunnerSettings) -> Result<Self, RunnerError> {
        Ok(Self::with_client(HttpClient::new(settings)?))
    }

    /// A runner on a client shared with the other steps.
    pub fn with_client(client: HttpClient) -> Self {
        WebhookRunner { client }
    }

    async fn post(&self, action: &ActionRecord, ctx: &RunContext) -> Result<StepOutcome, String> {
        let params = &action.params;
        let url = params
            .get("url")
            .and_then(Value::as_str)
            .ok_or("the action has no url parameter")?;
        // The stored parameters are checked again: they may predate a stricter rule or
        // have been written by something other than this stage.
        let url = check_url(url)?;
        let headers = headers(params.get("headers"))?;
        let body = params.get("body").cloned().unwrap_or(Value::Null);
        let timeout = param_timeout(params);
        // A post answered 2xx had its effect; a retry or a resumed run reuses it.
        if let Some(done) = ctx.journal.get(&ctx.call_key("post")) {
            return Ok(StepOutcome::succeeded(done));
        }
        let answer = self
            .client
            .send(ctx, Method::POST, &url, headers, Some(&body), timeout)
            .await?;
        let mut details = Map::new();
        details.insert("url".into(), redact::url(&url).into());
        details.insert("status".into(), answer.status.into());
        details.insert("body".into(), answer.text.into());
        details.insert("body_truncated".into(), answer.truncated.into());
        if (200..300).contains(&answer.status) {
            let details = Value::Object(details);
            ctx.journal.record(&ctx.call_key("post"), details.clone());
            return Ok(StepOutcome::succeeded(details));
        }
        let status = reqwest::StatusCode::from_u16(answer.status)
            .map(|s| s.to_string())
            .unwrap_or_else(|_| answer.status.to_string());
        let mut error = format!("webhook answered {status}");
        if (300..400).contains(&answer.status) {
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

    async fn run(&self, action: &ActionRecord, ctx: &RunContext) -> StepOutcome {
        let outcome = self
            .post(action, ctx)
            .await
            .unwrap_or_else(StepOutcome::failed);
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
            "headers": p.get("headers").map(redact::json),
            "body": p.get("body"),
        })
    }
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
        let params = json!({"x-note": "a\r\nx-injected: 1"});
        assert!(headers(Some(&params)).unwrap_err().contains("x-note"));
        let params = json!({"authorization": "Bearer t"});
        assert_eq!(headers(Some(&params)).unwrap()["authorization"], "Bearer t");
    }
}
