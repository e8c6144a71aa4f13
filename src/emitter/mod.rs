//! Backends that push through a message queue, unchanged: python-socketio's
//! `RedisManager` / `KombuManager`, Flask-SocketIO's `message_queue=` and
//! Node's `@socket.io/redis-emitter` (`engine.emitters` in docs/config.md).
//!
//! Each entry gets one consumer task on every node ([`redis_consumer`] or
//! [`amqp_consumer`]) that reads the queue itself, decodes each message
//! ([`python`], [`socketio_redis`]) into a [`Command`] and hands it to the
//! [`SocketIoTarget`] (this node's Socket.IO server, [`socketio_target`]),
//! which delivers to this node's local sockets only ([`intake`]). So a message reaches each client once per cluster, and a
//! queue that is down is retried ([`backoff`]) without stopping anything.

pub mod amqp_consumer;
pub mod backoff;
pub mod command;
pub mod decode;
pub mod intake;
pub mod metrics;
pub mod python;
pub mod redis_consumer;
pub mod socketio_redis;
pub mod socketio_target;

pub use command::{Command, Emit, SocketIoTarget};
pub use metrics::EmitterMetrics;

use crate::config::EmitterConfig;
use intake::Intake;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Starts one consumer per entry of `engine.emitters`; they run until
/// `stop`. Returns each entry's intake (its name and counters).
pub fn spawn(
    emitters: &[EmitterConfig],
    target: Arc<dyn SocketIoTarget>,
    metrics: &EmitterMetrics,
    stop: &CancellationToken,
) -> Vec<Arc<Intake>> {
    emitters
        .iter()
        .enumerate()
        .map(|(i, cfg)| {
            let intake = Arc::new(Intake::new(
                format!("engine.emitters[{i}]"),
                cfg.kind,
                target.clone(),
                metrics.stats(i),
            ));
            let (cfg, stop, run) = (cfg.clone(), stop.clone(), intake.clone());
            if cfg.is_amqp() {
                tokio::spawn(amqp_consumer::run(run, cfg, stop));
            } else {
                tokio::spawn(redis_consumer::run(run, cfg, stop));
            }
            intake
        })
        .collect()
}
