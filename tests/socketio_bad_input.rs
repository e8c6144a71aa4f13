//! Bad input to a Socket.IO server: malformed Engine.IO and Socket.IO
//! packets, an unknown sid, a second concurrent polling GET, an oversized
//! polling body, a binary packet without its attachments. Each gets a clear
//! error or close of that session only: another client, connected all
//! along, keeps working.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// The echo example with a small maxPayload.
async fn gateway() -> Gateway {
    Gateway::start(vec![
        ServerSpec::socketio(Script::Repo("lua/examples/socketio_echo.lua"))
            .option("maxPayload", "1000"),
    ])
    .await
}

fn base(gw: &Gateway) -> String {
    format!(
        "http://127.0.0.1:{}/socket.io/?EIO=4&transport=polling",
        gw.ports[0]
    )
}

/// Opens a polling session; returns its sid.
async fn polling_session(gw: &Gateway) -> String {
    let body = reqwest::get(base(gw)).await.unwrap().text().await.unwrap();
    let open: serde_json::Value =
        serde_json::from_str(body.strip_prefix('0').expect(&body)).unwrap();
    assert_eq!(open["maxPayload"], 1000);
    open["sid"].as_str().unwrap().to_string()
}

async fn get(gw: &Gateway, sid: &str) -> (u16, String) {
    let r = reqwest::get(format!("{}&sid={sid}", base(gw)))
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn post(gw: &Gateway, sid: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
    let r = reqwest::Client::new()
        .post(format!("{}&sid={sid}", base(gw)))
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket-only client connected to namespace "/" (past the "auth" event).
async fn ws_client(gw: &Gateway) -> Ws {
    let url = format!(
        "ws://127.0.0.1:{}/socket.io/?EIO=4&transport=websocket",
        gw.ports[0]
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert!(text(&mut ws).await.starts_with('0'));
    ws.send(Message::text("40")).await.unwrap();
    assert!(text(&mut ws).await.starts_with("40{"));
    assert_eq!(text(&mut ws).await, r#"42["auth",{}]"#);
    ws
}

/// The next text frame (pings answered and skipped).
async fn text(ws: &mut Ws) -> String {
    loop {
        let m = tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("no frame in time");
        match m {
            Some(Ok(Message::Text(t))) if t.as_str() == "2" => {
                ws.send(Message::text("3")).await.unwrap();
            }
            Some(Ok(Message::Text(t))) => return t.to_string(),
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Waits until the server closes `ws` (a close frame or the end).
async fn closed(ws: &mut Ws) {
    loop {
        match tokio::time::timeout(DEADLINE, ws.next())
            .await
            .expect("not closed in time")
        {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
            Some(Ok(_)) => {}
        }
    }
}

/// The bystander still echoes.
async fn still_works(ws: &mut Ws) {
    ws.send(Message::text(r#"42["message","still here"]"#))
        .await
        .unwrap();
    assert_eq!(text(ws).await, r#"42["message-back","still here"]"#);
}

#[tokio::test]
async fn malformed_packets_close_only_their_session() {
    let gw = gateway().await;
    let mut bystander = ws_client(&gw).await;

    // Polling: an invalid Engine.IO packet is a 400 and ends the session.
    let sid = polling_session(&gw).await;
    assert_eq!(post(&gw, &sid, "abc").await.0, 400);
    let (status, body) = get(&gw, &sid).await;
    assert_eq!(
        (status, body.contains("Session ID unknown")),
        (400, true),
        "{body}"
    );

    // WebSocket: invalid Engine.IO, invalid Socket.IO packets.
    for bad in [
        "abc",
        "4abc",
        "42{}",
        r#"42abc["message"]"#,
        r#"44{"message":"x"}"#,
    ] {
        let mut ws = ws_client(&gw).await;
        ws.send(Message::text(bad)).await.unwrap();
        closed(&mut ws).await;
    }
    // A binary packet whose attachment never comes (text arrives instead).
    let mut ws = ws_client(&gw).await;
    ws.send(Message::text(
        r#"451-["message",{"_placeholder":true,"num":0}]"#,
    ))
    .await
    .unwrap();
    ws.send(Message::text(r#"42["message"]"#)).await.unwrap();
    closed(&mut ws).await;
    // A binary frame nobody announced.
    let mut ws = ws_client(&gw).await;
    ws.send(Message::binary(vec![1u8, 2])).await.unwrap();
    closed(&mut ws).await;

    still_works(&mut bystander).await;
}

#[tokio::test]
async fn unknown_sid_is_a_400_naming_it() {
    let gw = gateway().await;
    let (status, body) = get(&gw, "no-such-sid").await;
    assert_eq!(status, 400);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"code": 1, "message": "Session ID unknown"})
    );
    assert_eq!(post(&gw, "no-such-sid", "40").await.0, 400);
    // Bad handshakes are 400s with the reference server's codes.
    let http = |q: &str| format!("http://127.0.0.1:{}/socket.io/?{q}", gw.ports[0]);
    for (q, code) in [("EIO=3&transport=polling", 5), ("EIO=4&transport=flash", 0)] {
        let r = reqwest::get(http(q)).await.unwrap();
        assert_eq!(r.status().as_u16(), 400);
        let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert_eq!(v["code"], code, "{q}");
    }
}

#[tokio::test]
async fn a_second_concurrent_get_closes_the_session() {
    let gw = gateway().await;
    let mut bystander = ws_client(&gw).await;
    let sid = polling_session(&gw).await;
    // Nothing is queued (the first ping is 25 s away), so whichever GET
    // arrives first waits, and the other one is the second concurrent GET.
    let (a, b) = tokio::join!(get(&gw, &sid), get(&gw, &sid));
    let mut answers = [a, b];
    answers.sort();
    assert_eq!(
        answers[0],
        (200, "1".to_string()),
        "the waiting GET gets a close packet"
    );
    assert_eq!(
        answers[1].0, 400,
        "the second GET is refused: {:?}",
        answers[1]
    );
    assert_eq!(get(&gw, &sid).await.0, 400, "the session is gone");
    still_works(&mut bystander).await;
}

#[tokio::test]
async fn an_oversized_polling_body_is_413_and_closes_the_session() {
    let gw = gateway().await;
    let mut bystander = ws_client(&gw).await;
    let sid = polling_session(&gw).await;
    let big = format!("4{}", "x".repeat(2000));
    assert_eq!(post(&gw, &sid, big).await.0, 413);
    assert_eq!(get(&gw, &sid).await.0, 400);
    // Up to maxPayload is fine.
    let sid = polling_session(&gw).await;
    assert_eq!(post(&gw, &sid, "40").await, (200, "ok".to_string()));
    let (status, body) = get(&gw, &sid).await;
    assert_eq!(status, 200);
    assert!(body.starts_with("40{"), "{body}");
    still_works(&mut bystander).await;
}
