//! Syslog over UDP, TCP (newline and octet-counting framing) and TLS 1.3, over real
//! sockets on 127.0.0.1. The messages are the examples of RFC 5424 section 6.5 and
//! RFC 3164 section 5.4 (IETF, https://www.rfc-editor.org/rfc/rfc5424#section-6.5 and
//! https://www.rfc-editor.org/rfc/rfc3164#section-5.4).

mod listeners;

use std::net::SocketAddr;
use std::sync::Arc;

use kastell_core::{Bus, Topic};
use kastell_ingest::transport::syslog_framing::Framing;
use kastell_ingest::transport::syslog_tcp;
use kastell_ingest::transport::syslog_tls::{serve_tls, server_acceptor, tls_acceptor};
use kastell_ingest::transport::syslog_udp::serve_udp;
use listeners::{
    messages, mutual_client_config, mutual_pki, start_syslog_tcp, start_syslog_tcp_with,
    wait_for_records, MutualPki, Pipeline, SENSOR,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

const RFC5424_SU: &str = "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - 'su root' failed for lonvick on /dev/pts/8";
const RFC5424_DONUTS: &str = "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.";
const RFC5424_SD: &str = "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"] An application event log entry...";
const RFC3164_SU: &str =
    "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8";

fn octet_counted(message: &str) -> String {
    format!("{} {message}", message.len())
}

#[tokio::test]
async fn udp_datagrams_become_events_with_their_sender() {
    let pipeline = Pipeline::new(64).await;
    let inlet = pipeline.syslog_inlet(64);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve_udp(socket, Arc::clone(&inlet), shutdown.clone()));

    let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let from = sender.local_addr().unwrap();
    for message in [RFC5424_SU, RFC3164_SU] {
        sender
            .send_to(format!("{message}\n").as_bytes(), addr)
            .await
            .unwrap();
    }
    sender.send_to(b"<13>bad \xff byte", addr).await.unwrap();
    wait_for_records(&inlet, 3).await;
    shutdown.cancel();
    server.await.unwrap().unwrap();

    let (events, letters) = pipeline.drain().await;
    let messages = messages(&events);
    assert_eq!(messages, vec![RFC5424_SU, RFC3164_SU]);
    assert_eq!(events[0].get_str("source.ip"), Some("127.0.0.1"));
    assert_eq!(
        events[0].get("source.port").and_then(|p| p.as_u64()),
        Some(u64::from(from.port()))
    );
    assert_eq!(events[0].sensor(), Some(SENSOR));
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0]["kind"], "invalid_utf8");
    assert_eq!(letters[0]["format"], "syslog");
    assert_eq!(inlet.metrics().rejects("invalid_utf8"), 1);
}

#[tokio::test]
async fn tcp_takes_newline_and_octet_counted_frames_on_one_connection() {
    let pipeline = Pipeline::new(64).await;
    let inlet = pipeline.syslog_inlet(64);
    let shutdown = CancellationToken::new();
    let (addr, server) = start_syslog_tcp(&inlet, Framing::Auto, &shutdown).await;

    let mut stream = TcpStream::connect(addr).await.unwrap();
    let multi_line = "<13>1 - host app - - - first line\nsecond line";
    let body = format!(
        "{RFC5424_SU}\n{}{}12x oops\n{RFC3164_SU}\r\n{}",
        octet_counted(RFC5424_SD),
        octet_counted(multi_line),
        "500 <13>cut short"
    );
    stream.write_all(body.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    drop(stream);
    wait_for_records(&inlet, 6).await;
    shutdown.cancel();
    server.await.unwrap().unwrap();
    // The transport's rejections count in the stage's totals like the parsers'.
    let stats = pipeline.stats.snapshot();
    assert_eq!(stats.events_in, 6);
    assert_eq!(stats.events_published, 4);
    assert_eq!(stats.events_rejected, 2);
    assert_eq!(stats.rejected_by_reason["invalid_frame"], 1);
    assert_eq!(stats.rejected_by_reason["truncated_frame"], 1);

    let (events, letters) = pipeline.drain().await;
    let messages = messages(&events);
    assert_eq!(
        messages,
        vec![RFC5424_SU, RFC5424_SD, multi_line, RFC3164_SU]
    );
    let kinds: Vec<_> = letters
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, vec!["invalid_frame", "truncated_frame"]);
    assert_eq!(letters[0]["raw"], "12x oops");
    assert_eq!(letters[1]["raw"], "<13>cut short");
}

