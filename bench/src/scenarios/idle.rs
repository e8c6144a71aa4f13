//! `idle`: memory per idle connection. N clients connect, authenticate
//! (real auth call) and join two channels each, their own `user:<uid>` and
//! `group:<uid % 100>`; the server's resident memory (VmRSS of
//! `--server-pid`) is read before the first connection and again once all
//! are subscribed and a settle time has passed. The difference over N is
//! the cost of one connection: socket buffers in the kernel are not in it,
//! user-space buffers, Lua/JS state, channel and room entries are.
//!
//! connmix must run with bench/lua/entry.bench.lua here (the shipped script
//! only offers `@user`): run.sh points `--ws` at the bench server entry.
//! A publish to `group:0` then checks the second channel really took.

use super::Common;
use crate::auth;
use crate::fleet::Fleet;
use crate::procstat::rss_bytes;
use crate::publish::http::HttpPub;
use crate::report::RunResult;
use anyhow::Context as _;
use std::time::Duration;

/// Groups for the second channel.
const GROUPS: u64 = 100;

#[derive(clap::Args, Debug, Clone)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Seconds to wait after the last subscribe before reading memory.
    #[arg(long, default_value_t = 5.0)]
    pub settle: f64,
}

pub async fn run(args: IdleArgs) -> anyhow::Result<RunResult> {
    let c = &args.common;
    let pid = c
        .server_pid
        .context("idle needs --server-pid to read the server's memory")?;
    let mut res = c.result("idle");
    let auth = auth::spawn(c.auth_listen).await?;
    let before = rss_bytes(pid)?;
    let fleet = Fleet::spawn(&c.workers(None, GROUPS), c.procs).await?;
    let setup = fleet.connect().await?;
    res.note(format!(
        "setup: {} connected, {} failed in {:.1}s; auth API served {}{}",
        setup.ok,
        setup.failed,
        setup.elapsed.as_secs_f64(),
        auth.ok.get(),
        if setup.errors.is_empty() {
            String::new()
        } else {
            format!("; errors: {}", setup.errors.join(" | "))
        }
    ));
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let after = rss_bytes(pid)?;

    // Check the second channel works: one publish to group:0.
    let check = match HttpPub::connect(&c.api()?).await {
        Ok(mut p) => p
            .publish(
                "group:0",
                &crate::target::payload(crate::target::unix_nanos(), 32),
            )
            .await
            .map(|(s, _)| s.to_string())
            .unwrap_or_else(|e| format!("error {e}")),
        Err(e) => format!("error {e}"),
    };
    res.note(format!(
        "group:0 publish reached {check} subscribers (expected about {})",
        setup.ok / GROUPS
    ));

    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    res.metric(
        "idle.connected",
        "idle: clients connected, 2 channels each",
        Some(setup.ok as f64),
        "count",
    );
    res.metric(
        "idle.rss_before",
        "idle: server RSS before connecting",
        Some(mib(before)),
        "MiB",
    );
    res.metric(
        "idle.rss_after",
        "idle: server RSS with all connected",
        Some(mib(after)),
        "MiB",
    );
    let per =
        (setup.ok > 0).then(|| after.saturating_sub(before) as f64 / setup.ok as f64 / 1024.0);
    res.metric(
        "idle.per_conn",
        "idle: server memory per connection",
        per,
        "KiB",
    );
    fleet.quit();
    res.finish(c.out.as_deref())?;
    Ok(res)
}
