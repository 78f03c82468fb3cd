//! AWS adapters for the ports: S3 (Bronze bucket), DynamoDB (state registry) and SQS (DLQ).
//!
//! Transient failures (throttling, 5xx, timeouts, connection errors) are retried by the SDK's
//! standard retry strategy: exponential backoff with full jitter, within a bounded number of
//! attempts ([`sdk_config`]). What is still failing afterwards is classified once by
//! [`classify`].

use crate::config::Multipart;
use crate::ports::{
    Checkpoint, CommitEntry, DeadLetterQueue, LogPositions, ObjectStore, PortError, PutOutcome,
    StateStore,
};
use crate::record::PartitionId;
use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::types::{AttributeValue, Put, TransactWriteItem, Update};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::config_bag::ConfigBag;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Attempts per request, the first included (the SDK's retry budget).
pub const MAX_ATTEMPTS: u32 = 5;

static RETRIES: AtomicU64 = AtomicU64::new(0);

/// Returns and resets the number of SDK retries since the last call.
pub fn take_retries() -> u64 {
    RETRIES.swap(0, Ordering::Relaxed)
}

/// The number of SDK retries since the process started, less those taken by
/// [`take_retries`] (for a long-running process that never takes them).
pub fn peek_retries() -> u64 {
    RETRIES.load(Ordering::Relaxed)
}

/// Counts every attempt after the first, for the `Retries` metric.
#[derive(Debug)]
struct RetryCounter;

impl Intercept for RetryCounter {
    fn name(&self) -> &'static str {
        "RetryCounter"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_smithy_runtime_api::box_error::BoxError> {
        if cfg
            .load::<RequestAttempts>()
            .is_some_and(|a| a.attempts() > 1)
        {
            RETRIES.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Loads the SDK configuration: the standard credential chain and region, `AWS_ENDPOINT_URL`
/// (so the same binary runs against a local stack), standard retries and bounded timeouts.
pub async fn sdk_config() -> aws_config::SdkConfig {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(100))
                .with_max_backoff(Duration::from_secs(5)),
        )
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(20))
                .operation_timeout(Duration::from_secs(60))
                .build(),
        )
        .load()
        .await
}

/// Classifies an SDK error once: throttling, 5xx, timeouts and connection failures are
/// transient; everything else (missing resources, access denied, bad requests) is permanent.
pub fn classify<E>(
    operation: &'static str,
    target: &str,
    err: &SdkError<E, HttpResponse>,
) -> PortError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let message = match err.as_service_error() {
        Some(service) => format!(
            "{}: {}",
            service.code().unwrap_or("Unknown"),
            service.message().unwrap_or_default()
        ),
        None => aws_smithy_types::error::display::DisplayErrorContext(err).to_string(),
    };
    let transient = match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(_) => {
            let code = err
                .as_service_error()
                .and_then(|e| e.code())
                .unwrap_or_default();
            let status = err.raw_response().map(|r| r.status().as_u16()).unwrap_or(0);
            status >= 500
                || status == 429
                || matches!(
                    code,
                    // Every throttling code the SDK's own retry classifier knows, plus
                    // conflicts and timeouts.
                    "SlowDown"
                        | "Throttling"
                        | "ThrottlingException"
                        | "ThrottledException"
                        | "RequestThrottled"
                        | "RequestThrottledException"
                        | "TooManyRequestsException"
                        | "LimitExceededException"
                        | "BandwidthLimitExceeded"
                        | "PriorRequestNotComplete"
                        | "EC2ThrottledException"
                        | "RequestLimitExceeded"
                        | "ProvisionedThroughputExceededException"
                        | "TransactionConflictException"
                        | "TransactionInProgressException"
                        | "ConditionalRequestConflict"
                        | "RequestTimeout"
                        | "InternalError"
                        | "ServiceUnavailable"
                )
        }
        _ => false,
    };
    if transient {
        PortError::Transient {
            operation,
            target: target.to_owned(),
            message,
        }
    } else {
        PortError::Permanent {
            operation,
            target: target.to_owned(),
            message,
        }
    }
}

/// The Bronze bucket.
#[derive(Debug, Clone)]
pub struct S3ObjectStore {
    client: aws_sdk_s3::Client,
    bucket: String,
    multipart: Multipart,
}

impl S3ObjectStore {
    /// Builds the adapter. Path-style addressing is used when an endpoint override is set
    /// (local S3-compatible stacks need it).
    pub fn new(config: &aws_config::SdkConfig, bucket: impl Into<String>) -> Self {
        let s3 = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(config.endpoint_url().is_some())
            .interceptor(RetryCounter)
            .build();
        Self {
            client: aws_sdk_s3::Client::from_conf(s3),
            bucket: bucket.into(),
            multipart: Multipart::default(),
        }
    }

    /// Uploads objects of at least `multipart.threshold` bytes in parts.
    pub fn with_multipart(mut self, multipart: Multipart) -> Self {
        self.multipart = multipart;
        self
    }

