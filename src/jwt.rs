//! JSON Web Tokens: verification for `mix.jwt.verify` (the Lua binding is
//! `lua/jwt.rs`) and HS256 minting for the `connmix token` command.
//!
//! The token's structure, header and claims are checked here so that every
//! failure gets its own clear message ([`JwtError`]); the signature itself is
//! checked by the `jsonwebtoken` crate (pure-Rust RustCrypto backend).
//!
//! Accepted algorithms: HS256/384/512 with a shared secret; RS256/384/512 and
//! PS256/384/512 with an RSA public key in PEM; ES256/ES384 with an EC public
//! key in PEM; EdDSA with an Ed25519 public key in PEM. `none` never. The
//! header's `alg` must be in the caller's accepted list, which defaults to
//! the HMAC family for a secret, `RS256` for an RSA key, `ES256` for an EC
//! key and `EdDSA` for an Ed25519 key.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, EncodingKey, Header};
use serde_json::{Map, Value};
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds of clock skew tolerated on `exp` and `nbf` unless the caller says
/// otherwise: backends and gateways rarely share a perfect clock.
pub const DEFAULT_LEEWAY: u64 = 30;

/// Why a token was not accepted. The `Display` text is what Lua scripts see;
/// its first words name the category and stay stable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts of a JSON header and JSON claims.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The signature does not match the header and claims for this key.
    #[error("bad signature")]
    BadSignature,
    /// The algorithm is unknown or refused outright (`none`).
    #[error("unsupported algorithm: {0}")]
    UnsupportedAlgorithm(String),
    /// A known algorithm that this call does not accept, or that does not fit
    /// the key (an RS256 token checked with a shared secret).
    #[error("algorithm not allowed: {0}")]
    AlgorithmNotAllowed(String),
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is still in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is missing or not one of the accepted issuers.
    #[error("invalid issuer")]
    InvalidIssuer,
    /// `aud` is missing or names none of the accepted audiences.
    #[error("invalid audience")]
    InvalidAudience,
    /// A claim the caller requires is absent.
    #[error("missing claim: {0}")]
    MissingClaim(String),
    /// The key itself is unusable (empty secret, unreadable PEM, private key).
    #[error("invalid key: {0}")]
    InvalidKey(String),
}

/// What [`verify`] accepts besides a valid signature.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Accepted `alg` values; `None` means the default for the key's kind.
    pub algorithms: Option<Vec<Algorithm>>,
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    pub leeway: u64,
    /// If set, `iss` must be one of these.
    pub iss: Option<Vec<String>>,
    /// If set, `aud` (a string or an array) must contain one of these.
    pub aud: Option<Vec<String>>,
    /// Claims that must be present (e.g. `exp`).
    pub required: Vec<String>,
    /// The current time in seconds since the epoch; `None` = the clock.
    pub now: Option<u64>,
}

impl Default for VerifyOptions {
    fn default() -> Self {
        Self {
            algorithms: None,
            leeway: DEFAULT_LEEWAY,
            iss: None,
            aud: None,
            required: Vec::new(),
            now: None,
        }
    }
}

/// Parses an algorithm name as written in a token header or in
/// `opts.algorithms`; `none` and unknown names are refused.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, JwtError> {
    if name.eq_ignore_ascii_case("none") {
        return Err(JwtError::UnsupportedAlgorithm("none".into()));
    }
    Algorithm::from_str(name).map_err(|_| JwtError::UnsupportedAlgorithm(name.into()))
}

fn alg_name(a: Algorithm) -> String {
    format!("{a:?}")
}

/// A verification key: a shared secret or a public key in PEM.
struct Key {
    family: AlgorithmFamily,
    key: DecodingKey,
    what: &'static str,
}

impl Key {
    fn parse(key: &[u8]) -> Result<Key, JwtError> {
        let text = String::from_utf8_lossy(key);
        let trimmed = text.trim_start();
        if !trimmed.starts_with("-----BEGIN") {
            if key.is_empty() {
                return Err(JwtError::InvalidKey("empty secret".into()));
            }
            return Ok(Key {
                family: AlgorithmFamily::Hmac,
                key: DecodingKey::from_secret(key),
                what: "a shared secret",
            });
        }
        if trimmed.contains("PRIVATE KEY-----") {
            return Err(JwtError::InvalidKey(
                "a private key was given; verify with the public key".into(),
            ));
        }
        let pem = trimmed.as_bytes();
        if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Key {
                family: AlgorithmFamily::Rsa,
                key: k,
                what: "an RSA public key",
            });
        }
        if let Ok(k) = DecodingKey::from_ec_pem(pem) {
            return Ok(Key {
                family: AlgorithmFamily::Ec,
                key: k,
                what: "an EC public key",
            });
        }
        if let Ok(k) = DecodingKey::from_ed_pem(pem) {
            return Ok(Key {
                family: AlgorithmFamily::Ed,
                key: k,
                what: "an Ed25519 public key",
            });
        }
        Err(JwtError::InvalidKey(
            "not a PEM RSA, EC or Ed25519 public key".into(),
        ))
    }

    fn default_algorithms(&self) -> Vec<Algorithm> {
        match self.family {
            AlgorithmFamily::Hmac => vec![Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
            AlgorithmFamily::Rsa => vec![Algorithm::RS256],
            AlgorithmFamily::Ec => vec![Algorithm::ES256],
            AlgorithmFamily::Ed => vec![Algorithm::EdDSA],
        }
    }
}

