//! Helpers for the runner's integration tests: a tansu broker per test on a free port, topic
//! creation and test data through rdkafka, and the `streaming-connector` binary as a child
//! process with this test's bucket, table and queue on the local stack (moto).
//!
//! A missing tansu is a test failure that says how to install it (`scripts/brokers.sh`,
//! which `make test` runs), never a skip.

#![allow(dead_code, unreachable_pub)]

use anyhow::{Context, Result, bail};
use integration_tests::Stack;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A free local port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tansu_bin() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("TANSU_BIN") {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cached = PathBuf::from(&home).join(".cache/bronze-connector/tools/bin/tansu");
    if cached.exists() {
        return Ok(cached);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|p| p.join("tansu"))
                .find(|p| p.exists())
        })
        .context("tansu is not installed: run scripts/brokers.sh (make test does)")
}

/// A tansu broker (Kafka protocol) on a free port.
#[derive(Debug)]
pub struct Tansu {
    child: Option<Child>,
    /// `127.0.0.1:<port>`.
    pub bootstrap: String,
    port: u16,
    storage: String,
    extra: Vec<String>,
    log: PathBuf,
}

impl Tansu {
    /// Starts a broker with in-memory storage.
    pub fn start() -> Result<Self> {
        Self::start_with("memory://tansu/", &[])
    }

