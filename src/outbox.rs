//! The bounded outbound queue of one client connection.
//!
//! Any thread may push (a publish fanning out, an API `mesh.send`, a Lua
//! `conn:send`); only the connection's own task pops. A push never blocks:
//! when the queue is full the push fails, the outbox remembers that it
//! overflowed, and the connection task closes the client as slow. The queue
//! holds no memory while empty, which keeps idle connections small.

use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::task::{Context, Poll};
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
    /// A frame to write; the payload is shared with every other subscriber.
    Message(Message),
    /// A remote `conn.call`.
    Call(ConnCall),
    /// Close the connection with this code and reason.
    Close(u16, String),
}

/// Why a push did not queue the item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The client is not keeping up; it is being closed.
    Full,
    /// The connection is gone or going.
    Closed,
}

struct Inner {
    items: VecDeque<Outbound>,
    closed: bool,
    overflowed: bool,
}

/// The queue; see the module documentation.
pub struct Outbox {
    inner: Mutex<Inner>,
    waker: AtomicWaker,
    capacity: usize,
}

impl Outbox {
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                items: VecDeque::new(),
                closed: false,
                overflowed: false,
            }),
            waker: AtomicWaker::new(),
            capacity,
        }
    }

    /// Queues an item for the connection task; never blocks.
    pub fn push(&self, item: Outbound) -> Result<(), PushError> {
        {
            let mut g = self.inner.lock();
            if g.closed {
                return Err(PushError::Closed);
            }
            // Close requests and calls bypass the bound: they are rare and
            // must not be lost behind a flood of messages.
            if matches!(item, Outbound::Message(_)) && g.items.len() >= self.capacity {
                let first = !g.overflowed;
                g.overflowed = true;
                drop(g);
                if first {
                    self.waker.wake();
                }
                return Err(PushError::Full);
            }
            g.items.push_back(item);
        }
        self.waker.wake();
        Ok(())
    }

    /// Moves everything queued into `into` (the task's local batch), or
    /// registers the task's waker when nothing is queued. Returns whether the
    /// queue has overflowed since the connection began.
    pub fn poll_drain(&self, cx: &mut Context<'_>, into: &mut VecDeque<Outbound>) -> Poll<bool> {
        let take = |into: &mut VecDeque<Outbound>| {
            let mut g = self.inner.lock();
            if g.items.is_empty() {
                return None;
            }
            if into.is_empty() {
                std::mem::swap(into, &mut g.items);
            } else {
                into.extend(g.items.drain(..));
            }
            Some(g.overflowed)
        };
        if let Some(o) = take(into) {
            return Poll::Ready(o);
        }
        self.waker.register(cx.waker());
        match take(into) {
            Some(o) => Poll::Ready(o),
            None => {
                if self.inner.lock().overflowed {
                    Poll::Ready(true)
                } else {
                    Poll::Pending
                }
            }
        }
    }

    /// Refuses every later push and discards what is queued.
    pub fn close(&self) {
        let mut g = self.inner.lock();
        g.closed = true;
        g.items = VecDeque::new();
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
    use std::task::Waker;

    fn text(s: &str) -> Outbound {
        Outbound::Message(Message::text(s))
    }

    #[test]
    fn push_past_capacity_fails_and_flags_overflow() {
        let o = Outbox::new(2);
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
    fn closed_outbox_refuses() {
        let o = Outbox::new(2);
        o.close();
        assert_eq!(o.push(text("a")), Err(PushError::Closed));
    }
}
