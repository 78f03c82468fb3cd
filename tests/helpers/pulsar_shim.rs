//! A test-only TCP proxy between the `pulsar` crate and pulsar-lite.
//!
//! pulsar-lite (PyPI `pulsar-lite` 0.2.0, "Pulsar-Lite-0.1.0" in its CONNECTED answer) sends
//! the payload of a MESSAGE frame as `[metadataSize][metadata][payload]`, without the
//! `[magic 0x0e01][CRC32C]` pair that Apache Pulsar brokers put in front of it. The protocol
//! makes that pair optional and the C++/Java/Python clients accept either form, but
//! `pulsar` 6.9.1's `Codec::decode` always reads a magic (unchecked) and a checksum: without
//! them it takes the first six bytes of the size and metadata as magic and checksum, reads a
//! garbage metadata size, and fails with `Error decoding payload frame: Incomplete(...)`.
//!
//! The shim rewrites two kinds of broker-to-client frames and nothing else:
//! - a frame with a payload but no magic gets `0x0e01` and the CRC32C (Castagnoli) of
//!   `metadataSize + metadata + payload` inserted before the metadata size, and its total
//!   size grows by 6;
//! - a LOOKUP_RESPONSE's `brokerServiceUrl` (pulsar-lite advertises its own `--addr`) is
//!   replaced with the shim's URL, so the crate's follow-up connection for the topic also
//!   goes through the shim rather than straight to pulsar-lite.
//!
//! Client-to-broker frames pass unchanged (the crate always sends the magic and checksum,
//! which pulsar-lite accepts). Frames are forwarded whole: the shim buffers until it has a
//! complete frame, so a frame split across TCP reads is never rewritten half-way.

use anyhow::{Context, Result};
use prost::Message as _;
use pulsar::proto::{BaseCommand, base_command::Type};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// The magic number that starts a checksummed payload (Pulsar's `MAGIC_CRC32C`).
pub const MAGIC_CRC32C: u16 = 0x0e01;

/// The largest frame the shim accepts (Pulsar's default `maxMessageSize` is 5 MiB).
const MAX_FRAME: usize = 64 * 1024 * 1024;

const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Which way a frame went through the shim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client (the crate) to pulsar-lite.
    ToBroker,
    /// From pulsar-lite to the client.
    ToClient,
}

/// Counters of what the shim saw and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShimStats {
    /// Client connections accepted.
    pub connections: u64,
    /// Frames forwarded, both directions.
    pub frames: u64,
    /// Broker frames that got the magic number and checksum inserted.
    pub checksums_added: u64,
    /// Broker frames with a payload that already had the magic number (left as they were).
    pub checksums_present: u64,
    /// LOOKUP_RESPONSE frames whose broker URL was replaced with the shim's.
    pub lookups_rewritten: u64,
}

#[derive(Debug, Default)]
struct Counters {
    connections: AtomicU64,
    frames: AtomicU64,
    checksums_added: AtomicU64,
    checksums_present: AtomicU64,
    lookups_rewritten: AtomicU64,
}

#[derive(Debug)]
struct Shared {
    url: String,
    upstream: SocketAddr,
    counters: Counters,
    /// The command type of every frame, in order per direction (for assertions and
    /// debugging).
    commands: Mutex<Vec<(Direction, Type)>>,
    /// The tasks serving the open connections.
    connections: Mutex<Vec<AbortHandle>>,
}

/// A running shim; dropping it closes the listener and every proxied connection.
#[derive(Debug)]
pub struct PulsarShim {
    /// `pulsar://127.0.0.1:<port>`: the URL to give the `pulsar` crate.
    pub url: String,
    /// The shim's listening address.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    listener: AbortHandle,
}

