//! JWT auth end to end: `mix.jwt.verify` through a probe server, the
//! `connmix token` command, and the shipped message-center script verifying
//! tokens locally (auth message and `?token=` on the connect URL).
//!
//! Tokens are built here with the `jsonwebtoken` crate (or by hand when they
//! must be broken); RSA and EC keys are committed fixtures under
//! `tests/fixtures/` (test-only keys). Time claims are years away from now,
//! so no result depends on how fast the test runs.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::process::{Command, Output};

const SECRET: &str = "test-secret";
const YEAR: u64 = 365 * 24 * 3600;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(repo().join("tests/fixtures").join(name)).unwrap()
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

fn hs(alg: Algorithm, secret: &str, claims: &Value) -> String {
    sign(alg, &EncodingKey::from_secret(secret.as_bytes()), claims)
}

fn hs256(claims: &Value) -> String {
    hs(Algorithm::HS256, SECRET, claims)
}

fn rs256(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(fixture("jwt_rs256_private.pem").as_bytes()).unwrap();
    sign(Algorithm::RS256, &key, claims)
}

/// A token assembled from raw parts (for broken ones).
fn raw(header: &str, claims: &str, sig: &str) -> String {
    format!(
        "{}.{}.{}",
        B64URL.encode(header),
        B64URL.encode(claims),
        sig
    )
}

/// A valid-for-years claim set for `uid`.
fn claims(uid: u64) -> Value {
    json!({"uid": uid, "iat": now(), "exp": now() + 10 * YEAR})
}

/// A Lua long-string literal of `s`.
fn lua_str(s: &str) -> String {
    format!("[==[{s}]==]")
}

/// `mix.jwt.verify(token, key, opts)` on the probe; `opts` is Lua source.
async fn verify(c: &mut Client, token: &str, key: &str, opts: &str) -> Value {
    let code = format!(
        "return mix.jwt.verify({}, {}, {})",
        lua_str(token),
        lua_str(key),
        opts
    );
    c.eval(&code).await
}

/// Asserts a refusal whose error starts with `prefix`.
async fn refused(c: &mut Client, token: &str, key: &str, opts: &str, prefix: &str) {
    let v = verify(c, token, key, opts).await;
    assert!(v["r"].is_null(), "accepted {token}: {v}");
    let e = v["e"].as_str().unwrap_or_else(|| panic!("no error: {v}"));
    assert!(
        e.starts_with(prefix),
        "{token}: wanted {prefix:?}, got {e:?}"
    );
}

async fn probe_client() -> (Gateway, Client) {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let c = Client::connect(&gw.url(0)).await;
    (gw, c)
}

#[tokio::test]
async fn verify_accepts_valid_hmac_tokens_and_returns_the_claims() {
    let (_gw, mut c) = probe_client().await;
    let claims = json!({
        "uid": 1001, "role": "admin", "tags": ["a", "b"], "meta": {"vip": true},
        "iat": now(), "exp": now() + 10 * YEAR,
    });
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let t = hs(alg, SECRET, &claims);
        let v = verify(&mut c, &t, SECRET, "nil").await;
        assert!(v["e"].is_null(), "{alg:?}: {v}");
        assert_eq!(v["r"], claims, "{alg:?}");
    }
    // uid comes back as a Lua number usable in a channel name.
    let t = hs256(&claims);
    let v = c
        .eval(&format!(
            "local c = mix.jwt.verify({}, {}); return 'user:' .. string.format('%.0f', c.uid), c.role",
            lua_str(&t),
            lua_str(SECRET)
        ))
        .await;
    assert_eq!(v, json!({"r": "user:1001", "e": "admin"}));
    // A token without exp or nbf is valid unless exp is required.
    let t = hs256(&json!({"uid": 5}));
    assert_eq!(verify(&mut c, &t, SECRET, "nil").await["r"]["uid"], 5);
    refused(
        &mut c,
        &t,
        SECRET,
        "{required = {'exp'}}",
        "missing claim: exp",
    )
    .await;
}

#[tokio::test]
async fn verify_refuses_expired_and_not_yet_valid_tokens() {
    let (_gw, mut c) = probe_client().await;
    let expired = hs256(&json!({"uid": 1, "exp": 1_000_000_000}));
    refused(&mut c, &expired, SECRET, "nil", "token expired").await;
    let future = hs256(&json!({"uid": 1, "nbf": now() + 10 * YEAR, "exp": now() + 20 * YEAR}));
    refused(&mut c, &future, SECRET, "nil", "token not yet valid").await;

    // An hour late: expired by default (30 s leeway), accepted with 2 h leeway.
    let late = hs256(&json!({"uid": 1, "exp": now() - 3600}));
    refused(&mut c, &late, SECRET, "nil", "token expired").await;
    let v = verify(&mut c, &late, SECRET, "{leeway = 7200}").await;
    assert_eq!(v["r"]["uid"], 1, "{v}");
    let early = hs256(&json!({"uid": 1, "nbf": now() + 3600}));
    refused(
        &mut c,
        &early,
        SECRET,
        "{leeway = 0}",
        "token not yet valid",
    )
    .await;
    assert_eq!(
        verify(&mut c, &early, SECRET, "{leeway = 7200}").await["r"]["uid"],
        1
    );
    // A time claim that is not a number is malformed.
    let t = hs256(&json!({"uid": 1, "exp": "tomorrow"}));
    refused(&mut c, &t, SECRET, "nil", "malformed token").await;
}

