//! The `enrich` step: each observable looked up in the intel store (through
//! [`IntelLookup`], which the stage is given), or submitted to a Cortex analyzer
//! (`POST /api/analyzer/{id}/run`, then `GET /api/job/{id}/report` until the job ends)
//! whose taxonomies are published for the case as an `attach-taxonomies` operation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kastell_core::store::ActionRecord;
use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::{Method, Url};
use serde_json::{json, Map, Value};

use super::client::secret_header;
use super::http::join;
use super::{
    check_url, config, field, param_timeout, secret, HttpClient, RunContext, SecretSource,
    StepOutcome, StepRunner,
};
use crate::output::{CaseAction, CaseOperation, RespondOutput};

/// Looks observables up in the platform's intel store.
#[async_trait]
pub trait IntelLookup: Send + Sync {
    /// The indicators matching an observable of this type (`ip`, `domain`, `url`,
    /// `hash`, ...), each as JSON.
    ///
    /// # Errors
    /// Why the store could not answer.
    async fn lookup(&self, kind: &str, value: &str) -> Result<Vec<Value>, String>;
}

/// The lookup used when the stage has no intel store: every lookup fails, saying so.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoIntel;

#[async_trait]
impl IntelLookup for NoIntel {
    async fn lookup(&self, _kind: &str, _value: &str) -> Result<Vec<Value>, String> {
        Err("no intel store is connected to the respond stage".into())
    }
}

/// Cortex job states after which nothing more happens.
const CORTEX_FINISHED: [&str; 3] = ["Success", "Failure", "Deleted"];

pub struct EnrichRunner {
    client: HttpClient,
    secrets: Arc<dyn SecretSource>,
    intel: Arc<dyn IntelLookup>,
}

impl EnrichRunner {
    pub fn new(
        client: HttpClient,
        secrets: Arc<dyn SecretSource>,
        intel: Arc<dyn IntelLookup>,
    ) -> Self {
        EnrichRunner {
            client,
            secrets,
            intel,
        }
    }

    async fn enrich(&self, action: &ActionRecord, ctx: &RunContext) -> Result<Value, String> {
        let config = config(&action.params)?;
        let observables = observables(config);
        if observables.is_empty() {
            return Err("no observable to enrich (all rendered empty)".into());
        }
        let mut results = Vec::new();
        match config.get("cortex").and_then(Value::as_object) {
            Some(cortex) => {
                for (kind, value) in &observables {
                    let result = self.cortex(action, cortex, kind, value, ctx).await?;
                    results.push(result);
                }
            }
            None => {
                for (kind, value) in &observables {
                    let matches = self.intel.lookup(kind, value).await?;
                    results.push(json!({ "type": kind, "value": value, "matches": matches }));
                }
            }
        }
        Ok(json!({ "observables": results }))
    }

    async fn cortex(
        &self,
        action: &ActionRecord,
        cortex: &Map<String, Value>,
        kind: &str,
        value: &str,
        ctx: &RunContext,
    ) -> Result<Value, String> {
        let started = Instant::now();
        let timeout = param_timeout(&action.params);
        let base = check_url(field(cortex, "url")?)?;
        let analyzer = field(cortex, "analyzer")?;
        let key = secret(self.secrets.as_ref(), cortex, "api_key_secret")?;
        let poll = Duration::from_secs(
            cortex
                .get("poll_seconds")
                .and_then(Value::as_u64)
                .unwrap_or(2),
        );
        let auth = || -> Result<HeaderMap, String> {
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, secret_header(&format!("Bearer {key}"))?);
            Ok(headers)
        };

        let run_key = ctx.call_key(&format!("cortex-run:{kind}:{value}"));
        let job = match ctx.journal.get(&run_key) {
            Some(job) => job,
            None => {
                let url = join(&base, &format!("api/analyzer/{}/run", segment(analyzer)))?;
                let body = json!({
                    "data": value, "dataType": kind, "tlp": 2, "pap": 2,
                    "message": format!("Kastell case {}", action.case_id),
                });
                let answer = self
                    .client
                    .send(ctx, Method::POST, &url, auth()?, Some(&body), timeout)
                    .await?;
                if !answer.is_success() {
                    return Err(format!(
                        "Cortex analyzer run answered {}: {}",
                        answer.status, answer.text
                    ));
                }
                let job = answer
                    .json
                    .get("id")
                    .cloned()
                    .filter(Value::is_string)
                    .ok_or("Cortex analyzer run answer has no job id")?;
                ctx.journal.record(&run_key, job.clone());
                job
            }
        };
        let job_id = job.as_str().unwrap_or_default();
        let report_url: Url = join(&base, &format!("api/job/{}/report", segment(job_id)))?;
        let report = loop {
            let left = timeout.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(format!(
                    "Cortex job {job_id} did not finish within {}s",
                    timeout.as_secs()
                ));
            }
            let answer = self
                .client
                .send(ctx, Method::GET, &report_url, auth()?, None, left)
                .await?;
            if !answer.is_success() {
                return Err(format!(
                    "Cortex job {job_id} report answered {}",
                    answer.status
                ));
            }
            let status = answer
                .json
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("");
            if CORTEX_FINISHED.contains(&status) {
                if status != "Success" {
                    let why = answer
                        .json
                        .pointer("/report/errorMessage")
                        .cloned()
                        .unwrap_or(Value::Null);
                    return Err(format!("Cortex job {job_id} ended {status}: {why}"));
                }
                break answer.json;
            }
            tokio::time::sleep(poll.min(left)).await;
        };
        let taxonomies: Vec<Value> = report
            .pointer("/report/summary/taxonomies")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        ctx.outbox
            .publish(RespondOutput::CaseAction(CaseAction {
                case_id: action.case_id,
                action_id: action.id,
                idempotency_key: ctx.call_key(&format!("taxonomies:{kind}:{value}")),
                operation: CaseOperation::AttachTaxonomies {
                    r#type: kind.to_owned(),
                    value: value.to_owned(),
                    source: format!("cortex:{analyzer}"),
                    taxonomies: taxonomies.clone(),
                },
            }))
            .await;
        Ok(
            json!({ "type": kind, "value": value, "analyzer": analyzer, "job": job_id,
                   "taxonomies": taxonomies }),
        )
    }
}

/// Rendered observables, without the empty ones (a field the alert lacked).
fn observables(config: &Map<String, Value>) -> Vec<(String, String)> {
    config
        .get("observables")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|o| {
                    let kind = o.get("type")?.as_str()?;
                    let value = o.get("value")?.as_str()?.trim();
                    (!value.is_empty()).then(|| (kind.to_owned(), value.to_owned()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A path segment with the characters that would change the path escaped.
fn segment(text: &str) -> String {
    text.chars()
        .flat_map(|c| match c {
            '/' => "%2F".chars().collect::<Vec<_>>(),
            '?' => "%3F".chars().collect(),
            '#' => "%23".chars().collect(),
            '%' => "%25".chars().collect(),
            c => vec![c],
        })
        .collect()
}

#[async_trait]
impl StepRunner for EnrichRunner {
    fn step_type(&self) -> &'static str {
        "enrich"
    }

    async fn run(&self, action: &ActionRecord, ctx: &RunContext) -> StepOutcome {
        match self.enrich(action, ctx).await {
            Ok(result) => StepOutcome::succeeded(result),
            Err(error) => StepOutcome::failed(error),
        }
    }
}
