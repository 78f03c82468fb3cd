//! Lambda function for the Kinesis event source mapping. All logic lives in `bronze-shared`.

use aws_lambda_events::event::kinesis::KinesisEvent;
use bronze::sources::{self, App, kinesis};
use bronze::telemetry::{self, Metrics};
use lambda_runtime::{Error, LambdaEvent, run, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    telemetry::init_json_logs();
    let app = App::from_env().await?;
    let app = &app;
    run(service_fn(
        move |event: LambdaEvent<KinesisEvent>| async move {
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
