//! CloudWatch metrics for the runner, as Embedded Metric Format lines on stdout (shipped by
//! the awslogs driver; no API calls): once a minute, per stream, that minute's counts and
//! the largest age of the newest record landed (`OffsetLagMilliseconds`, which the
//! template's autoscaling tracks). Same namespace and dimensions as the Lambda functions.

use crate::pipeline::Shared;
use bronze::record::Source;
use bronze::telemetry::StreamMetrics;
use std::collections::HashMap;
use std::sync::Arc;

/// The counters at the last flush, to send differences.
#[derive(Debug, Default)]
pub struct EmfWindow {
    previous: HashMap<(Source, String), StreamMetrics>,
    previous_retries: u64,
}

impl EmfWindow {
    /// The EMF documents for the window since the last call.
    pub fn lines(
        &mut self,
        pipelines: &[Arc<Shared>],
        retries_total: u64,
        now_ms: i64,
    ) -> Vec<String> {
        let retries = retries_total.saturating_sub(self.previous_retries);
        self.previous_retries = retries_total;
        let mut lines = Vec::new();
        for shared in pipelines {
            let mut lags = std::mem::take(&mut *shared.window_lag_ms.lock().expect("lag lock"));
            for (key, total) in shared.metrics.snapshot().0 {
                let before = self.previous.get(&key).cloned().unwrap_or_default();
                let window = StreamMetrics {
                    messages: total.messages.saturating_sub(before.messages),
                    bytes: total.bytes.saturating_sub(before.bytes),
                    skipped: total.skipped.saturating_sub(before.skipped),
                    dead_letters: total.dead_letters.saturating_sub(before.dead_letters),
                    errors: total.errors.saturating_sub(before.errors),
                    lag_ms: lags.remove(&key),
                };
                lines.push(bronze::telemetry::emf_document(
                    key.0, &key.1, &window, retries, now_ms,
                ));
                self.previous.insert(key, total);
            }
        }
        lines
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
    fn each_window_sends_its_own_counts_and_lag() {
        let shared = Arc::new(Shared::default());
        let mut w = EmfWindow::default();
        land(&shared, 5);
        shared
            .window_lag_ms
            .lock()
            .unwrap()
            .insert((Source::Kafka, "orders".into()), 1200);
        let first: serde_json::Value =
            serde_json::from_str(&w.lines(std::slice::from_ref(&shared), 3, 0)[0]).unwrap();
        assert_eq!(first["Messages"], 5);
        assert_eq!(first["Retries"], 3);
        assert_eq!(first["OffsetLagMilliseconds"], 1200);
        land(&shared, 7);
        let second: serde_json::Value =
            serde_json::from_str(&w.lines(std::slice::from_ref(&shared), 3, 60_000)[0]).unwrap();
        assert_eq!(second["Messages"], 7);
        assert_eq!(second["Bytes"], 70);
        assert_eq!(second["Retries"], 0);
        assert!(
            second.get("OffsetLagMilliseconds").is_none(),
            "no landing, no lag point"
        );
    }
}
