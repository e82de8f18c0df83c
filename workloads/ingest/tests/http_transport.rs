//! The HTTP transport over real sockets on 127.0.0.1: JSON lines, gzip, limits, the
//! `_bulk` API with the body Filebeat sends, the start-up probes, and 429 when the bus
//! is full.

mod listeners;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use kastell_core::{Bus, Topic};
use kastell_ingest::transport::http::{self, HttpIngest};
use kastell_ingest::transport::Inlet;
use listeners::{eve_lines, fixture, Pipeline, SENSOR};
use serde_json::Value;
use tokio::sync::oneshot;

struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(ingest: HttpIngest) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(http::serve(listener, http::router(ingest), async {
            let _ = stopped.await;
        }));
        Server { addr, stop, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

async fn one_sensor(queue: usize) -> (Pipeline, Arc<Inlet>, Server) {
    let pipeline = Pipeline::new(1024).await;
    let inlet = pipeline.suricata_inlet(SENSOR, queue);
    let server = Server::start(HttpIngest::new([Arc::clone(&inlet)])).await;
    (pipeline, inlet, server)
}

#[tokio::test]
async fn json_lines_are_published_and_bad_records_dead_lettered_while_the_rest_flows() {
    let (pipeline, inlet, server) = one_sensor(64).await;
    let good = eve_lines("\"event_type\":\"dns\"", 3);
    let mut body = Vec::new();
    body.extend_from_slice(format!("{}\n", good[0]).as_bytes());
    body.extend_from_slice(b"{\"event_type\": \"dns\", broken\n");
    body.extend_from_slice(format!("{}\r\n\n", good[1]).as_bytes());
    body.extend_from_slice(b"{\"event_type\":\"dns\",\"x\":\"\xff\xfe\"}\n");
    body.extend_from_slice(good[2].as_bytes());

    let answer = client()
        .post(server.url(&format!("/api/v1/ingest/{SENSOR}")))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["published"], 3);
    assert_eq!(answer["rejected"], 2);
    assert_eq!(answer["rejections"][0]["line"], 2);
    assert_eq!(answer["rejections"][0]["kind"], "invalid_json");
    assert_eq!(answer["rejections"][1]["line"], 5);
    assert_eq!(answer["rejections"][1]["kind"], "invalid_utf8");

    assert_eq!(inlet.metrics().records(), 5);
    assert_eq!(inlet.metrics().rejects("invalid_json"), 1);
    assert_eq!(inlet.metrics().rejects("invalid_utf8"), 1);
    assert_eq!(inlet.metrics().queue_depth(), 0);
    assert!(inlet.metrics().last_event() > 0.0);
    server.stop().await;
    let (events, letters) = pipeline.drain().await;
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e.sensor() == Some(SENSOR)));
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0]["sensor"], SENSOR);
    assert_eq!(letters[0]["kind"], "invalid_json");
    assert_eq!(letters[0]["raw"], "{\"event_type\": \"dns\", broken");
    assert_eq!(letters[1]["kind"], "invalid_utf8");
}

#[tokio::test]
async fn a_gzip_body_is_decompressed_and_an_oversized_record_is_rejected_alone() {
    let (pipeline, inlet, server) = one_sensor(64).await;
    let good = eve_lines("\"event_type\":\"alert\"", 2);
    let huge = format!(
        "{{\"event_type\":\"dns\",\"pad\":\"{}\"}}",
        "a".repeat(1024 * 1024)
    );
    let body = format!("{}\n{huge}\n{}\n", good[0], good[1]);
    let answer = client()
        .post(server.url(&format!("/api/v1/ingest/{SENSOR}")))
        .header("content-encoding", "gzip")
        .body(gzip(body.as_bytes()))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["published"], 2);
    assert_eq!(answer["rejections"][0]["kind"], "too_long");
    assert_eq!(inlet.metrics().rejects("too_long"), 1);
    server.stop().await;
    let (events, letters) = pipeline.drain().await;
    assert_eq!(events.len(), 2);
    assert_eq!(letters[0]["raw_truncated"], true);
    assert_eq!(letters[0]["raw_bytes"], huge.len());
    assert!(letters[0]["raw"].as_str().unwrap().len() <= kastell_ingest::DEAD_LETTER_RAW_BYTES);
}

