//! Turns the admission verdicts of a namespace into the stages' bundles. A refused
//! resource keeps the entry it had in the bundle that is live now: a rule that stops
//! compiling leaves its previous good version running rather than vanishing.

use std::collections::BTreeMap;

use crate::admission::Verdict;
use crate::build::{Bundle, BundleEntry, Stage, RULE_KEY_PREFIX};

/// The bundles to apply, from the platform's own entry (every stage reads the platform),
/// the verdicts, and the bundles in the live ConfigMaps.
pub fn bundles(
    platform: &BundleEntry,
    verdicts: &[Verdict],
    live: &BTreeMap<Stage, Bundle>,
) -> BTreeMap<Stage, Bundle> {
    let mut bundles: BTreeMap<Stage, Bundle> = Stage::ALL
        .into_iter()
        .map(|stage| {
            let mut bundle = Bundle::default();
            bundle.insert(platform.clone());
            (stage, bundle)
        })
        .collect();
    for verdict in verdicts {
        let entry = match &verdict.outcome {
            Ok(entry) => Some(entry.clone()),
            Err(_) => live
                .get(&verdict.stage)
                .and_then(|b| b.entries.get(&verdict.key))
                .map(|yaml| BundleEntry {
                    key: verdict.key.clone(),
                    yaml: yaml.clone(),
                }),
        };
        if let (Some(entry), Some(bundle)) = (entry, bundles.get_mut(&verdict.stage)) {
            bundle.insert(entry);
        }
    }
    share_rules_with_ingest(&mut bundles);
    bundles
}

/// Ingest keys every event by the partition plan its DetectionRules make, and a correlate
/// replica counts the events keyed by another plan than its own: so ingest gets exactly
/// the rules correlate runs, the last good version of a refused rule included.
fn share_rules_with_ingest(bundles: &mut BTreeMap<Stage, Bundle>) {
    let rules: Vec<BundleEntry> = bundles
        .get(&Stage::Correlate)
        .map(|b| {
            b.entries
                .iter()
                .filter(|(key, _)| key.starts_with(RULE_KEY_PREFIX))
                .map(|(key, yaml)| BundleEntry {
                    key: key.clone(),
                    yaml: yaml.clone(),
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(ingest) = bundles.get_mut(&Stage::Ingest) {
        for rule in rules {
            ingest.insert(rule);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::Refused;

    fn verdict(key: &str, outcome: Result<&str, &str>) -> Verdict {
        Verdict {
            stage: Stage::Correlate,
            key: key.into(),
            outcome: outcome
                .map(|yaml| BundleEntry {
                    key: key.into(),
                    yaml: yaml.into(),
                })
                .map_err(|m| Refused {
                    reason: "CompileFailed",
                    message: m.into(),
                }),
            rule: None,
        }
    }

    /// The real chained example of the Sigma correlation specification, one DetectionRule
    /// per document, admitted and assembled as the operator does; then each stage's bundle
    /// written out as files and read back the way a stage reads its directory. Ingest must
    /// make the same partition plan as correlate, or correlate replicas split the groups.
    #[test]
    fn ingest_reads_the_same_partition_plan_as_correlate() {
        use crate::admission::Member;
        use kastell_correlate::{RuleDocument, RuleSet};

        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/correlation/failed-logins-then-success.yml"
        );
        let text = std::fs::read_to_string(path).expect("the fixture");
        let rules: Vec<kastell_crds::DetectionRule> = text
            .split("\n---\n")
            .enumerate()
            .map(|(i, sigma)| {
                serde_json::from_value(serde_json::json!({
                    "apiVersion": "kastell.eu/v1alpha1",
                    "kind": "DetectionRule",
                    "metadata": {"name": format!("rule-{i}"), "namespace": "secops"},
                    "spec": {"sigma": sigma},
                }))
                .expect("a DetectionRule")
            })
            .collect();
        let platform = BundleEntry {
            key: "SecOpsPlatform.soc.yaml".into(),
            yaml: "apiVersion: kastell.eu/v1alpha1\nkind: SecOpsPlatform\nmetadata: {name: soc, \
                   namespace: secops}\nspec:\n  residency: {jurisdiction: EU}\n"
                .into(),
        };
        // The whole chain, and without its ordered correlation (document 0): the event
        // count alone groups by `User`, so its plan spreads the events.
        for (members, correlations) in [(&rules[..], 2), (&rules[1..], 1)] {
            let mut verdicts: Vec<Verdict> = members.iter().map(|r| r.admit(None)).collect();
            crate::admission::check_correlations(members, &mut verdicts);
            for verdict in &verdicts {
                assert!(
                    verdict.outcome.is_ok(),
                    "{}: {:?}",
                    verdict.key,
                    verdict.outcome
                );
            }
            let bundles = bundles(&platform, &verdicts, &BTreeMap::new());
            let plan_of = |stage: Stage| {
                let dir = tempfile::tempdir().unwrap();
                for (key, yaml) in &bundles[&stage].entries {
                    std::fs::write(dir.path().join(key), yaml).unwrap();
                }
                let (set, errors) = kastell_crds::load::load_dir(dir.path()).unwrap();
                assert!(errors.is_empty(), "{stage:?}: {errors:?}");
                let documents = set
                    .rules
                    .iter()
                    .map(|rule| RuleDocument::new(rule.key(), rule.object.spec.sigma.clone()));
                let (rules, errors) = RuleSet::compile(documents);
                assert!(errors.is_empty(), "{stage:?}: {errors:?}");
                (rules.correlation_count(), rules.partition_plan())
            };
            let (count, plan) = plan_of(Stage::Correlate);
            assert_eq!(count, correlations);
            let (ingest_count, ingest_plan) = plan_of(Stage::Ingest);
            assert_eq!(ingest_count, count);
            assert_eq!(ingest_plan.fingerprint(), plan.fingerprint());
            if correlations == 1 {
                assert!(plan.spreads(), "{}", plan.fingerprint());
                assert!(
                    plan.fingerprint().starts_with("fields:"),
                    "{}",
                    plan.fingerprint()
                );
            }
        }
    }

    #[test]
    fn refused_resources_keep_their_live_entry_and_new_ones_stay_out() {
        let platform = BundleEntry {
            key: "SecOpsPlatform.soc.yaml".into(),
            yaml: "p".into(),
        };
        let mut live_correlate = Bundle::default();
        live_correlate.insert(BundleEntry {
            key: "DetectionRule.a.yaml".into(),
            yaml: "good a".into(),
        });
        let live = BTreeMap::from([(Stage::Correlate, live_correlate)]);
        let verdicts = [
            verdict("DetectionRule.a.yaml", Err("broken")),
            verdict("DetectionRule.b.yaml", Err("broken")),
            verdict("DetectionRule.c.yaml", Ok("good c")),
        ];
        let bundles = bundles(&platform, &verdicts, &live);
        let correlate = &bundles[&Stage::Correlate].entries;
        assert_eq!(correlate["DetectionRule.a.yaml"], "good a");
        assert!(!correlate.contains_key("DetectionRule.b.yaml"));
        assert_eq!(correlate["DetectionRule.c.yaml"], "good c");
        assert_eq!(correlate["SecOpsPlatform.soc.yaml"], "p");
        // Ingest holds the platform and exactly the rules correlate runs.
        let ingest = &bundles[&Stage::Ingest].entries;
        let keys: Vec<&str> = ingest.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "DetectionRule.a.yaml",
                "DetectionRule.c.yaml",
                "SecOpsPlatform.soc.yaml"
            ]
        );
        assert_eq!(ingest["DetectionRule.a.yaml"], "good a");
    }
}
