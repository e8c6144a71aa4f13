//! The bounded outbound queue of one client connection.
//!
//! Any thread may push (a publish fanning out, an API `mesh.send`, a Lua
//! `conn:send`); only the connection's own task pops. A push never blocks:
//! when the queue is full the push fails, the outbox remembers that it
//! overflowed, and the connection task closes the client as slow. The queue
//! holds no memory while empty, which keeps idle connections small.
//!
//! Three bounds (README "Limits"):
//! - messages: `outboundQueueSize` queued frames;
//! - bytes: `outboundQueueBytes` of queued payload. Either one full is an
//!   overflow (the client is closed with 1013). A single frame larger than
//!   the whole byte bound can never be queued: it is refused without closing
//!   the client (the publish counts it in `f`, `conn:send` returns an error);
//! - remote calls: [`MAX_PENDING_CALLS`] `conn.call`s waiting to be applied;
//!   more are refused (the caller gets an error), the client stays.
//!
//! Close requests bypass the bounds (at most one is kept).

use crate::publication::Publication;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use tungstenite::Message;

/// A change the connection task must apply to its Lua state, sent by
/// `conn.call` from the API or another node.
#[derive(Debug)]
pub enum CallFunc {
    SetContextValue,
    SetContext,
    Subscribe,
    Unsubscribe,
    /// Extension: close the connection (normal close, then `on_close`).
    Close,
}

impl CallFunc {
    /// The name `conn.call` uses.
    pub fn name(&self) -> &'static str {
        match self {
            CallFunc::SetContextValue => "set_context_value",
            CallFunc::SetContext => "set_context",
            CallFunc::Subscribe => "subscribe",
            CallFunc::Unsubscribe => "unsubscribe",
            CallFunc::Close => "close",
        }
    }

    /// Parses the `f` of a `conn.call` request.
    pub fn parse(name: &str) -> Option<CallFunc> {
        match name {
            "set_context_value" => Some(CallFunc::SetContextValue),
            "set_context" => Some(CallFunc::SetContext),
            "subscribe" => Some(CallFunc::Subscribe),
            "unsubscribe" => Some(CallFunc::Unsubscribe),
            "close" => Some(CallFunc::Close),
            _ => None,
        }
    }
}

/// A remote call on a connection, answered once applied.
#[derive(Debug)]
pub struct ConnCall {
    pub func: CallFunc,
    pub args: Vec<serde_json::Value>,
    pub reply: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
}

/// What a connection task takes from its outbox.
#[derive(Debug)]
pub enum Outbound {
    /// A frame to write (a send, or a close's last words).
    Message(Message),
    /// A publish to a channel this connection subscribes to; shared with
    /// every other subscriber.
    Publication(Arc<Publication>),
    /// A remote `conn.call`.
    Call(ConnCall),
    /// Close the connection with this code and reason.
    Close(u16, String),
}

impl Outbound {
    /// Payload bytes of a frame to write (a message or a publication); 0
    /// for anything else.
    pub fn frame_len(&self) -> usize {
        match self {
            Outbound::Message(m) => m.len(),
            Outbound::Publication(p) => p.len(),
            _ => 0,
        }
    }

    /// Whether this is a frame to write (a message or a publication).
    pub fn is_frame(&self) -> bool {
        matches!(self, Outbound::Message(_) | Outbound::Publication(_))
    }

    /// The frame to write for a message or a publication.
    pub fn into_frame(self) -> Option<Message> {
        match self {
            Outbound::Message(m) => Some(m),
            // The last holder (a personal push) takes the frame as it is.
            Outbound::Publication(p) => {
                Some(Arc::try_unwrap(p).map_or_else(|p| p.frame.clone(), |p| p.frame))
            }
            _ => None,
        }
    }
}

/// Why a push did not queue the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The client is not keeping up; it is being closed.
    Full,
    /// The connection is gone or going.
    Closed,
}

/// `conn.call`s one connection may have waiting to be applied.
pub const MAX_PENDING_CALLS: usize = 16;

/// Kept small: every connection has one, idle or not (README "Benchmarks",
/// memory per idle connection).
struct Inner {
    items: VecDeque<Outbound>,
    /// The connection task, to wake when something arrives (taken when
    /// woken; the task registers again when it finds nothing).
    waker: Option<Waker>,
    /// Payload bytes of the frames among `items`.
    bytes: usize,
    /// Frames among `items`.
    messages: u32,
    /// Calls among `items` (at most [`MAX_PENDING_CALLS`]).
    calls: u8,
    /// A close request is among `items`.
    closing: bool,
    closed: bool,
    overflowed: bool,
}