#[tokio::test]
async fn gzip_bombs_bad_gzip_and_unknown_sensors_are_refused_whole() {
    let pipeline = Pipeline::new(16).await;
    let inlet = pipeline.suricata_inlet(SENSOR, 64);
    let server = Server::start(HttpIngest::new([inlet]).with_max_body_bytes(64 * 1024)).await;
    let client = client();
    let url = server.url(&format!("/api/v1/ingest/{SENSOR}"));

    let bomb = gzip(&vec![b'\n'; 1024 * 1024]);
    assert!(bomb.len() < 64 * 1024);
    let answer = client
        .post(&url)
        .header("content-encoding", "gzip")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 413);

    let answer = client
        .post(&url)
        .header("content-encoding", "gzip")
        .body("not gzip at all")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 400);
    let body: Value = answer.json().await.unwrap();
    assert!(body["error"]["reason"].as_str().unwrap().contains("gzip"));

    let answer = client
        .post(&url)
        .header("content-encoding", "br")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 415);

    let answer = client
        .post(server.url("/api/v1/ingest/nobody"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    server.stop().await;
    let (events, letters) = pipeline.drain().await;
    assert!(events.is_empty() && letters.is_empty());
}

#[tokio::test]
async fn the_bulk_api_takes_filebeats_body_and_answers_like_elasticsearch() {
    let (pipeline, _inlet, server) = one_sensor(64).await;
    let body = std::fs::read(fixture("filebeat/bulk-suricata.ndjson")).unwrap();
    let answer = client()
        .post(server.url("/_bulk"))
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip(&body))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["x-elastic-product"], "Elasticsearch");
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["errors"], false);
    let items = answer["items"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    for item in items {
        assert_eq!(item["create"]["status"], 201);
        assert_eq!(item["create"]["result"], "created");
        assert_eq!(item["create"]["_index"], "filebeat-8.13.4");
    }
    server.stop().await;
    let (events, letters) = pipeline.drain().await;
    assert!(letters.is_empty(), "{letters:?}");
    assert_eq!(events.len(), 3);
    assert_eq!(events[0].get_str("event.kind"), Some("alert"));
    assert_eq!(events[0].sensor(), Some(SENSOR));
    assert_eq!(events[2].get_str("event.dataset"), Some("suricata.eve"));
}

#[tokio::test]
async fn bulk_items_fail_one_by_one_and_are_routed_by_index() {
    let pipeline = Pipeline::new(64).await;
    let ids = pipeline.suricata_inlet("ids", 64);
    let other = pipeline.suricata_inlet("other-ids", 64);
    let server = Server::start(HttpIngest::new([Arc::clone(&ids), Arc::clone(&other)])).await;
    let good = eve_lines("\"event_type\":\"dns\"", 2);
    let body = format!(
        "{{\"index\":{{\"_index\":\"ids\",\"_id\":\"a\"}}}}\n{}\n\
         {{\"create\":{{}}}}\nnot json\n\
         {{\"delete\":{{\"_index\":\"ids\",\"_id\":\"a\"}}}}\n\
         {{\"creat\":{{}}}}\n{{\"event_type\":\"dns\"}}\n\
         {{\"create\":{{\"_index\":\"nowhere\"}}}}\n{}\n\
         {{\"create\":{{}}}}\n{}\n",
        good[0], good[1], good[1]
    );
    let answer: Value = client()
        .post(server.url("/other-ids/_bulk"))
        .body(body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["errors"], true);
    let statuses: Vec<(String, u64)> = answer["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| {
            let (op, result) = item.as_object().unwrap().iter().next().unwrap();
            (op.clone(), result["status"].as_u64().unwrap())
        })
        .collect();
    let expected = [
        ("index", 201),
        ("create", 400),
        ("delete", 400),
        ("index", 400),
        ("create", 404),
        ("create", 201),
    ];
    let expected: Vec<(String, u64)> = expected
        .iter()
        .map(|(op, s)| (op.to_string(), *s))
        .collect();
    assert_eq!(statuses, expected);
    assert_eq!(answer["items"][0]["index"]["_id"], "a");
    assert_eq!(ids.metrics().records(), 1);
    assert_eq!(other.metrics().records(), 3);
    assert_eq!(other.metrics().rejects("invalid_json"), 1);
    assert_eq!(other.metrics().rejects("invalid_bulk_action"), 1);
    server.stop().await;
    let (events, letters) = pipeline.drain().await;
    assert_eq!(events.len(), 2);
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[1]["kind"], "invalid_bulk_action");
    assert_eq!(
        letters[1]["raw"],
        "{\"creat\":{}}\n{\"event_type\":\"dns\"}"
    );
}

