//! JWT test helpers: tokens signed with the `jsonwebtoken` crate (or
//! assembled by hand when they must be broken), the committed test-only
//! keys under `tests/fixtures/`, and `mix.jwt.verify` run on a probe
//! server. Time claims are years away from now, so no result depends on
//! how fast a test runs.

use super::{Client, Gateway, probe, repo};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

pub const SECRET: &str = "test-secret";
pub const YEAR: u64 = 365 * 24 * 3600;

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn fixture(name: &str) -> String {
    std::fs::read_to_string(repo().join("tests/fixtures").join(name)).unwrap()
}

pub fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

pub fn hs(alg: Algorithm, secret: &str, claims: &Value) -> String {
    sign(alg, &EncodingKey::from_secret(secret.as_bytes()), claims)
}

pub fn hs256(claims: &Value) -> String {
    hs(Algorithm::HS256, SECRET, claims)
}

pub fn rs256(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(fixture("jwt_rs256_private.pem").as_bytes()).unwrap();
    sign(Algorithm::RS256, &key, claims)
}

/// A token assembled from raw parts (for broken ones).
pub fn raw(header: &str, claims: &str, sig: &str) -> String {
    format!(
        "{}.{}.{}",
        B64URL.encode(header),
        B64URL.encode(claims),
        sig
    )
}

/// A valid-for-years claim set for `uid`.
pub fn claims(uid: u64) -> Value {
    json!({"uid": uid, "iat": now(), "exp": now() + 10 * YEAR})
}

/// A Lua long-string literal of `s`.
pub fn lua_str(s: &str) -> String {
    format!("[==[{s}]==]")
}

/// `mix.jwt.verify(token, key, opts)` on the probe; `opts` is Lua source.
pub async fn verify(c: &mut Client, token: &str, key: &str, opts: &str) -> Value {
    let code = format!(
        "return mix.jwt.verify({}, {}, {})",
        lua_str(token),
        lua_str(key),
        opts
    );
    c.eval(&code).await
}

/// Asserts a refusal whose error starts with `prefix`.
pub async fn refused(c: &mut Client, token: &str, key: &str, opts: &str, prefix: &str) {
    let v = verify(c, token, key, opts).await;
    assert!(v["r"].is_null(), "accepted {token}: {v}");
    let e = v["e"].as_str().unwrap_or_else(|| panic!("no error: {v}"));
    assert!(
        e.starts_with(prefix),
        "{token}: wanted {prefix:?}, got {e:?}"
    );
}

pub async fn probe_client() -> (Gateway, Client) {
    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let c = Client::connect(&gw.url(0)).await;
    (gw, c)
}
