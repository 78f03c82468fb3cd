//! Large Bronze objects go up as multipart uploads (`bronze::config::Multipart`), through the
//! engine's own S3 adapter, against moto behind the fault-injecting proxy: the upload stays
//! conditional (CompleteMultipartUpload with `If-None-Match: *`, so an existing object is
//! `AlreadyExists`, which the engine adopts exactly like a refused PutObject), survives
//! transient faults and a lost completion, and an upload that cannot complete is aborted and
//! leaves nothing at the key.

use bronze::aws::S3ObjectStore;
use bronze::config::Multipart;
use bronze::ports::{ObjectStore, PortError, PutOutcome};
use integration_tests::fault_proxy::{Fault, FaultProxy, Rule};
use integration_tests::*;

const MIB: usize = 1024 * 1024;

/// Parts of S3's minimum size, from 6 MiB up: a 13 MiB object is three parts.
fn small_parts() -> Multipart {
    Multipart {
        threshold: 6 * MIB,
        part_size: Multipart::MIN_PART_SIZE,
        concurrency: 2,
    }
}

/// `len` bytes that differ from part to part (so a part landed at the wrong number shows).
fn body(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The stack, the proxy in front of moto, and the adapter talking through it with the
/// functions' retry policy (standard retries, `bronze::aws::MAX_ATTEMPTS` attempts).
async fn setup() -> (Stack, FaultProxy, S3ObjectStore) {
    let stack = Stack::new().await.unwrap();
    let proxy = FaultProxy::start().unwrap();
    let sdk = Stack::sdk()
        .await
        .into_builder()
        .endpoint_url(proxy.url())
        .retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(bronze::aws::MAX_ATTEMPTS)
                .with_initial_backoff(std::time::Duration::from_millis(100)),
        )
        .build();
    let objects = S3ObjectStore::new(&sdk, &stack.bucket).with_multipart(small_parts());
    (stack, proxy, objects)
}

/// Multipart uploads still open in the bucket.
async fn open_uploads(stack: &Stack) -> usize {
    stack
        .s3()
        .list_multipart_uploads()
        .bucket(&stack.bucket)
        .send()
        .await
        .unwrap()
        .uploads()
        .len()
}

