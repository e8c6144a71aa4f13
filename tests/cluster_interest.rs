//! Subscriptions that never go stale, with real processes and a real Redis:
//! a connection closing on one worker while another worker joins the same
//! channels must leave the node subscribed in Redis, and join/leave churn
//! while Redis is away must neither grow memory without bound nor leave the
//! wrong subscriptions once Redis is back.

mod common;

use common::*;
use std::collections::HashMap;

/// A cluster node whose Lua hooks may run long (debug builds on a loaded
/// 2-core machine run the churn loops slowly).
async fn node(redis: &RedisServer, prefix: &str) -> Gateway {
    let mut spec = probe("/p", "");
    spec.extra.push("maxChannels: 1000".into());
    let engine = format!(
        "  luavm:\n    hookTimeoutMs: 30000\n  cluster:\n    addr: {}\n    prefix: {prefix}\n    heartbeat: 1\n    nodeExpiry: 3\n    publishTimeoutMs: 2000\n    callTimeoutMs: 2000\n",
        redis.addr()
    );
    Gateway::start_full(vec![spec], &engine, "", "engine").await
}

/// `PUBSUB NUMSUB` of each mesh channel: how many nodes listen to it.
async fn numsub(redis: &RedisServer, prefix: &str, channels: &[String]) -> HashMap<String, i64> {
    let names: Vec<String> = channels
        .iter()
        .map(|c| format!("{prefix}:ch:{c}"))
        .collect();
    let mut args = vec!["PUBSUB", "NUMSUB"];
    args.extend(names.iter().map(String::as_str));
    let counts: HashMap<String, i64> = redis.query(&args).await;
    channels
        .iter()
        .map(|c| (c.clone(), counts[&format!("{prefix}:ch:{c}")]))
        .collect()
}

/// Waits until every channel in `want` has exactly its count of listening
/// nodes; fails with the channels that differ.
async fn wait_numsub(redis: &RedisServer, prefix: &str, want: &HashMap<String, i64>) {
    let channels: Vec<String> = want.keys().cloned().collect();
    let channels = &channels;
    common::eventually(|| async move {
        let have = numsub(redis, prefix, channels).await;
        let wrong: Vec<_> = want
            .iter()
            .filter(|(c, n)| have[*c] != **n)
            .map(|(c, n)| format!("{c}: {} (want {n})", have[c]))
            .collect();
        if wrong.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{} channels wrong in Redis: {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(10)]
        ))
    })
    .await
}

