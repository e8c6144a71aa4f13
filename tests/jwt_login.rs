//! JWT login end to end: the `connmix token` command, and the shipped
//! message-center script verifying tokens locally (auth message and
//! `?token=` on the connect URL). Helpers: `tests/common/jwt_tokens.rs`.

mod common;

use common::*;
use jsonwebtoken::Algorithm;
use serde_json::{Value, json};
use std::process::{Command, Output};

// ---- connmix token ----

fn connmix(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_connmix"))
        .args(args)
        .output()
        .expect("run connmix")
}

fn stdout_token(o: &Output) -> String {
    assert!(
        o.status.success(),
        "connmix token failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let t = String::from_utf8(o.stdout.clone()).unwrap();
    let t = t.trim().to_string();
    assert_eq!(t.split('.').count(), 3, "not a JWT: {t}");
    t
}

#[tokio::test]
async fn token_command_mints_a_token_that_verify_accepts() {
    let o = connmix(&[
        "token",
        "--secret",
        "s",
        "--uid",
        "1001",
        "--ttl",
        "1h",
        "--claims",
        r#"{"role":"admin"}"#,
    ]);
    let t = stdout_token(&o);
    let (_gw, mut c) = probe_client().await;
    let v = verify(&mut c, &t, "s", "{algorithms = {'HS256'}}").await;
    let claims = &v["r"];
    assert_eq!(claims["uid"], 1001, "{v}");
    assert_eq!(claims["role"], "admin");
    let (iat, exp) = (
        claims["iat"].as_f64().unwrap(),
        claims["exp"].as_f64().unwrap(),
    );
    assert_eq!(exp - iat, 3600.0);
    refused(&mut c, &t, "not-s", "nil", "bad signature").await;

    // Other ttl forms; a non-numeric uid stays a string.
    for (ttl, secs) in [("30m", 1800.0), ("3600s", 3600.0), ("90", 90.0)] {
        let t = stdout_token(&connmix(&[
            "token", "--secret", "s", "--uid", "alice", "--ttl", ttl,
        ]));
        let v = verify(&mut c, &t, "s", "nil").await;
        assert_eq!(v["r"]["uid"], "alice", "{v}");
        let r = &v["r"];
        assert_eq!(
            r["exp"].as_f64().unwrap() - r["iat"].as_f64().unwrap(),
            secs,
            "{ttl}"
        );
    }
}

#[tokio::test]
async fn token_command_takes_the_secret_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("connmix.yaml");
    std::fs::write(
        &file,
        "engine:\n  servers:\n    - port: 7000\n      entry: x.lua\n      options:\n        - {name: path, value: /chat}\n        - {name: jwt_secret, value: from-config}\n",
    )
    .unwrap();
    let t = stdout_token(&connmix(&[
        "token",
        "--uid",
        "7",
        "-f",
        file.to_str().unwrap(),
    ]));
    let (_gw, mut c) = probe_client().await;
    assert_eq!(
        verify(&mut c, &t, "from-config", "nil").await["r"]["uid"],
        7
    );

    // The shipped connmix.yaml works out of the box (its development secret).
    let shipped = repo().join("connmix.yaml");
    let t = stdout_token(&connmix(&[
        "token",
        "--uid",
        "1001",
        "-f",
        shipped.to_str().unwrap(),
    ]));
    assert_eq!(
        verify(&mut c, &t, "dev-secret-change-me", "nil").await["r"]["uid"],
        1001
    );
}

