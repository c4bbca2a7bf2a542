//! Each session's queue of messages from elsewhere (room fan-out, media events).
//!
//! The queue is bounded and pushing never waits: a room's fan-out must not stall behind one
//! participant who stopped reading. When a participant's queue is full it has fallen too far
//! behind to catch up, so the push marks it overflowed and its session drops it.

use std::sync::Arc;

use tokio::sync::{Notify, mpsc};

use crate::registry::Outbound;

/// The sending half, held by the registry. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Outbox {
    queue: mpsc::Sender<Outbound>,
    overflowed: Arc<Notify>,
}

/// The session's half: the messages.
pub(crate) struct Inbox {
    queue: mpsc::Receiver<Outbound>,
}

/// The session's half: the signal that the queue overflowed.
pub(crate) struct Overflow {
    overflowed: Arc<Notify>,
}

/// A queue for `capacity` messages (at least one).
pub(crate) fn outbox(capacity: usize) -> (Outbox, Inbox, Overflow) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let overflowed = Arc::new(Notify::new());
    (
        Outbox {
            queue: tx,
            overflowed: overflowed.clone(),
        },
        Inbox { queue: rx },
        Overflow { overflowed },
    )
}

impl Outbox {
    /// Queues `out` without waiting. A full queue signals overflow to the session instead; a
    /// closed one (the session has ended) drops the message.
    pub fn push(&self, out: Outbound) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.queue.try_send(out) {
            // `notify_one` keeps a permit when the session is busy, so it is not missed.
            self.overflowed.notify_one();
        }
    }
}

impl Inbox {
    /// The next queued message. Never ends while an [`Outbox`] can still push (the session
    /// holds one itself).
    pub async fn recv(&mut self) -> Option<Outbound> {
        self.queue.recv().await
    }
}

impl Overflow {
    /// Completes once a push found the queue full.
    pub async fn overflowed(&self) {
        self.overflowed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ServerMessage;
    use std::time::Duration;

    fn pong() -> Outbound {
        Outbound::Send(ServerMessage::Pong { id: None })
    }

    #[tokio::test]
    async fn a_full_queue_signals_overflow_and_keeps_what_it_holds() {
        let (outbox, mut inbox, overflow) = outbox(2);
        outbox.push(pong());
        outbox.push(pong());
        let quiet = tokio::time::timeout(Duration::from_millis(20), overflow.overflowed()).await;
        assert!(quiet.is_err(), "two messages fit a queue of two");
        outbox.push(pong());
        tokio::time::timeout(Duration::from_secs(1), overflow.overflowed())
            .await
            .expect("the third push overflows");
        assert!(matches!(inbox.recv().await, Some(Outbound::Send(_))));
        assert!(matches!(inbox.recv().await, Some(Outbound::Send(_))));
        assert!(
            inbox.queue.try_recv().is_err(),
            "the overflowing message was dropped"
        );
    }

    #[tokio::test]
    async fn pushing_to_an_ended_session_is_harmless() {
        let (outbox, inbox, overflow) = outbox(1);
        drop((inbox, overflow));
        outbox.push(pong());
        outbox.push(pong());
    }
}
