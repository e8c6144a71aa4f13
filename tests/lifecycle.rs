//! A connection's life as a client sees it: handshake (path, on_handshake,
//! limits), pings, timeouts, size limits, close handshakes, `on_close`
//! exactly once, several servers at once, and shutdown on SIGTERM.

mod common;

use common::*;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::http::StatusCode;

/// The status a refused upgrade got.
async fn refused(url: &str) -> (StatusCode, String) {
    match tokio_tungstenite::connect_async(url).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).to_string())
                .unwrap_or_default();
            (resp.status(), body)
        }
        Err(e) => panic!("expected an HTTP refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, the upgrade succeeded"),
    }
}

#[tokio::test]
async fn wrong_path_is_404() {
    let gw = Gateway::start(vec![probe("/chat", "")]).await;
    let url = format!("ws://127.0.0.1:{}/other", gw.ports[0]);
    assert_eq!(refused(&url).await.0, StatusCode::NOT_FOUND);
    // A query string does not change the path.
    Client::connect(&format!("{}?token=x", gw.url(0))).await;
}

const HANDSHAKE: &str = r#"
function on_handshake(client_id, headers, server, conn)
    if headers["X-Deny"] == "plain" then
        return false
    end
    if headers["X-Deny"] == "custom" then
        return false, 401, "token required"
    end
    seen = server.Method .. " " .. server.RequestUri .. " " .. headers["X-Hello"] .. " " .. client_id
    return true
end
"#;

#[tokio::test]
async fn on_handshake_can_refuse_and_sees_headers() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let gw = Gateway::start(vec![probe("/h", HANDSHAKE)]).await;
    let request = |deny: &str| {
        let mut r = format!("{}?q=1", gw.url(0)).into_client_request().unwrap();
        r.headers_mut().insert("X-Deny", deny.parse().unwrap());
        r.headers_mut().insert("X-Hello", "world".parse().unwrap());
        r
    };
    match tokio_tungstenite::connect_async(request("plain")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), StatusCode::FORBIDDEN)
        }
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    match tokio_tungstenite::connect_async(request("custom")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
            assert_eq!(r.body().as_deref(), Some(&b"token required"[..]));
        }
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
    let (ws, _) = tokio_tungstenite::connect_async(request("no"))
        .await
        .unwrap();
    let mut c = Client { ws };
    let id = c.id().await;
    let v = c.eval("return seen").await;
    assert_eq!(v["r"], format!("GET /h?q=1 world {id}"));
}

#[tokio::test]
async fn ping_gets_pong() {
    use futures_util::{SinkExt, StreamExt};
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let mut c = Client::connect(&gw.url(0)).await;
    c.ws.send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let m = tokio::time::timeout(DEADLINE, c.ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m, Message::Pong(b"are you there".to_vec().into()));
}

/// on_close reports each closed connection on channel `closed` as
/// `<client_id>:<err or clean>`.
const ON_CLOSE: &str = r#"
function on_close(client_id, err, conn)
    mix.mesh.publish("closed", client_id .. ":" .. (err or "clean"))
end
"#;

