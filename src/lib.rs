//! connmix: a real-time push gateway. Clients hold WebSocket connections
//! driven by per-connection Lua hooks; backends publish over HTTP.
//!
//! [`Gateway::start`] is the one place that wires the parts together: the
//! hub and mesh (routing), the worker threads (Lua and client sockets), the
//! client listeners and the API server. Everything else is reached from here.

pub mod api;
pub mod broker;
pub mod client_id;
pub mod config;
pub mod emitter;
pub mod frame;
pub mod hub;
pub mod json_text;
pub mod jwt;
pub mod live;
pub mod logging;
pub mod lua;
pub mod mesh;
pub mod metrics;
pub mod outbox;
pub mod presence;
pub mod publication;
pub mod publish_once;
pub mod queue;
pub mod script;
pub mod socketio;
pub mod worker;
pub mod ws;

use config::Config;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use worker::WorkerHandle;
use ws::ServerShared;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        addr: String,
        key: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Script(#[from] lua::ScriptError),
    #[error("{0}")]
    Broker(#[from] broker::OpenError),
}

/// How a node reaches others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `dev` / `single`: the node is the whole mesh; no external service.
    Single,
    /// `engine`: nodes share a Redis broker (`engine.cluster`).
    Cluster,
}

/// A running gateway.
pub struct Gateway {
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
    api_task: JoinHandle<()>,
    workers: Arc<Vec<WorkerHandle>>,
    servers: Vec<Arc<ServerShared>>,
    mesh: Arc<mesh::Mesh>,
    socketio_rooms: Arc<socketio::target::SocketIoRooms>,
    shutdown_timeout: Duration,
    /// Where the API listens.
    pub api_addr: SocketAddr,
    /// Where each `engine.servers` entry listens, in order.
    pub server_addrs: Vec<SocketAddr>,
}

/// Pending connections the kernel keeps per listener: a reconnect storm after
/// a restart sends far more than the usual 128 at once.
const LISTEN_BACKLOG: u32 = 4096;

async fn bind(host: &str, port: u16, key: String) -> Result<TcpListener, StartError> {
    let addr = format!("{host}:{port}");
    let err = |source: std::io::Error| StartError::Bind {
        addr: addr.clone(),
        key: key.clone(),
        source,
    };
    let resolved = tokio::net::lookup_host(&addr)
        .await
        .map_err(err)?
        .next()
        .ok_or_else(|| err(std::io::Error::other("no address")))?;
    let socket = if resolved.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(resolved).map_err(err)?;
    socket.listen(LISTEN_BACKLOG).map_err(err)
}

