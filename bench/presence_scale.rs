//! How long one node takes to answer presence for a channel with many
//! subscribers: the hub's one pass over the channel (client ids and distinct
//! users) and the JSON answer `/v1/presence` writes, without sockets (one
//! process cannot hold 100,000 sockets under this machine's 20,000
//! descriptor limit; the pass does not touch them).
//!
//!     cargo bench --bench presence_scale [-- <subscribers> <users>]
//!
//! Defaults: 100,000 subscribers, 50,000 distinct users (two connections
//! each). Prints the median and the slowest of 21 runs per answer kind.

use connmix::hub::{Client, Hub};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn time<T>(runs: usize, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    let mut all: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(f());
            t.elapsed()
        })
        .collect();
    all.sort();
    (all[runs / 2], all[runs - 1])
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .map(|a| a.parse::<usize>().expect("numbers: <subscribers> <users>"));
    let n = args.next().unwrap_or(100_000);
    let users = args.next().unwrap_or(50_000).max(1);
    let hub = Hub::new(1);
    for i in 0..n {
        let c = Arc::new(Client::new(hub.next_id(), 0, (1024, 4 << 20), 100));
        c.set_user(Some(Arc::from((i % users).to_string())));
        hub.register(c.clone());
        hub.subscribe(&c, "room").unwrap();
    }
    let full = time(21, || {
        let p = hub.presence("room", true);
        let clients: Vec<String> = p.clients.iter().map(u64::to_string).collect();
        let users: Vec<&str> = p.users.iter().map(|u| &**u).collect();
        serde_json::json!({"count": p.count, "clients": clients, "users": users}).to_string()
    });
    let stats = time(21, || {
        let p = hub.presence("room", false);
        serde_json::json!({"count": p.count, "users": p.users.len()}).to_string()
    });
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("presence of one channel: {n} subscribers, {users} distinct users");
    println!(
        "  /v1/presence answer (ids, users, JSON): median {:.1} ms, max {:.1} ms",
        ms(full.0),
        ms(full.1)
    );
    println!(
        "  /v1/presence/stats answer (counts):     median {:.1} ms, max {:.1} ms",
        ms(stats.0),
        ms(stats.1)
    );
}