    fn target(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, key)
    }

    fn content_type(key: &str) -> &'static str {
        crate::compress::Codec::of_key(key).map_or("application/octet-stream", |c| c.content_type())
    }

    /// `put_if_absent` for a large object: CreateMultipartUpload, the parts (several at once,
    /// each retried by the SDK), then CompleteMultipartUpload with `If-None-Match: *`, which
    /// S3 refuses with 412 when an object exists at the key, exactly like a conditional
    /// PutObject. Nothing is visible at the key before the completion. An upload that does not
    /// complete is aborted (and the bucket's lifecycle rule removes any an abort missed).
    async fn put_parts_if_absent(&self, key: &str, body: Vec<u8>) -> Result<PutOutcome, PortError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .content_type(Self::content_type(key))
            .send()
            .await
            .map_err(|e| classify("s3:CreateMultipartUpload", &self.target(key), &e))?;
        let upload_id = created.upload_id().ok_or_else(|| PortError::Permanent {
            operation: "s3:CreateMultipartUpload",
            target: self.target(key),
            message: "the answer has no UploadId".into(),
        })?;
        let result = self.complete_parts(key, upload_id, body).await;
        if !matches!(result, Ok(PutOutcome::Created)) {
            // Best effort: an upload left behind costs storage until the lifecycle rule's
            // AbortIncompleteMultipartUpload removes it, never a wrong object.
            if let Err(e) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .send()
                .await
            {
                tracing::warn!(object_key = key, upload_id, error = %classify("s3:AbortMultipartUpload", &self.target(key), &e), "could not abort the multipart upload; the bucket's lifecycle rule will");
            }
        }
        result
    }

    async fn complete_parts(
        &self,
        key: &str,
        upload_id: &str,
        body: Vec<u8>,
    ) -> Result<PutOutcome, PortError> {
        use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
        use futures::{StreamExt as _, TryStreamExt as _};
        let body = bytes::Bytes::from(body);
        let part_size = self.multipart.part_size_for(body.len());
        let ranges: Vec<(i32, std::ops::Range<usize>)> = (0..body.len())
            .step_by(part_size)
            .zip(1..)
            .map(|(start, n)| (n, start..(start + part_size).min(body.len())))
            .collect();
        let parts: Vec<CompletedPart> = futures::stream::iter(ranges)
            .map(|(number, range)| {
                let chunk = body.slice(range);
                async move {
                    let out = self
                        .client
                        .upload_part()
                        .bucket(&self.bucket)
                        .key(key)
                        .upload_id(upload_id)
                        .part_number(number)
                        .body(chunk.into())
                        .send()
                        .await
                        .map_err(|e| classify("s3:UploadPart", &self.target(key), &e))?;
                    Ok::<_, PortError>(
                        CompletedPart::builder()
                            .part_number(number)
                            .set_e_tag(out.e_tag().map(str::to_owned))
                            .build(),
                    )
                }
            })
            .buffered(self.multipart.concurrency.max(1))
            .try_collect()
            .await?;
        drop(body);
        let result = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .if_none_match("*")
            .send()
            .await;
        match result {
            Ok(_) => Ok(PutOutcome::Created),
            Err(err) if is_precondition_failed(&err) => Ok(PutOutcome::AlreadyExists),
            Err(err) => Err(classify(
                "s3:CompleteMultipartUpload",
                &self.target(key),
                &err,
            )),
        }
    }
}

/// S3's answer to a failed `If-None-Match: *`: 412 Precondition Failed.
fn is_precondition_failed<E>(err: &SdkError<E, HttpResponse>) -> bool {
    err.raw_response()
        .is_some_and(|r| r.status().as_u16() == 412)
}

#[async_trait]
impl ObjectStore for S3ObjectStore {
    async fn put_if_absent(&self, key: &str, body: Vec<u8>) -> Result<PutOutcome, PortError> {
        if body.len() >= self.multipart.threshold {
            return self.put_parts_if_absent(key, body).await;
        }
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .content_type(Self::content_type(key))
            .if_none_match("*")
            .body(body.into())
            .send()
            .await;
        match result {
            Ok(_) => Ok(PutOutcome::Created),
            Err(err) if is_precondition_failed(&err) => Ok(PutOutcome::AlreadyExists),
            Err(err) => Err(classify("s3:PutObject", &self.target(key), &err)),
        }
    }

    async fn put(&self, key: &str, body: Vec<u8>) -> Result<(), PortError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body.into())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("s3:PutObject", &self.target(key), &e))
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, PortError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => {
                let bytes = out.body.collect().await.map_err(|e| PortError::Transient {
                    operation: "s3:GetObject",
                    target: self.target(key),
                    message: e.to_string(),
                })?;
                Ok(Some(bytes.into_bytes().to_vec()))
            }
            Err(err) if err.as_service_error().is_some_and(|e| e.is_no_such_key()) => Ok(None),
            Err(err) => Err(classify("s3:GetObject", &self.target(key), &err)),
        }
    }

    async fn list_after(&self, prefix: &str, start_after: &str) -> Result<Vec<String>, PortError> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .start_after(start_after)
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| classify("s3:ListObjectsV2", &self.target(prefix), &e))?;
            keys.extend(
                out.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_owned)),
            );
            match out.next_continuation_token() {
                Some(t) if out.is_truncated() == Some(true) => token = Some(t.to_owned()),
                _ => break,
            }
        }
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<(), PortError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("s3:DeleteObject", &self.target(key), &e))
    }

    fn url(&self, key: &str) -> String {
        self.target(key)
    }
}

