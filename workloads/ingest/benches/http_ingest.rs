//! End-to-end HTTP ingest: JSON lines POSTed over loopback to `/api/v1/ingest/{sensor}`,
//! parsed as Suricata EVE and published on the in-process bus, where a consumer drains
//! them. The figure is events/s acknowledged to the client, which counts the HTTP
//! round trip, parsing, normalisation, serialising the event for the bus and the bus
//! hand-off. DESIGN.md sets no end-to-end target; its ingest target (parse + normalise
//! on one core) is 250,000 events/s, printed for comparison.
//!
//! Input: the bundled real Suricata run (examples/soc/data/suricata/eve.json, 1,814
//! records) sent as bodies of 1,000 lines, as shippers batch. The server runs on a
//! one-thread Tokio runtime, so the figure is one core's.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use kastell_core::{Bus, InProcessBus, Topic};
use kastell_ingest::transport::http::{self, HttpIngest};
use kastell_ingest::transport::{Decoder, IngestMetrics, Inlet};
use kastell_ingest::{Format, IngestStats, Ingestor};

/// The allocator of the `kastell` binary, so that the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DESIGN_INGEST_TARGET: f64 = 250_000.0;
const LINES_PER_BODY: usize = 1000;
const SENSOR: &str = "bench";

/// Two bodies of 1,000 records: the run's first and last thousand lines.
fn bodies() -> Vec<String> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/soc/data/suricata/eve.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert!(
        lines.len() >= LINES_PER_BODY,
        "the sample has too few records"
    );
    vec![
        lines[..LINES_PER_BODY].join("\n"),
        lines[lines.len() - LINES_PER_BODY..].join("\n"),
    ]
}

/// Starts the server and a bus consumer on their own one-thread runtime.
fn start_server() -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async move {
            let bus = Arc::new(InProcessBus::new(4096));
            let mut events = bus
                .subscribe(Topic::Events, "bench")
                .await
                .expect("subscribe");
            tokio::spawn(async move { while events.next().await.is_some() {} });
            let ingestor = Ingestor::new(Format::SuricataEve, SENSOR);
            let bus: Arc<dyn Bus> = bus;
            let metrics = IngestMetrics::unregistered();
            let inlet = Arc::new(Inlet::new(
                Decoder::Format(ingestor),
                bus,
                Arc::new(IngestStats::new()),
                metrics.sensor(SENSOR),
                1 << 20,
            ));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            tx.send(listener.local_addr().expect("addr")).expect("send");
            let router = http::router(HttpIngest::new([inlet]));
            http::serve(
                listener,
                router,
                kastell_ingest::transport::Connections::unmetered("bench"),
                std::future::pending(),
            )
            .await
            .expect("serve");
        });
    });
    rx.recv().expect("server address")
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let addr = start_server();
    let url = format!("http://{addr}/api/v1/ingest/{SENSOR}");
    let bodies = bodies();
    let client_runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let client = reqwest::Client::new();
    let post = |body: &String| {
        client_runtime.block_on(async {
            let answer = client
                .post(&url)
                .body(body.clone())
                .send()
                .await
                .expect("post");
            assert!(answer.status().is_success(), "{}", answer.status());
            answer.bytes().await.expect("answer");
        })
    };

    let mut criterion = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    let mut group = criterion.benchmark_group("http_ingest");
    group.throughput(Throughput::Elements(LINES_PER_BODY as u64));
    group.bench_function("json_lines_1000_per_post", |b| {
        let mut next = bodies.iter().cycle();
        b.iter(|| post(next.next().expect("bodies")));
    });
    group.finish();
    criterion.final_summary();

    let started = Instant::now();
    let mut events = 0usize;
    for body in bodies.iter().cycle().take(20) {
        post(body);
        events += LINES_PER_BODY;
    }
    let rate = events as f64 / started.elapsed().as_secs_f64();
    println!(
        "http ingest end to end: {rate:.0} events/s over loopback ({:.0} % of DESIGN.md's \
         250,000 events/s parse target; no end-to-end target is set)",
        100.0 * rate / DESIGN_INGEST_TARGET
    );
}