#[tokio::test]
async fn tcp_connections_past_the_cap_are_closed_and_the_open_one_carries_on() {
    use tokio::io::AsyncReadExt;
    let pipeline = Pipeline::new(64).await;
    let inlet = pipeline.syslog_inlet(64);
    let shutdown = CancellationToken::new();
    let metrics = kastell_ingest::transport::IngestMetrics::unregistered();
    let connections = kastell_ingest::transport::Connections::new(1, "syslog-tcp:test", &metrics);
    let (addr, server) =
        start_syslog_tcp_with(&inlet, Framing::Auto, connections.clone(), &shutdown).await;

    let mut open = TcpStream::connect(addr).await.unwrap();
    open.write_all(format!("{RFC5424_SU}\n").as_bytes())
        .await
        .unwrap();
    wait_for_records(&inlet, 1).await;

    // No room: the connection is closed without a byte read from it.
    let mut refused = TcpStream::connect(addr).await.unwrap();
    let _ = refused
        .write_all(format!("{RFC3164_SU}\n").as_bytes())
        .await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        refused.read_to_end(&mut rest),
    )
    .await
    .expect("the connection over the cap was not closed");
    assert!(closed.is_err() || rest.is_empty(), "{closed:?} {rest:?}");
    assert_eq!(connections.refused(), 1);

    // The connection that has its slot keeps flowing.
    open.write_all(format!("{RFC5424_SD}\n").as_bytes())
        .await
        .unwrap();
    open.shutdown().await.unwrap();
    wait_for_records(&inlet, 2).await;
    shutdown.cancel();
    server.await.unwrap().unwrap();
    assert_eq!(connections.open(), 0);
    let (events, letters) = pipeline.drain().await;
    assert_eq!(messages(&events), vec![RFC5424_SU, RFC5424_SD]);
    assert!(letters.is_empty());
}

#[tokio::test]
async fn at_shutdown_a_message_in_progress_may_finish_and_a_cut_one_is_dead_lettered() {
    let pipeline = Pipeline::new(64).await;
    let inlet = pipeline.syslog_inlet(64);
    let shutdown = CancellationToken::new();
    let (addr, server) = start_syslog_tcp(&inlet, Framing::Auto, &shutdown).await;

    // One connection finishes its message during the grace, one never does, one is idle.
    let mut finishing = TcpStream::connect(addr).await.unwrap();
    let mut cut = TcpStream::connect(addr).await.unwrap();
    let idle = TcpStream::connect(addr).await.unwrap();
    let (head, tail) = RFC5424_SU.split_at(20);
    finishing.write_all(head.as_bytes()).await.unwrap();
    cut.write_all(&octet_counted(RFC5424_SD).as_bytes()[..30])
        .await
        .unwrap();
    // Both partial messages have reached their framers before the stop.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    shutdown.cancel();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    finishing
        .write_all(format!("{tail}\n").as_bytes())
        .await
        .unwrap();
    // The listener ends once the grace is over, whatever the clients do.
    tokio::time::timeout(
        syslog_tcp::SHUTDOWN_GRACE + std::time::Duration::from_secs(60),
        server,
    )
    .await
    .expect("the listener did not stop")
    .unwrap()
    .unwrap();
    drop((finishing, cut, idle));

    let (events, letters) = pipeline.drain().await;
    assert_eq!(messages(&events), vec![RFC5424_SU]);
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["kind"], "truncated_frame");
    let sent = octet_counted(RFC5424_SD);
    let (count, body) = sent.split_once(' ').unwrap();
    let held = &sent[count.len() + 1..30];
    assert!(body.starts_with(held));
    assert_eq!(letters[0]["raw"], held);
    assert!(
        letters[0]["reason"].as_str().unwrap().contains(&format!(
            "the listener stopped {} bytes into a message",
            held.len()
        )),
        "{}",
        letters[0]
    );
}

