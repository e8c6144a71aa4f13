//! The emitter consumers against a real Redis and a real RabbitMQ, with a
//! recording `SocketIoTarget` in place of the Socket.IO server: what a
//! backend publishes arrives as commands, garbage is counted and skipped
//! without disturbing what follows, a queue that goes away is retried until
//! it is back, and two nodes on one AMQP fanout each get every message once.
//!
//! The shared Redis comes from `CONNMIX_TEST_REDIS` (default
//! 127.0.0.1:6379), RabbitMQ from `CONNMIX_TEST_AMQP` (default
//! amqp://guest:guest@127.0.0.1:5672/); scripts/test.sh provides both. Every
//! test uses its own channel, key or exchange name.

mod common;

use common::*;
use connmix::config::{EmitterConfig, EmitterKind};
use connmix::emitter::intake::Intake;
use connmix::emitter::{Command, EmitterMetrics, SocketIoTarget};
use lapin::options::{BasicPublishOptions, ExchangeDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// Records every command, as a node with one socket in every room would.
#[derive(Default)]
struct Recorder(Mutex<Vec<Command>>);

impl SocketIoTarget for Recorder {
    fn apply(&self, cmd: Command) -> usize {
        self.0.lock().unwrap().push(cmd);
        1
    }
}

impl Recorder {
    fn events(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|c| match c {
                Command::Emit(e) => format!("{} {}", e.event, serde_json::json!(e.args)),
                other => format!("{other:?}"),
            })
            .collect()
    }

    async fn wait_for(&self, want: &[&str]) {
        eventually(|| async {
            let got = self.events();
            if got == want {
                Ok(())
            } else {
                Err(format!("recorded {got:?}, want {want:?}"))
            }
        })
        .await
    }
}

/// Consumers of `emitters` feeding one recorder, stopped on drop.
struct Node {
    recorder: Arc<Recorder>,
    intakes: Vec<Arc<Intake>>,
    stop: CancellationToken,
}

impl Node {
    fn start(emitters: &[EmitterConfig]) -> Node {
        let recorder = Arc::new(Recorder::default());
        let metrics = EmitterMetrics::register(&prometheus::Registry::new());
        let stop = CancellationToken::new();
        let intakes = connmix::emitter::spawn(emitters, recorder.clone(), &metrics, &stop);
        Node {
            recorder,
            intakes,
            stop,
        }
    }

