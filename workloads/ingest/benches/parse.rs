//! Parse-and-normalise throughput on real records, against DESIGN.md's target of
//! 250,000 events/s on one core.
//!
//! Suricata input is the whole tr0llope corpus (1,814 lines of mixed event types) when
//! `../shared/corpora` is present, else the crate's fixture sample; Wazuh input is every
//! valid alert among the fixtures. `cargo bench -p kastell-ingest` prints criterion's
//! figures and then a plain events/s summary.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use kastell_ingest::{parse_line, Format, ParseContext};

const TARGET_EVENTS_PER_SECOND: f64 = 250_000.0;

struct Input {
    name: &'static str,
    format: Format,
    lines: Vec<Vec<u8>>,
}

fn read_lines(path: &Path) -> Vec<Vec<u8>> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn inputs() -> Vec<Input> {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fixtures = crate_dir.join("tests/fixtures");
    let corpus = crate_dir.join("../../../shared/corpora/suricata/tr0llope/eve-mixed.json");
    let suricata = if corpus.is_file() {
        read_lines(&corpus)
    } else {
        read_lines(&fixtures.join("suricata/tr0llope-eve-mixed.sample.json"))
    };
    let ctx = ParseContext::new("bench");
    let wazuh: Vec<Vec<u8>> = [
        "wazuh/sshd-5712.jsonl",
        "wazuh/misp-integration-alerts.jsonl",
        "wazuh/syscheck-alerts-from-schema-examples.jsonl",
        "wazuh/eventchannel-alerts.jsonl",
    ]
    .iter()
    .flat_map(|name| read_lines(&fixtures.join(name)))
    .filter(|line| parse_line(Format::WazuhAlerts, line, &ctx).is_ok())
    .collect();
    vec![
        Input {
            name: "suricata-eve",
            format: Format::SuricataEve,
            lines: suricata,
        },
        Input {
            name: "wazuh-alerts",
            format: Format::WazuhAlerts,
            lines: wazuh,
        },
    ]
}

fn parse_all(input: &Input, ctx: &ParseContext) {
    for line in &input.lines {
        let event = parse_line(input.format, line, ctx).expect("bench input parses");
        black_box(event);
    }
}

/// The floor: only decoding the JSON into a `serde_json::Value`, which every parser does
/// first. The gap to `parse_all` is the cost of normalisation.
fn decode_all(input: &Input) {
    for line in &input.lines {
        let value: serde_json::Value = serde_json::from_slice(line).expect("bench input is JSON");
        black_box(value);
    }
}

fn criterion_benches(c: &mut Criterion, inputs: &[Input]) {
    let ctx = ParseContext::new("bench");
    let mut group = c.benchmark_group("parse");
    for input in inputs {
        group.throughput(Throughput::Elements(input.lines.len() as u64));
        group.bench_function(input.name, |b| b.iter(|| parse_all(input, &ctx)));
    }
    group.finish();
    let mut group = c.benchmark_group("json-decode-only");
    for input in inputs {
        group.throughput(Throughput::Elements(input.lines.len() as u64));
        group.bench_function(input.name, |b| b.iter(|| decode_all(input)));
    }
    group.finish();
}

/// A plain figure to quote: whole passes over the input for about two seconds.
fn summary(inputs: &[Input]) {
    let ctx = ParseContext::new("bench");
    println!("\nparse + normalise, one thread:");
    for input in inputs {
        let started = Instant::now();
        let mut events = 0u64;
        while started.elapsed() < Duration::from_secs(2) {
            parse_all(input, &ctx);
            events += input.lines.len() as u64;
        }
        let rate = events as f64 / started.elapsed().as_secs_f64();
        let verdict = if rate >= TARGET_EVENTS_PER_SECOND {
            "meets"
        } else {
            "misses"
        };
        println!(
            "  {:<13} {:>10.0} events/s over {} lines ({verdict} the {:.0} events/s target)",
            input.name,
            rate,
            input.lines.len(),
            TARGET_EVENTS_PER_SECOND
        );
    }
}

fn main() {
    let inputs = inputs();
    let mut criterion = Criterion::default().configure_from_args();
    criterion_benches(&mut criterion, &inputs);
    criterion.final_summary();
    // `cargo test --benches` runs each benchmark once as a smoke test; only a real
    // `cargo bench` run is worth timing.
    if std::env::args().any(|arg| arg == "--bench") {
        summary(&inputs);
    }
}
