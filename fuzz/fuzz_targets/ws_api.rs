//! WebSocket API requests (`/ws/v1`) through the real upgrade, reader loop
//! and dispatcher up to the mesh. The input is split at 0xFF bytes (never in
//! UTF-8) into up to 8 frames: text when valid UTF-8, else binary. Never
//! panics, never hangs, and every frame is answered exactly once with
//! `pong` or a JSON object carrying `E`.
#![no_main]

use connmix_fuzz::{runtime, serve_api};
use futures_util::{SinkExt, StreamExt};
use libfuzzer_sys::fuzz_target;
use tokio_tungstenite::tungstenite::Message;

fuzz_target!(|data: &[u8]| {
    let frames: Vec<Message> = data
        .split(|&b| b == 0xFF)
        .take(8)
        .map(|chunk| match std::str::from_utf8(chunk) {
            Ok(t) => Message::text(t),
            Err(_) => Message::binary(chunk.to_vec()),
        })
        .collect();
    runtime().block_on(async move {
        let (client, server) = tokio::io::duplex(1 << 16);
        serve_api(server);
        let (mut ws, _) = tokio_tungstenite::client_async("ws://fuzz/ws/v1", client)
            .await
            .expect("upgrade");
        let n = frames.len();
        for f in frames {
            ws.send(f).await.expect("send frame");
        }
        for _ in 0..n {
            let reply = match ws.next().await {
                Some(Ok(Message::Text(t))) => t,
                other => panic!("expected an answer, got {other:?}"),
            };
            if reply.as_str() == "pong" {
                continue;
            }
            let v: serde_json::Value = serde_json::from_str(reply.as_str()).expect("JSON answer");
            assert!(v.get("E").is_some(), "no E in {reply}");
        }
        let _ = ws.close(None).await;
    });
});
