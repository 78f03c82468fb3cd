//! Lambda function for the Kinesis event source mapping. All logic lives in `bronze-shared`.

use bronze::sources::kinesis::KinesisEvent;
use bronze::sources::{self, App, kinesis};
use bronze::telemetry::{self, Metrics};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

// One invocation at a time: the handler, the SDK's connections and the Runtime API client all
// run on one thread (no worker threads to wake, park or give their own malloc arenas); the
// compression runs on rayon's threads, as many as the vCPUs the function's memory pays for
// (`bronze::compress::init_lambda_pool`, `bronze::compress::Pipeline`).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    telemetry::init_json_logs();
    let threads = bronze::compress::init_lambda_pool();
    tracing::info!(compression_threads = threads, "compression pool started");
    // A bad configuration fails every invocation with an error naming the field, instead of
    // exiting at init (which Lambda would turn into a crash loop of cold starts).
    let app = App::from_env().await.map_err(|e| {
        tracing::error!(error = %e, "configuration error: every invocation fails until it is fixed");
        e.to_string()
    });
    // Learn each stream's ParallelizationFactor from this function's event source mappings
    // (read again for a new stream and after BRONZE_MAPPING_REFRESH_SECONDS).
    if let Ok(app) = &app {
        app.mappings.refresh().await;
    }
    let app = &app;
    run(service_fn(
        move |event: LambdaEvent<KinesisEvent>| async move {
            let app = app
                .as_ref()
                .map_err(|e| Error::from(format!("configuration error: {e}")))?;
            let metrics = Metrics::default();
            let result = kinesis::handle(
                app,
                event.payload,
                &event.context.request_id,
                sources::now_ms(),
                &metrics,
            )
            .await;
            sources::finish_invocation(&metrics);
            result.map_err(Error::from)
        },
    ))
    .await
}
