//! `rtt`: how long one publish API call takes, request to answer, with N
//! clients subscribed to the published channel (all log in as uid 1, so all
//! join `user:1`). Publishes go one at a time on one keep-alive connection,
//! so this is the latency a backend sees per call, not a throughput figure.
//! In a cluster (`--ws` listing several nodes) the answer waits for the
//! other nodes' delivery counts, which is exactly what this measures.

use super::Common;
use crate::auth;
use crate::fleet::Fleet;
use crate::publish::http::HttpPub;
use crate::report::RunResult;
use crate::stats::Histogram;
use crate::target::{payload, unix_nanos};
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone)]
pub struct RttArgs {
    #[command(flatten)]
    pub common: Common,
    /// Publishes to time.
    #[arg(long, default_value_t = 2000)]
    pub requests: u64,
    /// Pause between publishes, in milliseconds (lets the fan-out finish).
    #[arg(long, default_value_t = 5)]
    pub gap_ms: u64,
}

pub async fn run(args: RttArgs) -> anyhow::Result<RunResult> {
    let c = &args.common;
    let mut res = c.result("rtt");
    let _auth = auth::spawn(c.auth_listen).await?;
    let fleet = Fleet::spawn(&c.workers(Some(1), 0), c.procs).await?;
    let setup = fleet.connect().await?;
    res.note(format!(
        "setup: {} connected, {} failed over {}",
        setup.ok,
        setup.failed,
        c.ws_url()
    ));
    let mut publisher = HttpPub::connect(&c.api()?).await?;
    let mut hist = Histogram::new();
    let mut reached = 0u64;
    for i in 0..args.requests {
        let start = Instant::now();
        let (s, _) = publisher
            .publish("user:1", &payload(unix_nanos(), 100))
            .await
            .map_err(|e| anyhow::anyhow!("publish {i}: {e}"))?;
        hist.record(start.elapsed().as_nanos() as u64);
        reached += s;
        tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
    }
    res.note(format!(
        "{} publishes, answers counted {} deliveries ({} per publish)",
        args.requests,
        reached,
        reached / args.requests.max(1)
    ));
    res.latency(
        "rtt.publish",
        "rtt: publish API round trip",
        &hist.summary(),
    );
    fleet.quit();
    res.finish(c.out.as_deref())?;
    Ok(res)
}