impl Inner {
    /// Remembers the task to wake (its waker is cloned only if it changed).
    fn register(&mut self, cx: &Context<'_>) {
        match &mut self.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
    }
}

/// The queue; see the module documentation.
pub struct Outbox {
    inner: Mutex<Inner>,
    max_bytes: usize,
    /// The frame bound (`outboundQueueSize`, at most `u32::MAX`).
    capacity: u32,
}

impl Outbox {
    /// A queue of at most `capacity` frames and `max_bytes` payload bytes.
    pub fn new(capacity: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                waker: None,
                bytes: 0,
                messages: 0,
                calls: 0,
                closing: false,
                closed: false,
                overflowed: false,
            }),
            max_bytes,
            capacity: u32::try_from(capacity).unwrap_or(u32::MAX),
        }
    }

    /// The largest frame this queue can ever take (its byte bound).
    pub fn max_frame(&self) -> usize {
        self.max_bytes
    }

    /// Queues an item for the connection task; never blocks.
    pub fn push(&self, item: Outbound) -> Result<(), PushError> {
        let waker = {
            let mut g = self.inner.lock();
            if g.closed {
                return Err(PushError::Closed);
            }
            match &item {
                Outbound::Message(_) | Outbound::Publication(_) => {
                    let size = item.frame_len();
                    if size > self.max_bytes {
                        // Undeliverable to anyone with this bound; the client
                        // is not at fault, so it is not closed.
                        return Err(PushError::Full);
                    }
                    if g.messages >= self.capacity || g.bytes + size > self.max_bytes {
                        let first = !g.overflowed;
                        g.overflowed = true;
                        let waker = if first { g.waker.take() } else { None };
                        drop(g);
                        if let Some(w) = waker {
                            w.wake();
                        }
                        return Err(PushError::Full);
                    }
                    g.messages += 1;
                    g.bytes += size;
                }
                // Calls have their own small bound: they must not be lost
                // behind a flood of messages, nor pile up without end.
                Outbound::Call(_) if usize::from(g.calls) >= MAX_PENDING_CALLS => {
                    return Err(PushError::Full);
                }
                Outbound::Call(_) => g.calls += 1,
                // One close request is enough.
                Outbound::Close(..) if g.closing => return Ok(()),
                Outbound::Close(..) => g.closing = true,
            }
            g.items.push_back(item);
            g.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    /// Moves everything queued into `into` (the task's local batch), or
    /// registers the task's waker when nothing is queued. Returns whether the
    /// queue has overflowed since the connection began.
    pub fn poll_drain(&self, cx: &mut Context<'_>, into: &mut VecDeque<Outbound>) -> Poll<bool> {
        let mut g = self.inner.lock();
        if g.items.is_empty() {
            if g.overflowed {
                return Poll::Ready(true);
            }
            g.register(cx);
            return Poll::Pending;
        }
        if into.is_empty() {
            std::mem::swap(into, &mut g.items);
        } else {
            into.extend(g.items.drain(..));
        }
        (g.messages, g.bytes, g.calls, g.closing) = (0, 0, 0, false);
        Poll::Ready(g.overflowed)
    }

    /// Whether the queue has overflowed; otherwise registers the task's
    /// waker so the overflow wakes it (used while the task's own batch is
    /// still being written and it does not drain).
    pub fn poll_overflowed(&self, cx: &mut Context<'_>) -> bool {
        let mut g = self.inner.lock();
        if !g.overflowed {
            g.register(cx);
        }
        g.overflowed
    }

    /// Refuses every later push and discards what is queued.
    pub fn close(&self) {
        let mut g = self.inner.lock();
        g.closed = true;
        g.items = VecDeque::new();
        (g.messages, g.bytes, g.calls) = (0, 0, 0);
    }

    /// Payload bytes of the frames waiting now.
    pub fn queued_bytes(&self) -> usize {
        self.inner.lock().bytes
    }

    /// Items waiting now.
    pub fn len(&self) -> usize {
        self.inner.lock().items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    /// Counts its wake-ups.
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn text(s: &str) -> Outbound {
        Outbound::Message(Message::text(s))
    }

    fn drain(o: &Outbox) -> (Poll<bool>, VecDeque<Outbound>) {
        let mut batch = VecDeque::new();
        let mut cx = Context::from_waker(Waker::noop());
        (o.poll_drain(&mut cx, &mut batch), batch)
    }

    #[test]
    fn a_publication_gives_its_frame_to_every_holder() {
        let p = Arc::new(Publication::new("ch", Message::text("hi")));
        let shared = Outbound::Publication(p.clone());
        assert_eq!(shared.into_frame(), Some(Message::text("hi")));
        // The last holder takes the frame itself.
        assert_eq!(
            Outbound::Publication(p).into_frame(),
            Some(Message::text("hi"))
        );
    }

    #[test]
    fn push_past_byte_bound_fails_and_flags_overflow() {
        let o = Outbox::new(100, 10);
        assert!(o.push(text("12345")).is_ok());
        assert!(o.push(text("12345")).is_ok());
        assert_eq!(o.queued_bytes(), 10);
        assert_eq!(o.push(text("1")), Err(PushError::Full));
        assert_eq!(drain(&o).0, Poll::Ready(true));
        assert_eq!(o.queued_bytes(), 0, "drained bytes leave the bound");
    }

    #[test]
    fn frame_larger_than_the_bound_is_refused_without_overflow() {
        let o = Outbox::new(100, 10);
        assert_eq!(o.push(text("12345678901")), Err(PushError::Full));
        assert!(o.push(text("1234567890")).is_ok());
        let (p, batch) = drain(&o);
        assert_eq!(p, Poll::Ready(false), "the client is not closed");
        assert_eq!(batch.len(), 1);
    }

    #[test]
    fn calls_are_bounded_and_one_close_is_kept() {
        let o = Outbox::new(1, 1 << 20);
        let call = || {
            Outbound::Call(ConnCall {
                func: CallFunc::Close,
                args: Vec::new(),
                reply: None,
            })
        };
        for _ in 0..MAX_PENDING_CALLS {
            assert!(o.push(call()).is_ok());
        }
        assert_eq!(o.push(call()), Err(PushError::Full));
        assert!(o.push(Outbound::Close(1000, String::new())).is_ok());
        assert!(o.push(Outbound::Close(1000, String::new())).is_ok());
        let (p, batch) = drain(&o);
        assert_eq!(
            p,
            Poll::Ready(false),
            "refused calls do not close the client"
        );
        assert_eq!(batch.len(), MAX_PENDING_CALLS + 1);
    }

    #[test]
    fn push_past_capacity_fails_and_flags_overflow() {
        let o = Outbox::new(2, 1 << 20);
        assert!(o.push(text("a")).is_ok());
        assert!(o.push(text("b")).is_ok());
        assert_eq!(o.push(text("c")), Err(PushError::Full));
        // A close request still gets through a full queue.
        assert!(o.push(Outbound::Close(1000, String::new())).is_ok());
        let mut batch = VecDeque::new();
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(o.poll_drain(&mut cx, &mut batch), Poll::Ready(true));
        assert_eq!(batch.len(), 3);
    }

    #[test]
    fn overflow_is_seen_while_the_batch_is_still_being_written() {
        let o = Outbox::new(1, 1 << 20);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(o.push(text("a")).is_ok());
        let (_, batch) = drain(&o);
        assert_eq!(batch.len(), 1);
        assert!(!o.poll_overflowed(&mut cx));
        assert!(o.push(text("b")).is_ok());
        assert_eq!(o.push(text("c")), Err(PushError::Full));
        assert!(o.poll_overflowed(&mut cx));
    }

    #[test]
    fn a_push_wakes_the_task_that_found_nothing_once() {
        let o = Outbox::new(2, 1 << 20);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(count.clone());
        let mut cx = Context::from_waker(&waker);
        let mut batch = VecDeque::new();
        assert_eq!(o.poll_drain(&mut cx, &mut batch), Poll::Pending);
        assert!(o.push(text("a")).is_ok());
        assert!(o.push(text("b")).is_ok());
        assert_eq!(
            count.0.load(Ordering::Relaxed),
            1,
            "woken once until it looks again"
        );
        assert_eq!(o.poll_drain(&mut cx, &mut batch), Poll::Ready(false));
        assert_eq!(batch.len(), 2);
        // Draining the batch still watches for an overflow.
        assert!(!o.poll_overflowed(&mut cx));
        assert!(o.push(text("c")).is_ok());
        assert!(o.push(text("d")).is_ok());
        assert_eq!(o.push(text("e")), Err(PushError::Full));
        assert_eq!(count.0.load(Ordering::Relaxed), 2);
        assert!(o.poll_overflowed(&mut cx));
    }

    #[test]
    fn closed_outbox_refuses() {
        let o = Outbox::new(2, 1 << 20);
        o.close();
        assert_eq!(o.push(text("a")), Err(PushError::Closed));
    }
}
