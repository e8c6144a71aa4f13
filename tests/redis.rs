//! `mix.redis` against a real Redis, from real connections through the probe
//! script. The shared Redis comes from `CONNMIX_TEST_REDIS` (host:port,
//! default 127.0.0.1:6379; scripts/test.sh provides one); every test uses its
//! own key prefix so they can run at once. Tests that need to stop Redis or
//! to set a password start a private `redis-server` on a free port and kill
//! it when they end, even on failure.

mod common;

use common::*;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

fn redis_addr() -> String {
    std::env::var("CONNMIX_TEST_REDIS")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "127.0.0.1:6379".into())
}

/// A key prefix no other test (or run) uses.
fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("connmix-test:{test}:{}:{nanos}:", std::process::id())
}

/// `engine:` lines: one worker (so every client shares one Lua VM and
/// "does not block others" means what it says) and these Redis connections.
fn engine(conns: &[&str]) -> String {
    let mut y = String::from("  workers: 1\n  luavm:\n    redis:\n");
    for c in conns {
        y.push_str(&format!("      - {c}\n"));
    }
    y
}

async fn gateway(conns: &[&str]) -> Gateway {
    Gateway::start_with(vec![probe("/p", "")], &engine(conns), "").await
}

/// A `redis-server` of this test's own, killed on drop.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    args: Vec<String>,
}

