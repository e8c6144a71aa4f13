//! `engine.emitters` in the real binary: a wrong entry stops start-up
//! naming its key; a queue that cannot be reached is retried while the
//! gateway serves; garbage on a queue is counted and skipped while the
//! messages after it are applied.
//!
//! The shared Redis comes from `CONNMIX_TEST_REDIS` (default
//! 127.0.0.1:6379); scripts/test.sh provides it.

mod common;

use common::*;
use std::process::Command;

/// The `engine` lines of `emitters` (YAML flow maps).
fn emitters_yaml(emitters: &[String]) -> String {
    let mut lines = String::from("  emitters:\n");
    for e in emitters {
        lines.push_str(&format!("    - {e}\n"));
    }
    lines
}

/// A gateway with a plain WebSocket server reading `emitter` (a YAML flow map).
async fn gateway_reading(emitter: String) -> Gateway {
    Gateway::start_with(
        vec![ServerSpec::new(
            "/ws",
            Script::Repo("lua/entry.websocket.lua"),
        )],
        &emitters_yaml(&[emitter]),
        "",
    )
    .await
}

fn up(i: usize) -> String {
    format!("connmix_emitter_up{{emitter=\"{i}\"}}")
}

fn messages(i: usize, result: &str) -> String {
    format!("connmix_emitter_messages_total{{emitter=\"{i}\",result=\"{result}\"}}")
}

#[test]
fn a_wrong_emitter_stops_start_up_naming_its_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.lua"), "").unwrap();
    for (emitter, line) in [
        (
            "    - type: python-socketio\n      url: 'kafka://mq:9092'\n",
            "error: c.yaml: engine.emitters[0].url: type python-socketio reads redis://, rediss://, amqp://, amqps://, not kafka:// (line 6, column 7)",
        ),
        (
            "    - type: socket.io-redis\n      url: 'amqp://mq'\n",
            "error: c.yaml: engine.emitters[0].url: type socket.io-redis reads redis://, rediss://, not amqp:// (line 6, column 7)",
        ),
        (
            "    - type: kombu\n      url: 'amqp://mq'\n",
            "error: c.yaml: engine.emitters[0].type: unknown variant `kombu`, expected `python-socketio` or `socket.io-redis` (line 5, column 13)",
        ),
    ] {
        let yaml = format!(
            "engine:\n  servers:\n    - {{port: 7000, entry: x.lua}}\n  emitters:\n{emitter}"
        );
        std::fs::write(dir.path().join("c.yaml"), yaml).unwrap();
        for cmd in ["check", "dev"] {
            let o = Command::new(env!("CARGO_BIN_EXE_connmix"))
                .args([cmd, "-f", "c.yaml"])
                .current_dir(dir.path())
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(err.trim_end(), line, "{cmd}");
            assert_eq!(o.status.code(), Some(2), "{cmd}: {err}");
        }
    }
}

#[test]
fn the_emitters_example_passes_check() {
    let o = Command::new(env!("CARGO_BIN_EXE_connmix"))
        .args(["check", "-f", "examples/socketio-emitters.yaml"])
        .current_dir(repo())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(out.trim(), "examples/socketio-emitters.yaml: ok (1 server)");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_queue_is_retried_while_the_gateway_serves() {
    let dead = free_port();
    let gw = gateway_reading(format!(
        "{{type: python-socketio, url: 'amqp://guest:guest@127.0.0.1:{dead}//'}}"
    ))
    .await;
    gw.wait_metric("connmix_emitter_failures_total{emitter=\"0\"}", 2.0)
        .await;
    assert_eq!(gw.metric(&up(0)).await, 0.0);
    let log = gw.log();
    assert!(
        log.contains("engine.emitters[0]: cannot read amqp://guest:***@127.0.0.1")
            && log.contains("retrying"),
        "the failure is logged with the key and without the password:\n{log}"
    );
    // Still serving: the API answers.
    let (code, _) = gw
        .post_raw("/v1/mesh/publish", r#"{"c":"x","d":"y"}"#)
        .await;
    assert_eq!(code, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_on_the_queue_is_counted_and_what_follows_is_applied() {
    let channel = unique_name("garbage");
    let url = test_redis_url();
    let gw = gateway_reading(format!(
        "{{type: python-socketio, url: '{url}', channel: {channel}}}"
    ))
    .await;
    gw.wait_metric(&up(0), 1.0).await;
    for junk in [
        &b"\x00\xff"[..],
        b"{\"method\":\"emit\"}",
        b"[]",
        b"\x80\x04K\x01.",
        b"\x80\x04K\x02.",
        br#"{"method": "emit", "event": "after", "data": ["ok"], "room": "r"}"#,
    ] {
        let n = redis_publish(&url, &channel, junk).await;
        assert_eq!(n, 1, "the gateway subscribes");
    }
    gw.wait_metric(&messages(0, "applied"), 1.0).await;
    assert_eq!(gw.metric(&messages(0, "invalid")).await, 3.0);
    assert_eq!(gw.metric(&messages(0, "unsupported")).await, 2.0);
    let log = gw.log();
    assert_eq!(
        log.lines().filter(|l| l.contains("pickled")).count(),
        1,
        "a pickle is reported once per emitter:\n{log}"
    );
    assert!(
        log.contains(
            "engine.emitters[0]: skipped a message that is not a python-socketio message: not JSON"
        ),
        "{log}"
    );
    let (code, _) = gw
        .post_raw("/v1/mesh/publish", r#"{"c":"x","d":"y"}"#)
        .await;
    assert_eq!(code, 200);
}
