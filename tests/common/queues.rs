//! Where the emitter tests find their message queues: the shared Redis of
//! `CONNMIX_TEST_REDIS` (default 127.0.0.1:6379) and RabbitMQ of
//! `CONNMIX_TEST_AMQP` (default amqp://guest:guest@127.0.0.1:5672/), both
//! provided by scripts/test.sh, and names no other test or run uses.

/// The shared Redis as a `redis://` URL (database 0).
pub fn test_redis_url() -> String {
    let addr = std::env::var("CONNMIX_TEST_REDIS")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "127.0.0.1:6379".into());
    format!("redis://{addr}/0")
}

/// The shared RabbitMQ's `amqp://` URL.
pub fn test_amqp_url() -> String {
    std::env::var("CONNMIX_TEST_AMQP")
        .ok()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:5672/".into())
}

/// A channel, key or exchange name no other test (or run) uses.
pub fn unique_name(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("cmx-{test}-{nanos}")
}

/// `PUBLISH channel payload` on the Redis at `url`; the subscribers reached.
pub async fn redis_publish(url: &str, channel: &str, payload: &[u8]) -> i64 {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async(&mut conn)
        .await
        .unwrap()
}
