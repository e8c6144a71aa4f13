//! Tests of the hub: first/last subscriber, limits, delivery counts, and
//! presence's user counts (exact through growth, user changes, shrinking
//! and a user change racing the counts' build).

use super::*;

fn client(hub: &Hub) -> Arc<Client> {
    let c = Arc::new(Client::new(hub.next_id(), 0, (8, 1 << 20), 3));
    hub.register(c.clone());
    c
}

#[test]
fn ids_name_their_node() {
    let hub = Hub::new(7);
    assert_eq!(client_id::node_of(hub.next_id()), 7);
}

#[test]
fn first_and_last_subscriber_are_reported() {
    let hub = Hub::new(1);
    let (a, b) = (client(&hub), client(&hub));
    assert_eq!(hub.subscribe(&a, "x"), Ok(true));
    assert_eq!(hub.subscribe(&b, "x"), Ok(false));
    assert!(!hub.unsubscribe(&a, "x"));
    assert!(hub.unsubscribe(&b, "x"));
    assert_eq!(hub.channel_count(), 0);
}

#[test]
fn unregister_leaves_every_channel() {
    let hub = Hub::new(1);
    let a = client(&hub);
    hub.subscribe(&a, "x").unwrap();
    hub.subscribe(&a, "y").unwrap();
    let held = hub.unregister(&a);
    assert_eq!(held.len(), 2);
    assert!(held.iter().all(|ch| hub.leave(ch, a.id)));
    assert_eq!(hub.channel_count(), 0);
    assert_eq!(hub.client_count(), 0);
    assert_eq!(hub.subscribe(&a, "z"), Err(SubscribeError::Gone));
}

#[test]
fn channel_limit_and_validation() {
    let hub = Hub::new(1);
    let a = client(&hub);
    for ch in ["a", "b", "c"] {
        hub.subscribe(&a, ch).unwrap();
    }
    assert_eq!(hub.subscribe(&a, "d"), Err(SubscribeError::TooMany(3)));
    assert!(matches!(
        hub.subscribe(&a, "has space"),
        Err(SubscribeError::InvalidChannel(_))
    ));
}

#[test]
fn presence_counts_each_user_once_and_follows_user_changes() {
    let hub = Hub::new(1);
    let (a, b, c) = (client(&hub), client(&hub), client(&hub));
    let user = |s: &str| Some(Arc::<str>::from(s));
    hub.set_user(&a, user("u1"));
    for x in [&a, &b, &c] {
        hub.subscribe(x, "x").unwrap();
    }
    hub.subscribe(&b, "y").unwrap();
    hub.set_user(&b, user("u1"));
    let sorted = |mut v: Vec<Arc<str>>| {
        v.sort();
        v
    };
    let p = hub.presence("x", true);
    assert_eq!((p.count, p.clients.len()), (3, 3));
    assert_eq!(sorted(p.users), vec![Arc::from("u1")]);
    // b becomes u2 in both its channels; a leaves; c's user is set.
    hub.set_user(&b, user("u2"));
    assert!(!hub.unsubscribe(&a, "x"));
    hub.set_user(&c, user("u3"));
    let p = hub.presence("x", false);
    assert_eq!((p.count, p.clients.len()), (2, 0));
    assert_eq!(sorted(p.users), vec![Arc::from("u2"), Arc::from("u3")]);
    assert_eq!(hub.presence("y", false).users, vec![Arc::from("u2")]);
    // A closed client's user stays as counted until it has left.
    let held = hub.unregister(&b);
    hub.set_user(&b, None);
    for ch in held {
        hub.leave(&ch, b.id);
    }
    assert_eq!(hub.presence("x", false).users, vec![Arc::from("u3")]);
    assert_eq!(hub.presence("y", false), Presence::default());
}