/// The state registry table: `pk` (S, `source#stream#partition`) and `sk` (S): `checkpoint`
/// for the checkpoint item, `log#<first sortable cursor>` for commit-log items, `positions`
/// for the commit log's positions and `start` for a `start_from: latest` start position.
#[derive(Debug, Clone)]
pub struct DynamoStateStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

const CHECKPOINT_SK: &str = "checkpoint";

/// The item holding a partition's [`LogPositions`] (attributes `last_position`,
/// `reset_floor`).
const POSITIONS_SK: &str = "positions";

/// The item holding a partition's start position for `start_from: latest` (attribute
/// `start`; [`StateStore::claim_start`]).
const START_SK: &str = "start";

/// Commits that lose the position race this many times in a row fail as transient (only
/// concurrent interleaved lanes of one shard race for it).
const POSITION_ROUNDS: u32 = 32;

fn log_sk(first: &str) -> String {
    format!("log#{first}")
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn entry_item(pk: &str, sk: String, entry: &CommitEntry) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        ("pk".to_owned(), s(pk)),
        ("sk".to_owned(), s(sk)),
        ("first".to_owned(), s(&entry.first)),
        ("last".to_owned(), s(&entry.last)),
        ("records".to_owned(), n(entry.records)),
        ("dead_lettered".to_owned(), n(entry.dead_lettered)),
        ("object_bytes".to_owned(), n(entry.object_bytes)),
        ("payload_bytes".to_owned(), n(entry.payload_bytes)),
        ("run_id".to_owned(), s(&entry.run_id)),
        ("committed_at_ms".to_owned(), n(entry.committed_at_ms)),
    ]);
    if let Some(key) = &entry.object_key {
        item.insert("object_key".to_owned(), s(key));
    }
    if let Some(fp) = &entry.last_fingerprint {
        item.insert("last_fingerprint".to_owned(), s(fp));
    }
    if let Some(dead) = &entry.dead_cursors {
        item.insert(
            "dead_cursors".to_owned(),
            AttributeValue::L(dead.iter().map(s).collect()),
        );
    }
    if let Some(position) = entry.position {
        item.insert("position".to_owned(), n(position));
    }
    item
}

fn parse_entry(
    table: &str,
    item: &HashMap<String, AttributeValue>,
) -> Result<CommitEntry, PortError> {
    let bad = |field: &str| PortError::Permanent {
        operation: "dynamodb:decode",
        target: format!("{table}/{:?}", item.get("pk")),
        message: format!("item has no valid {field}"),
    };
    let text = |f: &str| {
        item.get(f)
            .and_then(|v| v.as_s().ok())
            .cloned()
            .ok_or_else(|| bad(f))
    };
    let num = |f: &str| {
        item.get(f)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
            .ok_or_else(|| bad(f))
    };
    Ok(CommitEntry {
        first: text("first")?,
        last: text("last")?,
        object_key: item.get("object_key").and_then(|v| v.as_s().ok()).cloned(),
        records: num("records")? as u64,
        dead_lettered: num("dead_lettered")? as u64,
        object_bytes: num("object_bytes")? as u64,
        payload_bytes: num("payload_bytes")? as u64,
        run_id: text("run_id")?,
        committed_at_ms: num("committed_at_ms")?,
        last_fingerprint: item
            .get("last_fingerprint")
            .and_then(|v| v.as_s().ok())
            .cloned(),
        dead_cursors: item
            .get("dead_cursors")
            .and_then(|v| v.as_l().ok())
            .map(|l| l.iter().filter_map(|v| v.as_s().ok().cloned()).collect()),
        position: match item.get("position") {
            None => None,
            Some(v) => Some(
                v.as_n()
                    .ok()
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| bad("position"))?,
            ),
        },
    })
}

/// What a cancelled commit transaction means, read from its cancellation reasons, which
/// come in the order of the transaction's items: the checkpoint put, the log put, then the
/// positions update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cancellation {
    /// The checkpoint's condition failed: another writer committed first.
    CheckpointMoved,
    /// Only the log entry's condition failed: an entry already starts at this first cursor
    /// while the checkpoint is unchanged (written by interleaved mode).
    LogEntryExists,
    /// Only the positions item's condition failed: another commit of the partition took
    /// the next commit-log position first (an interleaved lane); read it again and retry.
    PositionMoved,
    /// A conflict with another transaction, throttling or capacity: retry later.
    Transient(String),
    /// Anything else (validation, item size): retrying the same write cannot help.
    Permanent(String),
}

/// Classifies a `TransactionCanceledException` by its reasons (`None` or `"None"` for an item
/// that did not fail). Pure, so every combination is unit-tested.
pub fn classify_cancellation(reasons: &[Option<String>]) -> Cancellation {
    let code = |i: usize| reason_code(reasons, i);
    let failed: Vec<&str> = (0..reasons.len()).filter_map(code).collect();
    if code(0) == Some("ConditionalCheckFailed") {
        return Cancellation::CheckpointMoved;
    }
    if code(1) == Some("ConditionalCheckFailed") && failed.len() == 1 {
        return Cancellation::LogEntryExists;
    }
    if code(2) == Some("ConditionalCheckFailed") && failed.len() == 1 {
        return Cancellation::PositionMoved;
    }
    classify_other(&failed)
}

