//! Prometheus metrics: the names of `docs/metrics.md`.
//!
//! One [`Metrics`] per gateway, created at start and shared by reference.
//! Label values are resolved once here so the hot path only does an atomic
//! add. Rendering to the text format lives here too; serving it over HTTP is
//! the API's business.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// How many recent Lua errors are kept for the console.
const RECENT_ERRORS: usize = 50;

/// Labelled families announced (HELP and TYPE) before their first sample.
const ANNOUNCED: &[(&str, &str, &str)] = &[(
    "connmix_queue_depth",
    "Messages waiting in a mix.queue topic.",
    "gauge",
)];

/// One Lua error, as the operator console lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LuaErrorRecord {
    /// Unix time in seconds.
    pub at: u64,
    pub client_id: String,
    pub hook: String,
    pub location: String,
    pub message: String,
}

/// Every metric the gateway exports, with its hot-path handles.
pub struct Metrics {
    registry: Registry,
    recent_lua_errors: parking_lot::Mutex<std::collections::VecDeque<LuaErrorRecord>>,
    pub clients: IntGauge,
    pub channels: IntGauge,
    pub read_messages: IntCounter,
    pub send_messages: IntCounter,
    pub send_errors: IntCounter,
    pub send_local: Histogram,
    pub send_forward: Histogram,
    pub lua_errors: IntCounter,
    pub hook_duration: HistogramVec,
    /// Resolved handles of `hook_duration` for the hooks every script has.
    known_hooks: Vec<(&'static str, Histogram)>,
    pub slow_clients_closed: IntCounter,
    /// Panics caught in connection tasks (each one a bug to report).
    pub connection_panics: IntCounter,
    /// API connections closed because a write stalled past `writeTimeout`.
    pub api_write_timeouts: IntCounter,
    /// `/ws/v1` connections closed for a frame over `maxBodySize`.
    pub api_frames_refused: IntCounter,
    pub connections_refused: IntCounterVec,
    pub queue_depth: IntGaugeVec,
    pub api_requests: IntCounterVec,
    /// Resolved success counters of `api_requests` for the busy routes (a
    /// publish is counted without hashing its labels).
    known_api_ok: Vec<(&'static str, IntCounter)>,
    pub nodes: IntGauge,
    /// Lua heap bytes and VMs per worker.
    pub lua_memory: IntGaugeVec,
    pub lua_vms: IntGaugeVec,
    pub broker_up: IntGauge,
    /// `engine.emitters` consumers (`connmix_emitter_*`).
    pub emitters: crate::emitter::EmitterMetrics,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| {
            registry.register(c).expect("metric names are unique");
        };
        let clients = IntGauge::new(
            "connmix_engine_servers_clients",
            "Client connections open on this node.",
        )
        .unwrap();
        reg(Box::new(clients.clone()));
        let channels = IntGauge::new(
            "connmix_engine_channels",
            "Channels with at least one subscriber on this node.",
        )
        .unwrap();
        reg(Box::new(channels.clone()));
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).unwrap();
            reg(Box::new(c.clone()));
            c
        };
        let read = counter_vec(
            "connmix_engine_servers_read_messages_total",
            "Messages received from clients.",
            &["protocol"],
        );
        let send = counter_vec(
            "connmix_engine_servers_send_messages_total",
            "Messages written to clients.",
            &["protocol"],
        );
        let send_err = counter_vec(
            "connmix_engine_servers_send_errors_total",
            "Messages that could not be queued or written to a client.",
            &["protocol"],
        );
        let send_duration = HistogramVec::new(
            HistogramOpts::new(
                "connmix_engine_servers_send_duration_seconds",
                "Time to route a publish or send: local fan-out, or forwarded through the broker.",
            )
            .buckets(vec![
                0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                0.5, 1.0,
            ]),
            &["protocol", "scenario"],
        )
        .unwrap();
        reg(Box::new(send_duration.clone()));
        let lua_errors = counter_vec(
            "connmix_lua_errors_total",
            "Errors raised by Lua hooks (including runaway hooks aborted).",
            &[],
        );
        let hook_duration = HistogramVec::new(
            HistogramOpts::new(
                "connmix_lua_hook_duration_seconds",
                "Wall time of Lua hook calls, waits included.",
            )
            .buckets(vec![
                0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
            ]),
            &["hook"],
        )
        .unwrap();
        reg(Box::new(hook_duration.clone()));
        let slow = counter_vec(
            "connmix_slow_clients_closed_total",
            "Clients closed because their outbound queue overflowed or a write stalled.",
            &[],
        );
        let panics = counter_vec(
            "connmix_connection_panics_total",
            "Panics caught in client connection tasks (the client was closed and on_close ran).",
            &[],
        );
        let api_write_timeouts = counter_vec(
            "connmix_api_write_timeouts_total",
            "API connections (HTTP and /ws/v1) closed because a write stalled longer than apiServer.writeTimeout.",
            &[],
        );
        let api_frames_refused = counter_vec(
            "connmix_api_frames_refused_total",
            "/ws/v1 connections closed (1009) for a frame over apiServer.maxBodySize.",
            &[],
        );
        let refused = counter_vec(
            "connmix_connections_refused_total",
            "Handshakes refused, by reason.",
            &["reason"],
        );
        // Exported at 0 from the start, not after the first refusal.
        for reason in ["max_connections", "on_handshake"] {
            refused.with_label_values(&[reason]);
        }
        let queue_depth = IntGaugeVec::new(
            Opts::new(
                "connmix_queue_depth",
                "Messages waiting in a mix.queue topic.",
            ),
            &["topic"],
        )
        .unwrap();
        reg(Box::new(queue_depth.clone()));
        let lua_memory = IntGaugeVec::new(
            Opts::new("connmix_lua_memory_bytes", "Lua heap in use, per worker."),
            &["worker"],
        )
        .unwrap();
        reg(Box::new(lua_memory.clone()));
        let lua_vms = IntGaugeVec::new(
            Opts::new("connmix_lua_vms", "Lua VMs open, per worker."),
            &["worker"],
        )
        .unwrap();
        reg(Box::new(lua_vms.clone()));
        let api_requests = counter_vec(
            "connmix_api_requests_total",
            "API requests by path and outcome code (0 = success).",
            &["path", "code"],
        );
        let known_api_ok = [
            "/v1/mesh/publish",
            "/v1/mesh/send",
            "ws:mesh.publish",
            "ws:mesh.send",
        ]
        .into_iter()
        .map(|path| (path, api_requests.with_label_values(&[path, "0"])))
        .collect();
        let nodes =
            IntGauge::new("connmix_cluster_nodes", "Live nodes this node knows of.").unwrap();
        reg(Box::new(nodes.clone()));
        let broker_up = IntGauge::new(
            "connmix_broker_up",
            "1 when the broker link is connected (always 1 for the in-process broker).",
        )
        .unwrap();
        reg(Box::new(broker_up.clone()));
        Self {
            clients,
            channels,
            read_messages: read.with_label_values(&["websocket"]),
            send_messages: send.with_label_values(&["websocket"]),
            send_errors: send_err.with_label_values(&["websocket"]),
            send_local: send_duration.with_label_values(&["websocket", "local"]),
            send_forward: send_duration.with_label_values(&["websocket", "forward"]),
            lua_errors: lua_errors.with_label_values(&[] as &[&str]),
            known_hooks: ["on_message", "on_handshake", "on_close", "on_connect"]
                .into_iter()
                .map(|h| (h, hook_duration.with_label_values(&[h])))
                .collect(),
            hook_duration,
            slow_clients_closed: slow.with_label_values(&[] as &[&str]),
            connection_panics: panics.with_label_values(&[] as &[&str]),
            api_write_timeouts: api_write_timeouts.with_label_values(&[] as &[&str]),
            api_frames_refused: api_frames_refused.with_label_values(&[] as &[&str]),
            connections_refused: refused,
            queue_depth,
            api_requests,
            known_api_ok,
            nodes,
            lua_memory,
            lua_vms,
            broker_up,
            emitters: crate::emitter::EmitterMetrics::register(&registry),
            registry,
            recent_lua_errors: Default::default(),
        }
    }

    /// Records how long a hook call took.
    pub fn observe_hook(&self, hook: &str, seconds: f64) {
        match self.known_hooks.iter().find(|(h, _)| *h == hook) {
            Some((_, hist)) => hist.observe(seconds),
            None => self
                .hook_duration
                .with_label_values(&[hook])
                .observe(seconds),
        }
    }

    /// Counts one API request on `route` (a path, or `ws:` and a method)
    /// with its outcome `code` (0 = success).
    pub fn count_api_request(&self, route: &str, code: u32) {
        if code == 0
            && let Some((_, c)) = self.known_api_ok.iter().find(|(r, _)| *r == route)
        {
            return c.inc();
        }
        self.api_requests
            .with_label_values(&[route, &code.to_string()])
            .inc();
    }

    /// Counts a Lua error and keeps it among the recent ones.
    pub fn record_lua_error(&self, record: LuaErrorRecord) {
        self.lua_errors.inc();
        let mut q = self.recent_lua_errors.lock();
        if q.len() == RECENT_ERRORS {
            q.pop_front();
        }
        q.push_back(record);
    }

    /// The most recent Lua errors, oldest first.
    pub fn recent_lua_errors(&self) -> Vec<LuaErrorRecord> {
        self.recent_lua_errors.lock().iter().cloned().collect()
    }

    /// The whole registry in Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        let _ = TextEncoder::new().encode(&families, &mut buf);
        let mut text = String::from_utf8(buf).unwrap_or_default();
        // A labelled family without samples yet (no topic has been used)
        // is still announced, so dashboards find it from the start.
        for (name, help, kind) in ANNOUNCED.iter().chain(&crate::emitter::metrics::FAMILIES) {
            if !families.iter().any(|f| f.name() == *name) {
                text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            }
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_requests_are_counted_by_route_and_code() {
        let m = Metrics::new();
        m.count_api_request("/v1/mesh/publish", 0);
        m.count_api_request("/v1/mesh/publish", 0);
        m.count_api_request("/v1/mesh/publish", 101);
        m.count_api_request("/v1/presence", 0);
        let count = |route, code| m.api_requests.with_label_values(&[route, code]).get();
        assert_eq!(count("/v1/mesh/publish", "0"), 2);
        assert_eq!(count("/v1/mesh/publish", "101"), 1);
        assert_eq!(count("/v1/presence", "0"), 1);
        assert_eq!(count("ws:mesh.publish", "0"), 0);
    }
}
