//! Typed cursors: a position within one partition of a source, with a total order.
//!
//! A checkpoint stores the cursor of the **last landed** record (never "next to read").
//! Every cursor has a *sortable* text form: zero-padded so that plain string order equals
//! cursor order. That form is what goes into object keys and into the state table, so
//! S3 listings and DynamoDB range keys sort the same way the source does.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

/// Why a cursor could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CursorError {
    /// The text is not a non-negative decimal integer.
    #[error("cursor {value:?} is not a non-negative decimal integer")]
    NotDecimal {
        /// The text that failed to parse.
        value: String,
    },
    /// The text has more digits than the cursor type allows.
    #[error("cursor {value:?} has {digits} digits, more than the {max} allowed")]
    TooLong {
        /// The text that failed to parse.
        value: String,
        /// How many significant digits it has.
        digits: usize,
        /// The limit for this cursor type.
        max: usize,
    },
}

/// A position in a partition with a total order, a display form and a sortable form.
pub trait Cursor: Ord + Clone + fmt::Debug + fmt::Display + Send + Sync + 'static {
    /// Fixed-width, zero-padded text whose byte order equals the cursor order.
    fn sortable(&self) -> String;
    /// Parses either the display form or the sortable form.
    fn parse(text: &str) -> Result<Self, CursorError>;
}

/// A Kafka offset within (topic, partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KafkaOffset(pub u64);

/// Width of a sortable Kafka offset: `i64::MAX` has 19 digits.
const KAFKA_WIDTH: usize = 20;

impl fmt::Display for KafkaOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl Cursor for KafkaOffset {
    fn sortable(&self) -> String {
        format!("{:0width$}", self.0, width = KAFKA_WIDTH)
    }

    fn parse(text: &str) -> Result<Self, CursorError> {
        let digits = significant_digits(text)?;
        if digits.len() > KAFKA_WIDTH {
            return Err(CursorError::TooLong {
                value: text.to_owned(),
                digits: digits.len(),
                max: KAFKA_WIDTH,
            });
        }
        digits
            .parse::<u64>()
            .map(KafkaOffset)
            .map_err(|_| CursorError::TooLong {
                value: text.to_owned(),
                digits: digits.len(),
                max: 19,
            })
    }
}

/// A Kinesis sequence number within a shard.
///
/// Sequence numbers are decimal strings of up to 128 digits. They are compared
/// numerically on their digits (length first, then digit by digit), never as a
/// float, a `u64` or plain text. The value is stored without leading zeros.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SequenceNumber(String);

/// The documented maximum length of a Kinesis sequence number.
pub const SEQUENCE_NUMBER_MAX_DIGITS: usize = 128;

impl SequenceNumber {
    /// The canonical digits (no leading zeros; "0" for zero).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.as_bytes().cmp(other.0.as_bytes()))
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SequenceNumber {
    type Err = CursorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <Self as Cursor>::parse(s)
    }
}

impl Cursor for SequenceNumber {
    fn sortable(&self) -> String {
        format!("{:0>width$}", self.0, width = SEQUENCE_NUMBER_MAX_DIGITS)
    }

    fn parse(text: &str) -> Result<Self, CursorError> {
        let digits = significant_digits(text)?;
        if digits.len() > SEQUENCE_NUMBER_MAX_DIGITS {
            return Err(CursorError::TooLong {
                value: text.to_owned(),
                digits: digits.len(),
                max: SEQUENCE_NUMBER_MAX_DIGITS,
            });
        }
        Ok(SequenceNumber(digits.to_owned()))
    }
}