/// Classifies a cancelled interleaved commit (`log_commit`), whose items are the log put,
/// then the positions update.
pub fn classify_log_cancellation(reasons: &[Option<String>]) -> Cancellation {
    let code = |i: usize| reason_code(reasons, i);
    let failed: Vec<&str> = (0..reasons.len()).filter_map(code).collect();
    if code(0) == Some("ConditionalCheckFailed") {
        return Cancellation::LogEntryExists;
    }
    if code(1) == Some("ConditionalCheckFailed") && failed.len() == 1 {
        return Cancellation::PositionMoved;
    }
    classify_other(&failed)
}

/// The reason code of item `i` of a cancelled transaction, `None` when it did not fail.
fn reason_code(reasons: &[Option<String>], i: usize) -> Option<&str> {
    reasons
        .get(i)
        .and_then(|r| r.as_deref())
        .filter(|c| *c != "None")
}

/// The failure codes of a cancellation that is neither a moved checkpoint nor an existing
/// entry nor a moved position: transient or permanent.
fn classify_other(failed: &[&str]) -> Cancellation {
    let described = || format!("transaction cancelled, reasons [{}]", failed.join(", "));
    let transient = |c: &&str| {
        matches!(
            *c,
            "TransactionConflict"
                | "ThrottlingError"
                | "ProvisionedThroughputExceeded"
                | "RequestLimitExceeded"
                | "ConditionalCheckFailed"
        )
    };
    if !failed.is_empty() && failed.iter().all(transient) {
        Cancellation::Transient(described())
    } else if failed.is_empty() {
        // No reason given: the service did not say which item failed; treat as a conflict.
        Cancellation::Transient(described())
    } else {
        Cancellation::Permanent(described())
    }
}

/// The cancellation reasons of a cancelled transaction, in the order of its items.
fn cancellation_reasons<R>(
    err: &SdkError<aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError, R>,
) -> Option<Vec<Option<String>>> {
    err.as_service_error().and_then(|e| match e {
        aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => Some(
            c.cancellation_reasons()
                .iter()
                .map(|r| r.code().map(str::to_owned))
                .collect(),
        ),
        _ => None,
    })
}

impl DynamoStateStore {
    /// Builds the adapter for `table`.
    pub fn new(config: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        let conf = aws_sdk_dynamodb::config::Builder::from(config)
            .interceptor(RetryCounter)
            .build();
        Self {
            client: aws_sdk_dynamodb::Client::from_conf(conf),
            table: table.into(),
        }
    }

    fn target(&self, partition: &PartitionId) -> String {
        format!("{}/{}", self.table, partition.state_key())
    }

    /// The transaction item that takes the next commit-log position, conditioned on the
    /// positions read (`None`: the item must not exist yet).
    fn positions_update(
        &self,
        partition: &PartitionId,
        read: Option<LogPositions>,
    ) -> Result<Update, PortError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key("pk", s(partition.state_key()))
            .key("sk", s(POSITIONS_SK))
            .expression_attribute_names("#p", "last_position");
        let update = match read {
            None => update
                .update_expression("SET #p = :next, reset_floor = :zero")
                .condition_expression("attribute_not_exists(pk)")
                .expression_attribute_values(":next", n(1))
                .expression_attribute_values(":zero", n(0)),
            Some(p) => update
                .update_expression("SET #p = :next")
                .condition_expression("#p = :read")
                .expression_attribute_values(":next", n(p.last + 1))
                .expression_attribute_values(":read", n(p.last)),
        };
        update.build().map_err(|e| PortError::Permanent {
            operation: "dynamodb:TransactWriteItems",
            target: self.target(partition),
            message: e.to_string(),
        })
    }

    fn position_contended(&self, partition: &PartitionId) -> PortError {
        PortError::Transient {
            operation: "dynamodb:TransactWriteItems",
            target: self.target(partition),
            message: format!(
                "lost the race for the next commit-log position {POSITION_ROUNDS} times in a row"
            ),
        }
    }

    /// Every item of a partition (those whose sort key starts with `sk_prefix`, if given),
    /// in sort-key order, read consistently across pages.
    async fn query_partition(
        &self,
        partition: &PartitionId,
        sk_prefix: Option<&str>,
    ) -> Result<Vec<HashMap<String, AttributeValue>>, PortError> {
        let mut items = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let mut query = self
                .client
                .query()
                .table_name(&self.table)
                .expression_attribute_values(":pk", s(partition.state_key()))
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            query = match sk_prefix {
                Some(prefix) => query
                    .key_condition_expression("pk = :pk AND begins_with(sk, :sk)")
                    .expression_attribute_values(":sk", s(prefix)),
                None => query.key_condition_expression("pk = :pk"),
            };
            let out = query
                .send()
                .await
                .map_err(|e| classify("dynamodb:Query", &self.target(partition), &e))?;
            items.extend(out.items().iter().cloned());
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(items)
    }
}

