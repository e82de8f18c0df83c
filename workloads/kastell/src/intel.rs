//! `kastell intel`: threat-intel feeds loaded offline, the way the enrich stage loads
//! them, to match events against (`match`) or to count what they hold (`stats`).
//!
//! A `--feed` is a MISP feed directory (it holds `manifest.json`), a STIX 2.1 bundle
//! (`.json`), a CSV file (`.csv`), a plain list (anything else), an IntelFeed YAML
//! (`.yaml` / `.yml`, every IntelFeed in it), or an `https://` URL: a TAXII 2.1
//! discovery URL or API root (`/taxii2/` or `/taxii/` in it), a MISP feed directory
//! (ending in `/`), a bundle (`.json`), a CSV (`.csv`) or a list.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use kastell_core::Event;
use kastell_crds::intel::{FeedKind, IntelFeedSpec};
use kastell_enrich::feed::{self, FeedDef};
use kastell_enrich::http::Http;
use kastell_enrich::IndicatorStore;
use kastell_ingest::{detect_format, parse_line, ParseContext};
use serde_json::json;

#[derive(clap::Subcommand, Debug)]
pub enum IntelCommand {
    /// Match events against feeds; one JSON line per match:
    /// {"event_index","observable","type","feed","indicator"}.
    Match(MatchArgs),
    /// Indicator counts by type per feed and in all, and the load time, as JSON.
    Stats(FeedArgs),
}

