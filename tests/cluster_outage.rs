//! What a publish (and a cross-node send or conn.call) answers while the
//! cluster's Redis restarts or stalls, checked against what the clients
//! received: a publish answered as delivered reached every subscriber, one
//! answered as failed never arrives, even later; only an answer that names
//! `missing` nodes (or, for a send or call, says it "may have been
//! delivered") leaves it open.
//! Real processes: two `connmix engine` nodes and a private redis-server.

mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// Subscribers on node B.
const SUBS: usize = 3;
/// Upper bound on the publishes of one phase (the loops end on events).
const MAX_PUBLISHES: usize = 20_000;
/// The test-only pause point of the subscription link (src/broker/sync.rs).
const HOLD_ENV: &str = "CONNMIX_TEST_HOLD_RESUBSCRIBE";

/// How a backend must read an answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Told {
    /// Delivered to everyone counted (and nothing is `missing`).
    Delivered,
    /// Not delivered to other nodes, now or later.
    Failed,
    /// Some nodes' delivery is unknown (`missing`, or "may have been").
    Unknown,
}

fn publish_told(v: &Value) -> Told {
    let r = &v["r"];
    if !v["E"].is_null() || r["error"].is_string() {
        Told::Failed
    } else if r["missing"].as_array().is_some_and(|m| !m.is_empty()) {
        Told::Unknown
    } else {
        Told::Delivered
    }
}

fn send_told(v: &Value) -> Told {
    if v["r"]["s"] == json!(true) {
        Told::Delivered
    } else if v["E"]["m"]
        .as_str()
        .is_some_and(|m| m.contains("may have been delivered"))
    {
        Told::Unknown
    } else {
        Told::Failed
    }
}

/// A backend's request and what it was told.
struct Asked {
    data: String,
    answer: Value,
    told: Told,
    /// Clients that must (or must not) get `data`: all of B's for a
    /// publish, the first one for a send.
    to: usize,
}

/// Node A publishing to B's subscribers (and sending to B's first client).
struct Backend<'a> {
    a: &'a Gateway,
    send_to: String,
    asked: Vec<Asked>,
    /// Whether an answer without `missing` must count every subscriber.
    exact: bool,
}

impl Backend<'_> {
    async fn publish(&mut self) -> Told {
        let data = format!("p{}", self.asked.len());
        let answer = self
            .a
            .call("/v1/mesh/publish", json!({"c": "news", "d": data}))
            .await;
        let told = publish_told(&answer);
        if told == Told::Delivered && self.exact {
            assert_eq!(answer["r"]["s"], SUBS, "a full answer counts all: {answer}");
        }
        self.asked.push(Asked {
            data,
            answer,
            told,
            to: SUBS,
        });
        told
    }

    async fn send(&mut self) -> Told {
        let data = format!("s{}", self.asked.len());
        let answer = self
            .a
            .call("/v1/mesh/send", json!({"c": self.send_to, "d": data}))
            .await;
        let told = send_told(&answer);
        self.asked.push(Asked {
            data,
            answer,
            told,
            to: 1,
        });
        told
    }

    fn count(&self, told: Told) -> usize {
        self.asked.iter().filter(|a| a.told == told).count()
    }
}

type Reader = tokio::task::JoinHandle<(Client, Vec<String>)>;

/// Reads a client's text frames until `end`.
async fn read_until_end(mut c: Client) -> (Client, Vec<String>) {
    let mut got = Vec::new();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(90), c.ws.next())
            .await
            .expect("no frame in 90 s")
            .expect("connection ended")
            .expect("read error");
        if let Message::Text(t) = m {
            if t.as_str() == "end" {
                return (c, got);
            }
            got.push(t.to_string());
        }
    }
}

/// Two nodes on `redis`; B (started with `env`) has [`SUBS`] subscribers of
/// `news`, each read by a task until `end`. Returns A, B, B's first client
/// id and the readers.
async fn two_nodes(
    redis: &RedisServer,
    prefix: &str,
    timeout_ms: u64,
    env: Vec<(String, String)>,
) -> (Gateway, Gateway, String, Vec<Reader>) {
    let a =
        Gateway::start_node_with(vec![probe("/p", "")], redis, prefix, timeout_ms, vec![]).await;
    let b = Gateway::start_node_with(vec![probe("/p", "")], redis, prefix, timeout_ms, env).await;
    a.wait_nodes(2).await;
    b.wait_nodes(2).await;
    let mut clients = Vec::new();
    for _ in 0..SUBS {
        let mut c = Client::connect(&b.url(0)).await;
        c.eval("return (...):subscribe('news')").await;
        clients.push(c);
    }
    let first = clients[0].id().await;
    a.publish_until("news", "warm", SUBS as u64).await;
    let readers = clients
        .into_iter()
        .map(|c| tokio::spawn(read_until_end(c)))
        .collect();
    (a, b, first, readers)
}

