//! pulsar-lite (PyPI `pulsar-lite`) as a local Pulsar broker for the tests, and a producer
//! helper that uses the `pulsar` crate through [`PulsarShim`](crate::pulsar_shim::PulsarShim).
//!
//! The broker binary comes from `PULSAR_LITE_BIN`, else from the project's virtualenv
//! (`.venv/lib/python3.11/site-packages/pulsar_lite/bin/pulsar-lite`, installed by
//! `make venv`). A missing binary is an error, never a skip.
//!
//! What pulsar-lite 0.2.0 does differently from Apache Pulsar (see `tests/pulsar_shim.rs`):
//! - MESSAGE frames carry no magic number and checksum, and lookups name the broker's own
//!   address: the `pulsar` crate can only consume through the shim. Producing works either
//!   way (no broker frame carries a payload then).
//! - Partitioned topics exist only as `default_partitions` in its config (no admin API):
//!   [`PulsarLite::start_with_partitions`].
//! - A refused command (a second consumer on an Exclusive subscription) closes the whole
//!   connection instead of answering ERROR, cutting every consumer and producer on it.
//! - A consumer following the tail while messages are published may get an entry twice.
//! - No ACTIVE_CONSUMER_CHANGE for Failover consumers.

use anyhow::{Context, Result, bail};
use pulsar::proto::MessageIdData;
use pulsar::{ConnectionRetryOptions, OperationRetryOptions, Pulsar, TokioExecutor};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The binary's path inside the project's virtualenv (for the Python it was made with).
pub const VENV_BINARY: &str = ".venv/lib/python3.11/site-packages/pulsar_lite/bin/pulsar-lite";

/// A pulsar-lite process on a free loopback port with its own fresh database directory.
/// Dropping it kills the process and removes the directory.
#[derive(Debug)]
pub struct PulsarLite {
    /// The broker's address (`--addr`).
    pub addr: SocketAddr,
    /// `pulsar://<addr>`: the direct URL (the `pulsar` crate needs the shim's URL instead).
    pub url: String,
    /// Partitions of every auto-created topic (`default_partitions`; 0: not partitioned).
    pub partitions: u32,
    child: Option<Child>,
    dir: PathBuf,
}