fn b64_json(part: &str, what: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed(format!("{what} is not base64url")))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(JwtError::Malformed(format!("{what} is not a JSON object"))),
        Err(_) => Err(JwtError::Malformed(format!("{what} is not JSON"))),
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A time claim as seconds, or `None` when absent; a non-number is malformed.
fn time_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<f64>, JwtError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(_) => Err(JwtError::Malformed(format!("{name} is not a number"))),
    }
}

fn string_or_list(v: Option<&Value>) -> Vec<&str> {
    match v {
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

/// Verifies `token` with `key` (a shared secret, or a PEM public key) and
/// returns its claims.
///
/// Checks, in order: three base64url parts, a JSON header with an accepted
/// `alg` that fits the key, JSON claims, the signature, then `exp`, `nbf`,
/// the required claims, `iss` and `aud`.
pub fn verify(
    token: &str,
    key: &[u8],
    opts: &VerifyOptions,
) -> Result<Map<String, Value>, JwtError> {
    let token = token.trim();
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(JwtError::Malformed(format!(
            "expected three dot-separated parts, got {}",
            parts.len()
        )));
    }
    let header = b64_json(parts[0], "header")?;
    let alg = match header.get("alg") {
        Some(Value::String(a)) => parse_algorithm(a)?,
        _ => return Err(JwtError::Malformed("header has no alg".into())),
    };
    let claims = b64_json(parts[1], "payload")?;
    let key = Key::parse(key)?;
    let accepted = opts
        .algorithms
        .clone()
        .unwrap_or_else(|| key.default_algorithms());
    if !accepted.contains(&alg) {
        let list: Vec<String> = accepted.iter().map(|a| alg_name(*a)).collect();
        return Err(JwtError::AlgorithmNotAllowed(format!(
            "{} (accepted: {})",
            alg_name(alg),
            list.join(", ")
        )));
    }
    if alg.family() != key.family {
        return Err(JwtError::AlgorithmNotAllowed(format!(
            "{} does not fit the key ({})",
            alg_name(alg),
            key.what
        )));
    }
    if parts[2].is_empty() {
        return Err(JwtError::BadSignature);
    }
    let message_len = parts[0].len() + 1 + parts[1].len();
    let message = &token.as_bytes()[..message_len];
    match jsonwebtoken::crypto::verify(parts[2], message, &key.key, alg) {
        Ok(true) => {}
        Ok(false) => return Err(JwtError::BadSignature),
        Err(e) => {
            return Err(match e.kind() {
                jsonwebtoken::errors::ErrorKind::Base64(_) => {
                    JwtError::Malformed("signature is not base64url".into())
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => JwtError::BadSignature,
                _ => JwtError::InvalidKey(e.to_string()),
            });
        }
    }

    let now = opts.now.unwrap_or_else(now_secs) as f64;
    let leeway = opts.leeway as f64;
    if let Some(exp) = time_claim(&claims, "exp")?
        && now - leeway >= exp
    {
        return Err(JwtError::Expired);
    }
    if let Some(nbf) = time_claim(&claims, "nbf")?
        && now + leeway < nbf
    {
        return Err(JwtError::NotYetValid);
    }
    for name in &opts.required {
        if claims.get(name).is_none_or(Value::is_null) {
            return Err(JwtError::MissingClaim(name.clone()));
        }
    }
    if let Some(iss) = &opts.iss {
        match claims.get("iss") {
            Some(Value::String(s)) if iss.iter().any(|i| i == s) => {}
            _ => return Err(JwtError::InvalidIssuer),
        }
    }
    if let Some(aud) = &opts.aud {
        let given = string_or_list(claims.get("aud"));
        if !given.iter().any(|g| aud.iter().any(|a| a == g)) {
            return Err(JwtError::InvalidAudience);
        }
    }
    Ok(claims)
}

/// Signs `claims` with HMAC-SHA256.
pub fn sign_hs256(secret: &[u8], claims: &Map<String, Value>) -> Result<String, String> {
    if secret.is_empty() {
        return Err("the secret is empty".into());
    }
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|e| e.to_string())
}

/// Parses a lifetime: plain seconds (`3600`) or a sum of `<n><unit>` with
/// units `s`, `m`, `h`, `d` (`3600s`, `30m`, `1h`, `1h30m`, `7d`).
pub fn parse_ttl(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let bad = || format!("invalid ttl {s:?} (use seconds or e.g. 30m, 1h, 7d)");
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total: u64 = 0;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "s" => 1,
            "m" => 60,
            "h" => 3600,
            "d" => 86400,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(mult)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        rest = &rest[unit_len..];
    }
    Ok(Duration::from_secs(total))
}

