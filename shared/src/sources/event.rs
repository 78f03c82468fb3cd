//! The Lambda event shapes of the Kinesis and Kafka event source mappings, read exactly.
//!
//! `aws_lambda_events` 1.2 loses data in exactly the fields Bronze must keep: it reads
//! Kinesis `approximateArrivalTimestamp` by splitting the number's text (`1764201600.5`
//! becomes 5 ms, a 7-digit fraction fails the whole event), truncates Kafka millisecond
//! timestamps through a float, keeps Kafka headers in a `HashMap` (their order is lost) and
//! fails the whole event on one bad base64 `data`. These types read the same JSON without
//! those losses: timestamps from the number's own text with integer arithmetic, headers in
//! event order, and payload text that is decoded per record (a bad record becomes poison,
//! not a failed invocation).

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::fmt;

/// A Kinesis event source mapping's event: records of one shard of one stream.
#[derive(Debug, Default, Deserialize, Serialize)]
pub struct KinesisEvent {
    /// The records, in shard order.
    #[serde(rename = "Records", default)]
    pub records: Vec<KinesisEventRecord>,
}

/// One record of a [`KinesisEvent`] with its envelope.
#[derive(Debug, Deserialize, Serialize)]
pub struct KinesisEventRecord {
    /// `aws:kinesis` for every record a Kinesis mapping delivers.
    #[serde(rename = "eventSource", default)]
    pub event_source: Option<String>,
    /// `<shard id>:<sequence number>`.
    #[serde(rename = "eventID", default)]
    pub event_id: Option<String>,
    /// `arn:aws:kinesis:<region>:<account>:stream/<name>`.
    #[serde(rename = "eventSourceARN", default)]
    pub event_source_arn: Option<String>,
    /// The record itself.
    pub kinesis: KinesisData,
}

/// The `kinesis` object of a record.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KinesisData {
    /// The producer's partition key.
    pub partition_key: String,
    /// The sequence number (a decimal string of up to 128 digits).
    pub sequence_number: String,
    /// The payload, base64-decoded while the event is read.
    pub data: KinesisPayload,
    /// Seconds since the epoch as a JSON number with a fraction (kept as its text so that
    /// it converts to milliseconds exactly).
    #[serde(default)]
    pub approximate_arrival_timestamp: Option<Box<RawValue>>,
}

/// A Kinesis record's `data`, base64-decoded while the event is read: the decoder reads the
/// base64 text where it lies in the event body (serde_json hands it over as bytes, without
/// copying it and without UTF-8 validation, when it has no escapes, which base64 never
/// needs) and writes the payload bytes straight into their own buffer, so the base64 text of
/// the records is never held beside the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KinesisPayload {
    /// The payload bytes, exactly as the producer wrote them.
    Bytes(Vec<u8>),
    /// `data` is not valid base64: the text as it came (it goes to the dead letter whole)
    /// and why it does not decode. The record is poison, the event is not failed.
    NotBase64 {
        /// The `data` text, byte for byte.
        text: Vec<u8>,
        /// The decoder's message.
        reason: String,
    },
}

impl KinesisPayload {
    /// Decodes one `data` text: standard base64 with padding and canonical trailing bits
    /// (what Kinesis writes), decoded with SIMD (`base64-simd`, already linked by the AWS
    /// SDK). A text it refuses is checked again by the `base64` crate, which names the
    /// offending byte; both accept exactly the same texts (test
    /// `simd_and_scalar_base64_accept_the_same_texts`).
    pub fn decode(text: &[u8]) -> Self {
        match base64_simd::STANDARD.decode_to_vec(text) {
            Ok(bytes) => KinesisPayload::Bytes(bytes),
            Err(_) => {
                use base64::Engine as _;
                match base64::engine::general_purpose::STANDARD.decode(text) {
                    Ok(bytes) => KinesisPayload::Bytes(bytes),
                    Err(e) => KinesisPayload::NotBase64 {
                        text: text.to_vec(),
                        reason: e.to_string(),
                    },
                }
            }
        }
    }
}

impl<'de> Deserialize<'de> for KinesisPayload {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Base64Text;
        impl Visitor<'_> for Base64Text {
            type Value = KinesisPayload;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 string")
            }
            // serde_json's deserialize_bytes gives a string's bytes: borrowed from the body
            // (visit_borrowed_bytes, which defaults to this), or from its scratch buffer when
            // the string has escapes. Other deserializers give a string.
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<KinesisPayload, E> {
                Ok(KinesisPayload::decode(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KinesisPayload, E> {
                Ok(KinesisPayload::decode(v.as_bytes()))
            }
        }
        d.deserialize_bytes(Base64Text)
    }
}

