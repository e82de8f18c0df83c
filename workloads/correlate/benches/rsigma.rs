//! Kastell's rule set against rsigma-eval, the Rust Sigma evaluator on crates.io: the same
//! SigmaHQ rule files, the same real Windows events (`windows-events/EVTX-ATTACK-SAMPLES.jsonl`,
//! flattened to Sigma field names once, before either engine sees them), one core, no
//! logsource routing in either engine. Prints each engine's load time and events/s, and
//! the ratio against issue 4's 10× target.
//!
//! `KASTELL_BENCH_RULES=N` limits both engines to the first N rule files (sorted by path);
//! `KASTELL_CORPORA` points at the corpora. rsigma's loading prints its progress, since it
//! is the slow part of a full run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use kastell_bench_clock::thread_cpu;
use kastell_correlate::{flatten_event, rule_files, RuleDocument, RuleSet};
use rsigma_eval::{Engine, JsonEvent};
use serde_json::Value;

/// The allocator of the `kastell` binary (whose `detect` these figures stand for); both
/// engines of the comparison run on it.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TARGET_RATIO: f64 = 10.0;

/// Rule files rsigma loads between two progress lines.
const CHUNK: usize = 250;

fn corpora() -> PathBuf {
    std::env::var_os("KASTELL_CORPORA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpora"))
}

/// The best of `passes` passes of `pass`, in thread CPU seconds (wall seconds when the
/// scheduler statistics are not readable).
fn best_cpu_seconds(passes: usize, mut pass: impl FnMut() -> usize) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..passes {
        let (cpu, wall) = (thread_cpu(), Instant::now());
        std::hint::black_box(pass());
        let seconds = match (thread_cpu(), cpu) {
            (Some(after), Some(before)) => (after - before).as_secs_f64(),
            _ => wall.elapsed().as_secs_f64(),
        };
        best = best.min(seconds);
    }
    best
}

fn bench(c: &mut Criterion) {
    let sigma = corpora().join("sigma");
    let events_file = corpora().join("windows-events/EVTX-ATTACK-SAMPLES.jsonl");
    if !sigma.is_dir() || !events_file.is_file() {
        println!(
            "SKIPPED: {} or {} not found",
            sigma.display(),
            events_file.display()
        );
        return;
    }
    let folders: Vec<PathBuf> = ["rules", "rules-emerging-threats", "rules-threat-hunting"]
        .iter()
        .map(|f| sigma.join(f))
        .collect();
    let mut files = rule_files(&folders).expect("rule folders");
    let all_files = files.len();
    if let Some(limit) = std::env::var("KASTELL_BENCH_RULES")
        .ok()
        .and_then(|n| n.parse::<usize>().ok())
    {
        files.truncate(limit);
    }
    let texts: Vec<(String, String)> = files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).expect("rule file");
            (f.display().to_string(), text)
        })
        .collect();
    println!("{} of {all_files} rule files", texts.len());

    let started = Instant::now();
    let (kastell, refused) = RuleSet::compile_raw(
        texts
            .iter()
            .map(|(name, text)| RuleDocument::new(name.clone(), text.clone())),
    );
    println!(
        "kastell: {} rules compiled ({} refused) in {:.2} s",
        kastell.len(),
        refused.len(),
        started.elapsed().as_secs_f64()
    );

    let started = Instant::now();
    let mut rsigma = Engine::new();
    let (mut loaded, mut unparsed, mut uncompiled) = (0, 0, 0);
    for (n, chunk) in texts.chunks(CHUNK).enumerate() {
        let mut rules = Vec::new();
        for (_, text) in chunk {
            match rsigma_parser::parse_sigma_yaml(text) {
                Ok(collection) => rules.extend(collection.rules),
                Err(_) => unparsed += 1,
            }
        }
        let errors = rsigma.add_rules(rules.iter());
        uncompiled += errors.len();
        loaded += rules.len() - errors.len();
        println!(
            "rsigma: {} of {} files read, {loaded} rules loaded, {:.1} s",
            (n * CHUNK + chunk.len()),
            texts.len(),
            started.elapsed().as_secs_f64()
        );
    }
    println!(
        "rsigma: {loaded} rules loaded ({unparsed} files unparsed, {uncompiled} rules refused) in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    // Both engines read the same flat events: the Sigma field names at the top level.
    let flattened: Vec<Value> = std::fs::read_to_string(&events_file)
        .expect("events")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|e| Value::Object(flatten_event(e)))
        .collect();
    // Copied once so each event's allocations lie together (see the sigmahq bench).
    let events: Vec<Value> = flattened.iter().map(Value::clone).collect();
    drop(flattened);
    let run_kastell = || -> usize {
        // Each pass reads the events as new (see the sigmahq bench).
        kastell.forget_scanned_values();
        events
            .iter()
            .filter_map(Value::as_object)
            .map(|e| kastell.evaluate_raw(e).count())
            .sum()
    };
    let run_rsigma = || -> usize {
        events
            .iter()
            .map(|e| rsigma.evaluate(&JsonEvent::borrow(e)).len())
            .sum()
    };
    println!(
        "{} events; matches: kastell {}, rsigma {}",
        events.len(),
        run_kastell(),
        run_rsigma()
    );

    let mut group = c.benchmark_group("rsigma");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(events.len() as u64));
    group.bench_function("kastell", |b| b.iter(run_kastell));
    group.bench_function("rsigma-eval", |b| b.iter(run_rsigma));
    group.finish();

    let kastell_rate = events.len() as f64 / best_cpu_seconds(15, run_kastell);
    let rsigma_rate = events.len() as f64 / best_cpu_seconds(5, run_rsigma);
    let ratio = kastell_rate / rsigma_rate;
    println!(
        "{} rule files: kastell {kastell_rate:.0} events/s, rsigma-eval {rsigma_rate:.0} events/s \
         (thread CPU time, best pass); ratio {ratio:.1}x, target {TARGET_RATIO:.0}x: {}",
        texts.len(),
        if ratio >= TARGET_RATIO {
            "met"
        } else {
            "not met"
        }
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
