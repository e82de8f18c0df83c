//! Partitioning of a topic so that every message of one correlation group reaches the same
//! replica of a stage.
//!
//! A correlation rule counts or orders events that share the values of its `group-by`
//! fields. When several replicas share the events, the events of one group must all land
//! on the same replica or its window sees only part of them. The events are therefore
//! published to `<subject>.p<N>`, where `N` is a stable hash of the partition key modulo
//! the number of partitions, and each replica consumes a fixed set of partitions.
//!
//! The key is built from the fields every correlation rule groups by (the intersection of
//! their `group-by` lists): two events in the same group of any rule agree on those fields,
//! so they get the same key. Rules with no common field leave the key empty, and every
//! event then goes to partition 0: correct, but not spread. See docs/cluster.md.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::event::Event;

/// One of a topic's partitions: `index` in `0..count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Partition {
    pub index: u32,
    pub count: u32,
}

impl Partition {
    /// The whole topic as one partition, which every bus supports.
    pub const WHOLE: Partition = Partition { index: 0, count: 1 };

    /// The partition `key` falls into when the topic has `count` partitions (at least 1).
    pub fn of_key(key: &str, count: u32) -> Partition {
        let count = count.max(1);
        Partition {
            index: stable_hash(key) % count,
            count,
        }
    }

    /// The subject of this partition under the topic's subject.
    pub fn subject(self, topic_subject: &str) -> String {
        format!("{topic_subject}.p{}", self.index)
    }

    /// The partitions replica `replica` of `replicas` consumes: every `replicas`-th one,
    /// so that together the replicas cover each partition exactly once.
    pub fn assigned(count: u32, replica: u32, replicas: u32) -> Vec<Partition> {
        let replicas = replicas.max(1);
        (0..count.max(1))
            .filter(|index| index % replicas == replica % replicas)
            .map(|index| Partition {
                index,
                count: count.max(1),
            })
            .collect()
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}/{}", self.index, self.count)
    }
}

/// A hash that every process and every release computes alike, unlike std's `Hasher`s
/// whose output may change between Rust versions. SHA-256 is already a dependency; its
/// cost is small next to decoding an event.
fn stable_hash(key: &str) -> u32 {
    let digest = Sha256::digest(key.as_bytes());
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// Derives the partition key of an event from the correlation rules' `group-by` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionKey {
    fields: Vec<String>,
}

impl PartitionKey {
    /// The fields common to every rule's `group-by` list (event field paths), in a fixed
    /// order. No rules, or rules sharing no field, give an empty key.
    pub fn from_group_bys<'a, I, G>(group_bys: I) -> PartitionKey
    where
        I: IntoIterator<Item = G>,
        G: IntoIterator<Item = &'a str>,
    {
        let mut common: Option<BTreeSet<&str>> = None;
        for group_by in group_bys {
            let fields: BTreeSet<&str> = group_by.into_iter().collect();
            common = Some(match common {
                Some(common) => common.intersection(&fields).copied().collect(),
                None => fields,
            });
        }
        PartitionKey {
            fields: common
                .unwrap_or_default()
                .into_iter()
                .map(str::to_owned)
                .collect(),
        }
    }

    /// The fields the key is built from.
    pub fn fields(&self) -> &[String] {
        &self.fields
    }

    /// The event's key: the values of the key fields, each as JSON so that a missing field
    /// (`null`), the string "1" and the number 1 stay distinct. `None` when the key has no
    /// fields.
    pub fn of(&self, event: &Event) -> Option<String> {
        if self.fields.is_empty() {
            return None;
        }
        let values: Vec<String> = self
            .fields
            .iter()
            .map(|field| event.get(field).unwrap_or(&Value::Null).to_string())
            .collect();
        Some(values.join("\u{1f}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(value: Value) -> Event {
        Event::from_value(value).expect("an object")
    }

    #[test]
    fn the_key_uses_the_fields_every_rule_groups_by() {
        let key = PartitionKey::from_group_bys([
            vec!["source.ip", "user.name"],
            vec!["user.name", "source.ip", "host.name"],
        ]);
        assert_eq!(key.fields(), ["source.ip", "user.name"]);
    }

    #[test]
    fn rules_without_a_common_field_give_no_key() {
        let key = PartitionKey::from_group_bys([vec!["source.ip"], vec!["user.name"]]);
        assert!(key.fields().is_empty());
        assert_eq!(key.of(&event(json!({"source": {"ip": "10.0.0.1"}}))), None);
        let none: [Vec<&str>; 0] = [];
        assert!(PartitionKey::from_group_bys(none).fields().is_empty());
    }

    #[test]
    fn events_of_one_group_share_a_key_and_other_groups_differ() {
        let key = PartitionKey::from_group_bys([vec!["source.ip", "user.name"]]);
        let a = event(json!({"source": {"ip": "10.0.0.1"}, "user": {"name": "root"}, "x": 1}));
        let b = event(json!({"source": {"ip": "10.0.0.1"}, "user": {"name": "root"}, "x": 2}));
        let c = event(json!({"source": {"ip": "10.0.0.2"}, "user": {"name": "root"}}));
        assert_eq!(key.of(&a), key.of(&b));
        assert_ne!(key.of(&a), key.of(&c));
    }

    #[test]
    fn a_missing_field_and_a_string_differ_from_other_values() {
        let key = PartitionKey::from_group_bys([vec!["user.id"]]);
        let number = key.of(&event(json!({"user": {"id": 1}})));
        let text = key.of(&event(json!({"user": {"id": "1"}})));
        let missing = key.of(&event(json!({})));
        assert_ne!(number, text);
        assert_ne!(number, missing);
        assert_eq!(missing.as_deref(), Some("null"));
    }

    #[test]
    fn the_partition_of_a_key_is_stable_and_in_range() {
        // Fixed expectations: a change of hash would move groups between replicas during a
        // rolling upgrade, so it must be deliberate.
        assert_eq!(Partition::of_key("alice", 8), Partition::of_key("alice", 8));
        for count in [1, 2, 3, 8, 64] {
            for key in ["", "alice", "10.0.0.1\u{1f}root", "ünïcode"] {
                assert!(Partition::of_key(key, count).index < count);
            }
        }
        assert_eq!(Partition::of_key("anything", 0), Partition::WHOLE);
        assert_eq!(stable_hash("alice"), 0x2bd8_06c9);
    }

    #[test]
    fn keys_spread_over_the_partitions() {
        let mut seen = BTreeSet::new();
        for i in 0..200 {
            seen.insert(Partition::of_key(&format!("10.0.0.{i}"), 4).index);
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![0, 1, 2, 3]);
    }

    #[test]
    fn replicas_cover_every_partition_exactly_once() {
        for replicas in 1..=5 {
            let mut all: Vec<u32> = (0..replicas)
                .flat_map(|r| Partition::assigned(8, r, replicas))
                .map(|p| p.index)
                .collect();
            all.sort_unstable();
            assert_eq!(all, (0..8).collect::<Vec<_>>(), "{replicas} replicas");
        }
    }

    #[test]
    fn a_partition_subject_extends_the_topic_subject() {
        let p = Partition { index: 3, count: 8 };
        assert_eq!(p.subject("kastell.events"), "kastell.events.p3");
        assert_eq!(p.to_string(), "p3/8");
    }
}
