//! Channel history and recovery in a cluster: two `connmix engine` nodes on
//! a private redis-server. The publisher is on one node, the client on the
//! other; a Redis that restarts empty changes the epoch and the client is
//! told it could not recover.

mod common;

use common::*;
use serde_json::{Value, json};

const HISTORY: &str =
    "  history:\n    - channels: 'h:*'\n      historySize: 100\n      historyTtl: 300\n";

async fn two_nodes(redis: &RedisServer, prefix: &str) -> (Gateway, Gateway) {
    let a = Gateway::start_node_extra(vec![probe("/p", "")], redis, prefix, HISTORY).await;
    let b = Gateway::start_node_extra(vec![probe("/p", "")], redis, prefix, HISTORY).await;
    a.wait_nodes(2).await;
    b.wait_nodes(2).await;
    (a, b)
}

async fn publish(gw: &Gateway, c: &str, d: &str) -> Value {
    let v = gw.call("/v1/mesh/publish", json!({"c": c, "d": d})).await;
    assert!(v["E"].is_null(), "{v}");
    v["r"].clone()
}

fn subscribe(ch: &str, since: Option<(u64, &str)>) -> String {
    match since {
        Some((o, e)) => {
            format!("return (...):subscribe('{ch}', {{since = {{offset = {o}, epoch = '{e}'}}}})")
        }
        None => format!("return (...):subscribe('{ch}', {{}})"),
    }
}

/// Waits until `gw` holds no client connection.
async fn until_no_clients(gw: &Gateway) {
    eventually(|| async {
        match gw.metric("connmix_engine_servers_clients").await as u64 {
            0 => Ok(()),
            n => Err(format!("{n} clients left")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_on_another_node_recovers_exactly_what_it_missed() {
    let redis = RedisServer::start().await;
    let (a, b) = two_nodes(&redis, "hc1").await;
    let mut c = Client::connect(&b.url(0)).await;
    let v = c.eval(&subscribe("h:u", None)).await;
    assert_eq!(v["e"]["offset"], 0);
    let epoch = v["e"]["epoch"].as_str().unwrap().to_string();
    // Published on node A, delivered on node B, counted in the answer.
    let r = publish(&a, "h:u", "m1").await;
    assert_eq!(r, json!({"s": 1, "f": 0, "offset": 1, "epoch": epoch}));
    assert_eq!(c.recv().await, "m1");
    c.close().await;
    c.closed().await;
    until_no_clients(&b).await;
    for (i, m) in ["m2", "m3", "m4", "m5", "m6"].iter().enumerate() {
        let r = publish(&a, "h:u", m).await;
        assert_eq!(r["offset"], i as u64 + 2);
    }
    // Node B reads the history node A wrote.
    let mut c = Client::connect(&b.url(0)).await;
    c.send(&subscribe("h:u", Some((1, &epoch)))).await;
    assert_eq!(c.recv_n(5).await, ["m2", "m3", "m4", "m5", "m6"]);
    let v = c.recv_json().await;
    assert_eq!(
        v["e"],
        json!({"recovered": true, "offset": 6, "epoch": epoch})
    );
    assert_eq!(publish(&a, "h:u", "m7").await["s"], 1);
    assert_eq!(c.recv().await, "m7");
    // A subscriber on the publishing node gets them in the same order.
    let mut local = Client::connect(&a.url(0)).await;
    local.send(&subscribe("h:u", Some((5, &epoch)))).await;
    assert_eq!(local.recv().await, "m6");
    assert_eq!(local.recv().await, "m7");
    assert_eq!(local.recv_json().await["e"]["recovered"], true);
    // Published on node B: both nodes' subscribers, counted.
    let r = publish(&b, "h:u", "m8").await;
    assert_eq!((r["s"].as_u64(), r["offset"].as_u64()), (Some(2), Some(8)));
    assert_eq!(c.recv().await, "m8");
    assert_eq!(local.recv().await, "m8");
    // Either node reads the same history.
    let h = b
        .call(
            "/v1/history",
            json!({"c": "h:u", "since": {"offset": 6, "epoch": epoch}}),
        )
        .await;
    assert_eq!(
        h["r"],
        json!({"publications": [{"offset": 7, "d": "m7"}, {"offset": 8, "d": "m8"}],
               "offset": 8, "epoch": epoch, "complete": true})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_restarts_empty_a_client_is_told_it_did_not_recover() {
    let mut redis = RedisServer::start().await;
    let (a, b) = two_nodes(&redis, "hc2").await;
    let first = publish(&a, "h:r", "before").await;
    let old_epoch = first["epoch"].as_str().unwrap().to_string();
    redis.restart().await;
    a.wait_nodes(2).await;
    b.wait_nodes(2).await;
    // The first publish after the restart starts a new stream.
    let r = eventually(|| async {
        let v = a
            .call("/v1/mesh/publish", json!({"c": "h:r", "d": "after"}))
            .await;
        match v["r"]["offset"].as_u64() {
            Some(_) => Ok(v["r"].clone()),
            None => Err(format!("not appended yet: {v}")),
        }
    })
    .await;
    assert_eq!(r["offset"], 1);
    let new_epoch = r["epoch"].as_str().unwrap().to_string();
    assert_ne!(new_epoch, old_epoch);
    // Node B reads history once its own Redis link is back (until then a
    // read answers 504, and a recovery says why in `error`).
    eventually(|| async {
        let v = b.call("/v1/history", json!({"c": "h:r", "limit": 0})).await;
        match v["E"].is_null() {
            true => Ok(()),
            false => Err(format!("node B cannot read history yet: {v}")),
        }
    })
    .await;
    let mut c = Client::connect(&b.url(0)).await;
    let v = c.eval(&subscribe("h:r", Some((1, &old_epoch)))).await;
    assert_eq!(
        v["e"],
        json!({"recovered": false, "offset": 1, "epoch": new_epoch}),
        "{v}"
    );
    let h = b
        .call(
            "/v1/history",
            json!({"c": "h:r", "since": {"offset": 1, "epoch": old_epoch}}),
        )
        .await;
    assert_eq!(h["E"]["c"], 503, "{h}");
    let h = b
        .call(
            "/v1/history",
            json!({"c": "h:r", "since": {"offset": u64::MAX, "epoch": new_epoch}}),
        )
        .await;
    assert_eq!(h["E"]["c"], 502, "{h}");
    // Until node A counts node B as restored after the restart, its answer
    // names B (`missing`) or says why (`error`), never a silent `s: 0`; a
    // backend retries on that, and the retry reaches B's subscriber.
    eventually(|| async {
        let r = publish(&a, "h:r", "live").await;
        if r["s"] == 1 {
            return Ok(());
        }
        let named = r["missing"].as_array().is_some_and(|m| !m.is_empty());
        assert!(named || r["error"].is_string(), "a silent s:0: {r}");
        Err(format!("node B not counted yet: {r}"))
    })
    .await;
    assert_eq!(c.recv().await, "live");
}
