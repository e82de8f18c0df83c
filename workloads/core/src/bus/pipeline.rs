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