/// The object's Content-Type and length.
async fn head(stack: &Stack, key: &str) -> (Option<String>, i64) {
    let head = stack
        .s3()
        .head_object()
        .bucket(&stack.bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    (
        head.content_type().map(str::to_owned),
        head.content_length().unwrap_or(-1),
    )
}

async fn stored(stack: &Stack, key: &str) -> Option<Vec<u8>> {
    stack.objects().get(key).await.unwrap()
}

#[tokio::test]
async fn a_large_object_goes_up_in_parts_and_stays_conditional() {
    let (stack, proxy, objects) = setup().await;
    let key = "bronze/kafka/orders/0/00000000000000000001-00000000000000000009.jsonl.gz";
    let first = body(13 * MIB, 1);

    assert_eq!(
        objects.put_if_absent(key, first.clone()).await.unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        proxy.calls("s3:CreateMultipartUpload"),
        1,
        "{:?}",
        proxy.all_calls()
    );
    assert_eq!(proxy.calls("s3:UploadPart"), 3, "{:?}", proxy.all_calls());
    assert_eq!(proxy.calls("s3:CompleteMultipartUpload"), 1);
    assert_eq!(proxy.calls("s3:PutObject"), 0);
    assert!(stored(&stack, key).await.unwrap() == first, "bytes differ");
    assert_eq!(
        head(&stack, key).await,
        (Some("application/gzip".to_owned()), first.len() as i64)
    );

    // Another attempt at the same key: refused at completion, the object untouched, the
    // second upload aborted.
    let second = body(13 * MIB, 2);
    assert_eq!(
        objects.put_if_absent(key, second).await.unwrap(),
        PutOutcome::AlreadyExists
    );
    assert!(
        stored(&stack, key).await.unwrap() == first,
        "object replaced"
    );
    assert_eq!(proxy.calls("s3:AbortMultipartUpload"), 1);
    assert_eq!(open_uploads(&stack).await, 0);

    // Below the threshold: one conditional PutObject, as before.
    let small_key = "bronze/kafka/orders/0/00000000000000000010-00000000000000000011.jsonl.gz";
    let small = body(MIB, 3);
    assert_eq!(
        objects
            .put_if_absent(small_key, small.clone())
            .await
            .unwrap(),
        PutOutcome::Created
    );
    assert_eq!(proxy.calls("s3:PutObject"), 1);
    assert_eq!(proxy.calls("s3:CreateMultipartUpload"), 2);
    assert_eq!(
        objects.put_if_absent(small_key, small).await.unwrap(),
        PutOutcome::AlreadyExists
    );
}

#[tokio::test]
async fn parts_survive_transient_faults_and_a_lost_completion() {
    let (stack, proxy, objects) = setup().await;
    let key = "bronze/kinesis/clicks/shardId-000000000000/1-2.jsonl.zst";
    let data = body(16 * MIB, 4);
    proxy.add(Rule::next("s3:UploadPart", Fault::SlowDown, 2));
    proxy.add(Rule::next("s3:UploadPart", Fault::Reset, 1));
    proxy.add(Rule::next(
        "s3:CreateMultipartUpload",
        Fault::InternalError,
        1,
    ));
    // The upload completes, but its answer never arrives: the SDK's retry completes the same
    // upload again, which S3 answers as done (or, conditional, as already there, which the
    // engine adopts after checking what the object holds).
    proxy.add(Rule::next(
        "s3:CompleteMultipartUpload",
        Fault::ResponseLost,
        1,
    ));

    let outcome = objects.put_if_absent(key, data.clone()).await.unwrap();
    assert!(
        matches!(outcome, PutOutcome::Created | PutOutcome::AlreadyExists),
        "{outcome:?}"
    );
    assert_eq!(proxy.injected_total(), 5, "{:?}", proxy.injected());
    assert!(stored(&stack, key).await.unwrap() == data, "bytes differ");
    assert_eq!(
        head(&stack, key).await,
        (Some("application/zstd".to_owned()), data.len() as i64)
    );
    assert_eq!(open_uploads(&stack).await, 0);
}

#[tokio::test]
async fn an_upload_that_cannot_complete_is_aborted_and_leaves_nothing() {
    let (stack, proxy, objects) = setup().await;
    let key = "bronze/kafka/orders/1/00000000000000000001-00000000000000000002.jsonl.gz";
    let denied = proxy.add(Rule::outage(
        "s3:UploadPart",
        Fault::Error {
            status: 403,
            code: "AccessDenied".into(),
        },
    ));
    let err = objects
        .put_if_absent(key, body(11 * MIB, 5))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            PortError::Permanent {
                operation: "s3:UploadPart",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(key), "{err}");
    assert_eq!(proxy.calls("s3:AbortMultipartUpload"), 1);
    assert_eq!(open_uploads(&stack).await, 0);
    assert!(stored(&stack, key).await.is_none());

    // A completion that keeps failing (an outage outlasting the SDK's retries) is transient
    // for the engine, which retries the batch; the upload is aborted meanwhile.
    denied.remove();
    proxy.add(Rule::outage("s3:CompleteMultipartUpload", Fault::SlowDown));
    let err = objects
        .put_if_absent(key, body(11 * MIB, 6))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        err.to_string().contains("s3:CompleteMultipartUpload"),
        "{err}"
    );
    assert_eq!(proxy.calls("s3:AbortMultipartUpload"), 2);
    assert_eq!(open_uploads(&stack).await, 0);
    assert!(stored(&stack, key).await.is_none());

    // Once S3 is back, the same batch lands.
    proxy.clear();
    let data = body(11 * MIB, 6);
    assert_eq!(
        objects.put_if_absent(key, data.clone()).await.unwrap(),
        PutOutcome::Created
    );
    assert!(stored(&stack, key).await.unwrap() == data, "bytes differ");
}
