//! Ingest counters: records in, events published, records rejected by reason. Shared by
//! every source of a stage, read by `kastell run`'s summary and, later, the metrics
//! endpoint.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::error::RejectReason;
use crate::transport::TransportReject;

/// Lock-free counters; one instance per ingest stage, shared by reference.
#[derive(Debug, Default)]
pub struct IngestStats {
    events_in: AtomicU64,
    events_published: AtomicU64,
    rejected: [AtomicU64; RejectReason::ALL.len()],
    /// Records a transport refused before any parser saw them (a cut frame, a bad
    /// `_bulk` action line, …).
    transport_rejected: [AtomicU64; TransportReject::ALL.len()],
}

/// A point-in-time copy of [`IngestStats`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Non-blank records read.
    pub events_in: u64,
    pub events_published: u64,
    pub events_rejected: u64,
    /// Only the reasons that occurred, by label.
    pub rejected_by_reason: BTreeMap<&'static str, u64>,
}

impl IngestStats {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn events_in(&self) -> u64 {
        self.events_in.load(Ordering::Relaxed)
    }

    pub fn events_published(&self) -> u64 {
        self.events_published.load(Ordering::Relaxed)
    }

    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected[reason.index()].load(Ordering::Relaxed)
    }

    pub fn transport_rejected(&self, reason: TransportReject) -> u64 {
        self.transport_rejected[reason.index()].load(Ordering::Relaxed)
    }

    /// Records rejected by a parser or by a transport.
    pub fn events_rejected(&self) -> u64 {
        let parsed: u64 = RejectReason::ALL.iter().map(|r| self.rejected(*r)).sum();
        let framed: u64 = TransportReject::ALL
            .iter()
            .map(|r| self.transport_rejected(*r))
            .sum();
        parsed + framed
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let parsed = RejectReason::ALL
            .iter()
            .map(|r| (r.as_str(), self.rejected(*r)));
        let framed = TransportReject::ALL
            .iter()
            .map(|r| (r.as_str(), self.transport_rejected(*r)));
        let rejected_by_reason: BTreeMap<_, _> =
            parsed.chain(framed).filter(|(_, n)| *n > 0).collect();
        StatsSnapshot {
            events_in: self.events_in(),
            events_published: self.events_published(),
            events_rejected: rejected_by_reason.values().sum(),
            rejected_by_reason,
        }
    }

    pub(crate) fn record_in(&self) {
        self.events_in.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_published(&self) {
        self.events_published.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_rejected(&self, reason: RejectReason) {
        self.rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn record_transport_rejected(&self, reason: TransportReject) {
        self.transport_rejected[reason.index()].fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_lists_only_reasons_that_occurred() {
        let stats = IngestStats::new();
        for _ in 0..3 {
            stats.record_in();
        }
        stats.record_published();
        stats.record_rejected(RejectReason::InvalidJson);
        stats.record_rejected(RejectReason::InvalidJson);
        stats.record_transport_rejected(TransportReject::TruncatedFrame);
        let snap = stats.snapshot();
        assert_eq!(snap.events_in, 3);
        assert_eq!(snap.events_published, 1);
        assert_eq!(snap.events_rejected, 3);
        assert_eq!(
            snap.rejected_by_reason,
            BTreeMap::from([("invalid_json", 2), ("truncated_frame", 1)])
        );
        assert_eq!(stats.events_rejected(), 3);
    }
}
