//! The binary format of what nodes send each other through Redis pub/sub.
//!
//! Compact and binary-safe: a one-byte kind, fixed little-endian integers,
//! then the payload as is (message data is never re-encoded). Channel
//! messages travel on `<prefix>:ch:<channel>`, everything else on the
//! addressed node's `<prefix>:node:<n>`.
//!
//! Publishes, sends and calls carry a deadline on Redis's clock (unix ms,
//! 0 = none): a node that receives one after it drops it, because the
//! sender has already answered its caller (see [`super::deadline`]). They
//! use the kinds `p`, `s`, `c`; the earlier `P`, `S`, `C` (no deadline) are
//! still read, and a node that predates deadlines ignores the new kinds
//! instead of misreading them (its publisher then lists it in `missing`).
//!
//! Presence requests (`W`, on the channel asked about) and answers (`V`)
//! carry no deadline: they change nothing, and a late answer is ignored.

use crate::client_id::ClientId;
use crate::frame::FrameType;
use crate::presence::Presence;
use crate::publication::Position;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::sync::Arc;

/// One message between nodes.
#[derive(Debug, Clone, PartialEq)]
pub enum Wire {
    /// A publish to a channel; `req` 0 means no report is wanted. `event`
    /// and `position` are the [`crate::publication::Publication`] fields
    /// beyond the frame (kind `q`; a publish without them is kind `p`).
    Publish {
        origin: u32,
        req: u64,
        deadline: u64,
        ftype: FrameType,
        data: Bytes,
        event: Option<Arc<str>>,
        position: Option<Position>,
    },
    /// A node's local delivery counts for publish `req`.
    Report { from: u32, req: u64, s: u64, f: u64 },
    /// Several [`Wire::Report`]s of one node in one message (kind `B`):
    /// `(req, s, f)` each (see [`super::report_batch`]). A node that
    /// predates it ignores it, and its publisher lists the sender in
    /// `missing`.
    Reports {
        from: u32,
        reports: Vec<(u64, u64, u64)>,
    },
    /// `mesh.send` to a client on the addressed node.
    Send {
        origin: u32,
        req: u64,
        deadline: u64,
        client: ClientId,
        ftype: FrameType,
        data: Bytes,
    },
    /// `conn.call` on a client of the addressed node; `call` is JSON `{f, a}`.
    Call {
        origin: u32,
        req: u64,
        deadline: u64,
        client: ClientId,
        call: Bytes,
    },
    /// The answer to a `Send` or `Call`.
    Ack {
        from: u32,
        req: u64,
        status: AckStatus,
        message: String,
    },
    /// Presence request `req`, published on the channel it asks about so
    /// that exactly the nodes with its subscribers hear it (kind `W`);
    /// `ids`: with client ids, else counts and users only.
    Who { origin: u32, req: u64, ids: bool },
    /// A node's local presence for request `req` (kind `V`): count, client
    /// ids, distinct users (`missing` and `error` are not sent).
    Present {
        from: u32,
        req: u64,
        presence: Presence,
    },
}

/// Outcome carried by an [`Wire::Ack`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckStatus {
    Ok = 0,
    UnknownClient = 1,
    Busy = 2,
    Failed = 3,
    /// It arrived after its deadline and was dropped.
    Expired = 4,
}

impl AckStatus {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => AckStatus::Ok,
            1 => AckStatus::UnknownClient,
            2 => AckStatus::Busy,
            3 => AckStatus::Failed,
            4 => AckStatus::Expired,
            _ => return None,
        })
    }
}

fn ftype_byte(t: FrameType) -> u8 {
    match t {
        FrameType::Text => 0,
        FrameType::Binary => 1,
    }
}

fn ftype_from(b: u8) -> Option<FrameType> {
    match b {
        0 => Some(FrameType::Text),
        1 => Some(FrameType::Binary),
        _ => None,
    }
}

/// A string of at most 64 KiB, length first (u16, little-endian).
fn put_str16(b: &mut BytesMut, s: &str) {
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    b.put_u16_le(s.len() as u16);
    b.put_slice(s);
}

