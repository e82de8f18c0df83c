//! Every SigmaHQ rule in the shared corpora (3,754 files) is read and compiled: none may
//! panic, every one must at least parse (the shape of all of SigmaHQ is valid Sigma), and
//! the compile errors are counted by reason and printed, so the gap to the full
//! specification is visible on each run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kastell_correlate::{parse_rule, ErrorKind, RuleDocument};

/// `$KASTELL_CORPORA`, or the shared corpora beside the repository.
fn corpora() -> PathBuf {
    std::env::var_os("KASTELL_CORPORA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpora"))
}

fn rule_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rule_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            out.push(path);
        }
    }
}

#[test]
fn every_sigmahq_rule_parses_and_compile_errors_are_reported() {
    let sigma = corpora().join("sigma");
    if !sigma.is_dir() {
        println!("skipped: {} not found", sigma.display());
        return;
    }
    let mut files = Vec::new();
    for folder in ["rules", "rules-emerging-threats", "rules-threat-hunting"] {
        rule_files(&sigma.join(folder), &mut files);
    }
    files.sort();
    assert_eq!(
        files.len(),
        3754,
        "the corpus holds 3,754 SigmaHQ rule files"
    );

    let mut compiled = 0;
    let mut parse_failures = Vec::new();
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        if let Err(e) = parse_rule(&text) {
            parse_failures.push(format!("{}: {e}", file.display()));
            continue;
        }
        let resource = file.strip_prefix(&sigma).unwrap().display().to_string();
        match RuleDocument::new(resource, text).compile() {
            Ok(_) => compiled += 1,
            Err(e) => {
                assert!(
                    !matches!(
                        e.kind,
                        ErrorKind::Yaml(_) | ErrorKind::UnknownModifier { .. }
                    ),
                    "parsed, then failed to parse: {e}"
                );
                *reasons.entry(e.kind.label()).or_default() += 1;
            }
        }
    }

    println!(
        "SigmaHQ rules: {} files, {compiled} compile, {} do not",
        files.len(),
        files.len() - compiled - parse_failures.len()
    );
    let mut by_count: Vec<_> = reasons.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    for (reason, count) in by_count {
        println!("{count:>6}  {reason}");
    }
    assert!(parse_failures.is_empty(), "{}", parse_failures.join("\n"));
    // The network, web and Linux rules the example set draws from must stay usable.
    assert!(compiled > 1000, "only {compiled} rules compile");
}
