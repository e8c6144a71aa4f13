//! Batch and multi-channel publish (`POST /v1/mesh/batch`, `mesh.batch`,
//! `"c": [channels]`) through real requests and real WebSocket clients, and
//! their bounds (code 106, nothing delivered).

mod common;

use common::*;
use serde_json::{Value, json};

/// `n` clients, client `i` subscribed to `user:<i>`.
async fn users(gw: &Gateway, n: usize) -> Vec<Client> {
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = Client::connect(&gw.url(0)).await;
        c.eval(&format!("return (...):subscribe('user:{i}')")).await;
        clients.push(c);
    }
    clients
}

fn publishes(n: usize) -> Value {
    (0..n)
        .map(|i| json!({"m": "mesh.publish", "p": {"c": format!("user:{i}"), "d": format!("hello {i}")}}))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_1000_personal_publishes_reaches_1000_users() {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let mut clients = users(&gw, 1000).await;
    let v = gw.call("/v1/mesh/batch", publishes(1000)).await;
    assert!(v["E"].is_null(), "{v}");
    let answers = v["r"].as_array().expect("an array of answers");
    assert_eq!(answers.len(), 1000);
    for a in answers {
        assert_eq!(a, &json!({"E": null, "r": {"s": 1, "f": 0}}));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.recv().await, format!("hello {i}"));
    }
    // Each got exactly its own: the next frame is the next publish.
    gw.call("/v1/mesh/batch", publishes(1000)).await;
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.recv().await, format!("hello {i}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_answers_each_request_in_order_and_an_error_stops_nothing() {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let mut a = Client::subscribed(&gw.url(0), "'news'").await;
    let id = a.id().await;
    let batch = json!([
        {"m": "mesh.publish", "p": {"c": "news", "d": "first"}},
        {"m": "mesh.send", "p": {"c": "4294967999", "d": "nobody"}},
        {"m": "mesh.publish", "p": {"c": "news", "d": 5}},
        "not an object",
        {"m": "mesh.batch", "p": []},
        {"m": "mesh.nope"},
        {"p": {}},
        {"m": "mesh.send", "p": {"c": id, "d": "second"}},
    ]);
    let codes = |v: &Value| -> Vec<Value> {
        v["r"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["E"]["c"].clone())
            .collect()
    };
    let want = vec![
        Value::Null,
        json!(401),
        json!(101),
        json!(101),
        json!(101),
        json!(101),
        json!(101),
        Value::Null,
    ];
    let v = gw.call("/v1/mesh/batch", batch.clone()).await;
    assert_eq!(codes(&v), want, "{v}");
    assert_eq!(v["r"][0]["r"], json!({"s": 1, "f": 0}));
    assert_eq!(v["r"][7]["r"], json!({"s": true}));
    assert_eq!(a.recv().await, "first");
    assert_eq!(a.recv().await, "second");

    // The WebSocket API's mesh.batch: the same answers, as the r of one answer.
    let mut api = ApiClient::connect(&gw).await;
    let w = api.request("mesh.batch", batch).await;
    assert_eq!(codes(&w), want, "{w}");
    assert_eq!(a.recv().await, "first");
    assert_eq!(a.recv().await, "second");
    // A batch is not an array: 101.
    let w = api
        .request("mesh.batch", json!({"m": "mesh.publish"}))
        .await;
    assert_eq!(w["E"]["c"], 101, "{w}");
    let v = gw.call("/v1/mesh/batch", json!({})).await;
    assert_eq!(v["E"]["c"], 101, "{v}");
    // An empty batch answers an empty array.
    assert_eq!(gw.call("/v1/mesh/batch", json!([])).await["r"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_over_max_batch_is_106_and_runs_nothing() {
    let gw = Gateway::start_with(vec![probe("/p", "")], "apiServer.maxBatch: 3", "").await;
    let mut clients = users(&gw, 1).await;
    let v = gw.call("/v1/mesh/batch", publishes(4)).await;
    assert_eq!(v["E"]["c"], 106, "{v}");
    assert!(v["E"]["m"].as_str().unwrap().contains("maxBatch"), "{v}");
    let mut api = ApiClient::connect(&gw).await;
    let w = api.request("mesh.batch", publishes(4)).await;
    assert_eq!(w["E"]["c"], 106, "{w}");
    // Nothing was delivered: the first frame the client gets is the next one.
    let v = gw.call("/v1/mesh/batch", publishes(3)).await;
    assert_eq!(v["r"][0]["r"]["s"], 1, "{v}");
    assert_eq!(clients[0].recv().await, "hello 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_a_channel_list_sums_the_counts() {
    let gw =
        Gateway::start_with(vec![probe("/p", "")], "apiServer.maxPublishChannels: 3", "").await;
    let mut a = Client::subscribed(&gw.url(0), "'x'").await;
    let mut b = Client::subscribed(&gw.url(0), "'x', 'y'").await;
    let v = gw
        .call(
            "/v1/mesh/publish",
            json!({"c": ["x", "y", "empty"], "d": "all"}),
        )
        .await;
    // x reaches a and b, y reaches b: b gets one copy per channel.
    assert_eq!(v, json!({"E": null, "r": {"s": 3, "f": 0}}));
    assert_eq!(a.recv().await, "all");
    assert_eq!(b.recv().await, "all");
    assert_eq!(b.recv().await, "all");

    // Bad lists: nothing is delivered.
    for (c, code) in [
        (json!(["x", "y", "z", "w"]), 106),
        (json!([]), 101),
        (json!(["x", 7]), 101),
        (json!(["x", "has space"]), 101),
    ] {
        let v = gw
            .call("/v1/mesh/publish", json!({"c": c, "d": "bad"}))
            .await;
        assert_eq!(v["E"]["c"], code, "{c}: {v}");
    }
    let mut api = ApiClient::connect(&gw).await;
    let w = api
        .request("mesh.publish", json!({"c": ["x", "y"], "d": "ws"}))
        .await;
    assert_eq!(w["r"], json!({"s": 3, "f": 0}), "{w}");
    assert_eq!(a.recv().await, "ws");
}
