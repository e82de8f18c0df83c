//! The event bus: the subjects that connect the stages, the trait every bus implements,
//! and the in-process implementation used by `kastell run`. The NATS JetStream
//! implementation for cluster mode is in [`jetstream`], the partitioning of a topic for
//! correlation in [`partition`].
//!
//! Every edge of the pipeline is a [`Topic`]. A stage subscribes to a topic under a
//! consumer group; every group receives every message (as JetStream durable consumers
//! do), and the replicas of one group share its messages. Publishing waits while a
//! group's queue is full, so a slow stage slows its producers instead of losing data.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

pub mod jetstream;
pub mod partition;
pub mod pipeline;

pub use partition::{Partition, PartitionKey};
pub use pipeline::{
    AckAfterStored, AckAfterStoredError, PendingPublish, Pipelined, StoredInBackground,
};

/// The pipeline's edges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    /// ingest → correlate: normalised events.
    Events,
    /// correlate → enrich: every event with the alerts it raised.
    Detections,
    /// enrich → cases: enriched alerts.
    Alerts,
    /// cases → respond: case openings, attachments and approvals.
    CaseEvents,
    /// Anything a stage could not process, with the reason.
    DeadLetters,
    /// respond → cases: step results for the case's audit log and the case operations
    /// playbooks ask for.
    ResponseOutputs,
}

impl Topic {
    pub const ALL: [Topic; 6] = [
        Topic::Events,
        Topic::Detections,
        Topic::Alerts,
        Topic::CaseEvents,
        Topic::DeadLetters,
        Topic::ResponseOutputs,
    ];

    /// The edge's short name, which the JetStream implementation puts under its namespace.
    pub fn name(self) -> &'static str {
        match self {
            Topic::Events => "events",
            Topic::Detections => "detections",
            Topic::Alerts => "alerts",
            Topic::CaseEvents => "case-events",
            Topic::DeadLetters => "dead-letters",
            Topic::ResponseOutputs => "response-outputs",
        }
    }

    /// The subject name, shared with the JetStream implementation.
    pub fn subject(self) -> &'static str {
        match self {
            Topic::Events => "kastell.events",
            Topic::Detections => "kastell.detections",
            Topic::Alerts => "kastell.alerts",
            Topic::CaseEvents => "kastell.case-events",
            Topic::DeadLetters => "kastell.dead-letters",
            Topic::ResponseOutputs => "kastell.response-outputs",
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.subject())
    }
}

/// One message on the bus. The payload is JSON so that every bus carries the same bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Identifies the message for duplicate detection on durable buses.
    pub id: Option<String>,
    /// Partitioning key (for example a correlation group) where order matters.
    pub key: Option<String>,
    pub payload: Bytes,
}

