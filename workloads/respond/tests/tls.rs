//! The webhook client's TLS: it speaks TLS 1.3, refuses a server that offers only
//! TLS 1.2, and refuses a certificate nobody vouches for. The servers are rustls on
//! 127.0.0.1 with a throwaway certificate for `localhost`.

use std::sync::{Arc, Mutex};

use chrono::Utc;
use kastell_core::store::{ActionRecord, ActionStatus};
use kastell_respond::runner::WebhookRunner;
use kastell_respond::{Journal, MemoryOutbox, RunContext, RunnerSettings, StepRunner};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct TlsServer {
    url: String,
    cert: CertificateDer<'static>,
    /// The protocol version of each completed handshake, or the handshake's error.
    handshakes: Arc<Mutex<Vec<String>>>,
}

async fn start_tls_server(versions: &[&'static rustls::SupportedProtocolVersion]) -> TlsServer {
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = generated.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(generated.key_pair.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let handshakes = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&handshakes);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(mut tls) => {
                        let version = tls.get_ref().1.protocol_version();
                        seen.lock().unwrap().push(format!("{version:?}"));
                        answer_one_request(&mut tls).await;
                    }
                    Err(e) => seen.lock().unwrap().push(format!("error: {e}")),
                }
            });
        }
    });
    TlsServer {
        url: format!("https://localhost:{port}/hooks/tls"),
        cert,
        handshakes,
    }
}

/// Reads one HTTP/1.1 request (headers and `content-length` body) and answers 200.
async fn answer_one_request<S: AsyncReadExt + AsyncWriteExt + Unpin>(stream: &mut S) {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        buffer.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buffer);
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_lowercase()
                        .strip_prefix("content-length:")
                        .map(str::to_owned)
                })
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                break;
            }
        }
    }
    let response = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

fn action(url: &str) -> ActionRecord {
    ActionRecord {
        id: 1,
        case_id: 1,
        alert_id: "a1".into(),
        playbook: "soc/tls".into(),
        step: "hook".into(),
        step_type: "webhook".into(),
        approval_required: false,
        status: ActionStatus::Approved,
        params: json!({"url": url, "headers": {}, "body": {"text": "hello"}, "timeout_seconds": 5}),
        reason: None,
        decided_by: None,
        result: None,
        created_at: Utc::now(),
        updated_at: Utc::now(),
    }
}

fn ctx() -> RunContext {
    RunContext::new(
        Arc::new(Journal::new()),
        Arc::new(MemoryOutbox::new()),
        "kastell-test".into(),
    )
}

fn runner(trusted: Option<&CertificateDer<'static>>) -> WebhookRunner {
    WebhookRunner::new(&RunnerSettings {
        native_roots: false,
        extra_roots: trusted.into_iter().cloned().collect(),
        ..RunnerSettings::default()
    })
    .unwrap()
}

#[tokio::test]
async fn posts_over_tls_1_3() {
    let server = start_tls_server(&[&rustls::version::TLS13]).await;
    let outcome = runner(Some(&server.cert))
        .run(&action(&server.url), &ctx())
        .await;
    assert_eq!(outcome.status, ActionStatus::Succeeded, "{outcome:?}");
    assert_eq!(outcome.result["status"], 200);
    assert_eq!(outcome.result["body"], "ok");
    assert_eq!(*server.handshakes.lock().unwrap(), ["Some(TLSv1_3)"]);
}

#[tokio::test]
async fn refuses_a_server_that_offers_only_tls_1_2() {
    let server = start_tls_server(&[&rustls::version::TLS12]).await;
    let outcome = runner(Some(&server.cert))
        .run(&action(&server.url), &ctx())
        .await;
    assert_eq!(outcome.status, ActionStatus::Failed);
    let error = outcome.result["error"].as_str().unwrap().to_owned();
    assert!(error.contains("ProtocolVersion"), "{error}");
    let handshakes = server.handshakes.lock().unwrap().clone();
    assert_eq!(handshakes.len(), 1);
    assert!(handshakes[0].starts_with("error:"), "{handshakes:?}");
}

#[tokio::test]
async fn refuses_a_certificate_no_trusted_ca_signed() {
    let server = start_tls_server(&[&rustls::version::TLS13]).await;
    let outcome = runner(None).run(&action(&server.url), &ctx()).await;
    assert_eq!(outcome.status, ActionStatus::Failed);
    let error = outcome.result["error"].as_str().unwrap().to_owned();
    assert!(error.contains("invalid peer certificate"), "{error}");
}
