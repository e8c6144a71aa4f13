//! Real socket.io-client sockets for the Socket.IO tests: the HS256 login
//! token the shipped `lua/entry.socketio.lua` accepts, and
//! `tests/socketio/listen.mjs` (three sockets that print every event they
//! get) run as a child process.

use super::{DEADLINE, repo};
use serde_json::Value;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// A login token for user `uid`, signed with `secret` (an hour long).
pub fn sio_token(secret: &str, uid: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ttl = std::time::Duration::from_secs(3600);
    let claims = connmix::jwt::token_claims(&uid.to_string(), ttl, None, now).unwrap();
    connmix::jwt::sign_hs256(secret.as_bytes(), &claims).unwrap()
}

/// `listen.mjs` connected to a Socket.IO server: sockets `a` (namespace
/// `/`, user 1001), `b` (`/`, user 1002) and `c` (`/chat`, user 1001).
pub struct Listener {
    _child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Each socket's sid: `{"a": .., "b": .., "c": ..}`.
    pub sids: Value,
}

impl Listener {
    /// Starts `listen.mjs` against `http://127.0.0.1:<port>` with tokens
    /// signed by `secret`, and waits until its three sockets are connected.
    pub async fn start(port: u16, secret: &str) -> Listener {
        let dir = repo().join("tests/socketio");
        assert!(
            dir.join("node_modules/socket.io-client").exists(),
            "socket.io-client is not installed: run `npm install` in {} (scripts/test.sh does)",
            dir.display()
        );
        let mut child = tokio::process::Command::new("node")
            .arg(dir.join("listen.mjs"))
            .env("SIO_URL", format!("http://127.0.0.1:{port}"))
            .env("TOKEN_A", sio_token(secret, 1001))
            .env("TOKEN_B", sio_token(secret, 1002))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node is required (scripts/test.sh installs it)");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut l = Listener {
            _child: child,
            lines,
            sids: Value::Null,
        };
        let ready = l.line().await;
        let sids = ready.strip_prefix("ready ").expect(&ready);
        l.sids = serde_json::from_str(sids).unwrap();
        l
    }

    /// The next line it printed: `got <socket> <event> <JSON arguments>`,
    /// `disconnect <socket> <reason>`, ...
    pub async fn line(&mut self) -> String {
        tokio::time::timeout(DEADLINE, self.lines.next_line())
            .await
            .expect("no line from listen.mjs in time")
            .unwrap()
            .expect("listen.mjs ended")
    }
}
