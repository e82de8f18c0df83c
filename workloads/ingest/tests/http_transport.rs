//! The HTTP transport over real sockets on 127.0.0.1: JSON lines, gzip, limits, the
//! `_bulk` API with the body Filebeat sends, the start-up probes, and 429 when the bus
//! is full.

mod listeners;

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;

use kastell_core::{Bus, Topic};
use kastell_ingest::transport::http::{self, HttpIngest};
use kastell_ingest::transport::http_conn;
use kastell_ingest::transport::{Connections, Inlet};
use listeners::{
    eve_lines, fixture, mutual_client_config, mutual_pki, MutualPki, Pipeline, SENSOR,
};
use serde_json::Value;
use tokio::sync::oneshot;

struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(ingest: HttpIngest) -> Self {
        Self::start_with(ingest, Connections::unmetered("test")).await
    }

    async fn start_with(ingest: HttpIngest, connections: Connections) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let router = http::router(ingest);
        let task = tokio::spawn(http::serve(listener, router, connections, async {
            let _ = stopped.await;
        }));
        Server { addr, stop, task }
    }

    /// The listener over HTTPS with `acceptor`.
    async fn start_tls(ingest: HttpIngest, acceptor: tokio_rustls::TlsAcceptor) -> Self {
        Self::start_tls_with(ingest, acceptor, Connections::unmetered("test")).await
    }

    async fn start_tls_with(
        ingest: HttpIngest,
        acceptor: tokio_rustls::TlsAcceptor,
        connections: Connections,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let router = http::router(ingest);
        let task = tokio::spawn(http::serve_tls(
            listener,
            acceptor,
            router,
            connections,
            async {
                let _ = stopped.await;
            },
        ));
        Server { addr, stop, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }

    /// Posts a `_bulk` body to `path` and reads the JSON answer.
    async fn bulk(&self, path: &str, body: String) -> Value {
        client()
            .post(self.url(path))
            .body(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
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

    // Two codings applied in turn, as one list or as two fields, are refused whole
    // rather than read as gzip alone.
    for fields in [&["gzip, br"][..], &["gzip", "br"][..]] {
        let mut request = client.post(&url).body(gzip(b"{}"));
        for field in fields {
            request = request.header("content-encoding", *field);
        }
        let answer = request.send().await.unwrap();
        assert_eq!(answer.status(), 415, "{fields:?}");
        let body: Value = answer.json().await.unwrap();
        assert_eq!(
            body["error"]["reason"],
            "content encodings \"gzip, br\" applied in turn are not supported; send one gzip \
             layer or none",
            "{fields:?}"
        );
    }
    // `identity` adds nothing.
    let answer = client
        .post(&url)
        .header("content-encoding", "identity, gzip")
        .body(gzip(b"\n"))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

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
         {{\"create\":{{}}}}\n{}\n\
         {{\"create\":{{}}}}\n",
        good[0], good[1], good[1]
    );
    let answer = server.bulk("/other-ids/_bulk", body).await;
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
        // The body ends after this action: its source line is missing.
        ("create", 400),
    ];
    let expected: Vec<(String, u64)> = expected
        .iter()
        .map(|(op, s)| (op.to_string(), *s))
        .collect();
    assert_eq!(statuses, expected);
    assert_eq!(answer["items"][0]["index"]["_id"], "a");
    assert_eq!(ids.metrics().records(), 1);
    assert_eq!(other.metrics().records(), 4);
    assert_eq!(other.metrics().rejects("invalid_json"), 1);
    assert_eq!(other.metrics().rejects("invalid_bulk_action"), 2);
    server.stop().await;
    let (events, letters) = pipeline.drain().await;
    assert_eq!(events.len(), 2);
    assert_eq!(letters.len(), 3);
    assert_eq!(letters[1]["kind"], "invalid_bulk_action");
    assert_eq!(
        letters[1]["raw"],
        "{\"creat\":{}}\n{\"event_type\":\"dns\"}"
    );
    assert_eq!(letters[2]["kind"], "invalid_bulk_action");
    assert_eq!(letters[2]["raw"], "{\"create\":{}}");
}

/// On `POST /_bulk` to a listener of several sensors, an unreadable action line names no
/// sensor: it is a 400 saying what is wrong with it, not "no such sensor", and the
/// readable items around it still go through.
#[tokio::test]
async fn an_unreadable_action_on_a_shared_listener_is_400_not_404() {
    let pipeline = Pipeline::new(64).await;
    let ids = pipeline.suricata_inlet("ids", 64);
    let other = pipeline.suricata_inlet("other-ids", 64);
    let server = Server::start(HttpIngest::new([Arc::clone(&ids), Arc::clone(&other)])).await;
    let good = eve_lines("\"event_type\":\"dns\"", 1);
    let body = format!(
        "\u{0}\u{0}\u{0}\n{{\"event_type\":\"dns\"}}\n{{\"create\":{{\"_index\":\"ids\"}}}}\n{}\n",
        good[0]
    );
    let answer = server.bulk("/_bulk", body).await;
    let items = answer["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{answer}");
    let first = items[0].as_object().unwrap().values().next().unwrap();
    assert_eq!(first["status"], 400, "{answer}");
    assert_eq!(
        first["error"]["type"], "illegal_argument_exception",
        "{answer}"
    );
    let second = items[1].as_object().unwrap().values().next().unwrap();
    assert_eq!(second["status"], 201, "{answer}");
    assert_eq!(ids.metrics().records(), 1);
    server.stop().await;
    let (events, _) = pipeline.drain().await;
    assert_eq!(events.len(), 1);
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

/// Sends `request` as raw bytes and reads until the server closes the connection; each
/// answer as its status and its body read as JSON.
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> Vec<(u16, Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The server may answer and stop reading before the whole request is sent.
    let _ = stream.write_all(request).await;
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer).await;
    let text = String::from_utf8(answer).unwrap();
    let mut answers = Vec::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("HTTP/1.1 ") {
        let response = &rest[start..];
        let status = response[9..12].parse().unwrap();
        let (head, after) = response.split_once("\r\n\r\n").unwrap();
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "{head}"
        );
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(|v| v.trim().parse().unwrap())
            })
            .unwrap();
        let body: Value = serde_json::from_str(&after[..length]).unwrap();
        if status >= 400 {
            assert_eq!(body["status"], status, "{body}");
            assert!(
                !body["error"]["reason"].as_str().unwrap().is_empty(),
                "{body}"
            );
        }
        answers.push((status, body));
        rest = &after[length..];
    }
    answers
}

