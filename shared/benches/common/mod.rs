//! Shared input for the landing benchmarks: a Kinesis event of 10,000 records with 1 KiB JSON
//! payloads, built deterministically (no randomness between runs).

use base64::Engine as _;

pub(crate) const RECORDS: usize = 10_000;
pub(crate) const PAYLOAD_BYTES: usize = 1024;

/// A small deterministic generator (xorshift), so payloads vary like real events.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn hex(&mut self, n: usize) -> String {
        (0..n).map(|_| format!("{:x}", self.next() % 16)).collect()
    }
    fn word(&mut self) -> &'static str {
        const WORDS: [&str; 16] = [
            "checkout", "search", "cart", "product", "home", "profile", "login", "logout",
            "banner", "promo", "mobile", "desktop", "tablet", "europe", "americas", "asia",
        ];
        WORDS[(self.next() % 16) as usize]
    }
}

/// One JSON payload of exactly `PAYLOAD_BYTES` bytes.
pub(crate) fn payload(i: usize, g: &mut impl FnMut() -> u64) -> Vec<u8> {
    let mut rng = Gen(g() | 1);
    let mut text = format!(
        "{{\"event_id\":\"{}\",\"n\":{i},\"user\":\"user-{}\",\"session\":\"{}\",\"page\":\"/{}/{}\",\"referrer\":\"/{}\",\"ts\":{},\"device\":\"{}\",\"region\":\"{}\",\"attrs\":{{",
        rng.hex(32),
        rng.next() % 100_000,
        rng.hex(16),
        rng.word(),
        rng.next() % 10_000,
        rng.word(),
        1_795_737_600_000u64 + i as u64,
        rng.word(),
        rng.word()
    );
    let mut k = 0;
    while text.len() < PAYLOAD_BYTES - 40 {
        text.push_str(&format!("\"k{k}\":\"{}-{}\",", rng.word(), rng.hex(6)));
        k += 1;
    }
    text.push_str("\"pad\":\"");
    while text.len() < PAYLOAD_BYTES - 3 {
        text.push('x');
    }
    text.push_str("\"}}");
    assert_eq!(text.len(), PAYLOAD_BYTES);
    text.into_bytes()
}

/// The raw event bytes as Lambda delivers them, and the payloads it carries.
pub(crate) fn kinesis_event() -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        seed
    };
    let payloads: Vec<Vec<u8>> = (0..RECORDS).map(|i| payload(i, &mut next)).collect();
    // 56-digit sequence numbers: a fixed 22-digit head and a 34-digit counter.
    let base: u128 = 8559692538361571095921575989136588898 % 10u128.pow(34);
    let records: Vec<serde_json::Value> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let seq = format!("4959033827149025660855{:034}", base + i as u128 * 1000);
            serde_json::json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": format!("user-{}", i % 97),
                    "sequenceNumber": seq,
                    "data": base64::engine::general_purpose::STANDARD.encode(p),
                    "approximateArrivalTimestamp": 1_795_737_600.0 + i as f64 * 0.001
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": format!("shardId-000000000000:{seq}"),
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::123456789012:role/kinesis-consumer",
                "awsRegion": "us-east-1",
                "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/clickstream"
            })
        })
        .collect();
    (
        serde_json::to_vec(&serde_json::json!({ "Records": records })).unwrap(),
        payloads,
    )
}

/// The in-process landing work for one event: decode, group, encode, compress with
/// `compression` (on the current rayon pool), as the engine does it. Returns records and
/// object bytes.
pub(crate) fn land_with(
    event_bytes: &[u8],
    compression: bronze::compress::Compression,
) -> (usize, usize) {
    let event: bronze::sources::kinesis::KinesisEvent =
        serde_json::from_slice(event_bytes).unwrap();
    let batches = bronze::sources::kinesis::to_batches(event).unwrap();
    let settings = bench_settings(compression);
    let mut records = 0;
    let mut bytes = 0;
    for batch in &batches {
        let encoded =
            bronze::engine::encode(&batch.id, &batch.records, &settings, "bench-run", None);
        records += encoded.records as usize;
        bytes += bronze::compress::compress(encoded.members, compression).len();
    }
    (records, bytes)
}

/// The event's batches (decode and group only).
#[allow(dead_code)] // used by the throughput bench, not the memory one
pub(crate) fn decode(
    event_bytes: &[u8],
) -> Vec<bronze::record::PartitionBatch<bronze::cursor::KinesisCursor>> {
    let event: bronze::sources::kinesis::KinesisEvent =
        serde_json::from_slice(event_bytes).unwrap();
    bronze::sources::kinesis::to_batches(event).unwrap()
}

/// The Bronze lines of decoded batches, uncompressed; returns their bytes.
#[allow(dead_code)] // used by the throughput bench, not the memory one
pub(crate) fn encode_lines(
    batches: &[bronze::record::PartitionBatch<bronze::cursor::KinesisCursor>],
) -> usize {
    let settings = bench_settings(Default::default());
    batches
        .iter()
        .map(|b| {
            bronze::engine::encode(&b.id, &b.records, &settings, "bench-run", None)
                .members
                .iter()
                .map(Vec::len)
                .sum::<usize>()
        })
        .sum()
}

fn bench_settings(compression: bronze::compress::Compression) -> bronze::config::StreamSettings {
    use bronze::config::{KeyStrategy, PayloadFormat, StreamSettings};
    StreamSettings {
        group: None,
        payload_format: PayloadFormat::Json,
        key_strategy: KeyStrategy::Raw,
        parallelization_factor: 1,
        schema: None,
        compression,
    }
}

/// [`land_with`] the default compression (gzip 6).
#[allow(dead_code)] // used by the memory bench
pub(crate) fn land(event_bytes: &[u8]) -> (usize, usize) {
    land_with(event_bytes, Default::default())
}

/// The payloads as one newline-separated buffer: the bytes the encoders alone compress.
#[allow(dead_code)] // used by the throughput bench, not the memory one
pub(crate) fn joined(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payloads.iter().map(|p| p.len() + 1).sum());
    for p in payloads {
        out.extend_from_slice(p);
        out.push(b'\n');
    }
    out
}

/// zlib-rs (flate2's backend, the encoder before libdeflate) alone, streaming, at `level`.
#[allow(dead_code)] // used by the throughput bench, not the memory one
pub(crate) fn zlib_rs(input: &[u8], level: u32) -> usize {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(input.len() / 3),
        flate2::Compression::new(level),
    );
    enc.write_all(input).unwrap();
    enc.finish().unwrap().len()
}