#[derive(clap::Args, Debug)]
pub struct FeedArgs {
    /// Feeds: a MISP feed directory, a STIX bundle, a CSV or list file, an IntelFeed
    /// YAML, or an https:// URL of one of them or of a TAXII 2.1 server.
    #[arg(long, num_args = 1.., required = true)]
    feed: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct MatchArgs {
    #[command(flatten)]
    feeds: FeedArgs,
    /// Events, one JSON object per line: raw Suricata EVE or Wazuh alerts (parsed as
    /// ingest does) or ECS events; `-` is stdin.
    #[arg(long, default_value = "-")]
    events: PathBuf,
}

/// Runs `kastell intel`.
///
/// # Errors
///
/// A feed that cannot be loaded, unreadable events, or a failing stdout.
pub fn run(command: IntelCommand) -> anyhow::Result<ExitCode> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    match command {
        IntelCommand::Stats(args) => {
            let (store, feeds, elapsed) = runtime.block_on(load_all(&args.feed))?;
            let out = stats(&store, &feeds, elapsed);
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        IntelCommand::Match(args) => {
            let (store, _, _) = runtime.block_on(load_all(&args.feeds.feed))?;
            let input: Box<dyn Read> = if args.events.as_os_str() == "-" {
                Box::new(io::stdin().lock())
            } else {
                let file = File::open(&args.events)
                    .with_context(|| format!("opening {}", args.events.display()))?;
                Box::new(file)
            };
            let mut out = BufWriter::new(io::stdout().lock());
            let summary = match_events(&store, BufReader::new(input), &mut out)?;
            out.flush().context("writing matches")?;
            eprintln!(
                "{} events, {} matches, {} unreadable",
                summary.events, summary.matches, summary.unreadable
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// One loaded feed, for `stats`.
struct FeedLoad {
    name: String,
    source: String,
    kind: FeedKind,
    by_type: BTreeMap<String, usize>,
    indicators: usize,
    skipped: BTreeMap<String, u64>,
    elapsed: Duration,
}

async fn load_all(args: &[String]) -> anyhow::Result<(IndicatorStore, Vec<FeedLoad>, Duration)> {
    let started = Instant::now();
    let http = Http::new(None, Duration::from_secs(60)).context("building the HTTP client")?;
    let mut stores = Vec::new();
    let mut loads = Vec::new();
    for arg in args {
        for def in feed_defs(arg)? {
            let feed_started = Instant::now();
            let loaded = feed::load(&def, &http)
                .await
                .with_context(|| format!("loading feed {} ({arg})", def.name))?;
            for warning in &loaded.warnings {
                eprintln!("feed {}: {warning}", def.name);
            }
            loads.push(FeedLoad {
                name: def.name.clone(),
                source: arg.clone(),
                kind: def.spec.kind,
                by_type: by_type(&loaded.store),
                indicators: loaded.store.len(),
                skipped: loaded.skipped,
                elapsed: feed_started.elapsed(),
            });
            stores.push(loaded.store);
        }
    }
    let store = IndicatorStore::from_stores(stores);
    Ok((store, loads, started.elapsed()))
}

/// The feeds one `--feed` argument names.
fn feed_defs(arg: &str) -> anyhow::Result<Vec<FeedDef>> {
    if let Some(scheme) = unsupported_scheme(arg) {
        bail!("{arg}: unsupported URL scheme {scheme}: use https, http (loopback only) or a path");
    }
    if arg.starts_with("https://") || arg.starts_with("http://") {
        let lower = arg.to_ascii_lowercase();
        let kind = if lower.contains("/taxii2") || lower.contains("/taxii/") {
            FeedKind::Taxii
        } else if lower.ends_with('/') {
            FeedKind::MispFeed
        } else if lower.ends_with(".json") {
            FeedKind::StixBundle
        } else if lower.ends_with(".csv") {
            FeedKind::Csv
        } else {
            FeedKind::PlainList
        };
        let name = url_name(arg);
        return Ok(vec![def(
            name,
            kind,
            None,
            Some(arg.to_owned()),
            Path::new("."),
        )]);
    }
    let path = Path::new(arg);
    let name = path
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("feed")
        .to_owned();
    if path.is_dir() {
        if !path.join("manifest.json").is_file() {
            bail!("{arg}: a directory feed must be a MISP feed (no manifest.json in it)");
        }
        return Ok(vec![def(
            name,
            FeedKind::MispFeed,
            Some(arg.to_owned()),
            None,
            Path::new("."),
        )]);
    }
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match extension.as_str() {
        "yaml" | "yml" => intel_feed_resources(path),
        "json" => Ok(vec![def(
            name,
            FeedKind::StixBundle,
            Some(arg.to_owned()),
            None,
            Path::new("."),
        )]),
        "csv" => Ok(vec![def(
            name,
            FeedKind::Csv,
            Some(arg.to_owned()),
            None,
            Path::new("."),
        )]),
        _ => Ok(vec![def(
            name,
            FeedKind::PlainList,
            Some(arg.to_owned()),
            None,
            Path::new("."),
        )]),
    }
}

fn def(
    name: String,
    kind: FeedKind,
    path: Option<String>,
    url: Option<String>,
    base: &Path,
) -> FeedDef {
    FeedDef::new(
        name,
        IntelFeedSpec {
            kind,
            url,
            path,
            api_key_secret: None,
            api_key_file: None,
            refresh_interval: "1h".into(),
            tlp_ceiling: None,
            csv: None,
            value_type: None,
            misp_filters: None,
            collection: None,
            allowlists: Vec::new(),
            sightings: None,
        },
        base,
    )
}

/// The scheme of an argument that is a URL of a scheme feeds are not read over
/// (`ftp://…`), which would otherwise be taken for a relative path.
fn unsupported_scheme(arg: &str) -> Option<&str> {
    let (scheme, _) = arg.split_once("://")?;
    let is_scheme = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (is_scheme && !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https"))
        .then_some(scheme)
}

fn url_name(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| "feed".into())
}

/// Every IntelFeed of a YAML file, paths resolved against the file's directory.
fn intel_feed_resources(path: &Path) -> anyhow::Result<Vec<FeedDef>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut set = kastell_crds::load::ResourceSet::default();
    let mut errors = Vec::new();
    kastell_crds::load::load_text(path, &text, &mut set, &mut errors);
    if let Some(error) = errors.first() {
        bail!("{}: {error}", path.display());
    }
    if set.feeds.is_empty() {
        bail!("{}: no IntelFeed resource in it", path.display());
    }
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(set
        .feeds
        .into_iter()
        .map(|feed| {
            FeedDef::new(
                feed.object
                    .metadata
                    .name
                    .clone()
                    .unwrap_or_else(|| "feed".into()),
                feed.object.spec.clone(),
                base,
            )
        })
        .collect())
}

fn by_type(store: &IndicatorStore) -> BTreeMap<String, usize> {
    store
        .count_by_kind()
        .into_iter()
        .map(|(kind, count)| (kind.as_str().to_owned(), count))
        .collect()
}

fn stats(store: &IndicatorStore, feeds: &[FeedLoad], elapsed: Duration) -> serde_json::Value {
    json!({
        "feeds": feeds.iter().map(|f| json!({
            "feed": f.name,
            "source": f.source,
            "kind": f.kind,
            "indicators": f.indicators,
            "by_type": f.by_type,
            "skipped": f.skipped,
            "load_ms": millis(f.elapsed),
        })).collect::<Vec<_>>(),
        "indicators": store.len(),
        "distinct_values": store.distinct_values(),
        "by_type": by_type(store),
        "load_ms": millis(elapsed),
    })
}

fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1_000_000.0).round() / 1_000.0
}

/// What a match run saw.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MatchSummary {
    pub events: u64,
    pub matches: u64,
    pub unreadable: u64,
}

/// Matches every event line of `input`, writing one JSON line per (observable,
/// indicator). A line that is not a JSON object, or not UTF-8, is counted and reported on
/// stderr; only a failing read stops the run.
fn match_events(
    store: &IndicatorStore,
    input: impl BufRead,
    out: &mut impl Write,
) -> anyhow::Result<MatchSummary> {
    let ctx = ParseContext::new("kastell-intel");
    let mut summary = MatchSummary::default();
    for (line_no, bytes) in input.split(b'\n').enumerate() {
        let bytes = bytes.with_context(|| format!("reading events line {}", line_no + 1))?;
        let line = match std::str::from_utf8(&bytes) {
            Ok(line) => line.strip_suffix('\r').unwrap_or(line),
            Err(e) => {
                summary.events += 1;
                summary.unreadable += 1;
                eprintln!("events line {}: not UTF-8: {e}", line_no + 1);
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let index = summary.events;
        summary.events += 1;
        let event = match detect_format(line.as_bytes()) {
            Some(format) => parse_line(format, line.as_bytes(), &ctx).map_err(|e| e.to_string()),
            None => serde_json::from_str(line)
                .map_err(|e| e.to_string())
                .and_then(|v| Event::from_value(v).ok_or_else(|| "not a JSON object".to_owned())),
        };
        let event = match event {
            Ok(event) => event,
            Err(reason) => {
                summary.unreadable += 1;
                eprintln!("events line {}: {reason}", line_no + 1);
                continue;
            }
        };
        for hit in store.matches(&event) {
            summary.matches += 1;
            let record = json!({
                "event_index": index,
                "observable": hit.observable.value,
                "type": hit.observable.kind.as_str(),
                "feed": hit.indicator.feed(),
                "indicator": hit.indicator.describe(),
            });
            writeln!(out, "{record}").context("writing matches")?;
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_that_is_not_utf8_is_counted_and_the_rest_still_matched() {
        let store = store_of("192.0.2.0/24\n");
        let mut events = b"{\"source\":{\"ip\":\"192.0.2.1\"}}\n".to_vec();
        events.extend_from_slice(b"{\"x\":\"\xff\xfe\"}\n");
        events.extend_from_slice(b"{\"source\":{\"ip\":\"192.0.2.2\"}}\r\n");
        let mut out = Vec::new();
        let summary = match_events(&store, events.as_slice(), &mut out).unwrap();
        assert_eq!(
            summary,
            MatchSummary {
                events: 3,
                matches: 2,
                unreadable: 1
            }
        );
        let indices: Vec<u64> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["event_index"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(indices, vec![0, 2]);
    }

    fn store_of(list: &str) -> IndicatorStore {
        kastell_enrich::list::load_plain_list("unit", list, None).0
    }

    #[test]
    fn matches_are_json_lines_with_the_interface_keys() {
        let store = store_of("evil.example\n192.0.2.0/24\n");
        let events = "{\"dns\":{\"question\":{\"name\":\"a.evil.example\"}}}\n\nnot json\n{\"source\":{\"ip\":\"192.0.2.9\"}}\n";
        let mut out = Vec::new();
        let summary = match_events(&store, events.as_bytes(), &mut out).unwrap();
        assert_eq!(
            summary,
            MatchSummary {
                events: 3,
                matches: 2,
                unreadable: 1
            }
        );
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(
            lines[0],
            json!({"event_index": 0, "observable": "a.evil.example", "type": "domain", "feed": "unit", "indicator": "domain=evil.example"})
        );
        assert_eq!(lines[1]["event_index"], 2);
        assert_eq!(lines[1]["indicator"], "ip=192.0.2.0/24");
    }

    #[test]
    fn feed_arguments_choose_their_loader() {
        let dir = tempfile::tempdir().unwrap();
        let kinds = |arg: &str| {
            feed_defs(arg).map(|d| d.into_iter().map(|d| d.spec.kind).collect::<Vec<_>>())
        };
        assert_eq!(
            kinds("https://taxii.example.eu/taxii2/").unwrap(),
            vec![FeedKind::Taxii]
        );
        assert_eq!(
            kinds("https://feeds.example.eu/misp/").unwrap(),
            vec![FeedKind::MispFeed]
        );
        assert_eq!(
            kinds("https://x.example.eu/b.json").unwrap(),
            vec![FeedKind::StixBundle]
        );
        assert_eq!(kinds("list.txt").unwrap(), vec![FeedKind::PlainList]);
        assert!(
            kinds(dir.path().to_str().unwrap()).is_err(),
            "a directory without manifest.json"
        );
        let yaml = dir.path().join("feeds.yaml");
        std::fs::write(
            &yaml,
            "apiVersion: kastell.eu/v1alpha1\nkind: IntelFeed\nmetadata: {name: a, namespace: soc}\nspec: {type: csv, path: a.csv}\n",
        )
        .unwrap();
        let defs = feed_defs(yaml.to_str().unwrap()).unwrap();
        assert_eq!(
            (defs[0].name.as_str(), defs[0].spec.kind),
            ("a", FeedKind::Csv)
        );
        assert_eq!(defs[0].base_dir, dir.path());
    }

    #[test]
    fn a_url_of_another_scheme_is_refused_by_name() {
        let error = feed_defs("ftp://feeds.example.eu/list.txt")
            .unwrap_err()
            .to_string();
        assert_eq!(
            error,
            "ftp://feeds.example.eu/list.txt: unsupported URL scheme ftp: use https, http \
             (loopback only) or a path"
        );
        assert!(feed_defs("HTTPS://feeds.example.eu/list.txt").is_ok());
        assert!(feed_defs("dir/list.txt").is_ok());
    }

    #[tokio::test]
    async fn random_bytes_as_a_feed_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("random.bin");
        // Bytes of a xorshift generator: reproducible, and as far from text as
        // /dev/urandom's.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let bytes: Vec<u8> = (0..4096)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()[3]
            })
            .collect();
        std::fs::write(&path, bytes).unwrap();
        let arg = path.to_str().unwrap().to_owned();
        let Err(error) = load_all(std::slice::from_ref(&arg)).await else {
            panic!("random bytes loaded as a feed");
        };
        let text = format!("{error:#}");
        assert!(text.contains("is not a text feed"), "{text}");
        assert!(text.contains(&arg), "{text}");
    }
}
