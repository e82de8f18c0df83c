//! The partitioned events topic as the stage processes use it: ingest keys every event by
//! the correlation rules' partition plan before publishing, and a correlate replica reads
//! only its share of the partitions. docs/cluster.md ("Partitioning for correlation")
//! explains the scheme and what stays exact.

use std::ops::RangeInclusive;
use std::sync::Arc;

use async_trait::async_trait;
use kastell_core::bus::{Partition, PendingPublish};
use kastell_core::{Bus, BusError, Delivery, Event, Message, Subscription, Topic};
use kastell_correlate::PartitionPlan;
use kastell_crds::ResourceSet;
use tokio::sync::mpsc;

/// Partitions of the events topic when neither a flag nor the platform names a number:
/// more than the replicas a small installation runs, so that scaling correlate up to 8
/// needs no re-partitioning.
pub const DEFAULT_EVENT_PARTITIONS: u32 = 8;

/// The events topic's partition count: the flag, else the platform's
/// `spec.bus.eventPartitions`, else [`DEFAULT_EVENT_PARTITIONS`].
pub fn event_partitions(flag: Option<u32>, resources: Option<&ResourceSet>) -> u32 {
    let from_platform = resources
        .and_then(|set| set.platforms.first())
        .and_then(|platform| platform.object.spec.bus.event_partitions);
    flag.or(from_platform)
        .unwrap_or(DEFAULT_EVENT_PARTITIONS)
        .max(1)
}

/// A list of partition indices, as `--partitions` names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionList(pub Vec<u32>);

/// Reads a partition list such as `0-3`, `1,5,7` or `0-1,6`.
pub fn parse_partition_list(text: &str) -> Result<PartitionList, String> {
    let mut indices = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let range: RangeInclusive<u32> = match part.split_once('-') {
            Some((from, to)) => number(from)?..=number(to)?,
            None => {
                let n = number(part)?;
                n..=n
            }
        };
        if range.is_empty() {
            return Err(format!("{part:?} is an empty range"));
        }
        indices.extend(range);
    }
    indices.sort_unstable();
    indices.dedup();
    if indices.is_empty() {
        return Err(format!("{text:?} names no partition"));
    }
    Ok(PartitionList(indices))
}

fn number(text: &str) -> Result<u32, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a partition number"))
}

/// The partitions this correlate replica reads: the explicit list, else replica `index` of
/// `replicas` takes every `replicas`-th partition starting at `index`.
pub fn assigned(
    count: u32,
    explicit: Option<&[u32]>,
    index: u32,
    replicas: u32,
) -> Result<Vec<Partition>, String> {
    if let Some(list) = explicit {
        if let Some(out) = list.iter().find(|&&i| i >= count) {
            return Err(format!(
                "partition {out} does not exist: the events topic has {count} (0-{})",
                count - 1
            ));
        }
        return Ok(list
            .iter()
            .map(|&index| Partition { index, count })
            .collect());
    }
    if index >= replicas.max(1) {
        return Err(format!(
            "replica index {index} is not below the replica count {replicas}"
        ));
    }
    let partitions = Partition::assigned(count, index, replicas);
    if partitions.is_empty() {
        return Err(format!(
            "{replicas} replicas share {count} partitions: replica {index} has none; \
             raise the partition count"
        ));
    }
    Ok(partitions)
}

