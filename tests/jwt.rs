//! JWT verification end to end: `mix.jwt.verify` through a probe server
//! (algorithms, keys, time claims, issuer and audience, malformed tokens).
//! Logging in with a JWT is `tests/jwt_login.rs`; the helpers that make
//! tokens are `tests/common/jwt_tokens.rs`.

mod common;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::json;

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
