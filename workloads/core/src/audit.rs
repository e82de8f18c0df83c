//! The tamper-evident audit log: every change to the case store appended, in the change's
//! own transaction, as an entry that holds the hash of the entry before it.
//!
//! An entry's hash is the SHA-256 (lower-case hex) of its canonical serialisation: the
//! JSON object `{"action", "actor", "after", "at", "before", "object_id", "object_kind",
//! "prev_hash", "seq"}` written by [`canonical_json`] (keys sorted by their UTF-8 bytes at
//! every depth, no whitespace, strings escaped as serde_json escapes them), where
//! `before` and `after` are the SHA-256 hex digests of the canonical serialisation of the
//! object's state (or `null` when there is none). Hashing digests rather than the states
//! lets a GDPR erasure blank a state holding personal data while the chain still
//! verifies. The first entry's `prev_hash` is [`GENESIS`]. `docs/cases-api.md` ("Audit
//! log") documents the same rules for auditors who verify with their own tools.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The `prev_hash` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Who changed the store when no person did: the pipeline's own writes.
pub const SYSTEM_ACTOR: &str = "system:kastell";

/// One change, as the store appends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// 1, 2, 3… with no gaps.
    pub seq: i64,
    /// RFC 3339 UTC time of the change, as stored.
    pub at: String,
    pub actor: String,
    /// What happened: `alert.create`, `case.update`, `action.decide`, …
    pub action: String,
    pub object_kind: String,
    pub object_id: String,
    /// The object's state before the change; `None` for a creation, or once erased.
    pub before: Option<Value>,
    /// The object's state after the change; `None` for a deletion, or once erased.
    pub after: Option<Value>,
    pub before_digest: Option<String>,
    pub after_digest: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// The digest the chain holds for an object's state.
pub fn digest(state: &Value) -> String {
    hex::encode(Sha256::digest(canonical_json(state).as_bytes()))
}

impl AuditEntry {
    /// The hash this entry's content gives, whatever its stored `hash` says.
    pub fn computed_hash(&self) -> String {
        let content = serde_json::json!({
            "action": self.action,
            "actor": self.actor,
            "after": self.after_digest,
            "at": self.at,
            "before": self.before_digest,
            "object_id": self.object_id,
            "object_kind": self.object_kind,
            "prev_hash": self.prev_hash,
            "seq": self.seq,
        });
        hex::encode(Sha256::digest(canonical_json(&content).as_bytes()))
    }
}

/// A change about to be appended: the store fills in `seq`, `at` and the hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub actor: String,
    pub action: &'static str,
    pub object_kind: &'static str,
    pub object_id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// The canonical text of a JSON value: object keys sorted by bytes at every depth, no
/// insignificant whitespace. serde_json's own map order depends on a cargo feature any
/// crate in the build may switch on (`preserve_order`), so the order is fixed here.
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// What `kastell audit verify` found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Every entry hashes to its stored hash and links to the one before it.
    Intact { entries: i64 },
    /// The entry's content no longer gives its stored hash.
    Altered { seq: i64 },
    /// The sequence skips this number: the entry was deleted.
    Removed { seq: i64 },
    /// The entry links to another entry than the one stored before it: entries were
    /// moved.
    Reordered { seq: i64 },
    /// The entry links to a hash no stored entry has: the entry before it was rewritten
    /// with a recomputed hash, or entries between them were removed and renumbered.
    Unlinked { seq: i64 },
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verdict::Intact { entries } => write!(f, "audit chain intact: {entries} entries"),
            Verdict::Altered { seq } => write!(
                f,
                "entry {seq} was altered: its content does not give its stored hash"
            ),
            Verdict::Removed { seq } => write!(f, "entry {seq} was removed"),
            Verdict::Reordered { seq } => write!(
                f,
                "entry {seq} was reordered: it links to another entry than the one before it"
            ),
            Verdict::Unlinked { seq } => write!(
                f,
                "the entry before {seq} was rewritten (or entries before {seq} removed and \
                 renumbered): entry {seq} links to a hash no stored entry has"
            ),
        }
    }
}

/// A state still present must give its digest; an erased one (absent, digest kept) is
/// accepted, because erasure is itself an audited change.
fn states_match_digests(entry: &AuditEntry) -> bool {
    let matches = |state: &Option<Value>, recorded: &Option<String>| match (state, recorded) {
        (Some(state), Some(recorded)) => digest(state) == *recorded,
        (Some(_), None) => false,
        (None, _) => true,
    };
    matches(&entry.before, &entry.before_digest) && matches(&entry.after, &entry.after_digest)
}

/// Walks a whole chain, in `seq` order, and names the first entry that breaks it.
pub fn verify(entries: &[AuditEntry]) -> Verdict {
    let known: std::collections::HashSet<&str> =
        entries.iter().map(|entry| entry.hash.as_str()).collect();
    let mut expected_seq = 1;
    let mut prev_hash = GENESIS;
    for entry in entries {
        if entry.seq != expected_seq {
            return Verdict::Removed { seq: expected_seq };
        }
        if entry.prev_hash != prev_hash {
            return if entry.prev_hash == GENESIS || known.contains(entry.prev_hash.as_str()) {
                Verdict::Reordered { seq: entry.seq }
            } else {
                Verdict::Unlinked { seq: entry.seq }
            };
        }
        if entry.computed_hash() != entry.hash || !states_match_digests(entry) {
            return Verdict::Altered { seq: entry.seq };
        }
        prev_hash = &entry.hash;
        expected_seq += 1;
    }
    Verdict::Intact {
        entries: expected_seq - 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let value = json!({"b": 1, "a": {"z": [true, null, "x\"y"], "c": 2.5}});
        assert_eq!(
            canonical_json(&value),
            r#"{"a":{"c":2.5,"z":[true,null,"x\"y"]},"b":1}"#
        );
    }

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let after = json!({"title": format!("t{seq}")});
                let mut entry = AuditEntry {
                    seq,
                    at: "2024-06-01T00:00:00.000000Z".into(),
                    actor: "alice".into(),
                    action: "case.update".into(),
                    object_kind: "case".into(),
                    object_id: seq.to_string(),
                    before: None,
                    before_digest: None,
                    after_digest: Some(digest(&after)),
                    after: Some(after),
                    prev_hash: prev.clone(),
                    hash: String::new(),
                };
                entry.hash = entry.computed_hash();
                prev = entry.hash.clone();
                entry
            })
            .collect()
    }

    #[test]
    fn an_untouched_chain_is_intact() {
        assert_eq!(verify(&chain(4)), Verdict::Intact { entries: 4 });
        assert_eq!(verify(&[]), Verdict::Intact { entries: 0 });
    }

    #[test]
    fn a_rehashed_entry_is_named_through_the_next_link() {
        let mut entries = chain(4);
        entries[1].actor = "mallory".into();
        entries[1].hash = entries[1].computed_hash();
        assert_eq!(verify(&entries), Verdict::Unlinked { seq: 3 });
    }

    #[test]
    fn an_erased_state_verifies_but_an_edited_one_does_not() {
        let mut entries = chain(3);
        entries[0].after = None;
        assert_eq!(verify(&entries), Verdict::Intact { entries: 3 });
        entries[1].after = Some(json!({"title": "edited"}));
        assert_eq!(verify(&entries), Verdict::Altered { seq: 2 });
    }
}
