//! A deliberately small WebSocket client (RFC 6455) for the thousands of
//! receiving connections: the upgrade request, a frame parser over one
//! reusable buffer, and masked writes. No allocation per received frame; a
//! payload is handed out as a slice of the read buffer.
//!
//! Why not tokio-tungstenite here: it allocates a message per frame and
//! validates UTF-8, which is fine for a client but not for a load generator
//! that must stay cheaper than the server it measures. tokio-tungstenite is
//! used where convenience matters more (the WebSocket publish API in
//! `publish::wsapi`). This module owns the socket of one connection; it knows
//! nothing about connmix or Socket.IO messages.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Initial read buffer: holds dozens of small frames; grows for big ones.
const READ_BUF: usize = 4096;
/// Largest message accepted (a misbehaving server must not eat our memory).
const MAX_MESSAGE: usize = 16 << 20;

/// Where a WebSocket server is.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: String,
    /// Path and query of the upgrade request.
    pub path: String,
}

impl Endpoint {
    /// Parses `ws://host:port/path?query` (IP or resolvable name).
    pub fn parse(url: &str) -> anyhow::Result<Endpoint> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| anyhow::anyhow!("{url}: only ws:// URLs are supported"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let host_port = if host.contains(':') {
            host.to_string()
        } else {
            format!("{host}:80")
        };
        use std::net::ToSocketAddrs;
        let addr = host_port
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| anyhow::anyhow!("{url}: cannot resolve {host}"))?;
        Ok(Endpoint {
            addr,
            host: host.to_string(),
            path: path.to_string(),
        })
    }
}

/// Why a connection failed.
#[derive(Debug)]
pub enum WsError {
    Io(std::io::Error),
    /// The server answered the upgrade with something other than 101.
    Refused(String),
    Protocol(&'static str),
    Closed,
}

impl std::fmt::Display for WsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WsError::Io(e) => write!(f, "{e}"),
            WsError::Refused(s) => write!(f, "upgrade refused: {s}"),
            WsError::Protocol(s) => write!(f, "protocol error: {s}"),
            WsError::Closed => write!(f, "connection closed"),
        }
    }
}

impl std::error::Error for WsError {}

impl From<std::io::Error> for WsError {
    fn from(e: std::io::Error) -> Self {
        WsError::Io(e)
    }
}

/// A complete message in the buffer: its opcode and where its payload is
/// (see [`WsConn::payload`]).
#[derive(Debug, Clone, Copy)]
pub struct Frame {
    pub op: u8,
    start: usize,
    end: usize,
    /// The payload was reassembled from fragments into `WsConn::frag`.
    reassembled: bool,
}

/// One client connection.
pub struct WsConn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Unparsed bytes are `buf[head..tail]`.
    head: usize,
    tail: usize,
    /// A fragmented message being reassembled (opcode, data).
    frag: Option<(u8, Vec<u8>)>,
    done_frag: Vec<u8>,
    mask_seed: u32,
    /// Scratch for outgoing frames.
    out: Vec<u8>,
}

