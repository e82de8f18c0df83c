//! Creating alerts and reading cases over HTTP, with SQLite, on real data: the 34 alerts
//! of the real Suricata IcedID run (`suricata/tr0llope`), replayed on later days so each
//! copy is a new alert (and opens new cases).
//!
//! Printed first, in DESIGN.md's units (target: at least 5,000 req/s, p99 under 20 ms):
//! - `create alert`: alerts through the stage loop (bus decode, store, group, publish),
//!   and the latency of one alert's store-and-group step;
//! - `read case over HTTP`: `GET /api/v1/cases/{id}` over loopback from concurrent
//!   keep-alive clients, with the server on a one-thread runtime (one core);
//! - `list alerts over HTTP`: `GET /api/v1/alerts?limit=100`, the heaviest read.
//!
//! Then criterion's figures for one in-process request and one alert.

#[path = "../tests/support/mod.rs"]
mod support;

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use chrono::Duration as Days;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use kastell_cases::{router, ApiState, CaseSettings, CasesStats, Grouper, Metrics};
use kastell_core::{Alert, Bus, CaseStore, InProcessBus, Message, Topic};
use serde_json::{json, Value};
use tokio::runtime::Runtime;
use tower::ServiceExt;

const CLIENTS: usize = 16;
const RUN_FOR: Duration = Duration::from_secs(5);

/// The real alerts of the run.
fn real_alerts() -> Vec<Alert> {
    support::eve_alert_lines(support::TR0LLOPE)
        .into_iter()
        .map(|(number, line)| {
            let eve: Value = serde_json::from_str(&line).unwrap();
            let sid = eve["alert"]["signature_id"].as_i64().unwrap();
            support::eve_alert(support::TR0LLOPE, number, sid)
        })
        .collect()
}

/// A real alert as if its event happened `days` later: a new event, so a new alert id.
fn replayed(alert: &Alert, days: i64) -> Alert {
    let mut event = alert.events[0].clone();
    let at = alert.timestamp + Days::days(days);
    event.set("@timestamp", json!(at.to_rfc3339()));
    Alert::from_event(alert.rule.clone(), event, alert.detected_at)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Alerts through the stage loop, then the per-alert latency of the store-and-group step.
fn create_alerts(rt: &Runtime, store: Arc<dyn CaseStore>, alerts: &[Alert], first_day: i64) {
    let copies = 30;
    let batch: Vec<Alert> = (0..copies)
        .flat_map(|day| alerts.iter().map(move |a| replayed(a, first_day + day)))
        .collect();
    let count = batch.len();
    let took = rt.block_on(async {
        let bus = Arc::new(InProcessBus::new(count + 1));
        let subscription = kastell_cases::subscribe_alerts(bus.as_ref()).await.unwrap();
        let mut respond = bus.subscribe(Topic::CaseEvents, "respond").await.unwrap();
        for alert in &batch {
            bus.publish(Topic::Alerts, Message::json(alert).unwrap())
                .await
                .unwrap();
        }
        bus.close(Topic::Alerts).await;
        let settings = CaseSettings {
            close_downstream: true,
            ..CaseSettings::default()
        };
        let stats = CasesStats::new();
        let started = Instant::now();
        let report = kastell_cases::run_cases_on(
            bus.as_ref(),
            subscription,
            Arc::clone(&store),
            settings,
            &stats,
        )
        .await
        .unwrap();
        let took = started.elapsed();
        assert_eq!(report.stored as usize, count);
        while respond.next().await.is_some() {}
        took
    });
    println!(
        "create alert (stage loop): {count} alerts in {:.2} s = {:.0} alerts/s",
        took.as_secs_f64(),
        count as f64 / took.as_secs_f64()
    );

    let grouper = Grouper::new(Arc::clone(&store), Days::hours(1));
    let mut latencies: Vec<Duration> = rt.block_on(async {
        let mut latencies = Vec::new();
        for day in 0..copies {
            for alert in alerts {
                let alert = replayed(alert, first_day + copies + day);
                let started = Instant::now();
                grouper.file(&alert).await.unwrap();
                latencies.push(started.elapsed());
            }
        }
        latencies
    });
    latencies.sort();
    println!(
        "create alert (store + group, one at a time): {} alerts, p50 {:.2} ms, p99 {:.2} ms",
        latencies.len(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99))
    );
}