fn get_str16(b: &mut Bytes) -> Option<String> {
    if b.remaining() < 2 {
        return None;
    }
    let n = b.get_u16_le() as usize;
    if b.remaining() < n {
        return None;
    }
    String::from_utf8(b.split_to(n).to_vec()).ok()
}

/// The bytes of a history publish (kind `q` with a position) up to its
/// position, for the Redis script that assigns the offset: it appends the
/// offset (u64 LE), the epoch (u16 LE length, then its bytes) and the data
/// (see `broker::redis_history`).
pub fn history_publish_head(
    origin: u32,
    req: u64,
    deadline: u64,
    ftype: FrameType,
    event: Option<&str>,
) -> Bytes {
    let mut b = BytesMut::with_capacity(24 + event.map_or(0, |e| 2 + e.len()));
    b.put_u8(b'q');
    b.put_u32_le(origin);
    b.put_u64_le(req);
    b.put_u64_le(deadline);
    b.put_u8(ftype_byte(ftype));
    b.put_u8(u8::from(event.is_some()) | 2);
    if let Some(e) = event {
        put_str16(&mut b, e);
    }
    b.freeze()
}

impl Wire {
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::new();
        match self {
            Wire::Publish {
                origin,
                req,
                deadline,
                ftype,
                data,
                event,
                position,
            } => {
                let extended = event.is_some() || position.is_some();
                b.reserve(22 + data.len() + if extended { 300 } else { 0 });
                b.put_u8(if extended { b'q' } else { b'p' });
                b.put_u32_le(*origin);
                b.put_u64_le(*req);
                b.put_u64_le(*deadline);
                b.put_u8(ftype_byte(*ftype));
                if extended {
                    b.put_u8(u8::from(event.is_some()) | u8::from(position.is_some()) << 1);
                    if let Some(e) = event {
                        put_str16(&mut b, e);
                    }
                    if let Some(p) = position {
                        b.put_u64_le(p.offset);
                        put_str16(&mut b, &p.epoch);
                    }
                }
                b.put_slice(data);
            }
            Wire::Report { from, req, s, f } => {
                b.put_u8(b'R');
                b.put_u32_le(*from);
                b.put_u64_le(*req);
                b.put_u64_le(*s);
                b.put_u64_le(*f);
            }
            Wire::Reports { from, reports } => {
                b.reserve(8 + 24 * reports.len());
                b.put_u8(b'B');
                b.put_u32_le(*from);
                b.put_u32_le(reports.len() as u32);
                for (req, s, f) in reports {
                    b.put_u64_le(*req);
                    b.put_u64_le(*s);
                    b.put_u64_le(*f);
                }
            }
            Wire::Send {
                origin,
                req,
                deadline,
                client,
                ftype,
                data,
            } => {
                b.put_u8(b's');
                b.put_u32_le(*origin);
                b.put_u64_le(*req);
                b.put_u64_le(*deadline);
                b.put_u64_le(*client);
                b.put_u8(ftype_byte(*ftype));
                b.put_slice(data);
            }
            Wire::Call {
                origin,
                req,
                deadline,
                client,
                call,
            } => {
                b.put_u8(b'c');
                b.put_u32_le(*origin);
                b.put_u64_le(*req);
                b.put_u64_le(*deadline);
                b.put_u64_le(*client);
                b.put_slice(call);
            }
            Wire::Ack {
                from,
                req,
                status,
                message,
            } => {
                b.put_u8(b'A');
                b.put_u32_le(*from);
                b.put_u64_le(*req);
                b.put_u8(*status as u8);
                b.put_slice(message.as_bytes());
            }
            Wire::Who { origin, req, ids } => {
                b.put_u8(b'W');
                b.put_u32_le(*origin);
                b.put_u64_le(*req);
                b.put_u8(u8::from(*ids));
            }
            Wire::Present {
                from,
                req,
                presence,
            } => {
                let users: usize = presence.users.iter().map(|u| u.len() + 2).sum();
                b.reserve(25 + presence.clients.len() * 8 + users);
                b.put_u8(b'V');
                b.put_u32_le(*from);
                b.put_u64_le(*req);
                b.put_u64_le(presence.count);
                b.put_u32_le(presence.clients.len() as u32);
                for c in &presence.clients {
                    b.put_u64_le(*c);
                }
                for u in &presence.users {
                    put_str16(&mut b, u);
                }
            }
        }
        b.freeze()
    }

    /// Parses a message; `None` for anything malformed (ignored by callers).
    pub fn decode(mut b: Bytes) -> Option<Wire> {
        if b.is_empty() {
            return None;
        }
        let kind = b.get_u8();
        let need = |b: &Bytes, n: usize| b.remaining() >= n;
        // The lowercase kinds carry a deadline after `req`.
        let dl = if kind.is_ascii_lowercase() { 8 } else { 0 };
        let deadline = |b: &mut Bytes| if dl > 0 { b.get_u64_le() } else { 0 };
        Some(match kind {
            b'P' | b'p' if need(&b, 13 + dl) => {
                let origin = b.get_u32_le();
                let req = b.get_u64_le();
                let deadline = deadline(&mut b);
                let ftype = ftype_from(b.get_u8())?;
                Wire::Publish {
                    origin,
                    req,
                    deadline,
                    ftype,
                    data: b,
                    event: None,
                    position: None,
                }
            }
            b'q' if need(&b, 30) => {
                let origin = b.get_u32_le();
                let req = b.get_u64_le();
                let deadline = b.get_u64_le();
                let ftype = ftype_from(b.get_u8())?;
                let flags = b.get_u8();
                let event = if flags & 1 != 0 {
                    Some(get_str16(&mut b)?.into())
                } else {
                    None
                };
                let position = if flags & 2 != 0 {
                    if !need(&b, 8) {
                        return None;
                    }
                    let offset = b.get_u64_le();
                    let epoch = get_str16(&mut b)?.into();
                    Some(Position { offset, epoch })
                } else {
                    None
                };
                Wire::Publish {
                    origin,
                    req,
                    deadline,
                    ftype,
                    data: b,
                    event,
                    position,
                }
            }
            b'R' if need(&b, 28) => Wire::Report {
                from: b.get_u32_le(),
                req: b.get_u64_le(),
                s: b.get_u64_le(),
                f: b.get_u64_le(),
            },
            b'B' if need(&b, 8) => {
                let from = b.get_u32_le();
                let n = b.get_u32_le() as usize;
                if b.remaining() != n.checked_mul(24)? {
                    return None;
                }
                let reports = (0..n)
                    .map(|_| (b.get_u64_le(), b.get_u64_le(), b.get_u64_le()))
                    .collect();
                Wire::Reports { from, reports }
            }
            b'S' | b's' if need(&b, 21 + dl) => {
                let origin = b.get_u32_le();
                let req = b.get_u64_le();
                let deadline = deadline(&mut b);
                let client = b.get_u64_le();
                let ftype = ftype_from(b.get_u8())?;
                Wire::Send {
                    origin,
                    req,
                    deadline,
                    client,
                    ftype,
                    data: b,
                }
            }
            b'C' | b'c' if need(&b, 20 + dl) => Wire::Call {
                origin: b.get_u32_le(),
                req: b.get_u64_le(),
                deadline: deadline(&mut b),
                client: b.get_u64_le(),
                call: b,
            },
            b'A' if need(&b, 13) => Wire::Ack {
                from: b.get_u32_le(),
                req: b.get_u64_le(),
                status: AckStatus::from_u8(b.get_u8())?,
                message: String::from_utf8_lossy(&b).into_owned(),
            },
            b'W' if need(&b, 13) => Wire::Who {
                origin: b.get_u32_le(),
                req: b.get_u64_le(),
                ids: b.get_u8() != 0,
            },
            b'V' if need(&b, 24) => {
                let from = b.get_u32_le();
                let req = b.get_u64_le();
                let count = b.get_u64_le();
                let n = b.get_u32_le() as usize;
                if !need(&b, n.checked_mul(8)?) {
                    return None;
                }
                let clients = (0..n).map(|_| b.get_u64_le()).collect();
                let mut users = Vec::new();
                while b.has_remaining() {
                    users.push(get_str16(&mut b)?.into());
                }
                Wire::Present {
                    from,
                    req,
                    presence: Presence {
                        count,
                        clients,
                        users,
                        ..Default::default()
                    },
                }
            }
            _ => return None,
        })
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
