//! Channel history on one node (`dev`/`single`): a bounded list of
//! publications per channel, kept in this process.
//!
//! A publish appends and fans out under its channel's lock, so offsets are
//! gap-free and every subscriber gets a channel's publications in offset
//! order. Bounds (README "Limits"): a channel keeps at most `historySize`
//! publications, all dropped `historyTtl` seconds after its last publish;
//! its position (epoch and top offset, about 100 bytes) is dropped
//! `metaTtl` seconds after its last publish or read, after which the
//! channel starts over with a new epoch. A sweep every [`sweep_every`]
//! frees what expired; a read never answers expired publications.

use super::BoxFuture;
use super::history::{
    Appended, Deliver, History, HistoryError, Page, Position, Publication, check_since, new_epoch,
};
use crate::config::HistoryConfig;
use dashmap::DashMap;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// One channel's history.
struct Stream {
    epoch: Arc<str>,
    top: u64,
    items: VecDeque<Arc<Publication>>,
    /// When the publications expire (`historyTtl` after the last publish).
    data_expires: Instant,
    /// When the position expires (`metaTtl` after the last use).
    meta_expires: Instant,
    /// Taken out of the map by the sweep: whoever holds it must look again.
    removed: bool,
}

impl Stream {
    fn new(policy: &HistoryConfig, now: Instant) -> Self {
        Self {
            epoch: new_epoch(),
            top: 0,
            items: VecDeque::new(),
            data_expires: now,
            meta_expires: now + Duration::from_secs(policy.meta_ttl),
            removed: false,
        }
    }

    /// Drops what expired by `now`.
    fn expire(&mut self, now: Instant) {
        if now >= self.data_expires {
            self.items = VecDeque::new();
        }
    }

    fn position(&self) -> Position {
        Position {
            offset: self.top,
            epoch: self.epoch.clone(),
        }
    }
}

/// See the module documentation.
pub struct MemoryHistory {
    streams: DashMap<Arc<str>, Arc<Mutex<Stream>>>,
}

/// How often the sweep runs: often enough that expired data does not
/// linger much past its TTL, seldom enough to cost nothing.
pub fn sweep_every(list: &[HistoryConfig]) -> Duration {
    let shortest = list.iter().map(|h| h.history_ttl).min().unwrap_or(60);
    Duration::from_secs((shortest / 2).clamp(1, 60))
}

impl MemoryHistory {
    /// The engine, with its sweep running on the current runtime (if any)
    /// for as long as the engine lives.
    pub fn new(list: &[HistoryConfig]) -> Arc<Self> {
        let this = Arc::new(Self {
            streams: DashMap::new(),
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&this);
            rt.spawn(sweep(weak, sweep_every(list)));
        }
        this
    }

    /// Channels with a position kept now.
    pub fn channel_count(&self) -> usize {
        self.streams.len()
    }

    /// The live stream of `ch`, locked; created (new epoch) when absent or
    /// its position expired.
    fn with_stream<T>(
        &self,
        ch: &str,
        policy: &HistoryConfig,
        f: impl FnOnce(&mut Stream, Instant) -> T,
    ) -> T {
        loop {
            let now = Instant::now();
            let s = self
                .streams
                .entry(Arc::from(ch))
                .or_insert_with(|| Arc::new(Mutex::new(Stream::new(policy, now))))
                .clone();
            let mut g = s.lock();
            if g.removed {
                continue;
            }
            if now >= g.meta_expires {
                *g = Stream::new(policy, now);
            }
            g.expire(now);
            g.meta_expires = now + Duration::from_secs(policy.meta_ttl);
            return f(&mut g, now);
        }
    }

    /// Drops expired data and positions (the sweep).
    pub fn sweep(&self) {
        let now = Instant::now();
        self.streams.retain(|_, s| {
            let mut g = s.lock();
            g.expire(now);
            if now >= g.meta_expires {
                g.removed = true;
                return false;
            }
            true
        });
    }
}

async fn sweep(engine: Weak<MemoryHistory>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        match engine.upgrade() {
            Some(e) => e.sweep(),
            None => return,
        }
    }
}