#[tokio::test]
async fn shippers_start_up_probes_are_answered() {
    let (_pipeline, _inlet, server) = one_sensor(8).await;
    let client = client();
    let banner: Value = client
        .get(server.url("/"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(banner["version"]["number"], http::DEFAULT_ES_VERSION);
    assert_eq!(banner["tagline"], "You Know, for Search");
    let head = client.head(server.url("/")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let license: Value = client
        .get(server.url("/_license"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(license["license"]["status"], "active");
    let xpack = client.get(server.url("/_xpack")).send().await.unwrap();
    assert_eq!(xpack.status(), 200);
    let health: Value = client
        .get(server.url("/_cluster/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "green");
    server.stop().await;
}

#[tokio::test]
async fn a_full_bus_is_answered_429_with_retry_after_and_nothing_is_lost() {
    // One message fits on the bus and one record in the inlet's queue.
    let mut pipeline = Pipeline::new(1).await;
    let inlet = pipeline.suricata_inlet(SENSOR, 1);
    let server = Server::start(HttpIngest::new([Arc::clone(&inlet)])).await;
    let url = server.url(&format!("/api/v1/ingest/{SENSOR}"));
    let lines = eve_lines("\"event_type\":\"dns\"", 3);
    let client = client();

    let first = client
        .post(&url)
        .body(lines[0].clone())
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200, "the first record fills the bus");
    let blocked = {
        let (client, url, line) = (client.clone(), url.clone(), lines[1].clone());
        tokio::spawn(async move { client.post(&url).body(line).send().await.unwrap().status() })
    };
    while inlet.metrics().queue_depth() < 1 {
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let refused = client
        .post(&url)
        .body(lines[2].clone())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.headers()["retry-after"], "1");
    assert!(
        !blocked.is_finished(),
        "a record waits for the bus before it is acknowledged"
    );

    let first_event = pipeline.events.next().await.unwrap();
    first_event.ack().await.unwrap();
    assert_eq!(blocked.await.unwrap(), 200);
    let retried = {
        let (client, url, line) = (client.clone(), url.clone(), lines[2].clone());
        tokio::spawn(async move { client.post(&url).body(line).send().await.unwrap().status() })
    };
    let second = pipeline.events.next().await.unwrap();
    second.ack().await.unwrap();
    let third = pipeline.events.next().await.unwrap();
    third.ack().await.unwrap();
    assert_eq!(retried.await.unwrap(), 200);
    server.stop().await;
    pipeline.bus.close(Topic::Events).await;
    assert!(pipeline.events.next().await.is_none());
}

/// Asserts that a refusal has `status` and a JSON body with a reason, as every 4xx of
/// this listener must.
async fn assert_json_refusal(answer: reqwest::Response, status: u16) -> Value {
    assert_eq!(answer.status(), status);
    let content_type = answer.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["status"], status);
    assert!(body["error"]["type"].is_string(), "{body}");
    assert!(
        !body["error"]["reason"].as_str().unwrap().is_empty(),
        "{body}"
    );
    body
}

#[tokio::test]
async fn every_refusal_has_a_json_body_with_a_reason() {
    let pipeline = Pipeline::new(16).await;
    let inlet = pipeline.suricata_inlet(SENSOR, 64);
    let server = Server::start(HttpIngest::new([inlet]).with_max_body_bytes(1024)).await;
    let client = client();

    let body = assert_json_refusal(
        client.get(server.url("/nowhere")).send().await.unwrap(),
        404,
    )
    .await;
    assert!(body["error"]["reason"]
        .as_str()
        .unwrap()
        .contains("/nowhere"));

    let answer = client
        .get(server.url(&format!("/api/v1/ingest/{SENSOR}")))
        .send()
        .await
        .unwrap();
    assert!(
        answer.headers().contains_key("allow"),
        "405 keeps its Allow header"
    );
    assert_json_refusal(answer, 405).await;

    // Over the body limit before any decoding: axum's own plain-text 413, rewritten.
    let answer = client
        .post(server.url(&format!("/api/v1/ingest/{SENSOR}")))
        .body(vec![b'x'; 4096])
        .send()
        .await
        .unwrap();
    let body = assert_json_refusal(answer, 413).await;
    assert!(
        body["error"]["reason"].as_str().unwrap().contains("limit"),
        "{body}"
    );

    let long = format!("/api/v1/ingest/{}", "a".repeat(http::MAX_URI_BYTES));
    let body = assert_json_refusal(client.post(server.url(&long)).send().await.unwrap(), 414).await;
    assert_eq!(body["error"]["type"], "uri_too_long");

    // A path segment that is not UTF-8 fails axum's `Path` extractor with a 400.
    let answer = client
        .post(server.url("/api/v1/ingest/%FF"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_json_refusal(answer, 400).await;

    // The listener's own refusals stay as they were.
    let answer = client
        .post(server.url("/api/v1/ingest/nobody"))
        .body("{}")
        .send()
        .await
        .unwrap();
    let body = assert_json_refusal(answer, 404).await;
    assert_eq!(body["error"]["type"], "unknown_sensor");

    server.stop().await;
    let (events, letters) = pipeline.drain().await;
    assert!(events.is_empty() && letters.is_empty());
}

/// A throwaway CA and a server certificate for localhost and 127.0.0.1 it signed, as PEM
/// files, and the CA as PEM for the client.
struct Pki {
    _dir: tempfile::TempDir,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    ca_pem: String,
}

fn throwaway_pki() -> Pki {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    Pki {
        _dir: dir,
        cert: cert_path,
        key: key_path,
        ca_pem: ca.pem(),
    }
}

fn https_client(pki: &Pki, max: Option<reqwest::tls::Version>) -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap();
    let mut builder = reqwest::Client::builder().tls_certs_only([ca]);
    if let Some(max) = max {
        builder = builder.max_tls_version(max);
    }
    builder.build().unwrap()
}

#[tokio::test]
async fn https_takes_json_lines_over_tls_1_3_only() {
    let pki = throwaway_pki();
    let pipeline = Pipeline::new(64).await;
    let inlet = pipeline.suricata_inlet(SENSOR, 64);
    let acceptor =
        kastell_ingest::transport::syslog_tls::tls_acceptor(&pki.cert, &pki.key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = oneshot::channel::<()>();
    let router = http::router(HttpIngest::new([Arc::clone(&inlet)]));
    let task = tokio::spawn(http::serve_tls(listener, acceptor, router, async {
        let _ = stopped.await;
    }));
    let url = format!("https://localhost:{port}/api/v1/ingest/{SENSOR}");
    let good = eve_lines("\"event_type\":\"dns\"", 2);

    // A client stuck in its handshake holds up no one.
    let stalled = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();

    let answer = https_client(&pki, None)
        .post(&url)
        .body(good.join("\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["published"], 2);

    // Refusals answer JSON over TLS too.
    let answer = https_client(&pki, None)
        .get(format!("https://localhost:{port}/nowhere"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 404);
    assert!(answer.json::<Value>().await.unwrap()["error"]["reason"].is_string());

    let tls12 = https_client(&pki, Some(reqwest::tls::Version::TLS_1_2))
        .post(&url)
        .body(good[0].clone())
        .send()
        .await;
    assert!(tls12.is_err(), "a TLS 1.2 client must be refused");
    let plain = client()
        .post(format!("http://localhost:{port}/api/v1/ingest/{SENSOR}"))
        .body(good[0].clone())
        .send()
        .await;
    assert!(plain.is_err() || !plain.unwrap().status().is_success());

    drop(stalled);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    assert_eq!(inlet.metrics().records(), 2);
    let (events, letters) = pipeline.drain().await;
    assert_eq!(events.len(), 2);
    assert!(letters.is_empty());
}
