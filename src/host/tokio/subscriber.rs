//! A subscriber's end: encoded frames pulled from the pipeline's outbox.

use std::sync::{Arc, Mutex};

use ::tokio::sync::{Notify, mpsc, oneshot};
use bytes::Bytes;

use super::{Control, HostError};
use crate::pipeline::{EvictReason, SubscribeError, SubscriberId, WireFormat};

/// Why a subscriber's stream ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Closed {
    /// The pipeline disconnected it; close the socket with
    /// [`EvictReason::close_code`].
    #[error("evicted: {}", .0.as_str())]
    Evicted(EvictReason),
    /// The host shut down (WebSocket close code 1001, going away).
    #[error("the host shut down")]
    Shutdown,
}

/// The pipeline task's side of a subscriber: a wake-up and, once closed,
/// why.
#[derive(Debug, Default)]
pub(super) struct Slot {
    notify: Notify,
    closed: Mutex<Option<Closed>>,
    /// Frames handed over at shutdown, before the end.
    last: Mutex<Vec<Bytes>>,
}

impl Slot {
    pub(super) fn wake(&self) {
        self.notify.notify_one();
    }

    pub(super) fn close(&self, why: Closed) {
        if let Ok(mut closed) = self.closed.lock() {
            closed.get_or_insert(why);
        }
        self.notify.notify_one();
    }

    /// Hands over the subscriber's last frames (at shutdown), before
    /// [`close`](Slot::close).
    pub(super) fn hand_over(&self, frames: Vec<Bytes>) {
        if let Ok(mut last) = self.last.lock() {
            last.extend(frames);
        }
    }

    fn take_last(&self) -> Vec<Bytes> {
        self.last.lock().map(|mut last| std::mem::take(&mut *last)).unwrap_or_default()
    }

    fn closed(&self) -> Option<Closed> {
        self.closed.lock().ok().and_then(|c| *c)
    }
}

/// The pipeline task's hold on a [`Slot`]: however the task lets go of it
/// (unsubscribed, evicted, shut down, or the task itself failed), the
/// subscriber's end is closed and woken, so it never waits for nothing.
#[derive(Debug)]
pub(super) struct Held(Arc<Slot>);

impl Held {
    pub(super) fn new(slot: Arc<Slot>) -> Held {
        Held(slot)
    }
}

impl std::ops::Deref for Held {
    type Target = Slot;

    fn deref(&self) -> &Slot {
        &self.0
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // A reason given before (eviction) stays.
        self.0.close(Closed::Shutdown);
    }
}

/// An open subscription on a [`Host`](super::Host): frames in the
/// subscription's [`WireFormat`], snapshot first. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscriber {
    id: SubscriberId,
    format: WireFormat,
    slot: Arc<Slot>,
    control: mpsc::UnboundedSender<Control>,
    /// A request for frames whose answer was not read yet: kept across a
    /// cancelled [`next`](Subscriber::next), so no frame is lost.
    pending: Option<oneshot::Receiver<Result<Vec<Bytes>, SubscribeError>>>,
}

impl Subscriber {
    pub(super) fn new(
        id: SubscriberId,
        format: WireFormat,
        slot: Arc<Slot>,
        control: mpsc::UnboundedSender<Control>,
    ) -> Subscriber {
        Subscriber { id, format, slot, control, pending: None }
    }

    /// The pipeline's id of this subscriber.
    pub fn id(&self) -> SubscriberId {
        self.id
    }

    /// How its frames are encoded (Protobuf: binary WebSocket messages;
    /// JSON: text).
    pub fn format(&self) -> WireFormat {
        self.format
    }

    /// Waits for frames and appends them to `out` (at least one), oldest
    /// first. Frames wait in the pipeline's outbox, conflated when the
    /// subscriber falls behind, until taken here.
    ///
    /// Cancel-safe: in a `select!`, a call dropped before it returns loses
    /// no frame; the next call gets them.
    pub async fn next(&mut self, out: &mut Vec<Bytes>) -> Result<(), Closed> {
        loop {
            // An answer asked for by a call that was cancelled holds older
            // frames than any handed over at shutdown: it comes first. The
            // pipeline answers every request it received before it stops,
            // or drops it, so this wait ends.
            let mut empty = false;
            let mut gone = false;
            if let Some(answer) = &mut self.pending {
                let taken = answer.await;
                self.pending = None;
                match taken {
                    Ok(Ok(frames)) if !frames.is_empty() => {
                        out.extend(frames);
                        return Ok(());
                    }
                    Ok(Ok(_)) => empty = true,
                    // Gone from the pipeline (evicted, or the host stopped):
                    // the slot says why, after any last frames.
                    Ok(Err(SubscribeError::Unknown(_))) | Err(_) => gone = true,
                    Ok(Err(_)) => return Err(Closed::Shutdown),
                }
            }
            // The pipeline hands the last frames over before it closes the
            // slot: reading `closed` first means none handed over is missed.
            let closed = self.slot.closed();
            let last = self.slot.take_last();
            if !last.is_empty() {
                out.extend(last);
                return Ok(());
            }
            if let Some(why) = closed {
                return Err(why);
            }
            if gone {
                return Err(Closed::Shutdown);
            }
            if empty {
                self.slot.notify.notified().await;
                continue;
            }
            let (reply, answer) = oneshot::channel();
            if self.control.send(Control::Take { id: self.id, reply }).is_err() {
                // The host is stopping: it hands over and closes the slot
                // (dropping the slot closes it too), which wakes this call.
                self.slot.notify.notified().await;
                continue;
            }
            self.pending = Some(answer);
        }
    }

    /// Asks for a fresh snapshot (a client that saw a gap or a checksum
    /// mismatch), which becomes the next frame.
    pub async fn resync(&self) -> Result<(), HostError> {
        let (reply, answer) = oneshot::channel();
        self.control.send(Control::Resync { id: self.id, reply }).map_err(|_| HostError::Closed)?;
        Ok(answer.await.map_err(|_| HostError::Closed)??)
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        // The host may be gone already; then there is nothing to undo.
        let _ = self.control.send(Control::Unsubscribe { id: self.id });
    }
}