impl PulsarShim {
    /// Listens on a free loopback port and proxies every connection to `upstream`
    /// (pulsar-lite's `--addr`).
    pub async fn start(upstream: SocketAddr) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("bind the pulsar shim")?;
        let addr = listener.local_addr()?;
        let url = format!("pulsar://{addr}");
        let shared = Arc::new(Shared {
            url: url.clone(),
            upstream,
            counters: Counters::default(),
            commands: Mutex::new(Vec::new()),
            connections: Mutex::new(Vec::new()),
        });
        let accept_shared = shared.clone();
        let listener = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                accept_shared
                    .counters
                    .connections
                    .fetch_add(1, Ordering::Relaxed);
                let conn_shared = accept_shared.clone();
                let task = tokio::spawn(async move {
                    // A failed upstream connect (broker down) or a reset just closes the
                    // client's connection, as a dead broker would.
                    let _ = serve(client, conn_shared).await;
                });
                let mut open = accept_shared.connections.lock().unwrap();
                open.retain(|t| !t.is_finished());
                open.push(task.abort_handle());
            }
        })
        .abort_handle();
        Ok(Self {
            url,
            addr,
            shared,
            listener,
        })
    }

    /// The upstream (pulsar-lite) address.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// What the shim has seen and done so far.
    pub fn stats(&self) -> ShimStats {
        let c = &self.shared.counters;
        ShimStats {
            connections: c.connections.load(Ordering::Relaxed),
            frames: c.frames.load(Ordering::Relaxed),
            checksums_added: c.checksums_added.load(Ordering::Relaxed),
            checksums_present: c.checksums_present.load(Ordering::Relaxed),
            lookups_rewritten: c.lookups_rewritten.load(Ordering::Relaxed),
        }
    }

    /// The command types forwarded so far, in order, with their direction.
    pub fn commands(&self) -> Vec<(Direction, Type)> {
        self.shared.commands.lock().unwrap().clone()
    }

    /// How many frames of command type `ty` went in direction `dir`.
    pub fn count(&self, dir: Direction, ty: Type) -> usize {
        self.shared
            .commands
            .lock()
            .unwrap()
            .iter()
            .filter(|(d, t)| *d == dir && *t == ty)
            .count()
    }

    /// Drops every proxied connection (both sides), as a network cut would; the listener
    /// stays up, so clients reconnect through the shim.
    pub fn disconnect_all(&self) {
        for task in self.shared.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

impl Drop for PulsarShim {
    fn drop(&mut self) {
        self.listener.abort();
        self.disconnect_all();
    }
}

async fn serve(client: TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let broker = TcpStream::connect(shared.upstream).await?;
    client.set_nodelay(true)?;
    broker.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let (broker_read, broker_write) = broker.into_split();
    let up = pump(client_read, broker_write, Direction::ToBroker, &shared);
    let down = pump(broker_read, client_write, Direction::ToClient, &shared);
    // Either side closing closes both (the halves are dropped here).
    tokio::select! {
        r = up => r,
        r = down => r,
    }
}

/// Forwards whole frames from `from` to `to`, rewriting broker frames.
async fn pump(
    from: OwnedReadHalf,
    to: OwnedWriteHalf,
    dir: Direction,
    shared: &Shared,
) -> std::io::Result<()> {
    let mut pending = Vec::<u8>::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = read_some(&from, &mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&chunk[..n]);
        let mut out = Vec::new();
        let mut used = 0;
        while let Some(len) = frame_len(&pending[used..])? {
            let frame = &pending[used..used + len];
            used += len;
            shared.counters.frames.fetch_add(1, Ordering::Relaxed);
            if let Some(ty) = command_type(frame) {
                shared.commands.lock().unwrap().push((dir, ty));
            }
            match dir {
                Direction::ToBroker => out.extend_from_slice(frame),
                Direction::ToClient => {
                    let rewritten = rewrite_broker_frame(frame, &shared.url);
                    let c = &shared.counters;
                    match rewritten.change {
                        Change::None => {}
                        Change::ChecksumPresent => {
                            c.checksums_present.fetch_add(1, Ordering::Relaxed);
                        }
                        Change::ChecksumAdded => {
                            c.checksums_added.fetch_add(1, Ordering::Relaxed);
                        }
                        Change::LookupRewritten => {
                            c.lookups_rewritten.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    out.extend_from_slice(rewritten.bytes.as_deref().unwrap_or(frame));
                }
            }
        }
        pending.drain(..used);
        write_all(&to, &out).await?;
    }
}

/// The length of the first frame in `buf` (its 4-byte size plus that size) if `buf` holds
/// all of it.
fn frame_len(buf: &[u8]) -> std::io::Result<Option<usize>> {
    let Some(size) = buf.get(..4) else {
        return Ok(None);
    };
    let total = u32::from_be_bytes(size.try_into().unwrap()) as usize + 4;
    if total > MAX_FRAME {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("pulsar frame of {total} bytes: the stream is out of sync"),
        ));
    }
    Ok((buf.len() >= total).then_some(total))
}

