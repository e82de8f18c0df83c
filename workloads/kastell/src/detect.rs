//! `kastell detect`: Sigma rules from files or directories evaluated offline against raw
//! JSON events, one JSON line per match. Logsource routing is off (the correlate crate's
//! raw mode), so rules apply to events as their Sigma field names say. A file may hold bare
//! Sigma rules or DetectionRule resources (as in a platform's resource repository); of a
//! resource the rule in `spec.sigma` is used with its level override and enabled flag.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;
use kastell_correlate::{
    write_match, CompileOptions, DetectError, DetectStats, Mode, Placeholders, RoutedDetector,
    RuleDocument, RuleSet,
};
use kastell_crds::ResourceSet;
use kastell_ingest::{decode_reader, Decoder, Format, ParseContext};

/// Arguments of `kastell detect`.
#[derive(clap::Args, Debug)]
pub struct DetectArgs {
    /// Sigma rule files or DetectionRule resource files, or directories searched
    /// recursively for *.yml and *.yaml.
    #[arg(long, num_args = 1.., required = true)]
    rules: Vec<PathBuf>,
    /// Values of a placeholder that rules' `expand` modifier names, as
    /// `NAME=VALUE[,VALUE...]` (NAME with or without its `%`s); repeat the flag per placeholder.
    #[arg(long = "placeholder", value_name = "NAME=VALUES", value_parser = parse_placeholder)]
    placeholders: Vec<(String, Vec<String>)>,
    /// JSON events: one object per line, or concatenated objects; `-` is stdin.
    #[arg(long, default_value = "-")]
    events: PathBuf,
    /// Read the events as this sensor format (suricata-eve, zeek, wazuh-alerts, ossec,
    /// syslog, json-lines, greenbone), normalised to ECS as `kastell parse --format` does,
    /// and evaluate the rules as `kastell run` does: routed by each event's source, with
    /// the field mappings of docs/detection.md. Event indices then count the normalised
    /// events; records that do not parse are listed on stderr.
    #[arg(long)]
    format: Option<Format>,
    /// How to print matches.
    #[arg(long, value_enum, default_value_t = DetectOutput::Jsonl)]
    output: DetectOutput,
    /// Fail (exit 1) when any rule does not compile, instead of skipping it.
    #[arg(long)]
    strict: bool,
}

/// Output formats of `kastell detect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DetectOutput {
    /// `{"rule_id","rule_title","level","event_index"}` per match, and
    /// `{"rule_id","rule_title","level","group","event_indices"}` per correlation.
    Jsonl,
}

/// Runs `kastell detect`: matches to stdout, rules that do not compile to stderr.
///
/// # Errors
///
/// A rule path or the events cannot be read, an event is not JSON, or stdout fails.
pub fn run(args: DetectArgs) -> anyhow::Result<ExitCode> {
    let input: Box<dyn Read> = if args.events.as_os_str() == "-" {
        Box::new(io::stdin().lock())
    } else {
        let file = File::open(&args.events)
            .with_context(|| format!("opening {}", args.events.display()))?;
        Box::new(BufReader::new(file))
    };
    let stdout = io::stdout().lock();
    let mut out = BufWriter::new(stdout);
    let code = detect(&args, input, &mut out, &mut io::stderr().lock())?;
    out.flush().context("writing matches")?;
    Ok(code)
}

/// The command over any input and outputs, so tests drive exactly what `run` does.
fn detect(
    args: &DetectArgs,
    input: impl Read,
    out: &mut impl Write,
    err: &mut impl Write,
) -> anyhow::Result<ExitCode> {
    let DetectOutput::Jsonl = args.output;
    let (documents, mut problems) = rule_documents(&args.rules)?;
    // With --format the events are Kastell's own, so the rules are routed by source and
    // their fields mapped as the correlate stage does; without it, raw mode.
    let mode = if args.format.is_some() {
        Mode::Routed
    } else {
        Mode::Raw
    };
    let options = CompileOptions {
        mode,
        placeholders: placeholders(&args.placeholders),
        ..CompileOptions::default()
    };
    let (rules, errors) = RuleSet::compile_with(documents, &options);
    problems.extend(errors.iter().map(ToString::to_string));
    for problem in &problems {
        writeln!(err, "rule skipped: {problem}")?;
    }
    if args.strict && !problems.is_empty() {
        writeln!(err, "{} rule(s) do not load (--strict)", problems.len())?;
        return Ok(ExitCode::FAILURE);
    }
    if rules.is_empty() {
        // Still exit 0, as the command's contract says for skipped rules; the warning
        // makes an empty run visible (a directory of other resources, a wrong path).
        writeln!(
            err,
            "warning: no rule loaded from {}: no event can match",
            display_paths(&args.rules)
        )?;
    }
    // Input that is not JSON (or, with --format, not that format) is reported on stderr
    // and skipped.
    let stats = match args.format {
        None => kastell_correlate::detect_to_jsonl(&rules, input, out, err)?,
        Some(format) => detect_normalised(&rules, format, input, out, err)?,
    };
    tracing::info!(
        rules = rules.len(),
        skipped = problems.len(),
        events = stats.events,
        bad_events = stats.skipped,
        matches = stats.matches,
        "detect finished"
    );
    Ok(ExitCode::SUCCESS)
}