#[async_trait]
impl StateStore for DynamoStateStore {
    async fn checkpoint(&self, partition: &PartitionId) -> Result<Option<Checkpoint>, PortError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(partition.state_key()))
            .key("sk", s(CHECKPOINT_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("dynamodb:GetItem", &self.target(partition), &e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let entry = parse_entry(&self.table, &item)?;
        Ok(Some(Checkpoint {
            cursor: entry.last.clone(),
            last_commit: entry,
        }))
    }

    async fn commit(
        &self,
        partition: &PartitionId,
        expected: Option<&str>,
        entry: &CommitEntry,
    ) -> Result<(), PortError> {
        let pk = partition.state_key();
        for _ in 0..POSITION_ROUNDS {
            let read = self.log_positions(partition).await?;
            let mut entry = entry.clone();
            entry.position = Some(read.map_or(1, |p| p.last + 1));
            let mut checkpoint = Put::builder()
                .table_name(&self.table)
                .set_item(Some(entry_item(&pk, CHECKPOINT_SK.to_owned(), &entry)));
            checkpoint = match expected {
                None => checkpoint.condition_expression("attribute_not_exists(pk)"),
                Some(cursor) => checkpoint
                    .condition_expression("#last = :expected")
                    .expression_attribute_names("#last", "last")
                    .expression_attribute_values(":expected", s(cursor)),
            };
            let log = Put::builder()
                .table_name(&self.table)
                .set_item(Some(entry_item(&pk, log_sk(&entry.first), &entry)))
                .condition_expression("attribute_not_exists(pk)");
            let build = |p: aws_sdk_dynamodb::types::builders::PutBuilder| {
                p.build().map_err(|e| PortError::Permanent {
                    operation: "dynamodb:TransactWriteItems",
                    target: self.target(partition),
                    message: e.to_string(),
                })
            };
            let result = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(build(checkpoint)?).build())
                .transact_items(TransactWriteItem::builder().put(build(log)?).build())
                .transact_items(
                    TransactWriteItem::builder()
                        .update(self.positions_update(partition, read)?)
                        .build(),
                )
                .send()
                .await;
            let Err(err) = result else {
                return Ok(());
            };
            let target = self.target(partition);
            match cancellation_reasons(&err).map(|r| classify_cancellation(&r)) {
                Some(Cancellation::PositionMoved) => continue,
                Some(Cancellation::CheckpointMoved) => {
                    let found = self.checkpoint(partition).await?.map(|c| c.cursor);
                    return Err(PortError::CheckpointMoved {
                        partition: partition.to_string(),
                        expected: expected.map(str::to_owned),
                        found,
                    });
                }
                Some(Cancellation::LogEntryExists) => {
                    return Err(PortError::LogEntryExists {
                        partition: partition.to_string(),
                        first: entry.first.clone(),
                        checkpoint: expected.map(str::to_owned),
                    });
                }
                Some(Cancellation::Transient(message)) => {
                    return Err(PortError::Transient {
                        operation: "dynamodb:TransactWriteItems",
                        target,
                        message,
                    });
                }
                Some(Cancellation::Permanent(message)) => {
                    return Err(PortError::Permanent {
                        operation: "dynamodb:TransactWriteItems",
                        target,
                        message,
                    });
                }
                None => return Err(classify("dynamodb:TransactWriteItems", &target, &err)),
            }
        }
        Err(self.position_contended(partition))
    }

    async fn log_commit(
        &self,
        partition: &PartitionId,
        entry: &CommitEntry,
    ) -> Result<Option<CommitEntry>, PortError> {
        let pk = partition.state_key();
        for _ in 0..POSITION_ROUNDS {
            let read = self.log_positions(partition).await?;
            let mut entry = entry.clone();
            entry.position = Some(read.map_or(1, |p| p.last + 1));
            let log = Put::builder()
                .table_name(&self.table)
                .set_item(Some(entry_item(&pk, log_sk(&entry.first), &entry)))
                .condition_expression("attribute_not_exists(pk)")
                .build()
                .map_err(|e| PortError::Permanent {
                    operation: "dynamodb:TransactWriteItems",
                    target: self.target(partition),
                    message: e.to_string(),
                })?;
            let result = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(log).build())
                .transact_items(
                    TransactWriteItem::builder()
                        .update(self.positions_update(partition, read)?)
                        .build(),
                )
                .send()
                .await;
            let Err(err) = result else {
                return Ok(None);
            };
            let target = self.target(partition);
            match cancellation_reasons(&err).map(|r| classify_log_cancellation(&r)) {
                Some(Cancellation::PositionMoved) => continue,
                Some(Cancellation::LogEntryExists) => {
                    return match self.commit_entry(partition, &entry.first).await? {
                        Some(existing) => Ok(Some(existing)),
                        None => Err(PortError::Transient {
                            operation: "dynamodb:TransactWriteItems",
                            target,
                            message: "commit-log entry vanished after a conditional failure".into(),
                        }),
                    };
                }
                Some(Cancellation::Transient(message)) => {
                    return Err(PortError::Transient {
                        operation: "dynamodb:TransactWriteItems",
                        target,
                        message,
                    });
                }
                Some(Cancellation::Permanent(message)) => {
                    return Err(PortError::Permanent {
                        operation: "dynamodb:TransactWriteItems",
                        target,
                        message,
                    });
                }
                Some(Cancellation::CheckpointMoved) | None => {
                    return Err(classify("dynamodb:TransactWriteItems", &target, &err));
                }
            }
        }
        Err(self.position_contended(partition))
    }

    async fn commit_entry(
        &self,
        partition: &PartitionId,
        first: &str,
    ) -> Result<Option<CommitEntry>, PortError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(partition.state_key()))
            .key("sk", s(log_sk(first)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("dynamodb:GetItem", &self.target(partition), &e))?;
        out.item
            .map(|item| parse_entry(&self.table, &item))
            .transpose()
    }

    async fn commit_log(&self, partition: &PartitionId) -> Result<Vec<CommitEntry>, PortError> {
        self.query_partition(partition, Some("log#"))
            .await?
            .iter()
            .map(|item| parse_entry(&self.table, item))
            .collect()
    }

    async fn forget_partition(&self, partition: &PartitionId) -> Result<u64, PortError> {
        let target = self.target(partition);
        // Read before deleting: entries committed while the reset runs keep positions above
        // the floor.
        let floor = self.log_positions(partition).await?.map(|p| p.last);
        let mut deleted = 0;
        for item in self.query_partition(partition, None).await? {
            let Some(sk) = item.get("sk").cloned() else {
                continue;
            };
            if sk.as_s().is_ok_and(|sk| sk == POSITIONS_SK) {
                continue;
            }
            self.client
                .delete_item()
                .table_name(&self.table)
                .key("pk", s(partition.state_key()))
                .key("sk", sk)
                .send()
                .await
                .map_err(|e| classify("dynamodb:DeleteItem", &target, &e))?;
            deleted += 1;
        }
        if let Some(floor) = floor {
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(partition.state_key()))
                .key("sk", s(POSITIONS_SK))
                .update_expression("SET reset_floor = :floor")
                .condition_expression("attribute_exists(pk) AND reset_floor <= :floor")
                .expression_attribute_values(":floor", n(floor))
                .send()
                .await;
            match result {
                Ok(_) => {}
                // A later reset already set a higher floor.
                Err(err)
                    if err
                        .as_service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
                Err(err) => return Err(classify("dynamodb:UpdateItem", &target, &err)),
            }
        }
        Ok(deleted)
    }

    async fn start(&self, partition: &PartitionId) -> Result<Option<String>, PortError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(partition.state_key()))
            .key("sk", s(START_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("dynamodb:GetItem", &self.target(partition), &e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        item.get("start")
            .and_then(|v| v.as_s().ok())
            .cloned()
            .map(Some)
            .ok_or_else(|| PortError::Permanent {
                operation: "dynamodb:GetItem",
                target: self.target(partition),
                message: format!(
                    "table {}: the start item of {partition} has no string attribute `start`",
                    self.table
                ),
            })
    }

    // A conditional PutItem, then a consistent GetItem when another reader recorded one
    // first: the calls the landing policy already grants (an UpdateItem would need its own
    // IAM statement).
    async fn claim_start(
        &self,
        partition: &PartitionId,
        proposed: &str,
    ) -> Result<String, PortError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", s(partition.state_key()))
            .item("sk", s(START_SK))
            .item("start", s(proposed))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => return Ok(proposed.to_owned()),
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) => {}
            Err(err) => return Err(classify("dynamodb:PutItem", &self.target(partition), &err)),
        }
        self.start(partition).await?.ok_or_else(|| PortError::Transient {
            operation: "dynamodb:GetItem",
            target: self.target(partition),
            message: "the start item was there for the conditional put and gone for the read (a reset ran meanwhile)".into(),
        })
    }

    async fn log_positions(
        &self,
        partition: &PartitionId,
    ) -> Result<Option<LogPositions>, PortError> {
        let target = self.target(partition);
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(partition.state_key()))
            .key("sk", s(POSITIONS_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| classify("dynamodb:GetItem", &target, &e))?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let num = |f: &str| {
            item.get(f)
                .and_then(|v| v.as_n().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| PortError::Permanent {
                    operation: "dynamodb:decode",
                    target: target.clone(),
                    message: format!("positions item has no valid {f}"),
                })
        };
        Ok(Some(LogPositions {
            last: num("last_position")?,
            reset_floor: num("reset_floor")?,
        }))
    }

    async fn logged_partitions(&self) -> Result<Vec<PartitionId>, PortError> {
        let mut ids = std::collections::BTreeSet::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("sk = :c OR sk = :p OR begins_with(sk, :log)")
                .expression_attribute_values(":c", s(CHECKPOINT_SK))
                .expression_attribute_values(":p", s(POSITIONS_SK))
                .expression_attribute_values(":log", s("log#"))
                .projection_expression("pk")
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| classify("dynamodb:Scan", &self.table, &e))?;
            for item in out.items() {
                if let Some(AttributeValue::S(pk)) = item.get("pk")
                    && let Some(id) = PartitionId::from_state_key(pk)
                {
                    ids.insert(id);
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(ids.into_iter().collect())
    }

    async fn partitions(&self) -> Result<Vec<PartitionId>, PortError> {
        let mut ids = Vec::new();
        let mut start: Option<HashMap<String, AttributeValue>> = None;
        loop {
            let out = self
                .client
                .scan()
                .table_name(&self.table)
                .filter_expression("sk = :c")
                .expression_attribute_values(":c", s(CHECKPOINT_SK))
                .projection_expression("pk")
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| classify("dynamodb:Scan", &self.table, &e))?;
            for item in out.items() {
                if let Some(AttributeValue::S(pk)) = item.get("pk") {
                    if let Some(id) = PartitionId::from_state_key(pk) {
                        ids.push(id);
                    }
                }
            }
            match out.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        ids.sort();
        Ok(ids)
    }
}