/// A Kinesis record's position in its shard: the sequence number Kinesis gave the record
/// and, for a user record inside a KPL aggregate, its index in the aggregate (the KCL's
/// sub-sequence number, `checkpointSubSequenceNumber`).
///
/// Ordered by sequence number, then sub-sequence, with a plain record (no sub-sequence)
/// before any sub-sequence of the same number (one Kinesis record is either plain or an
/// aggregate, never both). Display form `<sequence>` for a plain record and
/// `<sequence>:<sub>` for a user record. Sortable form: the 128-digit sequence, followed for
/// a user record by the sub-sequence in 10 digits, so a plain record's sortable form is
/// exactly what [`SequenceNumber`] wrote before deaggregation existed and checkpoints written
/// then still compare correctly.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KinesisCursor {
    /// The Kinesis record's sequence number (the aggregate's, for a user record).
    pub sequence: SequenceNumber,
    /// The user record's index inside its KPL aggregate; `None` for a plain record.
    pub sub: Option<u32>,
}

const KINESIS_SUB_WIDTH: usize = 10;

impl KinesisCursor {
    /// A plain (not aggregated) record.
    pub fn plain(sequence: SequenceNumber) -> Self {
        Self {
            sequence,
            sub: None,
        }
    }

    /// User record `sub` of the aggregate stored at `sequence`.
    pub fn user_record(sequence: SequenceNumber, sub: u32) -> Self {
        Self {
            sequence,
            sub: Some(sub),
        }
    }
}

impl From<SequenceNumber> for KinesisCursor {
    fn from(sequence: SequenceNumber) -> Self {
        Self::plain(sequence)
    }
}

impl fmt::Display for KinesisCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.sub {
            None => write!(f, "{}", self.sequence),
            Some(sub) => write!(f, "{}:{sub}", self.sequence),
        }
    }
}

impl FromStr for KinesisCursor {
    type Err = CursorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        <Self as Cursor>::parse(s)
    }
}

impl Cursor for KinesisCursor {
    fn sortable(&self) -> String {
        let mut out = self.sequence.sortable();
        if let Some(sub) = self.sub {
            out.push_str(&format!("{sub:0w$}", w = KINESIS_SUB_WIDTH));
        }
        out
    }

    fn parse(text: &str) -> Result<Self, CursorError> {
        let sub = |digits: &str| -> Result<u32, CursorError> {
            significant_digits(digits)?
                .parse::<u32>()
                .map_err(|_| CursorError::TooLong {
                    value: text.to_owned(),
                    digits: digits.len(),
                    max: KINESIS_SUB_WIDTH,
                })
        };
        if let Some((sequence, index)) = text.split_once(':') {
            return Ok(Self::user_record(
                SequenceNumber::parse(sequence)?,
                sub(index)?,
            ));
        }
        if text.len() == SEQUENCE_NUMBER_MAX_DIGITS + KINESIS_SUB_WIDTH {
            let (sequence, index) = text.split_at(SEQUENCE_NUMBER_MAX_DIGITS);
            return Ok(Self::user_record(
                SequenceNumber::parse(sequence)?,
                sub(index)?,
            ));
        }
        SequenceNumber::parse(text).map(Self::plain)
    }
}

/// A Pulsar message id within one (non-partitioned topic or) partition: ledger, entry and
/// the index inside a batch message. Ordered by ledger, then entry, then batch index, which
/// is the order a partition's broker assigns them. Display form `ledger:entry:batch`; the
/// sortable form is the three numbers zero-padded (20 + 20 + 10 digits) with no separator,
/// so object keys stay plain digits like the other sources'.
///
/// A message that is not part of a batch has batch index -1 in the protocol; it is stored
/// as 0 (an entry holds either one unbatched message or a batch, never both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PulsarMessageId {
    /// The BookKeeper ledger.
    pub ledger: u64,
    /// The entry within the ledger.
    pub entry: u64,
    /// The message's index within a batch entry (0 for unbatched messages).
    pub batch: u32,
}

const PULSAR_ID_WIDTH: usize = 20;
const PULSAR_BATCH_WIDTH: usize = 10;

