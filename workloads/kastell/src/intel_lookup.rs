//! The respond stage's `enrich` steps looking observables up in the intel store the
//! enrich stage loaded from the IntelFeed resources: the adapter between the two crates,
//! which know nothing of each other.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use kastell_core::ObservableKind;
use kastell_enrich::IndicatorStore;
use kastell_respond::IntelLookup;
use serde_json::{json, Value};

/// [`IntelLookup`] over the loaded indicators: the set current at each lookup, so that
/// refreshed feeds reach the respond stage's steps too.
pub struct IndicatorLookup(pub Arc<ArcSwap<IndicatorStore>>);

impl IndicatorLookup {
    /// A lookup over a set that does not change.
    pub fn fixed(store: Arc<IndicatorStore>) -> Self {
        IndicatorLookup(Arc::new(ArcSwap::new(store)))
    }
}

#[async_trait]
impl IntelLookup for IndicatorLookup {
    async fn lookup(&self, kind: &str, value: &str) -> Result<Vec<Value>, String> {
        let kind: ObservableKind = serde_json::from_value(json!(kind)).map_err(|_| {
            format!(
                "observable type {kind:?} is not one of ip, domain, url, md5, sha1, sha256, \
                 sha512, email, filename"
            )
        })?;
        Ok(self
            .0
            .load()
            .lookup_value(kind, value)
            .into_iter()
            .map(|indicator| {
                json!({
                    "feed": indicator.feed(),
                    "indicator": indicator.describe(),
                    "level": indicator.level().as_str(),
                    "tags": indicator.all_tags(),
                    "tlp": indicator.tlp(),
                    "comment": indicator.comment,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The bundled TweetFeed indicators, loaded as `kastell run` loads them.
    async fn bundled() -> IndicatorLookup {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/soc");
        let setup = crate::setup::prepare(&examples, &[]).await.unwrap();
        IndicatorLookup::fixed(setup.indicators)
    }

    #[tokio::test]
    async fn finds_a_bundled_indicator_and_nothing_for_an_unknown_value() {
        let lookup = bundled().await;
        // The IcedID domain of the Suricata example, listed by TweetFeed.
        let hits = lookup.lookup("domain", "vgiragdoffy.com").await.unwrap();
        assert!(!hits.is_empty());
        assert!(
            hits[0]["feed"].as_str().unwrap().contains("tweetfeed"),
            "{hits:?}"
        );
        assert!(lookup
            .lookup("domain", "example.org")
            .await
            .unwrap()
            .is_empty());
        let error = lookup.lookup("mutex", "x").await.unwrap_err();
        assert!(error.contains("mutex"), "{error}");
    }
}
