//! `broadcast` and `personal`: N connected, subscribed clients, and a
//! publisher pushing to them.
//!
//! - broadcast: every client logs in as uid 1, so every one of them joins
//!   `user:1` (the shipped connmix script only offers the `@user` channel;
//!   on Socket.IO they all join room `user:1`). Each publish goes to all N.
//! - personal: client i logs in as uid i+1 and joins `user:<i+1>`; each
//!   publish goes to one random user.
//!
//! Phases, each on the same connections:
//! 1. warm-up at max rate (not reported; lets V8 optimise, fills pools);
//! 2. HTTP publish at the max sustained rate (flow-controlled, see
//!    `publish`): deliveries/s, publishes/s, latency, CPU by process;
//! 3. the same through the target's WebSocket API, or "n/a";
//!    personal only: the same through `POST /v1/mesh/batch` (`--batch`
//!    publishes per request; connmix only, else "n/a");
//! 4. fixed rate at `--rate-fraction` of this target's own HTTP max:
//!    latency;
//! 5. fixed rate at `--same-rate` (the same absolute load for both targets,
//!    chosen by run.sh), if given and different from 4.

use super::{Common, Cpu, CpuSplit, cpu_rows};
use crate::auth;
use crate::fleet::Fleet;
use crate::publish::batch;
use crate::publish::http::{self, Api};
use crate::publish::wsapi::{self, WsApi};
use crate::publish::{Outcome, Pick, Spec};
use crate::report::RunResult;
use crate::stats::Summary;
use crate::target::Kind;
use anyhow::bail;
use std::future::Future;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Broadcast,
    Personal,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Broadcast => "broadcast",
            Mode::Personal => "personal",
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// Seconds of each measured phase.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of unreported warm-up at max rate.
    #[arg(long, default_value_t = 3.0)]
    pub warmup: f64,
    /// Concurrent keep-alive HTTP publishers (default: 4 broadcast, 16 personal).
    #[arg(long)]
    pub publishers: Option<usize>,
    /// Personal: publishes per `/v1/mesh/batch` request in the batch phase
    /// (0 skips it).
    #[arg(long, default_value_t = 100)]
    pub batch: usize,
    /// Personal: concurrent keep-alive HTTP connections of the batch phase.
    #[arg(long, default_value_t = 4)]
    pub batch_publishers: usize,
    /// WebSocket API connections (each pipelines 32 requests).
    #[arg(long, default_value_t = 2)]
    pub ws_publishers: usize,
    /// Payload bytes per publish.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Publishes whose deliveries may be outstanding (default: 4 broadcast,
    /// 4000 personal). The clients report what they received every 20 ms,
    /// so a personal window caps the rate at window / 20 ms (4000: 200k/s).
    #[arg(long)]
    pub window: Option<u64>,
    /// Fixed-rate latency run at this fraction of the measured HTTP max.
    #[arg(long, default_value_t = 0.5)]
    pub rate_fraction: f64,
    /// Also measure latency at this absolute publish rate (same for both targets).
    #[arg(long)]
    pub same_rate: Option<f64>,
    /// Only run one fixed-rate phase at this rate (no max phases): for
    /// probing latency at a chosen load.
    #[arg(long)]
    pub rate: Option<f64>,
}

/// What one measured phase produced.
struct Phase {
    outcome: Outcome,
    /// Frames received while publishing.
    in_window: u64,
    /// Frames the API said it delivered but the clients never got.
    lost: u64,
    /// Client connections that ended during the phase.
    closed: u64,
    latency: Summary,
    cpu: CpuSplit,
}

impl Phase {
    fn deliveries_per_s(&self) -> f64 {
        self.in_window as f64 / self.outcome.elapsed.as_secs_f64().max(1e-9)
    }
}

async fn phase<F>(fleet: &Fleet, server_pid: Option<u32>, run: F) -> anyhow::Result<Phase>
where
    F: Future<Output = anyhow::Result<Outcome>>,
{
    fleet.reset();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (r0, closed0) = (fleet.received(), fleet.closed());
    let cpu = Cpu::start(server_pid, &fleet.pids());
    let outcome = run.await?;
    let r1 = fleet.received();
    let cpu = cpu.stop();
    let drain = Duration::from_secs(15);
    fleet.wait_received(r0 + outcome.delivered, drain).await;
    // One more report interval, so the counters include the last frames.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let report = fleet.report().await?;
    let got = fleet.received() - r0;
    Ok(Phase {
        in_window: r1 - r0,
        lost: outcome.delivered.saturating_sub(got),
        closed: fleet.closed() - closed0,
        latency: report.latency.summary(),
        cpu,
        outcome,
    })
}