/// Ends the readers (an `end` every subscriber gets) and checks every
/// answer against what arrived; returns the clients.
async fn check(a: &Gateway, backend: &Backend<'_>, readers: Vec<Reader>) -> Vec<Client> {
    a.publish_until("news", "end", SUBS as u64).await;
    let mut received: Vec<HashMap<String, usize>> = Vec::new();
    let mut clients = Vec::new();
    for r in readers {
        let (c, got) = r.await.unwrap();
        clients.push(c);
        let mut seen = HashMap::new();
        for d in got {
            *seen.entry(d).or_insert(0) += 1;
        }
        received.push(seen);
    }
    for asked in &backend.asked {
        let copies: Vec<usize> = received[..asked.to]
            .iter()
            .map(|r| r.get(&asked.data).copied().unwrap_or(0))
            .collect();
        assert!(
            copies.iter().all(|n| *n <= 1),
            "{} arrived twice: {copies:?}",
            asked.data
        );
        let reached = copies.iter().sum::<usize>();
        match asked.told {
            Told::Delivered => assert_eq!(
                reached, asked.to,
                "{} was answered as delivered but reached {reached} of {}: {}",
                asked.data, asked.to, asked.answer
            ),
            Told::Failed => assert_eq!(
                reached, 0,
                "{} was answered as failed but reached {reached} clients: {}",
                asked.data, asked.answer
            ),
            Told::Unknown => {}
        }
    }
    eprintln!(
        "answers: {} delivered, {} failed, {} unknown",
        backend.count(Told::Delivered),
        backend.count(Told::Failed),
        backend.count(Told::Unknown)
    );
    clients
}

