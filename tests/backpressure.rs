//! Slow clients: a client that stops reading during a broadcast storm is
//! closed as slow and counted, every other subscriber gets every message in
//! order, and the gateway's memory stays bounded.

mod common;

use common::*;

const SLOW: usize = 100;
const MESSAGES: usize = 600;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_closed_and_never_slow_the_others() {
    let gw = Gateway::start(vec![
        probe("/p", "")
            .extra("outboundQueueSize: 32")
            .extra("writeTimeout: 3")
            .extra("maxConnections: 1000"),
    ])
    .await;
    let url = gw.url(0);

    let mut slow = Vec::new();
    for _ in 0..SLOW {
        let mut c = Client::connect_small_buffer(&url).await;
        c.eval("return (...):subscribe('storm')").await;
        slow.push(c); // and never read again
    }
    let mut fast = Client::connect(&url).await;
    fast.eval("return (...):subscribe('storm')").await;

    // Lock-step: each message is published once the fast client has the
    // previous one, so "fast" never depends on how busy this machine is.
    let rss_before = rss_bytes(gw.pid());
    let pad = "x".repeat(16 * 1024);
    let mut failed = 0;
    for i in 0..MESSAGES {
        let (_, f) = gw.publish("storm", &format!("{i}|{pad}")).await;
        failed += f;
        let got = fast.recv().await;
        let n: usize = got.split('|').next().unwrap().parse().unwrap();
        assert_eq!(n, i, "in order, none lost");
    }
    assert!(failed > 0, "some publishes found slow clients' queues full");

    let closed = gw
        .wait_metric("connmix_slow_clients_closed_total", SLOW as f64)
        .await;
    assert_eq!(
        closed, SLOW as f64,
        "each slow client closed and counted once"
    );
    // Unbounded queues would hold 100 x 600 x 16 KiB frames (about 1 GB).
    let growth = rss_bytes(gw.pid()).saturating_sub(rss_before);
    assert!(growth < 200 << 20, "RSS grew by {} MiB", growth >> 20);

    // A slow client, when it finally reads, finds a 1013 close (or a reset
    // if the gateway gave up on a stalled write).
    let mut s = slow.pop().unwrap();
    if let Some((code, reason)) = s.closed().await {
        assert_eq!(code, 1013, "{reason}");
    }
    // Closing slow clients count as failures (`f`) until they are gone,
    // never as deliveries.
    assert_eq!(
        gw.publish("storm", "after").await.0,
        1,
        "only the fast client is delivered to"
    );
    assert_eq!(fast.recv().await, "after");
}
