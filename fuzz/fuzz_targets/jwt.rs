//! JWT parsing and verification (`connmix::jwt::verify`, what
//! `mix.jwt.verify` runs on a client's token). The first byte picks:
//! - an arbitrary token against a fixed secret;
//! - an arbitrary key (secret or PEM text) and token, split at 0xFF;
//! - a header and claims of the fuzzer's choosing, correctly signed with
//!   HS256, so the claim checks (`exp`, `nbf`, `iss`, `aud`, required
//!   claims) run on arbitrary JSON. Accepted claims must be the ones signed.
//!
//! Never panics, whatever the token, key or claims.
#![no_main]

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use connmix::jwt::{VerifyOptions, verify};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;

const SECRET: &[u8] = b"fuzz-secret";

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut opts = VerifyOptions {
        now: Some(1_700_000_000),
        ..VerifyOptions::default()
    };
    if mode & 0x10 != 0 {
        opts.iss = Some(vec!["issuer".into()]);
        opts.aud = Some(vec!["aud".into()]);
        opts.required = vec!["exp".into(), "sub".into()];
        opts.leeway = u64::from(mode);
    }
    match mode % 3 {
        0 => {
            let _ = verify(&String::from_utf8_lossy(rest), SECRET, &opts);
        }
        1 => {
            let (key, token) = split(rest);
            let _ = verify(&String::from_utf8_lossy(token), key, &opts);
        }
        _ => {
            let (header, claims) = split(rest);
            let message = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(claims)
            );
            let Ok(sig) = jsonwebtoken::crypto::sign(
                message.as_bytes(),
                &EncodingKey::from_secret(SECRET),
                Algorithm::HS256,
            ) else {
                return;
            };
            if let Ok(accepted) = verify(&format!("{message}.{sig}"), SECRET, &opts) {
                let signed: serde_json::Value =
                    serde_json::from_slice(claims).expect("accepted claims are JSON");
                assert_eq!(serde_json::Value::Object(accepted), signed);
            }
        }
    }
});

fn split(data: &[u8]) -> (&[u8], &[u8]) {
    match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[]),
    }
}
