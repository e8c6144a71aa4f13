//! The frame of a publish or send: its type (`t` in the API, `type` in Lua)
//! and how one is built from bytes and taken apart again to cross nodes.
//!
//! A leaf module: it imports nothing of the crate, so the API, Lua, the mesh
//! and the brokers can all use it without depending on each other.

use bytes::Bytes;
use tungstenite::Message;

/// Frame type of a publish or send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    Text,
    Binary,
}

impl FrameType {
    /// Parses `"text"`/`"binary"`; absent means text.
    pub fn parse(t: Option<&str>) -> Option<FrameType> {
        match t {
            None | Some("text") | Some("") => Some(FrameType::Text),
            Some("binary") => Some(FrameType::Binary),
            _ => None,
        }
    }
}

/// A text frame whose data is not UTF-8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("text data is not valid UTF-8")]
pub struct InvalidText;

/// Builds the frame once; every subscriber shares its payload.
pub fn frame(data: Bytes, t: FrameType) -> Result<Message, InvalidText> {
    match t {
        FrameType::Binary => Ok(Message::Binary(data)),
        FrameType::Text => tungstenite::Utf8Bytes::try_from(data)
            .map(Message::Text)
            .map_err(|_| InvalidText),
    }
}

/// The frame's type and payload, as they travel between nodes.
pub fn parts(msg: &Message) -> (FrameType, Bytes) {
    match msg {
        Message::Binary(b) => (FrameType::Binary, b.clone()),
        Message::Text(t) => (FrameType::Text, AsRef::<Bytes>::as_ref(t).clone()),
        _ => (FrameType::Binary, Bytes::new()),
    }
}
