//! The coordinator's side of the client processes: spawns `worker`s (this
//! same executable), splits the connections between them, sends them
//! commands and adds up what they report (see `worker` for the line
//! protocol). Counters arrive every 20 ms; [`Fleet::changed`] wakes whoever
//! waits on them (the publishers' flow control, drain waits).

use crate::stats::Histogram;
use crate::worker::WorkerArgs;
use anyhow::{Context as _, bail};
use std::cell::Cell;
use std::process::Stdio;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Notify, mpsc};

/// Most connections one client process holds (its descriptor limit is 20,000).
pub const MAX_PER_PROCESS: u64 = 15_000;

struct Member {
    pid: u32,
    _child: Child,
    cmd: mpsc::UnboundedSender<String>,
    replies: tokio::sync::Mutex<mpsc::UnboundedReceiver<String>>,
    received: Cell<u64>,
    closed: Cell<u64>,
}

/// See the module documentation.
pub struct Fleet {
    members: Vec<Rc<Member>>,
    changed: Rc<Notify>,
}

/// What the connect phase produced.
pub struct SetupReport {
    pub ok: u64,
    pub failed: u64,
    /// From the `connect` command to the last process being ready.
    pub elapsed: Duration,
    pub latency: Histogram,
    pub errors: Vec<String>,
}

/// Received frames, closed connections and latency since the last reset.
pub struct RecvReport {
    pub received: u64,
    pub closed: u64,
    pub latency: Histogram,
}