/// One subscription over several partitions: a task per partition forwards its deliveries,
/// in that partition's order, into one queue. Order across partitions does not matter: no
/// correlation group spans two of them.
pub struct Merged {
    rx: mpsc::Receiver<Delivery>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Merged {
    /// Joins `group` on each of `partitions` of `topic`.
    ///
    /// # Errors
    ///
    /// When the bus refuses one of the subscriptions.
    pub async fn subscribe(
        bus: &dyn Bus,
        topic: Topic,
        group: &str,
        partitions: &[Partition],
    ) -> Result<Self, BusError> {
        let mut subscriptions = Vec::with_capacity(partitions.len());
        for partition in partitions {
            subscriptions.push(bus.subscribe_partition(topic, group, *partition).await?);
        }
        // One slot per partition: a forwarder holds at most one delivery beyond the
        // queue, which comes back after the acknowledgement wait if the process stops.
        let (tx, rx) = mpsc::channel(partitions.len().max(1));
        let tasks = subscriptions
            .into_iter()
            .map(|mut subscription| {
                let tx = tx.clone();
                tokio::spawn(async move {
                    while let Some(delivery) = subscription.next().await {
                        if tx.send(delivery).await.is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        Ok(Merged { rx, tasks })
    }
}

#[async_trait]
impl Subscription for Merged {
    async fn next(&mut self) -> Option<Delivery> {
        self.rx.recv().await
    }
}

impl Drop for Merged {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The bus as ingest publishes on it: every event carries its partition key. The key is
/// the plan's (the values of the correlations' shared `group-by` fields); an event in no
/// correlation group is keyed by its message id, which spreads those events evenly.
///
/// Why re-read the payload here instead of keying inside the ingest crate: the key needs
/// the compiled correlation rules, which belong to the stage process, not to the parsers;
/// and one JSON read per event is small next to the JetStream round trip of its publish.
pub struct Keyed {
    inner: Arc<dyn Bus>,
    plan: PartitionPlan,
}

impl Keyed {
    pub fn new(inner: Arc<dyn Bus>, plan: PartitionPlan) -> Self {
        Keyed { inner, plan }
    }

    /// `<plan fingerprint>` [`PLAN_SEPARATOR`] `<the plan's key, else the message id>`.
    fn key(&self, message: &Message) -> Option<String> {
        let by_plan = message
            .decode::<Event>()
            .ok()
            .and_then(|event| self.plan.key(&event));
        let value = by_plan.or_else(|| message.id.clone())?;
        Some(format!(
            "{}{PLAN_SEPARATOR}{value}",
            self.plan.fingerprint()
        ))
    }
}

/// Between the plan's fingerprint and the key's value in a partition key.
pub const PLAN_SEPARATOR: char = '\u{1e}';

/// A correlate replica's input, checked against the replica's own partition plan: an
/// event keyed by another plan (or not keyed) may belong to a group whose other events
/// went to another replica. Such events are still evaluated, but counted and reported, so
/// that a mismatched ingest shows on `/metrics` and in the log instead of as missing
/// correlations.
pub struct PlanChecked {
    inner: Box<dyn Subscription>,
    expected: String,
    mismatches: Arc<std::sync::atomic::AtomicU64>,
    warned: bool,
}

impl PlanChecked {
    pub fn new(
        inner: Box<dyn Subscription>,
        plan: &PartitionPlan,
        mismatches: Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        PlanChecked {
            inner,
            expected: plan.fingerprint(),
            mismatches,
            warned: false,
        }
    }
}

#[async_trait]
impl Subscription for PlanChecked {
    async fn next(&mut self) -> Option<Delivery> {
        let delivery = self.inner.next().await?;
        let found = delivery
            .message
            .key
            .as_deref()
            .and_then(|key| key.split_once(PLAN_SEPARATOR))
            .map(|(plan, _)| plan);
        if found != Some(self.expected.as_str()) {
            self.mismatches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if !self.warned {
                self.warned = true;
                tracing::warn!(expected = %self.expected, found = found.unwrap_or("none"),
                    "events keyed by another partition plan than this replica's rules make; \
                     correlation groups may be split between replicas");
            }
        }
        Some(delivery)
    }
}

impl Keyed {
    fn keyed(&self, topic: Topic, message: Message) -> Message {
        match (topic, &message.key) {
            (Topic::Events, None) => match self.key(&message) {
                Some(key) => message.with_key(key),
                None => message,
            },
            _ => message,
        }
    }
}

#[async_trait]
impl Bus for Keyed {
    async fn publish(&self, topic: Topic, message: Message) -> Result<(), BusError> {
        let message = self.keyed(topic, message);
        self.inner.publish(topic, message).await
    }

    async fn start_publish(
        &self,
        topic: Topic,
        message: Message,
    ) -> Result<PendingPublish, BusError> {
        let message = self.keyed(topic, message);
        self.inner.start_publish(topic, message).await
    }

    async fn subscribe(
        &self,
        topic: Topic,
        group: &str,
    ) -> Result<Box<dyn Subscription>, BusError> {
        self.inner.subscribe(topic, group).await
    }

    async fn subscribe_partition(
        &self,
        topic: Topic,
        group: &str,
        partition: Partition,
    ) -> Result<Box<dyn Subscription>, BusError> {
        self.inner
            .subscribe_partition(topic, group, partition)
            .await
    }

    async fn close(&self, topic: Topic) {
        self.inner.close(topic).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_lists_read_ranges_and_single_numbers() {
        assert_eq!(parse_partition_list("0-3").unwrap().0, [0, 1, 2, 3]);
        assert_eq!(parse_partition_list("5, 1,1-2").unwrap().0, [1, 2, 5]);
        assert!(parse_partition_list("3-1").is_err());
        assert!(parse_partition_list("x").is_err());
        assert!(parse_partition_list("").is_err());
    }

    #[test]
    fn a_replica_gets_its_share_or_a_clear_refusal() {
        let mine = assigned(8, None, 1, 3).unwrap();
        let indices: Vec<u32> = mine.iter().map(|p| p.index).collect();
        assert_eq!(indices, [1, 4, 7]);
        assert!(assigned(8, None, 3, 3)
            .unwrap_err()
            .contains("replica index"));
        assert!(assigned(2, None, 2, 3).is_err());
        assert!(assigned(4, Some(&[4]), 0, 1)
            .unwrap_err()
            .contains("does not exist"));
        assert_eq!(assigned(4, Some(&[0, 3]), 0, 1).unwrap().len(), 2);
    }

    #[tokio::test]
    async fn events_keyed_by_another_plan_are_counted() {
        let bus = Arc::new(kastell_core::InProcessBus::new(8));
        let inner = bus.subscribe(Topic::Events, "correlate").await.unwrap();
        let (rules, _) = kastell_correlate::RuleSet::compile_raw(Vec::new());
        let plan = rules.partition_plan();
        let mismatches = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let mut checked = PlanChecked::new(inner, &plan, Arc::clone(&mismatches));
        let keyed = Keyed::new(bus.clone(), plan.clone());
        let event = Message::json(&serde_json::json!({"a": 1}))
            .unwrap()
            .with_id("s:f:1");
        keyed.publish(Topic::Events, event.clone()).await.unwrap();
        bus.publish(Topic::Events, event.clone()).await.unwrap();
        bus.publish(Topic::Events, event.with_key("fields:x\u{1e}1"))
            .await
            .unwrap();
        for _ in 0..3 {
            checked.next().await.unwrap();
        }
        assert_eq!(mismatches.load(std::sync::atomic::Ordering::Relaxed), 2);
    }

    #[test]
    fn the_count_comes_from_the_flag_then_the_platform_then_the_default() {
        assert_eq!(event_partitions(Some(3), None), 3);
        assert_eq!(event_partitions(None, None), DEFAULT_EVENT_PARTITIONS);
        assert_eq!(event_partitions(Some(0), None), 1);
    }
}