impl Serialize for KinesisPayload {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            KinesisPayload::Bytes(bytes) => {
                s.serialize_str(&base64_simd::STANDARD.encode_to_string(bytes))
            }
            KinesisPayload::NotBase64 { text, .. } => {
                s.serialize_str(&String::from_utf8_lossy(text))
            }
        }
    }
}

/// A Kafka event source mapping's event (MSK or self-managed).
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaEvent {
    /// `aws:kafka` (MSK) or `SelfManagedKafka`.
    #[serde(default)]
    pub event_source: Option<String>,
    /// The cluster ARN (MSK).
    #[serde(default)]
    pub event_source_arn: Option<String>,
    /// Records by `<topic>-<partition>`, sorted by that key so processing is deterministic.
    #[serde(default)]
    pub records: BTreeMap<String, Vec<KafkaRecord>>,
}

/// One Kafka record as the mapping delivers it.
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KafkaRecord {
    /// The topic (absent in some older events: then the map key names it).
    #[serde(default)]
    pub topic: Option<String>,
    /// The partition number.
    pub partition: i64,
    /// The offset.
    pub offset: i64,
    /// Milliseconds since the epoch, read without going through a float.
    #[serde(default, deserialize_with = "exact_millis")]
    pub timestamp: Option<i64>,
    /// `CREATE_TIME`, `LOG_APPEND_TIME`, or `NO_TIMESTAMP_TYPE` (with `timestamp` -1) for a
    /// record without a time.
    #[serde(default)]
    pub timestamp_type: Option<String>,
    /// The key, base64-encoded (null for a record without key).
    #[serde(default)]
    pub key: Option<String>,
    /// The value, base64-encoded (null for a tombstone).
    #[serde(default)]
    pub value: Option<String>,
    /// Headers in record order: each element is a one-entry map from key to byte array.
    #[serde(default)]
    pub headers: Vec<HeaderEntries>,
    /// Present when the mapping is configured with a schema registry.
    #[serde(default)]
    pub value_schema_metadata: Option<serde_json::Value>,
}

/// One element of a Kafka record's `headers` array, entries kept in the order they appear.
#[derive(Debug, Default, Serialize)]
pub struct HeaderEntries(pub Vec<(String, HeaderBytes)>);

/// A header value as the mapping encodes it: an array of byte values, signed (Java's
/// `byte`, -128..=127) or unsigned (0..=255), or `null` for a header without a value (Kafka
/// allows one; read as a value of none, as the runner reads it, rather than failing the
/// whole event, which the mapping would retry without end).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct HeaderBytes(pub Option<Vec<i64>>);

impl HeaderBytes {
    /// The bytes (none for a `null` value), or the first element that is not a byte.
    pub fn to_bytes(&self) -> Result<Option<Vec<u8>>, i64> {
        let Some(values) = &self.0 else {
            return Ok(None);
        };
        values
            .iter()
            .map(|&v| match v {
                0..=255 => Ok(v as u8),
                -128..=-1 => Ok((v + 256) as u8),
                _ => Err(v),
            })
            .collect::<Result<Vec<u8>, i64>>()
            .map(Some)
    }
}

impl<'de> Deserialize<'de> for HeaderEntries {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = HeaderEntries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from header key to an array of bytes or null")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<HeaderEntries, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(1));
                while let Some((k, v)) = map.next_entry::<String, HeaderBytes>()? {
                    out.push((k, v));
                }
                Ok(HeaderEntries(out))
            }
        }
        d.deserialize_map(Entries)
    }
}

/// Reads an integer number of milliseconds exactly: integers as they are, an integral
/// float (`1.764201600001E12`) without rounding, a fractional one floored.
fn exact_millis<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    struct Millis;
    impl<'de> Visitor<'de> for Millis {
        type Value = Option<i64>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("milliseconds since the epoch")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_any(self)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            i64::try_from(v)
                .map(Some)
                .map_err(|_| E::custom(format!("timestamp {v} is out of range")))
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
            // f64 holds every integer up to 2^53 exactly: all millisecond times until year
            // 287396. Beyond that (or NaN) the value is not a time.
            if v.is_finite() && v.abs() < 9_007_199_254_740_992.0 {
                Ok(Some(v.floor() as i64))
            } else {
                Err(E::custom(format!("timestamp {v} is out of range")))
            }
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            v.parse::<i64>()
                .map(Some)
                .map_err(|_| E::custom(format!("timestamp {v:?} is not an integer")))
        }
    }
    d.deserialize_option(Millis)
}

