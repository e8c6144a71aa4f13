//! Upstream queues and the Laravel-style flow: a client frame goes to a
//! topic with `mix.queue.push`, a backend consumes it with `queue.pop`,
//! decides, and answers with `conn.call`, which wakes the client's hook
//! blocked in `conn:wait_context_value`.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::HashSet;

/// Every frame is pushed to topic `chat`; the hook then waits for the
/// backend to set `uid` and greets the user.
const LARAVEL: &str = r#"
function on_message(msg, conn)
    if msg.data == "burst" then
        for i = 1, 40 do
            mix.queue.push("chat", { seq = i })
        end
        conn:send("pushed")
        return
    end
    if string.sub(msg.data, 1, 5) == "fill " then
        local results = {}
        local topic = string.sub(msg.data, 6)
        for i = 1, 5 do
            local n, err = mix.queue.push(topic, { seq = i })
            results[i] = n or err
        end
        conn:send(mix.json_encode(results))
        return
    end
    local n, err = mix.queue.push("chat", { event = "login", token = msg.data })
    if err then
        conn:send("queue error: " .. err)
        return
    end
    local uid, werr = conn:wait_context_value("uid")
    if werr then
        conn:send("wait error: " .. werr)
        return
    end
    conn:send("welcome " .. uid)
end
"#;

fn server() -> ServerSpec {
    ServerSpec::new("/q", Script::Inline(LARAVEL.into()))
}

#[tokio::test]
async fn client_frame_to_backend_and_back_through_conn_call() {
    let gw = Gateway::start(vec![server()]).await;
    let mut backend = ApiClient::connect(&gw).await;
    let v = backend.request("queue.pop", json!({"t": ["chat"]})).await;
    assert_eq!(v["r"], json!({"s": true}), "{v}");

    let mut client = Client::connect(&gw.url(0)).await;
    let mut other = Client::connect(&gw.url(0)).await;
    client.send("secret-token").await;

    let ev = backend.next().await;
    assert_eq!(ev["e"], "queue.pop", "{ev}");
    assert_eq!(ev["p"]["t"], "chat");
    assert_eq!(ev["p"]["n"], 1);
    assert_eq!(
        ev["p"]["d"],
        json!({"event": "login", "token": "secret-token"})
    );
    let client_id = ev["p"]["c"].as_str().unwrap().to_string();

    // While the first client's hook waits, another client is served.
    other.send("other-token").await;
    let ev2 = backend.next().await;
    assert_eq!(ev2["p"]["d"]["token"], "other-token");

    let v = backend
        .request(
            "conn.call",
            json!({"c": client_id, "f": "set_context_value", "a": ["uid", 1001]}),
        )
        .await;
    assert_eq!(v["r"], json!({"s": true}), "{v}");
    assert_eq!(client.recv().await, "welcome 1001");
}

#[tokio::test]
async fn two_consumers_share_a_topic_without_duplicates_or_losses() {
    let gw = Gateway::start(vec![server()]).await;
    let mut a = ApiClient::connect(&gw).await;
    let mut b = ApiClient::connect(&gw).await;
    a.request("queue.pop", json!({"t": ["chat"]})).await;
    b.request("queue.pop", json!({"t": ["chat"]})).await;
    let mut c = Client::connect(&gw.url(0)).await;
    c.send("burst").await;
    assert_eq!(c.recv().await, "pushed");

    // Drain both until all 40 are seen; each message exactly once.
    let mut seen = Vec::new();
    let (mut from_a, mut from_b) = (0, 0);
    while seen.len() < 40 {
        tokio::select! {
            v = a.next() => { seen.push(v["p"]["d"]["seq"].as_u64().unwrap()); from_a += 1; }
            v = b.next() => { seen.push(v["p"]["d"]["seq"].as_u64().unwrap()); from_b += 1; }
        }
    }
    let unique: HashSet<u64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), 40, "no duplicates: {seen:?}");
    assert_eq!(unique, (1..=40).collect(), "none lost");
    eprintln!("consumer a got {from_a}, b got {from_b}");
    // Nothing is left for anyone, and the emptied topic leaves no series.
    let text = gw.metrics_text().await;
    assert!(
        !text.contains("connmix_queue_depth{topic=\"chat\"}"),
        "an emptied topic keeps its depth series:\n{text}"
    );
}

