//! Parse-and-normalise throughput of every format on real records, against DESIGN.md's
//! target of 250,000 events/s on one core (set for Suricata EVE and Zeek JSON).
//!
//! Inputs are the shared corpora when `../shared/corpora` is present (Suricata: the whole
//! tr0llope run; Zeek JSON: SIMIR's conn, dns and ssl logs; syslog: the sshd and auditd
//! lines of Wazuh's logtest vectors), else the crate's fixtures. Each input is decoded as
//! a stream through a `Decoder`, as `kastell parse` and file ingest read it.
//! `cargo bench -p kastell-ingest --bench parse` prints criterion's figures, then a plain
//! events/s and MB/s summary.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use kastell_bench_clock::thread_cpu;
use kastell_ingest::{decode_reader_json, Decoder, Format, ParseContext, ParseOptions};

/// The allocator of the `kastell` binary, so that the figures are the binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const TARGET_EVENTS_PER_SECOND: f64 = 250_000.0;

struct Input {
    name: &'static str,
    format: Format,
    bytes: Vec<u8>,
    events: u64,
    /// Whether DESIGN.md's target applies to this format.
    targeted: bool,
    options: ParseOptions,
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The first path that exists: the corpus file, else the fixture.
fn pick(paths: &[PathBuf]) -> Vec<u8> {
    let path = paths
        .iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("none of {paths:?}"));
    read(path)
}

fn syslog_lines(corpora: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for file in ["sshd.ini", "auditd.ini"] {
        let path = corpora.join("wazuh/ruleset-tests").join(file);
        let Ok(text) = std::fs::read_to_string(path) else {
            continue;
        };
        for line in text.lines() {
            if let Some((_, log)) = line.split_once(" pass = ") {
                if log.len() > 16 && log.as_bytes()[3] == b' ' {
                    out.extend_from_slice(log.as_bytes());
                    out.push(b'\n');
                }
            }
        }
    }
    if out.is_empty() {
        out.extend_from_slice(
            b"<34>Oct 11 22:14:15 mymachine su[230]: 'su root' failed for lonvick on /dev/pts/8\n",
        );
    }
    out
}

const OSSEC_BLOCK: &str = "** Alert 1565277360.1234: mail  - syslog,sshd,authentication_failed,
2019 Aug 08 15:16:00 (web-01) 10.0.0.5->/var/log/secure
Rule: 5716 (level 5) -> 'SSHD authentication failed.'
Src IP: 10.0.0.9
User: root
Aug  8 15:15:59 web-01 sshd[1234]: Failed password for root from 10.0.0.9 port 4242 ssh2

";

fn inputs() -> Vec<Input> {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let fixtures = crate_dir.join("tests/fixtures");
    let corpora = crate_dir.join("../../../shared/corpora");
    let suricata = pick(&[
        corpora.join("suricata/tr0llope/eve-mixed.json"),
        fixtures.join("suricata/tr0llope-eve-mixed.sample.json"),
    ]);
    let mut zeek_json = Vec::new();
    for log in ["conn", "dns", "ssl"] {
        // `_path` stands in for the file name each log would be read under.
        let bytes = pick(&[
            corpora.join(format!("zeek/json/simir/{log}.log")),
            fixtures.join(format!("zeek/simir-{log}.json.log")),
        ]);
        for line in bytes.split(|b| *b == b'\n').filter(|l| l.starts_with(b"{")) {
            zeek_json.extend_from_slice(format!("{{\"_path\":\"{log}\",").as_bytes());
            zeek_json.extend_from_slice(&line[1..]);
            zeek_json.push(b'\n');
        }
    }
    let mut zeek_tsv = Vec::new();
    for log in ["conn", "dns", "http", "files"] {
        zeek_tsv.extend(read(&fixtures.join(format!("zeek/cchostak-{log}.log"))));
    }
    let wazuh_files = |names: &[&str]| -> Vec<u8> {
        names
            .iter()
            .flat_map(|name| read(&fixtures.join("wazuh").join(name)))
            .collect()
    };
    let wazuh = wazuh_files(&[
        "sshd-5712.jsonl",
        "misp-integration-alerts.jsonl",
        "syscheck-alerts-from-schema-examples.jsonl",
        "eventchannel-alerts.jsonl",
    ]);
    // The mix above is dominated by its Windows and syscheck alerts (2.5 – 2.8 kB each);
    // a Linux manager's alerts are mostly the small kind (sshd, integrations, ~0.5 – 1.5
    // kB), so each kind is also timed alone.
    let wazuh_linux = wazuh_files(&["sshd-5712.jsonl", "misp-integration-alerts.jsonl"]);
    let wazuh_windows = wazuh_files(&["eventchannel-alerts.jsonl"]);
    let wazuh_syscheck = wazuh_files(&["syscheck-alerts-from-schema-examples.jsonl"]);
    let json_lines_options = ParseOptions {
        timestamp_field: Some("timestamp".into()),
        ..ParseOptions::default()
    };
    let candidates = [
        (
            "suricata-eve",
            Format::SuricataEve,
            suricata.clone(),
            true,
            ParseOptions::default(),
        ),
        (
            "zeek-json",
            Format::Zeek,
            zeek_json,
            true,
            ParseOptions::default(),
        ),
        (
            "zeek-tsv",
            Format::Zeek,
            zeek_tsv,
            false,
            ParseOptions::default(),
        ),
        (
            "wazuh-alerts",
            Format::WazuhAlerts,
            wazuh,
            false,
            ParseOptions::default(),
        ),
        (
            "wazuh-linux",
            Format::WazuhAlerts,
            wazuh_linux,
            false,
            ParseOptions::default(),
        ),
        (
            "wazuh-windows",
            Format::WazuhAlerts,
            wazuh_windows,
            false,
            ParseOptions::default(),
        ),
        (
            "wazuh-syscheck",
            Format::WazuhAlerts,
            wazuh_syscheck,
            false,
            ParseOptions::default(),
        ),
        (
            "ossec-alerts-log",
            Format::Ossec,
            OSSEC_BLOCK.repeat(500).into_bytes(),
            false,
            ParseOptions::default(),
        ),
        (
            "syslog",
            Format::Syslog,
            syslog_lines(&corpora),
            false,
            ParseOptions::default(),
        ),
        (
            "json-lines",
            Format::JsonLines,
            suricata,
            false,
            json_lines_options,
        ),
        (
            "greenbone",
            Format::Greenbone,
            read(&fixtures.join("greenbone/gmp-report.xml")),
            false,
            ParseOptions::default(),
        ),
    ];
    candidates
        .into_iter()
        .map(|(name, format, bytes, targeted, options)| {
            // Only what parses is timed: a reject costs less than an event and would
            // flatter the figure.
            let (good, _) = decode(format, &bytes, &options);
            let events = good;
            Input {
                name,
                format,
                bytes,
                events,
                targeted,
                options,
            }
        })
        .collect()
}

