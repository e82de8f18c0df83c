//! A changed case store (`spec.caseStore.url`) is not migrated: the Case resources keep
//! the ids of cases in the old store, which the new one does not know. The platform
//! records the store its Cases were mirrored to (`status.caseStoreUrl`) and, while Cases
//! still hold ids of another store than the one named now, reports `CaseStoreChanged`
//! with what to do; it records the new store once that is done.

use kastell_crds::SecOpsPlatform;
use kube::ResourceExt;

use crate::conditions::Observed;

/// The condition type; `True` while Cases hold ids of a store that is no longer named.
pub const CONDITION_CASE_STORE_CHANGED: &str = "CaseStoreChanged";
/// Set to the new URL on the platform once the old store's cases were moved into the new
/// one with their ids, so the Cases' ids are valid there.
pub const MIGRATED_ANNOTATION: &str = "kastell.eu/case-store-migrated";

/// The store the namespace's Cases are mirrored into, as the Case controller reaches it:
/// `spec.caseStore.url`, else the platform's cases Service.
pub fn effective_url(platform: &SecOpsPlatform) -> Option<String> {
    let store = platform.spec.case_store.as_ref()?;
    Some(store.url.clone().unwrap_or_else(|| {
        format!(
            "https://{}-cases.{}.svc:8080",
            platform.name_any(),
            platform.namespace().unwrap_or_default()
        )
    }))
}

/// What to record in `status.caseStoreUrl`, and the condition, given how many of the
/// namespace's Cases hold a store case id.
pub fn assess(platform: &SecOpsPlatform, cases_with_ids: usize) -> (Option<String>, Observed) {
    let now = effective_url(platform);
    let recorded = platform
        .status
        .as_ref()
        .and_then(|s| s.case_store_url.clone());
    let migrated = platform.annotations().get(MIGRATED_ANNOTATION);
    match (recorded, now) {
        (Some(old), Some(new)) if old != new && cases_with_ids > 0 && migrated != Some(&new) => {
            let message = format!(
                "spec.caseStore.url changed from {old} to {new}, but {cases_with_ids} Cases \
                 hold case ids of the old store, which the new one does not know (they report \
                 CaseNotInStore). Either move the old store's cases into the new one with \
                 their ids and annotate this platform {MIGRATED_ANNOTATION}={new}, or delete \
                 each Case's status.caseId (kubectl edit --subresource=status case <name>) so \
                 that new cases are opened in the new store"
            );
            (
                Some(old),
                Observed::new(
                    CONDITION_CASE_STORE_CHANGED,
                    true,
                    "CaseIdsOfOldStore",
                    message,
                ),
            )
        }
        (_, Some(new)) => {
            let message = format!("Cases are mirrored to {new}");
            (
                Some(new),
                Observed::new(
                    CONDITION_CASE_STORE_CHANGED,
                    false,
                    "CaseIdsMatchStore",
                    message,
                ),
            )
        }
        (_, None) => (
            None,
            Observed::new(
                CONDITION_CASE_STORE_CHANGED,
                false,
                "NoCaseStore",
                "spec.caseStore is not set: Cases are not mirrored",
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platform(
        case_store: &str,
        recorded: Option<&str>,
        annotation: Option<&str>,
    ) -> SecOpsPlatform {
        let mut platform: SecOpsPlatform = serde_yaml::from_str(&format!(
            "apiVersion: kastell.eu/v1alpha1\nkind: SecOpsPlatform\nmetadata: {{name: soc, \
             namespace: secops}}\nspec:\n  residency: {{jurisdiction: EU}}\n{case_store}"
        ))
        .unwrap();
        if let Some(url) = recorded {
            platform.status = Some(kastell_crds::platform::SecOpsPlatformStatus {
                case_store_url: Some(url.into()),
                ..Default::default()
            });
        }
        if let Some(url) = annotation {
            platform
                .annotations_mut()
                .insert(MIGRATED_ANNOTATION.into(), url.into());
        }
        platform
    }

    const NEW: &str = "  caseStore:\n    url: https://cases.soc.example.eu\n    apiKeySecret: \
                       {name: k, key: key}\n";
    const DEFAULT: &str = "  caseStore:\n    apiKeySecret: {name: k, key: key}\n";
    const OLD_URL: &str = "https://soc-cases.secops.svc:8080";

    #[test]
    fn a_new_store_with_cases_of_the_old_one_is_reported_until_resolved() {
        // First sight: the default Service is recorded.
        let (recorded, condition) = assess(&platform(DEFAULT, None, None), 3);
        assert_eq!(recorded.as_deref(), Some(OLD_URL));
        assert_eq!(condition.status, "False");

        // The URL changed while 3 Cases hold ids: reported, the old store kept on record.
        let changed = platform(NEW, Some(OLD_URL), None);
        let (recorded, condition) = assess(&changed, 3);
        assert_eq!(recorded.as_deref(), Some(OLD_URL));
        assert_eq!(condition.status, "True");
        assert_eq!(condition.reason, "CaseIdsOfOldStore");
        assert!(condition.message.contains(OLD_URL), "{}", condition.message);
        assert!(
            condition.message.contains("3 Cases"),
            "{}",
            condition.message
        );
        assert!(
            condition.message.contains(MIGRATED_ANNOTATION),
            "{}",
            condition.message
        );

        // Resolved by clearing the ids, or by saying the data moved.
        let (recorded, condition) = assess(&changed, 0);
        assert_eq!(recorded.as_deref(), Some("https://cases.soc.example.eu"));
        assert_eq!(condition.status, "False");
        let migrated = platform(NEW, Some(OLD_URL), Some("https://cases.soc.example.eu"));
        assert_eq!(assess(&migrated, 3).1.status, "False");
        // An annotation naming another URL does not count.
        let stale = platform(NEW, Some(OLD_URL), Some(OLD_URL));
        assert_eq!(assess(&stale, 3).1.status, "True");

        // No store named: nothing mirrored, nothing recorded.
        let (recorded, condition) = assess(&platform("", Some(OLD_URL), None), 3);
        assert_eq!(recorded, None);
        assert_eq!(condition.reason, "NoCaseStore");
    }
}
