use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use kastell_correlate::{RuleDocument, RuleSet};
use kastell_ingest::{parse_line, Format, ParseContext};

fn rule_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() { rule_files(&path, out); } else if path.extension().is_some_and(|e| e == "yml") { out.push(path); }
    }
}

#[test]
fn explore() {
    let sigma = Path::new("/work/shared/corpora/sigma");
    let mut files = Vec::new();
    for f in ["rules", "rules-emerging-threats", "rules-threat-hunting"] { rule_files(&sigma.join(f), &mut files); }
    let docs = files.iter().map(|f| RuleDocument::new(f.strip_prefix(sigma).unwrap().display().to_string(), std::fs::read_to_string(f).unwrap()));
    let (set, _) = RuleSet::compile(docs);
    let mut hits: BTreeMap<String, (String, Vec<usize>)> = BTreeMap::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/soc/data");
    for (file, format) in [("suricata/eve.json", Format::SuricataEve), ("wazuh/alerts.json", Format::WazuhAlerts), ("FIX", Format::WazuhAlerts)] {
        let path = if file == "FIX" { Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wazuh-eventchannel-alerts.jsonl") } else { root.join(file) };
        let text = std::fs::read_to_string(path).unwrap();
        for (i, line) in text.lines().enumerate() {
            let Ok(event) = parse_line(format, line.as_bytes(), &ParseContext::new("s")) else { continue };
            for r in set.evaluate(&event) {
                hits.entry(format!("{file} ")+&r.source.as_ref().unwrap().resource.clone()).or_insert((r.title.clone(), vec![])).1.push(i + 1);
            }
        }
    }
    for (k, (t, v)) in hits { println!("{k} | {t} | {} | {:?}", v.len(), &v[..v.len().min(10)]); }
}