    /// Starts a broker with the given storage engine and extra arguments.
    pub fn start_with(storage: &str, extra: &[&str]) -> Result<Self> {
        let port = free_port();
        let log = std::env::temp_dir().join(format!(
            "tansu-{port}-{}.log",
            uuid::Uuid::new_v4().simple()
        ));
        let mut t = Self {
            child: None,
            bootstrap: format!("127.0.0.1:{port}"),
            port,
            storage: storage.to_owned(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            log,
        };
        t.spawn()?;
        Ok(t)
    }

    fn spawn(&mut self) -> Result<()> {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(tansu_bin()?)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", &self.storage])
            .args(&self.extra)
            .envs(integration_tests::aws_env())
            // For s3:// storage on the local stack (object_store refuses http otherwise).
            .env("AWS_ALLOW_HTTP", "true")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawn tansu")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if Instant::now() > deadline {
                bail!("tansu did not listen on {}: {}", self.port, self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Kills the broker (SIGKILL) and starts it again on the same port and storage.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    /// Kills the broker.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The broker's output.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        c
    }

    /// Creates a topic.
    pub async fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        let admin: AdminClient<DefaultClientContext> = self.client().create()?;
        let results = admin
            .create_topics(
                &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await?;
        for r in results {
            r.map_err(|(t, e)| anyhow::anyhow!("create topic {t}: {e}"))?;
        }
        Ok(())
    }

    /// Produces `count` messages round-robin over `partitions`, numbered from `start`: key
    /// `k<n>`, value `{"n":<n>}`, a header `h: <n>`. Returns when all are acknowledged.
    ///
    /// One message per record batch: tansu 0.6 answers a fetch that starts inside a batch
    /// with the *next* batch (skipping the rest of the one asked for) and reports the last
    /// batch's base offset as the high watermark. Real Kafka does neither; single-record
    /// batches keep the tests about the runner, not about that.
    pub async fn produce(
        &self,
        topic: &str,
        partitions: i32,
        start: u64,
        count: u64,
    ) -> Result<()> {
        self.produce_batched(topic, partitions, start, count, 0, 1)
            .await
    }

    /// Like [`Self::produce`], with `pad` extra payload bytes per message (`"pad":"xx.."`)
    /// and up to `batch` messages per record batch. More than one only for readers that never
    /// fetch from inside a batch (no seek, pause or restart): see [`Self::produce`].
    pub async fn produce_batched(
        &self,
        topic: &str,
        partitions: i32,
        start: u64,
        count: u64,
        pad: usize,
        batch: usize,
    ) -> Result<()> {
        let padding = "x".repeat(pad);
        let producer: FutureProducer = self
            .client()
            .set("batch.num.messages", batch.max(1).to_string())
            .set("linger.ms", if batch > 1 { "20" } else { "0" })
            .set("acks", "all")
            .set("enable.idempotence", "false")
            .create()?;
        let mut pending = Vec::new();
        for n in start..start + count {
            let key = format!("k{n}");
            let value = if pad == 0 {
                format!("{{\"n\":{n}}}")
            } else {
                format!("{{\"n\":{n},\"pad\":\"{padding}\"}}")
            };
            let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
                key: "h",
                value: Some(n.to_string().as_bytes()),
            });
            let record = FutureRecord::to(topic)
                .key(&key)
                .payload(&value)
                .headers(headers)
                .partition((n % partitions as u64) as i32);
            pending.push(producer.send_result(record).map_err(|(e, _)| e)?);
            if pending.len() >= 10_000 {
                for f in pending.drain(..) {
                    f.await?.map_err(|(e, _)| e)?;
                }
            }
        }
        for f in pending {
            f.await?.map_err(|(e, _)| e)?;
        }
        Ok(())
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A connector file with `runner` as its runner section (indented two spaces).
pub fn connector_yaml(runner: &str) -> String {
    format!(
        r#"manifest_version: "1.0"
id: conn::global::streaming::kafka_kinesis::consume
taxonomy: {{layer: bronze}}
runtime: {{kind: runner}}
defaults: {{key_strategy: raw, cursor_strategy: last_landed, payload_format: json}}
streams: {{strategy: config_defined, allow_unlisted: true}}
runner:
{runner}
"#
    )
}

/// The runner's Kafka section for a broker, group and topics, small files and a short
/// latency cut so tests see commits quickly.
pub fn kafka_runner(bootstrap: &str, group: &str, topics: &str, extra: &str) -> String {
    format!(
        r#"  kafka:
    bootstrap_servers: {bootstrap}
    group_id: {group}
    topics: [{topics}]
    metadata_refresh_ms: 1000
    properties: {{session.timeout.ms: "6000", heartbeat.interval.ms: "500"}}
  files: {{max_records: 200, max_latency_ms: 500}}
  http: {{bind: 127.0.0.1, port: 0}}
  shutdown_timeout_ms: 20000
{extra}"#
    )
}

/// A `streaming-connector` process.
#[derive(Debug)]
pub struct RunnerProc {
    child: Option<Child>,
    dir: PathBuf,
}

impl RunnerProc {
    /// Starts `streaming-connector <args> --config <file>` with the stack's resources.
    pub fn start(stack: &Stack, config: &str, args: &[&str], env: &[(&str, &str)]) -> Result<Self> {
        let dir =
            std::env::temp_dir().join(format!("bronze-runner-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let path = dir.join("connector.yaml");
        std::fs::write(&path, config)?;
        let log = std::fs::File::create(dir.join("runner.log"))?;
        let child = Command::new(env!("CARGO_BIN_EXE_streaming-connector"))
            .args(args)
            .arg("--config")
            .arg(&path)
            .envs(integration_tests::aws_env())
            .env("BRONZE_BUCKET", &stack.bucket)
            .env("STATE_TABLE", &stack.table)
            .env("DLQ_URL", &stack.queue_url)
            .env("BRONZE_PREFIX", &stack.prefix)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("spawn streaming-connector")?;
        Ok(Self {
            child: Some(child),
            dir,
        })
    }

    /// Starts `streaming-connector run`.
    pub fn run(stack: &Stack, config: &str) -> Result<Self> {
        Self::start(stack, config, &["run"], &[])
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Everything the process printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("runner.log")).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        // Wait until it is serving (its handlers are installed) or has exited.
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.http_address().is_none() && Instant::now() < deadline {
            if self.child.as_mut().expect("running").try_wait()?.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        self.wait(timeout)
    }

    /// Waits for the exit.
    pub fn wait(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("runner did not exit within {timeout:?}: {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status if the process has exited (it is then reaped), `None` while it runs.
    pub fn exited(&mut self) -> Result<Option<ExitStatus>> {
        let Some(child) = self.child.as_mut() else {
            bail!("runner already reaped");
        };
        let status = child.try_wait()?;
        if status.is_some() {
            self.child = None;
        }
        Ok(status)
    }

    /// SIGKILL: no drain, nothing flushed.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The peak resident set size so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
    }

    /// The `/metrics` and `/healthz` address the runner logged.
    pub fn http_address(&self) -> Option<String> {
        self.log().lines().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["message"] == "serving /metrics and /healthz")
                .then(|| v["address"].as_str().unwrap().to_owned())
        })
    }
}

impl Drop for RunnerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Records committed per partition (from the checkpoints: offsets are contiguous here).
pub async fn committed(stack: &Stack, topic: &str, partitions: i32) -> u64 {
    let mut total = 0;
    for p in 0..partitions {
        if let Some(c) = stack
            .checkpoint(bronze::record::Source::Kafka, topic, &p.to_string())
            .await
        {
            total += bronze::cursor::unpad(&c.cursor).parse::<u64>().unwrap() + 1;
        }
    }
    total
}

/// Waits until `total` records of `topic` are committed.
pub async fn wait_committed(
    stack: &Stack,
    topic: &str,
    partitions: i32,
    total: u64,
    timeout: Duration,
    runners: &[&RunnerProc],
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let n = committed(stack, topic, partitions).await;
        if n == total {
            return Ok(());
        }
        if n > total {
            bail!("{n} records committed, more than the {total} produced");
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = runners.iter().map(|r| r.log()).collect();
            bail!(
                "only {n} of {total} committed after {timeout:?}; runner logs:\n{}",
                logs.join("\n----\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asserts that every produced message `0..total` is committed exactly once, in offset
/// order per partition, with its key, header and payload.
pub async fn assert_exactly_once(stack: &Stack, topic: &str, partitions: i32, total: u64) {
    let mut seen = vec![0u32; total as usize];
    for p in 0..partitions {
        let lines = stack
            .committed_lines(bronze::record::Source::Kafka, topic, &p.to_string())
            .await;
        let mut previous: Option<u64> = None;
        for line in &lines {
            let offset: u64 = line["cursor"].as_str().unwrap().parse().unwrap();
            assert!(
                previous.is_none_or(|x| x < offset),
                "partition {p}: offset {offset} after {previous:?}"
            );
            previous = Some(offset);
            let n = line["payload"]["n"]
                .as_u64()
                .unwrap_or_else(|| panic!("payload of {line}"));
            assert_eq!(
                n % partitions as u64,
                p as u64,
                "message {n} in partition {p}"
            );
            assert_eq!(line["key"], format!("k{n}"));
            seen[n as usize] += 1;
        }
    }
    let mut logs = String::new();
    for p in 0..partitions {
        for e in stack
            .commit_log(bronze::record::Source::Kafka, topic, &p.to_string())
            .await
        {
            logs.push_str(&format!(
                "p{p} {}..{} records={} dead={} run={}\n",
                bronze::cursor::unpad(&e.first),
                bronze::cursor::unpad(&e.last),
                e.records,
                e.dead_lettered,
                &e.run_id[..15]
            ));
        }
    }
    let missing: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == 0)
        .map(|(i, _)| i)
        .collect();
    let doubled: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 1)
        .map(|(i, _)| i)
        .collect();
    assert!(
        missing.is_empty(),
        "{} messages never committed, e.g. {:?}\n{logs}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        doubled.is_empty(),
        "{} messages committed twice, e.g. {:?}",
        doubled.len(),
        &doubled[..doubled.len().min(5)]
    );
}

/// Runs `streaming-connector verify` against the stack and returns (success, output).
pub fn verify(stack: &Stack, config: &str) -> (bool, String) {
    let mut p = RunnerProc::start(stack, config, &["verify"], &[]).unwrap();
    let status = p.wait(Duration::from_secs(120)).unwrap();
    (status.success(), p.log())
}

/// A GET with curl: the status code and the body.
pub fn get(addr: &str, path: &str) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            &format!("http://{addr}{path}"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// The value of the first sample of `name` in a Prometheus text page (0 if absent).
pub fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

// Measurement helpers for the runner's benches (`runner/benches/*_backlog.rs`).

/// A `BENCH_*` setting: an unsigned number (underscores allowed), or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .map(|v| v.replace('_', "").parse().expect("a number"))
        .unwrap_or(default)
}

/// The machine a bench ran on: CPU count and model.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    format!("{cpus} CPUs (nproc), {model}")
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`
/// (clock ticks at the usual 100 Hz).
pub fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the `(comm)`: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / 100.0)
}

/// A process other than this one whose command line contains all of `needles`.
pub fn find_pid(needles: &[&str]) -> Option<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        (pid != me && needles.iter().all(|n| cmdline.contains(n))).then_some(pid)
    })
}
