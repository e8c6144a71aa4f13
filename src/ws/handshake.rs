//! The HTTP side of a client connection: reading the upgrade request and
//! writing the answer (101, or a refusal with a status and a body).
//!
//! Done by hand rather than through tungstenite's callback because the
//! `on_handshake` hook is asynchronous (it may call an HTTP API) and must run
//! before the upgrade is answered.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest request head accepted.
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;

/// A parsed upgrade request.
#[derive(Debug)]
pub struct UpgradeRequest {
    pub method: String,
    /// Path and query as sent (`/chat?token=x`).
    pub uri: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
}

impl UpgradeRequest {
    /// First value of a header, case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The path without its query.
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or("/")
    }

    fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Checks the request is a WebSocket upgrade; the error is the status and
    /// reason to answer with.
    pub fn check_upgrade(&self) -> Result<&str, (u16, &'static str)> {
        if self.method != "GET" {
            return Err((405, "WebSocket upgrade must use GET"));
        }
        if !self.header_has_token("upgrade", "websocket")
            || !self.header_has_token("connection", "upgrade")
        {
            return Err((426, "This endpoint speaks WebSocket only"));
        }
        if self.header("sec-websocket-version") != Some("13") {
            return Err((400, "Unsupported Sec-WebSocket-Version (need 13)"));
        }
        self.header("sec-websocket-key")
            .filter(|k| !k.trim().is_empty())
            .ok_or((400, "Missing Sec-WebSocket-Key"))
    }
}

/// Why no request could be read.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("connection closed before the request was complete")]
    Eof,
    #[error("request head larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads one request head. Returns it and any bytes read past its end (the
/// client's first frames, if it did not wait for the answer).
pub async fn read_request(
    stream: &mut TcpStream,
) -> Result<(UpgradeRequest, Vec<u8>), HandshakeError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(HandshakeError::Eof);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let parsed = UpgradeRequest {
                    method: req.method.unwrap_or("").to_string(),
                    uri: req.path.unwrap_or("/").to_string(),
                    version: format!("HTTP/1.{}", req.version.unwrap_or(1)),
                    headers: req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).to_string(),
                            )
                        })
                        .collect(),
                };
                let rest = buf[len..].to_vec();
                return Ok((parsed, rest));
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    return Err(HandshakeError::TooLarge);
                }
            }
            Err(e) => return Err(HandshakeError::Malformed(e.to_string())),
        }
    }
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Refused",
    }
}

/// Writes a refusal and closes the write side.
pub async fn refuse(stream: &mut TcpStream, status: u16, body: &str) {
    let mut extra = String::new();
    if status == 426 {
        extra.push_str("Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
    }
    let resp = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        reason_phrase(status),
        body.len()
    );
    let _ = stream.write_all(resp.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Writes the 101 answer that completes the upgrade.
pub async fn accept(
    stream: &mut TcpStream,
    key: &str,
    protocol: Option<&str>,
) -> std::io::Result<()> {
    let accept = tungstenite::handshake::derive_accept_key(key.trim().as_bytes());
    let proto = protocol
        .map(|p| format!("Sec-WebSocket-Protocol: {p}\r\n"))
        .unwrap_or_default();
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n{proto}\r\n"
    );
    stream.write_all(resp.as_bytes()).await
}