    async fn up(&self, i: usize) {
        let stats = &self.intakes[i].stats;
        eventually(|| async {
            if stats.up.get() == 1 {
                Ok(())
            } else {
                Err(format!("emitter {i} never came up"))
            }
        })
        .await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn emitter(kind: EmitterKind, url: String, channel: &str) -> EmitterConfig {
    EmitterConfig {
        kind,
        url,
        channel: Some(channel.to_string()),
    }
}

const EMIT: &str = r#"{"method": "emit", "event": "notify", "data": [{"n": 1}], "binary": false, "namespace": "/", "room": "42", "skip_sid": null, "callback": null, "host_id": "h"}"#;

#[tokio::test(flavor = "multi_thread")]
async fn python_socketio_over_redis_skips_garbage_and_goes_on() {
    let channel = unique_name("py-redis");
    let node = Node::start(&[emitter(
        EmitterKind::PythonSocketio,
        test_redis_url(),
        &channel,
    )]);
    node.up(0).await;
    for garbage in [
        &b"not json"[..],
        b"\xff\x00",
        b"{\"method\": \"emit\"}",
        b"\x80\x04K\x01.",
    ] {
        assert_eq!(redis_publish(&test_redis_url(), &channel, garbage).await, 1);
    }
    redis_publish(&test_redis_url(), &channel, EMIT.as_bytes()).await;
    node.recorder.wait_for(&[r#"notify [{"n":1}]"#]).await;
    let stats = &node.intakes[0].stats;
    assert_eq!(stats.invalid.get(), 3, "garbage is counted as invalid");
    assert_eq!(
        stats.unsupported.get(),
        1,
        "the pickle is counted as unsupported"
    );
    assert_eq!(stats.applied.get(), 1);
    assert_eq!(stats.sockets.get(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn socket_io_redis_reads_the_namespace_and_room_channels_of_its_key() {
    let key = unique_name("sio-redis");
    let node = Node::start(&[emitter(EmitterKind::SocketIoRedis, test_redis_url(), &key)]);
    node.up(0).await;
    let msg = |event: &str, rooms: &[&str]| {
        let v = rmpv::Value::Array(vec![
            "emitter".into(),
            rmpv::Value::Map(vec![
                ("type".into(), 2.into()),
                (
                    "data".into(),
                    rmpv::Value::Array(vec![event.into(), 7.into()]),
                ),
                ("nsp".into(), "/".into()),
            ]),
            rmpv::Value::Map(vec![
                (
                    "rooms".into(),
                    rmpv::Value::Array(rooms.iter().map(|r| (*r).into()).collect()),
                ),
                ("except".into(), rmpv::Value::Array(vec![])),
                ("flags".into(), rmpv::Value::Map(vec![])),
            ]),
        ]);
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &v).unwrap();
        out
    };
    let url = test_redis_url();
    assert_eq!(
        redis_publish(&url, &format!("{key}#/#"), &msg("all", &[])).await,
        1
    );
    redis_publish(&url, &format!("{key}#/#r1#"), &msg("one", &["r1"])).await;
    // Not its key's broadcast channels: the adapters' requests, another key.
    assert_eq!(
        redis_publish(&url, &format!("{key}-request#/#"), b"{}").await,
        0
    );
    assert_eq!(
        redis_publish(&url, &format!("{key}x#/#"), &msg("x", &[])).await,
        0
    );
    redis_publish(&url, &format!("{key}#/#"), b"\x93garbage").await;
    redis_publish(&url, &format!("{key}#/#"), &msg("last", &[])).await;
    node.recorder
        .wait_for(&["all [7]", "one [7]", "last [7]"])
        .await;
    assert_eq!(node.intakes[0].stats.invalid.get(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_goes_away_is_retried_until_it_is_back() {
    let mut redis = RedisServer::start().await;
    let url = format!("redis://{}/", redis.addr());
    let channel = unique_name("retry");
    let node = Node::start(&[emitter(EmitterKind::PythonSocketio, url.clone(), &channel)]);
    node.up(0).await;
    redis.stop();
    let stats = &node.intakes[0].stats;
    eventually(|| async {
        if stats.up.get() == 0 && stats.failures.get() >= 2 {
            Ok(())
        } else {
            Err(format!(
                "up {} failures {}: the loss is not seen or not retried",
                stats.up.get(),
                stats.failures.get()
            ))
        }
    })
    .await;
    redis.restart().await;
    node.up(0).await;
    redis_publish(&url, &channel, EMIT.as_bytes()).await;
    node.recorder.wait_for(&[r#"notify [{"n":1}]"#]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_that_stops_answering_is_noticed_and_read_again_once_it_answers() {
    let redis = RedisServer::start().await;
    let url = format!("redis://{}/", redis.addr());
    let channel = unique_name("frozen");
    let node = Node::start(&[emitter(EmitterKind::PythonSocketio, url.clone(), &channel)]);
    node.up(0).await;
    // Frozen, the connection stays open: only an unanswered PING tells.
    redis.pause();
    let stats = &node.intakes[0].stats;
    eventually(|| async {
        if stats.failures.get() >= 1 && stats.up.get() == 0 {
            Ok(())
        } else {
            Err("a frozen Redis is not noticed".to_string())
        }
    })
    .await;
    redis.resume();
    node.up(0).await;
    redis_publish(&url, &channel, EMIT.as_bytes()).await;
    node.recorder.wait_for(&[r#"notify [{"n":1}]"#]).await;
}

async fn amqp_publish(url: &str, exchange: &str, payload: &[u8]) {
    let conn = lapin::Connection::connect_uri(
        connmix::emitter::amqp_consumer::uri(url).unwrap(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.basic_publish(
        exchange.into(),
        "".into(),
        BasicPublishOptions::default(),
        payload,
        BasicProperties::default().with_content_type("text/plain".into()),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    conn.close(200, "done".into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_on_one_amqp_fanout_each_get_every_message_once() {
    let exchange = unique_name("fanout");
    let cfg = [emitter(
        EmitterKind::PythonSocketio,
        test_amqp_url(),
        &exchange,
    )];
    let a = Node::start(&cfg);
    let b = Node::start(&cfg);
    a.up(0).await;
    b.up(0).await;
    amqp_publish(&test_amqp_url(), &exchange, b"garbage").await;
    amqp_publish(&test_amqp_url(), &exchange, EMIT.as_bytes()).await;
    amqp_publish(
        &test_amqp_url(),
        &exchange,
        EMIT.replace("notify", "second").as_bytes(),
    )
    .await;
    for node in [&a, &b] {
        node.recorder
            .wait_for(&[r#"notify [{"n":1}]"#, r#"second [{"n":1}]"#])
            .await;
        assert_eq!(node.intakes[0].stats.invalid.get(), 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exchange_declared_durable_by_the_backend_is_used_as_it_is() {
    let exchange = unique_name("durable");
    let conn = lapin::Connection::connect_uri(
        connmix::emitter::amqp_consumer::uri(&test_amqp_url()).unwrap(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let durable = ExchangeDeclareOptions {
        durable: true,
        auto_delete: true,
        ..Default::default()
    };
    ch.exchange_declare(
        exchange.as_str().into(),
        ExchangeKind::Fanout,
        durable,
        FieldTable::default(),
    )
    .await
    .unwrap();
    let node = Node::start(&[emitter(
        EmitterKind::PythonSocketio,
        test_amqp_url(),
        &exchange,
    )]);
    node.up(0).await;
    amqp_publish(&test_amqp_url(), &exchange, EMIT.as_bytes()).await;
    node.recorder.wait_for(&[r#"notify [{"n":1}]"#]).await;
    assert_eq!(node.intakes[0].stats.failures.get(), 0);
    conn.close(200, "done".into()).await.unwrap();
}

/// A TCP relay to `upstream` whose connections can be cut at once (a
/// RabbitMQ link dropped by the network), while it keeps accepting.
struct Relay {
    port: u16,
    cut: Arc<tokio::sync::Notify>,
}

impl Relay {
    async fn start(upstream: String) -> Relay {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(tokio::sync::Notify::new());
        let cuts = cut.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let cut = cuts.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let mut outbound = tokio::net::TcpStream::connect(upstream).await.unwrap();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.notified() => {}
                    }
                });
            }
        });
        Relay { port, cut }
    }

    /// Drops every connection open now.
    fn cut(&self) {
        self.cut.notify_waiters();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_amqp_link_is_noticed_and_a_new_queue_bound() {
    let broker = lapin::uri::AMQPUri::from_str(&test_amqp_url()).unwrap();
    let upstream = format!("{}:{}", broker.authority.host, broker.authority.port);
    let relay = Relay::start(upstream).await;
    let mut via_relay = url::Url::parse(&test_amqp_url()).unwrap();
    via_relay.set_host(Some("127.0.0.1")).unwrap();
    via_relay.set_port(Some(relay.port)).unwrap();
    let exchange = unique_name("dropped");
    let node = Node::start(&[emitter(
        EmitterKind::PythonSocketio,
        via_relay.to_string(),
        &exchange,
    )]);
    node.up(0).await;
    relay.cut();
    let stats = &node.intakes[0].stats;
    eventually(|| async {
        if stats.failures.get() >= 1 {
            Ok(())
        } else {
            Err("the dropped link is not noticed".to_string())
        }
    })
    .await;
    node.up(0).await;
    amqp_publish(&test_amqp_url(), &exchange, EMIT.as_bytes()).await;
    node.recorder.wait_for(&[r#"notify [{"n":1}]"#]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_queue_is_retried_and_does_not_hold_up_the_others() {
    let dead = format!("amqp://guest:guest@127.0.0.1:{}/", free_port());
    let channel = unique_name("beside-dead");
    let node = Node::start(&[
        emitter(EmitterKind::PythonSocketio, dead, "socketio"),
        emitter(EmitterKind::PythonSocketio, test_redis_url(), &channel),
    ]);
    node.up(1).await;
    redis_publish(&test_redis_url(), &channel, EMIT.as_bytes()).await;
    node.recorder.wait_for(&[r#"notify [{"n":1}]"#]).await;
    let stats = &node.intakes[0].stats;
    eventually(|| async {
        if stats.failures.get() >= 3 && stats.up.get() == 0 {
            Ok(())
        } else {
            Err(format!("failures {}", stats.failures.get()))
        }
    })
    .await;
}