#[tokio::test]
async fn messages_wait_for_a_consumer_and_survive_one_that_leaves() {
    let gw = Gateway::start(vec![server()]).await;
    // A consumer comes and goes before anything is pushed.
    let mut gone = ApiClient::connect(&gw).await;
    gone.request("queue.pop", json!({"t": ["chat"]})).await;
    gone.close().await;

    let mut c = Client::connect(&gw.url(0)).await;
    c.send("burst").await;
    assert_eq!(c.recv().await, "pushed");
    gw.wait_metric("connmix_queue_depth{topic=\"chat\"}", 40.0)
        .await;

    let mut late = ApiClient::connect(&gw).await;
    late.request("queue.pop", json!({"t": ["chat"]})).await;
    for i in 1..=40u64 {
        let v = late.next().await;
        assert_eq!(v["p"]["d"]["seq"], i, "in order: {v}");
    }
}

#[tokio::test]
async fn full_topics_are_reported_to_the_script_and_nothing_queued_is_lost() {
    let gw = Gateway::start_with(
        vec![server()],
        "  luavm:\n    queue:\n      topicSize: 3\n      maxTopics: 2\n",
        "",
    )
    .await;
    let mut c = Client::connect(&gw.url(0)).await;
    c.send("fill jobs").await;
    let results: Value = serde_json::from_str(&c.recv().await).unwrap();
    assert_eq!(results[0], 1);
    assert_eq!(results[1], 2);
    assert_eq!(results[2], 3);
    assert!(results[3].as_str().unwrap().contains("full"), "{results}");
    assert!(results[4].as_str().unwrap().contains("full"), "{results}");

    c.send("fill second").await;
    c.recv().await;
    c.send("fill third").await;
    let results: Value = serde_json::from_str(&c.recv().await).unwrap();
    assert!(
        results[0].as_str().unwrap().contains("too many topics"),
        "{results}"
    );

    let mut backend = ApiClient::connect(&gw).await;
    backend.request("queue.pop", json!({"t": ["jobs"]})).await;
    for i in 1..=3u64 {
        assert_eq!(backend.next().await["p"]["d"]["seq"], i);
    }
}

#[tokio::test]
async fn pop_twice_is_202_and_unpop_stops_delivery() {
    let gw = Gateway::start(vec![server()]).await;
    let mut a = ApiClient::connect(&gw).await;
    assert_eq!(
        a.request("queue.pop", json!({"t": ["chat"]})).await["r"],
        json!({"s": true})
    );
    assert_eq!(
        a.request("queue.pop", json!({"t": ["chat"]})).await["E"]["c"],
        202
    );
    assert_eq!(
        a.request("queue.unpop", json!({})).await["r"],
        json!({"s": true})
    );
    assert_eq!(a.request("queue.unpop", json!({})).await["E"]["c"], 203);
    assert_eq!(
        a.request("queue.pop", json!({"t": []})).await["E"]["c"],
        101
    );

    // After unpop, messages go to the consumer that is still there.
    let mut b = ApiClient::connect(&gw).await;
    b.request("queue.pop", json!({"t": ["chat"]})).await;
    let mut c = Client::connect(&gw.url(0)).await;
    c.send("burst").await;
    for i in 1..=40u64 {
        assert_eq!(b.next().await["p"]["d"]["seq"], i);
    }
    // a got none of them: its next frame answers its own request.
    let v = a
        .request("mesh.publish", json!({"c": "nobody", "d": "x"}))
        .await;
    assert!(v["E"].is_null());
}
