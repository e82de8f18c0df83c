//! Junk and mutated sensor records through every format's decoder: nothing may panic,
//! and what one input makes the parsers allocate stays bounded by its size.
//!
//! One test in its own binary, because the allocation counter is process-wide.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::fixture;
use kastell_ingest::{decode_reader, Decoder, Format, ParseContext};

/// Counts live bytes and the peak since the last reset.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A deterministic xorshift generator, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that mean something to one of the parsers.
const SPICE: &[&[u8]] = &[
    b"\t",
    b"|",
    b"\\x",
    b"\\",
    b"\"",
    b"{",
    b"}",
    b"[",
    b"]",
    b"<",
    b">",
    b"=",
    b"\n",
    b"\xff",
    b"#fields\t",
    b"#separator \\x",
    b"** Alert ",
    b"CEF:0|",
    b"<result>",
    b"]]>",
    b"&amp;",
    b"&#0;",
    b":",
    b"-",
    b"::",
    b"\r\n",
];

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut bytes = seed.to_vec();
    for _ in 0..=rng.below(8) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(4) {
            0 if !bytes.is_empty() => {
                let i = rng.below(bytes.len());
                bytes[i] = rng.next() as u8;
            }
            1 => bytes.truncate(at),
            2 => {
                let spice = SPICE[rng.below(SPICE.len())];
                bytes.splice(at..at, spice.iter().copied());
            }
            _ => {
                let end = (at + rng.below(64)).min(bytes.len());
                let copy = bytes[at.min(end)..end].to_vec();
                bytes.splice(at..at, copy);
            }
        }
    }
    bytes
}

fn decode_measured(format: Format, input: &[u8]) -> usize {
    let mut decoder = Decoder::new(format, ParseContext::new("junk"));
    let baseline = LIVE.load(Ordering::Relaxed);
    PEAK.store(baseline, Ordering::Relaxed);
    decode_reader(input, &mut decoder, |decoded| {
        if let Ok(event) = decoded.result {
            assert!(
                event.timestamp().is_some(),
                "{format}: event without a time"
            );
        }
    })
    .unwrap();
    PEAK.load(Ordering::Relaxed).saturating_sub(baseline)
}

#[test]
fn junk_and_mutated_records_never_panic_and_allocate_in_proportion() {
    let seeds: Vec<(Format, Vec<u8>)> = [
        (Format::SuricataEve, "suricata/tr0llope-eve-mixed.sample.json"),
        (Format::WazuhAlerts, "wazuh/sshd-5712.jsonl"),
        (Format::WazuhAlerts, "wazuh/eventchannel-alerts.jsonl"),
        (Format::Zeek, "zeek/cchostak-http.log"),
        (Format::Zeek, "zeek/simir-conn.json.log"),
        (Format::Zeek, "zeek/btest-json-utf8.log"),
        (Format::Greenbone, "greenbone/gmp-report.xml"),
    ]
    .into_iter()
    .map(|(format, name)| (format, std::fs::read(fixture(name)).unwrap()))
    .chain([
        (
            Format::Ossec,
            b"** Alert 1.2: - a,\n2019 Aug 08 15:16:00 (a) ::1->/x\nRule: 1 (level 2) -> 'x'\nSrc IP: ::2\nlog\n\n".to_vec(),
        ),
        (
            Format::Syslog,
            b"<34>Oct 11 22:14:15 fw CEF:0|a|b|1|2|n|5|src=::1 request=http://x/?a=b msg=a\\=b\n<165>1 2003-10-11T22:14:15.003Z h a 1 ID [x y=\"z\\]\"] m\n".to_vec(),
        ),
        (
            Format::JsonLines,
            b"{\"timestamp\":\"2024-01-01 00:00:00\",\"a\":{\"b\":[1,2]}}\n".to_vec(),
        ),
    ])
    .collect();

    let mut rng = Rng(0x5eed_cafe_f00d_d00d);
    let mut runs = 0;
    for (format, seed) in &seeds {
        for _ in 0..150 {
            let input = mutate(seed, &mut rng);
            // Replay detection reads whatever a file starts with.
            let _ = kastell_ingest::detect_stream_format(&input);
            // Any format may be pointed at the wrong sensor's output.
            let formats = [*format, Format::ALL[rng.below(Format::ALL.len())]];
            for target in formats {
                let peak = decode_measured(target, &input);
                // A parsed record is a JSON tree of its own text plus the event: a few
                // times its size. Far below would be fine; a runaway is not.
                let bound = 64 * input.len() + (1 << 20);
                assert!(
                    peak <= bound,
                    "{target}: {peak} bytes for a {}-byte input",
                    input.len()
                );
                runs += 1;
            }
        }
    }
    let pure_junk: [&[u8]; 5] = [
        b"",
        b"\n\n\n",
        &[0xff; 4096],
        b"#separator \\x\n#fields\n\t\t\t",
        b"<a><a><a>",
    ];
    for junk in pure_junk {
        for format in Format::ALL {
            decode_measured(format, junk);
            runs += 1;
        }
    }
    assert_eq!(runs, 10 * 150 * 2 + 5 * 7);
}
