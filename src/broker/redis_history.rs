//! Channel history in a cluster: Redis Streams (filled in below).
use super::BoxFuture;
use super::history::{Appended, Deliver, History, HistoryError, Page, Position, Publication};
use super::redis::RedisBroker;
use crate::config::HistoryConfig;
use std::sync::Arc;

pub struct RedisHistory {
    broker: Arc<RedisBroker>,
}

impl RedisHistory {
    pub fn new(broker: Arc<RedisBroker>) -> Arc<Self> {
        Arc::new(Self { broker })
    }
}

impl History for RedisHistory {
    fn publish<'a>(
        &'a self,
        _p: Publication,
        _policy: &'a HistoryConfig,
        _deliver: Deliver<'a>,
    ) -> BoxFuture<'a, Appended> {
        let _ = &self.broker;
        Box::pin(async { Appended::default() })
    }
    fn read<'a>(
        &'a self,
        _ch: &'a str,
        _since: Option<Position>,
        _limit: usize,
        _policy: &'a HistoryConfig,
    ) -> BoxFuture<'a, Result<Page, HistoryError>> {
        Box::pin(async { Err(HistoryError::Unavailable("todo".into())) })
    }
}
