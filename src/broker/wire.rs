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

use crate::client_id::ClientId;
use crate::frame::FrameType;
use bytes::{Buf, BufMut, Bytes, BytesMut};

/// One message between nodes.
#[derive(Debug, Clone, PartialEq)]
pub enum Wire {
    /// A publish to a channel; `req` 0 means no report is wanted.
    Publish {
        origin: u32,
        req: u64,
        deadline: u64,
        ftype: FrameType,
        data: Bytes,
    },
    /// A node's local delivery counts for publish `req`.
    Report { from: u32, req: u64, s: u64, f: u64 },
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
            } => {
                b.reserve(22 + data.len());
                b.put_u8(b'p');
                b.put_u32_le(*origin);
                b.put_u64_le(*req);
                b.put_u64_le(*deadline);
                b.put_u8(ftype_byte(*ftype));
                b.put_slice(data);
            }
            Wire::Report { from, req, s, f } => {
                b.put_u8(b'R');
                b.put_u32_le(*from);
                b.put_u64_le(*req);
                b.put_u64_le(*s);
                b.put_u64_le(*f);
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
                }
            }
            b'R' if need(&b, 28) => Wire::Report {
                from: b.get_u32_le(),
                req: b.get_u64_le(),
                s: b.get_u64_le(),
                f: b.get_u64_le(),
            },
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
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let all = vec![
            Wire::Publish {
                origin: 3,
                req: 9,
                deadline: 1_700_000_000_123,
                ftype: FrameType::Binary,
                data: Bytes::from_static(b"\0\xffdata"),
            },
            Wire::Report {
                from: 2,
                req: 9,
                s: 10,
                f: 1,
            },
            Wire::Send {
                origin: 1,
                req: 4,
                deadline: 0,
                client: 7 << 32 | 5,
                ftype: FrameType::Text,
                data: Bytes::from_static(b"hi"),
            },
            Wire::Call {
                origin: 1,
                req: 5,
                deadline: 42,
                client: 8,
                call: Bytes::from_static(br#"{"f":"subscribe","a":["x"]}"#),
            },
            Wire::Ack {
                from: 2,
                req: 5,
                status: AckStatus::UnknownClient,
                message: "client 8 not found".into(),
            },
            Wire::Ack {
                from: 2,
                req: 6,
                status: AckStatus::Expired,
                message: String::new(),
            },
        ];
        for w in all {
            assert_eq!(Wire::decode(w.encode()), Some(w));
        }
        assert_eq!(Wire::decode(Bytes::from_static(b"Px")), None);
        assert_eq!(
            Wire::decode(Bytes::from_static(b"p\x01\0\0\0\0\0\0\0\0\0\0\0\0")),
            None
        );
        // The kinds without a deadline (nodes of earlier versions).
        let mut old = vec![b'P'];
        old.extend_from_slice(&3u32.to_le_bytes());
        old.extend_from_slice(&9u64.to_le_bytes());
        old.extend_from_slice(b"\x00hi");
        assert_eq!(
            Wire::decode(Bytes::from(old)),
            Some(Wire::Publish {
                origin: 3,
                req: 9,
                deadline: 0,
                ftype: FrameType::Text,
                data: Bytes::from_static(b"hi"),
            })
        );
        assert_eq!(Wire::decode(Bytes::new()), None);
    }
}
