//! The README's "Five-minute walkthrough", run as written: the commands are
//! read out of README.md (so this test fails when the README's commands or
//! the outputs it promises drift from what the gateway does), run through
//! `sh` with `connmix` on the PATH, against the shipped `connmix.yaml` and
//! `lua/`. Only the ports change (6789/6790 become free ones), so that tests
//! may run side by side. Also: what a fresh node shows an operator
//! (documented metrics from the start).

mod common;

use common::*;
use serde_json::Value;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The walkthrough section of README.md: its code blocks (indentation
/// removed) and its prose, in order.
struct Walkthrough {
    blocks: Vec<Vec<String>>,
    prose: String,
}

fn walkthrough() -> Walkthrough {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme
        .find("## Five-minute walkthrough")
        .expect("README has the walkthrough");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut blocks = Vec::new();
    let mut prose = String::new();
    let mut current: Option<Vec<String>> = None;
    for line in section.lines() {
        let t = line.trim_start();
        if t.starts_with("```") {
            match current.take() {
                Some(b) => blocks.push(b),
                None => current = Some(Vec::new()),
            }
        } else if let Some(b) = current.as_mut() {
            b.push(t.to_string());
        } else {
            prose.push_str(t);
            prose.push('\n');
        }
    }
    Walkthrough { blocks, prose }
}

/// Shell commands of a block: lines ending in `\` joined with the next.
fn commands(block: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut joining = false;
    for l in block {
        if joining {
            let last = out.last_mut().unwrap();
            last.truncate(last.len() - 1);
            last.push_str(l.trim_start());
        } else {
            out.push(l.clone());
        }
        joining = l.ends_with('\\');
    }
    out
}

/// The text between backticks that follows `after` in the prose.
fn quoted_after(prose: &str, after: &str) -> String {
    let i = prose
        .find(after)
        .unwrap_or_else(|| panic!("README walkthrough no longer says {after:?}"));
    let rest = &prose[i + after.len()..];
    let open = rest.find('`').unwrap() + 1;
    let close = open + rest[open..].find('`').unwrap();
    rest[open..close].to_string()
}

/// A folder laid out like the repository for the walkthrough: the shipped
/// config (ports replaced), the shipped `lua/`, and `connmix` on a PATH.
struct Sandbox {
    dir: tempfile::TempDir,
    api_port: u16,
    ws_port: u16,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let s = Sandbox {
            dir,
            api_port: free_port(),
            ws_port: free_port(),
        };
        let yaml = std::fs::read_to_string(repo().join("connmix.yaml")).unwrap();
        std::fs::write(s.dir.path().join("connmix.yaml"), s.ports(&yaml)).unwrap();
        std::os::unix::fs::symlink(repo().join("lua"), s.dir.path().join("lua")).unwrap();
        std::fs::create_dir(s.bin()).unwrap();
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_connmix"), s.bin().join("connmix")).unwrap();
        s
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    /// The README's ports replaced by this sandbox's.
    fn ports(&self, text: &str) -> String {
        text.replace("6789", &self.api_port.to_string())
            .replace("6790", &self.ws_port.to_string())
    }

    fn sh(&self, script: &str) -> Command {
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(self.ports(script))
            .current_dir(self.dir.path());
        let path = std::env::var("PATH").unwrap_or_default();
        c.env("PATH", format!("{}:{path}", self.bin().display()));
        c
    }

    /// Runs a command as the README gives it (with `vars` set); its stdout.
    fn run(&self, command: &str, vars: &[(&str, &str)]) -> String {
        let mut c = self.sh(command);
        for (k, v) in vars {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert!(
            o.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }
}

/// The gateway started by step 1; stopped when dropped.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(sandbox: &Sandbox, command: &str) -> Running {
        let mut child = sandbox
            .sh(&format!("exec {command}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                    if tx.send(l).is_err() {
                        return;
                    }
                }
            });
        }
        Running { child, lines }
    }

    /// Waits for a log line containing `text`; everything logged so far on
    /// failure.
    fn wait_for(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(text) => return,
                Ok(l) => seen.push(l),
                Err(_) => break,
            }
        }
        panic!(
            "no line with {text:?}; the gateway printed:\n{}",
            seen.join("\n")
        );
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Plays a `> send` / `< expect` dialogue on `client`; a `client_id` in an
/// expected answer is learned (the README's example id is only an example)
/// and returned with the README's.
async fn dialogue(client: &mut Client, lines: &[String], token: &str) -> Option<(String, String)> {
    let mut learned = None;
    for l in lines {
        if let Some(out) = l.strip_prefix("> ") {
            client.send(&out.replace("<paste $TOKEN>", token)).await;
        } else if let Some(want) = l.strip_prefix("< ") {
            let got = client.recv().await;
            let mut want: Value = serde_json::from_str(want).unwrap();
            let got_json: Value = serde_json::from_str(&got).unwrap();
            if let Some(readme_id) = want["result"]["client_id"].as_str().map(str::to_string) {
                let id = got_json["result"]["client_id"]
                    .as_str()
                    .unwrap()
                    .to_string();
                want["result"]["client_id"] = Value::String(id.clone());
                learned = Some((readme_id, id));
            }
            assert_eq!(
                got_json, want,
                "README promises {l:?}, the gateway sent {got}"
            );
        }
    }
    learned
}

