//! Compression of Bronze objects: gzip (libdeflate, whole buffers) or zstd, one independently
//! compressed member per slice of records, the members of an object compressed on every core.
//!
//! An object is the concatenation of its members. Concatenated gzip members are one valid
//! gzip file (RFC 1952, section 2.2) and concatenated zstd frames one valid zstd stream, so
//! every reader (`gunzip`, `zstd -d`, DuckDB, Athena, Spark, Python's `gzip`) reads an object
//! whole. The writer cuts members at record boundaries chosen from the records alone
//! ([`crate::bronze::MEMBER_TARGET_BYTES`]), and each member is compressed on its own, so an
//! object's bytes never depend on how many threads compressed it. The landing hands each
//! member to the compressor as soon as it is cut ([`Pipeline`], a bounded number in flight),
//! so an object's uncompressed lines are never all in memory.

use rayon::prelude::*;
use serde::Deserialize;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::Read;
use std::ops::RangeInclusive;

/// The format of a stream's Bronze objects (`compression` in the connector file).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Codec {
    /// gzip (RFC 1952), written by libdeflate: `.jsonl.gz`. The default.
    #[default]
    Gzip,
    /// Zstandard frames: `.jsonl.zst`.
    Zstd,
}

impl Codec {
    /// The object key's suffix for this format.
    pub fn suffix(self) -> &'static str {
        match self {
            Codec::Gzip => ".jsonl.gz",
            Codec::Zstd => ".jsonl.zst",
        }
    }

    /// The object's `Content-Type`: `application/gzip` (RFC 6713) or `application/zstd`
    /// (RFC 8878).
    pub fn content_type(self) -> &'static str {
        match self {
            Codec::Gzip => "application/gzip",
            Codec::Zstd => "application/zstd",
        }
    }

    /// The level used when the connector file names none: gzip 6 (gzip's own default, and
    /// smaller output than zlib's level 6) and zstd 3 (zstd's own default).
    pub fn default_level(self) -> u32 {
        match self {
            Codec::Gzip => 6,
            Codec::Zstd => 3,
        }
    }

    /// The levels the connector file may name: libdeflate's 1 to 12, zstd's 1 to 19 (the
    /// levels above 19 need a window larger than a Lambda function should spend on it).
    pub fn levels(self) -> RangeInclusive<u32> {
        match self {
            Codec::Gzip => 1..=12,
            Codec::Zstd => 1..=19,
        }
    }

    /// The name used in the connector file.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Gzip => "gzip",
            Codec::Zstd => "zstd",
        }
    }

    /// The format of an object body, from its magic bytes (`None` for neither).
    pub fn of_body(body: &[u8]) -> Option<Codec> {
        if body.starts_with(&[0x1f, 0x8b]) {
            Some(Codec::Gzip)
        } else if body.starts_with(&ZSTD_MAGIC) {
            Some(Codec::Zstd)
        } else {
            None
        }
    }

    /// The format an object key names by its suffix (`None` for neither).
    pub fn of_key(key: &str) -> Option<Codec> {
        [Codec::Gzip, Codec::Zstd]
            .into_iter()
            .find(|c| key.ends_with(c.suffix()))
    }
}

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// A codec and a level valid for it. Built by [`Compression::new`] (which checks the level)
/// or [`Compression::default`] (gzip 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    codec: Codec,
    level: u32,
}

impl Default for Compression {
    fn default() -> Self {
        Self::of(Codec::Gzip)
    }
}

/// A level the codec does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{codec} has no level {level}: expected {} to {}", .range.start(), .range.end())]
pub struct LevelOutOfRange {
    /// The codec's name.
    pub codec: &'static str,
    /// The level asked for.
    pub level: u32,
    /// The levels it has.
    pub range: RangeInclusive<u32>,
}

impl Compression {
    /// A codec at its default level.
    pub fn of(codec: Codec) -> Self {
        Self {
            codec,
            level: codec.default_level(),
        }
    }

    /// A codec at `level`, or why that level does not exist for it.
    pub fn new(codec: Codec, level: u32) -> Result<Self, LevelOutOfRange> {
        if codec.levels().contains(&level) {
            Ok(Self { codec, level })
        } else {
            Err(LevelOutOfRange {
                codec: codec.name(),
                level,
                range: codec.levels(),
            })
        }
    }