impl History for MemoryHistory {
    fn publish<'a>(
        &'a self,
        mut p: Publication,
        policy: &'a HistoryConfig,
        deliver: Deliver<'a>,
    ) -> BoxFuture<'a, Appended> {
        let ch = p.channel.clone();
        let out = self.with_stream(&ch, policy, |s, now| {
            s.top += 1;
            p.position = Some(s.position());
            let p = Arc::new(p);
            s.items.push_back(p.clone());
            while s.items.len() > policy.history_size {
                s.items.pop_front();
            }
            s.data_expires = now + Duration::from_secs(policy.history_ttl);
            // Under the lock: the next publish waits, so every subscriber
            // gets the channel's publications in offset order.
            let (success, fail) = deliver(&p);
            Appended {
                position: p.position.clone(),
                success,
                fail,
                ..Default::default()
            }
        });
        Box::pin(async move { out })
    }

    fn read<'a>(
        &'a self,
        ch: &'a str,
        since: Option<Position>,
        limit: usize,
        policy: &'a HistoryConfig,
    ) -> BoxFuture<'a, Result<Page, HistoryError>> {
        let out = self.with_stream(ch, policy, |s, _| {
            let top = s.position();
            let after = match &since {
                Some(since) => {
                    check_since(since, &top)?;
                    since.offset
                }
                None => 0,
            };
            let first_kept = s.top + 1 - s.items.len() as u64;
            let skip = (after + 1).saturating_sub(first_kept) as usize;
            let publications: Vec<_> = s.items.iter().skip(skip).take(limit).cloned().collect();
            Ok(Page {
                complete: since.is_none() || after >= s.top || after + 1 >= first_kept,
                publications,
                top,
            })
        });
        Box::pin(async move { out })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::Message;

    fn policy(size: usize, ttl: u64, meta: u64) -> HistoryConfig {
        HistoryConfig {
            channels: "*".into(),
            history_size: size,
            history_ttl: ttl,
            meta_ttl: meta,
        }
    }

    fn publication(ch: &str, text: &str) -> Publication {
        Publication::new(ch, Message::text(text))
    }

    fn texts(page: &Page) -> Vec<String> {
        page.publications
            .iter()
            .map(|p| p.frame.to_text().unwrap().to_string())
            .collect()
    }

    async fn publish(h: &MemoryHistory, p: &HistoryConfig, ch: &str, text: &str) -> Position {
        h.publish(publication(ch, text), p, &|_| (1, 0))
            .await
            .position
            .unwrap()
    }

    #[tokio::test]
    async fn offsets_count_per_channel_and_reads_follow_since() {
        let h = MemoryHistory::new(&[]);
        let p = policy(3, 60, 600);
        for i in 1..=5 {
            assert_eq!(publish(&h, &p, "a", &format!("a{i}")).await.offset, i);
        }
        let b = publish(&h, &p, "b", "b1").await;
        assert_eq!(b.offset, 1);
        let all = h.read("a", None, 100, &p).await.unwrap();
        assert_eq!(texts(&all), ["a3", "a4", "a5"]);
        assert_eq!(all.top.offset, 5);
        assert!(all.complete);
        let since = |offset| {
            Some(Position {
                offset,
                epoch: all.top.epoch.clone(),
            })
        };
        let page = h.read("a", since(3), 100, &p).await.unwrap();
        assert_eq!(texts(&page), ["a4", "a5"]);
        assert!(page.complete);
        // a2 was dropped (historySize 3): not complete.
        let page = h.read("a", since(1), 100, &p).await.unwrap();
        assert_eq!(texts(&page), ["a3", "a4", "a5"]);
        assert!(!page.complete);
        assert_eq!(texts(&h.read("a", since(2), 1, &p).await.unwrap()), ["a3"]);
        assert!(h.read("a", since(5), 100, &p).await.unwrap().complete);
        assert!(matches!(
            h.read("a", since(6), 100, &p).await,
            Err(HistoryError::InvalidSince { given: 6, top: 5 })
        ));
        let other = Some(Position {
            offset: 1,
            epoch: b.epoch,
        });
        assert!(matches!(
            h.read("a", other, 100, &p).await,
            Err(HistoryError::UnknownEpoch { .. })
        ));
    }

    #[tokio::test]
    async fn data_expires_after_history_ttl_and_the_position_after_meta_ttl() {
        let h = MemoryHistory::new(&[]);
        let p = policy(10, 1, 2);
        let first = publish(&h, &p, "a", "x").await;
        std::thread::sleep(Duration::from_millis(1100));
        let page = h.read("a", None, 10, &p).await.unwrap();
        assert!(page.publications.is_empty());
        assert_eq!(page.top, first, "the position outlives the data");
        let since = Some(Position {
            offset: 0,
            epoch: first.epoch.clone(),
        });
        assert!(!h.read("a", since, 10, &p).await.unwrap().complete);
        std::thread::sleep(Duration::from_millis(2100));
        h.sweep();
        assert_eq!(h.channel_count(), 0);
        let again = publish(&h, &p, "a", "y").await;
        assert_eq!(again.offset, 1);
        assert_ne!(again.epoch, first.epoch, "a new stream, a new epoch");
    }
}