/// Decodes a whole input; (events, rejects).
fn decode(format: Format, bytes: &[u8], options: &ParseOptions) -> (u64, u64) {
    let ctx = ParseContext::new("bench").with_options(options.clone());
    let mut decoder = Decoder::new(format, ctx);
    let (mut events, mut rejects) = (0, 0);
    // The stage's whole path: raw bytes in, the JSON bytes that go on the bus out.
    decode_reader_json(bytes, &mut decoder, |decoded| match decoded.result {
        Ok(event) => {
            black_box(event);
            events += 1;
        }
        Err(_) => rejects += 1,
    })
    .expect("reading a slice cannot fail");
    (events, rejects)
}

fn criterion_benches(c: &mut Criterion, inputs: &[Input]) {
    let mut group = c.benchmark_group("parse");
    for input in inputs {
        group.throughput(Throughput::Elements(input.events));
        group.bench_function(input.name, |b| {
            b.iter(|| decode(input.format, &input.bytes, &input.options))
        });
    }
    group.finish();
}

/// Plain figures to quote: whole passes over each input for about two seconds
/// (`KASTELL_BENCH_SECONDS` to change it), as events/s by the wall clock and by the
/// thread's CPU time, and the rate of the fastest pass (by CPU time), which the host's
/// other tenants can slow but not speed up, so two builds compare best by it.
/// `KASTELL_BENCH_ONLY` (input names, comma-separated) limits the summary to some inputs.
fn summary(inputs: &[Input]) {
    let only = std::env::var("KASTELL_BENCH_ONLY").ok();
    let duration = std::env::var("KASTELL_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(2), Duration::from_secs_f64);
    println!("\nparse + normalise, one thread (wall clock; per CPU-second of the thread):");
    for input in inputs {
        if only
            .as_deref()
            .is_some_and(|only| !only.split(',').any(|name| name == input.name))
        {
            continue;
        }
        let cpu_before = thread_cpu();
        let started = Instant::now();
        let mut passes = 0u64;
        let mut best_pass = f64::INFINITY;
        while started.elapsed() < duration {
            let pass_before = thread_cpu();
            decode(input.format, &input.bytes, &input.options);
            if let (Some(before), Some(after)) = (pass_before, thread_cpu()) {
                best_pass = best_pass.min((after - before).as_secs_f64());
            }
            passes += 1;
        }
        let seconds = started.elapsed().as_secs_f64();
        let cpu_seconds = match (cpu_before, thread_cpu()) {
            (Some(before), Some(after)) => (after - before).as_secs_f64(),
            _ => seconds,
        };
        let rate = (passes * input.events) as f64 / seconds;
        let cpu_rate = (passes * input.events) as f64 / cpu_seconds;
        let megabytes = (passes as f64 * input.bytes.len() as f64) / seconds / 1e6;
        let best_rate = input.events as f64 / best_pass;
        let verdict = match (input.targeted, rate >= TARGET_EVENTS_PER_SECOND) {
            (false, _) => String::new(),
            (true, true) => format!(" (meets the {TARGET_EVENTS_PER_SECOND:.0} events/s target)"),
            (true, false) => format!(" (misses the {TARGET_EVENTS_PER_SECOND:.0} events/s target)"),
        };
        println!(
            "  {:<17} {:>10.0} events/s {:>7.1} MB/s; {:>10.0} events per CPU-second, best pass {:>10.0}; over {} events{verdict}",
            input.name, rate, megabytes, cpu_rate, best_rate, input.events
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
