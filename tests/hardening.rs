//! Issue 12 item 9, leaks and hardening of the API port: a host-restricted
//! user's password cannot be confirmed from another host, `/v1/stats` keeps
//! Lua error text from read-only users, and browser pages on foreign
//! origins can neither publish over HTTP nor open `/ws/v1`.

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const USERS: &str = r#"access:
  users:
    - {username: admin, password: pw, roles: [read, write], host: '*'}
    - {username: reader, password: pw, roles: [read], host: '*'}
    - {username: remote, password: right, roles: [read, write], host: '10.*.*.*'}
"#;

/// Status, `WWW-Authenticate` and body of a response.
async fn answer(req: reqwest::RequestBuilder) -> (u16, Option<String>, String) {
    let r = req.send().await.unwrap();
    let www = r
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), www, r.text().await.unwrap())
}

#[tokio::test]
async fn wrong_host_and_wrong_password_get_the_same_answer() {
    let gw = Gateway::start_with(vec![probe("/p", "")], "", USERS).await;
    let http = reqwest::Client::new();
    let publish = |user: &str, pass: &str| {
        http.post(gw.api("/v1/mesh/publish"))
            .basic_auth(user, Some(pass))
            .body(r#"{"c":"x","d":"y"}"#)
    };
    // "remote" may only connect from 10.*; the test runs on 127.0.0.1.
    let right_password = answer(publish("remote", "right")).await;
    let wrong_password = answer(publish("remote", "wrong")).await;
    assert_eq!(right_password.0, 401, "{right_password:?}");
    assert_eq!(right_password, wrong_password);
    // The same for a read route.
    let stats = |pass: &str| {
        http.get(gw.api("/v1/stats"))
            .basic_auth("remote", Some(pass))
    };
    assert_eq!(answer(stats("right")).await, answer(stats("wrong")).await);
    // A user allowed from here still gets in.
    assert_eq!(answer(publish("admin", "pw")).await.0, 200);
}

#[tokio::test]
async fn stats_show_lua_error_text_only_to_writers() {
    let script = r#"
function on_message(msg, conn)
    error("backend token is SECRET-" .. msg.data)
end
"#;
    let gw = Gateway::start_with(
        vec![ServerSpec::new("/e", Script::Inline(script.into()))],
        "",
        USERS,
    )
    .await;
    let mut c = Client::connect(&gw.url(0)).await;
    c.send("4711").await;
    let http = reqwest::Client::new();
    let stats = |user: &str| {
        let req = http.get(gw.api("/v1/stats")).basic_auth(user, Some("pw"));
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status().as_u16(), 200);
            r.text().await.unwrap()
        }
    };
    let stats = &stats;
    let admin = common::eventually(|| async move {
        let body = stats("admin").await;
        match body.contains("SECRET-4711") {
            true => Ok(body),
            false => Err(format!("the admin never saw the error: {body}")),
        }
    })
    .await;
    let admin: Value = serde_json::from_str(&admin).unwrap();
    assert_eq!(admin["recent_lua_errors"][0]["redacted"], Value::Null);

    let reader = stats("reader").await;
    assert!(!reader.contains("SECRET"), "{reader}");
    let reader: Value = serde_json::from_str(&reader).unwrap();
    let e = &reader["recent_lua_errors"][0];
    assert_eq!(e["redacted"], json!(true), "{reader}");
    assert_eq!(e["message"], Value::Null);
    // What the reader still sees: where and when it happened.
    assert_eq!(e["hook"], admin["recent_lua_errors"][0]["hook"]);
    assert_eq!(e["location"], admin["recent_lua_errors"][0]["location"]);
    assert_eq!(reader["lua_errors"], json!(1));
}

/// A POST to the open API, with `origin` if given, as a browser's simple
/// (CORS-preflight-free) request would send it.
async fn post_from(gw: &Gateway, origin: Option<&str>, d: &str) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(gw.api("/v1/mesh/publish"))
        .header("content-type", "text/plain;charset=UTF-8")
        .body(json!({"c": "news", "d": d}).to_string());
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    let r = req.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn foreign_origin_cannot_publish_but_curl_and_same_origin_can() {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let mut sub = Client::connect(&gw.url(0)).await;
    sub.eval(r#"return (...):subscribe("news")"#).await;

    let (status, body) = post_from(&gw, Some("http://evil.example"), "from evil").await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("engine.apiServer.allowedOrigins"), "{body}");
    let (status, _) = post_from(&gw, Some("null"), "from a sandbox").await;
    assert_eq!(status, 403);

    // curl -d (no Origin, no JSON content type) works; the subscriber's
    // next message is this one, so the refused ones were never published.
    let (status, body) = post_from(&gw, None, "from curl").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(sub.recv().await, "from curl");

    // The console's own publish: same origin as the API.
    let own = format!("http://127.0.0.1:{}", gw.api_port);
    let (status, body) = post_from(&gw, Some(&own), "from the console").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(sub.recv().await, "from the console");
}

#[tokio::test]
async fn foreign_origin_cannot_open_the_websocket_api() {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let url = format!("ws://127.0.0.1:{}/ws/v1", gw.api_port);
    let with_origin = |origin: &str| {
        let mut req = url.as_str().into_client_request().unwrap();
        req.headers_mut().insert("origin", origin.parse().unwrap());
        req
    };
    match tokio_tungstenite::connect_async(with_origin("http://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => {
            assert_eq!(r.status(), 403);
            let body = String::from_utf8_lossy(r.body().as_deref().unwrap_or_default());
            assert!(body.contains("allowedOrigins"), "{body}");
        }
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }

    // Same origin (a page served by the API) and no Origin (a backend) work.
    let own = format!("http://127.0.0.1:{}", gw.api_port);
    let (mut ws, _) = tokio_tungstenite::connect_async(with_origin(&own))
        .await
        .expect("same-origin upgrade");
    use futures_util::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text("ping"))
        .await
        .unwrap();
    let pong = tokio::time::timeout(DEADLINE, ws.next()).await.unwrap();
    assert_eq!(pong.unwrap().unwrap().into_text().unwrap().as_str(), "pong");
    let mut backend = ApiClient::connect(&gw).await;
    let r = backend
        .request("mesh.publish", json!({"c": "news", "d": "x"}))
        .await;
    assert!(r["E"].is_null(), "{r}");
}

#[tokio::test]
async fn console_page_and_its_stats_still_load() {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let http = reqwest::Client::new();
    let own = format!("http://127.0.0.1:{}", gw.api_port);
    let page = http.get(gw.api("/console")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("/v1/stats") && html.contains("redacted"),
        "console page"
    );
    // What the page fetches, as a browser sends it from that page.
    let stats = http
        .get(gw.api("/v1/stats"))
        .header("origin", &own)
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status().as_u16(), 200);
    let v: Value = serde_json::from_str(&stats.text().await.unwrap()).unwrap();
    assert!(v["recent_lua_errors"].is_array(), "{v}");
    // The demo page and its info stay public.
    let demo = http.get(gw.api("/demo")).send().await.unwrap();
    assert_eq!(demo.status().as_u16(), 200);
}
