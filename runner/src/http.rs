//! `/metrics` (Prometheus text format) and `/healthz`.
//!
//! The counters are the same the Lambda path sends as EMF (messages, bytes, skipped,
//! dead letters, errors, retries, per source and stream), read as totals at scrape time,
//! plus the runner's own gauges: lag per partition, buffered bytes, landings in flight and
//! the concurrency limit.

use crate::pipeline::Shared;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use bronze::record::Source;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::Ordering;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    source: String,
    stream: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    source: String,
    stream: String,
    partition: String,
}

/// What the endpoints read.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// The pipelines' state, one per source.
    pub pipelines: Vec<Arc<Shared>>,
    /// Paused with nothing committed for this long is a stall (`runner.stall_timeout_ms`).
    pub stall_timeout: std::time::Duration,
}

/// Renders every metric in the Prometheus text format.
pub fn render(endpoints: &Endpoints) -> String {
    let mut registry = Registry::with_prefix("bronze");
    type Read = fn(&bronze::telemetry::StreamMetrics) -> u64;
    let counters: [(&str, &str, Read); 7] = [
        ("messages", "Records landed and committed", |m| m.messages),
        ("bytes", "Payload bytes landed and committed", |m| m.bytes),
        ("skipped", "Records skipped as already landed", |m| {
            m.skipped
        }),
        (
            "dead_letters",
            "Records sent to the dead-letter queue",
            |m| m.dead_letters,
        ),
        ("errors", "Partition landings that failed (retried)", |m| {
            m.errors
        }),
        (
            "cursor_restarts",
            "Deliveries refused because the source's cursors restarted below the checkpoint",
            |m| m.cursor_restarts,
        ),
        (
            "shards_trimmed",
            "Kinesis shards trimmed from the stream before they were read to their end",
            |m| m.shards_trimmed,
        ),
    ];
    for (name, help, get) in counters {
        let family = Family::<StreamLabels, Counter>::default();
        for shared in &endpoints.pipelines {
            for ((source, stream), m) in shared.metrics.snapshot().0 {
                family
                    .get_or_create(&StreamLabels {
                        source: source.to_string(),
                        stream,
                    })
                    .inc_by(get(&m));
            }
        }
        registry.register(name, help, family);
    }
    let retries = Counter::<u64>::default();
    retries.inc_by(bronze::aws::peek_retries());
    registry.register(
        "retries",
        "AWS SDK request retries (throttling, 5xx, timeouts)",
        retries,
    );
    let lag = Family::<PartitionLabels, Gauge>::default();
    let lag_ms = Family::<PartitionLabels, Gauge>::default();
    let gauges = [
        (
            "buffered_bytes",
            "Payload bytes received and not yet committed",
        ),
        ("in_flight_landings", "Landings running"),
        (
            "concurrency_limit",
            "The adaptive landing concurrency limit",
        ),
    ];
    let values: Vec<Gauge> = gauges.iter().map(|_| Gauge::default()).collect();
    let failures = Counter::<u64>::default();
    let pauses = Counter::<u64>::default();
    let stale = Counter::<u64>::default();
    let refused = Counter::<u64>::default();
    for shared in &endpoints.pipelines {
        values[0].inc_by(shared.buffered.load(Ordering::Relaxed) as i64);
        values[1].inc_by(shared.in_flight.load(Ordering::Relaxed) as i64);
        values[2].inc_by(shared.limit.load(Ordering::Relaxed) as i64);
        failures.inc_by(shared.failures.load(Ordering::Relaxed));
        pauses.inc_by(shared.pauses.load(Ordering::Relaxed));
        stale.inc_by(shared.stale_records.load(Ordering::Relaxed));
        refused.inc_by(shared.refused_records.load(Ordering::Relaxed));
        for (id, l) in shared.lag.lock().expect("lag lock").iter() {
            // Kinesis reports how far behind a shard is in time, not in records.
            let family = if id.source == Source::Kinesis {
                &lag_ms
            } else {
                &lag
            };
            family
                .get_or_create(&PartitionLabels {
                    source: id.source.to_string(),
                    stream: id.stream.clone(),
                    partition: id.partition.clone(),
                })
                .set(i64::try_from(*l).unwrap_or(i64::MAX));
        }
    }
    for ((name, help), gauge) in gauges.iter().zip(values) {
        registry.register(*name, *help, gauge);
    }
    registry.register(
        "consumer_lag_records",
        "Records between the high watermark and the checkpoint (Kafka, Pulsar)",
        lag,
    );
    registry.register(
        "consumer_lag_milliseconds",
        "How far the checkpoint is behind the tip of the shard (Kinesis MillisBehindLatest)",
        lag_ms,
    );
    registry.register("landing_failures", "Landing attempts that failed", failures);
    registry.register(
        "buffer_pauses",
        "Times fetching paused on a full buffer",
        pauses,
    );
    registry.register(
        "stale_records",
        "Records dropped because they were read under a partition assignment that had ended",
        stale,
    );
    registry.register(
        "refused_records",
        "Records not taken because their partition's cursors restarted below its checkpoint (never landed or committed: read again once the partition is reset)",
        refused,
    );
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry).expect("writing to a String");
    out
}