/// The SQS dead-letter queue (standard or FIFO).
#[derive(Debug, Clone)]
pub struct SqsDeadLetterQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl SqsDeadLetterQueue {
    /// Builds the adapter for the queue at `url`.
    pub fn new(config: &aws_config::SdkConfig, url: impl Into<String>) -> Self {
        let conf = aws_sdk_sqs::config::Builder::from(config)
            .interceptor(RetryCounter)
            .build();
        Self {
            client: aws_sdk_sqs::Client::from_conf(conf),
            url: url.into(),
        }
    }
}

impl SqsDeadLetterQueue {
    fn dedup_attribute(
        &self,
        operation: &'static str,
        dedup_id: &str,
    ) -> Result<aws_sdk_sqs::types::MessageAttributeValue, PortError> {
        aws_sdk_sqs::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(dedup_id)
            .build()
            .map_err(|e| PortError::Permanent {
                operation,
                target: self.url.clone(),
                message: e.to_string(),
            })
    }

    /// FIFO queues: `(deduplication id, group id)` of a letter; its group is its partition,
    /// so letters of one partition stay in order.
    fn fifo_ids(&self, dedup_id: &str) -> Option<(String, String)> {
        self.url.ends_with(".fifo").then(|| {
            let group = dedup_id.rsplit_once('/').map_or(dedup_id, |(g, _)| g);
            (
                crate::bronze::key_hash(dedup_id.as_bytes()),
                crate::bronze::key_hash(group.as_bytes()),
            )
        })
    }