impl Fleet {
    /// Starts `procs` client processes sharing `base.count` connections, and
    /// waits for their hello. 0 picks one per core (at least 2 from 2,000
    /// connections on), or more if the descriptor limit needs it: one thread
    /// reading 10,000 sockets in turn adds its own fan-in time to a
    /// broadcast's latency (measured: p50 90 ms with 1 process, 59 ms with 2).
    pub async fn spawn(base: &WorkerArgs, procs: usize) -> anyhow::Result<Fleet> {
        let total = base.count;
        let procs = if procs == 0 {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
            let min = if total >= 2_000 { cores.max(2) } else { 1 };
            total.div_ceil(MAX_PER_PROCESS).max(min) as usize
        } else {
            procs
        };
        let exe = std::env::current_exe().context("locating own executable")?;
        let changed = Rc::new(Notify::new());
        let mut members = Vec::new();
        let mut first = base.first;
        for p in 0..procs as u64 {
            let count = total / procs as u64 + u64::from(p < total % procs as u64);
            if count > MAX_PER_PROCESS {
                bail!("{count} connections in one process: use more --procs");
            }
            let mut c = Command::new(&exe);
            c.arg("worker")
                .args(["--kind", base.kind.name()])
                // Several URLs (comma-separated, e.g. two cluster nodes):
                // client processes take them in turn.
                .args(["--ws", ws_of(&base.ws, p as usize)])
                .args(["--first", &first.to_string()])
                .args(["--count", &count.to_string()])
                .args(["--groups", &base.groups.to_string()])
                .args([
                    "--concurrency",
                    &(base.concurrency / procs).max(1).to_string(),
                ])
                .args(["--src-ips", &base.src_ips.to_string()])
                .args(["--ping-secs", &base.ping_secs.to_string()]);
            if let Some(u) = base.same_uid {
                c.args(["--same-uid", &u.to_string()]);
            }
            first += count;
            let mut child = c
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("spawning a client process")?;
            let pid = child.id().unwrap_or(0);
            let mut stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let (cmd_tx, mut cmd_rx) = mpsc::unbounded_channel::<String>();
            tokio::task::spawn_local(async move {
                while let Some(line) = cmd_rx.recv().await {
                    if stdin
                        .write_all(format!("{line}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
            let (rep_tx, rep_rx) = mpsc::unbounded_channel();
            let m = Rc::new(Member {
                pid,
                _child: child,
                cmd: cmd_tx,
                replies: tokio::sync::Mutex::new(rep_rx),
                received: Cell::new(0),
                closed: Cell::new(0),
            });
            let (m2, changed2) = (Rc::downgrade(&m), changed.clone());
            tokio::task::spawn_local(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let Some(m) = m2.upgrade() else { return };
                    if let Some(rest) = line.strip_prefix("c ") {
                        let mut it = rest.split(' ').map(|v| v.parse::<u64>().unwrap_or(0));
                        m.received.set(it.next().unwrap_or(0));
                        m.closed.set(it.next().unwrap_or(0));
                        changed2.notify_waiters();
                    } else if rep_tx.send(line).is_err() {
                        return;
                    }
                }
                changed2.notify_waiters();
            });
            members.push(m);
        }
        let fleet = Fleet { members, changed };
        for m in &fleet.members {
            let hello = fleet.reply(m, Duration::from_secs(30)).await?;
            if !hello.starts_with("hello") {
                bail!("client process said {hello:?}");
            }
        }
        Ok(fleet)
    }

    async fn reply(&self, m: &Member, wait: Duration) -> anyhow::Result<String> {
        let mut rx = m.replies.lock().await;
        match tokio::time::timeout(wait, rx.recv()).await {
            Ok(Some(l)) => Ok(l),
            Ok(None) => bail!("client process {} exited", m.pid),
            Err(_) => bail!("client process {} did not answer in {wait:?}", m.pid),
        }
    }

    fn broadcast(&self, cmd: &str) {
        for m in &self.members {
            let _ = m.cmd.send(cmd.to_string());
        }
    }

    /// Process ids of the client processes (for CPU accounting).
    pub fn pids(&self) -> Vec<u32> {
        self.members.iter().map(|m| m.pid).collect()
    }

    /// Opens every connection; returns when all are set up or failed.
    pub async fn connect(&self) -> anyhow::Result<SetupReport> {
        let t0 = Instant::now();
        self.broadcast("connect");
        let mut rep = SetupReport {
            ok: 0,
            failed: 0,
            elapsed: Duration::ZERO,
            latency: Histogram::new(),
            errors: Vec::new(),
        };
        for m in &self.members {
            loop {
                let line = self.reply(m, Duration::from_secs(600)).await?;
                if let Some(e) = line.strip_prefix("err ") {
                    rep.errors.push(e.to_string());
                    continue;
                }
                let mut it = line.splitn(4, ' ');
                if it.next() != Some("ready") {
                    bail!("unexpected {line:?}");
                }
                rep.ok += it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                rep.failed += it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
                if let Some(h) = it.next().and_then(Histogram::decode) {
                    rep.latency.merge(&h);
                }
                break;
            }
        }
        rep.elapsed = t0.elapsed();
        Ok(rep)
    }

    /// Frames received by all clients so far (at most 20 ms old).
    pub fn received(&self) -> u64 {
        self.members.iter().map(|m| m.received.get()).sum()
    }

    /// Connections closed after setup so far.
    pub fn closed(&self) -> u64 {
        self.members.iter().map(|m| m.closed.get()).sum()
    }

    /// Resolves on the next counter update (create it before checking the
    /// condition you wait for).
    pub fn changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.changed.notified()
    }

    /// Clears every latency histogram.
    pub fn reset(&self) {
        self.broadcast("reset");
    }

    /// Waits until `received()` reaches `target` or `wait` passes; returns
    /// whether it did.
    pub async fn wait_received(&self, target: u64, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let n = self.changed();
            if self.received() >= target {
                return true;
            }
            if tokio::time::timeout_at(deadline, n).await.is_err() {
                return self.received() >= target;
            }
        }
    }

    /// Counters and merged latency since the last reset.
    pub async fn report(&self) -> anyhow::Result<RecvReport> {
        self.broadcast("report");
        let mut r = RecvReport {
            received: 0,
            closed: 0,
            latency: Histogram::new(),
        };
        for m in &self.members {
            let line = self.reply(m, Duration::from_secs(30)).await?;
            let mut it = line.splitn(4, ' ');
            if it.next() != Some("report") {
                bail!("unexpected {line:?}");
            }
            r.received += it.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            r.closed += it.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            if let Some(h) = it.next().and_then(Histogram::decode) {
                r.latency.merge(&h);
            }
        }
        Ok(r)
    }

    /// Tells every process to exit (their sockets close with them).
    pub fn quit(&self) {
        self.broadcast("quit");
    }
}

/// The `p`-th of a comma-separated list of WebSocket URLs, in turn.
fn ws_of(list: &str, p: usize) -> &str {
    let urls: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
    urls.get(p % urls.len().max(1)).copied().unwrap_or(list)
}