/// Detection over `input` read as `format` and normalised as the ingest stage does, each
/// event routed to the rules of its source as the correlate stage routes it (`rules` are
/// compiled in routed mode). Rejected records are listed on `err` as they come.
fn detect_normalised(
    rules: &RuleSet,
    format: Format,
    input: impl Read,
    out: &mut impl Write,
    err: &mut impl Write,
) -> anyhow::Result<DetectStats> {
    let mut detector = RoutedDetector::new(rules);
    let mut decoder = Decoder::new(format, ParseContext::new("detect"));
    let mut failed: Option<DetectError> = None;
    decode_reader(BufReader::new(input), &mut decoder, |decoded| {
        if failed.is_some() {
            return;
        }
        let done = match decoded.result {
            Ok(event) => detector.event(&event, |found| write_match(out, &found)),
            Err(error) => writeln!(
                err,
                "record skipped: line {}: {}: {error}",
                decoded.line,
                error.reason()
            )
            .map_err(DetectError::from),
        };
        failed = done.err();
    })
    .context("reading the events")?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    Ok(detector.finish(|found| write_match(out, &found))?)
}

/// The rule documents in the files under `paths`: every DetectionRule of a resource file,
/// or the file itself as Sigma. Resources that do not load are returned as problems.
fn rule_documents(paths: &[PathBuf]) -> anyhow::Result<(Vec<RuleDocument>, Vec<String>)> {
    let mut documents = Vec::new();
    let mut problems = Vec::new();
    for file in kastell_correlate::rule_files(paths)? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        if holds_resources(&text) {
            let mut set = ResourceSet::default();
            let mut errors = Vec::new();
            kastell_crds::load::load_text(&file, &text, &mut set, &mut errors);
            problems.extend(errors.iter().map(ToString::to_string));
            documents.extend(kastell::detection::rule_documents(
                &set.rules,
                &mut problems,
            ));
        } else {
            documents.push(RuleDocument::sigma_file(file.display().to_string(), text));
        }
    }
    Ok((documents, problems))
}

/// Whether a YAML file holds Kubernetes-style resources (any document with both
/// `apiVersion` and `kind` at the top) rather than Sigma rules, which have neither.
///
/// Stops at the first document that is not valid YAML: serde_yaml's reader repeats a
/// syntax error for ever rather than ending, and the Sigma reader reports the error.
fn holds_resources(text: &str) -> bool {
    for document in serde_yaml::Deserializer::from_str(text) {
        let Ok(value) = <serde_yaml::Value as serde::Deserialize>::deserialize(document) else {
            return false;
        };
        if value
            .as_mapping()
            .is_some_and(|map| map.contains_key("apiVersion") && map.contains_key("kind"))
        {
            return true;
        }
    }
    false
}

fn placeholders(given: &[(String, Vec<String>)]) -> Placeholders {
    let mut out = Placeholders::new();
    for (name, values) in given {
        out.entry(name.clone())
            .or_default()
            .extend(values.iter().cloned());
    }
    out
}