fn statuses(answers: &[(u16, Value)]) -> Vec<u16> {
    answers.iter().map(|(status, _)| *status).collect()
}

#[tokio::test]
async fn what_hyper_would_refuse_bare_is_refused_with_a_json_body() {
    let (pipeline, _inlet, server) = one_sensor(64).await;
    let addr = server.addr;

    // Not HTTP at all: the start of a TLS ClientHello, a syslog line.
    let answers = raw_exchange(addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03junk").await;
    assert_eq!(statuses(&answers), [400]);
    assert_eq!(answers[0].1["error"]["type"], "bad_request");
    let syslog = b"<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick\n";
    assert_eq!(statuses(&raw_exchange(addr, syslog).await), [400]);

    // A malformed header field.
    let answers = raw_exchange(addr, b"GET / HTTP/1.1\r\nhost: x\r\nno colon here\r\n\r\n").await;
    assert_eq!(statuses(&answers), [400]);

    // A Content-Length that is not a length.
    let negative =
        format!("POST /api/v1/ingest/{SENSOR} HTTP/1.1\r\nhost: x\r\ncontent-length: -1\r\n\r\n");
    let answers = raw_exchange(addr, negative.as_bytes()).await;
    assert_eq!(statuses(&answers), [400]);
    assert_eq!(
        answers[0].1["error"]["reason"],
        "Content-Length \"-1\" is not a number of bytes"
    );

    // A request target over hyper's own 64 KiB limit.
    let long = format!("GET /{} HTTP/1.1\r\nhost: x\r\n\r\n", "a".repeat(70 * 1024));
    let answers = raw_exchange(addr, long.as_bytes()).await;
    assert_eq!(statuses(&answers), [414]);
    assert_eq!(answers[0].1["error"]["type"], "uri_too_long");

    // A head over the listener's limit, and more header fields than it allows.
    let big = format!(
        "GET / HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(http_conn::MAX_HEAD_BYTES)
    );
    let answers = raw_exchange(addr, big.as_bytes()).await;
    assert_eq!(statuses(&answers), [431]);
    assert_eq!(answers[0].1["error"]["type"], "headers_too_large");
    let many: String = (0..=http_conn::MAX_HEADERS)
        .map(|i| format!("x-{i}: 1\r\n"))
        .collect();
    let request = format!("GET / HTTP/1.1\r\nhost: x\r\n{many}\r\n");
    assert_eq!(
        statuses(&raw_exchange(addr, request.as_bytes()).await),
        [431]
    );

    // The same limits on a kept-alive connection's later requests, which hyper parses.
    let fine = "GET / HTTP/1.1\r\nhost: x\r\n\r\n";
    let request = format!("{fine}GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{many}\r\n");
    let answers = raw_exchange(addr, request.as_bytes()).await;
    assert_eq!(statuses(&answers), [200, 431]);
    let big_close = big.replacen("host: x\r\n", "host: x\r\nconnection: close\r\n", 1);
    let answers = raw_exchange(addr, format!("{fine}{big_close}").as_bytes()).await;
    assert_eq!(statuses(&answers), [200, 431]);
    let long_close = format!(
        "GET /{} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n",
        "a".repeat(http::MAX_URI_BYTES + 1)
    );
    let answers = raw_exchange(addr, format!("{fine}{long_close}").as_bytes()).await;
    assert_eq!(statuses(&answers), [200, 414]);

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
    let server = Server::start_tls(HttpIngest::new([Arc::clone(&inlet)]), acceptor).await;
    let port = server.addr.port();
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
    server.stop().await;
    assert_eq!(inlet.metrics().records(), 2);
    let (events, letters) = pipeline.drain().await;
    assert_eq!(events.len(), 2);
    assert!(letters.is_empty());
}

/// POSTs `body` to the ingest endpoint over TLS 1.3 as a client presenting `identity`;
/// the status line of the answer, or `None` when the server ended the connection
/// without one.
async fn post_with_identity(
    port: u16,
    pki: &MutualPki,
    identity: Option<&(String, String)>,
    body: &str,
) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let connector = tokio_rustls::TlsConnector::from(mutual_client_config(pki, identity));
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.ok()?;
    let request = format!(
        "POST /api/v1/ingest/{SENSOR} HTTP/1.1\r\nhost: localhost\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    // Refused clients learn it here or on the read, as TLS 1.3 checks their certificate
    // after their side of the handshake is done.
    tls.write_all(request.as_bytes()).await.ok()?;
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer).into_owned();
    answer
        .lines()
        .next()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
}

