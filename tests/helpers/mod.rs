//! Shared helpers for the integration tests: a unique set of AWS resources on the local
//! stack (moto), a `cargo lambda watch` process per test, `cargo lambda invoke`, and readers
//! for the committed Bronze data, checkpoints and the DLQ.
//!
//! Endpoints come from the environment with local defaults: `AWS_ENDPOINT_URL`
//! (`http://127.0.0.1:5055`). A missing service is a test failure, never a skip.

use anyhow::{Context, Result, bail};
use bronze::aws::{DynamoStateStore, S3ObjectStore};
use bronze::ports::{Checkpoint, CommitEntry, ObjectStore, StateStore};
use bronze::record::{PartitionId, Source};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The workspace root (where `Cargo.toml`, `events/` and `config/` are).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Reads a sample event from `events/`.
pub fn event(name: &str) -> Value {
    let path = workspace().join("events").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The AWS settings for clients and child processes.
pub fn aws_env() -> Vec<(String, String)> {
    [
        ("AWS_ENDPOINT_URL", "http://127.0.0.1:5055"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
    ]
    .into_iter()
    .map(|(k, default)| {
        (
            k.to_owned(),
            std::env::var(k).unwrap_or_else(|_| default.to_owned()),
        )
    })
    .collect()
}

fn env_value(name: &str) -> String {
    aws_env().into_iter().find(|(k, _)| k == name).unwrap().1
}

/// One test's private bucket, table and queue on the local stack.
#[derive(Debug)]
pub struct Stack {
    /// SDK configuration pointing at the local stack.
    pub sdk: aws_config::SdkConfig,
    /// Bucket name.
    pub bucket: String,
    /// State table name.
    pub table: String,
    /// DLQ URL.
    pub queue_url: String,
    /// Key prefix.
    pub prefix: String,
}

impl Stack {
    /// SDK config for the local stack.
    pub async fn sdk() -> aws_config::SdkConfig {
        let creds = aws_sdk_s3::config::Credentials::new(
            env_value("AWS_ACCESS_KEY_ID"),
            env_value("AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "tests",
        );
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(env_value("AWS_ENDPOINT_URL"))
            .region(aws_config::Region::new(env_value("AWS_REGION")))
            .credentials_provider(creds)
            .load()
            .await
    }

    /// Names only: nothing is created (for tests of missing resources).
    pub async fn names() -> Result<Self> {
        let sdk = Self::sdk().await;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let queue = format!("dlq-{}", &id[..12]);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let endpoint = env_value("AWS_ENDPOINT_URL");
        // Probe the stack so a missing moto is a clear failure, not a confusing timeout.
        sqs.list_queues().send().await.with_context(|| {
            format!("the local stack is not answering at {endpoint}: run `make stack-up` (make test does)")
        })?;
        Ok(Self {
            sdk,
            bucket: format!("bronze-{}", &id[..12]),
            table: format!("state-{}", &id[..12]),
            queue_url: format!("{endpoint}/123456789012/{queue}"),
            prefix: "bronze".to_owned(),
        })
    }

    /// A new, unique bucket, table and queue.
    pub async fn new() -> Result<Self> {
        let stack = Self::names().await?;
        stack.create_bucket().await?;
        stack.create_table().await?;
        stack.create_queue().await?;
        Ok(stack)
    }

    /// Creates the bucket.
    pub async fn create_bucket(&self) -> Result<()> {
        let s3 = self.s3();
        s3.create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .context("create bucket")?;
        Ok(())
    }

    /// Creates the state table with the registry's key schema.
    pub async fn create_table(&self) -> Result<()> {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
        };
        let ddb = aws_sdk_dynamodb::Client::new(&self.sdk);
        ddb.create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("pk")
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
            )
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name("sk")
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("pk")
                    .key_type(KeyType::Hash)
                    .build()?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name("sk")
                    .key_type(KeyType::Range)
                    .build()?,
            )
            .send()
            .await
            .context("create table")?;
        Ok(())
    }

    /// Creates the queue.
    pub async fn create_queue(&self) -> Result<()> {
        let name = self.queue_url.rsplit('/').next().unwrap();
        aws_sdk_sqs::Client::new(&self.sdk)
            .create_queue()
            .queue_name(name)
            .send()
            .await
            .context("create queue")?;
        Ok(())
    }

    /// An S3 client (path-style, as the local stack needs).
    pub fn s3(&self) -> aws_sdk_s3::Client {
        aws_sdk_s3::Client::from_conf(
            aws_sdk_s3::config::Builder::from(&self.sdk)
                .force_path_style(true)
                .build(),
        )
    }

    /// The engine's own DynamoDB adapter, for reading checkpoints and the commit log.
    pub fn state(&self) -> DynamoStateStore {
        DynamoStateStore::new(&self.sdk, &self.table)
    }

    /// The engine's own S3 adapter.
    pub fn objects(&self) -> S3ObjectStore {
        S3ObjectStore::new(&self.sdk, &self.bucket)
    }

    /// The checkpoint of a partition.
    pub async fn checkpoint(
        &self,
        source: Source,
        stream: &str,
        partition: &str,
    ) -> Option<Checkpoint> {
        self.state()
            .checkpoint(&PartitionId::new(source, stream, partition))
            .await
            .unwrap()
    }

    /// The commit log of a partition.
    pub async fn commit_log(
        &self,
        source: Source,
        stream: &str,
        partition: &str,
    ) -> Vec<CommitEntry> {
        self.state()
            .commit_log(&PartitionId::new(source, stream, partition))
            .await
            .unwrap()
    }

    /// The committed Bronze lines of a partition, read through the commit log (the way a
    /// reader must), in commit order.
    pub async fn committed_lines(
        &self,
        source: Source,
        stream: &str,
        partition: &str,
    ) -> Vec<Value> {
        let mut lines = Vec::new();
        for entry in self.commit_log(source, stream, partition).await {
            if let Some(key) = entry.object_key {
                let body = self
                    .objects()
                    .get(&key)
                    .await
                    .unwrap()
                    .unwrap_or_else(|| panic!("committed object {key} is missing"));
                lines.extend(bronze::bronze::read_lines(&body).unwrap());
            }
        }
        lines
    }

    /// The cursors of the committed lines of a partition.
    pub async fn committed_cursors(
        &self,
        source: Source,
        stream: &str,
        partition: &str,
    ) -> Vec<String> {
        self.committed_lines(source, stream, partition)
            .await
            .iter()
            .map(|l| l["cursor"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Every key in the bucket.
    pub async fn keys(&self) -> Vec<String> {
        self.objects()
            .list_after(&format!("{}/", self.prefix), "")
            .await
            .unwrap()
    }

    /// Drains the DLQ and returns the parsed letters.
    pub async fn dead_letters(&self) -> Vec<Value> {
        let sqs = aws_sdk_sqs::Client::new(&self.sdk);
        let mut letters = Vec::new();
        loop {
            let out = sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send()
                .await
                .unwrap();
            let messages = out.messages();
            if messages.is_empty() {
                break;
            }
            for m in messages {
                letters.push(serde_json::from_str(m.body().unwrap()).unwrap());
                sqs.delete_message()
                    .queue_url(&self.queue_url)
                    .receipt_handle(m.receipt_handle().unwrap())
                    .send()
                    .await
                    .unwrap();
            }
        }
        letters
    }
}

/// A `cargo lambda watch` process serving both functions with this stack's environment.
#[derive(Debug)]
pub struct Watch {
    child: Child,
    port: u16,
    dir: PathBuf,
}

fn cargo_lambda() -> Result<PathBuf> {
    if let Ok(path) = std::env::var("CARGO_LAMBDA") {
        return Ok(PathBuf::from(path));
    }
    let candidates = [workspace().join(".venv/bin/cargo-lambda")];
    for c in candidates {
        if c.exists() {
            return Ok(c);
        }
    }
    which("cargo-lambda").context("cargo-lambda is not installed: run `make venv` (make test does)")
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.exists())
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Watch {
    /// Starts the watcher with the stack's bucket, table and queue, plus `extra` variables.
    pub fn start(stack: &Stack, extra: &[(&str, &str)]) -> Result<Self> {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "bronze-watch-{port}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)?;
        let mut vars = vec![
            format!("BRONZE_BUCKET={}", stack.bucket),
            format!("STATE_TABLE={}", stack.table),
            format!("DLQ_URL={}", stack.queue_url),
            format!("BRONZE_PREFIX={}", stack.prefix),
            format!(
                "CONNECTOR_CONFIG={}",
                workspace().join("config/connector.yaml").display()
            ),
            "RUST_LOG=info".to_owned(),
        ];
        vars.extend(extra.iter().map(|(k, v)| format!("{k}={v}")));
        let env_file = dir.join("env");
        std::fs::write(&env_file, vars.join("\n"))?;
        let log = std::fs::File::create(dir.join("watch.log"))?;
        let mut cmd = Command::new(cargo_lambda()?);
        cmd.args([
            "lambda",
            "watch",
            "--ignore-changes",
            "-A",
            "127.0.0.1",
            "-P",
            &port.to_string(),
        ])
        .arg("--env-file")
        .arg(&env_file)
        .current_dir(workspace())
        .envs(aws_env())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().context("spawn cargo lambda watch")?;
        let watch = Self { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(120);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!(
                    "cargo lambda watch did not listen on {port}: {}",
                    watch.log()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(watch)
    }

    /// The watcher's and functions' output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("watch.log")).unwrap_or_default()
    }

    /// Invokes `function` through `cargo lambda invoke` with `event`; `Err` carries the
    /// function's error when the invocation fails.
    pub fn invoke(&self, function: &str, event: &Value) -> Result<Value, String> {
        let file = self
            .dir
            .join(format!("event-{}.json", uuid::Uuid::new_v4().simple()));
        std::fs::write(&file, serde_json::to_vec(event).unwrap()).unwrap();
        let out = Command::new(cargo_lambda().unwrap())
            .args([
                "lambda",
                "invoke",
                "-A",
                "127.0.0.1",
                "-P",
                &self.port.to_string(),
                "--data-file",
            ])
            .arg(&file)
            .arg(function)
            .current_dir(workspace())
            .output()
            .expect("run cargo lambda invoke");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            serde_json::from_str(stdout.trim())
                .map_err(|e| format!("unparsable response {stdout:?}: {e}"))
        } else {
            Err(format!("{stdout}{stderr}"))
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // Signal the whole group (the watcher and the function processes it started). The
        // `nix` call avoids `kill -TERM -<pgid>`, which procps-ng 4.0.2 misparses.
        let pgid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

/// The Kinesis sample event restricted to records `range` (a different batch boundary).
pub fn kinesis_slice(event: &Value, range: std::ops::Range<usize>) -> Value {
    let records = event["Records"].as_array().unwrap()[range].to_vec();
    serde_json::json!({ "Records": records })
}

/// The sequence numbers of a Kinesis event, in order.
pub fn kinesis_cursors(event: &Value) -> Vec<String> {
    event["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kinesis"]["sequenceNumber"].as_str().unwrap().to_owned())
        .collect()
}

/// `(topic, partition) -> offsets` of a Kafka event.
pub fn kafka_partitions(
    event: &Value,
) -> std::collections::BTreeMap<(String, String), Vec<String>> {
    let mut out = std::collections::BTreeMap::<(String, String), Vec<String>>::new();
    for records in event["records"].as_object().unwrap().values() {
        for r in records.as_array().unwrap() {
            out.entry((
                r["topic"].as_str().unwrap().to_owned(),
                r["partition"].to_string(),
            ))
            .or_default()
            .push(r["offset"].to_string());
        }
    }
    out
}
/// One KPL user record: partition key, explicit hash key, data.
pub type KplUserRecord = (String, Option<String>, Vec<u8>);

/// KPL aggregates built by AWS's reference aggregator (`aws_kinesis_agg`'s
/// `RecordAggregator`, from the project's virtualenv): one aggregate per list of
/// `(partition key, explicit hash key, data)` user records.
pub fn kpl_aggregates(lists: &[Vec<KplUserRecord>]) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use std::io::Write as _;
    let spec: Vec<Vec<Value>> = lists
        .iter()
        .map(|users| {
            users
                .iter()
                .map(|(pk, ehk, data)| serde_json::json!([pk, ehk, B64.encode(data)]))
                .collect()
        })
        .collect();
    let script = r#"
import base64, json, sys
from aws_kinesis_agg.aggregator import RecordAggregator
out = []
for users in json.load(sys.stdin):
    agg = RecordAggregator()
    for pk, ehk, data in users:
        # add_user_record returns a full aggregate only past the 1 MB limit.
        assert agg.add_user_record(pk, base64.b64decode(data), explicit_hash_key=ehk) is None
    _, _, data = agg.clear_and_get().get_contents()
    out.append(base64.b64encode(data).decode())
print(json.dumps(out))
"#;
    let mut child = Command::new(workspace().join(".venv/bin/python"))
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run .venv/bin/python (make venv installs aws-kinesis-agg)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(&spec).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "aws-kinesis-agg failed");
    let encoded: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    encoded.iter().map(|e| B64.decode(e).unwrap()).collect()
}

pub mod audit;
pub mod confluent_server;
pub mod fault_proxy;
pub mod mapping;
pub mod pulsar;
pub mod pulsar_shim;