/// Parses `NAME=VALUE[,VALUE...]`; a name may be written with or without its `%`s.
fn parse_placeholder(text: &str) -> Result<(String, Vec<String>), String> {
    let (name, values) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}` is not NAME=VALUE[,VALUE...]"))?;
    let name = name.trim().trim_matches('%');
    if name.is_empty() {
        return Err(format!("`{text}` has an empty placeholder name"));
    }
    let values: Vec<String> = values.split(',').map(str::to_owned).collect();
    if values.iter().any(String::is_empty) {
        return Err(format!("`{text}` has an empty value"));
    }
    Ok((name.to_owned(), values))
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const GOOD: &str = "title: T\nid: 0b5b4f4e-1111-2222-3333-444444444444\nlevel: high\n\
        logsource: {product: windows}\ndetection:\n  sel:\n    Image|endswith: '\\sc.exe'\n  \
        condition: sel\n";
    const BAD: &str = "title: B\nid: 0b5b4f4e-1111-2222-3333-555555555555\n\
        logsource: {product: windows}\ndetection:\n  sel:\n    Image|nosuchmodifier: x\n  \
        condition: sel\n";

    fn args(dir: &Path, strict: bool) -> DetectArgs {
        DetectArgs {
            rules: vec![dir.to_path_buf()],
            placeholders: Vec::new(),
            events: PathBuf::from("-"),
            format: None,
            output: DetectOutput::Jsonl,
            strict,
        }
    }

    fn rules_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/good.yml"), GOOD).unwrap();
        std::fs::write(dir.path().join("bad.yaml"), BAD).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a rule").unwrap();
        std::fs::write(dir.path().join("empty.yml"), "# nothing yet\n").unwrap();
        dir
    }

    #[test]
    fn matches_are_printed_and_bad_rules_listed() {
        let dir = rules_dir();
        let events =
            "{\"Image\": \"C:\\\\sc.exe\"}\n{\"Image\": \"x\"}\n{\"Image\": \"a\\\\sc.exe\"}";
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = detect(
            &args(dir.path(), false),
            events.as_bytes(),
            &mut out,
            &mut err,
        )
        .unwrap();
        assert_eq!(code, ExitCode::SUCCESS);
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(lines[0]["event_index"], 0);
        assert_eq!(lines[1]["event_index"], 2);
        assert_eq!(lines[0]["level"], "high");
        assert_eq!(lines[0]["rule_title"], "T");
        let err = String::from_utf8(err).unwrap();
        assert!(err.contains("nosuchmodifier"), "{err}");
        // Bare Sigma files are named as files, not as DetectionRules.
        assert!(!err.contains("DetectionRule"), "{err}");
        let bad = dir.path().join("bad.yaml").display().to_string();
        assert!(err.contains(&format!("(file {bad}): ")), "{err}");
        let empty = dir.path().join("empty.yml").display().to_string();
        assert!(
            err.contains(&format!(
                "rule skipped: rule (file {empty}): no rule: the text is empty"
            )),
            "{err}"
        );
    }

    #[test]
    fn a_rule_file_that_is_not_yaml_is_skipped_with_its_reason() {
        let dir = rules_dir();
        for (name, text) in [
            ("unclosed.yml", "key: [unclosed\n"),
            ("braces.yml", "{{{{"),
            ("second.yml", "title: ok\n---\nkey: [unclosed\n"),
        ] {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        // serde_yaml's reader repeats a syntax error for ever: a regression hangs, so the
        // run is given a deadline instead of blocking the suite.
        let path = dir.path().to_path_buf();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for strict in [false, true] {
                let (mut out, mut err) = (Vec::new(), Vec::new());
                let code = detect(&args(&path, strict), &b""[..], &mut out, &mut err).unwrap();
                let _ = done.send((code, String::from_utf8(err).unwrap()));
            }
        });
        let deadline = std::time::Duration::from_secs(60);
        let (lenient, err) = finished.recv_timeout(deadline).expect("detect returned");
        assert_eq!(lenient, ExitCode::SUCCESS);
        for name in ["unclosed.yml", "braces.yml", "second.yml"] {
            let file = dir.path().join(name).display().to_string();
            assert!(
                err.contains(&format!("rule skipped: rule (file {file})")),
                "{name}: {err}"
            );
        }
        let (strict, _) = finished.recv_timeout(deadline).expect("detect returned");
        assert_eq!(strict, ExitCode::from(1));
    }

    #[test]
    fn a_line_that_is_not_json_is_reported_and_the_run_goes_on() {
        let dir = rules_dir();
        let events =
            "{\"Image\": \"C:\\\\sc.exe\"}\n{\"Image\": broken\n{\"Image\": \"b\\\\sc.exe\"}\n";
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = detect(
            &args(dir.path(), false),
            events.as_bytes(),
            &mut out,
            &mut err,
        )
        .unwrap();
        assert_eq!(code, ExitCode::SUCCESS);
        let indices: Vec<u64> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["event_index"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        assert_eq!(indices, [0, 2]);
        let err = String::from_utf8(err).unwrap();
        assert!(
            err.contains("event skipped: line 2 (event 1): expected value"),
            "{err}"
        );
    }

    #[test]
    fn a_detection_rule_without_a_spec_is_skipped_with_file_name_and_reason() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("empty-spec.yaml");
        std::fs::write(
            &file,
            "apiVersion: kastell.eu/v1alpha1\nkind: DetectionRule\n\
             metadata: {name: empty-spec, namespace: soc}\nspec: {}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("good.yml"), GOOD).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = detect(&args(dir.path(), false), &b"{}"[..], &mut out, &mut err).unwrap();
        assert_eq!(code, ExitCode::SUCCESS);
        let err = String::from_utf8(err).unwrap();
        let line = err
            .lines()
            .find(|l| l.starts_with("rule skipped: "))
            .unwrap_or_else(|| panic!("no skipped rule reported: {err}"));
        assert!(line.contains(&file.display().to_string()), "{line}");
        assert!(line.contains("DetectionRule empty-spec"), "{line}");
        assert!(
            line.contains("sigma"),
            "the reason names the missing field: {line}"
        );
    }

    #[test]
    fn strict_fails_on_a_bad_rule() {
        let dir = rules_dir();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = detect(&args(dir.path(), true), &b"{}"[..], &mut out, &mut err).unwrap();
        assert_eq!(code, ExitCode::FAILURE);
        assert!(out.is_empty());
    }

    #[test]
    fn correlations_print_their_group_and_event_indices() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = format!(
            "{GOOD}---\ntitle: Many sc\nid: many-sc\nlevel: critical\ncorrelation:\n  \
             type: event_count\n  rules: [0b5b4f4e-1111-2222-3333-444444444444]\n  \
             group-by: [Computer]\n  timespan: 1m\n  condition: {{gte: 2}}\n"
        );
        std::fs::write(dir.path().join("bundle.yml"), bundle).unwrap();
        let events = concat!(
            r#"{"Image": "C:\\sc.exe", "Computer": "a", "@timestamp": "2024-01-01T00:00:00Z"}"#,
            "\n",
            r#"{"Image": "C:\\sc.exe", "Computer": "b", "@timestamp": "2024-01-01T00:00:10Z"}"#,
            "\n",
            r#"{"Image": "C:\\sc.exe", "Computer": "a", "@timestamp": "2024-01-01T00:00:20Z"}"#,
        );
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = detect(
            &args(dir.path(), true),
            events.as_bytes(),
            &mut out,
            &mut err,
        )
        .unwrap();
        assert_eq!(code, ExitCode::SUCCESS, "{}", String::from_utf8_lossy(&err));
        let out = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 1, "{out}");
        assert_eq!(
            lines[0],
            serde_json::json!({"rule_id": "many-sc", "rule_title": "Many sc", "level": "critical",
                               "group": {"Computer": "a"}, "event_indices": [0, 2]})
        );
    }

    #[test]
    fn detection_rule_resources_are_read_from_the_bundled_repository() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/soc/rules");
        let mut args = args(&root, true);
        args.rules = vec![root.clone()];
        // A real Suricata EVE alert of severity 1 from the bundled sample data.
        let events = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/soc/data/suricata/eve.json"),
        )
        .unwrap();
        let severe = events
            .lines()
            .find(|line| {
                line.contains("\"event_type\":\"alert\"") && line.contains("\"severity\":1")
            })
            .expect("the sample holds a severity-1 alert");
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = detect(&args, severe.as_bytes(), &mut out, &mut err).unwrap();
        let err = String::from_utf8(err).unwrap();
        assert_eq!(code, ExitCode::SUCCESS, "{err}");
        assert!(err.is_empty(), "every bundled DetectionRule loads: {err}");
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("\"rule_title\":\"Suricata High Severity Alert\""),
            "{out}"
        );
    }

    #[test]
    fn with_a_format_raw_sensor_records_are_normalised_and_routed_as_kastell_run_does() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/soc");
        let run = |format: Option<Format>, input: &[u8]| {
            let mut args = args(&root.join("rules"), true);
            args.format = format;
            let (mut out, mut err) = (Vec::new(), Vec::new());
            let code = detect(&args, input, &mut out, &mut err).unwrap();
            assert_eq!(code, ExitCode::SUCCESS);
            let titles: Vec<String> = String::from_utf8(out)
                .unwrap()
                .lines()
                .map(|l| {
                    let found: serde_json::Value = serde_json::from_str(l).unwrap();
                    found["rule_title"].as_str().unwrap().to_owned()
                })
                .collect();
            (titles, String::from_utf8(err).unwrap())
        };
        let count = |titles: &[String], title: &str| titles.iter().filter(|t| *t == title).count();

        // The bundled Wazuh rules read ECS paths (`wazuh.rule.groups`): raw alerts match
        // none of them; normalised, three.
        let mut alerts = std::fs::read_to_string(root.join("data/wazuh/alerts.json")).unwrap();
        alerts.push_str("{\"not\": an alert}\n");
        let (raw, _) = run(None, alerts.as_bytes());
        assert!(!raw.iter().any(|t| t.contains("Wazuh")), "{raw:?}");
        let (normalised, err) = run(Some(Format::WazuhAlerts), alerts.as_bytes());
        assert_eq!(normalised.len(), 3, "{normalised:?}");
        assert_eq!(count(&normalised, "SSH Brute Force Reported by Wazuh"), 1);
        let last = alerts.lines().count();
        assert!(
            err.contains(&format!("record skipped: line {last}: invalid_json: ")),
            "{err}"
        );

        // The bundled Suricata rules name EVE's own fields (`alert.severity`), which the
        // source's field mapping finds under `suricata.eve`: the alerts `kastell run`
        // raises from the same data (README's "alerts by rule").
        let eve = std::fs::read(root.join("data/suricata/eve.json")).unwrap();
        let (found, err) = run(Some(Format::SuricataEve), &eve);
        assert!(err.is_empty(), "{err}");
        assert_eq!(
            count(&found, "Suricata Low Severity Alert"),
            30,
            "{found:?}"
        );
        assert_eq!(
            count(&found, "Suricata High Severity Alert"),
            4,
            "{found:?}"
        );
        assert_eq!(
            count(&found, "Denied SMB Access to an Administrative Share"),
            6,
            "{found:?}"
        );
        assert_eq!(found.len(), 40, "{found:?}");
    }

    #[test]
    fn no_loadable_rule_is_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("bad.yaml"), BAD).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = detect(&args(dir.path(), false), &b"{}"[..], &mut out, &mut err).unwrap();
        assert_eq!(code, ExitCode::SUCCESS);
        assert!(out.is_empty());
        let err = String::from_utf8(err).unwrap();
        assert!(err.contains("warning: no rule loaded"), "{err}");
    }

    #[test]
    fn placeholders_feed_the_expand_modifier() {
        let dir = tempfile::tempdir().unwrap();
        let rule = "title: P\nid: p-1\nlevel: low\nlogsource: {product: windows}\n\
            detection:\n  sel:\n    Computer|expand: '%admin_hosts%'\n  condition: sel\n";
        std::fs::write(dir.path().join("p.yml"), rule).unwrap();
        let events = "{\"Computer\": \"dc1\"}\n{\"Computer\": \"ws7\"}\n{\"Computer\": \"dc2\"}";

        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = detect(
            &args(dir.path(), true),
            events.as_bytes(),
            &mut out,
            &mut err,
        )
        .unwrap();
        assert_eq!(
            code,
            ExitCode::FAILURE,
            "without values the rule is refused"
        );
        assert!(String::from_utf8(err).unwrap().contains("admin_hosts"));

        let mut with = args(dir.path(), true);
        with.placeholders = vec![parse_placeholder("%admin_hosts%=dc1,dc2").unwrap()];
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let code = detect(&with, events.as_bytes(), &mut out, &mut err).unwrap();
        assert_eq!(code, ExitCode::SUCCESS, "{}", String::from_utf8_lossy(&err));
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

    #[test]
    fn placeholder_flags_are_checked() {
        assert_eq!(
            parse_placeholder("x=a,b").unwrap(),
            ("x".to_owned(), vec!["a".to_owned(), "b".to_owned()])
        );
        assert!(parse_placeholder("novalue").is_err());
        assert!(parse_placeholder("=a").is_err());
        assert!(parse_placeholder("x=a,,b").is_err());
    }
}
