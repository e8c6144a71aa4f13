//! Reading a python-socketio emitter from AMQP (RabbitMQ), the way
//! python-socketio's `KombuManager` does: a fanout exchange named after the
//! channel, declared as kombu declares it (`type: fanout, durable: false`,
//! not auto-deleted, not internal), and a queue of this node's own
//! (server-named, exclusive, auto-deleted) bound to it. Every node reads its
//! own queue and delivers to its own sockets, so each client gets a message
//! once per cluster.
//!
//! At most [`PREFETCH`] messages are held unacknowledged here; the rest wait
//! in RabbitMQ. A failed connect or a dropped link is counted and retried
//! with backoff until the gateway stops; the node's queue goes with its
//! connection and a new one is bound on reconnect.

use super::backoff::Backoff;
use super::intake::Intake;
use crate::config::EmitterConfig;
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::uri::AMQPUri;
use lapin::{Connection, ConnectionProperties, Consumer, ExchangeKind};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Messages delivered to this node and not yet acknowledged.
pub const PREFETCH: u16 = 256;
/// Longest wait for the connect, declarations and consume.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The URL as kombu reads it: an empty path is the vhost `/` (lapin would
/// take `""`), `//` is `/`, `%2f` is `/`; an IP host is kept as written.
pub fn uri(url: &str) -> Result<AMQPUri, String> {
    let mut uri: AMQPUri = url.parse()?;
    let parsed = url::Url::parse(url).map_err(|e| e.to_string())?;
    if let Some(host) = parsed.host_str() {
        uri.authority.host = host.to_string();
    }
    if uri.vhost.is_empty() {
        uri.vhost = "/".into();
    }
    Ok(uri)
}

pub async fn run(intake: Arc<Intake>, cfg: EmitterConfig, stop: CancellationToken) {
    let mut backoff = Backoff::new();
    let shown = cfg.redacted_url();
    let exchange = cfg.channel().to_string();
    loop {
        let linked = backoff.link(&intake, &shown, CONNECT_TIMEOUT, &stop, || {
            consume(&cfg.url, &exchange)
        });
        let Some((conn, mut deliveries)) = linked.await else {
            return;
        };
        tracing::info!(
            "{}: reading python-socketio messages from {shown} (fanout exchange {exchange})",
            intake.name
        );
        let lost = loop {
            tokio::select! {
                _ = stop.cancelled() => break None,
                d = deliveries.next() => match d {
                    Some(Ok(delivery)) => {
                        intake.handle(&delivery.data);
                        if let Err(e) = delivery.acker.ack(BasicAckOptions::default()).await {
                            break Some(e.to_string());
                        }
                    }
                    Some(Err(e)) => break Some(e.to_string()),
                    None => break Some("the consumer was cancelled".to_string()),
                },
            }
        };
        intake.stats.up.set(0);
        let _ = conn.close(200, "connmix stopping".into()).await;
        let Some(why) = lost else { return };
        let why = format!("lost the link to {shown}: {why}");
        if !backoff.retry(&intake, &why, &stop).await {
            return;
        }
    }
}

/// Connects, declares the exchange and this node's queue, binds and starts
/// consuming.
async fn consume(url: &str, exchange: &str) -> Result<(Connection, Consumer), String> {
    let uri = uri(url)?;
    let props = ConnectionProperties::default().with_connection_name("connmix emitter".into());
    let conn = Connection::connect_uri(uri, props)
        .await
        .map_err(|e| e.to_string())?;
    let channel = declare_exchange(&conn, exchange).await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions::exclusive().auto_delete(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("declaring this node's queue: {e}"))?;
    channel
        .queue_bind(
            queue.name().clone(),
            exchange.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("binding this node's queue to {exchange}: {e}"))?;
    channel
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let consumer = channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("consuming: {e}"))?;
    Ok((conn, consumer))
}

/// Declares the exchange as kombu does. When it exists with other settings
/// (the backend passed `exchange_options`), RabbitMQ refuses that and closes
/// the channel; then a new channel only checks that it exists, and binding
/// to it works whatever its settings.
async fn declare_exchange(conn: &Connection, exchange: &str) -> Result<lapin::Channel, String> {
    let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
    let kombu = ExchangeDeclareOptions {
        durable: false,
        auto_delete: false,
        ..Default::default()
    };
    let declared = channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Fanout,
            kombu,
            FieldTable::default(),
        )
        .await;
    let Err(first) = declared else {
        return Ok(channel);
    };
    let channel = conn.create_channel().await.map_err(|e| e.to_string())?;
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            exchange.into(),
            ExchangeKind::Fanout,
            passive,
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("declaring the fanout exchange {exchange}: {first}; {e}"))?;
    tracing::info!(
        "emitter: exchange {exchange} exists with other settings than kombu's defaults ({first}); using it as it is"
    );
    Ok(channel)
}

#[cfg(test)]
mod tests {
    use super::uri;

    #[test]
    fn kombu_urls_mean_what_kombu_means() {
        let u = uri("amqp://guest:guest@127.0.0.1:5672//").unwrap();
        assert_eq!(u.vhost, "/");
        assert_eq!(u.authority.host, "127.0.0.1");
        assert_eq!(uri("amqp://h:5672/").unwrap().vhost, "/");
        assert_eq!(uri("amqp://h").unwrap().vhost, "/");
        assert_eq!(uri("amqp://h/%2f").unwrap().vhost, "/");
        let u = uri("amqps://u:p%40ss@10.1.2.3/app").unwrap();
        assert_eq!(u.vhost, "app");
        assert_eq!(u.authority.host, "10.1.2.3");
        assert_eq!(u.authority.port, 5671);
        assert_eq!(u.authority.userinfo.password, "p@ss");
    }
}
