//! Recovery on one connection: the channels it subscribed with a position
//! (`conn:subscribe(ch, {since = ...})`, `docs/lua-api.md`) and the gate
//! its writer passes their publications through.
//!
//! A recovering subscribe must hand the client every publication after its
//! position exactly once and in order, although live publications start
//! arriving before history is read. So:
//! 1. [`Tracks::begin`]: from now on the writer holds this channel's
//!    publications back in the track's buffer instead of writing them;
//! 2. the connection joins the channel (live publications now reach the
//!    buffer);
//! 3. history is read: everything after the client's position up to the
//!    top at the time of the read;
//! 4. [`Tracks::release`]: the replay, then the buffered publications past
//!    the replay's last offset (those at or below it were both in history
//!    and live), are handed to the writer to go first; from then on the
//!    writer writes a publication only if its offset is past the last one
//!    written, so a late duplicate is dropped.
//!
//! Bounds: the buffer holds at most the connection's `outboundQueueSize`
//! publications (more closes the client as slow, as a full outbound queue
//! does); a release holds at most `historySize` replayed publications plus
//! that buffer. A tracked channel costs one small entry per connection.
//!
//! [`subscribe_options`] and [`recovery_table`] are the Lua side of it: the
//! options a script passes and the table it gets back.
//!
//! With `positions` set, a text publication of a tracked channel is written
//! as `{"channel": ch, "offset": n, "epoch": e, "data": "<the text>"}` so
//! the client can say where it was when it reconnects; binary publications
//! are written as they are.

use crate::broker::history::{Position, Publication};
use mlua::{Lua, MultiValue, Table, Value};
use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use tokio::sync::Notify;
use tungstenite::Message;

/// What the writer does with a publication.
#[derive(Debug, PartialEq)]
pub enum Gate {
    /// Write this frame.
    Write(Message),
    /// Already written (or older than what the client has): drop it.
    Drop,
    /// Held in a recovering channel's buffer.
    Held,
    /// The buffer is full: close the client as slow.
    Overflow,
}

struct Track {
    /// The last position written to the client (or its starting point).
    last: Option<Position>,
    /// While recovering: the live publications held back.
    buffer: Option<Vec<Arc<Publication>>>,
    positions: bool,
}

/// See the module documentation.
pub struct Tracks {
    map: RefCell<HashMap<Arc<str>, Track>>,
    /// Frames released by a recovery, to be written before anything else.
    released: RefCell<VecDeque<Message>>,
    max_buffer: usize,
    /// Woken when a recovering channel's buffer grows (test pause points).
    pub held: Notify,
}

impl Tracks {
    /// Tracks with a buffer of at most `max_buffer` publications.
    pub fn new(max_buffer: usize) -> Self {
        Self {
            map: RefCell::new(HashMap::new()),
            released: RefCell::new(VecDeque::new()),
            max_buffer,
            held: Notify::new(),
        }
    }

    /// Starts recovering `ch`: its publications are held from now on.
    pub fn begin(&self, ch: &str, positions: bool) {
        self.map.borrow_mut().insert(
            Arc::from(ch),
            Track {
                last: None,
                buffer: Some(Vec::new()),
                positions,
            },
        );
    }

    /// Stops tracking `ch` (unsubscribed, or the subscribe failed).
    pub fn end(&self, ch: &str) {
        self.map.borrow_mut().remove(ch);
    }

    /// Stops recovering `ch` without a position (history unreadable): what
    /// was held is written as it is, and later publications too.
    pub fn abandon(&self, ch: &str) {
        if let Some(t) = self.map.borrow_mut().remove(ch) {
            let mut out = self.released.borrow_mut();
            out.extend(t.buffer.unwrap_or_default().iter().map(|p| p.frame.clone()));
        }
    }

    /// Publications held for `ch` now (tests, pause points).
    pub fn buffered(&self, ch: &str) -> usize {
        self.map
            .borrow()
            .get(ch)
            .and_then(|t| t.buffer.as_ref())
            .map_or(0, Vec::len)
    }