/// Waits until node `gw` lists itself with exactly `n` client connections.
async fn wait_clients(gw: &Gateway, n: u64) {
    common::eventually(|| async move {
        let text = reqwest::get(gw.api("/v1/mesh/nodes"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let me = v["r"]["nodes"]
            .as_array()
            .and_then(|all| all.iter().find(|x| x["n"] == v["r"]["self"]).cloned());
        match me.as_ref().and_then(|x| x["clients"].as_u64()) == Some(n) {
            true => Ok(()),
            false => Err(format!("clients never became {n}: {v}")),
        }
    })
    .await
}

/// Publishes `text` on `ch` through node `from` until it is reported
/// delivered once, and checks `client` gets it (retries may repeat earlier
/// texts of `sent`, nothing else).
async fn deliver(
    from: &Gateway,
    ch: &str,
    text: &str,
    client: &mut Client,
    sent: &mut Vec<String>,
) {
    from.publish_until(ch, text, 1).await;
    sent.push(text.to_string());
    loop {
        let got = client.recv().await;
        if got == text {
            return;
        }
        assert!(sent.contains(&got), "unexpected {got:?} on {ch}");
    }
}

fn subscribe_all(channels: &[String]) -> String {
    let list: Vec<String> = channels.iter().map(|c| format!("'{c}'")).collect();
    format!(
        "local conn = ... for _, c in ipairs({{{}}}) do conn:subscribe(c) end return true",
        list.join(",")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_or_leave_racing_a_join_on_another_worker_never_leaves_the_node_deaf() {
    let redis = RedisServer::start().await;
    let a = node(&redis, "t7").await;
    let b = node(&redis, "t7").await;
    a.wait_nodes(2).await;
    b.wait_nodes(2).await;
    for round in 0..30 {
        let channels: Vec<String> = (0..100).map(|j| format!("k{round}:{j}")).collect();
        // The old connection holds the 100 channels (worker 1 of node b).
        let mut old = Client::connect(&b.url(0)).await;
        old.eval(&subscribe_all(&channels)).await;
        // The new one lands on the other, less loaded worker.
        let mut new = Client::connect(&b.url(0)).await;
        // The old connection closes (even rounds) or leaves all 100 (odd
        // rounds) while the new one joins the same 100.
        let join = subscribe_all(&channels);
        if round % 2 == 0 {
            tokio::join!(old.close(), new.eval(&join));
        } else {
            let leave = join.replace(":subscribe(", ":unsubscribe(");
            tokio::join!(old.eval(&leave), new.eval(&join));
            old.close().await;
        }
        drop(old);
        wait_clients(&b, 1).await;
        // Node b listens to every channel it has a subscriber for...
        let want: HashMap<String, i64> = channels.iter().map(|c| (c.clone(), 1)).collect();
        wait_numsub(&redis, "t7", &want).await;
        // ...and a publish on node a reaches b's client.
        for (i, c) in channels.iter().enumerate().step_by(10) {
            let text = format!("r{round}m{i}");
            assert_eq!(a.publish(c, &text).await, (1, 0), "round {round}, {c}");
            assert_eq!(new.recv().await, text);
        }
        new.close().await;
        wait_clients(&b, 0).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_while_redis_is_down_stays_bounded_and_ends_subscribed_exactly() {
    let mut redis = RedisServer::start().await;
    let a = node(&redis, "t8").await;
    let b = node(&redis, "t8").await;
    a.wait_nodes(2).await;
    b.wait_nodes(2).await;
    let kept: Vec<String> = (0..100).map(|j| format!("kept{j}")).collect();
    let churned: Vec<String> = (0..200).map(|j| format!("churn{j}")).collect();
    // Before the outage: one client holds kept0..kept99.
    let mut keeper = Client::connect(&b.url(0)).await;
    keeper.eval(&subscribe_all(&kept)).await;
    wait_numsub(&redis, "t8", &kept.iter().map(|c| (c.clone(), 1)).collect()).await;
    let mut churners = vec![
        Client::connect(&b.url(0)).await,
        Client::connect(&b.url(0)).await,
    ];
    // Warm up the churn path once so the baseline includes its buffers.
    for c in &mut churners {
        c.eval("local conn = ... for i = 1, 1000 do local ch = 'churn' .. (i % 200) conn:subscribe(ch) conn:unsubscribe(ch) end return true")
            .await;
    }
    let before = rss_bytes(b.pid());

    redis.stop();
    // 100,000 joins and leaves (2 clients on both workers x 10 x 5,000),
    // each the first join or the last leave of its channel.
    for _ in 0..10 {
        let [c1, c2] = &mut churners[..] else {
            unreachable!()
        };
        let code = "local conn = ... for i = 1, 5000 do local ch = 'churn' .. (i % 200) conn:subscribe(ch) conn:unsubscribe(ch) end return true";
        tokio::join!(c1.eval(code), c2.eval(code));
    }
    // While Redis is away: the keeper leaves half of its channels, and
    // another client joins the first 50 churned ones and stays.
    let leave: Vec<String> = kept[50..]
        .iter()
        .map(|c| format!("conn:unsubscribe('{c}')"))
        .collect();
    keeper
        .eval(&format!("local conn = ... {} return true", leave.join(" ")))
        .await;
    let mut late = Client::connect(&b.url(0)).await;
    late.eval(&subscribe_all(&churned[..50])).await;
    let grown = rss_bytes(b.pid()).saturating_sub(before);
    eprintln!("rss before {} KiB, grew {} KiB", before >> 10, grown >> 10);
    assert!(
        grown < 8 << 20,
        "gateway grew {} KiB during 100,000 joins/leaves with Redis down",
        grown >> 10
    );

    redis.restart().await;
    a.wait_nodes(2).await;
    b.wait_nodes(2).await;
    let mut want: HashMap<String, i64> = HashMap::new();
    for (i, c) in kept.iter().enumerate() {
        want.insert(c.clone(), (i < 50) as i64);
    }
    for (i, c) in churned.iter().enumerate() {
        want.insert(c.clone(), (i < 50) as i64);
    }
    wait_numsub(&redis, "t8", &want).await;
    // Node a's publishes reach exactly the subscribers node b has now.
    let mut sent = Vec::new();
    for c in kept.iter().take(50).step_by(7) {
        deliver(&a, c, &format!("to {c}"), &mut keeper, &mut sent).await;
    }
    for c in churned.iter().take(50).step_by(7) {
        deliver(&a, c, &format!("to {c}"), &mut late, &mut sent).await;
    }
    for c in kept[50..].iter().chain(&churned[50..]).step_by(13) {
        assert_eq!(a.publish(c, "nobody").await, (0, 0), "{c}");
    }
}
