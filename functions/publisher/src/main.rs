//! Lambda function run by an EventBridge schedule: one publish of the committed Bronze
//! objects to the Iceberg table, the same as `streaming-connector publish`. All logic lives in
//! `bronze-publish` (`publish::job`); the event's content is not used.

use bronze::telemetry;
use lambda_runtime::{Error, LambdaEvent, run, service_fn};
use publish::job::PublishJob;
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init_json_logs();
    // A bad configuration fails every invocation with an error naming the variable, instead
    // of exiting at init (which Lambda would turn into a crash loop of cold starts).
    let job = PublishJob::from_env().map_err(|e| {
        tracing::error!(error = %e, "configuration error: every invocation fails until it is fixed");
        e.to_string()
    });
    let sdk = bronze::aws::sdk_config().await;
    let (job, sdk) = (&job, &sdk);
    run(service_fn(move |_event: LambdaEvent<Value>| async move {
        let job = job
            .as_ref()
            .map_err(|e| Error::from(format!("configuration error: {e}")))?;
        // A partition held back fails the invocation after the others are committed, so
        // that PublisherErrorsAlarm reports it.
        match job.run_complete(sdk).await {
            Ok(report) => Ok(serde_json::to_value(report)?),
            Err(e) => {
                // Rerunning is always safe: the next scheduled run takes what is missing.
                tracing::error!(error = %e, transient = e.is_transient(), table = %job.table, "publish failed");
                Err(Error::from(e))
            }
        }
    }))
    .await
}
