//! The partition key of the events topic, derived from the loaded correlations, so that
//! every event of one correlation group reaches the same correlate replica.
//!
//! A correlation counts or orders the events of one group: those that agree on its
//! `group-by` values, each read from the event through the referenced rule's aliases and
//! field mapping. The plan keeps the group-by fields that every input of every
//! correlation reads from the same event paths. Two events in one group of any
//! correlation then agree on those fields, so keying the events topic by their values
//! keeps every group on one partition, and each window sees all of its events however
//! many replicas share the topic.
//!
//! The values are read with the same text conversion the windows use (the field's first
//! scalar value), so `1` and `"1"` share a key as they share a group. docs/cluster.md
//! discusses what stays exact and what does not.

use kastell_core::Event;

use crate::matcher::FieldRef;

/// How the events topic is keyed for the correlations of one rule set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionPlan {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// No correlations: no event needs another's company, any partition will do.
    Free,
    /// Key by these fields' values.
    Fields(Vec<FieldRef>),
    /// Correlations exist but share no field read alike by all their inputs: only one
    /// partition keeps their windows whole.
    Single,
}

impl PartitionPlan {
    /// The plan for correlations whose uniform group-by fields are `per_correlation` (one
    /// list per correlation, see `Correlations::uniform_group_fields`).
    pub(crate) fn from_group_fields(per_correlation: Vec<Vec<FieldRef>>) -> Self {
        let mut lists = per_correlation.into_iter();
        let Some(mut common) = lists.next() else {
            return PartitionPlan { kind: Kind::Free };
        };
        for fields in lists {
            common.retain(|field| fields.contains(field));
        }
        common.dedup();
        let kind = if common.is_empty() {
            Kind::Single
        } else {
            Kind::Fields(common)
        };
        PartitionPlan { kind }
    }

    /// The event's partition key. `None` means the event belongs to no correlation group
    /// (there are no correlations, or it lacks a key field every correlation groups by),
    /// so it may go to any partition; the caller then spreads it by its message id.
    pub fn key(&self, event: &Event) -> Option<String> {
        match &self.kind {
            Kind::Free => None,
            Kind::Single => Some(String::new()),
            Kind::Fields(fields) => {
                let mut key = String::new();
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        key.push('\u{1f}');
                    }
                    key.push_str(&field.first_text(event.as_map())?);
                }
                Some(key)
            }
        }
    }

    /// The key's fields, each as the event paths it is read from (`a|b` when a field has
    /// several spellings), for logs and `/metrics` labels.
    pub fn fields(&self) -> Vec<String> {
        match &self.kind {
            Kind::Fields(fields) => fields.iter().map(|f| f.paths.join("|")).collect(),
            Kind::Free | Kind::Single => Vec::new(),
        }
    }

    /// Whether the plan spreads events over several partitions; `false` when the
    /// correlations share no field and everything goes to one partition.
    pub fn spreads(&self) -> bool {
        !matches!(self.kind, Kind::Single)
    }

    /// A short text naming the plan (`by-id`, `single`, `fields:source.ip,user.name`).
    /// The publisher puts it in front of every key, so that a correlate replica can tell
    /// when events were keyed by another plan than its own rules make (an ingest with other
    /// or no DetectionRules), which would split its groups.
    pub fn fingerprint(&self) -> String {
        match &self.kind {
            Kind::Free => "by-id".to_owned(),
            Kind::Single => "single".to_owned(),
            Kind::Fields(_) => format!("fields:{}", self.fields().join(",")),
        }
    }
}