#[tokio::test]
async fn on_close_runs_exactly_once_however_the_connection_ends() {
    // Server 0 times idle clients out after 1 s; server 1 never does.
    let gw = Gateway::start(vec![
        probe("/idle", ON_CLOSE).extra("readTimeout: 1"),
        probe("/p", ON_CLOSE).extra("readTimeout: 0"),
    ])
    .await;
    let url = gw.url(1);
    let mut observer = Client::connect(&url).await;
    observer.eval("return (...):subscribe('closed')").await;

    // 1. Client-initiated clean close.
    let mut a = Client::connect(&url).await;
    let a_id = a.id().await;
    a.close().await;
    assert_eq!(a.closed().await, None, "close acknowledged");
    assert_eq!(observer.recv().await, format!("{a_id}:clean"));

    // 2. Server-initiated close with conn:close().
    let mut b = Client::connect(&url).await;
    let b_id = b.id().await;
    b.send("(...):close()").await;
    assert_eq!(b.closed().await.map(|c| c.0), Some(1000));
    assert_eq!(observer.recv().await, format!("{b_id}:clean"));

    // 3. The TCP connection just drops.
    let mut c = Client::connect(&url).await;
    let c_id = c.id().await;
    drop(c);
    let got = observer.recv().await;
    assert!(got.starts_with(&format!("{c_id}:")), "{got}");
    assert!(
        !got.ends_with(":clean"),
        "an abrupt drop is not clean: {got}"
    );

    // 4. Read timeout: a client that sends nothing is closed.
    let mut d = Client::connect(&gw.url(0)).await;
    let d_id = d.id().await;
    let (code, reason) = d.closed().await.expect("a close frame");
    assert_eq!((code, reason.as_str()), (1000, "read timeout"));
    assert_eq!(observer.recv().await, format!("{d_id}:read timeout"));

    // Exactly once each: the next frame is a fresh marker.
    assert_eq!(gw.publish("closed", "marker").await.0, 1);
    assert_eq!(observer.recv().await, "marker");
}

#[tokio::test]
async fn oversized_message_is_closed_with_1009_and_others_carry_on() {
    let gw = Gateway::start(vec![probe("/p", "").extra("maxMessageSize: 1024")]).await;
    let mut big = Client::connect(&gw.url(0)).await;
    let mut other = Client::connect(&gw.url(0)).await;
    big.send_msg(Message::text("x".repeat(4096))).await;
    assert_eq!(big.closed().await.map(|c| c.0), Some(1009));
    assert_eq!(other.eval("return 1 + 1").await["r"], 2);
}

#[tokio::test]
async fn max_connections_refuses_with_503() {
    let gw = Gateway::start(vec![probe("/p", "").extra("maxConnections: 2")]).await;
    let mut a = Client::connect(&gw.url(0)).await;
    let _b = Client::connect(&gw.url(0)).await;
    assert_eq!(refused(&gw.url(0)).await.0, StatusCode::SERVICE_UNAVAILABLE);
    a.close().await;
    a.closed().await;
    // The slot frees once a's close is processed.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while tokio_tungstenite::connect_async(gw.url(0)).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "slot never freed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn several_servers_each_with_their_own_port_path_and_script() {
    let one = ServerSpec::new(
        "/one",
        Script::Inline(r#"function on_message(m, conn) conn:send("one:" .. m.data) end"#.into()),
    );
    let two = ServerSpec::new(
        "/two",
        Script::Inline(r#"function on_message(m, conn) conn:send("two:" .. m.data) end"#.into()),
    );
    let gw = Gateway::start(vec![one, two]).await;
    let mut a = Client::connect(&gw.url(0)).await;
    let mut b = Client::connect(&gw.url(1)).await;
    a.send("x").await;
    b.send("y").await;
    assert_eq!(a.recv().await, "one:x");
    assert_eq!(b.recv().await, "two:y");
    assert_ne!(gw.ports[0], gw.ports[1]);
    let wrong = format!("ws://127.0.0.1:{}/two", gw.ports[0]);
    assert_eq!(refused(&wrong).await.0, StatusCode::NOT_FOUND);
}

const SHUTDOWN_CLOSE: &str = r#"
function on_close(client_id, err, conn)
    mix.log(mix.INFO, "on_close ran for " .. client_id)
end
"#;

// Multi-threaded: `terminate` blocks while the client task must keep running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_clients_with_1001_runs_on_close_and_exits_0() {
    let mut gw = Gateway::start(vec![probe("/p", SHUTDOWN_CLOSE)]).await;
    let mut a = Client::connect(&gw.url(0)).await;
    let id = a.id().await;
    let reader = tokio::spawn(async move { a.closed().await });
    let status = gw.terminate();
    assert!(status.success(), "exit status {status}");
    assert_eq!(reader.await.unwrap().map(|c| c.0), Some(1001));
    assert!(
        gw.log().contains(&format!("on_close ran for {id}")),
        "{}",
        gw.log()
    );
}