#[tokio::test]
async fn a_full_bus_stops_tcp_reads_and_every_message_arrives_in_order() {
    // One message fits on the bus, one in the inlet's queue.
    let mut pipeline = Pipeline::new(1).await;
    let inlet = pipeline.syslog_inlet(1);
    let shutdown = CancellationToken::new();
    let (addr, server) = start_syslog_tcp(&inlet, Framing::OctetCounting, &shutdown).await;

    let total = 200;
    let sender = tokio::spawn(async move {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        for i in 0..total {
            let message = format!("<13>1 - host app - - - message {i}");
            stream
                .write_all(octet_counted(&message).as_bytes())
                .await
                .unwrap();
        }
        stream.shutdown().await.unwrap();
    });
    // With nobody reading the bus, the listener takes one message onto the bus and one
    // more that waits; it reads nothing else.
    wait_for_records(&inlet, 2).await;
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(inlet.metrics().records(), 2);
    assert_eq!(inlet.metrics().queue_depth(), 1);

    let mut seen = Vec::new();
    while seen.len() < total {
        let delivery = pipeline.events.next().await.unwrap();
        let event: kastell_core::Event = delivery.message.decode().unwrap();
        seen.push(event.get_str("message").unwrap().to_owned());
        delivery.ack().await.unwrap();
    }
    sender.await.unwrap();
    shutdown.cancel();
    server.await.unwrap().unwrap();
    let expected: Vec<_> = (0..total)
        .map(|i| format!("<13>1 - host app - - - message {i}"))
        .collect();
    assert_eq!(seen, expected);
    pipeline.bus.close(Topic::Events).await;
    assert!(pipeline.events.next().await.is_none());
}

struct Pki {
    _dir: tempfile::TempDir,
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    ca: rustls::pki_types::CertificateDer<'static>,
}

/// A throwaway CA and a server certificate for localhost and 127.0.0.1 it signed.
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
        ca: ca.der().clone(),
    }
}

fn client_config(
    pki: &Pki,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

async fn start_tls(
    pipeline: &Pipeline,
    pki: &Pki,
) -> (
    SocketAddr,
    Arc<kastell_ingest::transport::Inlet>,
    CancellationToken,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let inlet = pipeline.syslog_inlet(64);
    let acceptor = tls_acceptor(&pki.cert, &pki.key).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve_tls(
        listener,
        acceptor,
        Arc::clone(&inlet),
        Framing::Auto,
        kastell_ingest::transport::Connections::unmetered("test"),
        shutdown.clone(),
    ));
    (addr, inlet, shutdown, server)
}

#[tokio::test]
async fn tls_1_3_carries_octet_counted_messages() {
    let pki = throwaway_pki();
    let pipeline = Pipeline::new(64).await;
    let (addr, inlet, shutdown, server) = start_tls(&pipeline, &pki).await;

    let connector =
        tokio_rustls::TlsConnector::from(client_config(&pki, &[&rustls::version::TLS13]));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    for message in [RFC5424_SU, RFC5424_DONUTS, RFC5424_SD] {
        tls.write_all(octet_counted(message).as_bytes())
            .await
            .unwrap();
    }
    tls.shutdown().await.unwrap();
    wait_for_records(&inlet, 3).await;
    shutdown.cancel();
    server.await.unwrap().unwrap();
    let (events, letters) = pipeline.drain().await;
    let messages = messages(&events);
    assert_eq!(messages, vec![RFC5424_SU, RFC5424_DONUTS, RFC5424_SD]);
    assert!(letters.is_empty());
}

#[tokio::test]
async fn a_tls_1_2_client_is_refused() {
    let pki = throwaway_pki();
    let pipeline = Pipeline::new(64).await;
    let (addr, inlet, shutdown, server) = start_tls(&pipeline, &pki).await;
    let connector =
        tokio_rustls::TlsConnector::from(client_config(&pki, &[&rustls::version::TLS12]));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    assert!(connector.connect(name, tcp).await.is_err());
    shutdown.cancel();
    server.await.unwrap().unwrap();
    assert_eq!(inlet.metrics().records(), 0);
}

