//! Publishing with several messages in flight. A durable bus stores a message only when
//! its server acknowledges it, one round trip per message; a publisher that waits for each
//! acknowledgement before sending the next is held to one message per round trip.
//! [`Pipelined`] sends up to a bounded number of messages before it waits, and
//! [`Pipelined::flush`] waits for every one of them, so that whoever answers for the
//! messages (an HTTP response, a file's checkpoint, "replay done") can still do so only
//! once all of them are stored.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use async_trait::async_trait;

use super::{Bus, BusError, Message, Partition, Subscription, Topic};

/// A publish that was sent: resolves once the bus stored the message (after retrying it,
/// if the first attempt was refused), or with the error that made it give up.
pub struct PendingPublish(Pin<Box<dyn Future<Output = Result<(), BusError>> + Send + 'static>>);

impl PendingPublish {
    /// A publish that is already stored.
    pub fn stored() -> Self {
        PendingPublish(Box::pin(std::future::ready(Ok(()))))
    }

    pub fn new(future: impl Future<Output = Result<(), BusError>> + Send + 'static) -> Self {
        PendingPublish(Box::pin(future))
    }

    /// Waits until the message is stored.
    ///
    /// # Errors
    ///
    /// The bus's reason for giving up on the message.
    pub async fn stored_or_failed(self) -> Result<(), BusError> {
        self.0.await
    }
}

/// Messages published without waiting for each to be stored: at most `window` are in
/// flight, the oldest is awaited when one more is sent. In one topic partition the
/// messages are stored in the order they were sent, except that a message whose publish
/// was refused (the server restarting) is retried after later ones may have been stored.
///
/// [`Bus::publish`] on it returns once the message is *sent*; call [`Pipelined::flush`]
/// before telling anyone the messages are stored.
pub struct Pipelined<'a> {
    inner: &'a dyn Bus,
    in_flight: Mutex<VecDeque<PendingPublish>>,
    window: usize,
}