    /// The format.
    pub fn codec(self) -> Codec {
        self.codec
    }

    /// The level.
    pub fn level(self) -> u32 {
        self.level
    }
}

thread_local! {
    /// This thread's encoder (its level), kept between members: a libdeflate compressor at
    /// level 6 or a zstd context is a few hundred KiB to a few MiB of tables that would
    /// otherwise be allocated, faulted in and freed for every member. Output buffers are not
    /// kept: each member is compressed into its own buffer (see [`Encoder::encode`]).
    static ENCODER: RefCell<Option<(Compression, Encoder)>> = const { RefCell::new(None) };
}

enum Encoder {
    Gzip(libdeflater::Compressor),
    Zstd(zstd::bulk::Compressor<'static>),
}

impl Encoder {
    fn new(c: Compression) -> Self {
        match c.codec {
            Codec::Gzip => Encoder::Gzip(libdeflater::Compressor::new(
                libdeflater::CompressionLvl::new(c.level as i32)
                    .expect("Compression::new only admits libdeflate's levels 1 to 12"),
            )),
            Codec::Zstd => Encoder::Zstd(
                zstd::bulk::Compressor::new(c.level as i32)
                    .expect("Compression::new only admits zstd's levels 1 to 19"),
            ),
        }
    }

    /// Compresses `input` into a buffer of exactly the output's size. The buffer is
    /// allocated at the encoder's bound and shrunk to the output; libdeflate needs it zeroed, which
    /// `vec![0; n]` gets from calloc (for a member-sized buffer, fresh zero pages from mmap,
    /// so only the pages the output fills are ever touched). Nothing stays allocated between
    /// members but the encoder, and the output is not copied.
    fn encode(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = match self {
            Encoder::Gzip(compressor) => {
                let mut out = vec![0; compressor.gzip_compress_bound(input.len())];
                let n = compressor
                    .gzip_compress(input, &mut out)
                    .expect("the output buffer is gzip_compress_bound bytes, enough for any input");
                out.truncate(n);
                out
            }
            Encoder::Zstd(compressor) => {
                let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(input.len()));
                compressor
                    .compress_to_buffer(input, &mut out)
                    .expect("the output buffer is compress_bound bytes, enough for any input");
                out
            }
        };
        out.shrink_to_fit();
        out
    }
}

/// Compresses one member: a complete gzip member or zstd frame holding `input`. The thread's
/// encoder is reused between calls (the bytes are those of a fresh encoder: test
/// `reused_encoders_give_the_same_bytes`); the member returned is exactly its size.
pub fn compress_member(input: &[u8], c: Compression) -> Vec<u8> {
    ENCODER.with_borrow_mut(|slot| {
        if slot.as_ref().is_none_or(|(current, _)| *current != c) {
            *slot = Some((c, Encoder::new(c)));
        }
        let (_, encoder) = slot.as_mut().expect("set above");
        encoder.encode(input)
    })
}

/// Compresses the members of one object, in parallel on the current rayon pool, and
/// concatenates them in order. Each member's input is freed as soon as it is compressed. The
/// result does not depend on the pool's size.
pub fn compress(members: Vec<Vec<u8>>, c: Compression) -> Vec<u8> {
    let parts: Vec<Vec<u8>> = members
        .into_par_iter()
        .map(|member| compress_member(&member, c))
        .collect();
    let mut out = Vec::with_capacity(parts.iter().map(Vec::len).sum());
    for part in parts {
        out.extend_from_slice(&part);
    }
    out
}

/// Compresses the members of one object as the writer cuts them: each member is handed to
/// rayon's global pool (one thread per core) as soon as it is full, at most
/// [`Pipeline::limit`] are in flight (so an object's uncompressed lines are never all held:
/// the writer waits, without blocking the async runtime, for the oldest member when the
/// limit is reached), and the compressed parts are appended to the body in order. The body
/// is the same bytes as [`compress`] gives for the same members, whatever the core count.
#[derive(Debug)]
pub struct Pipeline {
    compression: Compression,
    limit: usize,
    in_flight: VecDeque<tokio::sync::oneshot::Receiver<Vec<u8>>>,
    body: Vec<u8>,
}

