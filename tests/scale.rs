//! Many connections on one worker: thousands of clients, each with its own
//! Lua environment and many of them suspended in a hook at the same time,
//! all served by a single worker thread (`workers: 1`).

mod common;

use common::*;
use serde_json::json;

/// Above what one LuaJIT VM can hold as live handles (8,000 slots): the
/// worker must spread them over several VMs.
const CLIENTS: usize = 8500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_connections_and_suspended_hooks_on_one_worker() {
    let gw = Gateway::start_with(
        vec![probe("/p", "").extra("maxConnections: 10000")],
        "  workers: 1\n  luavm:\n    waitContextTimeout: 2\n",
        "",
    )
    .await;
    let url = gw.url(0);
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        clients.push(Client::connect(&url).await);
    }
    // Every one of them has a working environment of its own.
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(&format!("mine = {i} return mine")).await;
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.recv_json().await["r"], i, "client {i}");
    }
    // All of them wait in a hook at once; a newcomer is still served...
    for c in clients.iter_mut() {
        c.send("return (...):wait_context_value('never')").await;
    }
    let mut fresh = Client::connect(&url).await;
    assert_eq!(fresh.eval("return 40 + 2").await["r"], 42);
    // ...and every waiting hook ends with its timeout, none lost.
    for c in clients.iter_mut() {
        assert_eq!(c.recv_json().await, json!({"e": "timeout"}));
    }
    let log = gw.log();
    assert!(
        !log.contains("lua error"),
        "{}",
        log.lines().find(|l| l.contains("lua error")).unwrap_or("")
    );
}