impl Gateway {
    /// Starts every part; call from inside a multi-threaded tokio runtime.
    /// `set_level` lets a config reload change the log level.
    pub async fn start(
        config: Config,
        mode: Mode,
        set_level: Option<live::LevelSetter>,
    ) -> Result<Gateway, StartError> {
        let config = Arc::new(config);
        let metrics = Arc::new(metrics::Metrics::new());
        let clustered = mode == Mode::Cluster;
        let broker = broker::open(&config.engine, clustered, metrics.clone()).await?;
        let hub = Arc::new(hub::Hub::new(broker.node()));
        let qcfg = &config.engine.luavm.queue;
        let store = broker.clone().queue_store(queue::QueueLimits {
            topic_size: qcfg.topic_size,
            max_topics: qcfg.max_topics,
            depth: metrics.queue_depth.clone(),
        });
        let queues = Arc::new(queue::Queues::new(store));
        let mesh = Arc::new(mesh::Mesh::new(
            hub,
            metrics,
            queues,
            broker.clone(),
            config.engine.history.clone(),
        ));

        // Bind first so a taken port fails before any thread starts.
        let api = &config.engine.api_server;
        let api_listener = bind(&api.bind, api.port, "engine.apiServer.port".into()).await?;
        let mut listeners = Vec::new();
        for (i, s) in config.engine.servers.iter().enumerate() {
            listeners.push(bind(&s.bind, s.port, format!("engine.servers[{i}].port")).await?);
        }
        let servers: Vec<Arc<ServerShared>> = config
            .engine
            .servers
            .iter()
            .enumerate()
            .map(|(i, s)| Arc::new(ServerShared::new(i, s.clone())))
            .collect();
        let scripts = Arc::new(script::ScriptStore::load(&config)?);
        let workers = worker::spawn(
            config.worker_count(),
            config.clone(),
            scripts.clone(),
            mesh.clone(),
        )?;
        let workers = Arc::new(workers);

        let stop = CancellationToken::new();
        let api_addr = api_listener
            .local_addr()
            .expect("bound socket has an address");
        let mut server_addrs = Vec::new();
        let mut tasks = Vec::new();
        let socketio_rooms = Arc::new(socketio::target::SocketIoRooms::new(mesh.clone()));
        // Backends' emits (`engine.emitters`) go to this node's Socket.IO sockets.
        emitter::spawn(
            &config.engine.emitters,
            socketio_rooms.clone(),
            &mesh.metrics.emitters,
            &stop,
        );
        for (i, l) in listeners.into_iter().enumerate() {
            let addr = l.local_addr().expect("bound socket has an address");
            let cfg = &config.engine.servers[i];
            tracing::info!(
                "{} server {} on {}://{addr}{} (entry {})",
                cfg.protocol,
                i,
                if cfg.is_engineio() { "http" } else { "ws" },
                cfg.path(),
                config.resolve_entry(&cfg.entry).display()
            );
            server_addrs.push(addr);
            tasks.push(if cfg.is_engineio() {
                tokio::spawn(socketio::accept_loop(
                    l,
                    Arc::new(socketio::SioShared::new(
                        servers[i].clone(),
                        socketio_rooms.clone(),
                    )),
                    workers.clone(),
                    stop.clone(),
                ))
            } else {
                tokio::spawn(ws::accept_loop(
                    l,
                    servers[i].clone(),
                    workers.clone(),
                    stop.clone(),
                ))
            });
        }
        tracing::info!("api server on http://{api_addr}");
        let shutdown_timeout = Duration::from_secs(config.engine.shutdown_timeout.max(1));
        let access = Arc::new(api::access::Access::new(config.access.users.clone()));
        if access.is_open() && api_addr.ip().is_loopback() {
            tracing::info!(
                "access.users is empty: the API on {api_addr} is open to processes on this machine"
            );
        } else if access.is_open() {
            tracing::warn!(
                "access.users is empty: the API on {api_addr} is open to anyone who can reach it"
            );
        }
        live::spawn_watcher(config.clone(), access.clone(), set_level, stop.clone());
        scripts.spawn_watcher(stop.clone());
        broker.start(mesh.local(), stop.clone());
        let api_state = Arc::new(api::ApiState {
            mesh: mesh.clone(),
            config: config.clone(),
            access,
            stop: stop.clone(),
            tracker: tokio_util::task::TaskTracker::new(),
        });
        let api_task = tokio::spawn(api::serve(api_listener, api_state, shutdown_timeout));
        Ok(Gateway {
            stop,
            tasks,
            api_task,
            workers,
            servers,
            mesh,
            socketio_rooms,
            shutdown_timeout,
            api_addr,
            server_addrs,
        })
    }

    /// This node's Socket.IO sockets by namespace, room and sid: where
    /// backends' emits (`engine.emitters`) are delivered.
    pub fn socketio_rooms(&self) -> &Arc<socketio::target::SocketIoRooms> {
        &self.socketio_rooms
    }

    /// The routing core, for embedding and tests.
    pub fn mesh(&self) -> &Arc<mesh::Mesh> {
        &self.mesh
    }

    /// Stops accepting, lets API requests in flight finish, closes every
    /// client with 1001 (running `on_close`), and returns when all is done
    /// or `engine.shutdownTimeout` has passed.
    pub async fn shutdown(self) {
        let deadline = tokio::time::Instant::now() + self.shutdown_timeout;
        self.stop.cancel();
        self.mesh.leave().await;
        for t in self.tasks {
            let _ = t.await;
        }
        self.mesh.hub.close_all(1001, "server shutting down");
        let open = || {
            self.servers
                .iter()
                .map(|s| s.active.load(std::sync::atomic::Ordering::Acquire))
                .sum::<usize>()
        };
        while open() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let _ = tokio::time::timeout_at(deadline, self.api_task).await;
        if open() > 0 {
            tracing::warn!("shutdown timeout: {} connections still open", open());
            return;
        }
        if let Ok(workers) = Arc::try_unwrap(self.workers) {
            // A plain thread, not `spawn_blocking`: dropping the runtime waits
            // for blocking tasks, so a worker that never ends would keep the
            // process alive past the deadline.
            let (tx, joined) = tokio::sync::oneshot::channel();
            std::thread::spawn(move || {
                for w in workers {
                    w.join();
                }
                let _ = tx.send(());
            });
            if tokio::time::timeout_at(deadline, joined).await.is_err() {
                tracing::warn!("shutdown timeout: worker threads still running");
            }
        }
    }
}