impl Message {
    pub fn json<T: Serialize>(value: &T) -> Result<Self, BusError> {
        let payload = serde_json::to_vec(value).map_err(BusError::Encode)?;
        Ok(Message {
            id: None,
            key: None,
            payload: Bytes::from(payload),
        })
    }

    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the partitioning key (see [`PartitionKey`]).
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, BusError> {
        serde_json::from_slice(&self.payload).map_err(BusError::Decode)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("topic {0} is closed")]
    Closed(Topic),
    #[error("consumer group {group:?} of topic {topic} is already taken")]
    GroupTaken { topic: Topic, group: String },
    #[error("encoding a message as JSON")]
    Encode(#[source] serde_json::Error),
    #[error("decoding a message from JSON")]
    Decode(#[source] serde_json::Error),
    #[error("bus transport: {0}")]
    Transport(String),
    #[error("topic {topic} is full and stayed full for {waited:?}; its consumers are behind")]
    Full {
        topic: Topic,
        waited: std::time::Duration,
    },
    #[error("topic {topic} is not split into {} partitions on this bus", partition.count)]
    Unpartitioned { topic: Topic, partition: Partition },
}

/// A message handed to a consumer. On a durable bus it is redelivered unless acknowledged.
pub struct Delivery {
    pub message: Message,
    acker: Option<Box<dyn Acker>>,
}

impl Delivery {
    pub fn new(message: Message, acker: Option<Box<dyn Acker>>) -> Self {
        Delivery { message, acker }
    }

    /// Confirms the message's effects are stored or forwarded.
    pub async fn ack(mut self) -> Result<(), BusError> {
        match self.acker.take() {
            Some(acker) => acker.ack().await,
            None => Ok(()),
        }
    }
}

/// The acknowledgement half of a delivery, implemented by durable buses.
#[async_trait]
pub trait Acker: Send {
    async fn ack(self: Box<Self>) -> Result<(), BusError>;
}

/// A stream of deliveries; `None` once the topic is closed and drained.
#[async_trait]
pub trait Subscription: Send {
    async fn next(&mut self) -> Option<Delivery>;
}

/// The bus every stage talks to; the stage never knows which implementation it has.
#[async_trait]
pub trait Bus: Send + Sync {
    /// Sends a message to every consumer group of the topic, waiting while one is full.
    async fn publish(&self, topic: Topic, message: Message) -> Result<(), BusError>;

    /// Sends a message and returns what resolves once it is stored, so that a publisher
    /// can keep several in flight ([`Pipelined`]). A bus without acknowledgements to wait
    /// for publishes in full here.
    async fn start_publish(
        &self,
        topic: Topic,
        message: Message,
    ) -> Result<PendingPublish, BusError> {
        self.publish(topic, message).await?;
        Ok(PendingPublish::stored())
    }

    /// Joins a consumer group of the topic.
    async fn subscribe(&self, topic: Topic, group: &str)
        -> Result<Box<dyn Subscription>, BusError>;

    /// Joins a consumer group of one partition of the topic: the group's replica for that
    /// partition receives every message whose key falls into it (see [`partition`]). A bus
    /// that does not split topics offers only [`Partition::WHOLE`].
    async fn subscribe_partition(
        &self,
        topic: Topic,
        group: &str,
        partition: Partition,
    ) -> Result<Box<dyn Subscription>, BusError> {
        if partition.count > 1 {
            return Err(BusError::Unpartitioned { topic, partition });
        }
        self.subscribe(topic, group).await
    }

    /// Declares that no more messages will be published to the topic, so consumers end
    /// once they have drained it. Durable buses keep their streams and ignore this.
    async fn close(&self, topic: Topic);
}

/// What a stage publishes on [`Topic::DeadLetters`] for a message it could not process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The stage (consumer group) that gave up on the message.
    pub stage: String,
    /// The subject the message was read from.
    pub topic: String,
    /// Why, in words a person can act on.
    pub reason: String,
    /// The message as received (invalid UTF-8 replaced).
    pub payload: String,
}

impl DeadLetter {
    pub fn new(stage: &str, topic: Topic, reason: impl Into<String>, message: &Message) -> Self {
        DeadLetter {
            stage: stage.to_owned(),
            topic: topic.subject().to_owned(),
            reason: reason.into(),
            payload: String::from_utf8_lossy(&message.payload).into_owned(),
        }
    }
}

impl DeadLetter {
    /// Sends the letter on [`Topic::DeadLetters`].
    pub async fn publish(&self, bus: &dyn Bus) -> Result<(), BusError> {
        bus.publish(Topic::DeadLetters, Message::json(self)?).await
    }
}

/// An error and its sources joined on one line, for a log field or a dead letter a
/// person reads.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Many errors already end with their source's text ("reading x: {source}"); a
        // chain that repeated it would read "…: No such file: No such file".
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Serialises a value and publishes it.
pub async fn publish_json<T: Serialize + Sync>(
    bus: &dyn Bus,
    topic: Topic,
    value: &T,
) -> Result<(), BusError> {
    bus.publish(topic, Message::json(value)?).await
}

/// The in-process bus: one bounded channel per consumer group.
///
/// Groups must subscribe before anything is published to their topic: there is no
/// stream to replay from, so a late group only sees later messages. `kastell run`
/// wires every stage before it starts ingest.
pub struct InProcessBus {
    capacity: usize,
    topics: Mutex<HashMap<Topic, TopicState>>,
}

#[derive(Default)]
struct TopicState {
    closed: bool,
    groups: Vec<(String, mpsc::Sender<Message>)>,
}

impl InProcessBus {
    /// A bus whose every group queue holds at most `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        InProcessBus {
            capacity: capacity.max(1),
            topics: Mutex::new(HashMap::new()),
        }
    }

    fn senders(&self, topic: Topic) -> Result<Vec<mpsc::Sender<Message>>, BusError> {
        let topics = self.topics.lock().expect("bus lock poisoned");
        match topics.get(&topic) {
            Some(state) if state.closed => Err(BusError::Closed(topic)),
            Some(state) => Ok(state.groups.iter().map(|(_, tx)| tx.clone()).collect()),
            None => Ok(Vec::new()),
        }
    }
}

