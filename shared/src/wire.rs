//! Registry wire formats: how a producer frames a payload with the id of its schema.
//!
//! - **Confluent** (Confluent, Karapace, Apicurio ccompat): byte 0 is the magic byte `0`,
//!   bytes 1..5 the schema id (big-endian `u32`), the rest the encoded payload.
//! - **AWS Glue**: byte 0 is the header version `3`, byte 1 the compression (`0` none,
//!   `5` zlib), bytes 2..18 the schema version UUID, the rest the (possibly compressed) payload.

use crate::registry::SchemaId;
use serde::Deserialize;
use std::borrow::Cow;

/// How payloads of a stream are framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireFormat {
    /// Magic byte 0 and a 4-byte schema id.
    Confluent,
    /// Glue header: version byte, compression byte, 16-byte schema version id.
    Glue,
    /// Unframed: the payload is validated against the subject's latest version.
    None,
}

/// Why a payload's frame cannot be read. Permanent: the record is poison.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than the header.
    #[error("payload of {len} bytes is shorter than the {format} header ({need} bytes)")]
    TooShort {
        /// Wire format expected.
        format: &'static str,
        /// Payload length.
        len: usize,
        /// Header length.
        need: usize,
    },
    /// The first byte is not the format's magic byte.
    #[error("{format} header expected byte {expected:#04x} first, found {found:#04x}")]
    BadMagic {
        /// Wire format expected.
        format: &'static str,
        /// The byte expected.
        expected: u8,
        /// The byte found.
        found: u8,
    },
    /// Glue compression byte not understood.
    #[error("glue header has unknown compression {0}")]
    UnknownCompression(u8),
    /// Glue zlib body does not decompress.
    #[error("glue payload does not decompress: {0}")]
    Decompress(String),
    /// Glue zlib body inflates past [`MAX_INFLATED_BYTES`] (a decompression bomb, or a
    /// payload no consumer should hold in memory).
    #[error("glue payload inflates to more than {limit} bytes")]
    InflatesTooFar {
        /// The bound.
        limit: u64,
    },
}

/// The most a Glue zlib payload may inflate to: 16 MiB, far above any record Kafka or
/// Kinesis accept by default (1 MiB) while keeping one record from taking a gigabyte.
pub const MAX_INFLATED_BYTES: u64 = 16 * 1024 * 1024;

const CONFLUENT_HEADER: usize = 5;
const GLUE_HEADER: usize = 18;
const GLUE_VERSION: u8 = 3;
const GLUE_NO_COMPRESSION: u8 = 0;
const GLUE_ZLIB: u8 = 5;

/// Splits a framed payload into its schema id and body. `WireFormat::None` yields no id.
pub fn unframe(
    format: WireFormat,
    bytes: &[u8],
) -> Result<(Option<SchemaId>, Cow<'_, [u8]>), WireError> {
    match format {
        WireFormat::None => Ok((None, Cow::Borrowed(bytes))),
        WireFormat::Confluent => {
            if bytes.len() < CONFLUENT_HEADER {
                return Err(WireError::TooShort {
                    format: "confluent",
                    len: bytes.len(),
                    need: CONFLUENT_HEADER,
                });
            }
            if bytes[0] != 0 {
                return Err(WireError::BadMagic {
                    format: "confluent",
                    expected: 0,
                    found: bytes[0],
                });
            }
            let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
            Ok((
                Some(SchemaId::Confluent(id)),
                Cow::Borrowed(&bytes[CONFLUENT_HEADER..]),
            ))
        }
        WireFormat::Glue => {
            if bytes.len() < GLUE_HEADER {
                return Err(WireError::TooShort {
                    format: "glue",
                    len: bytes.len(),
                    need: GLUE_HEADER,
                });
            }
            if bytes[0] != GLUE_VERSION {
                return Err(WireError::BadMagic {
                    format: "glue",
                    expected: GLUE_VERSION,
                    found: bytes[0],
                });
            }
            let mut uuid = [0u8; 16];
            uuid.copy_from_slice(&bytes[2..GLUE_HEADER]);
            let id = SchemaId::from_glue_bytes(&uuid);
            let body = &bytes[GLUE_HEADER..];
            match bytes[1] {
                GLUE_NO_COMPRESSION => Ok((Some(id), Cow::Borrowed(body))),
                GLUE_ZLIB => {
                    use std::io::Read;
                    let mut out = Vec::with_capacity(body.len().saturating_mul(3));
                    flate2::read::ZlibDecoder::new(body)
                        .take(MAX_INFLATED_BYTES + 1)
                        .read_to_end(&mut out)
                        .map_err(|e| WireError::Decompress(e.to_string()))?;
                    if out.len() as u64 > MAX_INFLATED_BYTES {
                        return Err(WireError::InflatesTooFar {
                            limit: MAX_INFLATED_BYTES,
                        });
                    }
                    Ok((Some(id), Cow::Owned(out)))
                }
                other => Err(WireError::UnknownCompression(other)),
            }
        }
    }
}