impl PulsarMessageId {
    /// Builds an id from the protocol's fields (a negative batch index means "not batched").
    pub fn new(ledger: u64, entry: u64, batch_index: Option<i32>) -> Self {
        Self {
            ledger,
            entry,
            batch: batch_index.and_then(|b| u32::try_from(b).ok()).unwrap_or(0),
        }
    }
}

impl fmt::Display for PulsarMessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.ledger, self.entry, self.batch)
    }
}

impl Cursor for PulsarMessageId {
    fn sortable(&self) -> String {
        format!(
            "{:0w$}{:0w$}{:0b$}",
            self.ledger,
            self.entry,
            self.batch,
            w = PULSAR_ID_WIDTH,
            b = PULSAR_BATCH_WIDTH
        )
    }

    fn parse(text: &str) -> Result<Self, CursorError> {
        let number = |part: &str, max: usize| -> Result<u64, CursorError> {
            let digits = significant_digits(part)?;
            if digits.len() > max {
                return Err(CursorError::TooLong {
                    value: text.to_owned(),
                    digits: digits.len(),
                    max,
                });
            }
            digits.parse::<u64>().map_err(|_| CursorError::TooLong {
                value: text.to_owned(),
                digits: digits.len(),
                max,
            })
        };
        let parts: Vec<&str> = text.split(':').collect();
        let (ledger, entry, batch) = match parts.as_slice() {
            [l, e, b] => (*l, *e, *b),
            [l, e] => (*l, *e, "0"),
            [all] if all.len() == 2 * PULSAR_ID_WIDTH + PULSAR_BATCH_WIDTH => {
                let (l, rest) = all.split_at(PULSAR_ID_WIDTH);
                let (e, b) = rest.split_at(PULSAR_ID_WIDTH);
                (l, e, b)
            }
            _ => {
                return Err(CursorError::NotDecimal {
                    value: text.to_owned(),
                });
            }
        };
        let batch = number(batch, PULSAR_BATCH_WIDTH)?;
        Ok(Self {
            ledger: number(ledger, PULSAR_ID_WIDTH)?,
            entry: number(entry, PULSAR_ID_WIDTH)?,
            batch: u32::try_from(batch).map_err(|_| CursorError::TooLong {
                value: text.to_owned(),
                digits: 10,
                max: 9,
            })?,
        })
    }
}

/// A stored (sortable) cursor of `source` in its display form: a Kafka offset, a Kinesis
/// `<sequence>` or `<sequence>:<sub>`, a Pulsar `ledger:entry:batch`. What logs and reports
/// show, since the sortable form of a KPL user record or a Pulsar id reads like some other
/// number once unpadded. Text that is not a cursor of `source` is returned as it is.
pub fn display(source: crate::record::Source, sortable: &str) -> String {
    use crate::record::Source;
    match source {
        Source::Kafka => KafkaOffset::parse(sortable).map(|c| c.to_string()),
        Source::Kinesis => KinesisCursor::parse(sortable).map(|c| c.to_string()),
        Source::Pulsar => PulsarMessageId::parse(sortable).map(|c| c.to_string()),
    }
    .unwrap_or_else(|_| sortable.to_owned())
}

/// The display form of a sortable cursor (zero padding removed), for logs.
pub fn unpad(sortable: &str) -> &str {
    let trimmed = sortable.trim_start_matches('0');
    if trimmed.is_empty() && !sortable.is_empty() {
        "0"
    } else {
        trimmed
    }
}