/// Concurrent keep-alive clients against a loopback server for [`RUN_FOR`].
fn load(name: &str, addr: std::net::SocketAddr, key: &str, paths: Arc<Vec<String>>) {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {key}").parse().unwrap(),
    );
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let (count, mut latencies) = client_rt.block_on(async move {
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .build()
            .unwrap();
        let next = Arc::new(AtomicUsize::new(0));
        let deadline = Instant::now() + RUN_FOR;
        let workers: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (client, next, paths) = (client.clone(), Arc::clone(&next), Arc::clone(&paths));
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    while Instant::now() < deadline {
                        let path = &paths[next.fetch_add(1, Ordering::Relaxed) % paths.len()];
                        let started = Instant::now();
                        let response = client.get(format!("http://{addr}{path}")).send().await;
                        let response = response.unwrap();
                        // A refused request (401) would measure nothing of the API.
                        assert!(response.status().is_success(), "{}", response.status());
                        let body = response.bytes().await.unwrap();
                        latencies.push(started.elapsed());
                        black_box(body);
                    }
                    latencies
                })
            })
            .collect();
        let mut all = Vec::new();
        for worker in workers {
            all.extend(worker.await.unwrap());
        }
        (all.len(), all)
    });
    latencies.sort();
    println!(
        "{name}: {CLIENTS} clients, {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms",
        count as f64 / RUN_FOR.as_secs_f64(),
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99))
    );
}

fn api(c: &mut Criterion) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // The figures depend on what else the machine runs; say what that was.
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        println!("load average at start: {}", load.trim());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (_dir, store) = rt.block_on(support::sqlite_store());
    let alerts = real_alerts();
    assert_eq!(alerts.len(), 34);

    create_alerts(&rt, Arc::clone(&store), &alerts, 0);
    let cases = rt.block_on(store.list_cases(&Default::default())).unwrap();
    let stored = rt
        .block_on(store.list_alerts(&Default::default()))
        .unwrap()
        .len();
    println!("store: {stored} alerts in {} cases", cases.len());

    // The server runs alone on a one-thread runtime: one core, as DESIGN.md measures.
    let key = rt.block_on(support::api_key(
        &store,
        "bench",
        kastell_cases::auth::Role::Analyst,
        kastell_core::Tlp::Red,
    ));
    let bus: Arc<dyn Bus> = Arc::new(InProcessBus::new(16));
    let app = router(ApiState::new(
        Arc::clone(&store),
        bus,
        Metrics::new().unwrap(),
    ));
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server_app = app.clone();
    let server = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            addr_tx.send(listener.local_addr().unwrap()).unwrap();
            kastell_cases::serve(listener, server_app, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
    });
    let addr = addr_rx.recv().unwrap();
    let case_paths: Vec<String> = cases
        .iter()
        .map(|c| format!("/api/v1/cases/{}", c.id))
        .collect();
    load("read case over HTTP", addr, &key, Arc::new(case_paths));
    let alert_pages: Vec<String> = (0..10)
        .map(|page| format!("/api/v1/alerts?limit=100&offset={}", page * 100))
        .collect();
    load(
        "list alerts over HTTP (100 per page)",
        addr,
        &key,
        Arc::new(alert_pages),
    );
    stop.send(()).unwrap();
    server.join().unwrap();

    let mut group = c.benchmark_group("cases_api");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(5));
    let demo_case = cases.iter().max_by_key(|c| c.alert_count).unwrap().id;
    group.bench_function("get_case_in_process", |b| {
        b.iter(|| {
            let request = Request::get(format!("/api/v1/cases/{demo_case}"))
                .header("authorization", format!("Bearer {key}"))
                .body(Body::empty())
                .unwrap();
            let response = rt.block_on(app.clone().oneshot(request)).unwrap();
            assert!(response.status().is_success());
            black_box(response)
        })
    });
    let grouper = Grouper::new(Arc::clone(&store), Days::hours(1));
    let mut day = 1_000;
    let mut next = 0;
    group.bench_function("file_alert", |b| {
        b.iter_batched(
            || {
                next = (next + 1) % alerts.len();
                if next == 0 {
                    day += 1;
                }
                replayed(&alerts[next], day)
            },
            |alert| rt.block_on(grouper.file(&alert)).unwrap(),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, api);
criterion_main!(benches);
