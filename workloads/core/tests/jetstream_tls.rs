//! The JetStream bus over TLS 1.3 to a nats-server of the test's own, with a throwaway CA
//! and server certificate made by rcgen.

use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

use kastell_core::bus::jetstream::{JetStreamBus, JetStreamConfig, JetStreamError};
use kastell_core::{error_chain, Bus, Message, Topic};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

mod support;
use support::{free_port, PrivateServer};

struct Pki {
    ca: String,
    cert: String,
    key: String,
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    Pki {
        ca: ca.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn tls_server(dir: &Path, pki: &Pki) -> PrivateServer {
    let cert = write(dir, "server.pem", &pki.cert);
    let key = write(dir, "server.key", &pki.key);
    let store = dir.join("store");
    let args: [&OsStr; 5] = [
        "--tls".as_ref(),
        "--tlscert".as_ref(),
        cert.as_os_str(),
        "--tlskey".as_ref(),
        key.as_os_str(),
    ];
    PrivateServer::start(&store, free_port(), &args)
}

fn config(port: u16, ca_file: &Path) -> JetStreamConfig {
    let mut config = JetStreamConfig::new(format!("nats://127.0.0.1:{port}"));
    config.limits.max_bytes = 8 << 20;
    for (_, limits) in &mut config.topic_limits {
        limits.max_bytes = 8 << 20;
    }
    config.security.tls_ca_file = Some(ca_file.to_owned());
    config
}

#[tokio::test]
async fn messages_travel_over_tls_to_a_server_the_ca_vouches_for() {
    if std::env::var_os("KASTELL_NATS_URL").is_none() {
        println!("skipped: KASTELL_NATS_URL not set");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let server = tls_server(dir.path(), &pki);
    let ca_file = write(dir.path(), "ca.pem", &pki.ca);

    let bus = JetStreamBus::connect(config(server.port, &ca_file))
        .await
        .unwrap();
    let mut sub = bus.subscribe(Topic::Alerts, "cases").await.unwrap();
    let message = Message::json(&"over tls").unwrap().with_id("t1");
    bus.publish(Topic::Alerts, message.clone()).await.unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(60), sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(delivery.message, message);
    delivery.ack().await.unwrap();
}

#[tokio::test]
async fn a_server_certificate_from_another_ca_is_refused() {
    if std::env::var_os("KASTELL_NATS_URL").is_none() {
        println!("skipped: KASTELL_NATS_URL not set");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = tls_server(dir.path(), &pki());
    let other_ca = write(dir.path(), "other-ca.pem", &pki().ca);

    match JetStreamBus::connect(config(server.port, &other_ca)).await {
        Err(error @ JetStreamError::Connect { .. }) => {
            let text = error_chain(&error);
            assert!(text.contains("certificate"), "{text}");
        }
        Err(other) => panic!("expected a connect error, got {}", error_chain(&other)),
        Ok(_) => panic!("connected to a server no trusted CA vouches for"),
    }
}

#[tokio::test]
async fn a_ca_file_without_certificates_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = write(dir.path(), "empty.pem", "");
    let refused = JetStreamBus::connect(config(free_port(), &empty)).await;
    match refused {
        Err(JetStreamError::Tls(text)) => assert!(text.contains("no PEM certificate"), "{text}"),
        Err(other) => panic!("expected a TLS error, got {other}"),
        Ok(_) => panic!("expected a TLS error, got a connection"),
    }
}