#[tokio::test]
async fn https_with_a_client_ca_takes_only_clients_with_a_certificate_from_it() {
    let pki = mutual_pki();
    let pipeline = Pipeline::new(64).await;
    let inlet = pipeline.suricata_inlet(SENSOR, 64);
    let acceptor = kastell_ingest::transport::syslog_tls::server_acceptor(
        &pki.server_cert,
        &pki.server_key,
        Some(&pki.client_ca),
    )
    .unwrap();
    let server = Server::start_tls(HttpIngest::new([Arc::clone(&inlet)]), acceptor).await;
    let port = server.addr.port();
    let good = eve_lines("\"event_type\":\"dns\"", 3);

    let anonymous = post_with_identity(port, &pki, None, &good[0]).await;
    assert_eq!(
        anonymous, None,
        "a client without a certificate must be refused"
    );
    let stranger = post_with_identity(port, &pki, Some(&pki.stranger_client), &good[1]).await;
    assert_eq!(
        stranger, None,
        "a certificate from another CA must be refused"
    );
    let trusted = post_with_identity(port, &pki, Some(&pki.trusted_client), &good[2]).await;
    assert_eq!(trusted.as_deref(), Some("HTTP/1.1 200 OK"));

    // reqwest, as a shipper would use it, with the same identity.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (cert, key) = &pki.trusted_client;
    let identity = reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap();
    let ca = reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap();
    let answer = reqwest::Client::builder()
        .tls_certs_only([ca])
        .identity(identity)
        .build()
        .unwrap()
        .post(format!("https://localhost:{port}/api/v1/ingest/{SENSOR}"))
        .body(good[0].clone())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);

    server.stop().await;
    assert_eq!(inlet.metrics().records(), 2);
    let (events, letters) = pipeline.drain().await;
    assert_eq!(events.len(), 2);
    assert!(letters.is_empty());
}

