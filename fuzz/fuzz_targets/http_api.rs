//! HTTP API requests through the real router: the first byte picks the
//! route and the content type, the rest is the body. Never panics, never
//! hangs, and every answer is 200 with the JSON envelope (errors included)
//! or 413 for an oversized body, never a 5xx.
#![no_main]

use connmix_fuzz::{runtime, serve_api};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PATHS: [&str; 2] = ["/v1/mesh/publish", "/v1/mesh/send"];
const TYPES: [&str; 3] = [
    "application/json",
    "text/plain",
    "application/x-www-form-urlencoded",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let path = PATHS[(sel & 1) as usize];
    let ctype = TYPES[((sel >> 1) % 3) as usize];
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: fuzz\r\nContent-Type: {ctype}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    let answer = runtime().block_on(async move {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        serve_api(server);
        let writer = async {
            client.write_all(&request).await.expect("write request");
        };
        writer.await;
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.expect("read answer");
        answer
    });
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).expect("status code");
    match status {
        "200" => {
            let v: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
            assert!(v.get("E").is_some(), "no envelope: {body}");
        }
        "413" => {}
        other => panic!("status {other}: {text}"),
    }
});