/// The pulsar-lite binary: `PULSAR_LITE_BIN`, else the virtualenv's ([`VENV_BINARY`], or
/// the same under another `.venv/lib/python3.*`).
pub fn binary() -> Result<PathBuf> {
    let path = match std::env::var_os("PULSAR_LITE_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let default = crate::workspace().join(VENV_BINARY);
            let other_pythons = std::fs::read_dir(crate::workspace().join(".venv/lib"))
                .into_iter()
                .flatten()
                .flatten()
                .map(|d| d.path().join("site-packages/pulsar_lite/bin/pulsar-lite"));
            std::iter::once(default.clone())
                .chain(other_pythons)
                .find(|p| p.is_file())
                .unwrap_or(default)
        }
    };
    if !path.is_file() {
        bail!(
            "the pulsar-lite broker is not installed at {}: run `make venv` (it installs the \
             PyPI package pulsar-lite) or set PULSAR_LITE_BIN",
            path.display()
        );
    }
    Ok(path)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl PulsarLite {
    /// A broker whose auto-created topics are not partitioned.
    pub fn start() -> Result<Self> {
        Self::start_with_partitions(0)
    }

    /// A broker that creates every new topic as a partitioned topic of `partitions`
    /// partitions (pulsar-lite has no admin API: `default_partitions` is the only way to get
    /// a partitioned topic). `topic-partition-N` names one partition.
    pub fn start_with_partitions(partitions: u32) -> Result<Self> {
        let bin = binary()?;
        let port = free_port()?;
        let dir = std::env::temp_dir().join(format!(
            "bronze-pulsar-lite-{port}-{}",
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)?;
        // An explicit config file: without one pulsar-lite reads ./pulsar-lite.toml if there
        // is one, and by default serves metrics on 0.0.0.0:8080, which two brokers (or
        // anything else on 8080) would fight over.
        std::fs::write(
            dir.join("pulsar-lite.toml"),
            format!("default_partitions = {partitions}\n\n[metrics]\nenabled = false\n"),
        )?;
        let mut broker = Self {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            url: format!("pulsar://127.0.0.1:{port}"),
            partitions,
            child: None,
            dir,
        };
        broker.spawn(&bin)?;
        Ok(broker)
    }

    fn spawn(&mut self, bin: &Path) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(self.dir.join("pulsar-lite.toml"))
            .arg("--addr")
            .arg(self.addr.to_string())
            .arg("--db-path")
            .arg(self.db_path())
            .arg("--log-level")
            .arg(std::env::var("PULSAR_LITE_LOG").unwrap_or_else(|_| "info".to_owned()))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("spawn {}", bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(self.addr).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait()? {
                self.child = None;
                bail!(
                    "pulsar-lite exited ({status}) before listening on {}:\n{}",
                    self.addr,
                    self.log()
                );
            }
            if Instant::now() > deadline {
                self.stop();
                bail!(
                    "pulsar-lite did not listen on {} within 30 s:\n{}",
                    self.addr,
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the broker (SIGKILL, as a crash) and waits for it. Its data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the broker and starts it again on the same port with the same database.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let bin = binary()?;
        self.spawn(&bin)
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// The database directory (`--db-path`).
    pub fn db_path(&self) -> PathBuf {
        self.dir.join("db")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("broker.log")
    }

    /// The broker's output so far (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }
}

impl Drop for PulsarLite {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `pulsar` crate client for `url` (the shim's) with quick reconnects, so a broker restart
/// or a dropped connection costs a test seconds, not minutes.
pub async fn client(url: &str) -> Result<Pulsar<TokioExecutor>> {
    Pulsar::builder(url, TokioExecutor)
        .with_connection_retry_options(ConnectionRetryOptions {
            min_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            max_retries: 60,
            connection_timeout: Duration::from_secs(5),
            ..Default::default()
        })
        .with_operation_retry_options(OperationRetryOptions {
            operation_timeout: Duration::from_secs(10),
            retry_delay: Duration::from_millis(200),
            max_retries: Some(50),
        })
        .build()
        .await
        .with_context(|| format!("connect the pulsar crate to {url}"))
}

/// Produces `n` messages to `topic` with the `pulsar` crate through `url` (the shim's),
/// unbatched: message `i` has key `key` (when given) and payload `payload(i)`. Waits for
/// every receipt and returns the message ids the broker gave, in order (ledger, entry, and
/// partition: -1 for a topic that is not partitioned). With a key, all messages of a
/// partitioned topic go to one partition (the crate hashes the key); without, they go
/// round-robin over the partitions. The crate's producer works with pulsar-lite, through
/// the shim or straight (`url` may be [`PulsarLite::url`]).
pub async fn produce(
    url: &str,
    topic: &str,
    n: usize,
    key: Option<&str>,
    payload: impl Fn(usize) -> Vec<u8>,
) -> Result<Vec<MessageIdData>> {
    let pulsar = client(url).await?;
    let mut producer = pulsar
        .producer()
        .with_topic(topic)
        .build()
        .await
        .with_context(|| format!("create a producer on {topic}"))?;
    // In windows of at most 50 outstanding sends: the crate's connection queue is bounded
    // (100 by default) and answers `SlowDown` when a burst outruns the broker.
    let mut ids = Vec::with_capacity(n);
    for window in (0..n).collect::<Vec<_>>().chunks(50) {
        let mut receipts = Vec::with_capacity(window.len());
        for &i in window {
            let message = pulsar::producer::Message {
                payload: payload(i),
                partition_key: key.map(str::to_owned),
                ..Default::default()
            };
            receipts.push(producer.send_non_blocking(message).await?);
        }
        for receipt in receipts {
            let receipt = receipt.await.context("send receipt")?;
            ids.push(
                receipt
                    .message_id
                    .context("a send receipt without a message id")?,
            );
        }
    }
    producer.close().await?;
    Ok(ids)
}
