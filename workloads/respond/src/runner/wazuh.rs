//! The `wazuh-active-response` step: a token from
//! `POST /security/user/authenticate` (basic auth), then
//! `PUT /active-response?agents_list=...` with the command, its arguments and the
//! address as the alert's `srcip`. The Wazuh manager runs the command on the agents.

use std::sync::Arc;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use kastell_core::store::ActionRecord;
use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::Method;
use serde_json::{json, Value};

use super::client::secret_header;
use super::http::join;
use super::{
    check_url, config, field, param_timeout, secret, HttpClient, RunContext, SecretSource,
    StepOutcome, StepRunner,
};

pub struct WazuhRunner {
    client: HttpClient,
    secrets: Arc<dyn SecretSource>,
}

impl WazuhRunner {
    pub fn new(client: HttpClient, secrets: Arc<dyn SecretSource>) -> Self {
        WazuhRunner { client, secrets }
    }

    async fn respond(&self, action: &ActionRecord, ctx: &RunContext) -> Result<Value, String> {
        let key = ctx.call_key("active-response");
        if let Some(done) = ctx.journal.get(&key) {
            return Ok(done);
        }
        let config = config(&action.params)?;
        let base = check_url(field(config, "url")?)?;
        let timeout = param_timeout(&action.params);
        let user = secret(self.secrets.as_ref(), config, "username_secret")?;
        let password = secret(self.secrets.as_ref(), config, "password_secret")?;
        let agents: Vec<&str> = config
            .get("agents")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        if agents.is_empty() {
            return Err("no agent to run the active response on (agents rendered empty)".into());
        }

        let mut basic = HeaderMap::new();
        let credentials = BASE64.encode(format!("{user}:{password}"));
        basic.insert(
            AUTHORIZATION,
            secret_header(&format!("Basic {credentials}"))?,
        );
        let auth_url = join(&base, "security/user/authenticate")?;
        let answer = self
            .client
            .send(ctx, Method::POST, &auth_url, basic, None, timeout)
            .await?;
        if !answer.is_success() {
            return Err(format!("Wazuh authentication answered {}", answer.status));
        }
        let token = answer
            .json
            .pointer("/data/token")
            .and_then(Value::as_str)
            .ok_or("Wazuh authentication answer has no data.token")?;

        let mut url = join(&base, "active-response")?;
        url.query_pairs_mut()
            .append_pair("agents_list", &agents.join(","));
        let mut body = json!({
            "command": field(config, "command")?,
            "arguments": config.get("arguments").cloned().unwrap_or(json!([])),
        });
        if let Some(srcip) = config
            .get("srcip")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            body["alert"] = json!({ "data": { "srcip": srcip } });
        }
        let mut bearer = HeaderMap::new();
        bearer.insert(AUTHORIZATION, secret_header(&format!("Bearer {token}"))?);
        let answer = self
            .client
            .send(ctx, Method::PUT, &url, bearer, Some(&body), timeout)
            .await?;
        if !answer.is_success() {
            return Err(format!(
                "Wazuh active-response answered {}: {}",
                answer.status, answer.text
            ));
        }
        let data = answer.json.get("data").cloned().unwrap_or(Value::Null);
        let failed = data
            .get("total_failed_items")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let result = json!({
            "command": body["command"],
            "agents": agents,
            "affected": data.get("affected_items"),
            "failed": data.get("failed_items"),
        });
        if failed > 0 {
            return Err(format!(
                "Wazuh could not run the command on {failed} agent(s): {data}"
            ));
        }
        ctx.journal.record(&key, result.clone());
        Ok(result)
    }
}

#[async_trait]
impl StepRunner for WazuhRunner {
    fn step_type(&self) -> &'static str {
        "wazuh-active-response"
    }

    async fn run(&self, action: &ActionRecord, ctx: &RunContext) -> StepOutcome {
        match self.respond(action, ctx).await {
            Ok(result) => StepOutcome::succeeded(result),
            Err(error) => StepOutcome::failed(error),
        }
    }

    /// Runs the recorded release: the same command on the same agents and address, with
    /// the release's arguments (`delete`) instead of the step's.
    async fn run_release(&self, action: &ActionRecord, ctx: &RunContext) -> Option<StepOutcome> {
        let arguments = action
            .params
            .pointer("/release/arguments")
            .cloned()
            .unwrap_or_else(|| json!(["delete"]));
        let mut undo = action.clone();
        if let Some(config) = undo.params.get_mut("config").and_then(Value::as_object_mut) {
            config.insert("arguments".into(), arguments);
        }
        Some(match self.respond(&undo, ctx).await {
            Ok(result) => StepOutcome::succeeded(result),
            Err(error) => StepOutcome::failed(error),
        })
    }

    /// Wazuh's stateful commands (`firewall-drop`, `host-deny`) undo themselves after
    /// the timeout configured on the manager; an early release runs the same command
    /// with Wazuh's `delete` action on the same agents.
    fn release(&self, action: &ActionRecord) -> Option<Value> {
        let config = action.params.get("config")?;
        Some(json!({
            "type": "wazuh-active-response",
            "method": "PUT",
            "path": "/active-response",
            "agents": config.get("agents"),
            "command": config.get("command"),
            "arguments": ["delete"],
            "srcip": config.get("srcip"),
            "note": "stateful commands also revert on their own after the manager's timeout",
        }))
    }
}