async fn metrics(State(endpoints): State<Arc<Endpoints>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        render(&endpoints),
    )
}

async fn healthz(State(endpoints): State<Arc<Endpoints>>) -> impl IntoResponse {
    health(&endpoints)
}

/// `/healthz`: 503 naming the reason when a landing failed permanently or the pipeline is
/// stalled (fetching paused on a full buffer with nothing committed for `stall_timeout`).
pub fn health(endpoints: &Endpoints) -> (StatusCode, String) {
    for shared in &endpoints.pipelines {
        if let Some(reason) = shared.unhealthy.lock().expect("health lock").clone() {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("unhealthy: {reason}\n"),
            );
        }
        if let Some(reason) = shared.stalled(endpoints.stall_timeout) {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("unhealthy: {reason}\n"),
            );
        }
    }
    (StatusCode::OK, "ok\n".to_owned())
}

/// Binds the endpoint and serves it in the background. Returns the bound address.
pub async fn serve(
    bind: &str,
    port: u16,
    endpoints: Endpoints,
) -> std::io::Result<std::net::SocketAddr> {
    let listener = tokio::net::TcpListener::bind((bind, port)).await?;
    let addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(Arc::new(endpoints));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bronze::record::PartitionId;
    use bronze::telemetry::RecordsLanded;

    #[test]
    fn renders_counters_and_gauges() {
        let shared = Arc::new(Shared::default());
        let id = PartitionId::new(Source::Kafka, "orders", "0");
        RecordsLanded {
            partition: &id,
            first: "0",
            last: "9",
            records: 10,
            bytes: 100,
            dead_lettered: 0,
            object_key: Some("k"),
            adopted: false,
            run_id: "r",
        }
        .emit(&shared.metrics);
        shared.buffered.store(42, Ordering::Relaxed);
        shared.lag.lock().unwrap().insert(id, 7);
        let shard = PartitionId::new(Source::Kinesis, "clicks", "shardId-000000000001");
        shared.lag.lock().unwrap().insert(shard, 1500);
        let text = render(&Endpoints {
            pipelines: vec![shared],
            stall_timeout: std::time::Duration::from_secs(300),
        });
        assert!(
            text.contains(r#"bronze_messages_total{source="kafka",stream="orders"} 10"#),
            "{text}"
        );
        assert!(text.contains(r#"bronze_bytes_total{source="kafka",stream="orders"} 100"#));
        assert!(text.contains("bronze_buffered_bytes 42"));
        assert!(text.contains(
            r#"bronze_consumer_lag_records{source="kafka",stream="orders",partition="0"} 7"#
        ));
        assert!(text.contains(
            r#"bronze_consumer_lag_milliseconds{source="kinesis",stream="clicks",partition="shardId-000000000001"} 1500"#
        ), "{text}");
        assert!(
            !text.contains(r#"bronze_consumer_lag_records{source="kinesis""#),
            "a Kinesis lag is time, not records: {text}"
        );
        assert!(text.contains("bronze_concurrency_limit"));
        assert!(text.contains("bronze_stale_records_total 0"));
    }

    #[test]
    fn healthz_reports_a_stall() {
        let shared = Arc::new(Shared::default());
        let endpoints = Endpoints {
            pipelines: vec![shared.clone()],
            stall_timeout: std::time::Duration::from_secs(60),
        };
        assert_eq!(health(&endpoints).0, StatusCode::OK);
        // Paused just now: not a stall yet.
        shared.set_paused(true);
        assert_eq!(health(&endpoints).0, StatusCode::OK);
        // Paused for two minutes with nothing ever committed: a stall.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        shared
            .paused_since_ms
            .store(now - 120_000, Ordering::Relaxed);
        let (status, body) = health(&endpoints);
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("stalled"), "{body}");
        // A commit within the timeout means landings are moving: not a stall.
        shared
            .last_progress_ms
            .store(now - 5_000, Ordering::Relaxed);
        assert_eq!(health(&endpoints).0, StatusCode::OK);
        // Resumed: not a stall.
        shared
            .last_progress_ms
            .store(now - 600_000, Ordering::Relaxed);
        shared.set_paused(false);
        assert_eq!(health(&endpoints).0, StatusCode::OK);
    }
}