/// Frames a body (for producers in tests and tools).
pub fn frame(id: &SchemaId, body: &[u8]) -> Vec<u8> {
    match id {
        SchemaId::Confluent(n) => {
            let mut out = Vec::with_capacity(CONFLUENT_HEADER + body.len());
            out.push(0);
            out.extend_from_slice(&n.to_be_bytes());
            out.extend_from_slice(body);
            out
        }
        SchemaId::Glue(uuid) => {
            let mut out = Vec::with_capacity(GLUE_HEADER + body.len());
            out.push(GLUE_VERSION);
            out.push(GLUE_NO_COMPRESSION);
            out.extend_from_slice(&parse_uuid(uuid).unwrap_or([0; 16]));
            out.extend_from_slice(body);
            out
        }
    }
}

fn parse_uuid(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, chunk) in out.iter_mut().enumerate() {
        *chunk = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confluent_frame_round_trip() {
        let framed = frame(&SchemaId::Confluent(258), b"body");
        assert_eq!(&framed[..5], &[0, 0, 0, 1, 2]);
        let (id, body) = unframe(WireFormat::Confluent, &framed).unwrap();
        assert_eq!(id, Some(SchemaId::Confluent(258)));
        assert_eq!(&*body, b"body");
    }

    #[test]
    fn glue_frame_round_trip_and_zlib() {
        let uuid = "0f8b7c2e-1d2a-4c3b-9e8f-0123456789ab";
        let framed = frame(&SchemaId::Glue(uuid.into()), b"{\"a\":1}");
        let (id, body) = unframe(WireFormat::Glue, &framed).unwrap();
        assert_eq!(id, Some(SchemaId::Glue(uuid.into())));
        assert_eq!(&*body, b"{\"a\":1}");
        // zlib-compressed body.
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(b"{\"a\":1}").unwrap();
        let mut compressed = framed[..18].to_vec();
        compressed[1] = 5;
        compressed.extend(z.finish().unwrap());
        assert_eq!(
            &*unframe(WireFormat::Glue, &compressed).unwrap().1,
            b"{\"a\":1}"
        );
    }

    #[test]
    fn bad_frames_name_the_problem() {
        assert!(matches!(
            unframe(WireFormat::Confluent, &[0, 1]),
            Err(WireError::TooShort { need: 5, .. })
        ));
        assert!(matches!(
            unframe(WireFormat::Confluent, b"{\"json\":1}"),
            Err(WireError::BadMagic { found: b'{', .. })
        ));
        let mut glue = frame(
            &SchemaId::Glue("0f8b7c2e-1d2a-4c3b-9e8f-0123456789ab".into()),
            b"x",
        );
        glue[1] = 9;
        assert_eq!(
            unframe(WireFormat::Glue, &glue),
            Err(WireError::UnknownCompression(9))
        );
        assert_eq!(unframe(WireFormat::None, b"raw").unwrap().0, None);
    }

    #[test]
    fn a_zlib_bomb_is_poison_not_a_gigabyte() {
        use std::io::Write;
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(MAX_INFLATED_BYTES / (1 << 20) + 1) {
            z.write_all(&zeros).unwrap();
        }
        let mut framed = frame(
            &SchemaId::Glue("0f8b7c2e-1d2a-4c3b-9e8f-0123456789ab".into()),
            b"",
        );
        framed[1] = 5;
        framed.extend(z.finish().unwrap());
        assert!(framed.len() < 64 * 1024, "a small record");
        assert_eq!(
            unframe(WireFormat::Glue, &framed),
            Err(WireError::InflatesTooFar {
                limit: MAX_INFLATED_BYTES
            })
        );
        assert_eq!(
            parse_uuid(
                "\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}\u{e9}"
            ),
            None
        );
    }
}
