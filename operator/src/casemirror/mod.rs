//! Mirroring Case resources into the case store, through the cases stage's HTTP API.
//!
//! The direction rules (docs/operator.md, "Case mirroring"): a Case resource creates its
//! case in the store and, each time its spec changes (a new generation), writes the fields
//! it declares over the store's; the store's state (id, status, alert and observable
//! counts, update time) is reported back in the Case's status. Cases opened in the store
//! (by the pipeline or by analysts) are never turned into Case resources: git is the
//! source of truth for what it declares, and only for that.
//!
//! A store case carries a key tag naming its Case (`kastell.eu/case=<namespace>/<name>`,
//! [`key_tag`]): a Case without `status.caseId` (restored from a backup without status,
//! re-created after a deletion) finds its case by it instead of opening a second one.
//!
//! This module holds the pure part (what to send for a spec and a stored case) and the
//! client; the controller in `controller/case.rs` strings them together.

pub(crate) mod client;

pub use client::{CasesClient, ClientError, StoreCase};

use kastell_crds::common::{Severity, Tlp};
use kastell_crds::{CaseResolution, CaseSpec, CaseState, Pap};
use serde_json::{json, Map, Value};
use sha2::Digest as _;

/// The tag's prefix; what follows names the Case.
pub const KEY_TAG_PREFIX: &str = "kastell.eu/case=";
/// The cases API's longest tag.
const MAX_TAG: usize = 128;

/// The tag that ties a store case to the Case `namespace/name`. The namespace and name
/// rather than the UID: a Case restored from a backup is a new object with a new UID, and
/// it is the same case. A pair too long for a tag is named by its SHA-256 instead.
pub fn key_tag(namespace: &str, name: &str) -> String {
    let tag = format!("{KEY_TAG_PREFIX}{namespace}/{name}");
    if tag.len() <= MAX_TAG {
        return tag;
    }
    let digest = sha2::Sha256::digest(format!("{namespace}/{name}").as_bytes());
    format!("{KEY_TAG_PREFIX}sha256:{}", hex::encode(digest))
}

/// The cases API's name of a severity (its `Level`).
pub fn severity(severity: Severity) -> &'static str {
    severity.as_str()
}

/// The cases API's TLP: TLP 2.0 names, with TLP 1.0's `white` read as `clear`.
pub fn tlp(tlp: Tlp) -> &'static str {
    match tlp {
        Tlp::Clear | Tlp::White => "clear",
        Tlp::Green => "green",
        Tlp::Amber => "amber",
        Tlp::AmberStrict => "amber+strict",
        Tlp::Red => "red",
    }
}

/// The cases API keeps PAP on the TLP scale.
pub fn pap(pap: Pap) -> &'static str {
    match pap {
        Pap::Clear | Pap::White => "clear",
        Pap::Green => "green",
        Pap::Amber => "amber",
        Pap::Red => "red",
    }
}

/// The cases API's name of a case status.
pub fn status(state: CaseState) -> &'static str {
    match state {
        CaseState::Open => "open",
        CaseState::InProgress => "in_progress",
        CaseState::Closed => "closed",
    }
}

/// The cases API's name of a resolution.
pub fn resolution(resolution: CaseResolution) -> &'static str {
    match resolution {
        CaseResolution::TruePositive => "true_positive",
        CaseResolution::FalsePositive => "false_positive",
        CaseResolution::Benign => "benign",
        CaseResolution::Duplicate => "duplicate",
    }
}

/// A spec that cannot be written to the store as it stands: the field and the reason.
pub fn check(spec: &CaseSpec) -> Result<(), String> {
    if spec.status == CaseState::Closed {
        if spec.resolution.is_none() {
            return Err("spec.resolution: required when spec.status is closed".into());
        }
        if spec.summary.as_deref().is_none_or(|s| s.trim().is_empty()) {
            return Err("spec.summary: required when spec.status is closed".into());
        }
    }
    Ok(())
}

