//! The backend snippets of `examples/backends/` against a live gateway: the
//! Python one (`python/push.py`, standard library only) publishes to a user
//! of the shipped message center and sends to one client id, and its errors
//! exit non-zero. Skipped (with a message) when `python3` is missing.

mod common;

use common::*;
use serde_json::{Value, json};
use std::process::Command;

/// Runs `python3 examples/backends/python/push.py --api <api> args...`;
/// returns exit code, stdout and stderr.
async fn push_py(gw: &Gateway, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new("python3");
    cmd.arg(repo().join("examples/backends/python/push.py"))
        .arg("--api")
        .arg(gw.api(""))
        .args(args)
        .env_remove("CONNMIX_API")
        .env_remove("CONNMIX_USER")
        .env_remove("CONNMIX_PASSWORD");
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("run python3");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

fn have_python() -> bool {
    let found = Command::new("python3").arg("--version").output().is_ok();
    if !found {
        eprintln!("python3 not found: skipping the Python backend snippet test");
    }
    found
}

#[tokio::test]
async fn python_push_reaches_the_user_and_one_client() {
    if !have_python() {
        return;
    }
    let auth = AuthServer::start().await;
    let gw = Gateway::start(vec![message_center(&auth), probe("/probe", "")]).await;
    let mut phone = login(&gw.url(0), 1001).await;
    let mut laptop = login(&gw.url(0), 1001).await;

    // `user UID MSG`: the message center's event, to every connection of the user.
    let (code, out, err) = push_py(&gw, &["user", "1001", "Hello \u{e9}"]).await;
    assert_eq!(code, 0, "stdout {out}, stderr {err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"s": 2, "f": 0})
    );
    let want = r#"{"event":"@user","data":{"uid":1001,"msg":"Hello é"}}"#;
    assert_eq!(phone.recv().await, want, "exact bytes");
    assert_eq!(laptop.recv().await, want);

    // `publish CHANNEL DATA`: d delivered byte for byte.
    let raw = r#"{"a": 1,  "b":"x"}"#;
    let (code, out, _) = push_py(&gw, &["publish", "user:1001", raw]).await;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"s": 2, "f": 0})
    );
    assert_eq!(phone.recv().await, raw);
    assert_eq!(laptop.recv().await, raw);

    // `send CLIENT_ID DATA`: only that connection.
    let mut one = Client::connect(&gw.url(1)).await;
    let id = one.id().await;
    let (code, out, err) = push_py(&gw, &["send", &id, "just you"]).await;
    assert_eq!(code, 0, "stdout {out}, stderr {err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({"s": true})
    );
    assert_eq!(one.recv().await, "just you");
    assert_eq!(gw.publish("user:1001", "marker").await, (2, 0));
    assert_eq!(
        phone.recv().await,
        "marker",
        "the send went to one client only"
    );

    // An unknown client is the API's error 401, reported with exit code 1.
    let (code, _, err) = push_py(&gw, &["send", "99999", "nobody"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("connmix error 401"), "{err}");
}

#[tokio::test]
async fn python_push_uses_basic_credentials() {
    if !have_python() {
        return;
    }
    let auth = AuthServer::start().await;
    let top = "access:\n  users:\n    - {username: backend, password: s3cret, roles: [write], host: '*'}\n";
    let gw = Gateway::start_with(vec![message_center(&auth)], "", top).await;
    let mut phone = login(&gw.url(0), 7).await;

    let (code, _, err) = push_py(&gw, &["user", "7", "denied"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("401"), "{err}");

    let (code, out, err) = push_py(
        &gw,
        &[
            "--user",
            "backend",
            "--password",
            "s3cret",
            "publish",
            "user:7",
            "let in",
        ],
    )
    .await;
    assert_eq!(code, 0, "stdout {out}, stderr {err}");
    assert_eq!(phone.recv().await, "let in");
}
