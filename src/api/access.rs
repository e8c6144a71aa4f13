//! API access control from `access.users`: HTTP Basic credentials, a role
//! per route (`read` or `write`), and a host glob on the peer's IP.
//!
//! A wrong password and a wrong host get the same answer (401), so a
//! host-restricted user's password cannot be confirmed from elsewhere; only
//! a user who passed both checks learns that a role is missing (403). The
//! password is compared in constant time.
//!
//! The user list can be replaced while running (config reload). With no
//! users configured every request is allowed.

use crate::config::AccessUser;
use base64::Engine as _;
use hyper::HeaderMap;
use parking_lot::RwLock;
use std::net::IpAddr;
use std::sync::Arc;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Read,
    Write,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
        }
    }
}

/// Why a request was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// No credentials, wrong credentials, or right credentials from a host
    /// the user may not connect from: 401 with `WWW-Authenticate`.
    Unauthenticated,
    /// Authenticated user without the route's role: 403.
    Forbidden(String),
}

/// See the module documentation.
pub struct Access {
    users: RwLock<Arc<Vec<AccessUser>>>,
}

impl Access {
    pub fn new(users: Vec<AccessUser>) -> Self {
        Self {
            users: RwLock::new(Arc::new(users)),
        }
    }

    /// Replaces the user list (config reload).
    pub fn replace(&self, users: Vec<AccessUser>) {
        *self.users.write() = Arc::new(users);
    }

    /// True when no users are configured (the API is open).
    pub fn is_open(&self) -> bool {
        self.users.read().is_empty()
    }

    /// Checks a request's credentials, peer and role.
    pub fn check(&self, headers: &HeaderMap, peer: IpAddr, need: Role) -> Result<(), Denied> {
        let users = self.users.read().clone();
        if users.is_empty() {
            return Ok(());
        }
        let (name, password) = basic_credentials(headers).ok_or(Denied::Unauthenticated)?;
        let ip = match peer {
            IpAddr::V6(v6) => v6.to_canonical(),
            v4 => v4,
        }
        .to_string();
        // Both checks run for every entry of that name: the answer and its
        // timing do not tell a wrong host from a wrong password.
        let mut found = None;
        for u in users.iter().filter(|u| u.username == name) {
            let password_ok = same_secret(u.password.as_bytes(), password.as_bytes());
            let host_ok = glob_match(&u.host, &ip);
            if password_ok && host_ok && found.is_none() {
                found = Some(u);
            } else if password_ok && !host_ok {
                tracing::info!("api: user {name} refused: may not connect from {ip}");
            }
        }
        let user = found.ok_or(Denied::Unauthenticated)?;
        if !user.roles.iter().any(|r| r == need.name()) {
            return Err(Denied::Forbidden(format!(
                "user {} lacks the {} role",
                user.username,
                need.name()
            )));
        }
        Ok(())
    }
}

/// Compares two secrets in time that depends only on their lengths.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(!x));
    }
    diff == 0
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// `*` matches any run of characters, `?` one character; everything else
/// literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "10.0.0.1"));
        assert!(glob_match("172.*.*.*", "172.16.0.9"));
        assert!(!glob_match("172.*.*.*", "127.0.0.1"));
        assert!(glob_match("127.0.0.?", "127.0.0.1"));
        assert!(glob_match("10.0.0.1", "10.0.0.1"));
        assert!(!glob_match("10.0.0.1", "10.0.0.12"));
    }

    fn user(roles: &[&str], host: &str) -> AccessUser {
        AccessUser {
            username: "u".into(),
            password: "p".into(),
            roles: roles.iter().map(|s| s.to_string()).collect(),
            host: host.into(),
        }
    }

    fn auth(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(hyper::header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn checks() {
        let local: IpAddr = "127.0.0.1".parse().unwrap();
        let a = Access::new(vec![user(&["read"], "127.*")]);
        let good = auth("Basic dTpw"); // u:p
        assert_eq!(a.check(&good, local, Role::Read), Ok(()));
        assert!(matches!(
            a.check(&good, local, Role::Write),
            Err(Denied::Forbidden(_))
        ));
        // Right password from the wrong host: the same answer as a wrong one.
        assert_eq!(
            a.check(&good, "10.1.1.1".parse().unwrap(), Role::Read),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            a.check(&HeaderMap::new(), local, Role::Read),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            a.check(&auth("Basic dTp4"), local, Role::Read),
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            a.check(&auth("Basic dTpwcA=="), local, Role::Read), // u:pp
            Err(Denied::Unauthenticated)
        );
        assert_eq!(
            a.check(&auth("Basic dTo="), local, Role::Read), // u:
            Err(Denied::Unauthenticated)
        );
        a.replace(vec![]);
        assert_eq!(a.check(&HeaderMap::new(), local, Role::Write), Ok(()));
    }
}