/// The body of `POST /api/v1/cases` for a Case, tagged with its `key` ([`key_tag`]). The
/// status is not part of it: a case is opened `open`, and [`plan`] moves it on.
pub fn create_body(spec: &CaseSpec, key: &str) -> Value {
    let mut body = json!({
        "title": spec.title,
        "severity": severity(spec.severity),
        "tlp": tlp(spec.tlp),
        "pap": pap(spec.pap),
    });
    let fields = body.as_object_mut().expect("built as an object");
    if let Some(description) = &spec.description {
        fields.insert("description".into(), json!(description));
    }
    fields.insert("tags".into(), json!(with_key(&spec.tags, key)));
    if let Some(assignee) = &spec.assignee {
        fields.insert("assignee".into(), json!(assignee));
    }
    body
}

/// `tags` followed by `key`, once.
fn with_key(tags: &[String], key: &str) -> Vec<String> {
    let mut all: Vec<String> = tags.iter().filter(|t| *t != key).cloned().collect();
    all.push(key.to_owned());
    all
}

/// What to send so that the stored case holds what the spec declares.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// The body of `PATCH /api/v1/cases/{id}`: only the fields that differ; empty when
    /// none do.
    pub update: Map<String, Value>,
    /// The body of `POST /api/v1/cases/{id}/close`, when the spec closes an open case.
    pub close: Option<Value>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.update.is_empty() && self.close.is_none()
    }
}

