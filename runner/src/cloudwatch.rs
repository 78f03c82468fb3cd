//! CloudWatch metrics for the runner, published with `PutMetricData` once a minute (the
//! awslogs log driver does not extract Embedded Metric Format, so the functions' EMF path
//! does not apply on Fargate). Same namespace (`BronzeConnector`), names and dimensions
//! (`Source`, `Stream`) as the functions: per stream, that minute's counts, and the largest
//! age of the newest record landed (`OffsetLagMilliseconds`), which the template's runner
//! autoscaling tracks.

use crate::pipeline::Shared;
use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use bronze::record::Source;
use bronze::telemetry::{NAMESPACE, StreamMetrics};
use std::collections::HashMap;
use std::sync::Arc;

/// One stream's numbers for one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowPoint {
    /// The source.
    pub source: Source,
    /// The stream.
    pub stream: String,
    /// Counts in the window; `lag_ms` is the window's largest newest-record age.
    pub metrics: StreamMetrics,
    /// SDK retries in the window (process-wide, as the functions report them).
    pub retries: u64,
}

/// The counters at the last flush, to publish differences.
#[derive(Debug, Default)]
pub struct MetricsWindow {
    previous: HashMap<(Source, String), StreamMetrics>,
    previous_retries: u64,
}

impl MetricsWindow {
    /// The numbers of the window since the last call.
    pub fn take(&mut self, pipelines: &[Arc<Shared>], retries_total: u64) -> Vec<WindowPoint> {
        let retries = retries_total.saturating_sub(self.previous_retries);
        self.previous_retries = retries_total;
        let mut points = Vec::new();
        for shared in pipelines {
            let mut lags = std::mem::take(&mut *shared.window_lag_ms.lock().expect("lag lock"));
            for (key, total) in shared.metrics.snapshot().0 {
                let before = self.previous.get(&key).cloned().unwrap_or_default();
                points.push(WindowPoint {
                    source: key.0,
                    stream: key.1.clone(),
                    metrics: StreamMetrics {
                        messages: total.messages.saturating_sub(before.messages),
                        bytes: total.bytes.saturating_sub(before.bytes),
                        skipped: total.skipped.saturating_sub(before.skipped),
                        dead_letters: total.dead_letters.saturating_sub(before.dead_letters),
                        errors: total.errors.saturating_sub(before.errors),
                        cursor_restarts: total
                            .cursor_restarts
                            .saturating_sub(before.cursor_restarts),
                        undecodable_aggregates: total
                            .undecodable_aggregates
                            .saturating_sub(before.undecodable_aggregates),
                        shards_trimmed: total.shards_trimmed.saturating_sub(before.shards_trimmed),
                        lag_ms: lags.remove(&key),
                    },
                    retries,
                });
                self.previous.insert(key, total);
            }
        }
        points
    }
}

/// The CloudWatch data points of one window point.
pub fn datums(point: &WindowPoint, timestamp: std::time::SystemTime) -> Vec<MetricDatum> {
    let dims = [
        Dimension::builder()
            .name("Source")
            .value(point.source.as_str())
            .build(),
        Dimension::builder()
            .name("Stream")
            .value(&point.stream)
            .build(),
    ];
    let m = &point.metrics;
    let mut values = vec![
        ("Messages", m.messages as f64, StandardUnit::Count),
        ("Bytes", m.bytes as f64, StandardUnit::Bytes),
        ("Skipped", m.skipped as f64, StandardUnit::Count),
        ("DeadLetters", m.dead_letters as f64, StandardUnit::Count),
        ("Errors", m.errors as f64, StandardUnit::Count),
        (
            "CursorRestarts",
            m.cursor_restarts as f64,
            StandardUnit::Count,
        ),
        (
            "ShardsTrimmed",
            m.shards_trimmed as f64,
            StandardUnit::Count,
        ),
        ("Retries", point.retries as f64, StandardUnit::Count),
    ];
    if let Some(lag) = m.lag_ms {
        values.push((
            "OffsetLagMilliseconds",
            lag as f64,
            StandardUnit::Milliseconds,
        ));
    }
    values
        .into_iter()
        .map(|(name, value, unit)| {
            MetricDatum::builder()
                .metric_name(name)
                .set_dimensions(Some(dims.to_vec()))
                .value(value)
                .unit(unit)
                .timestamp(timestamp.into())
                .build()
        })
        .collect()
}

/// Publishes a window. Failures are logged, never fatal: metrics must not stop landing.
pub async fn publish(client: &aws_sdk_cloudwatch::Client, points: &[WindowPoint]) {
    let now = std::time::SystemTime::now();
    let all: Vec<MetricDatum> = points.iter().flat_map(|p| datums(p, now)).collect();
    // PutMetricData takes up to 1000 data points per call.
    for chunk in all.chunks(1000) {
        if let Err(e) = client
            .put_metric_data()
            .namespace(NAMESPACE)
            .set_metric_data(Some(chunk.to_vec()))
            .send()
            .await
        {
            tracing::warn!(error = %aws_sdk_cloudwatch::error::DisplayErrorContext(&e), "PutMetricData failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bronze::record::PartitionId;
    use bronze::telemetry::RecordsLanded;

    fn land(shared: &Shared, records: u64) {
        let id = PartitionId::new(Source::Kafka, "orders", "0");
        RecordsLanded {
            partition: &id,
            first: "0",
            last: "1",
            records,
            bytes: records * 10,
            dead_lettered: 0,
            object_key: None,
            adopted: false,
            run_id: "r",
        }
        .emit(&shared.metrics);
    }

    #[test]
    fn each_window_publishes_its_own_counts_and_lag() {
        let shared = Arc::new(Shared::default());
        let mut w = MetricsWindow::default();
        land(&shared, 5);
        shared
            .window_lag_ms
            .lock()
            .unwrap()
            .insert((Source::Kafka, "orders".into()), 1200);
        let first = w.take(std::slice::from_ref(&shared), 3);
        assert_eq!(first[0].metrics.messages, 5);
        assert_eq!(first[0].retries, 3);
        assert_eq!(first[0].metrics.lag_ms, Some(1200));
        let d = datums(&first[0], std::time::SystemTime::UNIX_EPOCH);
        let lag = d
            .iter()
            .find(|d| d.metric_name() == Some("OffsetLagMilliseconds"))
            .unwrap();
        assert_eq!(lag.value(), Some(1200.0));
        assert_eq!(lag.dimensions()[1].value(), Some("orders"));
        land(&shared, 7);
        let second = w.take(std::slice::from_ref(&shared), 3);
        assert_eq!(second[0].metrics.messages, 7);
        assert_eq!(second[0].metrics.bytes, 70);
        assert_eq!(second[0].retries, 0);
        assert_eq!(second[0].metrics.lag_ms, None, "no landing, no lag point");
        assert!(
            datums(&second[0], std::time::SystemTime::UNIX_EPOCH)
                .iter()
                .all(|d| d.metric_name() != Some("OffsetLagMilliseconds"))
        );
    }
}
