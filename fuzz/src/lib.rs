//! What the fuzz targets share: one single-node gateway core (hub, mesh,
//! local queues, API state with the default config) and a way to put raw
//! bytes through the real API router (`connmix::api::http::handle`) over an
//! in-memory socket, so a target exercises exactly what a network client
//! reaches: hyper's parsing, access and origin checks, body reading, the
//! JSON parsing and validation in `api::ops`, and the mesh behind it.

use connmix::api::{ApiState, access::Access};
use connmix::broker::{Broker, memory::MemoryBroker};
use connmix::config::Config;
use connmix::hub::Hub;
use connmix::mesh::Mesh;
use connmix::metrics::Metrics;
use connmix::queue::{QueueLimits, Queues};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use tokio::io::DuplexStream;
use tokio::runtime::Runtime;

/// The runtime every target runs on (one thread: reproducible runs).
pub fn runtime() -> &'static Runtime {
    static RT: OnceLock<Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// The API state shared by all runs: default config, open API, no clients.
pub fn api_state() -> Arc<ApiState> {
    static STATE: OnceLock<Arc<ApiState>> = OnceLock::new();
    STATE
        .get_or_init(|| {
            let config = Arc::new(Config::default());
            let metrics = Arc::new(Metrics::new());
            let qcfg = &config.engine.luavm.queue;
            let broker =
                MemoryBroker::new(1, metrics.clone(), config.engine.idempotency_max_keys);
            let store = broker.clone().queue_store(QueueLimits {
                topic_size: qcfg.topic_size,
                max_topics: qcfg.max_topics,
                depth: metrics.queue_depth.clone(),
            });
            let queues = Arc::new(Queues::new(store));
            let mesh = Arc::new(Mesh::new(
                Arc::new(Hub::new(1)),
                metrics,
                queues,
                broker,
                config.engine.history.clone(),
            ));
            Arc::new(ApiState {
                mesh,
                access: Arc::new(Access::new(Vec::new())),
                config,
                stop: tokio_util::sync::CancellationToken::new(),
                tracker: tokio_util::task::TaskTracker::new(),
            })
        })
        .clone()
}

/// Serves one API connection on `server` (a task on the current runtime);
/// the other end of the duplex is the client's.
pub fn serve_api(server: DuplexStream) {
    let state = api_state();
    let peer: SocketAddr = "127.0.0.1:40000".parse().expect("address");
    let svc = hyper::service::service_fn(move |req| {
        let state = state.clone();
        async move {
            Ok::<_, std::convert::Infallible>(connmix::api::http::handle(state, peer, req).await)
        }
    });
    tokio::spawn(async move {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(server), svc)
            .with_upgrades()
            .await;
    });
}
