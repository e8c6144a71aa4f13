//! The scenarios (one subcommand each) and what they share: the target's
//! addresses, the client-fleet options, CPU accounting of a measured phase.
//!
//! - `fanout`: broadcast (everyone on one channel) and personal (one channel
//!   per user, random targets): max sustained rate and fixed-rate latency.
//! - `idle`: resident memory per idle, subscribed connection.
//! - `storm`: connections per second through handshake, auth and subscribe.
//! - `recovery`: channel history: reconnect-to-replayed time, Redis memory.

pub mod fanout;
pub mod idle;
pub mod recovery;
pub mod rtt;
pub mod storm;

use crate::procstat::{CpuMeter, CpuUse};
use crate::publish::http::Api;
use crate::report::RunResult;
use crate::target::{Kind, parse_http_base};
use crate::worker::WorkerArgs;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Options every scenario takes.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Which kind of server is under test.
    #[arg(long, value_enum)]
    pub target: Kind,
    /// Client WebSocket URL (default: the target kind's usual one); a
    /// comma-separated list spreads the client processes over several
    /// servers, e.g. the nodes of a cluster.
    #[arg(long)]
    pub ws: Option<String>,
    /// Publish API base URL (default: the target kind's usual one).
    #[arg(long)]
    pub api: Option<String>,
    /// The server's process id: its CPU and memory are read from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Where this process serves the auth API the server calls.
    #[arg(long, default_value = "127.0.0.1:8790")]
    pub auth_listen: SocketAddr,
    /// Client connections.
    #[arg(long, short = 'n', default_value_t = 10_000)]
    pub conns: u64,
    /// Client processes (0: one per core from 2,000 connections on, more if
    /// the 20,000-descriptor limit needs it).
    #[arg(long, default_value_t = 0)]
    pub procs: usize,
    /// Connections being set up at once (all processes together).
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Spread client connections over 127.0.0.1..=127.0.0.<n>.
    #[arg(long, default_value_t = 8)]
    pub src_ips: u8,
    /// Append the result as a JSON line to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl Common {
    pub fn ws_url(&self) -> String {
        self.ws
            .clone()
            .unwrap_or_else(|| self.target.default_ws().to_string())
    }

    pub fn api(&self) -> anyhow::Result<Api> {
        let url = self
            .api
            .clone()
            .unwrap_or_else(|| self.target.default_api().to_string());
        let (addr, host) = parse_http_base(&url)?;
        Ok(Api {
            kind: self.target,
            addr,
            host,
        })
    }

    /// Client-process options for this run.
    pub fn workers(&self, same_uid: Option<u64>, groups: u64) -> WorkerArgs {
        WorkerArgs {
            kind: self.target,
            ws: self.ws_url(),
            first: 0,
            count: self.conns,
            same_uid,
            groups,
            concurrency: self.concurrency,
            src_ips: self.src_ips,
            ping_secs: 20,
        }
    }

    pub fn result(&self, scenario: &str) -> RunResult {
        RunResult::new(self.target.name(), scenario, self.conns)
    }
}

/// Measures the CPU of the server, the client processes and this process.
pub struct Cpu {
    meter: CpuMeter,
    has_server: bool,
    clients: usize,
    kernel: usize,
}

/// Cores used during a phase, by role.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSplit {
    pub server: Option<f64>,
    pub clients: f64,
    /// The coordinator: publishers and the auth API.
    pub coordinator: f64,
    /// Busy share of the whole machine (1.0 = every core busy).
    pub machine: f64,
    /// Cores of the kernel's `ksoftirqd` threads (loopback TCP receive work
    /// deferred out of the senders' system calls).
    pub ksoftirqd: f64,
    /// Cores in irq/softirq context, wherever it ran (overlaps the figures
    /// above: inline softirq is charged to the process it interrupted).
    pub irq: f64,
}

impl Cpu {
    pub fn start(server: Option<u32>, clients: &[u32]) -> Cpu {
        let kernel = crate::procstat::pids_named("ksoftirqd/");
        let mut pids: Vec<u32> = server.into_iter().collect();
        pids.extend_from_slice(clients);
        pids.extend_from_slice(&kernel);
        pids.push(std::process::id());
        Cpu {
            meter: CpuMeter::start(&pids),
            has_server: server.is_some(),
            clients: clients.len(),
            kernel: kernel.len(),
        }
    }

    pub fn stop(&self) -> CpuSplit {
        let CpuUse {
            cores,
            machine_busy,
            irq_cores,
        } = self.meter.stop();
        let off = usize::from(self.has_server);
        CpuSplit {
            server: self.has_server.then(|| cores[0]),
            clients: cores[off..off + self.clients].iter().sum(),
            ksoftirqd: cores[off + self.clients..off + self.clients + self.kernel]
                .iter()
                .sum(),
            coordinator: cores.last().copied().unwrap_or(0.0),
            machine: machine_busy,
            irq: irq_cores,
        }
    }
}

/// Adds the CPU rows of a phase.
pub fn cpu_rows(r: &mut RunResult, key: &str, label: &str, c: &CpuSplit) {
    r.metric(
        &format!("{key}.cpu_server"),
        &format!("{label} server CPU (cores)"),
        c.server,
        "cores",
    );
    r.metric(
        &format!("{key}.cpu_bench"),
        &format!("{label} bench CPU (cores: clients + publisher)"),
        Some(c.clients + c.coordinator),
        "cores",
    );
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    let ours = c.server.unwrap_or(0.0) + c.clients + c.coordinator + c.ksoftirqd;
    let others = (c.machine * cores - ours).max(0.0);
    r.note(format!(
        "{}: CPU cores: server {} / clients {:.2} / publisher+auth {:.2} / ksoftirqd {:.2} / other processes {others:.2}; machine {:.0}% busy, of which irq+softirq (loopback TCP, overlaps the above) {:.2}",
        label.trim_end_matches(':'),
        c.server.map(|s| format!("{s:.2}")).unwrap_or_else(|| "?".into()),
        c.clients,
        c.coordinator,
        c.ksoftirqd,
        c.machine * 100.0,
        c.irq,
    ));
    if others > 0.25 {
        r.note(format!(
            "WARNING: {others:.2} cores were used by processes outside the benchmark during {label} the numbers are disturbed"
        ));
    }
}
