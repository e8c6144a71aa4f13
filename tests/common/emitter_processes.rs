//! The processes the Socket.IO end-to-end tests of `engine.emitters` drive
//! (tests/emitters/): socket.io-client clients reporting what they receive,
//! and the python (python-socketio, kombu, Flask-SocketIO) and Node
//! (@socket.io/redis-emitter) backends that emit through a queue.

use super::*;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// The bound on waits for node and python processes to start, connect,
/// publish and report: only a hung one hits it (python and node start
/// slowly on a loaded machine, so it is longer than [`DEADLINE`]).
pub const PROCESS_DEADLINE: Duration = Duration::from_secs(90);

/// tests/emitters, with its npm packages installed.
pub fn emitter_scripts() -> std::path::PathBuf {
    let dir = repo().join("tests/emitters");
    assert!(
        dir.join("node_modules/socket.io-client").exists()
            && dir.join("node_modules/@socket.io/redis-emitter").exists(),
        "run `npm install` in {} (scripts/test.sh does)",
        dir.display()
    );
    dir
}

/// socket.io-client processes (tests/emitters/clients.mjs).
pub struct Clients {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    sids: HashMap<String, String>,
    /// Events per client: `event args-json`.
    got: BTreeMap<String, Vec<String>>,
}

impl Clients {
    /// Connects `spec` (`[{name, namespace?, rooms}]`) to `port`.
    pub async fn connect(port: u16, spec: Value) -> Clients {
        let mut child = tokio::process::Command::new("node")
            .arg("clients.mjs")
            .arg(format!("http://127.0.0.1:{port}"))
            .arg(spec.to_string())
            .current_dir(emitter_scripts())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node is required (scripts/test.sh)");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(PROCESS_DEADLINE, lines.next_line())
            .await
            .expect("clients did not connect in time")
            .unwrap()
            .expect("clients.mjs exited before connecting (see stderr)");
        let v: Value = serde_json::from_str(&ready).unwrap();
        let sids = v["ready"]
            .as_object()
            .unwrap_or_else(|| panic!("not ready: {ready}"))
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect();
        Clients {
            child,
            lines,
            sids,
            got: BTreeMap::new(),
        }
    }

    pub fn sid(&self, name: &str) -> &str {
        &self.sids[name]
    }

    /// Reads until every client has the event `done` (or was disconnected);
    /// returns each client's events before it.
    pub async fn until_done(&mut self) -> BTreeMap<String, Vec<String>> {
        let names: Vec<String> = self.sids.keys().cloned().collect();
        let mut done = HashSet::new();
        while done.len() < names.len() {
            let line = tokio::time::timeout(PROCESS_DEADLINE, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("not every client got `done`; so far {:?}", self.got))
                .unwrap()
                .expect("clients.mjs exited");
            let v: Value = serde_json::from_str(&line).unwrap();
            let client = v["client"].as_str().unwrap().to_string();
            if let Some(reason) = v["disconnect"].as_str() {
                // A client the server disconnected gets nothing more.
                self.got
                    .entry(client.clone())
                    .or_default()
                    .push(format!("disconnect {reason}"));
                done.insert(client);
                continue;
            }
            match v["event"].as_str() {
                Some("done") => {
                    done.insert(client);
                }
                Some(event) => self
                    .got
                    .entry(client)
                    .or_default()
                    .push(format!("{event} {}", v["args"])),
                None => panic!("{line}"),
            }
        }
        std::mem::take(&mut self.got)
    }

    pub async fn close(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait().await;
    }
}

/// Runs tests/emitters/backend.py `kind` with `commands`.
pub async fn python(kind: &str, url: &str, channel: &str, commands: Value) {
    run_backend(
        tokio::process::Command::new("python3").args(["backend.py", kind, url, channel]),
        commands,
    )
    .await
}

/// Runs tests/emitters/emitter.mjs (the Node emitter) with `commands`.
pub async fn node_emitter(url: &str, key: &str, commands: Value) {
    run_backend(
        tokio::process::Command::new("node").args(["emitter.mjs", url, key]),
        commands,
    )
    .await
}

async fn run_backend(cmd: &mut tokio::process::Command, commands: Value) {
    let mut child = cmd
        .current_dir(emitter_scripts())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 / node are required (scripts/test.sh)");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(commands.to_string().as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let out = tokio::time::timeout(PROCESS_DEADLINE, child.wait_with_output())
        .await
        .expect("the backend hung")
        .unwrap();
    assert!(
        out.status.success(),
        "backend failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
