//! The backend-facing API server on `engine.apiServer`: accepts HTTP/1.1
//! connections and serves them with [`http::handle`] (which upgrades
//! `/ws/v1` to the WebSocket API). On shutdown it stops accepting, lets
//! requests in flight finish and closes WebSocket API connections with 1001.
//!
//! Bounds on every API connection (README "Limits"): headers within
//! `readTimeout` (also the most a keep-alive connection may sit idle), a body
//! within `readTimeout` and `maxBodySize`, and no write stalled longer than
//! `writeTimeout` ([`stall`]; this covers `/ws/v1` after the upgrade too).

pub mod access;
pub mod batch;
pub mod history;
pub mod http;
pub mod lookup;
pub mod ops;
pub mod origin;
pub mod presence;
pub mod publish;
pub mod response;
pub mod stall;
pub mod web;
pub mod ws;

use crate::config::Config;
use crate::mesh::Mesh;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What every API request handler may use.
pub struct ApiState {
    pub mesh: Arc<Mesh>,
    pub config: Arc<Config>,
    pub access: Arc<access::Access>,
    /// Cancelled when the gateway stops (WebSocket API connections close).
    pub stop: CancellationToken,
    /// Every connection and upgraded socket, so shutdown can wait for them.
    pub tracker: TaskTracker,
}

/// Serves the API until `state.stop` is cancelled, then waits (up to
/// `drain`) for requests in flight.
pub async fn serve(listener: TcpListener, state: Arc<ApiState>, drain: Duration) {
    let api = &state.config.engine.api_server;
    let header_timeout = Duration::from_secs(api.read_timeout.max(1));
    let write_timeout = (api.write_timeout > 0).then(|| Duration::from_secs(api.write_timeout));
    loop {
        let accepted = tokio::select! {
            _ = state.stop.cancelled() => break,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("api accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let stream = stall::StallTimeout::new(
            stream,
            write_timeout,
            state.mesh.metrics.api_write_timeouts.clone(),
        );
        let conn_state = state.clone();
        let svc = hyper::service::service_fn(move |req| {
            let state = conn_state.clone();
            async move { Ok::<_, std::convert::Infallible>(http::handle(state, peer, req).await) }
        });
        let stop = state.stop.clone();
        state.tracker.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                tracing::debug!("api connection from {peer}: {e}");
            }
        });
    }
    drop(listener);
    state.tracker.close();
    let _ = tokio::time::timeout(drain, state.tracker.wait()).await;
}
