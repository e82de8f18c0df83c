//! `kastell parse --format FORMAT [FILE|-]`: a sensor's records normalised as Kastell
//! ingests them, one JSON event per line on stdout, each reject on stderr with its line
//! number and reason. For checking a format and a mapping before a Sensor is deployed.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use kastell_ingest::{
    decode_reader_json, parse_timezone, Decoder, Format, LocalZone, ParseContext, ParseOptions,
};

/// Arguments of `kastell parse`.
#[derive(clap::Args, Debug)]
pub struct ParseArgs {
    /// The record format: suricata-eve, zeek, wazuh-alerts, ossec, syslog, json-lines,
    /// greenbone.
    #[arg(long)]
    format: Format,
    /// The file to read; `-` (the default) is stdin.
    #[arg(default_value = "-")]
    file: PathBuf,
    /// The Sensor name written to `observer.name`.
    #[arg(long, default_value = "parse")]
    sensor: String,
    /// For json-lines: the field holding the event time (a dotted path).
    #[arg(long)]
    timestamp_field: Option<String>,
    /// The zone of timestamps written without one: `UTC`, a fixed offset such as
    /// `+01:00`, or an IANA zone such as `Europe/Berlin` (daylight saving followed).
    #[arg(long, default_value = "UTC", value_parser = timezone)]
    timezone: LocalZone,
    /// Keep each raw record as `event.original`.
    #[arg(long)]
    keep_original: bool,
}

fn timezone(text: &str) -> Result<LocalZone, String> {
    parse_timezone(text).ok_or_else(|| {
        format!("{text:?} is not UTC, an offset like +01:00 or an IANA zone like Europe/Berlin")
    })
}

/// Runs `kastell parse`. Exit 0 once the input could be read, whatever was rejected.
///
/// # Errors
///
/// The file cannot be opened or read, or stdout cannot be written.
pub fn run(args: ParseArgs) -> anyhow::Result<ExitCode> {
    let origin = args.file.display().to_string();
    let input: Box<dyn BufRead> = if args.file.as_os_str() == "-" {
        Box::new(BufReader::new(io::stdin().lock()))
    } else {
        let file = File::open(&args.file).with_context(|| format!("opening {origin}"))?;
        Box::new(BufReader::with_capacity(64 * 1024, file))
    };
    let options = ParseOptions {
        keep_original: args.keep_original,
        timestamp_field: args.timestamp_field,
        timezone: args.timezone,
        ..ParseOptions::default()
    };
    let ctx = ParseContext::new(args.sensor).with_options(options);
    let mut decoder = Decoder::new(args.format, ctx).with_origin(&origin);

    let mut stdout = BufWriter::new(io::stdout().lock());
    let mut stderr = io::stderr().lock();
    let mut written: io::Result<()> = Ok(());
    let (mut events, mut rejects) = (0u64, 0u64);
    decode_reader_json(input, &mut decoder, |decoded| {
        if written.is_err() {
            return;
        }
        written = match decoded.result {
            Ok(event) => {
                events += 1;
                // The bytes the ingest stage would publish for the event.
                stdout
                    .write_all(event.as_bytes())
                    .and_then(|()| stdout.write_all(b"\n"))
            }
            Err(error) => {
                rejects += 1;
                writeln!(stderr, "line {}: {}: {error}", decoded.line, error.reason())
            }
        };
    })
    .with_context(|| format!("reading {origin}"))?;
    match written.and_then(|()| stdout.flush()) {
        // The reader went away (`| head`): what it wanted was written.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
        other => other.context("writing the events")?,
    }
    tracing::info!(input = %origin, events, rejects, "parsed");
    Ok(ExitCode::SUCCESS)
}
