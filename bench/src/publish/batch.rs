//! Publishing through connmix's `POST /v1/mesh/batch`: each request carries
//! `batch` publishes (personal push: each to its own random user), over
//! several keep-alive connections, as fast as the flow control allows.
//!
//! Counted as the single-publish runs are: one published per item, its `s`
//! and `f` from the item's answer. The flow-control window is widened to at
//! least two batches per connection, so the window itself does not cap a
//! batch run (it would at batch sizes near the window).

use super::http::{Api, connect_all};
use super::{Gate, Outcome, Spec, Tally};
use crate::fleet::Fleet;
use crate::target::{payload, unix_nanos};
use futures_util::future::join_all;
use std::time::Duration;
use tokio::time::Instant;

/// The `/v1/mesh/batch` body for `channels`, each with `data`.
fn body(channels: &[String], data: &str) -> String {
    let items: Vec<String> = channels
        .iter()
        .map(|c| format!(r#"{{"m":"mesh.publish","p":{{"c":"{c}","d":"{data}"}}}}"#))
        .collect();
    format!("[{}]", items.join(","))
}

/// One item's answer: its `(s, f)`, or its error.
type ItemAnswer = Result<(u64, u64), String>;

/// The items' answers of a batch answer.
fn answers(body: &[u8]) -> Result<Vec<ItemAnswer>, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let items = v["r"]
        .as_array()
        .ok_or_else(|| format!("unexpected answer {v}"))?;
    Ok(items
        .iter()
        .map(|a| match (a["r"]["s"].as_u64(), a["r"]["f"].as_u64()) {
            (Some(s), f) => Ok((s, f.unwrap_or(0))),
            _ => Err(a["E"].to_string()),
        })
        .collect())
}

/// Publishes `batch` at a time as fast as the flow control allows, for
/// `duration`.
pub async fn run_max(
    fleet: &Fleet,
    api: &Api,
    spec: &Spec,
    publishers: usize,
    batch: usize,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let conns = connect_all(api, publishers).await?;
    let spec = Spec {
        window: spec.window.max((2 * batch * publishers) as u64),
        ..spec.clone()
    };
    let gate = Gate::new(fleet, &spec);
    let tally = Tally::default();
    let t0 = Instant::now();
    let deadline = t0 + duration;
    join_all(conns.into_iter().enumerate().map(|(j, mut p)| {
        let (gate, tally, spec) = (&gate, &tally, &spec);
        async move {
            let mut rng = 0xA076_1D64_78BD_642Fu64 ^ (j as u64 + 1);
            while gate.wait(deadline).await {
                let expected = spec.per_publish * batch as u64;
                gate.sent(expected);
                let chans: Vec<String> = (0..batch).map(|_| spec.pick.channel(&mut rng)).collect();
                let sent = p
                    .post(
                        "/v1/mesh/batch",
                        body(&chans, &payload(unix_nanos(), spec.size)),
                    )
                    .await
                    .and_then(|b| answers(&b));
                match sent {
                    Ok(items) => {
                        let mut delivered = 0;
                        for item in items {
                            match item {
                                Ok((s, f)) => {
                                    delivered += s;
                                    tally.ok(s, f);
                                }
                                Err(e) => tally.error(e),
                            }
                        }
                        gate.settle(expected, delivered);
                    }
                    Err(e) => {
                        gate.settle(expected, 0);
                        tally.error(e);
                        return;
                    }
                }
            }
        }
    }))
    .await;
    Ok(tally.outcome(t0.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_and_answers() {
        let b = body(&["user:1".into(), "user:2".into()], "9|x");
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v[1]["p"]["c"], "user:2");
        let a =
            answers(br#"{"E":null,"r":[{"E":null,"r":{"s":1,"f":0}},{"E":{"c":101,"m":"x"}}]}"#)
                .unwrap();
        assert_eq!(a[0], Ok((1, 0)));
        assert!(a[1].is_err());
    }
}