#[test]
fn token_command_fails_clearly_without_a_secret_or_with_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("connmix.yaml");
    std::fs::write(
        &file,
        "engine:\n  servers:\n    - port: 7000\n      entry: x.lua\n      options:\n        - {name: auth_url, value: \"http://127.0.0.1:1/\"}\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let missing = dir.path().join("nope.yaml");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["token", "--uid", "1", "-f", f], "jwt_secret"),
        (
            vec!["token", "--uid", "1", "-f", missing.to_str().unwrap()],
            "nope.yaml",
        ),
        (
            vec!["token", "--secret", "s", "--uid", "1", "--ttl", "soon"],
            "ttl",
        ),
        (
            vec!["token", "--secret", "s", "--uid", "1", "--claims", "[1]"],
            "JSON object",
        ),
        (
            vec!["token", "--secret", "s", "--uid", "1", "--claims", "{"],
            "not valid JSON",
        ),
        (vec!["token", "--secret", "", "--uid", "1"], "secret"),
    ];
    for (args, needle) in cases {
        let o = connmix(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(o.stdout.is_empty(), "{args:?} printed a token");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

// ---- the shipped message-center script ----

/// The shipped script with `jwt_secret` and an auth_url nobody answers, so
/// any HTTP call would show up as code 6.
fn jwt_center() -> ServerSpec {
    let dead = free_port();
    ServerSpec::new("/chat", Script::Repo("lua/entry.websocket.lua"))
        .option("jwt_secret", SECRET)
        .option(
            "auth_url",
            &format!("http://127.0.0.1:{dead}/websocket_auth"),
        )
}

#[tokio::test]
async fn shipped_script_verifies_a_jwt_auth_message_without_calling_auth_url() {
    let gw = Gateway::start(vec![jwt_center()]).await;
    let mut c = Client::connect(&gw.url(0)).await;
    c.ok(json!({"op": "auth", "token": hs256(&claims(1001))}))
        .await;
    c.ok(json!({"op": "subscribe", "channel": "@user"})).await;
    assert_eq!(gw.publish("user:1001", "hello").await, (1, 0));
    assert_eq!(c.recv().await, "hello");

    // Refused JWTs: code 7 with the reason; the connection stays usable.
    let mut other = Client::connect(&gw.url(0)).await;
    let expired = hs256(&json!({"uid": 1002, "exp": 1_000_000_000}));
    other
        .send_json(json!({"op": "auth", "token": expired}))
        .await;
    let v = other.recv_json().await;
    assert_eq!(v["code"], 7, "{v}");
    assert!(v["msg"].as_str().unwrap().contains("expired"), "{v}");
    let forged = hs(Algorithm::HS256, "wrong", &claims(1002));
    other
        .send_json(json!({"op": "auth", "token": forged}))
        .await;
    let v = other.recv_json().await;
    assert_eq!(v["code"], 7, "{v}");
    assert!(v["msg"].as_str().unwrap().contains("bad signature"), "{v}");
    let no_uid = hs256(&json!({"role": "admin"}));
    other
        .send_json(json!({"op": "auth", "token": no_uid}))
        .await;
    assert_eq!(other.recv_json().await["code"], 7);
    // `sub` stands in for a missing `uid`.
    other
        .ok(json!({"op": "auth", "token": hs256(&json!({"sub": "u-9"}))}))
        .await;
    other
        .ok(json!({"op": "subscribe", "channel": "@user"}))
        .await;
    assert_eq!(gw.publish("user:u-9", "for u-9").await, (1, 0));
    assert_eq!(other.recv().await, "for u-9");

    // A token that is not a JWT still goes to auth_url (dead here: code 6).
    let mut legacy = Client::connect(&gw.url(0)).await;
    legacy
        .send_json(json!({"op": "auth", "token": "tok1003"}))
        .await;
    assert_eq!(
        legacy.recv_json().await,
        json!({"code": 6, "msg": "Auth service unavailable"})
    );
}

/// Connects and expects the upgrade to be refused; returns status and body.
async fn refused_upgrade(url: &str) -> (u16, String) {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => panic!("{url} was accepted"),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => (
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).to_string(),
        ),
        Err(e) => panic!("{url}: {e}"),
    }
}

#[tokio::test]
async fn handshake_token_joins_the_users_channel_without_any_frame() {
    let gw = Gateway::start(vec![jwt_center()]).await;
    let url = format!("{}?token={}", gw.url(0), hs256(&claims(1001)));
    let mut c = Client::connect(&url).await;
    // Already in user:1001 when the upgrade was answered.
    assert_eq!(gw.publish("user:1001", "pushed").await, (1, 0));
    assert_eq!(c.recv().await, "pushed");
    // The uid is in the context: the message protocol works on top.
    c.ok(json!({"op": "unsubscribe", "channel": "@user"})).await;
    assert_eq!(gw.publish("user:1001", "nobody").await, (0, 0));
    c.ok(json!({"op": "subscribe", "channel": "@user"})).await;
    assert_eq!(gw.publish("user:1001", "again").await, (1, 0));
    assert_eq!(c.recv().await, "again");

    // Other query parameters are fine; no token at all is accepted unauthenticated.
    let url = format!("{}?v=2&token={}&x=y", gw.url(0), hs256(&claims(1002)));
    let mut second = Client::connect(&url).await;
    assert_eq!(gw.publish("user:1002", "two").await, (1, 0));
    assert_eq!(second.recv().await, "two");
    for url in [gw.url(0), format!("{}?token=", gw.url(0))] {
        let mut anon = Client::connect(&url).await;
        anon.send_json(json!({"op": "subscribe", "channel": "@user"}))
            .await;
        assert_eq!(
            anon.recv_json().await,
            json!({"code": 1, "msg": "Not Auth"})
        );
    }
}