/// The claims `connmix token` signs: `extra` (a JSON object) first, then
/// `uid` (a number when it is an integer, else a string), `iat` = `now` and
/// `exp` = `now + ttl`, which always win over `extra`.
pub fn token_claims(
    uid: &str,
    ttl: Duration,
    extra: Option<&str>,
    now: u64,
) -> Result<Map<String, Value>, String> {
    let mut claims = match extra {
        None => Map::new(),
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Err("--claims must be a JSON object".into()),
            Err(e) => return Err(format!("--claims is not valid JSON: {e}")),
        },
    };
    let uid_value = match uid.parse::<i64>() {
        Ok(n) => Value::from(n),
        Err(_) if !uid.is_empty() => Value::from(uid),
        Err(_) => return Err("--uid must not be empty".into()),
    };
    claims.insert("uid".into(), uid_value);
    claims.insert("iat".into(), Value::from(now));
    claims.insert("exp".into(), Value::from(now + ttl.as_secs()));
    Ok(claims)
}

/// The secret of `connmix token` when `--secret` is absent: the `jwt_secret`
/// option of the first server of `config` that sets one.
pub fn secret_from_config(config: &Path) -> Result<String, String> {
    let c = crate::config::Config::load(config).map_err(|e| e.to_string())?;
    c.engine
        .servers
        .iter()
        .filter_map(|s| s.option("jwt_secret"))
        .find(|v| !v.is_empty())
        .map(str::to_string)
        .ok_or_else(|| {
            format!(
                "no --secret given and {} sets no jwt_secret option on any server",
                config.display()
            )
        })
}

/// `connmix token`: a signed HS256 token for `uid`, or a message for the user.
pub fn token_command(
    secret: Option<&str>,
    uid: &str,
    ttl: &str,
    claims: Option<&str>,
    config: &Path,
) -> Result<String, String> {
    let secret = match secret {
        Some(s) if !s.is_empty() => s.to_string(),
        Some(_) => return Err("--secret must not be empty".into()),
        None => secret_from_config(config)?,
    };
    let ttl = parse_ttl(ttl)?;
    if ttl.is_zero() {
        return Err("--ttl must be more than 0 seconds".into());
    }
    let claims = token_claims(uid, ttl, claims, now_secs())?;
    sign_hs256(secret.as_bytes(), &claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_forms() {
        assert_eq!(parse_ttl("3600").unwrap().as_secs(), 3600);
        assert_eq!(parse_ttl("3600s").unwrap().as_secs(), 3600);
        assert_eq!(parse_ttl("30m").unwrap().as_secs(), 1800);
        assert_eq!(parse_ttl("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(parse_ttl("7d").unwrap().as_secs(), 7 * 86400);
        for bad in ["", "h", "1x", "-5", "1.5h", "m1"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signs_and_verifies_and_flags_win_over_extra_claims() {
        let claims = token_claims(
            "1001",
            Duration::from_secs(60),
            Some(r#"{"role":"admin","uid":5,"exp":1}"#),
            1000,
        )
        .unwrap();
        let t = sign_hs256(b"s", &claims).unwrap();
        let opts = VerifyOptions {
            now: Some(1010),
            ..Default::default()
        };
        let c = verify(&t, b"s", &opts).unwrap();
        assert_eq!(c["uid"], Value::from(1001));
        assert_eq!(c["role"], Value::from("admin"));
        assert_eq!(c["exp"], Value::from(1060));
        let late = VerifyOptions {
            now: Some(1060 + DEFAULT_LEEWAY),
            ..Default::default()
        };
        assert_eq!(verify(&t, b"s", &late), Err(JwtError::Expired));
        assert_eq!(verify(&t, b"x", &opts), Err(JwtError::BadSignature));
        let t = sign_hs256(
            b"s",
            &token_claims("alice", Duration::from_secs(9), None, 0).unwrap(),
        )
        .unwrap();
        let c = verify(
            &t,
            b"s",
            &VerifyOptions {
                now: Some(1),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c["uid"], Value::from("alice"));
    }
}
