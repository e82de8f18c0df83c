//! The ECS form of intel matches: `threat.enrichments` entries written onto matched
//! events, the shape Elastic's indicator match rules produce, so ECS tooling reads them.
//!
//! Each entry is `{indicator: {type, <value field>, provider, ...}, matched: {atomic,
//! field, type: "indicator_match_rule", id?}}`.

use kastell_core::{Event, ObservableKind};
use serde_json::{json, Map, Value};

use crate::store::Hit;

/// ECS's value for `matched.type`: the observable equalled an indicator.
pub const MATCH_TYPE: &str = "indicator_match_rule";

/// The `threat.enrichments` entry for one hit.
pub fn enrichment(hit: &Hit) -> Value {
    let indicator = &hit.indicator;
    let mut fields = Map::new();
    let ecs_type = match indicator.kind {
        ObservableKind::Ip => {
            let v6 = match indicator.network {
                Some(network) => matches!(network, ipnet::IpNet::V6(_)),
                None => indicator.value.contains(':'),
            };
            fields.insert("ip".into(), json!(indicator.value));
            if let Some(port) = indicator.port {
                fields.insert("port".into(), json!(port));
            }
            if v6 {
                "ipv6-addr"
            } else {
                "ipv4-addr"
            }
        }
        ObservableKind::Domain => {
            fields.insert("url".into(), json!({"domain": indicator.value}));
            "domain-name"
        }
        ObservableKind::Url => {
            fields.insert("url".into(), json!({"full": indicator.value}));
            "url"
        }
        kind @ (ObservableKind::Md5
        | ObservableKind::Sha1
        | ObservableKind::Sha256
        | ObservableKind::Sha512) => {
            let mut file = json!({"hash": {kind.as_str(): indicator.value}});
            if let Some(name) = &indicator.filename {
                file["name"] = json!(name);
            }
            fields.insert("file".into(), file);
            "file"
        }
        ObservableKind::Email => {
            fields.insert("email".into(), json!({"address": indicator.value}));
            "email-addr"
        }
        ObservableKind::Filename => {
            fields.insert("file".into(), json!({"name": indicator.value}));
            "file"
        }
    };
    fields.insert("type".into(), json!(ecs_type));
    fields.insert("provider".into(), json!(indicator.feed()));
    if let Some(info) = &indicator.context.info {
        fields.insert("description".into(), json!(info));
    }
    // ECS wants a URL here; MISP feeds often put the source report's URL in the comment.
    if let Some(comment) = &indicator.comment {
        if comment.starts_with("https://") || comment.starts_with("http://") {
            fields.insert("reference".into(), json!(comment));
        }
    }
    if let Some(tlp) = indicator.tlp() {
        fields.insert("marking".into(), json!({"tlp": tlp.to_ascii_uppercase()}));
    }

    let mut matched = json!({
        "atomic": hit.observable.value,
        "field": hit.observable.field,
        "type": MATCH_TYPE,
    });
    if let Some(id) = &indicator.attribute_id {
        matched["id"] = json!(id);
    }
    json!({"indicator": fields, "matched": matched})
}

/// Appends the hits' entries to the event's `threat.enrichments`, keeping entries already
/// there and adding none twice, so enriching a redelivered event changes nothing.
pub fn annotate(event: &mut Event, hits: &[Hit]) {
    if hits.is_empty() {
        return;
    }
    let mut entries = match event.get("threat.enrichments") {
        Some(Value::Array(existing)) => existing.clone(),
        _ => Vec::with_capacity(hits.len()),
    };
    for hit in hits {
        let entry = enrichment(hit);
        if !entries.contains(&entry) {
            entries.push(entry);
        }
    }
    event.set("threat.enrichments", Value::Array(entries));
}