#[tokio::test]
async fn the_readme_walkthrough_works_as_written() {
    let w = walkthrough();
    let sandbox = Sandbox::new();
    let step = |n: usize| commands(&w.blocks[n]);

    // 1. Start the gateway; the start-up log shows the promised URLs.
    let start = step(0);
    assert!(start[0].starts_with("connmix dev"), "{start:?}");
    let ready = start[1]
        .strip_prefix("# ")
        .expect("the promised start-up line");
    let gateway = Running::start(&sandbox, &start[0]);
    gateway.wait_for(&sandbox.ports(ready));

    // 2. Mint a token.
    let mint = &step(1)[0];
    let (var, command) = mint.split_once("=$(").expect("VAR=$(command)");
    let command = command.strip_suffix(')').unwrap();
    let token = sandbox.run(command, &[]).trim().to_string();
    assert_eq!(var, "TOKEN");
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    // 3. Two devices of user 1001 log in and subscribe, as the README says.
    let session = step(2);
    let url = session[0]
        .strip_prefix("python3 -m websockets ")
        .expect("a websockets session");
    let url = sandbox.ports(url);
    let mut phone = Client::connect(&url).await;
    dialogue(&mut phone, &session[1..], &token).await;
    let mut laptop = Client::connect(&url).await;
    dialogue(&mut laptop, &session[1..], &token).await;

    // 4. The backend's publish: the promised answer, and both receive.
    let push = step(3);
    let answer = sandbox.run(&push[0], &[("TOKEN", &token)]);
    assert_eq!(answer.trim(), push[1].strip_prefix("# ").unwrap());
    let frame = quoted_after(&w.prose, "Both connections receive ");
    assert_eq!(phone.recv().await, frame);
    assert_eq!(laptop.recv().await, frame);

    // 5. whoami on the first connection, then a send to that id.
    let (readme_id, id) = dialogue(&mut phone, &step(4), &token)
        .await
        .expect("step 5 shows a whoami answer with a client_id");
    let send = step(5);
    let answer = sandbox.run(&send[0].replace(&readme_id, &id), &[]);
    assert_eq!(answer.trim(), send[1].strip_prefix("# ").unwrap());
    let only = quoted_after(&w.prose, "Only that connection receives ");
    assert_eq!(phone.recv().await, only);
    // The laptop did not get it: its next frame is a later publish.
    let marker = sandbox.run(
        &format!(
            "curl -s -XPOST http://127.0.0.1:6789/v1/mesh/publish -d '{}'",
            r#"{"c":"user:1001","d":"marker"}"#
        ),
        &[],
    );
    assert!(marker.contains(r#""s":2"#), "{marker}");
    assert_eq!(laptop.recv().await, "marker");

    // The lookup the README gives lists both connections of user 1001.
    let lookup = quoted_after(&w.prose, "lists both").replace('\n', " ");
    let lookup = w
        .prose
        .split('`')
        .find(|t| t.starts_with("curl '") && t.contains("/v1/connections"))
        .unwrap_or_else(|| panic!("README shows a connection lookup: {lookup}"))
        .to_string();
    let found: Value = serde_json::from_str(&sandbox.run(&lookup, &[])).unwrap();
    let conns = found["r"]["connections"].as_array().unwrap();
    assert_eq!(conns.len(), 2, "{found}");
    assert!(
        conns.iter().any(|c| c["c"] == Value::String(id.clone())),
        "{found}"
    );
}

/// Every metric the README's Metrics section names is on `/metrics` of a
/// node that has seen no traffic (dashboards and alerts find them from the
/// start), and the refusal counters read 0.
#[tokio::test]
async fn a_fresh_node_exports_every_documented_metric() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = &readme[readme.find("## Metrics").unwrap()..];
    let section = &section[..section[3..].find("\n## ").unwrap() + 3];
    let mut documented: Vec<&str> = section
        .split('`')
        .filter_map(|t| t.split('{').next())
        .filter(|t| t.starts_with("connmix_") && !t.contains(' '))
        .collect();
    documented.dedup();
    assert!(documented.len() >= 15, "{documented:?}");

    let gw = Gateway::start(vec![probe("/p", "")]).await;
    let text = gw.metrics_text().await;
    for name in &documented {
        assert!(
            text.contains(&format!("# TYPE {name} ")),
            "{name} is documented but not exported:\n{text}"
        );
    }
    for reason in ["max_connections", "on_handshake"] {
        let line = format!("connmix_connections_refused_total{{reason=\"{reason}\"}} 0");
        assert!(text.lines().any(|l| l == line), "{line}\n{text}");
    }
}
