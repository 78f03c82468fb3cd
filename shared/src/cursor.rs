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
        fn kafka_order_matches_sortable_text_order(a in 0u64..=i64::MAX as u64, b in 0u64..=i64::MAX as u64) {
            prop_assert_eq!(KafkaOffset(a).cmp(&KafkaOffset(b)), KafkaOffset(a).sortable().cmp(&KafkaOffset(b).sortable()));
        }
    }
}