/// Checks that `text` is all ASCII digits and returns it without leading zeros.
fn significant_digits(text: &str) -> Result<&str, CursorError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CursorError::NotDecimal {
            value: text.to_owned(),
        });
    }
    let trimmed = text.trim_start_matches('0');
    Ok(if trimmed.is_empty() { "0" } else { trimmed })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seq(s: &str) -> SequenceNumber {
        s.parse().unwrap()
    }

    #[test]
    fn sequence_numbers_beyond_u64_compare_numerically() {
        // 56-digit numbers as Kinesis issues them, differing only in the last digit.
        let a = seq("49590338271490256608559692538361571095921575989136588898");
        let b = seq("49590338271490256608559692538361571095921575989136588899");
        assert!(a < b);
        // Shorter is smaller even when its text sorts later.
        assert!(seq("9") < seq("10"));
        assert!(seq("99999999999999999999") < seq("100000000000000000000"));
        // Leading zeros do not change the value.
        assert_eq!(seq("000123"), seq("123"));
        assert_eq!(seq("0000"), seq("0"));
    }

    #[test]
    fn sequence_number_rejects_bad_text() {
        assert!(matches!(
            SequenceNumber::parse("12a"),
            Err(CursorError::NotDecimal { .. })
        ));
        assert!(matches!(
            SequenceNumber::parse(""),
            Err(CursorError::NotDecimal { .. })
        ));
        assert!(matches!(
            SequenceNumber::parse("-1"),
            Err(CursorError::NotDecimal { .. })
        ));
        assert!(matches!(
            SequenceNumber::parse(&"1".repeat(129)),
            Err(CursorError::TooLong { digits: 129, .. })
        ));
        assert!(SequenceNumber::parse(&"9".repeat(128)).is_ok());
    }

    #[test]
    fn kafka_offset_parse_and_sortable() {
        assert_eq!(KafkaOffset::parse("42").unwrap(), KafkaOffset(42));
        assert_eq!(KafkaOffset(42).sortable(), "00000000000000000042");
        assert_eq!(
            KafkaOffset::parse(&KafkaOffset(42).sortable()).unwrap(),
            KafkaOffset(42)
        );
        assert!(KafkaOffset::parse("99999999999999999999").is_err());
        assert!(KafkaOffset::parse("-3").is_err());
    }

    #[test]
    fn pulsar_message_id_forms() {
        let id = PulsarMessageId::new(12, 7, Some(3));
        assert_eq!(id.to_string(), "12:7:3");
        assert_eq!(PulsarMessageId::parse("12:7:3").unwrap(), id);
        assert_eq!(PulsarMessageId::parse(&id.sortable()).unwrap(), id);
        assert_eq!(id.sortable().len(), 50);
        assert!(id.sortable().bytes().all(|b| b.is_ascii_digit()));
        // Unbatched messages (batch index -1) are batch 0.
        assert_eq!(PulsarMessageId::new(1, 2, Some(-1)).batch, 0);
        assert_eq!(
            PulsarMessageId::new(1, 2, None),
            PulsarMessageId::parse("1:2").unwrap()
        );
        assert!(PulsarMessageId::parse("1:x:0").is_err());
        assert!(PulsarMessageId::parse("123").is_err());
        // Entry order within a ledger, ledger order first.
        assert!(PulsarMessageId::new(1, 9, None) < PulsarMessageId::new(2, 0, None));
        assert!(PulsarMessageId::new(1, 9, Some(0)) < PulsarMessageId::new(1, 9, Some(1)));
    }

    #[test]
    fn stored_cursors_display_as_their_source_writes_them() {
        use crate::record::Source;
        let user = KinesisCursor::user_record(SequenceNumber::parse("1").unwrap(), 0);
        assert_eq!(display(Source::Kinesis, &user.sortable()), "1:0");
        let plain = KinesisCursor::plain(SequenceNumber::parse("10000000000").unwrap());
        assert_eq!(display(Source::Kinesis, &plain.sortable()), "10000000000");
        // Unpadded, both sortable forms read as the same number.
        assert_eq!(unpad(&user.sortable()), unpad(&plain.sortable()));
        assert_eq!(display(Source::Kafka, &KafkaOffset(42).sortable()), "42");
        let id = PulsarMessageId::new(7, 3, Some(2));
        assert_eq!(display(Source::Pulsar, &id.sortable()), id.to_string());
        assert_eq!(display(Source::Kafka, "not a cursor"), "not a cursor");
    }

    fn kc(s: &str) -> KinesisCursor {
        s.parse().unwrap()
    }

    #[test]
    fn kinesis_cursor_forms_and_old_checkpoints() {
        let plain = kc("49590338271490256608559692538361571095921575989136588898");
        // A plain record's sortable form is what the sequence number alone wrote before.
        assert_eq!(plain.sortable(), plain.sequence.sortable());
        assert_eq!(plain.to_string(), plain.sequence.to_string());
        let user = KinesisCursor::user_record(plain.sequence.clone(), 7);
        assert_eq!(user.to_string(), format!("{}:7", plain.sequence));
        assert_eq!(user.sortable().len(), 138);
        assert_eq!(kc(&user.sortable()), user);
        assert_eq!(kc(&user.to_string()), user);
        assert_eq!(kc(&plain.sortable()), plain);
        // The plain form of a number sorts before its user records, which sort by index.
        assert!(plain < user);
        assert!(plain.sortable() < user.sortable());
        assert!(
            KinesisCursor::user_record(plain.sequence.clone(), 9)
                < KinesisCursor::user_record(plain.sequence.clone(), 10)
        );
        // A later record is later whatever the sub-sequences.
        let next = kc("49590338271490256608559692538361571095921575989136588899");
        assert!(KinesisCursor::user_record(plain.sequence.clone(), u32::MAX) < next);
        assert!(KinesisCursor::parse("1:x").is_err());
        assert!(KinesisCursor::parse("1:99999999999").is_err());
        assert!(KinesisCursor::parse(":1").is_err());
    }

    proptest! {
        #[test]
        fn sequence_order_matches_sortable_text_order(a in "[0-9]{1,128}", b in "[0-9]{1,128}") {
            let (x, y) = (seq(&a), seq(&b));
            prop_assert_eq!(x.cmp(&y), x.sortable().cmp(&y.sortable()));
            prop_assert_eq!(SequenceNumber::parse(&x.sortable()).unwrap(), x);
        }

        #[test]
        fn sequence_order_matches_u64_order_where_it_fits(a: u64, b: u64) {
            prop_assert_eq!(seq(&a.to_string()).cmp(&seq(&b.to_string())), a.cmp(&b));
        }

        #[test]
        fn kinesis_cursor_order_matches_sortable_text_order(
            a in "[0-9]{1,128}", b in "[0-9]{1,128}",
            sa in proptest::option::of(any::<u32>()), sb in proptest::option::of(any::<u32>()),
        ) {
            let x = KinesisCursor { sequence: seq(&a), sub: sa };
            let y = KinesisCursor { sequence: seq(&b), sub: sb };
            prop_assert_eq!(x.cmp(&y), x.sortable().cmp(&y.sortable()));
            prop_assert_eq!(KinesisCursor::parse(&x.sortable()).unwrap(), x.clone());
            prop_assert_eq!(KinesisCursor::parse(&x.to_string()).unwrap(), x);
        }

        #[test]
        fn pulsar_order_matches_sortable_text_order(a: (u64, u64, u32), b: (u64, u64, u32)) {
            let x = PulsarMessageId { ledger: a.0 >> 1, entry: a.1 >> 1, batch: a.2 >> 1 };
            let y = PulsarMessageId { ledger: b.0 >> 1, entry: b.1 >> 1, batch: b.2 >> 1 };
            prop_assert_eq!(x.cmp(&y), x.sortable().cmp(&y.sortable()));
            prop_assert_eq!(PulsarMessageId::parse(&x.sortable()).unwrap(), x);
        }

        #[test]
        fn kafka_order_matches_sortable_text_order(a in 0u64..=i64::MAX as u64, b in 0u64..=i64::MAX as u64) {
            prop_assert_eq!(KafkaOffset(a).cmp(&KafkaOffset(b)), KafkaOffset(a).sortable().cmp(&KafkaOffset(b).sortable()));
        }
    }
}
