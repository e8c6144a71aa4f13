//! What a cross-node publish asks of Redis: while no node joins, leaves or
//! re-subscribes, a publish does not read the node sets again (it checks
//! one generation token; README "Benchmarks", two-node personal push); as
//! soon as one does, the next publish sees it, so a node whose
//! subscriptions are not in place yet is named in `missing` at once.
//! A node's delivery reports to one publisher that queue up together go
//! back in one message and count in full.
//! Real processes: `connmix engine` nodes and a private redis-server.

mod common;

use common::*;
use serde_json::{Value, json};

/// The test-only pause point of the subscription link (src/broker/sync.rs).
const HOLD_ENV: &str = "CONNMIX_TEST_HOLD_RESUBSCRIBE";

/// The test-only pause point of a node's outgoing reports
/// (src/broker/report_batch.rs).
const HOLD_REPORTS_ENV: &str = "CONNMIX_TEST_HOLD_REPORTS";

/// How many times Redis ran `cmd` since the last `CONFIG RESETSTAT`
/// (commands a script runs are counted too).
async fn calls(redis: &RedisServer, cmd: &str) -> u64 {
    let info: String = redis.query(&["INFO", "commandstats"]).await;
    let prefix = format!("cmdstat_{cmd}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

async fn publish(a: &Gateway, d: &str) -> Value {
    let v = a
        .call("/v1/mesh/publish", json!({"c": "news", "d": d}))
        .await;
    assert!(v["E"].is_null(), "publish failed: {v}");
    v["r"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_read_the_node_sets_only_after_a_node_joins() {
    let redis = RedisServer::start().await;
    let a = Gateway::start_node(vec![probe("/p", "")], &redis, "v1").await;
    let b = Gateway::start_node(vec![probe("/p", "")], &redis, "v1").await;
    a.wait_nodes(2).await;
    let mut on_b = Client::connect(&b.url(0)).await;
    on_b.eval("return (...):subscribe('news')").await;
    a.publish_until("news", "warm", 1).await;

    // Nothing changes: every publish is counted in full, and none reads
    // the node sets (SDIFF is what the publish script runs when it must).
    let _: String = redis.query(&["CONFIG", "RESETSTAT"]).await;
    for i in 0..20 {
        assert_eq!(publish(&a, &format!("m{i}")).await, json!({"s": 1, "f": 0}));
    }
    assert_eq!(
        calls(&redis, "sdiff").await,
        0,
        "a publish read the node sets"
    );
    assert!(calls(&redis, "publish").await >= 20);

    // Node C joins with its subscription link held before it subscribes:
    // from its registration on, A's publishes name it until it is in place.
    let dir = tempfile::tempdir().unwrap();
    let hold = dir.path().join("hold");
    std::fs::write(&hold, "").unwrap();
    let env = vec![(HOLD_ENV.to_string(), hold.display().to_string())];
    let c = Gateway::start_node_with(vec![probe("/p", "")], &redis, "v1", 2000, env).await;
    let mut on_c = Client::connect(&c.url(0)).await;
    on_c.eval("return (...):subscribe('news')").await;
    let c_n = on_c.id().await.parse::<u64>().unwrap() >> 32;
    let c_names = [
        format!("node {c_n}"),
        c.nodes()
            .await
            .into_iter()
            .find(|n| n["n"].as_u64() == Some(c_n))
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string(),
    ];
    let named = eventually(|| async {
        let r = publish(&a, "while C joins").await;
        match r["missing"].as_array() {
            // Before C registered: B's subscriber, in full.
            None => {
                assert_eq!(r, json!({"s": 1, "f": 0}));
                Err(format!("C is not named yet: {r}"))
            }
            Some(m) => Ok(m.clone()),
        }
    })
    .await;
    assert_eq!(named.len(), 1, "{named:?}");
    assert!(c_names.contains(&named[0].as_str().unwrap().to_string()));
    // A script's publish on A says so too.
    let mut on_a = Client::connect(&a.url(0)).await;
    let v = on_a
        .eval("local s, f, short = mix.mesh.publish('news', 'from lua') return {s = s, f = f, short = short}")
        .await;
    assert_eq!(v["r"], json!({"s": 1, "f": 0, "short": {"missing": named}}));
    while on_b.recv().await != "from lua" {}
    assert!(calls(&redis, "sdiff").await >= 1);

    // C subscribes: full answers count its subscriber too.
    std::fs::remove_file(&hold).unwrap();
    eventually(|| async {
        let r = publish(&a, "after C").await;
        (r == json!({"s": 2, "f": 0}))
            .then_some(())
            .ok_or(format!("not all counted yet: {r}"))
    })
    .await;
    assert_eq!(on_c.recv().await, "after C");
    let sdiffs = calls(&redis, "sdiff").await;
    publish(&a, "settled").await;
    assert_eq!(
        calls(&redis, "sdiff").await,
        sdiffs,
        "the sets were read again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_that_queue_up_together_go_back_in_one_message_and_count_in_full() {
    let redis = RedisServer::start().await;
    // A waits up to 10 s for reports: far longer than holding them takes,
    // even on a loaded machine.
    let a = Gateway::start_node_with(vec![probe("/p", "")], &redis, "r1", 10_000, Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let hold = dir.path().join("hold");
    let env = vec![(HOLD_REPORTS_ENV.to_string(), hold.display().to_string())];
    let b = Gateway::start_node_with(vec![probe("/p", "")], &redis, "r1", 10_000, env).await;
    a.wait_nodes(2).await;
    let mut on_b = Client::connect(&b.url(0)).await;
    on_b.eval("return (...):subscribe('news')").await;
    a.publish_until("news", "warm", 1).await;
    while on_b.recv().await != "warm" {}

    // B holds its reports: three publishes reach its subscriber, and their
    // answers wait for B's reports.
    std::fs::write(&hold, "").unwrap();
    let _: String = redis.query(&["CONFIG", "RESETSTAT"]).await;
    let publishes = futures_util::future::join_all((0..3).map(|i| {
        let a = &a;
        async move { publish(a, &format!("m{i}")).await }
    }));
    let release = async {
        let mut got = vec![on_b.recv().await, on_b.recv().await, on_b.recv().await];
        got.sort();
        assert_eq!(got, ["m0", "m1", "m2"]);
        // All three reports are queued on B now: let them go.
        std::fs::remove_file(&hold).unwrap();
    };
    let (answers, ()) = tokio::join!(publishes, release);
    for r in answers {
        assert_eq!(r, json!({"s": 1, "f": 0}));
    }
    // Three publish scripts, each one PUBLISH, and one for the reports.
    assert_eq!(calls(&redis, "evalsha").await, 3);
    assert_eq!(calls(&redis, "publish").await, 4, "the reports went apart");
}
