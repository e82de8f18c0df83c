//! Every SigmaHQ rule in the shared corpora (3,754 files) is read and compiled: none may
//! panic, every one must at least parse (the shape of all of SigmaHQ is valid Sigma), and
//! the compile errors are counted by reason and printed, so the gap to the full
//! specification is visible on each run.

use std::path::{Path, PathBuf};

use kastell_correlate::{parse_rule, CompileOptions, Placeholders, RuleDocument, RuleSet};

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
        println!("SKIPPED: {} not found", sigma.display());
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

    let mut parse_failures = Vec::new();
    let mut documents = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        if let Err(e) = parse_rule(&text) {
            parse_failures.push(format!("{}: {e}", file.display()));
            continue;
        }
        let resource = file.strip_prefix(&sigma).unwrap().display().to_string();
        documents.push(RuleDocument::new(resource, text));
    }
    assert!(parse_failures.is_empty(), "{}", parse_failures.join("\n"));

    // Routed, as the pipeline compiles them. Two emerging-threat rules `expand` the
    // placeholder `%known_cdcs%`, which a site configures; without it they must fail.
    let (_, errors) = RuleSet::compile(documents.clone());
    let reasons: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 2, "{reasons:#?}");
    assert!(
        reasons
            .iter()
            .all(|r| r.contains("placeholder `%known_cdcs%`")),
        "{reasons:#?}"
    );
    let mut placeholders = Placeholders::new();
    placeholders.insert(
        "known_cdcs".to_owned(),
        vec!["dc01.corp.example".to_owned()],
    );
    let options = CompileOptions {
        placeholders,
        ..CompileOptions::default()
    };
    let (set, errors) = RuleSet::compile_with(documents, &options);
    assert!(errors.is_empty(), "{errors:#?}");
    let routed = set.len();
    println!("SigmaHQ rules: {} files, all compile", files.len());
    assert_eq!(routed, 3754);
}
