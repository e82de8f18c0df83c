//! The store at scale: 1,000,000 generated indicators of every kind (domains, IPv4 and
//! IPv6 addresses and networks, URLs, hashes, e-mail addresses), as a plain-list feed
//! text, loaded through the same normalisation feeds go through.
//!
//! Prints, against DESIGN.md's targets:
//! - load time (target < 3 s),
//! - resident memory added by the store, read from /proc/self/status (target < 300 MB),
//! - lookups per second on one core over the observables of the real Suricata events of
//!   the corpora, with the demo feed's indicators added so some of them hit
//!   (target ≥ 1,000,000/s).

#[path = "../tests/support/suricata.rs"]
mod suricata;

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kastell_bench_clock::{process_cpu, rss_kib, thread_cpu};
use kastell_core::Observable;
use kastell_enrich::list::load_plain_list;
use kastell_enrich::{load_misp_feed_dir, IndicatorStore};

/// The allocator of the `kastell` binary, so that the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const INDICATORS: usize = 1_000_000;

/// A deterministic mix: 30% domains, 20% IPv4, 5% IPv4 networks, 5% IPv6, 15% URLs,
/// 15% sha256, 5% md5, 5% e-mail addresses.
fn generated_feed() -> String {
    let mut text = String::with_capacity(INDICATORS * 48);
    // A small LCG keeps the values spread without a dependency on a random crate.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        state >> 16
    };
    for i in 0..INDICATORS {
        let r = next();
        let line = match i % 20 {
            0..=5 => format!("h{:x}.bad{}.example", r & 0xff_ffff, r % 5000),
            6..=9 => format!(
                "{}.{}.{}.{}",
                1 + (r >> 24) % 223,
                (r >> 16) & 255,
                (r >> 8) & 255,
                r & 255
            ),
            10 => format!(
                "{}.{}.{}.0/24",
                1 + (r >> 24) % 223,
                (r >> 16) & 255,
                (r >> 8) & 255
            ),
            11 => format!(
                "2001:db8:{:x}:{:x}::{:x}",
                (r >> 32) & 0xffff,
                (r >> 16) & 0xffff,
                r & 0xffff
            ),
            12..=14 => format!("http://c{:x}.bad.example/p/{}", r & 0xfff_ffff, i),
            15..=17 => format!("{:016x}{:016x}{:016x}{:016x}", r, next(), next(), i),
            18 => format!("{:016x}{:016x}", r, i),
            _ => format!("u{}@m{:x}.bad.example", i, r & 0xffff),
        };
        let _ = writeln!(text, "{line}");
    }
    text
}

/// CPU seconds since `since`, or the wall-clock seconds when the scheduler's figures
/// are unreadable.
fn cpu_since(since: Option<f64>, wall: f64) -> f64 {
    match (since, thread_cpu().map(|t| t.as_secs_f64())) {
        (Some(before), Some(after)) => after - before,
        _ => wall,
    }
}

fn million(c: &mut Criterion) {
    let text = generated_feed();
    let before = rss_kib();
    let cpu = process_cpu().map(|t| t.as_secs_f64());
    let started = Instant::now();
    let (generated, report) = load_plain_list("generated", &text, None);
    let load = started.elapsed();
    let load_cpu = match (cpu, process_cpu().map(|t| t.as_secs_f64())) {
        (Some(before), Some(after)) => after - before,
        _ => load.as_secs_f64(),
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(kastell_enrich::list::MAX_THREADS);
    let after = rss_kib();
    drop(text);
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/soc/intel/tweetfeed");
    let demo = load_misp_feed_dir("tweetfeed", &demo)
        .map(|(s, _)| s)
        .unwrap_or_default();
    let mut store = generated;
    store.merge(demo);

    let events = suricata::read_events(&suricata::eve_path());
    let observables: Vec<Observable> = events.iter().flat_map(|e| e.observables()).collect();
    let hits = observables
        .iter()
        .filter(|o| store.contains(o.kind, &o.value))
        .count();

    let rounds = 100;
    let cpu = thread_cpu().map(|t| t.as_secs_f64());
    let started = Instant::now();
    for _ in 0..rounds {
        for observable in &observables {
            black_box(store.count_matches(observable.kind, black_box(&observable.value)));
        }
    }
    let lookups = (rounds * observables.len()) as f64;
    let per_lookup = started.elapsed().as_secs_f64() / lookups;
    let per_lookup_cpu = cpu_since(cpu, started.elapsed().as_secs_f64()) / lookups;
    let mb = |kib: u64| kib as f64 / 1024.0;
    println!(
        "million: {} indicators loaded ({} distinct values, {} entries skipped) in {:.2} s on {} threads, {:.2} s of CPU in all (target < 3 s)",
        report.indicators,
        store.distinct_values(),
        report.skipped,
        load.as_secs_f64(),
        threads,
        load_cpu
    );
    match (before, after) {
        (Some(b), Some(a)) => println!(
            "million: resident memory {:.0} MB -> {:.0} MB, the store adds {:.0} MB (target < 300 MB)",
            mb(b),
            mb(a),
            mb(a.saturating_sub(b))
        ),
        _ => println!("million: /proc/self/status unreadable, no memory figure"),
    }
    println!(
        "million: {:.0} lookups/s on one core, {:.0} per CPU-second, over {} observables of {} real events, {} of them hit (target >= 1,000,000/s)",
        1.0 / per_lookup,
        1.0 / per_lookup_cpu,
        observables.len(),
        events.len(),
        hits
    );

    let mut group = c.benchmark_group("enrich-million");
    group.throughput(Throughput::Elements(observables.len() as u64));
    group.bench_function("lookups", |b| {
        b.iter(|| {
            for observable in &observables {
                black_box(store.count_matches(observable.kind, black_box(&observable.value)));
            }
        })
    });
    group.finish();
    black_box(IndicatorStore::is_empty(&store));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = million
}
criterion_main!(benches);
