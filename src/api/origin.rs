//! The `Origin` check of the API port: a browser names the page that makes a
//! request in `Origin` (every cross-origin request, every WebSocket
//! handshake), so a page on another site cannot use an operator's open API
//! or cached Basic credentials to publish, send, call or read.
//!
//! A request is accepted when it has no `Origin` (curl, server-side clients,
//! the CONNMIX-style `curl -d` without a JSON content type), when `Origin`
//! is the API's own origin (the `/demo` and `/console` pages it serves: same
//! host and port as the request's `Host`), or when it matches an entry of
//! `engine.apiServer.allowedOrigins` (exact, case-insensitive, `*` and `?`
//! globs; `*` alone allows every origin). Everything else gets 403.
//!
//! The public assets (`/demo`, `/connmix.js`, ...) are answered before this
//! check: they are public anyway.

use super::ApiState;
use super::access::glob_match;
use super::response::{Body, respond};
use hyper::{Request, Response, StatusCode, header};

/// `Some(403 response)` when the request's `Origin` may not use the API.
pub fn refuse<B>(state: &ApiState, req: &Request<B>) -> Option<Response<Body>> {
    let origin = req.headers().get(header::ORIGIN)?;
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    let allowed = &state.config.engine.api_server.allowed_origins;
    let text = origin.to_str().unwrap_or("");
    if !text.is_empty() && is_allowed(text, host, allowed) {
        return None;
    }
    let shown: String = String::from_utf8_lossy(origin.as_bytes())
        .chars()
        .take(200)
        .collect();
    tracing::debug!(
        "api: refused {} {} from Origin {shown:?}",
        req.method(),
        req.uri().path()
    );
    Some(respond(
        StatusCode::FORBIDDEN,
        "text/plain",
        format!(
            "Forbidden: Origin {shown:?} may not use this API; add it to engine.apiServer.allowedOrigins\n"
        ),
    ))
}

/// See the module documentation.
pub fn is_allowed(origin: &str, host: Option<&str>, allowed: &[String]) -> bool {
    let origin = normalize(origin);
    if let Some(host) = host
        && let Some(authority) = authority(&origin)
        && authority == normalize_host(host, scheme(&origin))
    {
        return true;
    }
    allowed
        .iter()
        .any(|a| a == "*" || glob_match(&normalize(a), &origin))
}

/// Lower case, without a trailing `/` and without the scheme's default port.
fn normalize(origin: &str) -> String {
    let o = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    match scheme(&o) {
        Some(s) => {
            let rest = &o[s.len() + 3..];
            format!("{s}://{}", normalize_host(rest, Some(s)))
        }
        None => o,
    }
}

fn scheme(origin: &str) -> Option<&str> {
    origin.split_once("://").map(|(s, _)| s)
}

/// `host[:port]` of a normalized origin.
fn authority(origin: &str) -> Option<&str> {
    origin.split_once("://").map(|(_, a)| a)
}

/// `host[:port]` in lower case without the scheme's default port.
fn normalize_host(host: &str, scheme: Option<&str>) -> String {
    let h = host.trim().to_ascii_lowercase();
    let default = match scheme {
        Some("http") | Some("ws") => ":80",
        Some("https") | Some("wss") => ":443",
        _ => return h,
    };
    match h.strip_suffix(default) {
        Some(bare) => bare.to_string(),
        None => h,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn same_origin_is_allowed() {
        let none = list(&[]);
        assert!(is_allowed(
            "http://10.0.0.1:6789",
            Some("10.0.0.1:6789"),
            &none
        ));
        assert!(is_allowed(
            "HTTP://GW.example:6789/",
            Some("gw.example:6789"),
            &none
        ));
        assert!(is_allowed(
            "https://gw.example",
            Some("gw.example:443"),
            &none
        ));
        assert!(is_allowed(
            "http://gw.example:80",
            Some("gw.example"),
            &none
        ));
        assert!(!is_allowed(
            "http://evil.example",
            Some("10.0.0.1:6789"),
            &none
        ));
        assert!(!is_allowed(
            "http://10.0.0.1:6790",
            Some("10.0.0.1:6789"),
            &none
        ));
        assert!(!is_allowed("null", Some("10.0.0.1:6789"), &none));
        assert!(!is_allowed("http://10.0.0.1:6789", None, &none));
    }

    #[test]
    fn listed_origins_are_allowed() {
        let l = list(&["https://ops.example.com", "https://*.corp.example"]);
        assert!(is_allowed("https://ops.example.com", Some("gw:6789"), &l));
        assert!(is_allowed(
            "https://ops.example.com:443",
            Some("gw:6789"),
            &l
        ));
        assert!(is_allowed("https://a.corp.example", Some("gw:6789"), &l));
        assert!(!is_allowed("http://ops.example.com", Some("gw:6789"), &l));
        assert!(!is_allowed(
            "https://ops.example.com.evil",
            Some("gw:6789"),
            &l
        ));
        assert!(is_allowed("http://any.example", Some("gw"), &list(&["*"])));
    }

    #[test]
    fn config_names_a_bad_entry() {
        let yaml = |o: &str| {
            format!(
                "engine:\n  apiServer:\n    allowedOrigins: [{o}]\n  servers:\n    - {{port: 7000, entry: a.lua}}\n"
            )
        };
        let parse =
            |o: &str| crate::config::Config::parse(&yaml(o), std::path::Path::new("t.yaml"));
        let c = parse("'https://ops.example.com', '*'").unwrap();
        assert_eq!(c.engine.api_server.allowed_origins.len(), 2);
        let e = parse("'https://ops.example.com', 'ops.example.com'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("engine.apiServer.allowedOrigins[1]"), "{e}");
        let e = parse("'https://ops.example.com/console'")
            .unwrap_err()
            .to_string();
        assert!(e.contains("allowedOrigins[0]"), "{e}");
    }
}
