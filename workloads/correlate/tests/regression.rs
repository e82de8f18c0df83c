//! The SigmaHQ regression data, run the way `kastell detect` runs: ALL SigmaHQ rules
//! loaded at once in raw mode (no logsource routing), every case's JSON events evaluated,
//! and the rule a case names must match at least the number of times its `info.yml` expects
//! (`match_count`, or once when it is absent). That is the upstream runner's rule
//! (`tests/regression_tests_runner.py`: fewer is a failure, more a warning): several cases
//! expect 1 while their JSON holds more events the rule rightly matches (the AnyDesk case
//! has three `user.conf` writes). More matches than expected are printed. A case whose
//! rule does not compile is printed with the reason and tolerated; a compiled rule giving
//! too few matches fails.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use kastell_correlate::{detect_events, load_rules};
use serde::Deserialize;

/// `$KASTELL_CORPORA`, or the shared corpora beside the repository.
fn corpora() -> PathBuf {
    std::env::var_os("KASTELL_CORPORA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpora"))
}

#[derive(Deserialize)]
struct Info {
    rule_metadata: Vec<RuleMeta>,
    #[serde(default)]
    regression_tests_info: Vec<TestInfo>,
}

#[derive(Deserialize)]
struct RuleMeta {
    id: String,
}

#[derive(Deserialize)]
struct TestInfo {
    #[serde(rename = "type")]
    kind: String,
    match_count: Option<usize>,
    path: String,
}

fn info_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            info_files(&path, out);
        } else if path.file_name().is_some_and(|n| n == "info.yml") {
            out.push(path);
        }
    }
}

#[test]
fn sigmahq_regression_cases_match_their_expected_counts() {
    let sigma = corpora().join("sigma");
    if !sigma.join("regression_data").is_dir() {
        println!(
            "SKIPPED: {} not found",
            sigma.join("regression_data").display()
        );
        return;
    }
    let folders: Vec<PathBuf> = ["rules", "rules-emerging-threats", "rules-threat-hunting"]
        .iter()
        .map(|f| sigma.join(f))
        .collect();
    let (rules, errors) = load_rules(&folders).unwrap();
    println!("{} rules compiled, {} did not", rules.len(), errors.len());
    for error in &errors {
        println!("  {}", error.kind);
    }

    let mut infos = Vec::new();
    info_files(&sigma.join("regression_data"), &mut infos);
    infos.sort();

    let (mut passed, mut cases) = (0, 0);
    let mut not_compiled = Vec::new();
    let mut wrong = Vec::new();
    let mut more = Vec::new();
    for info_path in &infos {
        let info: Info = serde_yaml::from_str(&std::fs::read_to_string(info_path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", info_path.display()));
        let rule_id = &info.rule_metadata[0].id;
        for test in info
            .regression_tests_info
            .iter()
            .filter(|t| t.kind == "evtx")
        {
            cases += 1;
            let json = sigma.join(Path::new(&test.path).with_extension("json"));
            if let Some(error) = errors
                .iter()
                .find(|e| e.rule_id.as_deref() == Some(rule_id.as_str()))
            {
                not_compiled.push(format!("{rule_id}: {error}"));
                continue;
            }
            assert!(
                rules.rules().any(|r| &r.id == rule_id),
                "{}: rule {rule_id} is in no SigmaHQ rule file",
                info_path.display()
            );
            let input = BufReader::new(File::open(&json).unwrap());
            let mut count = 0;
            detect_events(&rules, input, |m| {
                if &m.rule_id == rule_id {
                    count += 1;
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("{}: {e}", json.display()));
            let expected = test.match_count.unwrap_or(1);
            if count > expected && test.match_count.is_some() {
                more.push(format!(
                    "{}: rule {rule_id} matched {count} time(s), match_count {expected}",
                    json.display()
                ));
            }
            if count >= expected {
                passed += 1;
            } else {
                wrong.push(format!(
                    "{}: rule {rule_id} matched {count} time(s), expected at least {expected}",
                    json.display()
                ));
            }
        }
    }
    println!("regression: {passed} of {cases} cases pass");
    for line in &not_compiled {
        println!("rule does not compile: {line}");
    }
    for line in &more {
        println!("more than expected (upstream: warning): {line}");
    }
    for line in &wrong {
        println!("WRONG COUNT: {line}");
    }
    assert!(
        cases > 0,
        "no regression case found under {}",
        sigma.display()
    );
    assert!(
        wrong.is_empty(),
        "{} case(s) give a wrong count",
        wrong.len()
    );
}