#[tokio::test]
async fn verify_refuses_a_wrong_signature() {
    let (_gw, mut c) = probe_client().await;
    let other = hs(Algorithm::HS256, "another-secret", &claims(1001));
    refused(&mut c, &other, SECRET, "nil", "bad signature").await;

    // Claims swapped after signing.
    let good = hs256(&claims(1001));
    let parts: Vec<&str> = good.split('.').collect();
    let forged_claims = B64URL.encode(claims(1).to_string());
    let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
    refused(&mut c, &forged, SECRET, "nil", "bad signature").await;
    // No signature at all.
    let unsigned = format!("{}.{}.", parts[0], parts[1]);
    refused(&mut c, &unsigned, SECRET, "nil", "bad signature").await;
    // An RS256 token whose claims were changed.
    let rs = rs256(&claims(1001));
    let parts: Vec<&str> = rs.split('.').collect();
    let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
    refused(
        &mut c,
        &forged,
        &fixture("jwt_rs256_public.pem"),
        "nil",
        "bad signature",
    )
    .await;
}

#[tokio::test]
async fn verify_refuses_wrong_and_unsupported_algorithms() {
    let (_gw, mut c) = probe_client().await;
    let hs384 = hs(Algorithm::HS384, SECRET, &claims(1));
    refused(
        &mut c,
        &hs384,
        SECRET,
        "{algorithms = {'HS256'}}",
        "algorithm not allowed: HS384",
    )
    .await;
    // The same token is fine when HS384 is accepted.
    let v = verify(&mut c, &hs384, SECRET, "{algorithms = {'HS256', 'HS384'}}").await;
    assert_eq!(v["r"]["uid"], 1, "{v}");

    // An RS256 token checked with a shared secret: not by default, and not
    // even when RS256 is listed (the key is not an RSA key).
    let rs = rs256(&claims(1));
    refused(&mut c, &rs, SECRET, "nil", "algorithm not allowed: RS256").await;
    refused(
        &mut c,
        &rs,
        SECRET,
        "{algorithms = {'RS256'}}",
        "algorithm not allowed: RS256",
    )
    .await;

    // Key confusion: an HS256 token "signed" with the RSA public key as the
    // HMAC secret is refused when verified with that public key.
    let public = fixture("jwt_rs256_public.pem");
    let confused = hs(Algorithm::HS256, &public, &claims(1));
    refused(
        &mut c,
        &confused,
        &public,
        "nil",
        "algorithm not allowed: HS256",
    )
    .await;
    refused(
        &mut c,
        &confused,
        &public,
        "{algorithms = {'HS256'}}",
        "algorithm not allowed: HS256",
    )
    .await;

    // alg "none" is never accepted, with or without a signature, nor asked for.
    let payload = claims(1).to_string();
    for t in [
        raw(r#"{"alg":"none","typ":"JWT"}"#, &payload, ""),
        raw(r#"{"alg":"None"}"#, &payload, "c2ln"),
    ] {
        refused(&mut c, &t, SECRET, "nil", "unsupported algorithm: none").await;
        refused(
            &mut c,
            &t,
            SECRET,
            "{algorithms = {'HS256', 'none'}}",
            "unsupported algorithm: none",
        )
        .await;
    }
    let t = raw(r#"{"alg":"XS999"}"#, &payload, "c2ln");
    refused(&mut c, &t, SECRET, "nil", "unsupported algorithm: XS999").await;
    // A bad option is reported, not raised.
    let good = hs256(&claims(1));
    refused(
        &mut c,
        &good,
        SECRET,
        "{algorithms = {'HS257'}}",
        "unsupported algorithm: HS257",
    )
    .await;
    refused(&mut c, &good, SECRET, "{leeway = 'soon'}", "invalid option").await;
}

#[tokio::test]
async fn verify_reports_malformed_tokens() {
    let (_gw, mut c) = probe_client().await;
    let header = r#"{"alg":"HS256","typ":"JWT"}"#;
    let payload = claims(1).to_string();
    let cases = [
        "garbage".to_string(),
        "".to_string(),
        "only.two".to_string(),
        "a.b.c.d".to_string(),
        // Not base64url.
        format!("!!!.{}.c2ln", B64URL.encode(&payload)),
        format!("{}.%%%.c2ln", B64URL.encode(header)),
        // base64url, but not JSON.
        raw("not json", &payload, "c2ln"),
        raw(header, "not json", "c2ln"),
        // JSON, but not objects, or no alg.
        raw(header, "[1,2]", "c2ln"),
        raw(r#"{"typ":"JWT"}"#, &payload, "c2ln"),
    ];
    for t in &cases {
        refused(&mut c, t, SECRET, "nil", "malformed token").await;
    }
    // A signature that is not base64url.
    let good = hs256(&claims(1));
    let (msg, _) = good.rsplit_once('.').unwrap();
    refused(
        &mut c,
        &format!("{msg}.***"),
        SECRET,
        "nil",
        "malformed token",
    )
    .await;
    // Not a string at all.
    for code in [
        "return mix.jwt.verify(nil, 's')",
        "return mix.jwt.verify(42, 's')",
    ] {
        let v = c.eval(code).await;
        assert!(v["r"].is_null());
        assert!(
            v["e"].as_str().unwrap().starts_with("malformed token"),
            "{v}"
        );
    }
    // A missing key is an invalid key, not a crash.
    let v = c
        .eval(&format!("return mix.jwt.verify({})", lua_str(&good)))
        .await;
    assert!(v["e"].as_str().unwrap().starts_with("invalid key"), "{v}");
}

#[tokio::test]
async fn verify_checks_rs256_and_es256_with_pem_public_keys() {
    let (_gw, mut c) = probe_client().await;
    let public = fixture("jwt_rs256_public.pem");
    let claims = json!({"uid": 42, "exp": now() + 10 * YEAR});
    let t = rs256(&claims);
    let v = verify(&mut c, &t, &public, "nil").await;
    assert_eq!(v["r"], claims, "{v}");
    // RS256 is the default for an RSA key; other RSA algorithms are opt-in.
    let rsa = EncodingKey::from_rsa_pem(fixture("jwt_rs256_private.pem").as_bytes()).unwrap();
    let rs512 = sign(Algorithm::RS512, &rsa, &claims);
    refused(
        &mut c,
        &rs512,
        &public,
        "nil",
        "algorithm not allowed: RS512",
    )
    .await;
    let v = verify(&mut c, &rs512, &public, "{algorithms = {'RS512'}}").await;
    assert_eq!(v["r"]["uid"], 42, "{v}");
    // Expiry applies to RSA tokens too.
    let old = rs256(&json!({"uid": 42, "exp": 1_000_000_000}));
    refused(&mut c, &old, &public, "nil", "token expired").await;
    // A private key is not a verification key.
    refused(
        &mut c,
        &t,
        &fixture("jwt_rs256_private.pem"),
        "nil",
        "invalid key",
    )
    .await;
    refused(
        &mut c,
        &t,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        "nil",
        "invalid key",
    )
    .await;

    // ES256 with an EC P-256 key.
    let ec_public = fixture("jwt_es256_public.pem");
    let ec = EncodingKey::from_ec_pem(fixture("jwt_es256_private.pem").as_bytes()).unwrap();
    let es = sign(Algorithm::ES256, &ec, &claims);
    let v = verify(&mut c, &es, &ec_public, "nil").await;
    assert_eq!(v["r"]["uid"], 42, "{v}");
    refused(&mut c, &es, &public, "nil", "algorithm not allowed: ES256").await;
    refused(
        &mut c,
        &t,
        &ec_public,
        "nil",
        "algorithm not allowed: RS256",
    )
    .await;
}

#[tokio::test]
async fn verify_checks_issuer_and_audience_when_asked() {
    let (_gw, mut c) = probe_client().await;
    let t = hs256(&json!({"uid": 1, "iss": "backend", "aud": ["web", "app"]}));
    let v = verify(&mut c, &t, SECRET, "{iss = 'backend', aud = 'app'}").await;
    assert_eq!(v["r"]["uid"], 1, "{v}");
    let v = verify(
        &mut c,
        &t,
        SECRET,
        "{iss = {'x', 'backend'}, aud = {'web'}}",
    )
    .await;
    assert_eq!(v["r"]["uid"], 1, "{v}");
    refused(&mut c, &t, SECRET, "{iss = 'other'}", "invalid issuer").await;
    refused(&mut c, &t, SECRET, "{aud = 'tv'}", "invalid audience").await;
    let bare = hs256(&json!({"uid": 1}));
    refused(&mut c, &bare, SECRET, "{iss = 'backend'}", "invalid issuer").await;
    refused(&mut c, &bare, SECRET, "{aud = 'web'}", "invalid audience").await;
}

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
