//! Lookups per second of an indicator store built from the real MISP feed samples (both
//! corpora feeds and the demo feed), over the observables of the real Suricata EVE run.
//!
//! Two figures: `lookups` probes every observable of every event (what the store itself
//! costs), `events` runs the whole per-event match (observable extraction included).
//! DESIGN.md's target is at least 1,000,000 lookups/s on one core.

#[path = "../tests/support/suricata.rs"]
mod suricata;

use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kastell_core::Observable;
use kastell_enrich::{load_misp_feed_dir, IndicatorStore};

fn store() -> IndicatorStore {
    let corpora = suricata::corpora();
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/soc/intel/tweetfeed");
    let feeds = [
        (
            "misp-tests",
            corpora.join("misp/feed-sample-misp-tests/misp"),
        ),
        ("tweetfeed-corpus", corpora.join("misp/feed-tweetfeed/misp")),
        ("tweetfeed", demo),
    ];
    IndicatorStore::from_stores(feeds.iter().map(|(name, dir)| {
        load_misp_feed_dir(name, dir)
            .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
            .0
    }))
}

fn lookup(c: &mut Criterion) {
    let store = store();
    let events = suricata::read_events(&suricata::eve_path());
    let observables: Vec<Observable> = events.iter().flat_map(|e| e.observables()).collect();
    let hits = observables
        .iter()
        .filter(|o| !store.lookup(o).is_empty())
        .count();
    println!(
        "store: {} indicators; input: {} events, {} observables, {} of them hit",
        store.len(),
        events.len(),
        observables.len(),
        hits
    );

    // A plain timed pass first, so the figures are printed in the units DESIGN.md uses.
    let rounds = 200;
    let started = Instant::now();
    for _ in 0..rounds {
        for observable in &observables {
            black_box(store.lookup(black_box(observable)));
        }
    }
    let per_lookup = started.elapsed().as_secs_f64() / (rounds * observables.len()) as f64;
    let started = Instant::now();
    for _ in 0..rounds / 10 {
        for event in &events {
            black_box(store.match_event(black_box(event)));
        }
    }
    let per_event = started.elapsed().as_secs_f64() / ((rounds / 10) * events.len()) as f64;
    println!(
        "lookups/s: {:.0}; events/s (observables + match): {:.0}",
        1.0 / per_lookup,
        1.0 / per_event
    );

    let mut group = c.benchmark_group("enrich");
    group.throughput(Throughput::Elements(observables.len() as u64));
    group.bench_function("lookups", |b| {
        b.iter(|| {
            for observable in &observables {
                black_box(store.lookup(black_box(observable)));
            }
        })
    });
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("events", |b| {
        b.iter(|| {
            for event in &events {
                black_box(store.match_event(black_box(event)));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
