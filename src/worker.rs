//! Worker threads: each runs a current-thread tokio runtime, a `LocalSet` and
//! one Lua VM, and owns the connections handed to it.
//!
//! The rule is simple: a connection lives and dies on the worker that
//! accepted it, so its Lua state never crosses threads. The accept loops pick
//! the least-loaded worker and pass it the raw socket through a channel.

use crate::config::Config;
use crate::lua::ScriptError;
use crate::lua::pool::VmPool;
use crate::mesh::Mesh;
use crate::script::ScriptStore;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;

/// A connection's whole life as one task on the worker's thread.
pub type ConnTask = Pin<Box<dyn Future<Output = ()>>>;

/// A job for a worker: builds the task that serves one accepted connection
/// (the client servers hand these over; the worker knows nothing of what
/// the task does).
pub struct Job(Box<dyn FnOnce(Rc<WorkerState>) -> ConnTask + Send>);

impl Job {
    pub fn new(f: impl FnOnce(Rc<WorkerState>) -> ConnTask + Send + 'static) -> Self {
        Job(Box::new(f))
    }
}

/// What a worker's connections share on its thread.
pub struct WorkerState {
    pub vms: Rc<VmPool>,
    pub mesh: Arc<Mesh>,
}

/// Counts a connection in its worker's load for exactly as long as its task
/// lives, however the task ends (a panic included).
struct LoadGuard(Arc<AtomicUsize>);

impl LoadGuard {
    fn new(load: &Arc<AtomicUsize>) -> Self {
        load.fetch_add(1, Ordering::Relaxed);
        Self(load.clone())
    }
}

impl Drop for LoadGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The accept side's handle on a worker.
pub struct WorkerHandle {
    tx: mpsc::UnboundedSender<Job>,
    load: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl WorkerHandle {
    /// Connections this worker holds now.
    pub fn load(&self) -> usize {
        self.load.load(Ordering::Relaxed)
    }

    pub fn submit(&self, job: Job) -> bool {
        self.tx.send(job).is_ok()
    }

    /// Waits for the thread to end (after its job channel is closed).
    pub fn join(mut self) {
        drop(self.tx);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts `n` workers; fails if any cannot compile the entry scripts.
pub fn spawn(
    n: usize,
    config: Arc<Config>,
    scripts: Arc<ScriptStore>,
    mesh: Arc<Mesh>,
) -> Result<Vec<WorkerHandle>, ScriptError> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let load = Arc::new(AtomicUsize::new(0));
        let (config, mesh, load2) = (config.clone(), mesh.clone(), load.clone());
        let scripts = scripts.clone();
        let thread = std::thread::Builder::new()
            .name(format!("connmix-worker-{i}"))
            .stack_size(crate::lua::budget::WORKER_STACK_BYTES)
            .spawn(move || run(i, rx, ready_tx, config, scripts, mesh, load2))
            .expect("spawn worker thread");
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                drop(tx);
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                return Err(ScriptError::Compile(format!("worker {i} failed to start")));
            }
        }
        out.push(WorkerHandle {
            tx,
            load,
            thread: Some(thread),
        });
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn run(
    index: usize,
    mut rx: mpsc::UnboundedReceiver<Job>,
    ready: std::sync::mpsc::Sender<Result<(), ScriptError>>,
    config: Arc<Config>,
    scripts: Arc<ScriptStore>,
    mesh: Arc<Mesh>,
    load: Arc<AtomicUsize>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(ScriptError::Compile(format!("runtime: {e}"))));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let http = reqwest::Client::builder()
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        let vms = match VmPool::new(mesh.clone(), config.clone(), http, scripts) {
            Ok(p) => p,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let state = Rc::new(WorkerState { vms, mesh });
        let _ = ready.send(Ok(()));
        spawn_lua_gauges(index, &state);
        while let Some(Job(make)) = rx.recv().await {
            let guard = LoadGuard::new(&load);
            let task = make(state.clone());
            tokio::task::spawn_local(async move {
                let _load = guard;
                task.await;
            });
        }
        // The job channel closed: the gateway is stopping. Connections were
        // asked to close; give them until they are gone.
        while load.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
}

/// Publishes this worker's Lua heap size and VM count every few seconds.
fn spawn_lua_gauges(index: usize, state: &Rc<WorkerState>) {
    let state = Rc::downgrade(state);
    let label = index.to_string();
    tokio::task::spawn_local(async move {
        loop {
            let Some(s) = state.upgrade() else { return };
            let m = &s.mesh.metrics;
            m.lua_memory
                .with_label_values(&[&label])
                .set(s.vms.used_memory() as i64);
            m.lua_vms
                .with_label_values(&[&label])
                .set(s.vms.len() as i64);
            drop(s);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
}