impl RedisServer {
    fn start(extra: &[&str]) -> RedisServer {
        let mut s = RedisServer {
            child: None,
            port: free_port(),
            args: extra.iter().map(|a| a.to_string()).collect(),
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test.sh installs it)");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until it answers PING (`+PONG`, or `-NOAUTH` with a password).
    fn wait_ready(&mut self) {
        let start = std::time::Instant::now();
        loop {
            if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.set_read_timeout(Some(DEADLINE));
                let mut buf = [0u8; 64];
                if s.write_all(b"PING\r\n").is_ok()
                    && matches!(s.read(&mut buf), Ok(n) if n > 0 && (buf[0] == b'+' || buf[0] == b'-'))
                {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("redis-server on {} exited with {status}", self.port);
            }
            assert!(start.elapsed() < DEADLINE, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Runs `code` and returns `(r, e)`.
async fn eval(c: &mut Client, code: &str) -> (Value, Value) {
    let v = c.eval(code).await;
    (v["r"].clone(), v["e"].clone())
}

/// Asserts `(r, e)` is `nil, <string containing needle>`.
fn assert_err(got: &(Value, Value), needle: &str) {
    assert!(got.0.is_null(), "expected nil, got {got:?}");
    let e = got
        .1
        .as_str()
        .unwrap_or_else(|| panic!("no error: {got:?}"));
    assert!(e.contains(needle), "error {e:?} lacks {needle:?}");
}

#[tokio::test]
async fn redis_round_trip_and_reply_conversion() {
    let addr = redis_addr();
    let gw = gateway(&[&format!("{{name: default, addr: '{addr}'}}")]).await;
    let mut c = Client::connect(&gw.url(0)).await;
    let p = prefix("types");
    let r = |cmd: &str| format!(r#"return mix.redis.connection("default"):command({cmd})"#);

    assert_eq!(
        eval(&mut c, &r(&format!(r#""set", "{p}s", "v1""#))).await,
        (json!("OK"), Value::Null)
    );
    assert_eq!(
        eval(&mut c, &r(&format!(r#""get", "{p}s""#))).await,
        (json!("v1"), Value::Null)
    );
    // The contract's call shape, with the object kept in a local.
    let (v, e) = eval(
        &mut c,
        &format!(r#"local redis = mix.redis.connection("default") redis:command("SET", "{p}b", "a\0b") local v = redis:command("get", "{p}b") return string.len(v) == 3 and string.byte(v, 2) == 0"#),
    )
    .await;
    assert_eq!((v, e), (json!(true), Value::Null));

    // incr: a number, not a string.
    assert_eq!(
        eval(&mut c, &r(&format!(r#""incr", "{p}n""#))).await,
        (json!(1), Value::Null)
    );
    let (v, _) = eval(
        &mut c,
        &format!(r#"local n = mix.redis.connection("default"):command("incr", "{p}n") return type(n) .. ":" .. (n + 10)"#),
    )
    .await;
    assert_eq!(v, json!("number:12"));
    // Numbers and booleans as arguments.
    assert_eq!(
        eval(&mut c, &r(&format!(r#""incrby", "{p}n", 5"#))).await.0,
        json!(7)
    );
    assert_eq!(
        eval(&mut c, &r(&format!(r#""set", "{p}t", true"#))).await.0,
        json!("OK")
    );
    assert_eq!(
        eval(&mut c, &r(&format!(r#""get", "{p}t""#))).await.0,
        json!("1")
    );

    // A missing key: nil, and no error.
    let (v, e) = eval(
        &mut c,
        &format!(r#"local v, err = mix.redis.connection("default"):command("get", "{p}missing") return {{is_nil = v == nil, err_nil = err == nil}}"#),
    )
    .await;
    assert_eq!(
        (v, e),
        (json!({"is_nil": true, "err_nil": true}), Value::Null)
    );

    // Arrays: 1-based tables; a nil element is false.
    assert_eq!(
        eval(&mut c, &r(&format!(r#""rpush", "{p}l", "a", "b", "c""#)))
            .await
            .0,
        json!(3)
    );
    let (v, e) = eval(&mut c, &r(&format!(r#""lrange", "{p}l", 0, -1"#))).await;
    assert_eq!((v, e), (json!(["a", "b", "c"]), Value::Null));
    let (v, _) = eval(
        &mut c,
        &format!(r#"local t = mix.redis.connection("default"):command("mget", "{p}s", "{p}missing", "{p}n") return {{n = table.getn(t), a = t[1], b = t[2], c = t[3]}}"#),
    )
    .await;
    assert_eq!(v, json!({"n": 3, "a": "v1", "b": false, "c": "7"}));

    // An error reply: nil, err with Redis's text; the connection stays usable.
    let got = eval(&mut c, &r(&format!(r#""incr", "{p}l""#))).await;
    assert_err(&got, "WRONGTYPE");
    let got = eval(&mut c, &r(r#""nosuchcommand", "x""#)).await;
    assert_err(&got, "ERR");
    // Bad arguments and refused commands are error values too, never raised.
    assert_err(
        &eval(&mut c, &r(&format!(r#""set", "{p}x", nil"#))).await,
        "argument #3 is nil",
    );
    assert_err(&eval(&mut c, &r(r#""select", 1"#)).await, "not supported");
    assert_eq!(
        eval(&mut c, &r(&format!(r#""llen", "{p}l""#))).await.0,
        json!(3)
    );

    eval(
        &mut c,
        &r(&format!(r#""del", "{p}s", "{p}b", "{p}n", "{p}t", "{p}l""#)),
    )
    .await;
}

#[tokio::test]
async fn redis_db_selects_the_database() {
    let addr = redis_addr();
    let gw = gateway(&[
        &format!("{{name: default, addr: '{addr}'}}"),
        &format!("{{name: db2, addr: '{addr}', db: 2, poolSize: 2}}"),
    ])
    .await;
    let mut c = Client::connect(&gw.url(0)).await;
    let p = prefix("db");
    let on =
        |name: &str, cmd: &str| format!(r#"return mix.redis.connection("{name}"):command({cmd})"#);

    eval(&mut c, &on("default", &format!(r#""set", "{p}k", "zero""#))).await;
    let (v, e) = eval(&mut c, &on("db2", &format!(r#""get", "{p}k""#))).await;
    assert_eq!(
        (v, e),
        (Value::Null, Value::Null),
        "db 2 must not see db 0's key"
    );
    eval(&mut c, &on("db2", &format!(r#""set", "{p}k", "two""#))).await;
    // Both slots of the db2 pool (round-robin) are on db 2.
    for _ in 0..3 {
        assert_eq!(
            eval(&mut c, &on("db2", &format!(r#""get", "{p}k""#)))
                .await
                .0,
            json!("two")
        );
        assert_eq!(
            eval(&mut c, &on("default", &format!(r#""get", "{p}k""#)))
                .await
                .0,
            json!("zero")
        );
    }
    eval(&mut c, &on("db2", &format!(r#""del", "{p}k""#))).await;
    eval(&mut c, &on("default", &format!(r#""del", "{p}k""#))).await;
}

#[tokio::test]
async fn redis_unknown_name_is_an_error_value() {
    let addr = redis_addr();
    let gw = gateway(&[&format!("{{name: default, addr: '{addr}'}}")]).await;
    let mut c = Client::connect(&gw.url(0)).await;
    let got = eval(&mut c, r#"return mix.redis.connection("nope")"#).await;
    assert_err(&got, "unknown redis connection nope");
    let got = eval(&mut c, "return mix.redis.connection()").await;
    assert_err(&got, "needs a connection name");
    let (v, _) = eval(
        &mut c,
        r#"return tostring(mix.redis.connection("default"))"#,
    )
    .await;
    assert!(v.as_str().unwrap().contains("default"), "{v}");
}

#[tokio::test]
async fn redis_unreachable_is_an_error_not_a_hang() {
    let addr = redis_addr();
    let dead = free_port();
    let gw = gateway(&[
        &format!("{{name: default, addr: '{addr}'}}"),
        &format!("{{name: gone, addr: '127.0.0.1:{dead}'}}"),
    ])
    .await;
    let mut a = Client::connect(&gw.url(0)).await;
    let mut b = Client::connect(&gw.url(0)).await;
    // connection() itself never connects, so it succeeds.
    let (v, _) = eval(&mut a, r#"return mix.redis.connection("gone") ~= nil"#).await;
    assert_eq!(v, json!(true));
    for _ in 0..2 {
        let got = eval(
            &mut a,
            r#"return mix.redis.connection("gone"):command("get", "k")"#,
        )
        .await;
        assert_err(&got, &format!("redis gone (127.0.0.1:{dead})"));
        // The other client, and the other connection name, are served.
        let (v, e) = eval(
            &mut b,
            r#"return mix.redis.connection("default"):command("ping")"#,
        )
        .await;
        assert_eq!((v, e), (json!("PONG"), Value::Null));
    }
}

#[tokio::test]
async fn redis_waiting_hook_does_not_block_other_connections() {
    // A "Redis" that accepts and then says nothing until the test lets go.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_port = hole.local_addr().unwrap().port();
    let addr = redis_addr();
    let gw = gateway(&[
        &format!("{{name: default, addr: '{addr}'}}"),
        &format!(
            "{{name: hole, addr: '127.0.0.1:{hole_port}', connectTimeout: 60, commandTimeout: 60}}"
        ),
    ])
    .await;
    let mut a = Client::connect(&gw.url(0)).await;
    let mut b = Client::connect(&gw.url(0)).await;
    a.send(r#"return mix.redis.connection("hole"):command("get", "k")"#)
        .await;
    let (sock, _) = tokio::time::timeout(DEADLINE, hole.accept())
        .await
        .expect("the gateway never connected")
        .unwrap();
    // A's hook is now waiting on the silent server (60 s timeouts); on the
    // same worker, B's hooks run, Lua-only and with Redis.
    let (v, _) = eval(&mut b, "return 1 + 1").await;
    assert_eq!(v, json!(2));
    let (v, e) = eval(
        &mut b,
        r#"return mix.redis.connection("default"):command("ping")"#,
    )
    .await;
    assert_eq!((v, e), (json!("PONG"), Value::Null));
    assert!(
        tokio::time::timeout(Duration::ZERO, a.next())
            .await
            .is_err(),
        "A answered while its Redis was silent"
    );
    // The server goes away: A's hook gets an error value, promptly.
    drop(sock);
    drop(hole);
    let v = a.recv_json().await;
    assert!(
        v["r"].is_null() && v["e"].as_str().unwrap().contains("redis hole"),
        "{v}"
    );
}

#[tokio::test]
async fn redis_timeouts_are_error_values() {
    // Accepts (the kernel completes the handshake) but never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let addr = redis_addr();
    let gw = gateway(&[
        &format!("{{name: silent, addr: '127.0.0.1:{silent_port}', connectTimeout: 0.2}}"),
        &format!(
            "{{name: short, addr: '{addr}', connectTimeout: 10, commandTimeout: 1, poolSize: 1}}"
        ),
    ])
    .await;
    let mut c = Client::connect(&gw.url(0)).await;
    let got = eval(
        &mut c,
        r#"return mix.redis.connection("silent"):command("ping")"#,
    )
    .await;
    assert_err(&got, "connectTimeout");

    // BLPOP on a key nobody pushes to outlives commandTimeout.
    let p = prefix("timeout");
    let got = eval(
        &mut c,
        &format!(r#"return mix.redis.connection("short"):command("blpop", "{p}q", 0)"#),
    )
    .await;
    assert_err(&got, "commandTimeout");
    // The stuck connection was dropped: the next command gets a fresh one.
    let (v, e) = eval(
        &mut c,
        r#"return mix.redis.connection("short"):command("ping")"#,
    )
    .await;
    assert_eq!((v, e), (json!("PONG"), Value::Null));
    drop(silent);
}

#[tokio::test]
async fn redis_blocking_command_lets_others_run() {
    let addr = redis_addr();
    let gw = gateway(&[
        &format!("{{name: default, addr: '{addr}'}}"),
        &format!("{{name: blocking, addr: '{addr}', db: 3, commandTimeout: 60}}"),
    ])
    .await;
    let mut a = Client::connect(&gw.url(0)).await;
    let mut b = Client::connect(&gw.url(0)).await;
    let p = prefix("blpop");
    a.send(&format!(
        r#"return mix.redis.connection("blocking"):command("blpop", "{p}q", 0)"#
    ))
    .await;
    // Wait (as Redis sees it) until A's BLPOP is blocked, asking from B.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let (v, _) = eval(
            &mut b,
            r#"return mix.redis.connection("default"):command("client", "list")"#,
        )
        .await;
        let list = v.as_str().unwrap_or_default().to_string();
        if list
            .lines()
            .any(|l| l.contains(" db=3 ") && l.contains(" cmd=blpop "))
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "BLPOP never blocked:\n{list}"
        );
    }
    let (v, e) = eval(
        &mut b,
        &format!(r#"local r = mix.redis.connection("blocking") return r:command("rpush", "{p}q", "hello")"#),
    )
    .await;
    // Round-robin puts this second command on another slot of "blocking"
    // (a blocked Redis connection runs nothing else until it is unblocked).
    assert_eq!((v, e), (json!(1), Value::Null));
    let v = a.recv_json().await;
    assert_eq!(v, json!({"r": [format!("{p}q"), "hello"]}));
}

#[tokio::test]
async fn redis_reconnects_after_restart() {
    let mut server = RedisServer::start(&[]);
    let gw = gateway(&[&format!(
        "{{name: own, addr: '{}', poolSize: 1}}",
        server.addr()
    )])
    .await;
    let mut c = Client::connect(&gw.url(0)).await;
    let cmd = |args: &str| format!(r#"return mix.redis.connection("own"):command({args})"#);
    assert_eq!(
        eval(&mut c, &cmd(r#""set", "k", "before""#)).await.0,
        json!("OK")
    );

    server.stop();
    let got = eval(&mut c, &cmd(r#""get", "k""#)).await;
    assert_err(&got, "redis own");

    server.spawn();
    // Without restarting the gateway, the very next command works again.
    let (v, e) = eval(&mut c, &cmd(r#""set", "k", "after""#)).await;
    assert_eq!((v, e), (json!("OK"), Value::Null));
    assert_eq!(eval(&mut c, &cmd(r#""get", "k""#)).await.0, json!("after"));
}

#[tokio::test]
async fn redis_password_and_db() {
    let server = RedisServer::start(&["--requirepass", "secret"]);
    let addr = server.addr();
    let gw = gateway(&[
        &format!("{{name: good, addr: '{addr}', password: secret, db: 1}}"),
        &format!("{{name: good0, addr: '{addr}', password: secret}}"),
        &format!("{{name: none, addr: '{addr}'}}"),
        &format!("{{name: wrong, addr: '{addr}', password: nope}}"),
    ])
    .await;
    let mut c = Client::connect(&gw.url(0)).await;
    let on = |name: &str, args: &str| {
        format!(r#"return mix.redis.connection("{name}"):command({args})"#)
    };
    assert_eq!(
        eval(&mut c, &on("good", r#""set", "k", "one""#)).await,
        (json!("OK"), Value::Null)
    );
    assert_eq!(
        eval(&mut c, &on("good", r#""get", "k""#)).await.0,
        json!("one")
    );
    assert_eq!(
        eval(&mut c, &on("good0", r#""get", "k""#)).await,
        (Value::Null, Value::Null)
    );
    assert_err(&eval(&mut c, &on("none", r#""get", "k""#)).await, "NOAUTH");
    let got = eval(&mut c, &on("wrong", r#""get", "k""#)).await;
    assert!(got.0.is_null(), "{got:?}");
    let e = got.1.as_str().unwrap();
    assert!(
        e.contains("WRONGPASS") || e.to_lowercase().contains("password"),
        "{e}"
    );
}