#[test]
fn a_large_channel_counts_users_and_they_stay_exact_as_it_changes() {
    let hub = Hub::new(1);
    let clients: Vec<Arc<Client>> = (0..200)
        .map(|_| {
            let c = Arc::new(Client::new(hub.next_id(), 0, (8, 1 << 20), 3));
            hub.register(c.clone());
            c
        })
        .collect();
    let user = |i: usize| Some(Arc::<str>::from(format!("u{}", i % 50)));
    // What presence must say: the distinct users of those still in.
    let expected = |members: &[usize], users: &[Option<Arc<str>>]| {
        let mut v: Vec<Arc<str>> = members.iter().filter_map(|&i| users[i].clone()).collect();
        v.sort();
        v.dedup();
        v
    };
    // The distinct users presence answers, once the counts (when kept)
    // are checked against the subscriptions one by one.
    let users_of = |hub: &Hub| {
        if let Some(subs) = hub.channels.get("big")
            && let Some(counts) = &subs.users
        {
            let mut recount = HashMap::new();
            for u in subs.clients.values().filter_map(|c| c.user()) {
                *recount.entry(u).or_insert(0u32) += 1;
            }
            assert_eq!(counts.count, recount);
        }
        let mut v = hub.presence("big", false).users;
        v.sort();
        v
    };
    let counted = |hub: &Hub| hub.channels.get("big").is_some_and(|s| s.users.is_some());
    let mut users: Vec<Option<Arc<str>>> = vec![None; 200];
    // Even clients have a user before they join, odd ones get it after.
    for (i, c) in clients.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        hub.set_user(c, user(i));
        users[i] = user(i);
    }
    let mut members = Vec::new();
    for (i, c) in clients.iter().enumerate().take(COUNT_USERS_FROM) {
        assert!(!counted(&hub), "counted from {i} subscribers");
        hub.subscribe(c, "big").unwrap();
        members.push(i);
    }
    assert!(counted(&hub));
    assert_eq!(users_of(&hub), expected(&members, &users));
    for (i, c) in clients.iter().enumerate().skip(COUNT_USERS_FROM) {
        hub.subscribe(c, "big").unwrap();
        members.push(i);
    }
    for (i, c) in clients.iter().enumerate().filter(|(i, _)| i % 2 == 1) {
        hub.set_user(c, user(i + 7));
        users[i] = user(i + 7);
    }
    assert_eq!(users_of(&hub), expected(&members, &users));
    // Users change and leave while counted, then below the drop mark.
    for i in (0..200).step_by(3) {
        hub.set_user(&clients[i], None);
        users[i] = None;
    }
    while members.len() > DROP_USER_COUNTS_BELOW {
        let i = members.pop().unwrap();
        hub.unsubscribe(&clients[i], "big");
        assert_eq!(users_of(&hub), expected(&members, &users));
        assert!(counted(&hub));
    }
    let i = members.pop().unwrap();
    hub.unsubscribe(&clients[i], "big");
    assert!(!counted(&hub));
    assert_eq!(users_of(&hub), expected(&members, &users));
}

/// `Hub::set_user` first changes the client's user, then each of its
/// channels; a channel may start counting in between. Forced here: the
/// counts are built between the two steps, then the second runs.
#[test]
fn a_user_change_racing_the_counts_being_built_is_counted_once() {
    let hub = Hub::new(1);
    let user = |s: &str| Some(Arc::<str>::from(s));
    let clients: Vec<Arc<Client>> = (0..COUNT_USERS_FROM)
        .map(|_| {
            let c = Arc::new(Client::new(hub.next_id(), 0, (8, 1 << 20), 3));
            hub.register(c.clone());
            c
        })
        .collect();
    let (racer, rest) = clients.split_first().unwrap();
    hub.set_user(racer, user("old"));
    hub.subscribe(racer, "big").unwrap();
    for c in &rest[1..] {
        hub.subscribe(c, "big").unwrap();
    }
    // Step one of set_user, then the join that makes "big" count.
    *racer.user.lock() = user("new");
    hub.subscribe(&rest[0], "big").unwrap();
    // Step two.
    hub.channels
        .get_mut("big")
        .unwrap()
        .set_user(racer.id, user("new"));
    let subs = hub.channels.get("big").unwrap();
    let counts = &subs.users.as_ref().expect("counted").count;
    assert_eq!(counts.len(), 1);
    assert_eq!(counts.get("new"), Some(&1));
}

#[test]
fn publish_counts_success_and_fail() {
    let hub = Hub::new(1);
    let a = client(&hub);
    hub.subscribe(&a, "x").unwrap();
    let m = Arc::new(Publication::new("x", tungstenite::Message::text("hi")));
    for _ in 0..8 {
        assert_eq!(hub.publish(&m).success, 1);
    }
    assert_eq!(
        hub.publish(&m),
        Delivery {
            success: 0,
            fail: 1
        }
    );
    let nobody = Arc::new(Publication::new("nobody", tungstenite::Message::text("hi")));
    assert_eq!(hub.publish(&nobody), Delivery::default());
}