#[async_trait]
impl Bus for InProcessBus {
    async fn publish(&self, topic: Topic, message: Message) -> Result<(), BusError> {
        let senders = self.senders(topic)?;
        for tx in senders {
            // A send fails only when the consumer is gone, which is a closed topic to us.
            tx.send(message.clone())
                .await
                .map_err(|_| BusError::Closed(topic))?;
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        topic: Topic,
        group: &str,
    ) -> Result<Box<dyn Subscription>, BusError> {
        let mut topics = self.topics.lock().expect("bus lock poisoned");
        let state = topics.entry(topic).or_default();
        if state.closed {
            return Err(BusError::Closed(topic));
        }
        if state.groups.iter().any(|(name, _)| name == group) {
            return Err(BusError::GroupTaken {
                topic,
                group: group.to_owned(),
            });
        }
        let (tx, rx) = mpsc::channel(self.capacity);
        state.groups.push((group.to_owned(), tx));
        Ok(Box::new(InProcessSubscription { rx }))
    }

    async fn close(&self, topic: Topic) {
        let mut topics = self.topics.lock().expect("bus lock poisoned");
        let state = topics.entry(topic).or_default();
        state.closed = true;
        // Dropping the senders ends each subscription after it drains its queue.
        state.groups.clear();
    }
}

struct InProcessSubscription {
    rx: mpsc::Receiver<Message>,
}

#[async_trait]
impl Subscription for InProcessSubscription {
    async fn next(&mut self) -> Option<Delivery> {
        self.rx.recv().await.map(|m| Delivery::new(m, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[derive(Debug, thiserror::Error)]
    enum Reading {
        #[error("reading {path}: {source}")]
        Inline {
            path: &'static str,
            source: std::io::Error,
        },
        #[error("reading {path}")]
        Plain {
            path: &'static str,
            source: std::io::Error,
        },
    }

    #[test]
    fn error_chains_do_not_repeat_a_source_the_message_already_shows() {
        let missing = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let inline = Reading::Inline {
            path: "a.yaml",
            source: missing(),
        };
        assert_eq!(error_chain(&inline), "reading a.yaml: no such file");
        let plain = Reading::Plain {
            path: "a.yaml",
            source: missing(),
        };
        assert_eq!(error_chain(&plain), "reading a.yaml: no such file");
    }

    #[tokio::test]
    async fn every_group_gets_every_message_in_order() {
        let bus = InProcessBus::new(4);
        let mut a = bus.subscribe(Topic::Events, "a").await.unwrap();
        let mut b = bus.subscribe(Topic::Events, "b").await.unwrap();
        for i in 0..3 {
            publish_json(&bus, Topic::Events, &i).await.unwrap();
        }
        bus.close(Topic::Events).await;
        for sub in [&mut a, &mut b] {
            let mut seen = Vec::new();
            while let Some(d) = sub.next().await {
                seen.push(d.message.decode::<i32>().unwrap());
                d.ack().await.unwrap();
            }
            assert_eq!(seen, vec![0, 1, 2]);
        }
    }

    #[tokio::test]
    async fn a_full_group_applies_back_pressure_instead_of_dropping() {
        let bus = Arc::new(InProcessBus::new(2));
        let mut sub = bus.subscribe(Topic::Alerts, "cases").await.unwrap();
        let producer = {
            let bus = Arc::clone(&bus);
            tokio::spawn(async move {
                for i in 0..10 {
                    publish_json(bus.as_ref(), Topic::Alerts, &i).await.unwrap();
                }
                bus.close(Topic::Alerts).await;
            })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !producer.is_finished(),
            "producer must wait for the consumer"
        );
        let mut seen = Vec::new();
        while let Some(d) = sub.next().await {
            seen.push(d.message.decode::<i32>().unwrap());
        }
        producer.await.unwrap();
        assert_eq!(seen, (0..10).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn publishing_to_a_closed_topic_is_an_error() {
        let bus = InProcessBus::new(1);
        bus.close(Topic::Events).await;
        let err = publish_json(&bus, Topic::Events, &1).await.unwrap_err();
        assert!(matches!(err, BusError::Closed(Topic::Events)));
    }

    #[tokio::test]
    async fn the_in_process_bus_offers_only_the_whole_topic_as_a_partition() {
        let bus = InProcessBus::new(1);
        let whole = bus.subscribe_partition(Topic::Events, "c", Partition::WHOLE);
        assert!(whole.await.is_ok());
        let split = Partition { index: 1, count: 4 };
        let err = bus.subscribe_partition(Topic::Events, "d", split).await;
        assert!(matches!(err, Err(BusError::Unpartitioned { .. })));
    }

    #[tokio::test]
    async fn a_group_name_is_taken_once() {
        let bus = InProcessBus::new(1);
        let _first = bus.subscribe(Topic::Events, "g").await.unwrap();
        assert!(bus.subscribe(Topic::Events, "g").await.is_err());
    }
}