/// Converts a JSON number of seconds since the epoch (`1764201600`, `1764201600.5`,
/// `1764201600.1234567`, `1.7642016005E9`) to whole milliseconds, exactly: the number's
/// decimal text is scaled with integer arithmetic and the sub-millisecond rest is floored,
/// so `.5` is 500 ms, `.25` is 250 ms and `.98` is 980 ms.
pub fn seconds_text_to_millis(text: &str) -> Result<i64, String> {
    let bad = || format!("{text:?} is not a number of seconds");
    let text = text.trim();
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => {
            let exp = unsigned[at + 1..].trim_start_matches('+');
            let exp: i64 = exp.parse().map_err(|_| bad())?;
            (&unsigned[..at], exp)
        }
        None => (unsigned, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits_only = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int_part.is_empty() || !digits_only(int_part) || !digits_only(frac_part) {
        return Err(bad());
    }
    // value = digits * 10^(exponent - frac_len); milliseconds = digits * 10^(shift).
    let digits: String = format!("{int_part}{frac_part}");
    let digits = digits.trim_start_matches('0');
    let shift = exponent
        .checked_sub(frac_part.len() as i64)
        .and_then(|s| s.checked_add(3))
        .ok_or_else(bad)?;
    let out_of_range = || format!("{text:?} seconds is out of range");
    let whole: &str = if shift >= 0 {
        digits
    } else {
        let drop = usize::try_from(-shift).map_err(|_| out_of_range())?;
        digits
            .get(..digits.len().saturating_sub(drop))
            .unwrap_or("")
    };
    let truncated = whole.len() < digits.len() && digits[whole.len()..].bytes().any(|b| b != b'0');
    let mut ms: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| out_of_range())?
    };
    if shift > 0 {
        let scale = u32::try_from(shift)
            .ok()
            .and_then(|s| 10i64.checked_pow(s))
            .ok_or_else(out_of_range)?;
        ms = ms.checked_mul(scale).ok_or_else(out_of_range)?;
    }
    if negative {
        // Floor toward negative infinity, like the positive case floors toward zero.
        ms = -ms;
        if truncated {
            ms = ms.checked_sub(1).ok_or_else(out_of_range)?;
        }
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrival_timestamps_convert_exactly() {
        for (text, ms) in [
            ("1764201600", 1_764_201_600_000),
            ("1764201600.0", 1_764_201_600_000),
            ("1764201600.5", 1_764_201_600_500),
            ("1764201600.25", 1_764_201_600_250),
            ("1764201600.98", 1_764_201_600_980),
            ("1764201600.001", 1_764_201_600_001),
            ("1764201600.999", 1_764_201_600_999),
            ("1764201600.1234567", 1_764_201_600_123),
            ("1764201600.9999999", 1_764_201_600_999),
            ("1.7642016005E9", 1_764_201_600_500),
            ("1.764201600123e+9", 1_764_201_600_123),
            ("17642016001e-1", 1_764_201_600_100),
            ("0.0005", 0),
            ("0", 0),
            ("-0.5", -500),
            ("-0.0005", -1),
        ] {
            assert_eq!(seconds_text_to_millis(text), Ok(ms), "{text}");
        }
        for bad in [
            "",
            "abc",
            "1.2.3",
            "1e",
            "--1",
            "1e999999999999999999999",
            "1e30",
        ] {
            assert!(seconds_text_to_millis(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kinesis_data_is_decoded_as_the_event_is_read() {
        let record = |data: &str| {
            format!(
                r#"{{"kinesis":{{"partitionKey":"k","sequenceNumber":"1","data":{data}}},"eventSource":"aws:kinesis"}}"#
            )
        };
        let text = format!(
            r#"{{"Records":[{},{},{},{}]}}"#,
            record(r#""eyJhIjoxfQ==""#),
            // JSON may escape the '/' of base64 ("\/"): the unescaped text is decoded.
            record(r#""\/\/8=""#),
            record(r#""not base64!""#),
            record(r#""""#)
        );
        let expected = [
            KinesisPayload::Bytes(b"{\"a\":1}".to_vec()),
            KinesisPayload::Bytes(vec![0xff, 0xff]),
            KinesisPayload::NotBase64 {
                text: b"not base64!".to_vec(),
                reason: "Invalid symbol 32, offset 3.".into(),
            },
            KinesisPayload::Bytes(vec![]),
        ];
        // From the raw body (borrowed text), and through a serde_json::Value (owned text).
        let from_slice: KinesisEvent = serde_json::from_slice(text.as_bytes()).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let from_value: KinesisEvent = serde_json::from_value(value).unwrap();
        for event in [from_slice, from_value] {
            let data: Vec<_> = event.records.into_iter().map(|r| r.kinesis.data).collect();
            assert_eq!(data, expected);
        }
        // Written back as base64 (a bad text as it came).
        let again = serde_json::to_string(&expected[1]).unwrap();
        assert_eq!(again, r#""//8=""#);
        assert_eq!(
            serde_json::to_string(&expected[2]).unwrap(),
            r#""not base64!""#
        );
        // `data` must be a string.
        assert!(
            serde_json::from_str::<KinesisEvent>(&format!(r#"{{"Records":[{}]}}"#, record("1")))
                .is_err()
        );
    }

    fn same_verdict(text: &[u8]) {
        use base64::Engine as _;
        let simd = base64_simd::STANDARD.decode_to_vec(text).ok();
        let scalar = base64::engine::general_purpose::STANDARD.decode(text).ok();
        assert_eq!(simd, scalar, "{:?}", String::from_utf8_lossy(text));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]
        /// The SIMD decoder accepts a text exactly when the `base64` crate does, with the same
        /// bytes: every encoding, and every one-character change, cut or padding change of it
        /// (non-canonical trailing bits, missing or extra padding, padding inside, bytes
        /// outside the alphabet), and arbitrary texts over the alphabet and beyond.
        #[test]
        fn simd_and_scalar_base64_accept_the_same_texts(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80),
            at in proptest::prelude::any::<proptest::sample::Index>(),
            with in proptest::prelude::any::<u8>(),
            text in "[A-Za-z0-9+/=]{0,40}|[ -~]{0,16}",
        ) {
            use base64::Engine as _;
            same_verdict(text.as_bytes());
            let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes).into_bytes();
            same_verdict(&encoded);
            if !encoded.is_empty() {
                let i = at.index(encoded.len());
                let mut changed = encoded.clone();
                changed[i] = with;
                same_verdict(&changed);
                changed[i] = b"AQgw+/=-_ \n"[usize::from(with) % 11];
                same_verdict(&changed);
                same_verdict(&encoded[..i]);
                let last = encoded.len() - 1 - encoded.iter().rev().take_while(|&&b| b == b'=').count();
                for alphabet in [b'A', b'B', b'Q', b'R', b'g', b'h', b'w', b'x'] {
                    let mut tail = encoded.clone();
                    tail[last] = alphabet;
                    same_verdict(&tail);
                }
                let unpadded: Vec<u8> = encoded.iter().copied().filter(|&b| b != b'=').collect();
                same_verdict(&unpadded);
                same_verdict(&[&encoded[..], b"="].concat());
                same_verdict(&[&encoded[..], b"===="].concat());
                same_verdict(&[&encoded[..], &encoded[..]].concat());
            }
        }
    }

    #[test]
    fn kafka_timestamps_are_not_truncated_through_a_float() {
        let text = r#"{"eventSource":"aws:kafka","records":{"t-0":[
            {"topic":"t","partition":0,"offset":1,"timestamp":1764201600001,"key":null,"value":null,"headers":[]},
            {"topic":"t","partition":0,"offset":2,"timestamp":9007199254740993,"key":null,"value":null,"headers":[]},
            {"topic":"t","partition":0,"offset":3,"timestamp":1.764201600001E12,"key":null,"value":null,"headers":[]},
            {"topic":"t","partition":0,"offset":4,"key":null,"value":null,"headers":[]}]}}"#;
        let event: KafkaEvent = serde_json::from_str(text).unwrap();
        let ts: Vec<_> = event.records["t-0"].iter().map(|r| r.timestamp).collect();
        assert_eq!(
            ts,
            vec![
                Some(1_764_201_600_001),
                Some(9_007_199_254_740_993),
                Some(1_764_201_600_001),
                None
            ]
        );
    }

    #[test]
    fn header_entries_keep_their_order_and_signed_bytes() {
        let text = r#"[{"b":[1,-1]},{"a":[255,0],"c":[]},{"n":null}]"#;
        let headers: Vec<HeaderEntries> = serde_json::from_str(text).unwrap();
        let flat: Vec<_> = headers
            .iter()
            .flat_map(|h| h.0.iter())
            .map(|(k, v)| (k.as_str(), v.to_bytes().unwrap()))
            .collect();
        assert_eq!(
            flat,
            vec![
                ("b", Some(vec![1, 0xff])),
                ("a", Some(vec![0xff, 0])),
                ("c", Some(vec![])),
                ("n", None)
            ]
        );
        assert_eq!(HeaderBytes(Some(vec![256])).to_bytes(), Err(256));
        assert_eq!(HeaderBytes(Some(vec![-129])).to_bytes(), Err(-129));
        assert_eq!(HeaderBytes(None).to_bytes(), Ok(None));
    }
}
