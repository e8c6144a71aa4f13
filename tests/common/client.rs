//! WebSocket clients of the gateway: a browser-like `Client` (with the
//! probe script's `eval`) and a backend's `ApiClient` on `/ws/v1`.

use super::*;

/// A WebSocket client.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"));
        Client { ws }
    }

    pub async fn send(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// Sends any frame (binary, ping, close...).
    pub async fn send_msg(&mut self, m: Message) {
        self.ws.send(m).await.unwrap();
    }

    /// Starts a clean close handshake.
    pub async fn close(&mut self) {
        self.ws.close(None).await.unwrap();
    }

    pub async fn send_json(&mut self, v: Value) {
        self.send(&v.to_string()).await;
    }

    /// The next data or close frame (pings/pongs skipped).
    pub async fn next(&mut self) -> Message {
        loop {
            let m = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("no frame before the deadline")
                .expect("connection ended")
                .expect("read error");
            match m {
                Message::Ping(_) | Message::Pong(_) => continue,
                m => return m,
            }
        }
    }

    /// The next frame, which must be text.
    pub async fn recv(&mut self) -> String {
        match self.next().await {
            Message::Text(t) => t.to_string(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }

    /// The next text frame that is not `skip` (a warm-up payload that a
    /// retried publish may have delivered more than once).
    pub async fn recv_skipping(&mut self, skip: &str) -> String {
        loop {
            let t = self.recv().await;
            if t != skip {
                return t;
            }
        }
    }

    /// The next `n` text frames.
    pub async fn recv_n(&mut self, n: usize) -> Vec<String> {
        let mut got = Vec::with_capacity(n);
        for _ in 0..n {
            got.push(self.recv().await);
        }
        got
    }

    pub async fn recv_json(&mut self) -> Value {
        let t = self.recv().await;
        serde_json::from_str(&t).unwrap_or_else(|e| panic!("{e}: {t}"))
    }

    /// Sends a request and expects `{"result":true}`.
    pub async fn ok(&mut self, v: Value) {
        self.send_json(v.clone()).await;
        assert_eq!(self.recv_json().await, json!({"result": true}), "for {v}");
    }

    /// Reads until the server closes; returns the close code and reason.
    pub async fn closed(&mut self) -> Option<(u16, String)> {
        loop {
            match tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("not closed before the deadline")
            {
                Some(Ok(Message::Close(f))) => {
                    // Keep polling so our close reply is flushed, as a
                    // browser would, until the server ends the TCP stream.
                    let _ = tokio::time::timeout(DEADLINE, async {
                        while let Some(Ok(_)) = self.ws.next().await {}
                    })
                    .await;
                    return f.map(|f| (u16::from(f.code), f.reason.to_string()));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}

/// The message-center login: auth with `tok<uid>` and subscribe to `@user`.
pub async fn login(url: &str, uid: u64) -> Client {
    let mut c = Client::connect(url).await;
    c.ok(json!({"op": "auth", "token": format!("tok{uid}")}))
        .await;
    c.ok(json!({"op": "subscribe", "channel": "@user"})).await;
    c
}

impl Client {
    /// Runs `code` through [`PROBE_LUA`] and returns the answer object.
    pub async fn eval(&mut self, code: &str) -> Value {
        self.send(code).await;
        let v = self.recv_json().await;
        assert!(v.get("error").is_none(), "{code}\n-> {v}");
        v
    }

    /// Connects to a probe server and joins `channels` (Lua arguments of
    /// `conn:subscribe`, e.g. `'a', 'b'`).
    pub async fn subscribed(url: &str, channels: &str) -> Client {
        let mut c = Client::connect(url).await;
        c.eval(&format!("return (...):subscribe({channels})")).await;
        c
    }

    /// The client id the gateway gave this connection.
    pub async fn id(&mut self) -> String {
        let v = self.eval("return (...):client_id()").await;
        v["r"].as_str().unwrap().to_string()
    }
}

impl Client {
    /// Connects with a tiny socket receive buffer, so a client that stops
    /// reading pushes back on the gateway quickly (slow-client tests).
    pub async fn connect_small_buffer(url: &str) -> Client {
        let addr = url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let stream = sock.connect(addr.parse().unwrap()).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
        Client { ws }
    }
}

/// A backend's connection to the WebSocket API (`/ws/v1`).
pub struct ApiClient {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

impl ApiClient {
    pub async fn connect(gw: &Gateway) -> ApiClient {
        let url = format!("ws://127.0.0.1:{}/ws/v1", gw.api_port);
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        ApiClient { ws, next_id: 0 }
    }

    /// Sends a request without waiting; returns its id.
    pub async fn send(&mut self, m: &str, p: Value) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.ws
            .send(Message::text(json!({"m": m, "p": p, "i": id}).to_string()))
            .await
            .unwrap();
        id
    }

    /// Closes cleanly and waits until the gateway has let go of it.
    pub async fn close(mut self) {
        self.ws.close(None).await.unwrap();
        let _ = tokio::time::timeout(DEADLINE, async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }

    /// Sends a raw text frame.
    pub async fn ws_send_raw(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// The next text frame as JSON (responses and events alike); a frame
    /// that is not JSON comes back as `{"text": ...}`.
    pub async fn next(&mut self) -> Value {
        loop {
            let m = tokio::time::timeout(DEADLINE, self.ws.next())
                .await
                .expect("no API frame before the deadline")
                .expect("API connection ended")
                .unwrap();
            if let Message::Text(t) = m {
                return serde_json::from_str(&t).unwrap_or_else(|_| json!({"text": t.to_string()}));
            }
        }
    }

    /// Sends a request and returns its response (events arriving first are
    /// returned in `events`).
    pub async fn request(&mut self, m: &str, p: Value) -> Value {
        let id = self.send(m, p).await;
        loop {
            let v = self.next().await;
            if v["i"] == id {
                return v;
            }
            assert!(v.get("e").is_some(), "unexpected frame {v}");
        }
    }
}
