//! A client process (`connmix-bench worker`, started by `fleet`): holds a
//! share of the connections on one thread and talks to the coordinator by
//! lines on stdin/stdout, so each process stays far below the machine's
//! 20,000-descriptor limit and the coordinator can add up what all of them
//! saw.
//!
//! ```text
//! out: hello <pid>
//! in:  connect                    open `count` connections, `concurrency` at a time
//! out: err <text>                 (a few distinct setup errors, if any)
//! out: ready <ok> <fail> <setup-latency histogram>
//! out: c <received> <closed>      every 20 ms, monotonic counters
//! in:  reset                      clear the latency histogram
//! in:  report                     -> report <received> <closed> <latency histogram>
//! in:  quit (or EOF)              exit at once (sockets close with the process)
//! ```

use crate::client::{self, Counters, Login};
use crate::procstat;
use crate::stats::Histogram;
use crate::target::Kind;
use crate::ws::Endpoint;
use std::cell::{Cell, RefCell};
use std::io::Write;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Setup gets this long per connection before it counts as failed.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// Distinct setup errors reported back.
const MAX_ERRORS: usize = 5;

#[derive(clap::Args, Debug, Clone)]
pub struct WorkerArgs {
    #[arg(long, value_enum)]
    pub kind: Kind,
    /// Client WebSocket URL.
    #[arg(long)]
    pub ws: String,
    /// Global index of this process's first connection.
    #[arg(long)]
    pub first: u64,
    /// Connections this process holds.
    #[arg(long)]
    pub count: u64,
    /// Log every connection in as this uid (else uid = index + 1).
    #[arg(long)]
    pub same_uid: Option<u64>,
    /// If > 0, also join channel `group:<uid % groups>`.
    #[arg(long, default_value_t = 0)]
    pub groups: u64,
    /// Connections being set up at once in this process.
    #[arg(long, default_value_t = 128)]
    pub concurrency: usize,
    /// Spread connections over source addresses 127.0.0.1..=127.0.0.<n> (0: let the kernel pick).
    #[arg(long, default_value_t = 8)]
    pub src_ips: u8,
    /// Seconds between keep-alive pings (connmix only; 0: never).
    #[arg(long, default_value_t = 20)]
    pub ping_secs: u64,
}

#[derive(Default)]
struct Setup {
    ok: Cell<u64>,
    fail: Cell<u64>,
    latency: RefCell<Histogram>,
    errors: RefCell<Vec<String>>,
}

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

pub fn main(args: WorkerArgs) -> anyhow::Result<()> {
    procstat::raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run(args))
}

async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let ep = Rc::new(Endpoint::parse(&args.ws)?);
    let counters = Rc::new(Counters::default());
    let setup = Rc::new(Setup::default());

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                return;
            }
        }
        let _ = tx.send("quit".into());
    });
    emit(&format!("hello {}", std::process::id()));
    loop {
        match rx.recv().await.as_deref() {
            Some("connect") => break,
            Some("quit") | None => std::process::exit(0),
            _ => {}
        }
    }

    let sem = Rc::new(Semaphore::new(args.concurrency.max(1)));
    let ping = (args.kind == Kind::Connmix && args.ping_secs > 0)
        .then(|| Duration::from_secs(args.ping_secs));
    for i in args.first..args.first + args.count {
        let (ep, counters, setup, sem) = (ep.clone(), counters.clone(), setup.clone(), sem.clone());
        let uid = args.same_uid.unwrap_or(i + 1);
        let login = Login {
            uid,
            extra_channels: if args.groups > 0 {
                vec![format!("group:{}", uid % args.groups)]
            } else {
                Vec::new()
            },
        };
        let src = (args.src_ips > 0)
            .then(|| Ipv4Addr::new(127, 0, 0, 1 + (i % args.src_ips as u64) as u8));
        let kind = args.kind;
        tokio::task::spawn_local(async move {
            let Ok(permit) = sem.acquire().await else {
                return;
            };
            let t = Instant::now();
            let r = tokio::time::timeout(
                SETUP_TIMEOUT,
                client::establish(kind, &ep, src, &login, (i as u32).wrapping_mul(2654435761)),
            )
            .await;
            drop(permit);
            let ws = match r {
                Ok(Ok(ws)) => ws,
                Ok(Err(e)) => return failed(&setup, e),
                Err(_) => return failed(&setup, "setup timed out".into()),
            };
            setup
                .latency
                .borrow_mut()
                .record(t.elapsed().as_nanos() as u64);
            setup.ok.set(setup.ok.get() + 1);
            // Spread the keep-alive pings instead of firing them all at once.
            client::receive(
                kind,
                ws,
                &counters,
                ping.map(|p| p + Duration::from_millis(i % 5000)),
            )
            .await;
        });
    }

    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let mut ready = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if !ready && setup.ok.get() + setup.fail.get() == args.count {
                    ready = true;
                    for e in setup.errors.borrow().iter() {
                        emit(&format!("err {e}"));
                    }
                    emit(&format!(
                        "ready {} {} {}",
                        setup.ok.get(),
                        setup.fail.get(),
                        setup.latency.borrow().encode()
                    ));
                }
                emit(&format!("c {} {}", counters.received.get(), counters.closed.get()));
            }
            cmd = rx.recv() => match cmd.as_deref() {
                Some("reset") => counters.latency.borrow_mut().reset(),
                Some("report") => emit(&format!(
                    "report {} {} {}",
                    counters.received.get(),
                    counters.closed.get(),
                    counters.latency.borrow().encode()
                )),
                Some("quit") | None => std::process::exit(0),
                _ => {}
            }
        }
    }
}

fn failed(setup: &Setup, e: String) {
    setup.fail.set(setup.fail.get() + 1);
    let mut errors = setup.errors.borrow_mut();
    let e = e.replace('\n', " ");
    if errors.len() < MAX_ERRORS && !errors.contains(&e) {
        errors.push(e);
    }
}
