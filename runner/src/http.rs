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
}

/// Renders every metric in the Prometheus text format.
pub fn render(endpoints: &Endpoints) -> String {
    let mut registry = Registry::with_prefix("bronze");
    type Read = fn(&bronze::telemetry::StreamMetrics) -> u64;
    let counters: [(&str, &str, Read); 5] = [
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
    for shared in &endpoints.pipelines {
        values[0].inc_by(shared.buffered.load(Ordering::Relaxed) as i64);
        values[1].inc_by(shared.in_flight.load(Ordering::Relaxed) as i64);
        values[2].inc_by(shared.limit.load(Ordering::Relaxed) as i64);
        failures.inc_by(shared.failures.load(Ordering::Relaxed));
        pauses.inc_by(shared.pauses.load(Ordering::Relaxed));
        for (id, l) in shared.lag.lock().expect("lag lock").iter() {
            lag.get_or_create(&PartitionLabels {
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
        "Records between the high watermark and the checkpoint",
        lag,
    );
    registry.register("landing_failures", "Landing attempts that failed", failures);
    registry.register(
        "buffer_pauses",
        "Times fetching paused on a full buffer",
        pauses,
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
    for shared in &endpoints.pipelines {
        if let Some(reason) = shared.unhealthy.lock().expect("health lock").clone() {
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
    use bronze::record::{PartitionId, Source};
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
        let text = render(&Endpoints {
            pipelines: vec![shared],
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
        assert!(text.contains("bronze_concurrency_limit"));
    }
}
