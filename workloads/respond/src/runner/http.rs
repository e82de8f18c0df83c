//! The `http` step: one HTTPS call (a StackStorm webhook, any REST API), or an Ansible
//! AWX/AAP job-template launch followed by polling the job until it finishes.
//!
//! A call that was answered 2xx is recorded in the journal under the action's
//! idempotency key: a retry (after a later poll failed, or the runner crashed) reuses
//! the answer and never launches a second job or repeats the call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kastell_core::store::ActionRecord;
use reqwest::header::{HeaderMap, HeaderName, AUTHORIZATION};
use reqwest::{Method, Url};
use serde_json::{json, Map, Value};

use super::client::{headers, secret_header};
use super::{
    check_url, config, field, param_timeout, secret, HttpClient, RunContext, SecretSource,
    StepOutcome, StepRunner,
};

/// AWX job states after which nothing more happens.
const AWX_FINISHED: [&str; 4] = ["successful", "failed", "error", "canceled"];

pub struct HttpRunner {
    client: HttpClient,
    secrets: Arc<dyn SecretSource>,
}

impl HttpRunner {
    pub fn new(client: HttpClient, secrets: Arc<dyn SecretSource>) -> Self {
        HttpRunner { client, secrets }
    }

    async fn call(&self, action: &ActionRecord, ctx: &RunContext) -> Result<Value, String> {
        let config = config(&action.params)?;
        let url = check_url(field(config, "url")?)?;
        let timeout = param_timeout(&action.params);
        if let Some(awx) = config.get("awx").and_then(Value::as_object) {
            return self.awx(config, awx, &url, ctx, timeout).await;
        }
        if let Some(done) = ctx.journal.get(&ctx.call_key("call")) {
            return Ok(done);
        }
        let method = method(config)?;
        let mut request_headers = headers(config.get("headers"))?;
        self.add_secret_headers(config, &mut request_headers)?;
        let answer = self
            .client
            .send(
                ctx,
                method.clone(),
                &url,
                request_headers,
                config.get("body"),
                timeout,
            )
            .await?;
        if !answer.is_success() {
            return Err(format!(
                "{method} answered {}: {}",
                answer.status, answer.text
            ));
        }
        let result = json!({
            "status": answer.status,
            "body": answer.text,
            "body_truncated": answer.truncated,
        });
        ctx.journal.record(&ctx.call_key("call"), result.clone());
        Ok(result)
    }

    fn add_secret_headers(
        &self,
        config: &Map<String, Value>,
        headers: &mut HeaderMap,
    ) -> Result<(), String> {
        let Some(secret_headers) = config.get("secret_headers").and_then(Value::as_object) else {
            return Ok(());
        };
        for (name, secret_name) in secret_headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("header {name:?} is not a header name"))?;
            let secret_name = secret_name.as_str().unwrap_or_default();
            let value = self
                .secrets
                .get(secret_name)
                .ok_or_else(|| format!("secret {secret_name:?} (header {name}) is not set"))?;
            headers.insert(header, secret_header(&value)?);
        }
        Ok(())
    }

    /// `POST /api/v2/job_templates/{id}/launch/` with `extra_vars`, then
    /// `GET /api/v2/jobs/{job}/` every `poll_seconds` until the job finishes or the
    /// step's time is up.
    async fn awx(
        &self,
        config: &Map<String, Value>,
        awx: &Map<String, Value>,
        base: &Url,
        ctx: &RunContext,
        timeout: Duration,
    ) -> Result<Value, String> {
        let started = Instant::now();
        let token = secret(self.secrets.as_ref(), awx, "token_secret")?;
        let template = awx
            .get("job_template")
            .and_then(Value::as_u64)
            .ok_or("the action's awx config has no job_template")?;
        let poll =
            Duration::from_secs(awx.get("poll_seconds").and_then(Value::as_u64).unwrap_or(2));
        let auth = || -> Result<HeaderMap, String> {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, secret_header(&format!("Bearer {token}"))?);
            Ok(headers)
        };

        let launch_key = ctx.call_key("awx-launch");
        let job = match ctx.journal.get(&launch_key) {
            Some(job) => job,
            None => {
                let url = join(base, &format!("api/v2/job_templates/{template}/launch/"))?;
                let extra_vars = config.get("extra_vars").cloned().unwrap_or(json!({}));
                let body = json!({ "extra_vars": extra_vars });
                let answer = self
                    .client
                    .send(ctx, Method::POST, &url, auth()?, Some(&body), timeout)
                    .await?;
                if !answer.is_success() {
                    return Err(format!(
                        "AWX launch answered {}: {}",
                        answer.status, answer.text
                    ));
                }
                let job = answer
                    .json
                    .get("job")
                    .or_else(|| answer.json.get("id"))
                    .cloned()
                    .filter(Value::is_u64)
                    .ok_or("AWX launch answer has no job id")?;
                ctx.journal.record(&launch_key, job.clone());
                job
            }
        };
        let job_url = join(base, &format!("api/v2/jobs/{job}/"))?;
        loop {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(format!(
                    "AWX job {job} did not finish within {}s",
                    timeout.as_secs()
                ));
            }
            let answer = self
                .client
                .send(ctx, Method::GET, &job_url, auth()?, None, left)
                .await?;
            if !answer.is_success() {
                return Err(format!("AWX job {job} answered {}", answer.status));
            }
            let status = answer
                .json
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("");
            if AWX_FINISHED.contains(&status) {
                let result = json!({
                    "job": job, "job_status": status,
                    "elapsed": answer.json.get("elapsed"),
                    "job_url": job_url.as_str(),
                });
                return if status == "successful" {
                    Ok(result)
                } else {
                    Err(format!("AWX job {job} ended {status}"))
                };
            }
            tokio::time::sleep(poll.min(left)).await;
        }
    }
}