    /// One SendMessageBatch call; returns the indexes (into `chunk`) that failed and, for
    /// each, whether SQS blamed the sender and its error.
    async fn send_chunk(
        &self,
        letters: &[(String, String)],
        chunk: &[usize],
    ) -> Result<Vec<(usize, bool, String)>, PortError> {
        use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
        const OPERATION: &str = "sqs:SendMessageBatch";
        let mut request = self.client.send_message_batch().queue_url(&self.url);
        for &i in chunk {
            let (dedup_id, body) = &letters[i];
            let mut entry = SendMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .message_body(body)
                .message_attributes("dead_letter_id", self.dedup_attribute(OPERATION, dedup_id)?);
            if let Some((dedup, group)) = self.fifo_ids(dedup_id) {
                entry = entry
                    .message_deduplication_id(dedup)
                    .message_group_id(group);
            }
            request = request.entries(entry.build().map_err(|e| PortError::Permanent {
                operation: OPERATION,
                target: self.url.clone(),
                message: e.to_string(),
            })?);
        }
        let out = request.send().await.map_err(|e| {
            let first = chunk.first().map(|&i| letters[i].0.as_str()).unwrap_or("");
            classify(OPERATION, &format!("{} ({first}, ...)", self.url), &e)
        })?;
        Ok(out
            .failed()
            .iter()
            .filter_map(|f| {
                let i = f.id().parse::<usize>().ok()?;
                Some((
                    i,
                    f.sender_fault(),
                    format!("{}: {}", f.code(), f.message().unwrap_or_default()),
                ))
            })
            .collect())
    }
}

/// SendMessageBatch limits: 10 entries and 256 KiB of bodies and attributes per call (letters are at most
/// [`crate::dlq::MAX_INLINE_LETTER_BYTES`] each, so a chunk always holds at least one).
const BATCH_ENTRIES: usize = 10;
const BATCH_BYTES: usize = 256 * 1024;
/// Rounds of resending the entries SQS failed without blaming the sender.
const BATCH_ROUNDS: usize = 4;

/// Splits letter sizes into SendMessageBatch calls, in order: at most [`BATCH_ENTRIES`] per
/// call and at most [`BATCH_BYTES`] of bodies (a single larger letter gets a call of its own).
pub fn batch_chunks(sizes: &[(usize, usize)]) -> Vec<Vec<usize>> {
    let mut chunks: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0;
    for &(i, size) in sizes {
        match chunks.last_mut() {
            Some(chunk) if chunk.len() < BATCH_ENTRIES && bytes + size <= BATCH_BYTES => {
                chunk.push(i);
                bytes += size;
            }
            _ => {
                chunks.push(vec![i]);
                bytes = size;
            }
        }
    }
    chunks
}