impl Pipeline {
    /// A pipeline for one object, allowing one member in flight per thread of the global
    /// pool plus one waiting (so no core idles while the writer cuts the next member).
    pub fn new(compression: Compression) -> Self {
        Self::with_limit(compression, rayon::current_num_threads() + 1)
    }

    /// A pipeline with at most `limit` (at least 1) members in flight.
    pub fn with_limit(compression: Compression, limit: usize) -> Self {
        Self {
            compression,
            limit: limit.max(1),
            in_flight: VecDeque::with_capacity(limit.max(1)),
            body: Vec::new(),
        }
    }

    /// The most members in flight at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Hands one member to the compressor, first waiting for the oldest one when `limit`
    /// are in flight. The member's lines are freed as soon as it is compressed.
    pub async fn push(&mut self, member: Vec<u8>) {
        while self.in_flight.len() >= self.limit {
            self.append_oldest().await;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let c = self.compression;
        rayon::spawn(move || {
            let part = compress_member(&member, c);
            drop(member);
            // The receiver is only gone when the landing was abandoned; nothing to tell then.
            let _ = tx.send(part);
        });
        self.in_flight.push_back(rx);
    }

    async fn append_oldest(&mut self) {
        if let Some(rx) = self.in_flight.pop_front() {
            let part = rx
                .await
                .expect("the compression job sends its result: compress_member cannot panic");
            self.body.extend_from_slice(&part);
        }
    }

    /// Waits for the members still in flight and returns the object's body.
    pub async fn finish(mut self) -> Vec<u8> {
        while !self.in_flight.is_empty() {
            self.append_oldest().await;
        }
        self.body
    }
}

/// A reader of an object's decompressed bytes, whichever format its magic bytes show (every
/// member of a multi-member object is read).
pub fn decompressed(body: &[u8]) -> Result<Box<dyn Read + '_>, std::io::Error> {
    match Codec::of_body(body) {
        Some(Codec::Gzip) => Ok(Box::new(flate2::read::MultiGzDecoder::new(body))),
        Some(Codec::Zstd) => Ok(Box::new(zstd::stream::read::Decoder::with_buffer(body)?)),
        None if body.is_empty() => Ok(Box::new(body)),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "neither gzip nor zstd (unknown magic bytes)",
        )),
    }
}

/// Lambda gives a function one vCPU's worth of CPU time per 1,769 MB of memory (AWS Lambda
/// Developer Guide, "Configuring Lambda function memory"), whatever number of cores the
/// environment shows: two from 128 to 3,008 MB, up to six at 10,240 MB.
pub const LAMBDA_MB_PER_VCPU: u64 = 1769;

/// How many threads compress in a Lambda function of `memory_mb` whose environment shows
/// `cores` cores: the vCPUs its memory pays for, to the nearest whole one, at least 1 and at
/// most `cores`. A function of 1,024 MB has 0.58 of a vCPU: a second compressing thread
/// would only share the same CPU quota with the first, adding switches and a second
/// member's buffers in memory, not speed. At 2,654 MB (1.5 vCPUs) and above a second one pays.
pub fn lambda_threads(memory_mb: u64, cores: usize) -> usize {
    let vcpus = memory_mb.saturating_add(LAMBDA_MB_PER_VCPU / 2) / LAMBDA_MB_PER_VCPU;
    usize::try_from(vcpus)
        .unwrap_or(usize::MAX)
        .clamp(1, cores.max(1))
}

/// The size of rayon's global pool (the threads that compress) for a Lambda function:
/// `RAYON_NUM_THREADS` when it names a count, else [`lambda_threads`] of
/// `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` (which Lambda sets) and the cores the process sees, else
/// (not under Lambda) one per core. `lookup` reads the environment.
pub fn lambda_pool_size(lookup: impl Fn(&str) -> Option<String>) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let count = |name: &str| {
        lookup(name)
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|n| *n > 0)
    };
    if let Some(n) = count("RAYON_NUM_THREADS") {
        return usize::try_from(n).unwrap_or(cores);
    }
    match count("AWS_LAMBDA_FUNCTION_MEMORY_SIZE") {
        Some(mb) => lambda_threads(mb, cores),
        None => cores,
    }
}

