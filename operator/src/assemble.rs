//! Turns the admission verdicts of a namespace into the stages' bundles. A refused
//! resource keeps the entry it had in the bundle that is live now: a rule that stops
//! compiling leaves its previous good version running rather than vanishing.

use std::collections::BTreeMap;

use crate::admission::Verdict;
use crate::build::{Bundle, BundleEntry, Stage};

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
    bundles
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
        assert_eq!(bundles[&Stage::Ingest].entries.len(), 1);
    }
}