    /// Ends the recovery of `ch`: `replay` (the publications after the
    /// client's position, oldest first; empty when it could not recover)
    /// goes first, then the held publications not in it; `top` is the
    /// position history was read at. Returns the last position handed to
    /// the client.
    pub fn release(&self, ch: &str, replay: Vec<Arc<Publication>>, top: Position) -> Position {
        let mut map = self.map.borrow_mut();
        let Some(t) = map.get_mut(ch) else {
            return top;
        };
        let held = t.buffer.take().unwrap_or_default();
        let mut out = self.released.borrow_mut();
        t.last = None;
        for p in &replay {
            if let Gate::Write(m) = pass(t, p) {
                out.push_back(m);
            }
        }
        // What history held up to `top` was replayed or is not to be.
        t.last = Some(top);
        for p in &held {
            if let Gate::Write(m) = pass(t, p) {
                out.push_back(m);
            }
        }
        t.last.clone().expect("set above")
    }

    /// Whether a recovery released frames not yet taken.
    pub fn has_released(&self) -> bool {
        !self.released.borrow().is_empty()
    }

    /// Frames released by recoveries since the last call.
    pub fn take_released(&self) -> VecDeque<Message> {
        std::mem::take(&mut *self.released.borrow_mut())
    }

    /// What the writer does with `p`.
    pub fn gate(&self, p: &Arc<Publication>) -> Gate {
        if p.position.is_none() {
            return Gate::Write(p.frame.clone());
        }
        let mut map = self.map.borrow_mut();
        let Some(t) = map.get_mut(&p.channel) else {
            return Gate::Write(p.frame.clone());
        };
        if let Some(buffer) = t.buffer.as_mut() {
            if buffer.len() >= self.max_buffer {
                return Gate::Overflow;
            }
            buffer.push(p.clone());
            self.held.notify_waiters();
            return Gate::Held;
        }
        pass(t, p)
    }
}

/// The live rule: write a publication past the last position written (a
/// new epoch starts over), drop one at or below it.
fn pass(t: &mut Track, p: &Publication) -> Gate {
    let Some(pos) = &p.position else {
        return Gate::Write(p.frame.clone());
    };
    if let Some(last) = &t.last
        && last.epoch == pos.epoch
        && pos.offset <= last.offset
    {
        return Gate::Drop;
    }
    t.last = Some(pos.clone());
    Gate::Write(if t.positions {
        with_position(p, pos)
    } else {
        p.frame.clone()
    })
}

/// The frame of `p` carrying its position (text frames only).
fn with_position(p: &Publication, pos: &Position) -> Message {
    match &p.frame {
        Message::Text(t) => Message::text(
            serde_json::json!({
                "channel": &*p.channel,
                "offset": pos.offset,
                "epoch": &*pos.epoch,
                "data": t.as_str(),
            })
            .to_string(),
        ),
        other => other.clone(),
    }
}

/// What a subscribe with options tells the script (`docs/lua-api.md`).
#[derive(Debug, Default)]
pub struct Recovery {
    /// Every publication after `since` was replayed.
    pub recovered: bool,
    /// The last position handed to the client (`None`: no history).
    pub position: Option<Position>,
    /// Why history could not be read (the channel is joined anyway).
    pub error: Option<String>,
}

/// The options of `conn:subscribe(ch, {since = {offset, epoch}, positions})`.
pub struct SubscribeOptions {
    pub since: Option<Position>,
    pub positions: bool,
}