#[tokio::test]
async fn handshake_with_a_bad_token_is_refused_with_401() {
    // jwt_secret only: nothing can check a non-JWT token, so it is refused too.
    let spec = ServerSpec::new("/chat", Script::Repo("lua/entry.websocket.lua"))
        .option("jwt_secret", SECRET);
    let gw = Gateway::start(vec![spec]).await;
    let expired = hs256(&json!({"uid": 1, "exp": 1_000_000_000}));
    let forged = hs(Algorithm::HS256, "wrong", &claims(1));
    for token in ["bad", "a.b.c", expired.as_str(), forged.as_str()] {
        let url = format!("{}?token={}", gw.url(0), token);
        assert_eq!(
            refused_upgrade(&url).await,
            (401, "invalid token".to_string()),
            "{token}"
        );
    }
    // Nobody was left subscribed, and the server still serves.
    let mut ok = Client::connect(&format!("{}?token={}", gw.url(0), hs256(&claims(5)))).await;
    assert_eq!(gw.publish("user:5", "ok").await, (1, 0));
    assert_eq!(ok.recv().await, "ok");
    assert_eq!(gw.publish("user:1", "x").await, (0, 0));
}

#[tokio::test]
async fn handshake_token_without_jwt_secret_goes_through_auth_url() {
    let auth = AuthServer::start().await;
    let gw = Gateway::start(vec![message_center(&auth)]).await;
    let mut c = Client::connect(&format!("{}?token=tok1001", gw.url(0))).await;
    assert_eq!(gw.publish("user:1001", "via auth_url").await, (1, 0));
    assert_eq!(c.recv().await, "via auth_url");
    let bodies = auth.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1);
    let body: Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(body, json!({"token": "tok1001"}));

    assert_eq!(
        refused_upgrade(&format!("{}?token=wrong", gw.url(0))).await,
        (401, "invalid token".to_string())
    );
    // A JWT without jwt_secret is just a token for auth_url (refused there).
    assert_eq!(
        refused_upgrade(&format!("{}?token={}", gw.url(0), hs256(&claims(1)))).await,
        (401, "invalid token".to_string())
    );

    // With both options, a non-JWT token still goes to auth_url.
    let auth2 = AuthServer::start().await;
    let spec = message_center(&auth2).option("jwt_secret", SECRET);
    let gw2 = Gateway::start(vec![spec]).await;
    let mut d = Client::connect(&format!("{}?token=tok77", gw2.url(0))).await;
    assert_eq!(gw2.publish("user:77", "both").await, (1, 0));
    assert_eq!(d.recv().await, "both");
    let mut e = Client::connect(&format!("{}?token={}", gw2.url(0), hs256(&claims(78)))).await;
    assert_eq!(gw2.publish("user:78", "jwt").await, (1, 0));
    assert_eq!(e.recv().await, "jwt");
    assert_eq!(
        auth2.bodies.lock().unwrap().len(),
        1,
        "the JWT made no call"
    );

    // An auth service that cannot be reached: 503.
    let dead = free_port();
    let spec = ServerSpec::new("/chat", Script::Repo("lua/entry.websocket.lua")).option(
        "auth_url",
        &format!("http://127.0.0.1:{dead}/websocket_auth"),
    );
    let gw3 = Gateway::start(vec![spec]).await;
    assert_eq!(
        refused_upgrade(&format!("{}?token=tok1", gw3.url(0))).await,
        (503, "auth service unavailable".to_string())
    );
}