fn method(config: &Map<String, Value>) -> Result<Method, String> {
    let name = config
        .get("method")
        .and_then(Value::as_str)
        .unwrap_or("POST");
    Method::from_bytes(name.as_bytes()).map_err(|_| format!("{name:?} is not an HTTP method"))
}

/// `base` with `path` appended to its path.
pub(crate) fn join(base: &Url, path: &str) -> Result<Url, String> {
    let mut text = base.as_str().trim_end_matches('/').to_owned();
    text.push('/');
    text.push_str(path.trim_start_matches('/'));
    Url::parse(&text).map_err(|e| format!("{text:?}: {e}"))
}

#[async_trait]
impl StepRunner for HttpRunner {
    fn step_type(&self) -> &'static str {
        "http"
    }

    async fn run(&self, action: &ActionRecord, ctx: &RunContext) -> StepOutcome {
        match self.call(action, ctx).await {
            Ok(result) => StepOutcome::succeeded(result),
            Err(error) => StepOutcome::failed(error),
        }
    }

    /// The step's `http.release` request as rendered with the step; `None` without one.
    fn release(&self, action: &ActionRecord) -> Option<Value> {
        let request = release_request(action)?;
        Some(json!({
            "type": "http-release",
            "method": request.get("method"),
            "url": request.get("url"),
            "headers": request.get("headers"),
            "body": request.get("body"),
        }))
    }

    /// Sends the release request as one plain call of its own (journaled under the
    /// release action's key, so a retry does not send it twice).
    async fn run_release(&self, action: &ActionRecord, ctx: &RunContext) -> Option<StepOutcome> {
        let request = release_request(action)?;
        let mut undo = action.clone();
        undo.params["config"] = Value::Object(request);
        Some(match self.call(&undo, ctx).await {
            Ok(result) => StepOutcome::succeeded(result),
            Err(error) => StepOutcome::failed(error),
        })
    }
}

/// The undo request of an `http` action as a call's configuration (`url`, `method`,
/// `headers`, `secret_headers`, `body`), from its rendered `release` and its fixed
/// `release_target`.
fn release_request(action: &ActionRecord) -> Option<Map<String, Value>> {
    let config = action.params.get("config")?;
    let target = config.get("release_target")?.as_object()?;
    let rendered = config.get("release").and_then(Value::as_object);
    let mut request = target.clone();
    for key in ["headers", "body"] {
        if let Some(value) = rendered.and_then(|r| r.get(key)).filter(|v| !v.is_null()) {
            request.insert(key.into(), value.clone());
        }
    }
    Some(request)
}