/// Redis restarts empty while node A publishes to node B's subscribers, and
/// B is held (test-only pause point) after reconnecting and before it
/// re-subscribes: A's link is back, B's subscriptions are not. Every
/// publish of that window must say B is `missing`; none answered as
/// delivered may be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_publishes_are_delivered_or_say_so() {
    let mut redis = RedisServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let hold = dir.path().join("hold");
    let env = vec![(HOLD_ENV.to_string(), hold.display().to_string())];
    let (a, _b, first, readers) = two_nodes(&redis, "o1", 2000, env).await;
    let b_n = first.parse::<u64>().unwrap() >> 32;
    let b_id = a
        .nodes()
        .await
        .into_iter()
        .find(|n| n["n"].as_u64() == Some(b_n))
        .unwrap()["id"]
        .clone();
    let mut backend = Backend {
        a: &a,
        send_to: first,
        asked: Vec::new(),
        exact: true,
    };
    for _ in 0..20 {
        assert_eq!(backend.publish().await, Told::Delivered);
    }

    std::fs::write(&hold, "").unwrap();
    redis.restart().await;
    // A's link comes back while B's subscriptions are held back: publish
    // until A has answered 20 times without an error in that window.
    let mut answered = 0;
    for i in 0.. {
        assert!(i < MAX_PUBLISHES, "node A never got its Redis link back");
        if backend.publish().await != Told::Failed {
            answered += 1;
            if answered == 20 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A still counts B, and names it: B's subscriptions are not in place.
    for x in &backend.asked[backend.asked.len() - 20..] {
        assert_eq!(x.answer["r"]["missing"], json!([b_id]), "{}", x.answer);
    }

    // B re-subscribes: answers become full deliveries again.
    std::fs::remove_file(&hold).unwrap();
    let mut delivered = 0;
    for i in 0.. {
        assert!(i < MAX_PUBLISHES, "publishes never reached B again");
        if backend.publish().await == Told::Delivered {
            delivered += 1;
            if delivered == 20 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    check(&a, &backend, readers).await;
}

/// Redis stalls (SIGSTOP) for 10 s while node A publishes to node B's
/// subscribers and sends to one of them: nothing answered as failed
/// arrives after Redis resumes, nothing answered as delivered is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stall_failed_answers_are_not_delivered_later() {
    let redis = RedisServer::start().await;
    let (a, b, first, readers) = two_nodes(&redis, "o2", 1000, vec![]).await;
    let mut api = ApiClient::connect(&a).await;
    // conn.call subscribe of B's first client to `c<i>`, and what it was told.
    let mut calls: Vec<(String, Told, Value)> = Vec::new();
    let mut call = async |first: &str| {
        let ch = format!("c{}", calls.len());
        let answer = api
            .request(
                "conn.call",
                json!({"c": first, "f": "subscribe", "a": [ch]}),
            )
            .await;
        calls.push((ch, send_told(&answer), answer));
    };
    let mut backend = Backend {
        a: &a,
        send_to: first.clone(),
        asked: Vec::new(),
        exact: true,
    };
    for _ in 0..10 {
        assert_eq!(backend.publish().await, Told::Delivered);
        assert_eq!(backend.send().await, Told::Delivered);
        call(&first).await;
    }

    redis.pause();
    let stalled = Instant::now();
    while stalled.elapsed() < Duration::from_secs(10) {
        backend.publish().await;
        backend.send().await;
        call(&first).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    redis.resume();
    // Some requests were handed to the stalled Redis (not just refused as
    // "link down"): those are the ones it would carry out on resuming.
    let timed_out = |x: &&Asked| {
        let text = x.answer.to_string();
        text.contains("timed out") || text.contains("in time")
    };
    assert!(
        backend.asked.iter().filter(timed_out).count() >= 1,
        "no request reached the stalled Redis"
    );

    let mut delivered = 0;
    for i in 0.. {
        assert!(i < MAX_PUBLISHES, "publishes never got through again");
        let p = backend.publish().await;
        let s = backend.send().await;
        call(&first).await;
        if p == Told::Delivered && s == Told::Delivered {
            delivered += 1;
            if delivered == 20 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let _clients = check(&a, &backend, readers).await;
    // A call answered as done subscribed the client; one answered as failed
    // did not, even after Redis resumed (B's local count tells).
    let calls_told = |t: Told| calls.iter().filter(|c| c.1 == t).count();
    eprintln!(
        "calls: {} done, {} failed, {} unknown",
        calls_told(Told::Delivered),
        calls_told(Told::Failed),
        calls_told(Told::Unknown)
    );
    for (ch, told, answer) in &calls {
        let (s, _) = b.publish(ch, "x").await;
        match told {
            Told::Delivered => assert_eq!(s, 1, "{ch} answered done: {answer}"),
            Told::Failed => assert_eq!(s, 0, "{ch} answered failed but applied: {answer}"),
            Told::Unknown => {}
        }
    }
}

/// Another node removed B's registrations and key (as it does when B's key
/// expired, e.g. B froze past `nodeExpiry`) while B's subscription link
/// stayed up: B registers again at its next heartbeat, and publishes count
/// B's subscribers again, none `missing`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_registrations_were_removed_registers_again() {
    let redis = RedisServer::start().await;
    let (a, _b, first, readers) = two_nodes(&redis, "o3", 2000, vec![]).await;
    let b_n = (first.parse::<u64>().unwrap() >> 32).to_string();
    // What another node's heartbeat does to a node whose key expired.
    let _: i64 = redis.query(&["SREM", "o3:chnodes:news", &b_n]).await;
    let _: i64 = redis.query(&["DEL", &format!("o3:nodechans:{b_n}")]).await;
    let _: i64 = redis.query(&["SREM", "o3:nodes", &b_n]).await;
    let _: i64 = redis.query(&["SREM", "o3:synced", &b_n]).await;
    let _: i64 = redis.query(&["DEL", &format!("o3:node:{b_n}")]).await;
    // Until B is back, A may not count B's deliveries (B still delivers:
    // its link is up), but it never answers a lost publish as delivered.
    let mut backend = Backend {
        a: &a,
        send_to: first,
        asked: Vec::new(),
        exact: false,
    };
    let deadline = Instant::now() + DEADLINE;
    loop {
        backend.publish().await;
        let members: Vec<String> = redis.query(&["SMEMBERS", "o3:chnodes:news"]).await;
        let synced: bool = redis.query(&["SISMEMBER", "o3:synced", &b_n]).await;
        if members == vec![b_n.clone()] && synced {
            break;
        }
        assert!(Instant::now() < deadline, "B never registered again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    backend.exact = true;
    assert_eq!(backend.publish().await, Told::Delivered);
    check(&a, &backend, readers).await;
}