// tokio's `net` feature (enabled by the pulsar crate) without `io-util`: readiness plus
// non-blocking reads and writes.
async fn read_some(from: &OwnedReadHalf, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        from.readable().await?;
        match from.try_read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            r => return r,
        }
    }
}

async fn write_all(to: &OwnedWriteHalf, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        to.writable().await?;
        match to.try_write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The parts of a whole frame: `(command bytes, bytes after the command)`, or `None` when
/// the sizes do not add up.
pub fn split_frame(frame: &[u8]) -> Option<(&[u8], &[u8])> {
    let total = u32::from_be_bytes(frame.get(..4)?.try_into().ok()?) as usize;
    if frame.len() != total + 4 {
        return None;
    }
    let cmd_size = u32::from_be_bytes(frame.get(4..8)?.try_into().ok()?) as usize;
    let cmd = frame.get(8..8 + cmd_size)?;
    Some((cmd, &frame[8 + cmd_size..]))
}

/// The command type of a whole frame.
pub fn command_type(frame: &[u8]) -> Option<Type> {
    let (cmd, _) = split_frame(frame)?;
    let command = BaseCommand::decode(cmd).ok()?;
    Type::try_from(command.r#type).ok()
}

/// What [`rewrite_broker_frame`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing to do (no payload, or a command the shim leaves alone).
    None,
    /// A payload that already starts with the magic number.
    ChecksumPresent,
    /// The magic number and CRC32C were inserted.
    ChecksumAdded,
    /// The lookup answer now names the shim.
    LookupRewritten,
}

/// A rewritten frame: `bytes` is `None` when the frame is forwarded as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewritten {
    /// The new frame, if it changed.
    pub bytes: Option<Vec<u8>>,
    /// What changed.
    pub change: Change,
}

/// Rewrites one whole broker-to-client frame as described in the module docs. `shim_url`
/// replaces the broker URL in lookup answers.
pub fn rewrite_broker_frame(frame: &[u8], shim_url: &str) -> Rewritten {
    let unchanged = |change| Rewritten {
        bytes: None,
        change,
    };
    let Some((cmd, rest)) = split_frame(frame) else {
        return unchanged(Change::None);
    };
    if !rest.is_empty() {
        if rest.len() >= 2 && u16::from_be_bytes([rest[0], rest[1]]) == MAGIC_CRC32C {
            return unchanged(Change::ChecksumPresent);
        }
        return Rewritten {
            bytes: Some(with_checksum(cmd, rest)),
            change: Change::ChecksumAdded,
        };
    }
    let Ok(mut command) = BaseCommand::decode(cmd) else {
        return unchanged(Change::None);
    };
    if command.r#type != Type::LookupResponse as i32 {
        return unchanged(Change::None);
    }
    let Some(lookup) = command.lookup_topic_response.as_mut() else {
        return unchanged(Change::None);
    };
    match &lookup.broker_service_url {
        Some(url) if url != shim_url => lookup.broker_service_url = Some(shim_url.to_owned()),
        _ => return unchanged(Change::None),
    }
    let cmd = command.encode_to_vec();
    let mut out = Vec::with_capacity(cmd.len() + 8);
    out.extend_from_slice(&(cmd.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(&(cmd.len() as u32).to_be_bytes());
    out.extend_from_slice(&cmd);
    Rewritten {
        bytes: Some(out),
        change: Change::LookupRewritten,
    }
}

/// `[totalSize][cmdSize][cmd][0x0e01][crc32c(rest)][rest]`, where `rest` is
/// `[metadataSize][metadata][payload]`.
fn with_checksum(cmd: &[u8], rest: &[u8]) -> Vec<u8> {
    let total = 4 + cmd.len() + 2 + 4 + rest.len();
    let mut out = Vec::with_capacity(total + 4);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(cmd.len() as u32).to_be_bytes());
    out.extend_from_slice(cmd);
    out.extend_from_slice(&MAGIC_CRC32C.to_be_bytes());
    out.extend_from_slice(&CRC32C.checksum(rest).to_be_bytes());
    out.extend_from_slice(rest);
    out
}