fn describe(r: &mut RunResult, label: &str, p: &Phase) {
    let o = &p.outcome;
    r.note(format!(
        "{}: {} publishes in {:.1}s, API reported {} delivered / {} failed, clients got {} ({} in window), lost {}, errors {}{}, clients closed {}, latency samples {} (max {:.1} ms)",
        label.trim_end_matches(':'),
        o.published,
        o.elapsed.as_secs_f64(),
        o.delivered,
        o.failed,
        o.delivered - p.lost,
        p.in_window,
        p.lost,
        o.errors,
        o.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default(),
        p.closed,
        p.latency.count,
        p.latency.max_ms,
    ));
}

pub async fn run(args: FanoutArgs, mode: Mode) -> anyhow::Result<RunResult> {
    let c = &args.common;
    let m = mode.name();
    let mut res = c.result(m);
    let api = c.api()?;
    let secs = Duration::from_secs_f64(args.duration);
    let publishers = args.publishers.unwrap_or(match mode {
        Mode::Broadcast => 4,
        Mode::Personal => 16,
    });

    let auth = auth::spawn(c.auth_listen).await?;
    let same_uid = (mode == Mode::Broadcast).then_some(1);
    let fleet = Fleet::spawn(&c.workers(same_uid, 0), c.procs).await?;
    let setup = fleet.connect().await?;
    res.note(format!(
        "setup: {} connected, {} failed in {:.1}s over {} client process(es); auth API served {}{}",
        setup.ok,
        setup.failed,
        setup.elapsed.as_secs_f64(),
        fleet.pids().len(),
        auth.ok.get(),
        if setup.errors.is_empty() {
            String::new()
        } else {
            format!("; errors: {}", setup.errors.join(" | "))
        }
    ));
    res.metric(
        &format!("{m}.connected"),
        &format!("{m}: clients connected and subscribed"),
        Some(setup.ok as f64),
        "count",
    );
    if setup.ok == 0 {
        res.finish(c.out.as_deref())?;
        bail!("no client could connect");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let spec = Spec {
        pick: match mode {
            Mode::Broadcast => Pick::One("user:1".into()),
            Mode::Personal => Pick::RandomUser { users: c.conns },
        },
        size: args.size,
        per_publish: match mode {
            Mode::Broadcast => setup.ok,
            Mode::Personal => 1,
        },
        window: args.window.unwrap_or(match mode {
            Mode::Broadcast => 4,
            // 1000 capped a fast machine at 50k publishes/s (window / the
            // clients' 20 ms report interval) with the server not saturated.
            Mode::Personal => 4000,
        }),
    };

    if let Some(rate) = args.rate {
        let label = format!("{m} @ {rate:.0} publishes/s:");
        let p = phase(
            &fleet,
            c.server_pid,
            http::run_rate(&api, &spec, publishers, rate, secs),
        )
        .await?;
        describe(&mut res, &label, &p);
        res.metric(
            &format!("{m}.rate.{rate:.0}.rate"),
            &format!("{label} publishes/s"),
            Some(p.outcome.rate()),
            "/s",
        );
        res.latency(
            &format!("{m}.rate.{rate:.0}"),
            &format!("{label} latency"),
            &p.latency,
        );
        cpu_rows(&mut res, &format!("{m}.rate.{rate:.0}"), &label, &p.cpu);
        fleet.quit();
        res.finish(c.out.as_deref())?;
        return Ok(res);
    }

    if args.warmup > 0.0 {
        let w = phase(
            &fleet,
            None,
            http::run_max(
                &fleet,
                &api,
                &spec,
                publishers,
                Duration::from_secs_f64(args.warmup),
            ),
        )
        .await?;
        describe(&mut res, "warm-up", &w);
    }

    // Max sustained rate over HTTP.
    let label = format!("{m} HTTP max:");
    let max = phase(
        &fleet,
        c.server_pid,
        http::run_max(&fleet, &api, &spec, publishers, secs),
    )
    .await?;
    describe(&mut res, &label, &max);
    if mode == Mode::Broadcast {
        res.metric(
            &format!("{m}.http.deliveries"),
            &format!("{label} deliveries/s"),
            Some(max.deliveries_per_s()),
            "/s",
        );
    }
    res.metric(
        &format!("{m}.http.publishes"),
        &format!("{label} publishes/s"),
        Some(max.outcome.rate()),
        "/s",
    );
    res.latency(
        &format!("{m}.http"),
        &format!("{label} latency"),
        &max.latency,
    );
    cpu_rows(&mut res, &format!("{m}.http"), &label, &max.cpu);

    // The same through the WebSocket API, where there is one.
    let label = format!("{m} WS-API max:");
    match connect_ws(&api, args.ws_publishers).await {
        Ok(conns) => {
            let ws = phase(&fleet, c.server_pid, async {
                Ok(wsapi::run_max(&fleet, conns, &spec, secs).await)
            })
            .await?;
            describe(&mut res, &label, &ws);
            if mode == Mode::Broadcast {
                res.metric(
                    &format!("{m}.ws.deliveries"),
                    &format!("{label} deliveries/s"),
                    Some(ws.deliveries_per_s()),
                    "/s",
                );
            }
            res.metric(
                &format!("{m}.ws.publishes"),
                &format!("{label} publishes/s"),
                Some(ws.outcome.rate()),
                "/s",
            );
            res.latency(&format!("{m}.ws"), &format!("{label} latency"), &ws.latency);
        }
        Err(e) => {
            res.note(format!(
                "{}: no WebSocket API: {e}",
                label.trim_end_matches(':')
            ));
            if mode == Mode::Broadcast {
                res.na(
                    &format!("{m}.ws.deliveries"),
                    &format!("{label} deliveries/s"),
                    "/s",
                    "no WS API",
                );
            }
            res.na(
                &format!("{m}.ws.publishes"),
                &format!("{label} publishes/s"),
                "/s",
                "no WS API",
            );
            for (k, q) in [("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")] {
                res.na(
                    &format!("{m}.ws.{k}"),
                    &format!("{label} latency {q}"),
                    "ms",
                    "no WS API",
                );
            }
        }
    }

    if mode == Mode::Personal && args.batch > 0 {
        batch_phase(&mut res, &fleet, &args, &api, &spec, secs).await?;
    }

    // Latency at a fixed share of this target's own max.
    let half = (max.outcome.rate() * args.rate_fraction).max(1.0);
    res.extra
        .insert("half_rate".into(), serde_json::json!(half));
    let pct = (args.rate_fraction * 100.0).round();
    let label = format!("{m} @ {pct}% of own max:");
    let fixed = phase(
        &fleet,
        c.server_pid,
        http::run_rate(&api, &spec, publishers, half, secs),
    )
    .await?;
    describe(&mut res, &label, &fixed);
    res.metric(
        &format!("{m}.half.rate"),
        &format!("{label} publishes/s"),
        Some(fixed.outcome.rate()),
        "/s",
    );
    res.latency(
        &format!("{m}.half"),
        &format!("{label} latency"),
        &fixed.latency,
    );

    // Latency at the same absolute rate for both targets.
    let same = args.same_rate.unwrap_or(half);
    let label = format!("{m} @ {same:.0} publishes/s (same load for both):");
    let at_same = if (same - half).abs() / half > 0.02 {
        let p = phase(
            &fleet,
            c.server_pid,
            http::run_rate(&api, &spec, publishers, same, secs),
        )
        .await?;
        describe(&mut res, &label, &p);
        p
    } else {
        fixed
    };
    res.latency(
        &format!("{m}.same"),
        &format!("{label} latency"),
        &at_same.latency,
    );

    fleet.quit();
    res.finish(c.out.as_deref())?;
    Ok(res)
}

/// Personal push at the max sustained rate through `/v1/mesh/batch`.
async fn batch_phase(
    res: &mut RunResult,
    fleet: &Fleet,
    args: &FanoutArgs,
    api: &Api,
    spec: &Spec,
    secs: Duration,
) -> anyhow::Result<()> {
    let key = "personal.batch.publishes";
    let label = format!("personal batch-{} max:", args.batch);
    if api.kind != Kind::Connmix {
        res.na(key, &format!("{label} publishes/s"), "/s", "no batch API");
        return Ok(());
    }
    let run = batch::run_max(fleet, api, spec, args.batch_publishers, args.batch, secs);
    let p = phase(fleet, args.common.server_pid, run).await?;
    describe(res, &label, &p);
    res.metric(
        key,
        &format!("{label} publishes/s"),
        Some(p.outcome.rate()),
        "/s",
    );
    res.latency("personal.batch", &format!("{label} latency"), &p.latency);
    cpu_rows(res, "personal.batch", &label, &p.cpu);
    Ok(())
}

async fn connect_ws(api: &Api, n: usize) -> Result<Vec<WsApi>, String> {
    let mut v = Vec::new();
    for _ in 0..n.max(1) {
        v.push(WsApi::connect(api).await?);
    }
    Ok(v)
}
