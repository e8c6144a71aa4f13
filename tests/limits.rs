//! Bounds on what clients and backends can make the gateway hold, and what
//! happens at each bound (README "Limits"): large frames are delivered, not
//! dropped; a client or backend that stops reading is closed, never grows the
//! gateway; oversized `/ws/v1` frames are refused; `/ws/v1` requests take
//! effect in the order sent.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;

/// The value of the first `/metrics` line that starts with `name` and
/// contains every one of `labels` (0 if none).
async fn metric_with(gw: &Gateway, name: &str, labels: &[&str]) -> f64 {
    let text = gw.metrics_text().await;
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|x| l.contains(x)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_kb_publish_reaches_every_subscriber_and_a_300_kb_conn_send_arrives() {
    let gw = Gateway::start_with(vec![probe("/p", "")], "apiServer.maxBodySize: 1048576", "").await;
    let url = gw.url(0);
    let mut subs = Vec::new();
    for _ in 0..3 {
        let mut c = Client::connect(&url).await;
        c.eval("return (...):subscribe('big')").await;
        subs.push(c);
    }
    let big = format!("start|{}|end", "x".repeat(200_000));
    let r = gw
        .call("/v1/mesh/publish", json!({"c": "big", "d": big}))
        .await;
    assert_eq!(r["r"], json!({"s": 3, "f": 0}), "{r}");
    for c in &mut subs {
        assert_eq!(c.recv().await, big, "the whole frame arrives");
    }
    // Still connected: a small publish follows.
    assert_eq!(gw.publish("big", "after").await, (3, 0));
    for c in &mut subs {
        assert_eq!(c.recv().await, "after");
    }

    let c = &mut subs[0];
    c.send("(...):send(string.rep('y', 300000)); return true")
        .await;
    let got = c.recv().await;
    assert_eq!(got.len(), 300_000);
    assert!(got.bytes().all(|b| b == b'y'));
    assert_eq!(
        c.recv_json().await["r"],
        true,
        "and the connection lives on"
    );
}

#[tokio::test]
async fn a_frame_larger_than_the_outbox_is_refused_without_closing_the_client() {
    let gw = Gateway::start(vec![probe("/p", "").extra("outboundQueueBytes: 100000")]).await;
    let mut c = Client::connect(&gw.url(0)).await;
    let v = c.eval("return (...):send(string.rep('y', 100001))").await;
    let refused = v["r"].is_null() || v["r"] == false || v["r"].is_string();
    assert!(
        refused && v.to_string().contains("send failed"),
        "send refused: {v}"
    );
    assert_eq!(c.eval("return 1 + 1").await["r"], 2, "the client stays");
}

#[tokio::test]
async fn outbound_queue_bytes_below_max_body_size_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("connmix.yaml");
    let entry = repo().join("lua/entry.websocket.lua");
    std::fs::write(
        &file,
        format!(
            "engine:\n  apiServer:\n    port: {}\n    maxBodySize: 2000000\n  servers:\n    - port: {}\n      entry: {}\n      outboundQueueBytes: 1000000\n",
            free_port(),
            free_port(),
            entry.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_connmix"))
        .args(["dev", "-f"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("engine.servers[0].outboundQueueBytes") && err.contains("maxBodySize"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_outbox_byte_bound_closes_a_stalled_reader_while_others_keep_receiving() {
    // Only the byte bound can trip: the message bound is far away and a
    // stalled write never times out.
    let gw = Gateway::start(vec![
        probe("/p", "")
            .extra("outboundQueueBytes: 1048576")
            .extra("outboundQueueSize: 100000")
            .extra("writeTimeout: 0"),
    ])
    .await;
    let url = gw.url(0);
    let mut slow = Client::connect_small_buffer(&url).await;
    slow.eval("return (...):subscribe('flood')").await;
    let mut fast = Client::connect(&url).await;
    fast.eval("return (...):subscribe('flood')").await;

    let pad = "z".repeat(60_000);
    let mut failed = 0;
    let mut sent = 0;
    // 400 x 60 KB = 24 MB: far beyond 1 MiB queued plus the socket buffers.
    for i in 0..400 {
        let (_, f) = gw.publish("flood", &format!("{i}|{pad}")).await;
        failed += f;
        sent += 1;
        let got = fast.recv().await;
        assert_eq!(got.split('|').next().unwrap(), i.to_string(), "in order");
        if failed > 0 {
            break;
        }
    }
    assert!(
        failed > 0,
        "{sent} publishes of 60 KB all queued for a client that never reads"
    );
    let closed = gw
        .wait_metric("connmix_slow_clients_closed_total", 1.0)
        .await;
    assert_eq!(closed, 1.0);
    assert_eq!(
        gw.publish("flood", "after").await.0,
        1,
        "only the fast client is delivered to"
    );
    assert_eq!(fast.recv().await, "after");
    // The stalled reader, reading at last, finds the 1013 close after what
    // was already in its socket (or the end of the stream, if the gateway
    // gave up flushing the close frame to it first).
    if let Some((code, reason)) = slow.closed().await {
        assert_eq!(code, 1013, "{reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_ws_api_publishes_arrive_in_order() {
    const N: u64 = 5000;
    let gw = Gateway::start(vec![probe("/p", "").extra("outboundQueueSize: 20000")]).await;
    let mut sub = Client::connect(&gw.url(0)).await;
    sub.eval("return (...):subscribe('seq')").await;
    let mut api = ApiClient::connect(&gw).await;
    for i in 0..N {
        api.send("mesh.publish", json!({"c": "seq", "d": i.to_string()}))
            .await;
    }
    for i in 0..N {
        assert_eq!(sub.recv().await, i.to_string(), "message {i} out of order");
    }
    let mut answered = 0;
    while answered < N {
        let v = api.next().await;
        assert_eq!(v["r"], json!({"s": 1, "f": 0}), "{v}");
        answered += 1;
    }
}

/// A TCP connection to the API port with a tiny receive buffer, so a client
/// that never reads pushes back on the gateway quickly.
async fn api_socket_small_buffer(gw: &Gateway) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.connect(format!("127.0.0.1:{}", gw.api_port).parse().unwrap())
        .await
        .unwrap()
}

/// Connects to `/ws/v1` with a tiny receive buffer, so a backend that never
/// reads pushes back on the gateway quickly.
async fn api_small_buffer(
    gw: &Gateway,
) -> tokio_tungstenite::WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>> {
    let stream = api_socket_small_buffer(gw).await;
    let url = format!("ws://127.0.0.1:{}/ws/v1", gw.api_port);
    let (ws, _) = tokio_tungstenite::client_async(url, MaybeTlsStream::Plain(stream))
        .await
        .unwrap();
    ws
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ws_api_client_that_never_reads_leaves_memory_bounded() {
    // 8,000 requests whose 16 KB id is echoed in each answer: 128 MB each
    // way. A gateway that reads them all without pushing back holds them.
    const N: usize = 8000;
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let rss_before = rss_bytes(gw.pid());
    let mut hog = api_small_buffer(&gw).await;
    let id = "i".repeat(16 * 1024);
    let sender = tokio::spawn(async move {
        for _ in 0..N {
            let req = json!({"m": "mesh.publish", "p": {"c": "nobody", "d": "x"}, "i": id});
            if hog.send(Message::text(req.to_string())).await.is_err() {
                return;
            }
        }
        // Keep the connection (and its unread answers) open.
        std::future::pending::<()>().await;
    });

    let name = "connmix_api_requests_total";
    let labels = ["ws:mesh.publish", "code=\"0\""];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    // Wait until the gateway has worked through what it will take before
    // pushing back: the count stops moving (or, unbounded, reaches N).
    let mut last = -1.0;
    let mut steady = 0;
    let processed = loop {
        let n = metric_with(&gw, name, &labels).await;
        if n as usize >= N {
            break n;
        }
        steady = if n == last && n > 0.0 { steady + 1 } else { 0 };
        if steady == 8 {
            break n;
        }
        last = n;
        assert!(tokio::time::Instant::now() < deadline, "stuck at {n}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let growth = rss_bytes(gw.pid()).saturating_sub(rss_before);
    eprintln!(
        "never-reading /ws/v1 client: {processed} of {N} requests taken, RSS +{} KiB",
        growth >> 10
    );
    assert!(
        (processed as usize) < N / 4,
        "the gateway read {processed} of {N} requests from a client that reads nothing"
    );
    assert!(growth < 64 << 20, "RSS grew by {} MiB", growth >> 20);
    assert!(!sender.is_finished(), "the gateway stopped reading the hog");

    // Everyone else is served.
    let mut other = ApiClient::connect(&gw).await;
    let v = other
        .request("mesh.publish", json!({"c": "nobody", "d": "x"}))
        .await;
    assert_eq!(v["r"], json!({"s": 0, "f": 0}), "{v}");
    assert_eq!(gw.publish("nobody", "x").await, (0, 0));
    sender.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ws_api_client_that_never_reads_is_disconnected_after_write_timeout() {
    let gw = Gateway::start_with(vec![probe("/p", "")], "apiServer.writeTimeout: 1", "").await;
    let mut hog = api_small_buffer(&gw).await;
    let id = "i".repeat(16 * 1024);
    // Sends until the gateway drops the connection (then a write fails).
    let sender = tokio::spawn(async move {
        for _ in 0..100_000 {
            let req = json!({"m": "mesh.publish", "p": {"c": "nobody", "d": "x"}, "i": id});
            if hog.send(Message::text(req.to_string())).await.is_err() {
                return true;
            }
        }
        false
    });
    gw.wait_metric("connmix_api_write_timeouts_total", 1.0)
        .await;
    let cut = tokio::time::timeout(DEADLINE, sender)
        .await
        .expect("the hog could still write: its connection was not closed")
        .unwrap();
    assert!(
        cut,
        "the gateway read 100,000 requests without pushing back"
    );
    let mut other = ApiClient::connect(&gw).await;
    let v = other
        .request("mesh.publish", json!({"c": "nobody", "d": "x"}))
        .await;
    assert_eq!(v["r"], json!({"s": 0, "f": 0}), "{v}");
}

#[tokio::test]
async fn a_15_mb_ws_api_frame_is_refused_with_1009_and_nothing_else_is_disturbed() {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let mut sub = Client::connect(&gw.url(0)).await;
    sub.eval("return (...):subscribe('calm')").await;
    let mut bystander = ApiClient::connect(&gw).await;

    let mut big = ApiClient::connect(&gw).await;
    // Only the header of a masked 15 MB text frame: a gateway that accepts
    // the size waits for the payload; one that checks it closes at once.
    let mut header = vec![0x81u8, 0x80 | 127];
    header.extend_from_slice(&15_000_000u64.to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    let MaybeTlsStream::Plain(tcp) = big.ws.get_mut() else {
        unreachable!()
    };
    tcp.write_all(&header).await.unwrap();
    let frame = tokio::time::timeout(DEADLINE, big.ws.next())
        .await
        .expect("no close before the deadline");
    match frame {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(u16::from(f.code), 1009, "{f:?}"),
        other => panic!("expected a 1009 close, got {other:?}"),
    }
    assert_eq!(gw.metric("connmix_api_frames_refused_total").await, 1.0);

    let v = bystander
        .request("mesh.publish", json!({"c": "calm", "d": "still here"}))
        .await;
    assert_eq!(v["r"], json!({"s": 1, "f": 0}), "{v}");
    assert_eq!(sub.recv().await, "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_never_reading_http_client_is_closed_after_write_timeout() {
    const PIPELINED: usize = 3000;
    let gw = Gateway::start_with(vec![probe("/p", "")], "apiServer.writeTimeout: 1", "").await;
    let stream = api_socket_small_buffer(&gw).await;
    let (mut rd, mut wr) = stream.into_split();
    // 3,000 pipelined requests for the 19 KB client library: 57 MB of
    // answers that this client never reads.
    let writer = tokio::spawn(async move {
        let req = b"GET /connmix.js HTTP/1.1\r\nHost: t\r\n\r\n".repeat(PIPELINED);
        let _ = wr.write_all(&req).await;
        wr
    });
    gw.wait_metric("connmix_api_write_timeouts_total", 1.0)
        .await;

    // A new API call works.
    assert_eq!(gw.publish("nobody", "x").await, (0, 0));

    // The socket was closed: reading it now ends (EOF or reset) well before
    // all the answers were sent.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(DEADLINE, rd.read_to_end(&mut buf))
        .await
        .expect("the gateway never closed the socket");
    let answers = buf.windows(15).filter(|w| w == b"HTTP/1.1 200 OK").count();
    assert!(
        answers < PIPELINED,
        "{answers} answers ({read:?}): the connection was never cut"
    );
    drop(writer);
}

/// on_close reports each closed connection on channel `closed`.
#[cfg(feature = "test-hooks")]
const ON_CLOSE: &str = r#"
function on_close(client_id, err, conn)
    mix.mesh.publish("closed", client_id .. ":" .. (err or "clean"))
end
"#;

/// A panic in a connection task (injected by the `test-hooks` build) closes
/// that client, runs its `on_close`, restores the counters, and SIGTERM
/// still ends the process.
#[cfg(feature = "test-hooks")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_connection_runs_on_close_and_shutdown_still_completes() {
    let mut gw = Gateway::start(vec![probe("/p", ON_CLOSE)]).await;
    let url = gw.url(0);
    let mut observer = Client::connect(&url).await;
    observer.eval("return (...):subscribe('closed')").await;
    let mut victim = Client::connect(&url).await;
    let id = victim.id().await;
    assert_eq!(gw.metric("connmix_engine_servers_clients").await, 2.0);

    victim.send("connmix-test-panic").await;
    if let Some((code, _)) = victim.closed().await {
        assert_eq!(code, 1011);
    }
    assert_eq!(observer.recv().await, format!("{id}:internal error"));
    assert_eq!(gw.metric("connmix_connection_panics_total").await, 1.0);
    assert_eq!(gw.metric("connmix_engine_servers_clients").await, 1.0);
    assert_eq!(observer.eval("return 1 + 1").await["r"], 2);

    let reader = tokio::spawn(async move { observer.closed().await });
    let status = gw.terminate();
    assert!(status.success(), "exit status {status}");
    assert_eq!(reader.await.unwrap().map(|c| c.0), Some(1001));
}

#[tokio::test]
async fn an_idle_keep_alive_api_connection_is_closed_after_read_timeout() {
    let gw = Gateway::start_with(vec![probe("/p", "")], "apiServer.readTimeout: 1", "").await;
    let mut s = tokio::net::TcpStream::connect(format!("127.0.0.1:{}", gw.api_port))
        .await
        .unwrap();
    s.write_all(b"GET /app.css HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    // Read the answer, then nothing more is sent: the gateway must hang up
    // (EOF) instead of keeping the socket for ever.
    let mut got = Vec::new();
    let ended = tokio::time::timeout(DEADLINE, s.read_to_end(&mut got)).await;
    assert!(ended.is_ok(), "an idle keep-alive connection was kept open");
    assert!(
        got.starts_with(b"HTTP/1.1 200 OK"),
        "{}",
        String::from_utf8_lossy(&got)
    );
}