#[async_trait]
impl DeadLetterQueue for SqsDeadLetterQueue {
    async fn send(&self, dedup_id: &str, body: &str) -> Result<(), PortError> {
        let attr = self.dedup_attribute("sqs:SendMessage", dedup_id)?;
        let mut request = self
            .client
            .send_message()
            .queue_url(&self.url)
            .message_body(body)
            .message_attributes("dead_letter_id", attr);
        if let Some((dedup, group)) = self.fifo_ids(dedup_id) {
            request = request
                .message_deduplication_id(dedup)
                .message_group_id(group);
        }
        request
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("sqs:SendMessage", &format!("{} ({dedup_id})", self.url), &e))
    }

    /// SendMessageBatch, up to 10 letters per call. Entries SQS fails without blaming the
    /// sender (throttling, internal errors) are sent again, a few rounds, then the error is
    /// transient; an entry failed as the sender's fault is a permanent error naming it.
    async fn send_all(&self, letters: &[(String, String)]) -> Result<(), PortError> {
        let mut pending: Vec<usize> = (0..letters.len()).collect();
        for round in 0..BATCH_ROUNDS {
            if pending.is_empty() {
                return Ok(());
            }
            if round > 0 {
                tokio::time::sleep(Duration::from_millis(100 << round)).await;
            }
            let sizes: Vec<(usize, usize)> = pending
                .iter()
                // The body, the id attribute and its name and type.
                .map(|&i| (i, letters[i].1.len() + letters[i].0.len() + 64))
                .collect();
            let mut failed = Vec::new();
            for chunk in batch_chunks(&sizes) {
                for (i, sender_fault, error) in self.send_chunk(letters, &chunk).await? {
                    if sender_fault {
                        return Err(PortError::Permanent {
                            operation: "sqs:SendMessageBatch",
                            target: format!("{} ({})", self.url, letters[i].0),
                            message: error,
                        });
                    }
                    failed.push((i, error));
                }
            }
            if let Some((i, error)) = failed.first().filter(|_| round + 1 == BATCH_ROUNDS) {
                return Err(PortError::Transient {
                    operation: "sqs:SendMessageBatch",
                    target: format!(
                        "{} ({}, {} letters in all)",
                        self.url,
                        letters[*i].0,
                        failed.len()
                    ),
                    message: error.clone(),
                });
            }
            pending = failed.into_iter().map(|(i, _)| i).collect();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letters_go_out_ten_at_a_time_within_the_byte_limit() {
        let small: Vec<(usize, usize)> = (0..23).map(|i| (i, 100)).collect();
        let chunks = batch_chunks(&small);
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 3]);
        assert_eq!(
            chunks.concat(),
            (0..23).collect::<Vec<_>>(),
            "in order, each once"
        );
        // 100 KiB letters: two per call.
        let big: Vec<(usize, usize)> = (0..5).map(|i| (i, 100 * 1024)).collect();
        assert_eq!(batch_chunks(&big), vec![vec![0, 1], vec![2, 3], vec![4]]);
        // A letter larger than the byte limit alone still gets a call.
        assert_eq!(
            batch_chunks(&[(7, 300 * 1024), (8, 10)]),
            vec![vec![7], vec![8]]
        );
        assert!(batch_chunks(&[]).is_empty());
    }

    fn reasons(codes: &[&str]) -> Vec<Option<String>> {
        codes.iter().map(|c| Some((*c).to_owned())).collect()
    }

    #[test]
    fn a_moved_position_is_retried_and_only_alone() {
        assert_eq!(
            classify_cancellation(&reasons(&["None", "None", "ConditionalCheckFailed"])),
            Cancellation::PositionMoved
        );
        // The checkpoint or the entry failing too says more than the position.
        assert_eq!(
            classify_cancellation(&reasons(&[
                "ConditionalCheckFailed",
                "None",
                "ConditionalCheckFailed"
            ])),
            Cancellation::CheckpointMoved
        );
        assert_eq!(
            classify_log_cancellation(&reasons(&["None", "ConditionalCheckFailed"])),
            Cancellation::PositionMoved
        );
        assert_eq!(
            classify_log_cancellation(&reasons(&[
                "ConditionalCheckFailed",
                "ConditionalCheckFailed"
            ])),
            Cancellation::LogEntryExists
        );
        assert!(matches!(
            classify_log_cancellation(&reasons(&["None", "TransactionConflict"])),
            Cancellation::Transient(_)
        ));
        assert!(matches!(
            classify_log_cancellation(&reasons(&["ValidationError", "None"])),
            Cancellation::Permanent(_)
        ));
    }

    #[test]
    fn cancellation_reasons_name_the_item_that_failed() {
        assert_eq!(
            classify_cancellation(&reasons(&["ConditionalCheckFailed", "None"])),
            Cancellation::CheckpointMoved
        );
        assert_eq!(
            classify_cancellation(&reasons(&[
                "ConditionalCheckFailed",
                "ConditionalCheckFailed"
            ])),
            Cancellation::CheckpointMoved
        );
        assert_eq!(
            classify_cancellation(&reasons(&["None", "ConditionalCheckFailed"])),
            Cancellation::LogEntryExists
        );
        assert_eq!(
            classify_cancellation(&[None, Some("ConditionalCheckFailed".into())]),
            Cancellation::LogEntryExists
        );
        for transient in [
            &["TransactionConflict", "None"][..],
            &["None", "TransactionConflict"],
            &["ThrottlingError", "ThrottlingError"],
            &["ProvisionedThroughputExceeded", "None"],
            &["TransactionConflict", "ConditionalCheckFailed"],
            &[],
        ] {
            assert!(
                matches!(
                    classify_cancellation(&reasons(transient)),
                    Cancellation::Transient(_)
                ),
                "{transient:?}"
            );
        }
        match classify_cancellation(&reasons(&["ValidationError", "None"])) {
            Cancellation::Permanent(m) => assert!(m.contains("ValidationError"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            classify_cancellation(&reasons(&[
                "ItemCollectionSizeLimitExceeded",
                "ThrottlingError"
            ])),
            Cancellation::Permanent(_)
        ));
    }
}
