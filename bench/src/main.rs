//! `connmix-bench`: load generator comparing connmix with a Socket.IO push
//! server (bench/README.md). This file is the command line only: it parses
//! arguments and hands each subcommand to its module.
//!
//! Process layout: the command you run is the coordinator (one thread: the
//! auth API, the publishers, the measurements); it starts `worker` child
//! processes (one thread each) that hold the client connections.

mod auth;
mod client;
mod fleet;
mod procstat;
mod publish;
mod report;
mod scenarios;
mod socketio;
mod stats;
mod target;
mod worker;
mod ws;

use clap::{Parser, Subcommand};
use scenarios::fanout::{self, FanoutArgs, Mode};
use scenarios::idle::IdleArgs;
use scenarios::storm::StormArgs;
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "connmix-bench",
    about = "Benchmarks connmix against a Socket.IO push server (see bench/README.md)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// N clients on ONE channel; publish to it at max rate and at fixed rates.
    Broadcast(FanoutArgs),
    /// N clients on their own user channel; publish to random users.
    Personal(FanoutArgs),
    /// Server memory per idle connection subscribed to two channels.
    Idle(IdleArgs),
    /// Connections per second through handshake + auth + subscribe.
    Storm(StormArgs),
    /// Round trip of one publish API call (request to answer), one at a time.
    Rtt(scenarios::rtt::RttArgs),
    /// connmix: time to recover missed publications, Redis memory of history.
    Recovery(scenarios::recovery::RecoveryArgs),
    /// Serve only the auth API (for trying a server by hand).
    Auth {
        #[arg(long, default_value = "127.0.0.1:8790")]
        listen: std::net::SocketAddr,
    },
    /// Print the markdown comparison table of one or more results files
    /// (several: median of the runs).
    Table {
        #[arg(required = true)]
        results: Vec<PathBuf>,
        /// Also list every run's notes under the table.
        #[arg(long)]
        notes: bool,
        /// With several files, show the range (min – max) after the median.
        #[arg(long)]
        spread: bool,
    },
    /// Print one number a run stored (e.g. `half_rate`), for run.sh.
    Field {
        results: PathBuf,
        #[arg(long)]
        target: String,
        #[arg(long)]
        scenario: String,
        #[arg(long)]
        key: String,
    },
    /// A client process (started by the scenarios, not by hand).
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
}

/// Runs a coordinator future on one thread with a LocalSet.
fn local<F: Future<Output = anyhow::Result<()>>>(f: F) -> anyhow::Result<()> {
    procstat::raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    tokio::task::LocalSet::new().block_on(&rt, f)
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Broadcast(a) => local(async { fanout::run(a, Mode::Broadcast).await.map(drop) }),
        Command::Personal(a) => local(async { fanout::run(a, Mode::Personal).await.map(drop) }),
        Command::Idle(a) => local(async { scenarios::idle::run(a).await.map(drop) }),
        Command::Storm(a) => local(async { scenarios::storm::run(a).await.map(drop) }),
        Command::Rtt(a) => local(async { scenarios::rtt::run(a).await.map(drop) }),
        Command::Recovery(a) => local(async { scenarios::recovery::run(a).await.map(drop) }),
        Command::Auth { listen } => local(async move {
            auth::spawn(listen).await?;
            eprintln!("auth API on http://{listen}/auth (token tok<uid> -> {{\"uid\":<uid>}})");
            std::future::pending::<()>().await;
            Ok(())
        }),
        Command::Table {
            results,
            notes,
            spread,
        } => {
            let runs = results
                .iter()
                .map(|p| report::load(p))
                .collect::<anyhow::Result<Vec<_>>>()?;
            print!("{}", report::table(&runs, spread));
            if notes {
                for (p, r) in results.iter().zip(&runs) {
                    print!("\nNotes ({}):\n{}", p.display(), report::notes(r));
                }
            }
            Ok(())
        }
        Command::Field {
            results,
            target,
            scenario,
            key,
        } => {
            let r = report::load(&results)?;
            let v = r
                .iter()
                .rev()
                .find(|x| x.target == target && x.scenario == scenario)
                .and_then(|x| x.extra.get(&key))
                .ok_or_else(|| anyhow::anyhow!("no {key} for {target}/{scenario}"))?;
            println!("{v}");
            Ok(())
        }
        Command::Worker(a) => worker::main(a),
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