/// Compares what a spec declares with a stored case. A field the spec leaves out
/// (`description`, `assignee`, empty `tags`) is not declared and stays as the store has
/// it; `title`, `severity`, `tlp`, `pap` and `status` are always declared, and so is the
/// `key` tag, put back if an analyst removed it.
pub fn plan(spec: &CaseSpec, stored: &StoreCase, key: &str) -> Plan {
    let mut update = Map::new();
    let mut differs = |field: &str, wanted: Value, current: Value| {
        if wanted != current {
            update.insert(field.into(), wanted);
        }
    };
    differs("title", json!(spec.title), json!(stored.title));
    differs(
        "severity",
        json!(severity(spec.severity)),
        json!(stored.severity),
    );
    differs("tlp", json!(tlp(spec.tlp)), json!(stored.tlp));
    differs("pap", json!(pap(spec.pap)), json!(stored.pap));
    if let Some(description) = &spec.description {
        differs("description", json!(description), json!(stored.description));
    }
    if let Some(assignee) = &spec.assignee {
        // The API reads "" as "unassigned", and answers null for it.
        differs(
            "assignee",
            json!(assignee),
            json!(stored.assignee.clone().unwrap_or_default()),
        );
    }
    if !spec.tags.is_empty() {
        let mut wanted = with_key(&spec.tags, key);
        wanted.sort();
        wanted.dedup();
        let mut current = stored.tags.clone();
        current.sort();
        if wanted != current {
            update.insert("tags".into(), json!(with_key(&spec.tags, key)));
        }
    } else if !stored.tags.iter().any(|t| t == key) {
        update.insert("tags".into(), json!(with_key(&stored.tags, key)));
    }

    let mut close = None;
    match spec.status {
        CaseState::Closed if stored.status != "closed" => {
            close = Some(json!({
                "resolution": spec.resolution.map(resolution),
                "summary": spec.summary,
            }));
        }
        CaseState::Closed => {}
        // PATCH takes open and in_progress, which also reopens a closed case.
        open => {
            if stored.status != status(open) {
                update.insert("status".into(), json!(status(open)));
            }
        }
    }
    Plan { update, close }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> CaseSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn stored(value: Value) -> StoreCase {
        let mut base = json!({
            "id": 7, "title": "Phishing wave against finance", "severity": "high",
            "status": "open", "tlp": "amber", "pap": "amber", "description": "",
            "assignee": null, "tags": [], "alert_count": 0,
            "updated_at": "2026-12-04T21:00:00Z"
        });
        for (k, v) in value.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).unwrap()
    }

    const PHISHING: &str = "title: Phishing wave against finance\nseverity: high\n";
    const KEY: &str = "kastell.eu/case=soc/phishing-wave";

    #[test]
    fn the_create_body_carries_only_what_the_spec_declares() {
        let body = create_body(&spec(PHISHING), KEY);
        assert_eq!(
            body,
            json!({"title": "Phishing wave against finance", "severity": "high",
                   "tlp": "amber", "pap": "amber", "tags": [KEY]})
        );
        let full = create_body(
            &spec(
                "title: t\nseverity: critical\ntlp: white\npap: red\ndescription: d\n\
                 assignee: carol\ntags: [phishing, finance]\n",
            ),
            KEY,
        );
        assert_eq!(
            full,
            json!({"title": "t", "severity": "critical", "tlp": "clear", "pap": "red",
                   "description": "d", "assignee": "carol",
                   "tags": ["phishing", "finance", KEY]})
        );
    }

    #[test]
    fn an_unchanged_case_needs_nothing_and_undeclared_fields_are_left_alone() {
        // An analyst assigned the case and tagged it: the spec declares neither.
        let plan = plan(
            &spec(PHISHING),
            &stored(json!({"assignee": "dave", "tags": ["lab", KEY], "description": "notes"})),
            KEY,
        );
        assert!(plan.is_empty(), "{plan:?}");
    }

    #[test]
    fn declared_fields_that_differ_are_patched() {
        let spec = spec(
            "title: Phishing wave against finance\nseverity: critical\nstatus: in-progress\n\
             assignee: carol\ntags: [phishing]\ntlp: green\n",
        );
        let plan = plan(
            &spec,
            &stored(json!({"assignee": "dave", "tags": ["lab", KEY]})),
            KEY,
        );
        assert_eq!(
            Value::Object(plan.update),
            json!({"severity": "critical", "status": "in_progress", "assignee": "carol",
                   "tags": ["phishing", KEY], "tlp": "green"})
        );
        assert_eq!(plan.close, None);
    }

    #[test]
    fn tags_compare_as_sets() {
        let spec = spec("title: Phishing wave against finance\nseverity: high\ntags: [b, a, a]\n");
        assert!(plan(&spec, &stored(json!({"tags": ["a", KEY, "b"]})), KEY).is_empty());
    }

    #[test]
    fn the_key_tag_is_put_back_and_long_names_are_hashed() {
        // An analyst removed the key tag; the spec declares no tags: only the key returns.
        let plan = plan(&spec(PHISHING), &stored(json!({"tags": ["lab"]})), KEY);
        assert_eq!(Value::Object(plan.update), json!({"tags": ["lab", KEY]}));

        assert_eq!(key_tag("soc", "phishing-wave"), KEY);
        let long = key_tag("soc", &"x".repeat(200));
        assert!(long.len() <= MAX_TAG, "{long}");
        assert!(long.starts_with("kastell.eu/case=sha256:"), "{long}");
        assert_ne!(long, key_tag("soc", &"x".repeat(201)));
    }

    #[test]
    fn closing_needs_a_resolution_and_a_summary_and_reopening_is_a_patch() {
        let closed = spec(
            "title: Phishing wave against finance\nseverity: high\nstatus: closed\n\
             resolution: false-positive\nsummary: a simulation\n",
        );
        assert_eq!(check(&closed), Ok(()));
        let plan_close = plan(&closed, &stored(json!({"tags": [KEY]})), KEY);
        assert!(plan_close.update.is_empty());
        assert_eq!(
            plan_close.close,
            Some(json!({"resolution": "false_positive", "summary": "a simulation"}))
        );
        let closed_case = stored(json!({"status": "closed", "tags": [KEY]}));
        assert!(plan(&closed, &closed_case, KEY).is_empty());

        let reopened = plan(&spec(PHISHING), &closed_case, KEY);
        assert_eq!(Value::Object(reopened.update), json!({"status": "open"}));

        let unresolved = spec("title: t\nseverity: low\nstatus: closed\n");
        assert_eq!(
            check(&unresolved),
            Err("spec.resolution: required when spec.status is closed".into())
        );
        let unsummarised = spec("title: t\nseverity: low\nstatus: closed\nresolution: benign\n");
        assert!(check(&unsummarised)
            .unwrap_err()
            .starts_with("spec.summary"));
    }
}
