//! Presence (`/v1/presence`, `/v1/presence/stats`, the WebSocket API's
//! `presence`/`presence_stats`, Lua's `mix.mesh.presence`) with real
//! clients: on one node, with the shipped message-center script, and across
//! three cluster nodes of which one is killed.

mod common;

use common::*;
use serde_json::{Value, json};

async fn get(gw: &Gateway, path_and_query: &str) -> Value {
    let text = reqwest::get(gw.api(path_and_query))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// `r` with `clients` and `users` sorted, for comparing.
fn sorted(v: &Value) -> Value {
    assert!(v["E"].is_null(), "{v}");
    let mut r = v["r"].clone();
    for k in ["clients", "users"] {
        if let Some(a) = r[k].as_array_mut() {
            a.sort_by_key(|x| x.to_string());
        }
    }
    r
}

fn ids(mut v: Vec<String>) -> Value {
    v.sort_by_key(|x| Value::from(x.as_str()).to_string());
    json!(v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_on_one_node_lists_clients_and_distinct_users() {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let mut a = Client::connect(&gw.url(0)).await;
    let mut b = Client::connect(&gw.url(0)).await;
    let mut c = Client::connect(&gw.url(0)).await;
    let mut anon = Client::subscribed(&gw.url(0), "'room'").await;
    // Three ways to set the user: a number, a string, a whole context.
    a.eval("local c = ... ; c:set_context_value('uid', 1001); return c:subscribe('room')")
        .await;
    b.eval("local c = ... ; c:set_context_value('uid', '1001'); return c:subscribe('room')")
        .await;
    c.eval("local c = ... ; c:set_context({uid = 'u2'}); return c:subscribe('room')")
        .await;
    let all = ids(vec![
        a.id().await,
        b.id().await,
        c.id().await,
        anon.id().await,
    ]);
    let want = json!({"count": 4, "clients": all, "users": ["1001", "u2"]});

    assert_eq!(sorted(&get(&gw, "/v1/presence?c=room").await), want);
    assert_eq!(
        sorted(&gw.call("/v1/presence", json!({"c": "room"})).await),
        want
    );
    let stats = json!({"E": null, "r": {"count": 4, "users": 2}});
    assert_eq!(get(&gw, "/v1/presence/stats?c=room").await, stats);
    assert_eq!(
        gw.call("/v1/presence/stats", json!({"c": "room"})).await,
        stats
    );
    let mut api = ApiClient::connect(&gw).await;
    assert_eq!(
        sorted(&api.request("presence", json!({"c": "room"})).await),
        want
    );
    let w = api.request("presence_stats", json!({"c": "room"})).await;
    assert_eq!(w["r"], stats["r"], "{w}");
    // In a batch too.
    let v = gw
        .call(
            "/v1/mesh/batch",
            json!([{"m": "presence_stats", "p": {"c": "room"}}]),
        )
        .await;
    assert_eq!(v["r"][0], stats);

    // Lua.
    let v = anon
        .eval("local p = mix.mesh.presence('room'); table.sort(p.clients); table.sort(p.users); return p")
        .await;
    assert_eq!(v["r"], want);
    let v = anon.eval("return mix.mesh.presence_stats('room')").await;
    assert_eq!(v["r"], stats["r"]);

    // A backend changes a user (conn.call), a user leaves, a client closes.
    let v = api
        .request(
            "conn.call",
            json!({"c": anon.id().await, "f": "set_context_value", "a": ["uid", "u3"]}),
        )
        .await;
    assert!(v["E"].is_null(), "{v}");
    a.eval("return (...):set_context_value('uid', nil)").await;
    b.close().await;
    eventually(|| async {
        let r = get(&gw, "/v1/presence/stats?c=room").await["r"].clone();
        if r == json!({"count": 3, "users": 2}) {
            Ok(())
        } else {
            Err(format!("stats {r}"))
        }
    })
    .await;
    let r = sorted(&get(&gw, "/v1/presence?c=room").await);
    assert_eq!(r["users"], json!(["u2", "u3"]));

    // A channel nobody is in, and bad input.
    assert_eq!(
        get(&gw, "/v1/presence?c=empty").await["r"],
        json!({"count": 0, "clients": [], "users": []})
    );
    for bad in [
        "/v1/presence",
        "/v1/presence?c=",
        "/v1/presence/stats?c=a%20b",
    ] {
        assert_eq!(get(&gw, bad).await["E"]["c"], 101, "{bad}");
    }
    assert_eq!(
        gw.call("/v1/presence", json!({"c": 5})).await["E"]["c"],
        101
    );
    anon.send("return mix.mesh.presence('a b')").await;
    assert!(anon.recv_json().await["error"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_message_center_user_is_the_presence_user() {
    let auth = AuthServer::start().await;
    let gw = Gateway::start(vec![message_center(&auth)]).await;
    let _phone = login(&gw.url(0), 1001).await;
    let _laptop = login(&gw.url(0), 1001).await;
    let v = get(&gw, "/v1/presence/stats?c=user:1001").await;
    assert_eq!(v["r"], json!({"count": 2, "users": 1}), "{v}");
    let v = get(&gw, "/v1/presence?c=user:1001").await;
    assert_eq!(v["r"]["users"], json!(["1001"]), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_across_three_nodes_and_a_killed_node_leaves_it() {
    let redis = RedisServer::start().await;
    let mut nodes = Vec::new();
    for _ in 0..3 {
        nodes.push(Gateway::start_node(vec![probe("/p", "")], &redis, "pres").await);
    }
    for n in &nodes {
        n.wait_nodes(3).await;
    }
    let mut clients = Vec::new();
    let mut client_ids = Vec::new();
    for (n, uid) in nodes.iter().zip(["a", "a", "b"]) {
        let mut c = Client::connect(&n.url(0)).await;
        c.eval(&format!(
            "local c = ... ; c:set_context_value('uid', '{uid}'); return c:subscribe('room')"
        ))
        .await;
        client_ids.push(c.id().await);
        clients.push(c);
    }
    // A client elsewhere does not count.
    let _other = Client::subscribed(&nodes[1].url(0), "'hall'").await;

    for n in &nodes {
        let v = get(n, "/v1/presence?c=room").await;
        assert_eq!(
            sorted(&v),
            json!({"count": 3, "clients": ids(client_ids.clone()), "users": ["a", "b"]})
        );
        let v = get(n, "/v1/presence/stats?c=room").await;
        assert_eq!(v["r"], json!({"count": 3, "users": 2}), "{v}");
    }
    let v = nodes[0]
        .call(
            "/v1/mesh/batch",
            json!([{"m": "presence", "p": {"c": "hall"}}]),
        )
        .await;
    assert_eq!(v["r"][0]["r"]["count"], 1, "{v}");

    // Node 3 dies: its client is never listed again; until its heartbeat
    // expires (nodeExpiry 3 s) it is named missing, then forgotten.
    nodes[2].kill();
    let v = get(&nodes[0], "/v1/presence?c=room").await;
    let r = sorted(&v);
    assert_eq!(r["count"], 2, "{v}");
    assert_eq!(r["clients"], ids(client_ids[..2].to_vec()));
    assert_eq!(r["users"], json!(["a"]));
    if let Some(m) = r.get("missing") {
        assert_eq!(m.as_array().map(Vec::len), Some(1), "only node 3: {v}");
    }
    eventually(|| async {
        let v = get(&nodes[0], "/v1/presence?c=room").await;
        match v["r"].get("missing") {
            None => Ok(()),
            Some(m) => Err(format!("still missing {m}")),
        }
    })
    .await;
    let v = get(&nodes[1], "/v1/presence/stats?c=room").await;
    assert_eq!(v["r"], json!({"count": 2, "users": 1}), "{v}");

    // Redis stalls: a node answers its own part and says why that is all.
    redis.pause();
    let v = get(&nodes[1], "/v1/presence/stats?c=room").await;
    redis.resume();
    assert_eq!(v["r"]["count"], 1, "{v}");
    assert!(v["r"]["error"].is_string(), "{v}");
}
