//! The `notify` step: a chat message in the format of Mattermost, Slack, Microsoft
//! Teams (incoming-webhook POSTs) or Matrix (the client-server API's send endpoint), or
//! an e-mail through an SMTP submission server, always upgraded with STARTTLS.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kastell_core::store::ActionRecord;
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{
    Certificate, CertificateStore, Tls, TlsParameters, TlsVersion,
};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::client::secret_header;
use super::{
    check_url, config, field, param_timeout, secret, HttpClient, RunContext, RunnerSettings,
    SecretSource, StepOutcome, StepRunner,
};

/// Sends chat messages and e-mail.
pub struct NotifyRunner {
    client: HttpClient,
    secrets: Arc<dyn SecretSource>,
    native_roots: bool,
    extra_roots: Vec<Vec<u8>>,
}

impl NotifyRunner {
    pub fn new(client: HttpClient, settings: RunnerSettings) -> Self {
        NotifyRunner {
            client,
            secrets: Arc::clone(&settings.secrets),
            native_roots: settings.native_roots,
            extra_roots: settings
                .extra_roots
                .iter()
                .map(|c| c.as_ref().to_vec())
                .collect(),
        }
    }

    async fn notify(&self, action: &ActionRecord, ctx: &RunContext) -> Result<Value, String> {
        let config = config(&action.params)?;
        let text = field(config, "text")?;
        let timeout = param_timeout(&action.params);
        match field(config, "channel")? {
            "email" => self.email(config, text, ctx, timeout).await,
            "matrix" => self.matrix(config, text, ctx, timeout).await,
            channel => {
                let url = check_url(field(config, "url")?)?;
                let body = chat_body(channel, text)?;
                let answer = self
                    .client
                    .send(
                        ctx,
                        Method::POST,
                        &url,
                        HeaderMap::new(),
                        Some(&body),
                        timeout,
                    )
                    .await?;
                if !answer.is_success() {
                    return Err(format!("{channel} answered {}", answer.status));
                }
                Ok(json!({ "channel": channel, "status": answer.status }))
            }
        }
    }

    /// `PUT /_matrix/client/v3/rooms/{room}/send/m.room.message/{txnId}`: the
    /// transaction id is the idempotency key, so Matrix itself drops a repeat.
    async fn matrix(
        &self,
        config: &Map<String, Value>,
        text: &str,
        ctx: &RunContext,
        timeout: Duration,
    ) -> Result<Value, String> {
        let mut url = check_url(field(config, "url")?)?;
        let room = field(config, "room")?;
        let token = secret(self.secrets.as_ref(), config, "token_secret")?;
        url.path_segments_mut()
            .map_err(|()| "the Matrix URL cannot take a path")?
            .pop_if_empty()
            .extend([
                "_matrix",
                "client",
                "v3",
                "rooms",
                room,
                "send",
                "m.room.message",
                &ctx.idempotency_key,
            ]);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, secret_header(&format!("Bearer {token}"))?);
        let body = json!({ "msgtype": "m.text", "body": text });
        let answer = self
            .client
            .send(ctx, Method::PUT, &url, headers, Some(&body), timeout)
            .await?;
        if !answer.is_success() {
            return Err(format!("matrix answered {}", answer.status));
        }
        Ok(json!({ "channel": "matrix", "status": answer.status,
                   "event_id": answer.json.get("event_id") }))
    }

    async fn email(
        &self,
        config: &Map<String, Value>,
        text: &str,
        ctx: &RunContext,
        timeout: Duration,
    ) -> Result<Value, String> {
        let smtp = config
            .get("smtp")
            .and_then(Value::as_object)
            .ok_or("the action's config has no smtp")?;
        let host = field(smtp, "host")?;
        let port = smtp
            .get("port")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(587);
        let from: Mailbox = field(smtp, "from")?
            .parse()
            .map_err(|e| format!("smtp.from: {e}"))?;
        let subject = config.get("subject").and_then(Value::as_str).unwrap_or("");
        let mut message = Message::builder()
            .from(from)
            .subject(subject)
            // A repeat of the same action carries the same Message-ID, so mail systems
            // and readers can tell it is the same notification.
            .message_id(Some(format!("<{}@kastell.eu>", ctx.idempotency_key)))
            .header(ContentType::TEXT_PLAIN);
        let recipients: Vec<&str> = config
            .get("to")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if recipients.is_empty() {
            return Err("an e-mail needs at least one recipient (to)".into());
        }
        for to in &recipients {
            let mailbox: Mailbox = to.parse().map_err(|e| format!("to {to:?}: {e}"))?;
            message = message.to(mailbox);
        }
        let message = message
            .body(text.to_owned())
            .map_err(|e| format!("building the e-mail: {e}"))?;

        let mut tls = TlsParameters::builder(host.to_owned())
            .set_min_tls_version(TlsVersion::Tlsv13)
            .certificate_store(if self.native_roots {
                CertificateStore::Default
            } else {
                CertificateStore::None
            });
        for der in &self.extra_roots {
            let cert = Certificate::from_der(der.clone()).map_err(|e| format!("CA: {e}"))?;
            tls = tls.add_root_certificate(cert);
        }
        let tls = tls.build_rustls().map_err(|e| format!("SMTP TLS: {e}"))?;
        let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            // STARTTLS is required: the message never crosses the network in clear.
            .tls(Tls::Required(tls))
            .timeout(Some(timeout));
        if smtp.get("username_secret").is_some_and(|v| !v.is_null()) {
            let user = secret(self.secrets.as_ref(), smtp, "username_secret")?;
            let password = secret(self.secrets.as_ref(), smtp, "password_secret")?;
            transport = transport.credentials(Credentials::new(user, password));
        }
        let started = std::time::Instant::now();
        let sent = transport.build().send(message).await;
        let duration_ms = started.elapsed().as_millis() as u64;
        let summary = |status: Value| {
            json!({ "method": "SMTP", "url": format!("smtp://{host}:{port}"), "status": status,
                    "duration_ms": duration_ms, "attempt": ctx.attempt() })
        };
        match sent {
            Ok(response) => {
                let code = response.code().to_string();
                ctx.record_request(summary(code.clone().into()));
                Ok(json!({ "channel": "email", "smtp_code": code, "to": recipients }))
            }
            Err(e) => {
                let reason = format!("smtp://{host}:{port}: {}", super::error_chain(&e));
                ctx.record_request(summary(Value::Null));
                Err(reason)
            }
        }
    }
}

/// The incoming-webhook body each chat system expects.
///
/// # Errors
/// An unknown channel.
pub fn chat_body(channel: &str, text: &str) -> Result<Value, String> {
    Ok(match channel {
        "mattermost" => json!({ "text": text, "username": "Kastell" }),
        "slack" => json!({
            "text": text,
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
        }),
        "teams" => json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [{"type": "TextBlock", "text": text, "wrap": true}],
                },
            }],
        }),
        other => return Err(format!("unknown chat channel {other:?}")),
    })
}

#[async_trait]
impl StepRunner for NotifyRunner {
    fn step_type(&self) -> &'static str {
        "notify"
    }

    async fn run(&self, action: &ActionRecord, ctx: &RunContext) -> StepOutcome {
        match self.notify(action, ctx).await {
            Ok(result) => StepOutcome::succeeded(result),
            Err(error) => StepOutcome::failed(error),
        }
    }
}
