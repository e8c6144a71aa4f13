//! Cluster mode with real processes and a real Redis: three `connmix engine`
//! nodes and one redis-server started by the test on loopback ports.
//! Publish, send and conn.call across nodes; subscription churn that leaves
//! nothing in Redis; a Redis restart; a node that dies.

mod common;

use common::*;
use serde_json::json;

async fn three_nodes(redis: &RedisServer, prefix: &str) -> Vec<Gateway> {
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Gateway::start_node(vec![probe("/p", "")], redis, prefix).await);
    }
    for n in &nodes {
        n.wait_nodes(3).await;
    }
    nodes
}

/// One client per node, each subscribed to `ch`.
async fn subscribers(nodes: &[Gateway], ch: &str) -> Vec<Client> {
    let mut clients = Vec::new();
    for n in nodes {
        let mut c = Client::connect(&n.url(0)).await;
        c.eval(&format!("return (...):subscribe('{ch}')")).await;
        clients.push(c);
    }
    clients
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_send_and_call_cross_nodes() {
    let redis = RedisServer::start().await;
    let nodes = three_nodes(&redis, "t1").await;
    let mut clients = subscribers(&nodes, "news").await;

    // Publish on node 1: every subscriber on every node, exact total.
    let v = nodes[0]
        .call("/v1/mesh/publish", json!({"c": "news", "d": "to all"}))
        .await;
    assert_eq!(v["r"], json!({"s": 3, "f": 0}), "{v}");
    for c in &mut clients {
        assert_eq!(c.recv().await, "to all");
    }

    // mesh.send at node 1 to a client of node 3.
    let id3 = clients[2].id().await;
    let v = nodes[0]
        .call("/v1/mesh/send", json!({"c": id3, "d": "just you"}))
        .await;
    assert_eq!(v["r"], json!({"s": true}), "{v}");
    assert_eq!(clients[2].recv().await, "just you");
    // An unknown client id on a live node, and an id naming no live node.
    let node3: u64 = id3.parse::<u64>().unwrap() >> 32;
    let unknown = ((node3 << 32) | 999_999).to_string();
    let v = nodes[0]
        .call("/v1/mesh/send", json!({"c": unknown, "d": "x"}))
        .await;
    assert_eq!(v["E"]["c"], 401, "{v}");
    let v = nodes[0]
        .call(
            "/v1/mesh/send",
            json!({"c": (9999u64 << 32 | 1).to_string(), "d": "x"}),
        )
        .await;
    assert_eq!(v["E"]["c"], 401, "{v}");

    // conn.call at node 1 on the client of node 3.
    let mut api = ApiClient::connect(&nodes[0]).await;
    let v = api
        .request(
            "conn.call",
            json!({"c": id3, "f": "set_context_value", "a": ["uid", 42]}),
        )
        .await;
    assert_eq!(v["r"], json!({"s": true}), "{v}");
    assert_eq!(
        clients[2].eval("return (...):context_value('uid')").await["r"],
        42
    );
    let v = api
        .request(
            "conn.call",
            json!({"c": id3, "f": "subscribe", "a": ["extra"]}),
        )
        .await;
    assert_eq!(v["r"], json!({"s": true}), "{v}");
    let v = api
        .request(
            "conn.call",
            json!({"c": unknown, "f": "subscribe", "a": ["x"]}),
        )
        .await;
    assert_eq!(v["E"]["c"], 301, "{v}");

    // mix.mesh.publish from Lua on node 2 reaches every node too.
    // (The publishing client is a subscriber too: the message comes first,
    // then the hook's answer.)
    clients[1]
        .send("local s, f, short = mix.mesh.publish('news', 'from lua') return {s = s, f = f, complete = short == nil}")
        .await;
    assert_eq!(clients[1].recv().await, "from lua");
    assert_eq!(
        clients[1].recv_json().await["r"],
        json!({"s": 3, "f": 0, "complete": true})
    );
    assert_eq!(clients[0].recv().await, "from lua");
    assert_eq!(clients[2].recv().await, "from lua");
    // The channel joined through conn.call works across nodes.
    assert_eq!(nodes[1].publish("extra", "x").await, (1, 0));
    assert_eq!(clients[2].recv().await, "x");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_leaves_no_redis_subscriptions() {
    let redis = RedisServer::start().await;
    let nodes = three_nodes(&redis, "t2").await;
    let mut clients = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for k in 0..5 {
            let mut c = Client::connect(&n.url(0)).await;
            c.eval(&format!(
                "local conn = ... for j = 1, 20 do conn:subscribe('room' .. j .. ':{k}') end conn:subscribe('n{i}') return true"
            ))
            .await;
            clients.push(c);
        }
    }
    let chans: Vec<String> = redis.query(&["PUBSUB", "CHANNELS", "t2:ch:*"]).await;
    assert!(!chans.is_empty());
    // Half unsubscribe explicitly, the rest just close.
    for (i, c) in clients.iter_mut().enumerate() {
        if i % 2 == 0 {
            c.eval("local conn = ... for j = 1, 20 do for k = 0, 4 do conn:unsubscribe('room' .. j .. ':' .. k) end end return true")
                .await;
        }
    }
    drop(clients);
    let redis = &redis;
    common::eventually(|| async move {
        let chans: Vec<String> = redis.query(&["PUBSUB", "CHANNELS", "t2:ch:*"]).await;
        let keys: Vec<String> = redis.query(&["KEYS", "t2:chnodes:*"]).await;
        if chans.is_empty() && keys.is_empty() {
            return Ok(());
        }
        Err(format!(
            "left behind: {} subscriptions, {} registrations",
            chans.len(),
            keys.len()
        ))
    })
    .await;
    // Each node still listens on its own channel.
    let own: Vec<String> = redis.query(&["PUBSUB", "CHANNELS", "t2:node:*"]).await;
    assert_eq!(own.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_keeps_local_delivery_and_restores_subscriptions() {
    let mut redis = RedisServer::start().await;
    let nodes = three_nodes(&redis, "t3").await;
    let mut clients = subscribers(&nodes, "news").await;
    let id2 = clients[1].id().await;
    nodes[0].publish_until("news", "warm", 3).await;
    for c in &mut clients {
        assert_eq!(c.recv().await, "warm");
    }

    redis.stop();
    // Local delivery goes on; the answer says the other nodes were not reached.
    let v = nodes[0]
        .call("/v1/mesh/publish", json!({"c": "news", "d": "local only"}))
        .await;
    assert_eq!(v["r"]["s"], 1, "{v}");
    assert!(v["r"]["error"].is_string(), "{v}");
    // (publish_until may have delivered "warm" to some clients more than once)
    assert_eq!(clients[0].recv_skipping("warm").await, "local only");
    // A cross-node send fails with an error instead of hanging.
    let v = nodes[0]
        .call("/v1/mesh/send", json!({"c": id2, "d": "x"}))
        .await;
    assert_eq!(v["E"]["c"], 401, "{v}");

    redis.restart().await;
    for n in &nodes {
        n.wait_nodes(3).await;
    }
    // Cross-node delivery resumes with every subscription restored.
    nodes[0].publish_until("news", "back", 3).await;
    let mut got = Vec::new();
    for c in &mut clients {
        got.push(c.recv_skipping("warm").await);
    }
    // Clients 2 and 3 see only "back"s (never "local only"); none twice.
    assert_eq!(got[1], "back");
    assert_eq!(got[2], "back");
    let v = nodes[0]
        .call("/v1/mesh/send", json!({"c": id2, "d": "after restart"}))
        .await;
    if v["r"] != json!({"s": true}) {
        for n in &nodes {
            eprintln!("=====\n{}", n.log());
        }
    }
    assert_eq!(v["r"], json!({"s": true}), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_stops_being_counted() {
    let redis = RedisServer::start().await;
    let mut nodes = three_nodes(&redis, "t4").await;
    let mut clients = subscribers(&nodes, "news").await;
    let third_n = clients[2].id().await.parse::<u64>().unwrap() >> 32;
    nodes[0].publish_until("news", "warm", 3).await;
    let third: serde_json::Value = nodes[2]
        .nodes()
        .await
        .into_iter()
        .find(|n| n["n"].as_u64() == Some(third_n))
        .unwrap();
    nodes[2].kill();
    // Before its expiry it is still expected, and the answer names it.
    let v = nodes[0]
        .call("/v1/mesh/publish", json!({"c": "news", "d": "during"}))
        .await;
    assert_eq!(v["r"]["s"], 2, "{v}");
    assert_eq!(v["r"]["missing"], json!([third["id"]]), "{v}");
    // Within its expiry the others forget it...
    nodes[0].wait_nodes(2).await;
    nodes[1].wait_nodes(2).await;
    // ...and publishes count exactly the live subscribers, none missing.
    let v = nodes[0]
        .call("/v1/mesh/publish", json!({"c": "news", "d": "after"}))
        .await;
    assert_eq!(v["r"], json!({"s": 2, "f": 0}), "{v}");
    while clients[0].recv().await != "after" {}
    while clients[1].recv().await != "after" {}
}

/// Pushes every frame to topic `chat`, then waits for the backend to set `uid`.
const QUEUED: &str = r#"
function on_message(msg, conn)
    local n, err = mix.queue.push("chat", { token = msg.data })
    if err then conn:send("queue error: " .. err) return end
    local uid, werr = conn:wait_context_value("uid")
    conn:send("welcome " .. tostring(uid or werr))
end
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_and_conn_call_work_across_nodes() {
    let redis = RedisServer::start().await;
    let spec = || vec![ServerSpec::new("/q", Script::Inline(QUEUED.into()))];
    let a = Gateway::start_node(spec(), &redis, "t5").await;
    let b = Gateway::start_node(spec(), &redis, "t5").await;
    a.wait_nodes(2).await;
    b.wait_nodes(2).await;

    // The backend consumes at node b; the client is on node a.
    let mut backend = ApiClient::connect(&b).await;
    assert_eq!(
        backend.request("queue.pop", json!({"t": ["chat"]})).await["r"],
        json!({"s": true})
    );
    let mut client = Client::connect(&a.url(0)).await;
    client.send("secret").await;
    let ev = backend.next().await;
    assert_eq!(ev["e"], "queue.pop", "{ev}");
    assert_eq!(ev["p"]["d"], json!({"token": "secret"}));
    let id = ev["p"]["c"].as_str().unwrap().to_string();
    assert_eq!(
        ev["p"]["n"].as_u64(),
        Some(id.parse::<u64>().unwrap() >> 32)
    );
    let v = backend
        .request(
            "conn.call",
            json!({"c": id, "f": "set_context_value", "a": ["uid", 7]}),
        )
        .await;
    assert_eq!(v["r"], json!({"s": true}), "{v}");
    assert_eq!(client.recv().await, "welcome 7");

    // Messages pushed while no consumer exists wait in Redis for one,
    // each delivered once across two consumers on different nodes.
    backend.close().await;
    let mut clients = Vec::new();
    for i in 0..6 {
        let mut c = Client::connect(&a.url(0)).await;
        c.send(&format!("m{i}")).await;
        clients.push(c);
    }
    let depth = "connmix_queue_depth{topic=\"chat\"}";
    a.wait_metric(depth, 6.0).await;
    // Every node reports the cluster's depth, not only the one that pushed.
    b.wait_metric(depth, 6.0).await;
    let mut c1 = ApiClient::connect(&a).await;
    let mut c2 = ApiClient::connect(&b).await;
    c1.request("queue.pop", json!({"t": ["chat"]})).await;
    c2.request("queue.pop", json!({"t": ["chat"]})).await;
    let mut seen = std::collections::HashSet::new();
    while seen.len() < 6 {
        let v = tokio::select! { v = c1.next() => v, v = c2.next() => v };
        assert!(
            seen.insert(v["p"]["d"]["token"].as_str().unwrap().to_string()),
            "duplicate {v}"
        );
    }
    // The emptied topic leaves no depth series behind, on either node.
    for node in [&a, &b] {
        wait_no_series(node, depth).await;
    }
}

/// Waits until `/metrics` of `gw` has no line for `series`.
async fn wait_no_series(gw: &Gateway, series: &str) {
    common::eventually(|| async move {
        let text = gw.metrics_text().await;
        match text.lines().any(|l| l.starts_with(series)) {
            false => Ok(()),
            true => Err(format!("{series} still listed")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_right_after_the_subscribe_reply_reaches_the_new_subscriber() {
    let redis = RedisServer::start().await;
    let a = Gateway::start_node(vec![probe("/p", "")], &redis, "t6").await;
    let mut many = probe("/p", "");
    many.extra.push("maxChannels: 20000".into());
    let b = Gateway::start_node(vec![many], &redis, "t6").await;
    a.wait_nodes(2).await;
    b.wait_nodes(2).await;
    let mut client = Client::connect(&b.url(0)).await;
    // Each round joins 2,000 fresh channels on node b (Redis takes a while
    // to subscribe them all); the backend publishes to the last one on node
    // a as soon as the client has its reply, with no retry.
    for i in 0..5 {
        client
            .eval(&format!(
                "local conn = ... for j = 1, 2000 do conn:subscribe('r{i}:' .. j) end return true"
            ))
            .await;
        let ch = format!("r{i}:2000");
        assert_eq!(a.publish(&ch, &format!("m{i}")).await, (1, 0), "round {i}");
        assert_eq!(client.recv().await, format!("m{i}"));
    }
}