/// `Some` when called as `conn:subscribe(ch, opts)` (a channel, then a
/// table that is not a list of channels).
pub fn subscribe_options(args: &MultiValue) -> Result<Option<(String, SubscribeOptions)>, String> {
    let (Some(Value::String(ch)), Some(Value::Table(opts)), 2) =
        (args.front(), args.get(1), args.len())
    else {
        return Ok(None);
    };
    if opts.raw_len() > 0 {
        return Ok(None);
    }
    let bad = |why: &str| format!("invalid since: {why}; use since = {{offset = n, epoch = e}}");
    let since = match opts.raw_get::<Value>("since").map_err(|e| e.to_string())? {
        Value::Nil => None,
        Value::Table(t) => {
            let offset = match t.raw_get::<Value>("offset").map_err(|e| e.to_string())? {
                Value::Integer(n) if n >= 0 => n as u64,
                Value::Number(n) if n >= 0.0 && n.fract() == 0.0 && n < 9.0e15 => n as u64,
                _ => return Err(bad("offset must be a non-negative integer")),
            };
            let epoch = match t.raw_get::<Value>("epoch").map_err(|e| e.to_string())? {
                Value::String(e) if !e.as_bytes().is_empty() => e.to_string_lossy(),
                _ => return Err(bad("epoch must be a non-empty string")),
            };
            Some(Position {
                offset,
                epoch: Arc::from(epoch.as_str()),
            })
        }
        _ => return Err(bad("not a table")),
    };
    let positions = opts
        .raw_get::<Option<bool>>("positions")
        .map_err(|_| "positions must be a boolean".to_string())?
        .unwrap_or(false);
    Ok(Some((
        ch.to_string_lossy(),
        SubscribeOptions { since, positions },
    )))
}

/// `{recovered = bool, offset = n, epoch = e, error = msg}` for the script.
pub fn recovery_table(lua: &Lua, r: &Recovery) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.raw_set("recovered", r.recovered)?;
    if let Some(p) = &r.position {
        t.raw_set("offset", p.offset)?;
        t.raw_set("epoch", &*p.epoch)?;
    }
    if let Some(e) = &r.error {
        t.raw_set("error", e.as_str())?;
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ch: &str, offset: u64, epoch: &str) -> Arc<Publication> {
        let mut p = Publication::new(ch, Message::text(format!("m{offset}")));
        p.position = Some(Position {
            offset,
            epoch: Arc::from(epoch),
        });
        Arc::new(p)
    }

    fn pos(offset: u64) -> Position {
        Position {
            offset,
            epoch: Arc::from("e"),
        }
    }

    fn texts(v: VecDeque<Message>) -> Vec<String> {
        v.into_iter()
            .map(|m| m.to_text().unwrap().to_string())
            .collect()
    }

    #[test]
    fn replay_then_held_without_duplicate_then_live_without_repeat() {
        let t = Tracks::new(10);
        t.begin("a", false);
        // 6 arrived live before history was read (also in the replay), 7 after.
        assert_eq!(t.gate(&p("a", 6, "e")), Gate::Held);
        assert_eq!(t.gate(&p("a", 7, "e")), Gate::Held);
        // Other channels pass.
        assert_eq!(t.gate(&p("b", 1, "e")), Gate::Write(Message::text("m1")));
        let replay = vec![p("a", 4, "e"), p("a", 5, "e"), p("a", 6, "e")];
        assert_eq!(t.release("a", replay, pos(6)), pos(7));
        assert_eq!(texts(t.take_released()), ["m4", "m5", "m6", "m7"]);
        // 7 again (still queued when released) is dropped; 8 is written.
        assert_eq!(t.gate(&p("a", 7, "e")), Gate::Drop);
        assert_eq!(t.gate(&p("a", 8, "e")), Gate::Write(Message::text("m8")));
        // A new epoch (the stream restarted) starts over.
        assert_eq!(t.gate(&p("a", 1, "f")), Gate::Write(Message::text("m1")));
    }

    #[test]
    fn a_full_buffer_overflows_and_positions_wrap_text() {
        let t = Tracks::new(1);
        t.begin("a", true);
        assert_eq!(t.gate(&p("a", 1, "e")), Gate::Held);
        assert_eq!(t.gate(&p("a", 2, "e")), Gate::Overflow);
        t.release("a", Vec::new(), pos(0));
        let out = texts(t.take_released());
        let v: serde_json::Value = serde_json::from_str(&out[0]).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"channel": "a", "offset": 1, "epoch": "e", "data": "m1"})
        );
    }
}