impl<'a> Pipelined<'a> {
    pub fn new(inner: &'a dyn Bus, window: usize) -> Self {
        Pipelined {
            inner,
            in_flight: Mutex::new(VecDeque::new()),
            window: window.max(1),
        }
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<PendingPublish>> {
        // A panic while the lock was held left the queue itself consistent.
        self.in_flight
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until every message sent so far is stored.
    ///
    /// # Errors
    ///
    /// The first message the bus gave up on; the messages after it are still awaited
    /// first, so that none is left in flight.
    pub async fn flush(&self) -> Result<(), BusError> {
        let mut first_error = None;
        loop {
            let next = self.queue().pop_front();
            let Some(pending) = next else { break };
            if let Err(error) = pending.stored_or_failed().await {
                first_error.get_or_insert(error);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[async_trait]
impl Bus for Pipelined<'_> {
    /// Sends the message; waits only for the oldest message in flight when the window
    /// is full.
    async fn publish(&self, topic: Topic, message: Message) -> Result<(), BusError> {
        let pending = self.inner.start_publish(topic, message).await?;
        let oldest = {
            let mut queue = self.queue();
            queue.push_back(pending);
            if queue.len() > self.window {
                queue.pop_front()
            } else {
                None
            }
        };
        match oldest {
            Some(oldest) => oldest.stored_or_failed().await,
            None => Ok(()),
        }
    }

    async fn start_publish(
        &self,
        topic: Topic,
        message: Message,
    ) -> Result<PendingPublish, BusError> {
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

/// Why [`AckAfterStored`] stopped: a forwarded message the bus gave up on, or an input
/// it could not acknowledge. Either way the inputs after it stay unacknowledged and are
/// delivered again.
#[derive(Debug, thiserror::Error)]
pub enum AckAfterStoredError {
    #[error("forwarding a message")]
    Publish(#[source] BusError),
    #[error("acknowledging an input")]
    Ack(#[source] BusError),
}

/// Acknowledges each input of a consuming stage once everything it forwarded is stored,
/// without making the stage wait for that: the stage sends its output with
/// [`Bus::start_publish`], hands the pending publishes and the input's delivery here, and
/// reads the next input while up to `window` inputs wait for their publishes. A task of
/// its own awaits them in order and acknowledges each input right after its publishes are
/// stored, so an idle stage acknowledges at once rather than when the window fills.
///
/// "Acknowledged only after it is forwarded" holds: an input is acknowledged after its
/// own publishes are stored, never before; [`AckAfterStored::finish`] returns once every
/// input handed in is acknowledged (or the first failure).
pub struct AckAfterStored {
    sender: Option<tokio::sync::mpsc::Sender<(Vec<PendingPublish>, super::Delivery)>>,
    task: Option<tokio::task::JoinHandle<Result<(), AckAfterStoredError>>>,
}

impl AckAfterStored {
    pub fn new(window: usize) -> Self {
        let (sender, mut receiver) =
            tokio::sync::mpsc::channel::<(Vec<PendingPublish>, super::Delivery)>(window.max(1));
        let task = tokio::spawn(async move {
            while let Some((pending, delivery)) = receiver.recv().await {
                for publish in pending {
                    publish
                        .stored_or_failed()
                        .await
                        .map_err(AckAfterStoredError::Publish)?;
                }
                delivery.ack().await.map_err(AckAfterStoredError::Ack)?;
            }
            Ok(())
        });
        AckAfterStored {
            sender: Some(sender),
            task: Some(task),
        }
    }

    /// Hands in an input and the publishes it caused; waits while `window` inputs are
    /// still waiting for theirs.
    ///
    /// # Errors
    /// When an earlier input failed: its reason. Nothing more can be handed in then.
    pub async fn push(
        &mut self,
        pending: Vec<PendingPublish>,
        delivery: super::Delivery,
    ) -> Result<(), AckAfterStoredError> {
        if let Some(sender) = &self.sender {
            if sender.send((pending, delivery)).await.is_ok() {
                return Ok(());
            }
        }
        // The task ended early, on its first failure: report that.
        self.wait()
            .await
            .and(Err(AckAfterStoredError::Ack(BusError::Transport(
                "inputs handed in after the acknowledging task ended".into(),
            ))))
    }

    /// Waits until every input handed in is acknowledged.
    ///
    /// # Errors
    /// The first publish or acknowledgement that failed.
    pub async fn finish(mut self) -> Result<(), AckAfterStoredError> {
        self.wait().await
    }

    async fn wait(&mut self) -> Result<(), AckAfterStoredError> {
        drop(self.sender.take());
        let Some(task) = self.task.take() else {
            return Ok(());
        };
        match task.await {
            Ok(result) => result,
            Err(join) => Err(AckAfterStoredError::Ack(BusError::Transport(format!(
                "the acknowledging task failed: {join}"
            )))),
        }
    }
}

/// Publishing for a stream that answers for no message in particular (a syslog
/// connection, a UDP socket): each message is sent without waiting, and a task of its own
/// awaits the messages' storing in the order they were sent, so that a refused publish is
/// retried at once rather than when the stream next pauses. At most `window` messages are
/// in flight; a full window makes [`Bus::publish`] wait, which is what slows the stream's
/// reader (and, over TCP, the sender).
///
/// The first message the bus gives up on ends the task; the next [`Bus::publish`] and
/// [`StoredInBackground::finish`] return its error.
pub struct StoredInBackground<'a> {
    inner: &'a dyn Bus,
    sender: tokio::sync::mpsc::Sender<PendingPublish>,
    task: Mutex<Option<tokio::task::JoinHandle<Result<(), BusError>>>>,
}

impl<'a> StoredInBackground<'a> {
    pub fn new(inner: &'a dyn Bus, window: usize) -> Self {
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<PendingPublish>(window.max(1));
        let task = tokio::spawn(async move {
            while let Some(pending) = receiver.recv().await {
                pending.stored_or_failed().await?;
            }
            Ok(())
        });
        StoredInBackground {
            inner,
            sender,
            task: Mutex::new(Some(task)),
        }
    }

    /// Waits until every message sent so far is stored.
    ///
    /// # Errors
    ///
    /// The first message the bus gave up on.
    pub async fn finish(self) -> Result<(), BusError> {
        let StoredInBackground { sender, task, .. } = self;
        drop(sender);
        let task = task
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match task {
            Some(task) => joined(task).await,
            None => Ok(()),
        }
    }

    /// The task's reason for ending early.
    async fn failure(&self) -> BusError {
        let task = self
            .task
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let ended = match task {
            Some(task) => joined(task).await,
            None => Ok(()),
        };
        ended.err().unwrap_or_else(|| {
            BusError::Transport("an earlier message of this stream was not stored".into())
        })
    }
}

async fn joined(task: tokio::task::JoinHandle<Result<(), BusError>>) -> Result<(), BusError> {
    task.await.unwrap_or_else(|join| {
        Err(BusError::Transport(format!(
            "the task awaiting the stream's publishes failed: {join}"
        )))
    })
}

#[async_trait]
impl Bus for StoredInBackground<'_> {
    /// Sends the message; waits only while `window` messages are not yet stored.
    async fn publish(&self, topic: Topic, message: Message) -> Result<(), BusError> {
        let pending = self.inner.start_publish(topic, message).await?;
        match self.sender.send(pending).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.failure().await),
        }
    }

    async fn start_publish(
        &self,
        topic: Topic,
        message: Message,
    ) -> Result<PendingPublish, BusError> {
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
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::bus::{Acker, Delivery};

    type Log = Arc<Mutex<Vec<String>>>;

    struct Recorded(Log, usize);

    #[async_trait]
    impl Acker for Recorded {
        async fn ack(self: Box<Self>) -> Result<(), BusError> {
            self.0.lock().unwrap().push(format!("ack {}", self.1));
            Ok(())
        }
    }

    fn delivery(log: &Log, n: usize) -> Delivery {
        let message = Message::json(&n).unwrap();
        Delivery::new(message, Some(Box::new(Recorded(Arc::clone(log), n))))
    }

    /// A publish that is stored (or refused) when the test says so, and logs it.
    fn publish(
        log: &Log,
        n: usize,
        ok: bool,
    ) -> (PendingPublish, tokio::sync::oneshot::Sender<()>) {
        let (stored, wait) = tokio::sync::oneshot::channel();
        let log = Arc::clone(log);
        let pending = PendingPublish::new(async move {
            wait.await.ok();
            log.lock().unwrap().push(format!("stored {n}"));
            if ok {
                Ok(())
            } else {
                Err(BusError::Transport("refused".into()))
            }
        });
        (pending, stored)
    }

    #[tokio::test]
    async fn an_input_is_acknowledged_after_its_publishes_are_stored() {
        let log: Log = Arc::default();
        let mut acks = AckAfterStored::new(4);
        let mut gates = Vec::new();
        for n in 0..3 {
            let (a, gate_a) = publish(&log, 10 * n, true);
            let (b, gate_b) = publish(&log, 10 * n + 1, true);
            acks.push(vec![a, b], delivery(&log, n)).await.unwrap();
            gates.push(gate_b);
            gates.push(gate_a);
        }
        // Stored in another order than sent: each input waits for both of its own.
        for gate in gates.into_iter().rev() {
            gate.send(()).unwrap();
        }
        acks.finish().await.unwrap();
        let log = log.lock().unwrap().clone();
        for n in 0..3 {
            let at = |entry: String| log.iter().position(|e| *e == entry).unwrap();
            assert!(
                at(format!("ack {n}")) > at(format!("stored {}", 10 * n)),
                "{log:?}"
            );
            assert!(
                at(format!("ack {n}")) > at(format!("stored {}", 10 * n + 1)),
                "{log:?}"
            );
        }
        assert_eq!(log.iter().filter(|e| e.starts_with("ack")).count(), 3);
    }

    #[tokio::test]
    async fn a_refused_publish_leaves_its_input_and_the_later_ones_unacknowledged() {
        let log: Log = Arc::default();
        let mut acks = AckAfterStored::new(8);
        let mut gates = Vec::new();
        for (n, ok) in [(0, true), (1, false), (2, true)] {
            let (pending, gate) = publish(&log, n, ok);
            acks.push(vec![pending], delivery(&log, n)).await.unwrap();
            gates.push(gate);
        }
        for gate in gates {
            gate.send(()).unwrap_or(());
        }
        let error = acks.finish().await.unwrap_err();
        assert!(
            matches!(error, AckAfterStoredError::Publish(BusError::Transport(_))),
            "{error:?}"
        );
        let acked: Vec<String> = log
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.starts_with("ack"))
            .cloned()
            .collect();
        assert_eq!(acked, ["ack 0"]);
    }

    /// A bus whose publishes are the test's gated ones, handed out in order.
    struct Gated(Mutex<std::collections::VecDeque<PendingPublish>>);

    #[async_trait]
    impl Bus for Gated {
        async fn publish(&self, _: Topic, _: Message) -> Result<(), BusError> {
            Err(BusError::Transport("this bus only starts publishes".into()))
        }

        async fn start_publish(&self, _: Topic, _: Message) -> Result<PendingPublish, BusError> {
            let next = self.0.lock().unwrap().pop_front();
            next.ok_or_else(|| BusError::Transport("no publish left".into()))
        }

        async fn subscribe(&self, _: Topic, _: &str) -> Result<Box<dyn Subscription>, BusError> {
            Err(BusError::Transport("not subscribable".into()))
        }

        async fn close(&self, _: Topic) {}
    }

    fn gated(log: &Log, outcomes: &[bool]) -> (Gated, Vec<tokio::sync::oneshot::Sender<()>>) {
        let (pending, gates) = outcomes
            .iter()
            .enumerate()
            .map(|(n, ok)| publish(log, n, *ok))
            .unzip::<_, _, std::collections::VecDeque<_>, Vec<_>>();
        (Gated(Mutex::new(pending)), gates)
    }

    fn message() -> Message {
        Message::json(&"event").unwrap()
    }

    #[tokio::test]
    async fn a_stream_waits_only_when_its_window_is_full_and_finish_waits_for_all() {
        let log: Log = Arc::default();
        let (bus, mut gates) = gated(&log, &[true; 4]);
        let stream = StoredInBackground::new(&bus, 2);
        // The task holds the first message while the channel holds two more.
        for _ in 0..3 {
            stream.publish(Topic::Events, message()).await.unwrap();
        }
        {
            let fourth = stream.publish(Topic::Events, message());
            tokio::pin!(fourth);
            let waited =
                tokio::time::timeout(std::time::Duration::from_millis(100), fourth.as_mut()).await;
            assert!(waited.is_err(), "a fourth message must wait for the first");
            gates.remove(0).send(()).unwrap();
            fourth.await.unwrap();
        }
        for gate in gates {
            gate.send(()).unwrap();
        }
        stream.finish().await.unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            ["stored 0", "stored 1", "stored 2", "stored 3"]
        );
    }

    #[tokio::test]
    async fn a_refused_message_ends_the_stream_with_its_reason() {
        let log: Log = Arc::default();
        let mut outcomes = [true; 64];
        outcomes[1] = false;
        let (bus, gates) = gated(&log, &outcomes);
        let stream = StoredInBackground::new(&bus, 8);
        for _ in 0..3 {
            stream.publish(Topic::Events, message()).await.unwrap();
        }
        for gate in gates {
            gate.send(()).unwrap_or(());
        }
        // Once the task has met the refusal, publishing more reports it.
        let mut refused = None;
        for _ in 0..50 {
            if let Err(e) = stream.publish(Topic::Events, message()).await {
                refused = Some(e);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let refused = refused.expect("the refusal is reported");
        assert!(refused.to_string().contains("refused"), "{refused}");
        let log = log.lock().unwrap().clone();
        assert_eq!(log[..2], ["stored 0", "stored 1"]);
    }
}