/// Sends `message` from a client presenting `identity`, and reads until the server ends
/// the connection: whether the message was taken shows in the inlet's count.
async fn send_with_identity(
    addr: SocketAddr,
    pki: &MutualPki,
    identity: Option<&(String, String)>,
    message: &str,
) {
    let connector = tokio_rustls::TlsConnector::from(mutual_client_config(pki, identity));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    // In TLS 1.3 the client's side of the handshake ends before the server has checked
    // its certificate, so a refusal shows on the next read, not here.
    let Ok(mut tls) = connector.connect(name, tcp).await else {
        return;
    };
    let _ = tls.write_all(octet_counted(message).as_bytes()).await;
    let _ = tls.shutdown().await;
    let mut rest = Vec::new();
    let _ = tls.read_to_end(&mut rest).await;
}

#[tokio::test]
async fn mutual_tls_takes_only_clients_with_a_certificate_from_the_sensors_ca() {
    let pki = mutual_pki();
    let pipeline = Pipeline::new(64).await;
    let inlet = pipeline.syslog_inlet(64);
    let acceptor =
        server_acceptor(&pki.server_cert, &pki.server_key, Some(&pki.client_ca)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve_tls(
        listener,
        acceptor,
        Arc::clone(&inlet),
        Framing::Auto,
        kastell_ingest::transport::Connections::unmetered("test"),
        shutdown.clone(),
    ));

    send_with_identity(addr, &pki, None, RFC5424_SU).await;
    send_with_identity(addr, &pki, Some(&pki.stranger_client), RFC5424_DONUTS).await;
    assert_eq!(inlet.metrics().records(), 0);
    send_with_identity(addr, &pki, Some(&pki.trusted_client), RFC5424_SD).await;
    wait_for_records(&inlet, 1).await;

    shutdown.cancel();
    server.await.unwrap().unwrap();
    let (events, letters) = pipeline.drain().await;
    assert_eq!(messages(&events), vec![RFC5424_SD]);
    assert!(letters.is_empty());
}

#[test]
fn a_client_ca_bundle_without_a_certificate_is_a_clear_error() {
    let pki = mutual_pki();
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("ca.pem");
    std::fs::write(&empty, "").unwrap();
    let err = server_acceptor(&pki.server_cert, &pki.server_key, Some(&empty))
        .err()
        .unwrap();
    assert!(err.to_string().contains("client CA bundle"), "{err}");
    let absent = dir.path().join("absent-ca.pem");
    let err = server_acceptor(&pki.server_cert, &pki.server_key, Some(&absent))
        .err()
        .unwrap();
    assert!(err.to_string().contains("absent-ca.pem"), "{err}");
}

#[test]
fn missing_or_empty_certificate_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let err = tls_acceptor(&empty, &empty).err().unwrap();
    assert!(err.to_string().contains("holds no certificate"), "{err}");
    let err = tls_acceptor(&dir.path().join("absent.pem"), &empty)
        .err()
        .unwrap();
    assert!(err.to_string().contains("absent.pem"), "{err}");
}

/// A CEF message naming its own source (`src=`), from the CEF golden test in `formats`.
const CEF_WITH_SOURCE: &str = "<134>Sep 19 08:26:10 fw01 CEF:0|Security|threatmanager|1.0|100|worm successfully stopped|10|src=10.0.0.1 dst=2001:0db8:0:0:0:0:0:2 spt=1232 dpt=443 act=blocked";

fn assert_sender(event: &kastell_core::Event, from: SocketAddr) {
    assert_eq!(
        event.get_str("log.source.address"),
        Some(from.to_string().as_str())
    );
}

