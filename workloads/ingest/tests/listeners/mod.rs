//! Helpers of the transport tests: a bus with the ingest consumers subscribed, inlets
//! for a test sensor, and draining what reached the bus.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use kastell_core::{Bus, Event, InProcessBus, Subscription, Topic};
use kastell_ingest::transport::syslog_framing::Framing;
use kastell_ingest::transport::syslog_tcp::serve_tcp;
use kastell_ingest::transport::{Decoder, IngestMetrics, Inlet};
use kastell_ingest::{Format, IngestStats, Ingestor, ParseContext};
use serde_json::Value;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const SENSOR: &str = "edge-ids";

/// A bus whose events and dead letters are read by the test.
pub struct Pipeline {
    pub bus: Arc<InProcessBus>,
    pub events: Box<dyn Subscription>,
    pub dead_letters: Box<dyn Subscription>,
    pub metrics: IngestMetrics,
    pub stats: Arc<IngestStats>,
}

impl Pipeline {
    pub async fn new(capacity: usize) -> Self {
        let bus = Arc::new(InProcessBus::new(capacity));
        let events = bus.subscribe(Topic::Events, "test").await.unwrap();
        let dead_letters = bus.subscribe(Topic::DeadLetters, "test").await.unwrap();
        Pipeline {
            bus,
            events,
            dead_letters,
            metrics: IngestMetrics::unregistered(),
            stats: Arc::new(IngestStats::new()),
        }
    }

    pub fn inlet(&self, decoder: Decoder, queue: usize) -> Arc<Inlet> {
        let sensor = decoder.sensor().to_owned();
        let bus: Arc<dyn Bus> = self.bus.clone();
        Arc::new(Inlet::new(
            decoder,
            bus,
            Arc::clone(&self.stats),
            self.metrics.sensor(&sensor),
            queue,
        ))
    }

    pub fn suricata_inlet(&self, sensor: &str, queue: usize) -> Arc<Inlet> {
        self.inlet(
            Decoder::Format(Ingestor::new(Format::SuricataEve, sensor)),
            queue,
        )
    }

    /// A Sensor of format `syslog`, as `kastell run` builds it: messages parsed.
    pub fn parsed_syslog_inlet(&self, queue: usize) -> Arc<Inlet> {
        self.inlet(
            Decoder::Format(Ingestor::new(Format::Syslog, SENSOR)),
            queue,
        )
    }

    pub fn syslog_inlet(&self, queue: usize) -> Arc<Inlet> {
        self.inlet(Decoder::RawSyslog(ParseContext::new(SENSOR)), queue)
    }

    /// Closes both topics and returns everything that reached them.
    pub async fn drain(mut self) -> (Vec<Event>, Vec<Value>) {
        self.bus.close(Topic::Events).await;
        self.bus.close(Topic::DeadLetters).await;
        let mut events = Vec::new();
        while let Some(d) = self.events.next().await {
            events.push(d.message.decode::<Event>().unwrap());
        }
        let mut letters = Vec::new();
        while let Some(d) = self.dead_letters.next().await {
            letters.push(d.message.decode::<Value>().unwrap());
        }
        (events, letters)
    }
}

/// The first `n` records of the bundled Suricata sample whose line contains `needle`.
pub fn eve_lines(needle: &str, n: usize) -> Vec<String> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/soc/data/suricata/eve.json");
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|l| l.contains(needle))
        .take(n)
        .map(str::to_owned)
        .collect()
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Waits until the inlet has taken `count` records (the test's timeout bounds the wait).
pub async fn wait_for_records(inlet: &Inlet, count: u64) {
    while inlet.metrics().records() < count {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// The `message` field of each event, in order.
pub fn messages(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e.get_str("message").unwrap())
        .collect()
}

/// Throwaway certificates for mutual TLS: a CA that signs the server's certificate and a
/// client's, and a second, unrelated CA with a client of its own.
pub struct MutualPki {
    _dir: tempfile::TempDir,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// The bundle a Sensor's `clientCaFile` names: the first CA only.
    pub client_ca: PathBuf,
    pub ca: rustls::pki_types::CertificateDer<'static>,
    pub ca_pem: String,
    /// A client certificate (and key, PEM) the first CA issued.
    pub trusted_client: (String, String),
    /// A client certificate (and key, PEM) the other CA issued.
    pub stranger_client: (String, String),
}

fn new_ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    (params.self_signed(&key).unwrap(), key)
}

fn client_cert(name: &str, ca: &rcgen::Certificate, ca_key: &rcgen::KeyPair) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, ca, ca_key).unwrap();
    (cert.pem(), key.serialize_pem())
}

pub fn mutual_pki() -> MutualPki {
    let (ca, ca_key) = new_ca("kastell test sensors CA");
    let (other, other_key) = new_ca("some other CA");
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap();
    let server = params.signed_by(&key, &ca, &ca_key).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server_cert = dir.path().join("tls.crt");
    let server_key = dir.path().join("tls.key");
    let client_ca = dir.path().join("client-ca.crt");
    std::fs::write(&server_cert, server.pem()).unwrap();
    std::fs::write(&server_key, key.serialize_pem()).unwrap();
    std::fs::write(&client_ca, ca.pem()).unwrap();
    MutualPki {
        server_cert,
        server_key,
        client_ca,
        ca: ca.der().clone(),
        ca_pem: ca.pem(),
        trusted_client: client_cert("sensor-a.example.org", &ca, &ca_key),
        stranger_client: client_cert("sensor-b.example.org", &other, &other_key),
        _dir: dir,
    }
}

/// A TLS 1.3 client trusting the test CA, presenting `identity` (certificate and key,
/// PEM) when given.
pub fn mutual_client_config(
    pki: &MutualPki,
    identity: Option<&(String, String)>,
) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => {
            let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
    };
    Arc::new(config)
}

/// A syslog TCP listener for `inlet` on a free port of 127.0.0.1, until `shutdown`.
pub async fn start_syslog_tcp(
    inlet: &Arc<Inlet>,
    framing: Framing,
    shutdown: &CancellationToken,
) -> (SocketAddr, JoinHandle<std::io::Result<()>>) {
    let connections = kastell_ingest::transport::Connections::unmetered("test");
    start_syslog_tcp_with(inlet, framing, connections, shutdown).await
}

/// [`start_syslog_tcp`] with a connection cap of the test's.
pub async fn start_syslog_tcp_with(
    inlet: &Arc<Inlet>,
    framing: Framing,
    connections: kastell_ingest::transport::Connections,
    shutdown: &CancellationToken,
) -> (SocketAddr, JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(serve_tcp(
        listener,
        Arc::clone(inlet),
        framing,
        connections,
        shutdown.clone(),
    ));
    (addr, server)
}
