//! A stage's compiled configuration: the YAML of the resources it runs, one ConfigMap key
//! per resource, and the content hash that rolls the stage when it changes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use sha2::{Digest, Sha256};

use super::{stage_metadata, BuildInput, Stage};

/// The pod-template annotation holding [`bundle_hash`]: a new value rolls the Deployment.
pub const CONFIG_HASH_ANNOTATION: &str = "kastell.eu/config-hash";

/// The start of a DetectionRule's key in a bundle, `DetectionRule.<name>.yaml`.
pub const RULE_KEY_PREFIX: &str = "DetectionRule.";

/// One resource in a bundle, already validated by the stage's own compiler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleEntry {
    /// The ConfigMap key, `<Kind>.<name>.yaml`.
    pub key: String,
    pub yaml: String,
}

/// The configuration one stage loads, keyed by ConfigMap key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bundle {
    pub entries: BTreeMap<String, String>,
}

impl Bundle {
    pub fn insert(&mut self, entry: BundleEntry) {
        self.entries.insert(entry.key, entry.yaml);
    }
}

/// SHA-256 over the keys and values in key order; lengths are hashed too so that moving
/// bytes between a key and its value changes the hash.
pub fn bundle_hash(bundle: &Bundle) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in &bundle.entries {
        hasher.update((key.len() as u64).to_be_bytes());
        hasher.update(key.as_bytes());
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value.as_bytes());
    }
    hex::encode(hasher.finalize())
}

pub(super) fn config_map(input: &BuildInput, stage: Stage, bundle: &Bundle) -> ConfigMap {
    let mut metadata = stage_metadata(input, stage);
    metadata.name = Some(config_map_name(input, stage));
    metadata.annotations = Some(BTreeMap::from([(
        CONFIG_HASH_ANNOTATION.to_owned(),
        bundle_hash(bundle),
    )]));
    ConfigMap {
        metadata,
        data: Some(bundle.entries.clone()),
        ..ConfigMap::default()
    }
}

/// `<platform>-<stage>-config`.
pub fn config_map_name(input: &BuildInput, stage: Stage) -> String {
    format!(
        "{}-config",
        super::stage_object_name(&super::platform_name(input), stage)
    )
}
