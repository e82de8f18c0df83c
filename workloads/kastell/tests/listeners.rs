//! Sensors declaring listeners become running listeners: HTTP, syslog over TCP and a
//! followed file, each delivering to the bus over real sockets on 127.0.0.1; a plain
//! listener off loopback is refused as a problem.

use std::io::Write;
use std::sync::Arc;

use kastell::listeners::{plan, start, ListenerKind};
use kastell_core::{Bus, Event, InProcessBus, Topic};
use kastell_ingest::transport::IngestMetrics;
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sensor(name: &str, format: &str, transport: &str) -> String {
    format!(
        "apiVersion: kastell.eu/v1alpha1\nkind: Sensor\nmetadata: {{name: {name}, namespace: soc}}\n\
         spec: {{format: {format}, transport: {transport}}}\n---\n"
    )
}

#[tokio::test]
async fn listening_sensors_deliver_to_the_bus() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let (http_port, tcp_port) = (free_port(), free_port());
    let yaml = [
        sensor(
            "edge-ids",
            "suricata-eve",
            &format!("{{type: http, port: {http_port}}}"),
        ),
        sensor(
            "firewall",
            "syslog",
            &format!("{{type: syslog-tcp, port: {tcp_port}, framing: octet-counting}}"),
        ),
        sensor(
            "host-ids",
            "wazuh-alerts",
            "{type: file, path: alerts.json, follow: true}",
        ),
        sensor(
            "exposed",
            "syslog",
            "{type: syslog-udp, port: 5514, bindAddress: 0.0.0.0}",
        ),
        sensor("replayed", "suricata-eve", "{type: file, path: eve.json}"),
    ]
    .concat();
    std::fs::write(dir.path().join("sensors.yaml"), yaml).unwrap();
    let (resources, errors) = kastell_crds::load_dir(dir.path()).unwrap();
    assert!(errors.is_empty(), "{errors:?}");

    let data = tempfile::tempdir().unwrap();
    let mut problems = Vec::new();
    let plans = plan(&resources, data.path(), &mut problems);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].contains("soc/exposed") && problems[0].contains("only bind to loopback"));
    assert_eq!(plans.len(), 3);
    assert!(
        matches!(&plans[2].kind, ListenerKind::Tail { checkpoint, .. }
        if checkpoint == &data.path().join("host-ids.checkpoint.json"))
    );

    let bus = Arc::new(InProcessBus::new(64));
    let mut events = bus.subscribe(Topic::Events, "test").await.unwrap();
    let shutdown = CancellationToken::new();
    let shared: Arc<dyn Bus> = bus.clone();
    let metrics = IngestMetrics::unregistered();
    let tasks = start(&plans, shared, &metrics, shutdown.clone())
        .await
        .unwrap();

    let eve = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/soc/data/suricata/eve.json"),
    )
    .unwrap();
    let line = eve
        .lines()
        .find(|l| l.contains("\"event_type\":\"dns\""))
        .unwrap()
        .to_owned();
    let answer = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{http_port}/api/v1/ingest/edge-ids"
        ))
        .body(line)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", tcp_port))
        .await
        .unwrap();
    let message =
        "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - 'su root' failed";
    tcp.write_all(format!("{} {message}", message.len()).as_bytes())
        .await
        .unwrap();
    tcp.shutdown().await.unwrap();

    let alerts = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/soc/data/wazuh/alerts.json"),
    )
    .unwrap();
    let mut file = std::fs::File::create(dir.path().join("alerts.json")).unwrap();
    writeln!(file, "{}", alerts.lines().next().unwrap()).unwrap();

    let mut sensors = Vec::new();
    for _ in 0..3 {
        let event: Event = events.next().await.unwrap().message.decode().unwrap();
        if event.sensor() == Some("firewall") {
            // The syslog sender's socket is kept: the message names only its host.
            let sender = event.get_str("log.source.address").unwrap();
            assert!(sender.starts_with("127.0.0.1:"), "{sender}");
        }
        sensors.push(event.sensor().unwrap().to_owned());
    }
    sensors.sort();
    assert_eq!(sensors, vec!["edge-ids", "firewall", "host-ids"]);
    shutdown.cancel();
    for task in tasks {
        task.await.unwrap();
    }
    assert!(data.path().join("host-ids.checkpoint.json").is_file());
}

/// A throwaway CA, and a server certificate for localhost and 127.0.0.1 it signed as
/// `<name>.crt` / `<name>.key` in `dir` for each name; the CA's PEM is returned.
fn throwaway_pki(dir: &std::path::Path, names: &[&str]) -> String {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    for name in names {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
    ca.pem()
}

#[tokio::test]
async fn an_http_sensor_with_tls_serves_https() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let ca = throwaway_pki(dir.path(), &["ingest", "other"]);
    let (port, shared_port) = (free_port(), free_port());
    let tls = |name: &str| format!("tls: {{certFile: {name}.crt, keyFile: {name}.key}}");
    let yaml = [
        sensor(
            "edge-ids",
            "suricata-eve",
            &format!("{{type: http, port: {port}, {}}}", tls("ingest")),
        ),
        sensor(
            "plain",
            "suricata-eve",
            &format!("{{type: http, port: {shared_port}}}"),
        ),
        sensor(
            "mismatched",
            "suricata-eve",
            &format!("{{type: http, port: {shared_port}, {}}}", tls("other")),
        ),
    ]
    .concat();
    std::fs::write(dir.path().join("sensors.yaml"), yaml).unwrap();
    let (resources, errors) = kastell_crds::load_dir(dir.path()).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let data = tempfile::tempdir().unwrap();
    let mut problems = Vec::new();
    let plans = plan(&resources, data.path(), &mut problems);
    assert!(problems.is_empty(), "{problems:?}");
    let bus = Arc::new(InProcessBus::new(64));
    let shared: Arc<dyn Bus> = bus.clone();
    let metrics = IngestMetrics::unregistered();

    // Two Sensors on one address must agree on TLS.
    let refused = start(&plans, shared.clone(), &metrics, CancellationToken::new()).await;
    let error = format!("{:#}", refused.expect_err("a tls mismatch is refused"));
    assert!(error.contains("tls"), "{error}");

    let mut events = bus.subscribe(Topic::Events, "test").await.unwrap();
    let shutdown = CancellationToken::new();
    let tasks = start(&plans[..1], shared, &metrics, shutdown.clone())
        .await
        .unwrap();
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.as_bytes()).unwrap()])
        .build()
        .unwrap();
    let line = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/soc/data/suricata/eve.json"),
    )
    .unwrap()
    .lines()
    .find(|l| l.contains("\"event_type\":\"dns\""))
    .unwrap()
    .to_owned();
    let answer = client
        .post(format!("https://localhost:{port}/api/v1/ingest/edge-ids"))
        .body(line)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let event: Event = events.next().await.unwrap().message.decode().unwrap();
    assert_eq!(event.sensor(), Some("edge-ids"));
    shutdown.cancel();
    for task in tasks {
        task.await.unwrap();
    }
}