/// Opens a TCP connection from `src` (if given) to `addr`. With several
/// loopback source addresses the ephemeral ports of each are usable, and
/// `IP_BIND_ADDRESS_NO_PORT` lets the kernel pick the port at connect time
/// so a port is shared across destinations.
pub async fn tcp_connect(src: Option<Ipv4Addr>, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let (Some(ip), true) = (src, addr.is_ipv4()) {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on a socket we own, with a valid int option.
        unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        sock.bind(SocketAddr::V4(SocketAddrV4::new(ip, 0)))?;
    }
    let stream = sock.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl WsConn {
    /// TCP connect plus the HTTP upgrade. Bytes the server sent after its
    /// 101 answer (Engine.IO's open packet often shares the segment) are kept.
    pub async fn connect(
        ep: &Endpoint,
        src: Option<Ipv4Addr>,
        seed: u32,
    ) -> Result<WsConn, WsError> {
        let mut stream = tcp_connect(src, ep.addr).await?;
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            ep.path, ep.host
        );
        stream.write_all(req.as_bytes()).await?;
        let mut buf = vec![0u8; READ_BUF];
        let mut tail = 0;
        let head_end = loop {
            if tail == buf.len() {
                return Err(WsError::Protocol("upgrade answer too large"));
            }
            let n = stream.read(&mut buf[tail..]).await?;
            if n == 0 {
                return Err(WsError::Closed);
            }
            tail += n;
            if let Some(i) = find(&buf[..tail], b"\r\n\r\n") {
                break i + 4;
            }
        };
        let status = String::from_utf8_lossy(&buf[..head_end]);
        let first = status.lines().next().unwrap_or("").to_string();
        if !first.starts_with("HTTP/1.1 101") {
            return Err(WsError::Refused(first));
        }
        Ok(WsConn {
            stream,
            buf,
            head: head_end,
            tail,
            frag: None,
            done_frag: Vec::new(),
            mask_seed: seed | 1,
            out: Vec::with_capacity(128),
        })
    }

    /// Reads more bytes from the socket; `Ok(0)` is end of stream.
    /// Cancel-safe (no data is lost if the future is dropped).
    pub async fn fill(&mut self) -> std::io::Result<usize> {
        if self.head == self.tail {
            self.head = 0;
            self.tail = 0;
        } else if self.tail == self.buf.len() {
            if self.head > 0 {
                self.buf.copy_within(self.head..self.tail, 0);
                self.tail -= self.head;
                self.head = 0;
            } else {
                let len = self.buf.len() * 2;
                self.buf.resize(len, 0);
            }
        }
        let n = self.stream.read(&mut self.buf[self.tail..]).await?;
        self.tail += n;
        Ok(n)
    }

    /// The next complete message (data or control) in the buffer, or `None`
    /// until [`fill`](Self::fill) reads more.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WsError> {
        loop {
            let b = &self.buf[self.head..self.tail];
            if b.len() < 2 {
                return Ok(None);
            }
            let fin = b[0] & 0x80 != 0;
            let op = b[0] & 0x0f;
            if b[1] & 0x80 != 0 {
                return Err(WsError::Protocol("masked frame from server"));
            }
            let (len, hdr) = match b[1] & 0x7f {
                126 => {
                    if b.len() < 4 {
                        return Ok(None);
                    }
                    (u16::from_be_bytes([b[2], b[3]]) as usize, 4)
                }
                127 => {
                    if b.len() < 10 {
                        return Ok(None);
                    }
                    let mut l = [0u8; 8];
                    l.copy_from_slice(&b[2..10]);
                    (u64::from_be_bytes(l) as usize, 10)
                }
                n => (n as usize, 2),
            };
            if len > MAX_MESSAGE {
                return Err(WsError::Protocol("frame too large"));
            }
            if b.len() < hdr + len {
                // Make room for the whole frame so `fill` can complete it.
                let need = hdr + len;
                if need > self.buf.len() - self.head {
                    self.buf.copy_within(self.head..self.tail, 0);
                    self.tail -= self.head;
                    self.head = 0;
                    if need > self.buf.len() {
                        self.buf.resize(need.next_power_of_two(), 0);
                    }
                }
                return Ok(None);
            }
            let start = self.head + hdr;
            let end = start + len;
            self.head = end;
            if op >= 0x8 {
                // Control frames may interleave fragments; never fragmented.
                return Ok(Some(Frame {
                    op,
                    start,
                    end,
                    reassembled: false,
                }));
            }
            match (op, fin, self.frag.is_some()) {
                (OP_CONT, _, false) => return Err(WsError::Protocol("unexpected continuation")),
                (OP_CONT, _, true) => {
                    let data = &self.buf[start..end];
                    if let Some((_, acc)) = self.frag.as_mut() {
                        if acc.len() + data.len() > MAX_MESSAGE {
                            return Err(WsError::Protocol("message too large"));
                        }
                        acc.extend_from_slice(data);
                    }
                    if fin {
                        let (first_op, acc) = self.frag.take().unwrap_or((OP_BINARY, Vec::new()));
                        self.done_frag = acc;
                        return Ok(Some(Frame {
                            op: first_op,
                            start: 0,
                            end: self.done_frag.len(),
                            reassembled: true,
                        }));
                    }
                }
                (_, _, true) => {
                    return Err(WsError::Protocol("new message inside a fragmented one"));
                }
                (_, true, false) => {
                    return Ok(Some(Frame {
                        op,
                        start,
                        end,
                        reassembled: false,
                    }));
                }
                (_, false, false) => self.frag = Some((op, self.buf[start..end].to_vec())),
            }
        }
    }

    /// The payload of a frame returned by the last [`next_frame`](Self::next_frame).
    #[inline]
    pub fn payload(&self, f: &Frame) -> &[u8] {
        if f.reassembled {
            &self.done_frag[f.start..f.end]
        } else {
            &self.buf[f.start..f.end]
        }
    }

    /// Waits for the next text/binary message and returns a copy; answers
    /// pings on the way (for the short setup exchanges, not the hot path).
    pub async fn recv_message(&mut self) -> Result<Vec<u8>, WsError> {
        loop {
            while let Some(f) = self.next_frame()? {
                match f.op {
                    OP_TEXT | OP_BINARY => return Ok(self.payload(&f).to_vec()),
                    OP_PING => {
                        let p = self.payload(&f).to_vec();
                        self.send(OP_PONG, &p).await?;
                    }
                    OP_CLOSE => return Err(WsError::Closed),
                    _ => {}
                }
            }
            if self.fill().await? == 0 {
                return Err(WsError::Closed);
            }
        }
    }

    /// Sends one masked frame.
    pub async fn send(&mut self, op: u8, data: &[u8]) -> std::io::Result<()> {
        // xorshift32: masks need not be secret here, only present.
        let mut x = self.mask_seed;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.mask_seed = x;
        let mask = x.to_be_bytes();
        self.out.clear();
        self.out.push(0x80 | op);
        match data.len() {
            n if n < 126 => self.out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                self.out.push(0x80 | 126);
                self.out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                self.out.push(0x80 | 127);
                self.out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        self.out.extend_from_slice(&mask);
        self.out
            .extend(data.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        self.stream.write_all(&self.out).await
    }

    pub async fn send_text(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.send(OP_TEXT, data).await
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
