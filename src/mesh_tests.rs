//! The mesh's subscription ordering, proven by forcing the interleaving: a
//! fake broker records interest changes in the order it gets them, and a
//! test-only pause point holds one worker between its hub change and its
//! broker call while another worker joins the same channel.

use super::*;
use crate::broker::RemoteDelivery;
use crate::queue::{QueueLimits, QueueStore};
use std::collections::HashSet;
use std::sync::mpsc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where the mesh calls the test's pause hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// The hub changed; the broker has not been told yet.
    HubChanged { joined: bool },
    /// The channel's lock is held by another worker; about to wait for it.
    Contended,
}

/// Applies interest changes in call order, as a broker's link would.
#[derive(Default)]
struct FakeBroker {
    interest: parking_lot::Mutex<HashSet<String>>,
}

impl Broker for FakeBroker {
    fn node(&self) -> u32 {
        1
    }
    fn start(self: Arc<Self>, _: Arc<dyn Local>, _: CancellationToken) {}
    fn queue_store(self: Arc<Self>, limits: QueueLimits) -> Arc<dyn QueueStore> {
        Arc::new(crate::queue::local::LocalQueues::new(limits))
    }
    fn history(
        self: Arc<Self>,
        list: &[crate::config::HistoryConfig],
    ) -> Arc<dyn crate::broker::history::History> {
        crate::broker::memory_history::MemoryHistory::new(list)
    }
    fn publish<'a>(&'a self, _: &'a Publication) -> Option<BoxFuture<'a, RemoteDelivery>> {
        None
    }
    fn send<'a>(&'a self, id: ClientId, _: &Message) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move { Err(BrokerError::UnknownClient(id.to_string())) })
    }
    fn call<'a>(
        &'a self,
        id: ClientId,
        _: CallFunc,
        _: Vec<serde_json::Value>,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move { Err(BrokerError::UnknownClient(id.to_string())) })
    }
    fn subscribe(&self, ch: &str) {
        self.interest.lock().insert(ch.to_string());
    }
    fn unsubscribe(&self, ch: &str) {
        self.interest.lock().remove(ch);
    }
    fn until_heard(&self) -> Option<BoxFuture<'static, ()>> {
        None
    }
    fn nodes(&self) -> Vec<NodeInfo> {
        Vec::new()
    }
    fn leave(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
    fn presence<'a>(&'a self, _: &'a str, _: bool) -> Option<BoxFuture<'a, Presence>> {
        None
    }
    fn claim<'a>(&'a self, _: &'a str, _: &'a str, _: Duration) -> BoxFuture<'a, Claim> {
        Box::pin(async { Claim::First })
    }
    fn settle<'a>(&'a self, _: &'a str, _: &'a str, _: String, _: Duration) -> BoxFuture<'a, ()> {
        Box::pin(async {})
    }
}

fn mesh() -> (Arc<Mesh>, Arc<FakeBroker>) {
    let metrics = Arc::new(Metrics::new());
    let broker = Arc::new(FakeBroker::default());
    let store = broker.clone().queue_store(QueueLimits {
        topic_size: 10,
        max_topics: 10,
        depth: metrics.queue_depth.clone(),
    });
    let mesh = Mesh::new(
        Arc::new(Hub::new(1)),
        metrics,
        Arc::new(Queues::new(store)),
        broker.clone(),
        Vec::new(),
    );
    (Arc::new(mesh), broker)
}

fn client(mesh: &Mesh) -> Arc<Client> {
    let c = Arc::new(Client::new(mesh.hub.next_id(), 0, (8, 1 << 20), 16));
    mesh.register(c.clone());
    c
}

#[derive(Debug, PartialEq)]
enum Event {
    /// The leaving worker is paused between its hub change and the broker.
    LeavePaused,
    /// The joining worker is waiting for the channel's lock.
    JoinWaiting,
    /// The joining worker finished its subscribe.
    JoinDone,
}

/// Worker 1 makes channel `x` lose its last subscriber (`leave`) and is
/// held right after the hub change; worker 2 then joins `x` as its first
/// subscriber. Worker 1 is let go once worker 2 has either finished (the
/// old ordering) or is waiting for the channel's lock. The broker must end
/// up hearing exactly the channels the hub has.
fn last_leave_races_first_join(leave: impl FnOnce(&Mesh, &Client) + Send + 'static) {
    let (mesh, broker) = mesh();
    let (a, b) = (client(&mesh), client(&mesh));
    mesh.subscribe(&a, "x").unwrap();
    assert!(broker.interest.lock().contains("x"));

    let (events, seen) = mpsc::channel::<Event>();
    let (release, released) = mpsc::channel::<()>();
    let released = parking_lot::Mutex::new(released);
    let hook_events = parking_lot::Mutex::new(events.clone());
    let _ = mesh.pause.set(Box::new(move |at| match at {
        Point::HubChanged { joined: false } => {
            hook_events.lock().send(Event::LeavePaused).unwrap();
            released
                .lock()
                .recv_timeout(Duration::from_secs(60))
                .unwrap();
        }
        Point::Contended => hook_events.lock().send(Event::JoinWaiting).unwrap(),
        Point::HubChanged { joined: true } => {}
    }));

    let m1 = mesh.clone();
    let worker1 = std::thread::spawn(move || leave(&m1, &a));
    let wait = Duration::from_secs(60);
    assert_eq!(seen.recv_timeout(wait).unwrap(), Event::LeavePaused);
    let m2 = mesh.clone();
    let worker2 = std::thread::spawn(move || {
        m2.subscribe(&b, "x").unwrap();
        events.send(Event::JoinDone).unwrap();
    });
    let first = seen.recv_timeout(wait).unwrap();
    assert!(matches!(first, Event::JoinWaiting | Event::JoinDone));
    release.send(()).unwrap();
    worker1.join().unwrap();
    worker2.join().unwrap();

    let hub: HashSet<String> = mesh.hub.channel_names().into_iter().collect();
    assert_eq!(hub, HashSet::from(["x".to_string()]));
    assert_eq!(
        *broker.interest.lock(),
        hub,
        "the broker must hear every channel with a local subscriber"
    );
}

#[test]
fn an_unsubscribe_racing_a_first_join_leaves_the_channel_heard() {
    last_leave_races_first_join(|m, c| m.unsubscribe(c, "x"));
}

#[test]
fn a_close_racing_a_first_join_leaves_the_channel_heard() {
    last_leave_races_first_join(|m, c| m.unregister(c));
}

#[test]
fn churn_on_many_threads_ends_with_the_broker_matching_the_hub() {
    let (mesh, broker) = mesh();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let mesh = mesh.clone();
            std::thread::spawn(move || {
                for round in 0..2_000usize {
                    let c = client(&mesh);
                    for ch in 0..4 {
                        mesh.subscribe(&c, &format!("c{}", (round + ch + t) % 8))
                            .unwrap();
                    }
                    if round.is_multiple_of(2) {
                        mesh.unsubscribe(&c, &format!("c{}", (round + t) % 8));
                    }
                    // Every thread's last client stays subscribed.
                    if round < 1_999 {
                        mesh.unregister(&c);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let hub: HashSet<String> = mesh.hub.channel_names().into_iter().collect();
    assert!(!hub.is_empty());
    assert_eq!(*broker.interest.lock(), hub);
}
