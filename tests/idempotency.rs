//! Idempotent publish (`k`): a retry with the same key answers the first
//! publish's result and delivers nothing, on one node and across nodes of a
//! cluster (real processes, a real Redis); a duplicate that arrives while
//! the first is running waits for its answer; bad keys are code 101.

mod common;

use common::*;
use serde_json::json;
use sha1::{Digest, Sha1};

/// The Redis key the cluster keeps for key `k` of a publish to `scope`.
fn redis_key(prefix: &str, scope: &str, k: &str) -> String {
    let mut h = Sha1::new();
    h.update(scope.as_bytes());
    h.update([0u8]);
    h.update(k.as_bytes());
    format!("{prefix}:idem:{}", hex::encode(h.finalize()))
}

/// Redis's MONITOR feed: every command Redis runs, as it runs it.
struct Monitor(tokio::io::Lines<tokio::io::BufReader<tokio::net::TcpStream>>);

impl Monitor {
    async fn start(redis: &RedisServer) -> Monitor {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let mut s = tokio::net::TcpStream::connect(redis.addr()).await.unwrap();
        s.write_all(b"MONITOR\r\n").await.unwrap();
        let mut lines = BufReader::new(s).lines();
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("+OK"));
        Monitor(lines)
    }

    /// Waits until Redis has run a script call naming `key`.
    async fn until_script_on(&mut self, key: &str) {
        tokio::time::timeout(DEADLINE, async {
            while let Some(l) = self.0.next_line().await.unwrap() {
                if l.contains(key) && l.to_ascii_lowercase().contains("eval") {
                    return;
                }
            }
            panic!("monitor ended");
        })
        .await
        .expect("the duplicate never asked Redis");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_key_answers_the_first_result_and_delivers_nothing() {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let mut a = Client::subscribed(&gw.url(0), "'news'").await;
    let mut b = Client::subscribed(&gw.url(0), "'news'").await;
    let first = gw
        .call(
            "/v1/mesh/publish",
            json!({"c": "news", "d": "once", "k": "order-1"}),
        )
        .await;
    assert_eq!(first, json!({"E": null, "r": {"s": 2, "f": 0}}));
    // b leaves: a retry still answers the first result (2), and nobody gets it.
    b.close().await;
    gw.publish_until("news", "marker 0", 1).await;
    let mut api = ApiClient::connect(&gw).await;
    let retry = api
        .request(
            "mesh.publish",
            json!({"c": "news", "d": "once", "k": "order-1"}),
        )
        .await;
    assert_eq!(retry["r"], first["r"], "{retry}");
    let retry = gw
        .call(
            "/v1/mesh/publish",
            json!({"c": "news", "d": "once", "k": "order-1"}),
        )
        .await;
    assert_eq!(retry, first);
    // The same key on another channel, and another key: each its own publish.
    let other = gw
        .call(
            "/v1/mesh/publish",
            json!({"c": "other", "d": "x", "k": "order-1"}),
        )
        .await;
    assert_eq!(other["r"], json!({"s": 0, "f": 0}));
    gw.call(
        "/v1/mesh/publish",
        json!({"c": "news", "d": "twice", "k": "order-2"}),
    )
    .await;
    assert_eq!(a.recv().await, "once");
    let mut got = a.recv().await;
    while got.starts_with("marker") {
        got = a.recv().await;
    }
    assert_eq!(got, "twice");

    // A key over a channel list: the whole list is its scope.
    let v = gw
        .call(
            "/v1/mesh/publish",
            json!({"c": ["news", "more"], "d": "l", "k": "list"}),
        )
        .await;
    assert_eq!(v["r"], json!({"s": 1, "f": 0}));
    let again = gw
        .call(
            "/v1/mesh/publish",
            json!({"c": ["news", "more"], "d": "l", "k": "list"}),
        )
        .await;
    assert_eq!(again, v);
    gw.publish("news", "after list").await;
    assert_eq!(a.recv().await, "l");
    assert_eq!(a.recv().await, "after list");
}

#[tokio::test]
async fn a_key_that_is_not_a_short_string_is_101() {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let mut a = Client::subscribed(&gw.url(0), "'news'").await;
    for k in [json!(7), json!(""), json!({"a": 1}), json!("x".repeat(257))] {
        let v = gw
            .call("/v1/mesh/publish", json!({"c": "news", "d": "bad", "k": k}))
            .await;
        assert_eq!(v["E"]["c"], 101, "{k}: {v}");
    }
    gw.publish("news", "good").await;
    assert_eq!(a.recv().await, "good");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_on_two_nodes_delivers_once_with_the_same_answer() {
    let redis = RedisServer::start().await;
    let a = Gateway::start_node(vec![probe("/p", "")], &redis, "idem").await;
    let b = Gateway::start_node(vec![probe("/p", "")], &redis, "idem").await;
    a.wait_nodes(2).await;
    b.wait_nodes(2).await;
    let mut on_a = Client::subscribed(&a.url(0), "'news'").await;
    let mut on_b = Client::subscribed(&b.url(0), "'news'").await;

    let first = a
        .call(
            "/v1/mesh/publish",
            json!({"c": "news", "d": "once", "k": "k-1"}),
        )
        .await;
    assert_eq!(first, json!({"E": null, "r": {"s": 2, "f": 0}}));
    let retry = b
        .call(
            "/v1/mesh/publish",
            json!({"c": "news", "d": "once", "k": "k-1"}),
        )
        .await;
    assert_eq!(retry, first);
    b.publish("news", "next").await;
    for c in [&mut on_a, &mut on_b] {
        assert_eq!(c.recv().await, "once");
        assert_eq!(c.recv().await, "next");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_waits_for_the_running_publish_or_answers_120() {
    let redis = RedisServer::start().await;
    // publishTimeoutMs 300: a duplicate waits 1.3 s at most.
    let gw = Gateway::start_node_with(vec![probe("/p", "")], &redis, "run", 300, Vec::new()).await;
    let mut c = Client::subscribed(&gw.url(0), "'news'").await;
    // Another node has claimed k-run and not answered yet (its marker).
    let key = redis_key("run", "news", "k-run");
    redis.query::<()>(&["SET", &key, "?", "PX", "60000"]).await;
    let v = gw
        .call(
            "/v1/mesh/publish",
            json!({"c": "news", "d": "dup", "k": "k-run"}),
        )
        .await;
    assert_eq!(v["E"]["c"], 120, "{v}");
    // A script's publish with that key is told the same: nothing delivered, retry.
    let mut script = Client::connect(&gw.url(0)).await;
    let keyed = "local s, f, short = mix.mesh.publish('news', 'lua dup', {key = 'k-run'}) return {s = s, f = f, short = short}";
    let lua = script.eval(keyed).await;
    assert_eq!(lua["r"]["short"]["retry"], true, "{lua}");
    assert_eq!(lua["r"]["s"], 0, "{lua}");
    let why = lua["r"]["short"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("still running"), "{lua}");
    // Its answer arrives while the duplicate waits: the duplicate gets it.
    let mut monitor = Monitor::start(&redis).await;
    let waiting = tokio::spawn({
        let url = gw.api("/v1/mesh/publish");
        async move {
            reqwest::Client::new()
                .post(url)
                .body(json!({"c": "news", "d": "dup", "k": "k-run"}).to_string())
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }
    });
    // Wait until Redis has run the duplicate's claim (and answered it the
    // marker), then record the first publish's answer.
    monitor.until_script_on(&key).await;
    redis
        .query::<()>(&["SET", &key, "={\"s\":7,\"f\":0}", "PX", "60000"])
        .await;
    let answer: serde_json::Value = serde_json::from_str(&waiting.await.unwrap()).unwrap();
    assert_eq!(answer, json!({"E": null, "r": {"s": 7, "f": 0}}));
    // And so does a script's.
    assert_eq!(script.eval(keyed).await["r"], json!({"s": 7, "f": 0}));
    // Nothing of any duplicate was delivered.
    gw.publish("news", "next").await;
    assert_eq!(c.recv().await, "next");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_key_store_delivers_nothing_and_answers_120() {
    let redis = RedisServer::start().await;
    let gw = Gateway::start_node_with(vec![probe("/p", "")], &redis, "down", 300, Vec::new()).await;
    let mut c = Client::subscribed(&gw.url(0), "'news'").await;
    let mut script = Client::connect(&gw.url(0)).await;
    redis.pause();
    let v = gw
        .call(
            "/v1/mesh/publish",
            json!({"c": "news", "d": "undecided", "k": "k-down"}),
        )
        .await;
    // A script's keyed publish is told the same: nothing delivered, retry.
    let lua = script
        .eval("local s, f, short = mix.mesh.publish('news', 'lua undecided', {key = 'k-lua'}) return {s = s, f = f, short = short}")
        .await;
    redis.resume();
    assert_eq!(v["E"]["c"], 120, "{v}");
    assert_eq!(
        (&lua["r"]["s"], &lua["r"]["f"]),
        (&json!(0), &json!(0)),
        "{lua}"
    );
    assert_eq!(lua["r"]["short"]["retry"], true, "{lua}");
    let why = lua["r"]["short"]["error"].as_str().unwrap_or_default();
    assert!(why.contains("unavailable"), "{lua}");
    // Not even the local subscriber got it; the key is still free. The
    // backend retries as code 120 tells it to: while the link comes back each
    // retry is answered 120 as well (and delivers nothing), then one is taken.
    let v = eventually(|| async {
        let v = gw
            .call(
                "/v1/mesh/publish",
                json!({"c": "news", "d": "decided", "k": "k-down"}),
            )
            .await;
        match v["E"]["c"].as_i64() {
            Some(120) => Err(format!("still unavailable: {v}")),
            _ => Ok(v),
        }
    })
    .await;
    assert_eq!(v["r"]["s"], 1, "{v}");
    assert_eq!(c.recv().await, "decided");
}
