//! `kastell detect`: Sigma rules from files or directories evaluated offline against raw
//! JSON events, one JSON line per match. Logsource routing is off (the correlate crate's
//! raw mode), so rules apply to events as their Sigma field names say.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::ValueEnum;

/// Arguments of `kastell detect`.
#[derive(clap::Args, Debug)]
pub struct DetectArgs {
    /// Sigma rule files, or directories searched recursively for *.yml and *.yaml.
    #[arg(long, num_args = 1.., required = true)]
    rules: Vec<PathBuf>,
    /// JSON events: one object per line, or concatenated objects; `-` is stdin.
    #[arg(long, default_value = "-")]
    events: PathBuf,
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
    let (rules, errors) = kastell_correlate::load_rules(&args.rules)?;
    for error in &errors {
        writeln!(err, "rule skipped: {error}")?;
    }
    if args.strict && !errors.is_empty() {
        writeln!(err, "{} rule(s) do not compile (--strict)", errors.len())?;
        return Ok(ExitCode::FAILURE);
    }
    let stats = kastell_correlate::detect_to_jsonl(&rules, input, out)?;
    tracing::info!(
        rules = rules.len(),
        skipped = errors.len(),
        events = stats.events,
        matches = stats.matches,
        "detect finished"
    );
    Ok(ExitCode::SUCCESS)
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
            events: PathBuf::from("-"),
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
}