/// Builds rayon's global pool with [`lambda_pool_size`] threads (call it at init, before any
/// landing) and returns its size.
pub fn init_lambda_pool() -> usize {
    let threads = lambda_pool_size(|name| std::env::var(name).ok());
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
    {
        // Only possible when something already used the global pool: it keeps its size.
        tracing::warn!(error = %e, "the compression pool was already started");
    }
    rayon::current_num_threads()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unpack(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        decompressed(body).unwrap().read_to_end(&mut out).unwrap();
        out
    }

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    #[test]
    fn a_lambda_compresses_on_the_vcpus_its_memory_pays_for() {
        // Two cores shown from 128 to 3,008 MB; one vCPU's worth per 1,769 MB.
        assert_eq!(lambda_threads(128, 2), 1);
        assert_eq!(lambda_threads(1024, 2), 1);
        assert_eq!(lambda_threads(1769, 2), 1);
        assert_eq!(lambda_threads(2653, 2), 1);
        assert_eq!(lambda_threads(2654, 2), 2);
        assert_eq!(lambda_threads(3008, 2), 2);
        assert_eq!(lambda_threads(5307, 3), 3);
        assert_eq!(lambda_threads(10240, 6), 6);
        // Never more than the cores shown, never none.
        assert_eq!(lambda_threads(10240, 2), 2);
        assert_eq!(lambda_threads(u64::MAX, 4), 4);
        assert_eq!(lambda_threads(0, 2), 1);
        assert_eq!(lambda_threads(1024, 0), 1);
    }

    #[test]
    fn the_pool_size_follows_rayon_then_the_function_memory() {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(lambda_pool_size(env(&[])), cores);
        assert_eq!(
            lambda_pool_size(env(&[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")])),
            1
        );
        assert_eq!(
            lambda_pool_size(env(&[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "10240")])),
            cores.min(6)
        );
        // RAYON_NUM_THREADS wins, as it does for rayon itself.
        assert_eq!(
            lambda_pool_size(env(&[
                ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024"),
                ("RAYON_NUM_THREADS", "3")
            ])),
            3
        );
        // Values that are not a count are ignored.
        assert_eq!(
            lambda_pool_size(env(&[
                ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "lots"),
                ("RAYON_NUM_THREADS", "0")
            ])),
            cores
        );
    }

    #[test]
    fn levels_are_checked_per_codec() {
        assert!(Compression::new(Codec::Gzip, 12).is_ok());
        assert!(Compression::new(Codec::Zstd, 19).is_ok());
        let err = Compression::new(Codec::Gzip, 13).unwrap_err();
        assert_eq!(err.to_string(), "gzip has no level 13: expected 1 to 12");
        assert!(Compression::new(Codec::Zstd, 0).is_err());
        assert!(Compression::new(Codec::Zstd, 22).is_err());
        assert_eq!(Compression::default(), Compression::of(Codec::Gzip));
        assert_eq!(Compression::default().level(), 6);
    }

    #[test]
    fn members_concatenate_into_one_readable_stream() {
        for codec in [Codec::Gzip, Codec::Zstd] {
            let c = Compression::of(codec);
            let body = compress(vec![b"a\n".to_vec(), b"b\n".to_vec(), vec![]], c);
            assert_eq!(Codec::of_body(&body), Some(codec));
            assert_eq!(unpack(&body), b"a\nb\n");
        }
        // The standard single-stream readers read every member too.
        let body = compress(
            vec![b"a\n".to_vec(), b"b\n".to_vec()],
            Compression::default(),
        );
        let mut text = String::new();
        flate2::read::MultiGzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "a\nb\n");
    }

    /// What a fresh encoder gives, for comparison with the reused thread-local ones.
    fn fresh(input: &[u8], c: Compression) -> Vec<u8> {
        match c.codec() {
            Codec::Gzip => {
                let mut compressor = libdeflater::Compressor::new(
                    libdeflater::CompressionLvl::new(c.level() as i32).unwrap(),
                );
                let mut out = vec![0; compressor.gzip_compress_bound(input.len())];
                let n = compressor.gzip_compress(input, &mut out).unwrap();
                out.truncate(n);
                out
            }
            Codec::Zstd => zstd::bulk::compress(input, c.level() as i32).unwrap(),
        }
    }

    #[test]
    fn reused_encoders_give_the_same_bytes() {
        let big: Vec<u8> = (0..300_000u32)
            .flat_map(|i| {
                format!("{{\"n\":{i},\"h\":\"{:x}\"}}\n", i.wrapping_mul(2654435761)).into_bytes()
            })
            .collect();
        let inputs: [&[u8]; 4] = [&big, b"", b"a\n", &big[..1000]];
        // Levels and codecs alternate, so every encoder is reused after others and after
        // larger inputs (its buffer then holds stale bytes past the output).
        for round in 0..2 {
            for c in [
                Compression::new(Codec::Gzip, 6).unwrap(),
                Compression::new(Codec::Zstd, 3).unwrap(),
                Compression::new(Codec::Gzip, 1).unwrap(),
                Compression::new(Codec::Zstd, 1).unwrap(),
            ] {
                for input in inputs {
                    assert_eq!(
                        compress_member(input, c),
                        fresh(input, c),
                        "{c:?}, {} bytes, round {round}",
                        input.len()
                    );
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pipeline_gives_the_bytes_of_compress_at_any_limit() {
        let members: Vec<Vec<u8>> = (0..23)
            .map(|m| {
                (0..(m * 997) % 5000)
                    .flat_map(|i| format!("{m}-{i}\n").into_bytes())
                    .collect()
            })
            .collect();
        for codec in [Codec::Gzip, Codec::Zstd] {
            let c = Compression::of(codec);
            let expected = compress(members.clone(), c);
            for limit in [1, 2, 3, 8, 100] {
                let mut pipeline = Pipeline::with_limit(c, limit);
                for member in members.clone() {
                    pipeline.push(member).await;
                    assert!(pipeline.in_flight.len() <= limit);
                }
                assert_eq!(
                    pipeline.finish().await,
                    expected,
                    "{codec:?}, limit {limit}"
                );
            }
            assert!(Pipeline::with_limit(c, 0).finish().await.is_empty());
        }
    }

    #[test]
    fn format_from_key_and_from_body() {
        assert_eq!(Codec::of_key("p/1-2.jsonl.gz"), Some(Codec::Gzip));
        assert_eq!(Codec::of_key("p/1-2~ab.jsonl.zst"), Some(Codec::Zstd));
        assert_eq!(Codec::of_key("p/1-2.bin"), None);
        assert_eq!(Codec::Gzip.content_type(), "application/gzip");
        assert_eq!(Codec::Zstd.content_type(), "application/zstd");
        assert!(decompressed(b"not compressed").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// The same members give the same bytes on 1 thread and on 4, and decompress to the
        /// members' lines in order.
        #[test]
        fn output_does_not_depend_on_threads(
            lines in proptest::collection::vec("[ -~]{0,300}", 0..200),
            cuts in proptest::collection::vec(1usize..40, 1..20),
            zstd in any::<bool>(),
            level in 1u32..10,
        ) {
            let mut members = Vec::new();
            let mut rest = lines.as_slice();
            for n in cuts.iter().cycle() {
                if rest.is_empty() { break; }
                let (head, tail) = rest.split_at((*n).min(rest.len()));
                members.push(head.iter().flat_map(|l| format!("{l}\n").into_bytes()).collect::<Vec<u8>>());
                rest = tail;
            }
            let codec = if zstd { Codec::Zstd } else { Codec::Gzip };
            let c = Compression::new(codec, level).unwrap();
            let one = pool(1).install(|| compress(members.clone(), c));
            let four = pool(4).install(|| compress(members.clone(), c));
            prop_assert_eq!(&one, &four);
            let text = String::from_utf8(unpack(&one)).unwrap();
            let expected: String = lines.iter().map(|l| format!("{l}\n")).collect();
            prop_assert_eq!(text, expected);
        }
    }
}