/// Parsed syslog (the `syslog` format, as `kastell run` uses it) keeps the sender's
/// address on every transport: UDP, TCP and TLS.
#[tokio::test]
async fn parsed_syslog_keeps_the_senders_address_on_every_transport() {
    let pki = throwaway_pki();
    let pipeline = Pipeline::new(64).await;
    let shutdown = CancellationToken::new();

    let udp_inlet = pipeline.parsed_syslog_inlet(64);
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp_addr = socket.local_addr().unwrap();
    let udp = tokio::spawn(serve_udp(socket, Arc::clone(&udp_inlet), shutdown.clone()));
    let sender = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp_from = sender.local_addr().unwrap();
    for message in [RFC3164_SU, CEF_WITH_SOURCE] {
        sender.send_to(message.as_bytes(), udp_addr).await.unwrap();
    }
    wait_for_records(&udp_inlet, 2).await;

    let tcp_inlet = pipeline.parsed_syslog_inlet(64);
    let (tcp_addr, tcp) = start_syslog_tcp(&tcp_inlet, Framing::Auto, &shutdown).await;
    let mut stream = TcpStream::connect(tcp_addr).await.unwrap();
    let tcp_from = stream.local_addr().unwrap();
    stream
        .write_all(format!("{RFC5424_SU}\n").as_bytes())
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    // The three inlets serve one sensor name, so they share its metrics: the counts add up.
    wait_for_records(&tcp_inlet, 3).await;

    let tls_inlet = pipeline.parsed_syslog_inlet(64);
    let acceptor = tls_acceptor(&pki.cert, &pki.key).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tls_addr = listener.local_addr().unwrap();
    let tls_server = tokio::spawn(serve_tls(
        listener,
        acceptor,
        Arc::clone(&tls_inlet),
        Framing::Auto,
        kastell_ingest::transport::Connections::unmetered("test"),
        shutdown.clone(),
    ));
    let connector =
        tokio_rustls::TlsConnector::from(client_config(&pki, &[&rustls::version::TLS13]));
    let tcp_stream = TcpStream::connect(tls_addr).await.unwrap();
    let tls_from = tcp_stream.local_addr().unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp_stream).await.unwrap();
    tls.write_all(octet_counted(RFC5424_SD).as_bytes())
        .await
        .unwrap();
    tls.shutdown().await.unwrap();
    wait_for_records(&tls_inlet, 4).await;

    shutdown.cancel();
    udp.await.unwrap().unwrap();
    tcp.await.unwrap().unwrap();
    tls_server.await.unwrap().unwrap();
    let (events, letters) = pipeline.drain().await;
    assert!(letters.is_empty(), "{letters:?}");
    let senders: Vec<_> = events
        .iter()
        .map(|e| e.get_str("log.source.address").unwrap_or("-").to_owned())
        .collect();
    assert_eq!(
        events.len(),
        4,
        "{senders:?} udp {udp_from} tcp {tcp_from} tls {tls_from}"
    );
    let by_sensor_order: Vec<_> = events
        .iter()
        .map(|e| e.get_str("log.source.address").unwrap().to_owned())
        .collect();
    assert_eq!(
        by_sensor_order,
        [udp_from, udp_from, tcp_from, tls_from].map(|a| a.to_string())
    );

    // RFC 3164 over UDP: the message names no source, so the sender is the source.
    let su = &events[0];
    assert_sender(su, udp_from);
    assert_eq!(su.get_str("event.dataset"), Some("syslog"));
    assert_eq!(su.get_str("source.ip"), Some("127.0.0.1"));
    assert_eq!(su.get_str("source.address"), Some("127.0.0.1"));
    assert_eq!(
        su.get("source.port").and_then(|p| p.as_u64()),
        Some(u64::from(udp_from.port()))
    );
    // CEF names its own source: kept, the sender only in log.source.address.
    let cef = &events[1];
    assert_sender(cef, udp_from);
    assert_eq!(cef.get_str("source.ip"), Some("10.0.0.1"));
    assert!(cef.get("source.address").is_none());

    assert_sender(&events[2], tcp_from);
    assert_eq!(events[2].get_str("source.ip"), Some("127.0.0.1"));
    assert_sender(&events[3], tls_from);
    assert_eq!(events[3].get_str("source.ip"), Some("127.0.0.1"));
}
