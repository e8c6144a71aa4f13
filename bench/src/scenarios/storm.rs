//! `storm`: how fast a server takes on clients, as after a restart when
//! every client reconnects at once. N connections, `--concurrency` in flight
//! at a time, each through TCP connect, WebSocket upgrade, login (the
//! server's real HTTP call to the auth API) and subscribe; they stay open.
//! Reports connections per second (N / time from the first connect to the
//! last subscribe) and the per-connection setup time.

use super::{Common, Cpu, cpu_rows};
use crate::auth;
use crate::fleet::Fleet;
use crate::report::RunResult;

#[derive(clap::Args, Debug, Clone)]
pub struct StormArgs {
    #[command(flatten)]
    pub common: Common,
}

pub async fn run(args: StormArgs) -> anyhow::Result<RunResult> {
    let c = &args.common;
    let mut res = c.result("storm");
    let auth = auth::spawn(c.auth_listen).await?;
    let fleet = Fleet::spawn(&c.workers(None, 0), c.procs).await?;
    let cpu = Cpu::start(c.server_pid, &fleet.pids());
    let setup = fleet.connect().await?;
    let cpu = cpu.stop();
    let secs = setup.elapsed.as_secs_f64();
    res.note(format!(
        "{} connected, {} failed in {secs:.2}s, {} at a time; auth API served {} ok / {} refused{}",
        setup.ok,
        setup.failed,
        c.concurrency,
        auth.ok.get(),
        auth.refused.get(),
        if setup.errors.is_empty() {
            String::new()
        } else {
            format!("; errors: {}", setup.errors.join(" | "))
        }
    ));
    res.metric(
        "storm.rate",
        "storm: connections/s (connect + auth + subscribe)",
        Some(setup.ok as f64 / secs.max(1e-9)),
        "/s",
    );
    res.metric(
        "storm.failed",
        "storm: failed connections",
        Some(setup.failed as f64),
        "count",
    );
    res.latency("storm.setup", "storm: setup time", &setup.latency.summary());
    cpu_rows(&mut res, "storm", "storm:", &cpu);
    fleet.quit();
    res.finish(c.out.as_deref())?;
    Ok(res)
}
