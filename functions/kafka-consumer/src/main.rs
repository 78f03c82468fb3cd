//! Lambda function for the MSK and self-managed Kafka event source mappings. All logic lives
//! in `bronze-shared`.

use bronze::sources::kafka::KafkaEvent;
use bronze::sources::{self, App, kafka};
use bronze::telemetry::{self, Metrics};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

// One invocation at a time, as in the Kinesis function: the handler, the SDK's connections and
// the Runtime API client run on one thread; compression runs on rayon's threads, as many as the
// vCPUs the function's memory pays for (`bronze::compress::init_lambda_pool`).
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
    let app = &app;
    run(service_fn(
        move |event: LambdaEvent<KafkaEvent>| async move {
            let app = app
                .as_ref()
                .map_err(|e| Error::from(format!("configuration error: {e}")))?;
            let metrics = Metrics::default();
            let result = kafka::handle(
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