/// Sends a request head without its body and reads the first answer, within a deadline
/// that turns waiting for the body into a failure.
async fn answer_to_head_alone(addr: SocketAddr, head: &str) -> (tokio::net::TcpStream, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut answer))
        .await
        .expect("answered without the body")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..read]).into_owned();
    (stream, text)
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_before_any_body_arrives() {
    let (pipeline, _inlet, server) = one_sensor(64).await;
    // The head alone, the body never sent: the answer must not wait for it.
    let head = format!(
        "POST /api/v1/ingest/{SENSOR} HTTP/1.1\r\nhost: x\r\ncontent-length: 99999999999999\r\n\r\n"
    );
    let (stream, text) = answer_to_head_alone(server.addr, &head).await;
    assert!(text.starts_with("HTTP/1.1 413 "), "{text}");
    assert!(
        text.contains("declares a body of 99999999999999 bytes"),
        "{text}"
    );
    drop(stream);
    server.stop().await;
    let (events, letters) = pipeline.drain().await;
    assert!(events.is_empty() && letters.is_empty());
}

#[tokio::test]
async fn an_unknown_sensor_is_refused_before_its_body_arrives() {
    let (pipeline, _inlet, server) = one_sensor(64).await;
    let head = "POST /api/v1/ingest/nobody HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n";
    let (stream, text) = answer_to_head_alone(server.addr, head).await;
    assert!(text.starts_with("HTTP/1.1 404 "), "{text}");
    assert!(text.contains("unknown_sensor"), "{text}");
    drop(stream);
    server.stop().await;
    drop(pipeline);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_body_does_not_hold_up_shutdown() {
    use tokio::io::AsyncWriteExt;
    let (pipeline, _inlet, server) = one_sensor(64).await;
    let mut stalled = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head =
        format!("POST /api/v1/ingest/{SENSOR} HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\n{{");
    stalled.write_all(head.as_bytes()).await.unwrap();
    // Let the request reach its handler, which now waits for the other nine bytes.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // The listener gives the request its grace, then closes the connection and stops;
    // the deadline here only turns a regression (waiting on the client) into a failure.
    tokio::time::timeout(
        http_conn::SHUTDOWN_GRACE + std::time::Duration::from_secs(60),
        server.stop(),
    )
    .await
    .expect("the listener stopped although a client never finished its body");
    drop(stalled);
    let (events, _) = pipeline.drain().await;
    assert!(events.is_empty());
}

/// Reads one answer (or the close) from `stream`, within a deadline that only turns a
/// server waiting for ever into a failure.
async fn read_answer(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let reading = stream.read_to_end(&mut answer);
    tokio::time::timeout(std::time::Duration::from_secs(60), reading)
        .await
        .expect("the server neither answered nor closed")
        .ok();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn connections_past_the_cap_are_answered_503_and_the_open_ones_carry_on() {
    use tokio::io::AsyncWriteExt;
    let pipeline = Pipeline::new(64).await;
    let inlet = pipeline.suricata_inlet(SENSOR, 64);
    let metrics = kastell_ingest::transport::IngestMetrics::unregistered();
    let connections = Connections::new(2, "http:test", &metrics);
    let server =
        Server::start_with(HttpIngest::new([Arc::clone(&inlet)]), connections.clone()).await;
    // Two idle connections take the two slots.
    let first = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let _second = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    while connections.open() < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    let mut third = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let _ = third.write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n").await;
    let answer = read_answer(&mut third).await;
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("retry-after: 5\r\n"), "{answer}");
    assert!(answer.contains("too_many_connections"), "{answer}");
    assert!(answer.contains("cap of 2 open connections"), "{answer}");
    assert_eq!(connections.refused(), 1);

    // A slot freed is a connection served again.
    drop(first);
    let mut served = None;
    for _ in 0..600 {
        let answer = client().get(server.url("/")).send().await.unwrap();
        if answer.status() == 200 {
            served = Some(answer);
            break;
        }
        assert_eq!(answer.status(), 503);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(served.is_some(), "no connection served after one closed");
    server.stop().await;
    assert_eq!(connections.open(), 0);
    drop(pipeline);
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_idle_timeout() {
    use tokio::io::AsyncWriteExt;
    let pipeline = Pipeline::new(64).await;
    let inlet = pipeline.suricata_inlet(SENSOR, 64);
    let connections =
        Connections::unmetered("http:test").with_idle_timeout(std::time::Duration::from_secs(1));
    let server =
        Server::start_with(HttpIngest::new([Arc::clone(&inlet)]), connections.clone()).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let body = eve_lines("\"event_type\":\"dns\"", 1).join("\n");
    let request = format!(
        "POST /api/v1/ingest/{SENSOR} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // The answer, then (the client sending nothing more) the close.
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    // The slot is given back as the connection's task ends, just after the close.
    for _ in 0..600 {
        if connections.open() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(connections.open(), 0);
    server.stop().await;
    let (events, _) = pipeline.drain().await;
    assert_eq!(events.len(), 1);
}

#[tokio::test]
async fn a_body_that_stalls_is_answered_408_and_nothing_of_it_is_published() {
    use tokio::io::AsyncWriteExt;
    let pipeline = Pipeline::new(64).await;
    let inlet = pipeline.suricata_inlet(SENSOR, 64);
    let ingest = HttpIngest::new([Arc::clone(&inlet)])
        .with_body_stall_timeout(std::time::Duration::from_secs(1));
    let server = Server::start(ingest).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let line = eve_lines("\"event_type\":\"dns\"", 1).join("\n");
    let head = format!(
        "POST /api/v1/ingest/{SENSOR} HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
        line.len() + 100
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(line.as_bytes()).await.unwrap();
    let answer = read_answer(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert!(answer.contains("\"type\":\"body_stalled\""), "{answer}");
    assert!(
        answer.contains("no byte of the request body for 1 s"),
        "{answer}"
    );
    // A body that keeps coming, even slowly, is read whole.
    let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/ingest/{SENSOR} HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        line.len()
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    let (start, end) = line.split_at(line.len() / 2);
    slow.write_all(start.as_bytes()).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    slow.write_all(end.as_bytes()).await.unwrap();
    let answer = read_answer(&mut slow).await;
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");
    server.stop().await;
    let (events, letters) = pipeline.drain().await;
    assert_eq!(events.len(), 1, "only the slow but whole body's event");
    assert!(letters.is_empty());
}

#[tokio::test]
async fn a_client_that_never_reads_its_answers_loses_its_connection() {
    use tokio::io::AsyncWriteExt;
    let pipeline = Pipeline::new(64).await;
    let inlet = pipeline.suricata_inlet(SENSOR, 64);
    let connections = Connections::unmetered("http:test")
        .with_write_stall_timeout(std::time::Duration::from_secs(1));
    let server =
        Server::start_with(HttpIngest::new([Arc::clone(&inlet)]), connections.clone()).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(server.addr).await.unwrap();
    let (_read_half, mut write_half) = stream.into_split();
    // Requests enough for answers to fill both sockets' buffers, never read.
    let writing = tokio::spawn(async move {
        let requests = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n".repeat(1000);
        for _ in 0..1000 {
            if write_half.write_all(&requests).await.is_err() {
                return;
            }
        }
    });
    while connections.open() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let mut closed = false;
    for _ in 0..1200 {
        if connections.open() == 0 {
            closed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        closed,
        "the connection of a client that reads nothing was kept"
    );
    writing.abort();
    server.stop().await;
    drop(pipeline);
}

#[tokio::test]
async fn https_handshakes_take_their_place_under_the_cap() {
    let pki = throwaway_pki();
    let pipeline = Pipeline::new(64).await;
    let inlet = pipeline.suricata_inlet(SENSOR, 64);
    let acceptor =
        kastell_ingest::transport::syslog_tls::tls_acceptor(&pki.cert, &pki.key).unwrap();
    let metrics = kastell_ingest::transport::IngestMetrics::unregistered();
    let connections = Connections::new(2, "https:test", &metrics);
    let server = Server::start_tls_with(
        HttpIngest::new([Arc::clone(&inlet)]),
        acceptor,
        connections.clone(),
    )
    .await;
    let url = format!("https://localhost:{}/", server.addr.port());
    // A client silent in its handshake holds one of the two places, and only one.
    let silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    while connections.open() < 1 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let client = https_client(&pki, None);
    let answer = client.get(&url).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    drop((answer, client));
    while connections.open() > 1 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // With both places taken, the next connection is closed before its handshake.
    let second = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    while connections.open() < 2 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(https_client(&pki, None).get(&url).send().await.is_err());
    assert_eq!(connections.refused(), 1);
    drop((silent, second));
    server.stop().await;
    drop(pipeline);
}
