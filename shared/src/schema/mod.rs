//! Schemas: formats, compatibility modes and the checks the connector runs itself before a
//! version is registered (a registry that does not enforce compatibility must not let a
//! breaking change through).
//!
//! # Reader and writer
//! Every check asks one question: can a consumer holding the *reader* schema read data
//! produced with the *writer* schema? The modes combine that question the way Confluent
//! Schema Registry and AWS Glue define them:
//!
//! | mode | reader | writer | against |
//! |---|---|---|---|
//! | `BACKWARD` | new | previous | the latest previous version |
//! | `BACKWARD_TRANSITIVE` | new | previous | every previous version |
//! | `FORWARD` | previous | new | the latest previous version |
//! | `FORWARD_TRANSITIVE` | previous | new | every previous version |
//! | `FULL` | both ways | both ways | the latest previous version |
//! | `FULL_TRANSITIVE` | both ways | both ways | every previous version |
//! | `NONE` | - | - | nothing (the new schema must still parse) |
//!
//! An empty history is always compatible. The format rules are in [`avro`] and
//! [`json_schema`]; both report every incompatibility they find (not just the first) with the
//! dotted path of the field, so an operator can fix a schema in one round.
//!
//! # Field paths
//! `address.zip` is field `zip` of the record or object in field `address`; `tags[]` is the
//! items of the array in `tags`; `attrs{}` is the values of the Avro map in `attrs`;
//! `attrs.*` is the additional (undeclared) properties of a JSON object; `<root>` is the
//! schema itself.

pub mod avro;
#[cfg(test)]
mod compat_matrix;
pub mod json_schema;

pub use avro::decode_avro;
pub use json_schema::validate_json;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The schema languages the connector understands. A subject's format decides how its
/// definitions are parsed, checked and used to validate payloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SchemaFormat {
    /// Apache Avro: payloads are binary datums decoded with the writer schema.
    Avro,
    /// JSON Schema: payloads are JSON documents validated against the schema.
    JsonSchema,
}

impl SchemaFormat {
    /// The name used in configuration and logs (`avro`, `json_schema`), same as serde's.
    pub fn as_str(self) -> &'static str {
        match self {
            SchemaFormat::Avro => "avro",
            SchemaFormat::JsonSchema => "json_schema",
        }
    }
}

impl fmt::Display for SchemaFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SchemaFormat {
    type Err = SchemaError;

    /// Accepts the serde names, `avro` and `json_schema`.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value {
            "avro" => Ok(SchemaFormat::Avro),
            "json_schema" => Ok(SchemaFormat::JsonSchema),
            _ => Err(SchemaError::UnknownFormat {
                value: value.to_string(),
            }),
        }
    }
}

/// Which evolutions a subject allows, named and defined exactly as Confluent Schema Registry
/// and AWS Glue Schema Registry do (see the module docs for the reader/writer table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompatibilityMode {
    /// The new schema can read data written with the latest previous version.
    Backward,
    /// The new schema can read data written with every previous version.
    BackwardTransitive,
    /// The latest previous version can read data written with the new schema.
    Forward,
    /// Every previous version can read data written with the new schema.
    ForwardTransitive,
    /// Backward and forward against the latest previous version.
    Full,
    /// Backward and forward against every previous version.
    FullTransitive,
    /// No check: any schema that parses is accepted.
    None,
}

impl CompatibilityMode {
    /// Every mode, in declaration order (for tables and exhaustive tests).
    pub const ALL: [CompatibilityMode; 7] = [
        CompatibilityMode::Backward,
        CompatibilityMode::BackwardTransitive,
        CompatibilityMode::Forward,
        CompatibilityMode::ForwardTransitive,
        CompatibilityMode::Full,
        CompatibilityMode::FullTransitive,
        CompatibilityMode::None,
    ];

    /// The registry spelling, e.g. `BACKWARD_TRANSITIVE` (same as serde's).
    pub fn as_str(self) -> &'static str {
        match self {
            CompatibilityMode::Backward => "BACKWARD",
            CompatibilityMode::BackwardTransitive => "BACKWARD_TRANSITIVE",
            CompatibilityMode::Forward => "FORWARD",
            CompatibilityMode::ForwardTransitive => "FORWARD_TRANSITIVE",
            CompatibilityMode::Full => "FULL",
            CompatibilityMode::FullTransitive => "FULL_TRANSITIVE",
            CompatibilityMode::None => "NONE",
        }
    }

    /// True when the new schema must read data written with previous versions.
    pub fn checks_backward(self) -> bool {
        matches!(
            self,
            CompatibilityMode::Backward
                | CompatibilityMode::BackwardTransitive
                | CompatibilityMode::Full
                | CompatibilityMode::FullTransitive
        )
    }

    /// True when previous versions must read data written with the new schema.
    pub fn checks_forward(self) -> bool {
        matches!(
            self,
            CompatibilityMode::Forward
                | CompatibilityMode::ForwardTransitive
                | CompatibilityMode::Full
                | CompatibilityMode::FullTransitive
        )
    }

    /// True when the check runs against every previous version, not just the latest.
    pub fn is_transitive(self) -> bool {
        matches!(
            self,
            CompatibilityMode::BackwardTransitive
                | CompatibilityMode::ForwardTransitive
                | CompatibilityMode::FullTransitive
        )
    }
}

impl fmt::Display for CompatibilityMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CompatibilityMode {
    type Err = SchemaError;

    /// Accepts the registry spellings (`BACKWARD`, `FULL_TRANSITIVE`, ...), ignoring ASCII
    /// case and surrounding whitespace.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let wanted = value.trim();
        CompatibilityMode::ALL
            .into_iter()
            .find(|mode| mode.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| SchemaError::UnknownCompatibilityMode {
                value: value.to_string(),
            })
    }
}

/// Which side of a check held the reader schema (the other side is the writer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reader {
    /// The schema being registered reads data written with a previous version (backward).
    New,
    /// A previous version reads data written with the schema being registered (forward).
    Previous,
}

/// One reason the reader cannot read the writer's data, located at a field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Incompatibility {
    /// The previous version involved; `None` when the check did not come from a history.
    pub version: Option<u32>,
    /// Which schema was the reader (the other one was the writer).
    pub reader: Reader,
    /// Dotted path of the field, e.g. `address.zip`, or `<root>` for the schema itself.
    pub field: String,
    /// What is wrong, phrased to follow `field "<path>"`.
    pub reason: String,
}

impl fmt::Display for Incompatibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let previous = match self.version {
            Some(version) => format!("version {version}"),
            None => "previous schema".to_string(),
        };
        let (writer, reader) = match self.reader {
            Reader::New => (previous.as_str(), "new schema"),
            Reader::Previous => ("new schema", previous.as_str()),
        };
        write!(
            f,
            "{writer} as writer, {reader} as reader: field \"{}\" {}",
            self.field, self.reason
        )
    }
}

/// Why a schema was rejected. Every variant is permanent: retrying the same definition gives
/// the same answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The definition being checked is not a valid schema of its format.
    #[error("{format} schema does not parse: {reason}")]
    Parse {
        /// The format it was parsed as.
        format: SchemaFormat,
        /// The parser's message.
        reason: String,
    },
    /// A previous version in the history does not parse (the stored history is corrupt or was
    /// written for another format).
    #[error("{format} schema version {version} in the history does not parse: {reason}")]
    StoredSchemaParse {
        /// The format it was parsed as.
        format: SchemaFormat,
        /// The version that does not parse.
        version: u32,
        /// The parser's message.
        reason: String,
    },
    /// Control flow: the new schema breaks the subject's compatibility mode. The caller
    /// rejects the registration (HTTP 409 in registry terms) and shows the list.
    #[error(
        "new {format} schema is not {mode} compatible: {}",
        list_incompatibilities(.incompatibilities)
    )]
    Incompatible {
        /// The subject's format.
        format: SchemaFormat,
        /// The mode that was checked.
        mode: CompatibilityMode,
        /// Every incompatibility found, against every version checked.
        incompatibilities: Vec<Incompatibility>,
    },
    /// A format name that is neither `avro` nor `json_schema`.
    #[error("unknown schema format {value:?} (expected avro or json_schema)")]
    UnknownFormat {
        /// The name that was given.
        value: String,
    },
    /// A compatibility mode name that Confluent and Glue do not define.
    #[error(
        "unknown compatibility mode {value:?} (expected BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE or NONE)"
    )]
    UnknownCompatibilityMode {
        /// The name that was given.
        value: String,
    },
}

impl SchemaError {
    /// Always false: a schema verdict does not change on retry. Kept so callers classify
    /// every error the same way.
    pub fn is_transient(&self) -> bool {
        false
    }
}

fn list_incompatibilities(incompatibilities: &[Incompatibility]) -> String {
    let count = incompatibilities.len();
    let noun = if count == 1 {
        "incompatibility"
    } else {
        "incompatibilities"
    };
    let items: Vec<String> = incompatibilities
        .iter()
        .enumerate()
        .map(|(i, incompatibility)| format!("{}) {incompatibility}", i + 1))
        .collect();
    format!("{count} {noun}: {}", items.join("; "))
}

/// A problem found by a format checker before it is placed in a history: the path and the
/// reason (see [`Incompatibility`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finding {
    pub(crate) field: String,
    pub(crate) reason: String,
}

impl Finding {
    pub(crate) fn new(field: &str, reason: impl Into<String>) -> Self {
        Finding {
            field: if field.is_empty() {
                ROOT.to_string()
            } else {
                field.to_string()
            },
            reason: reason.into(),
        }
    }
}

/// How the schema itself is named in a field path.
pub(crate) const ROOT: &str = "<root>";

/// `parent.child`, or `child` at the root.
pub(crate) fn child_path(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else {
        format!("{parent}.{child}")
    }
}

/// A definition parsed once, so a history is not re-parsed per direction.
enum Parsed {
    Avro(apache_avro::Schema),
    Json(serde_json::Value),
}

fn parse(format: SchemaFormat, definition: &str) -> Result<Parsed, String> {
    match format {
        SchemaFormat::Avro => avro::parse(definition).map(Parsed::Avro),
        SchemaFormat::JsonSchema => json_schema::parse(definition).map(Parsed::Json),
    }
}

/// Everything that stops `reader` from reading data written with `writer`.
fn reader_findings(writer: &Parsed, reader: &Parsed) -> Vec<Finding> {
    match (writer, reader) {
        (Parsed::Avro(writer), Parsed::Avro(reader)) => avro::incompatibilities(writer, reader),
        (Parsed::Json(writer), Parsed::Json(reader)) => {
            json_schema::incompatibilities(writer, reader)
        }
        // `check_compatibility` parses both sides with the same format.
        _ => vec![Finding::new("", "was parsed as another schema format")],
    }
}

/// Checks that `definition` is a valid schema of `format`.
///
/// # Errors
/// [`SchemaError::Parse`] with the parser's message.
pub fn parse_check(format: SchemaFormat, definition: &str) -> Result<(), SchemaError> {
    parse(format, definition)
        .map(|_| ())
        .map_err(|reason| SchemaError::Parse { format, reason })
}

/// Decides whether `new` may be registered after `previous` under `mode`.
///
/// `previous` is the subject's history as `(version, definition)`, oldest first. The new
/// schema must parse in every mode; in `NONE` nothing else is checked, and with an empty
/// history every schema is compatible. Non-transitive modes check against the last entry
/// only, transitive modes against every entry.
///
/// # Errors
/// [`SchemaError::Parse`] when `new` does not parse, [`SchemaError::StoredSchemaParse`] when a
/// version that must be checked does not, and [`SchemaError::Incompatible`] with every
/// incompatibility found.
pub fn check_compatibility(
    format: SchemaFormat,
    mode: CompatibilityMode,
    new: &str,
    previous: &[(u32, &str)],
) -> Result<(), SchemaError> {
    let new_schema = parse(format, new).map_err(|reason| SchemaError::Parse { format, reason })?;
    if mode == CompatibilityMode::None {
        return Ok(());
    }
    let against = if mode.is_transitive() {
        previous
    } else {
        match previous.split_last() {
            Some((last, _)) => std::slice::from_ref(last),
            None => &[],
        }
    };
    let mut incompatibilities = Vec::new();
    for &(version, definition) in against {
        let old_schema =
            parse(format, definition).map_err(|reason| SchemaError::StoredSchemaParse {
                format,
                version,
                reason,
            })?;
        let mut record = |reader: Reader, findings: Vec<Finding>| {
            incompatibilities.extend(findings.into_iter().map(|finding| Incompatibility {
                version: Some(version),
                reader,
                field: finding.field,
                reason: finding.reason,
            }));
        };
        if mode.checks_backward() {
            record(Reader::New, reader_findings(&old_schema, &new_schema));
        }
        if mode.checks_forward() {
            record(Reader::Previous, reader_findings(&new_schema, &old_schema));
        }
    }
    if incompatibilities.is_empty() {
        Ok(())
    } else {
        Err(SchemaError::Incompatible {
            format,
            mode,
            incompatibilities,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECORD_V1: &str =
        r#"{"type":"record","name":"User","fields":[{"name":"id","type":"long"}]}"#;
    const RECORD_V2_EMAIL: &str = r#"{"type":"record","name":"User","fields":[{"name":"id","type":"long"},{"name":"email","type":"string"}]}"#;

    #[test]
    fn format_serde_and_display_use_snake_case() {
        for (format, name) in [
            (SchemaFormat::Avro, "avro"),
            (SchemaFormat::JsonSchema, "json_schema"),
        ] {
            assert_eq!(
                serde_json::to_value(format).unwrap(),
                serde_json::json!(name)
            );
            assert_eq!(
                serde_json::from_value::<SchemaFormat>(serde_json::json!(name)).unwrap(),
                format
            );
            assert_eq!(format.to_string(), name);
            assert_eq!(name.parse::<SchemaFormat>().unwrap(), format);
        }
        assert!(matches!(
            "protobuf".parse::<SchemaFormat>(),
            Err(SchemaError::UnknownFormat { value }) if value == "protobuf"
        ));
    }

    #[test]
    fn mode_names_are_the_registry_spellings() {
        let expected = [
            "BACKWARD",
            "BACKWARD_TRANSITIVE",
            "FORWARD",
            "FORWARD_TRANSITIVE",
            "FULL",
            "FULL_TRANSITIVE",
            "NONE",
        ];
        for (mode, name) in CompatibilityMode::ALL.into_iter().zip(expected) {
            assert_eq!(serde_json::to_value(mode).unwrap(), serde_json::json!(name));
            assert_eq!(
                serde_json::from_value::<CompatibilityMode>(serde_json::json!(name)).unwrap(),
                mode
            );
            assert_eq!(mode.to_string(), name);
            assert_eq!(name.parse::<CompatibilityMode>().unwrap(), mode);
        }
        assert_eq!(
            " full_transitive ".parse::<CompatibilityMode>().unwrap(),
            CompatibilityMode::FullTransitive
        );
        assert!(matches!(
            "BACKWARDS".parse::<CompatibilityMode>(),
            Err(SchemaError::UnknownCompatibilityMode { .. })
        ));
        assert!(
            serde_json::from_value::<CompatibilityMode>(serde_json::json!("backward")).is_err()
        );
    }

    #[test]
    fn mode_directions() {
        use CompatibilityMode::*;
        let table = [
            (Backward, true, false, false),
            (BackwardTransitive, true, false, true),
            (Forward, false, true, false),
            (ForwardTransitive, false, true, true),
            (Full, true, true, false),
            (FullTransitive, true, true, true),
            (None, false, false, false),
        ];
        for (mode, backward, forward, transitive) in table {
            assert_eq!(mode.checks_backward(), backward, "{mode}");
            assert_eq!(mode.checks_forward(), forward, "{mode}");
            assert_eq!(mode.is_transitive(), transitive, "{mode}");
        }
    }

    #[test]
    fn incompatibility_display_names_the_field_and_the_reader() {
        let backward = Incompatibility {
            version: Some(2),
            reader: Reader::New,
            field: "email".into(),
            reason: "is required by the reader and has no default, but the writer does not have it"
                .into(),
        };
        assert_eq!(
            backward.to_string(),
            "version 2 as writer, new schema as reader: field \"email\" is required by the reader and has no default, but the writer does not have it"
        );
        let forward = Incompatibility {
            reader: Reader::Previous,
            version: None,
            ..backward
        };
        assert!(
            forward
                .to_string()
                .starts_with("new schema as writer, previous schema as reader: field \"email\"")
        );
    }

    #[test]
    fn incompatible_error_lists_every_incompatibility_with_the_mode() {
        let err = check_compatibility(
            SchemaFormat::Avro,
            CompatibilityMode::Backward,
            RECORD_V2_EMAIL,
            &[(1, RECORD_V1)],
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("new avro schema is not BACKWARD compatible: 1 incompatibility: 1) version 1 as writer, new schema as reader: field \"email\""),
            "{message}"
        );
        assert!(!err.is_transient());
    }

    #[test]
    fn empty_history_is_always_compatible_but_the_new_schema_must_parse() {
        for mode in CompatibilityMode::ALL {
            assert_eq!(
                check_compatibility(SchemaFormat::Avro, mode, RECORD_V1, &[]),
                Ok(())
            );
            assert!(matches!(
                check_compatibility(SchemaFormat::Avro, mode, "{\"type\":\"recrd\"}", &[]),
                Err(SchemaError::Parse {
                    format: SchemaFormat::Avro,
                    ..
                })
            ));
            assert!(matches!(
                check_compatibility(SchemaFormat::JsonSchema, mode, "{\"type\":\"strin\"}", &[]),
                Err(SchemaError::Parse {
                    format: SchemaFormat::JsonSchema,
                    ..
                })
            ));
        }
    }

    #[test]
    fn none_skips_the_history_even_when_it_does_not_parse() {
        assert_eq!(
            check_compatibility(
                SchemaFormat::Avro,
                CompatibilityMode::None,
                RECORD_V2_EMAIL,
                &[(1, "not a schema")]
            ),
            Ok(())
        );
    }

    #[test]
    fn a_history_version_that_does_not_parse_is_reported_with_its_version() {
        let err = check_compatibility(
            SchemaFormat::Avro,
            CompatibilityMode::BackwardTransitive,
            RECORD_V1,
            &[(1, "not a schema"), (2, RECORD_V1)],
        )
        .unwrap_err();
        assert!(
            matches!(err, SchemaError::StoredSchemaParse { version: 1, .. }),
            "{err}"
        );
        // Non-transitive modes never look at version 1.
        assert_eq!(
            check_compatibility(
                SchemaFormat::Avro,
                CompatibilityMode::Backward,
                RECORD_V1,
                &[(1, "not a schema"), (2, RECORD_V1)],
            ),
            Ok(())
        );
    }

    #[test]
    fn parse_check_accepts_valid_and_rejects_invalid_definitions() {
        assert_eq!(parse_check(SchemaFormat::Avro, RECORD_V1), Ok(()));
        assert_eq!(
            parse_check(SchemaFormat::JsonSchema, r#"{"type":"object"}"#),
            Ok(())
        );
        let err = parse_check(SchemaFormat::Avro, r#"{"type":"record","name":"R"}"#).unwrap_err();
        assert!(
            err.to_string().starts_with("avro schema does not parse: "),
            "{err}"
        );
        let err = parse_check(SchemaFormat::JsonSchema, "{").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("json_schema schema does not parse: "),
            "{err}"
        );
    }

    #[test]
    fn full_reports_both_directions() {
        // int -> string breaks both ways: two incompatibilities, one per reader.
        let old = r#"{"type":"record","name":"R","fields":[{"name":"n","type":"int"}]}"#;
        let new = r#"{"type":"record","name":"R","fields":[{"name":"n","type":"string"}]}"#;
        let Err(SchemaError::Incompatible {
            incompatibilities, ..
        }) = check_compatibility(
            SchemaFormat::Avro,
            CompatibilityMode::Full,
            new,
            &[(4, old)],
        )
        else {
            panic!("expected incompatible");
        };
        let readers: Vec<(Reader, &str)> = incompatibilities
            .iter()
            .map(|i| (i.reader, i.field.as_str()))
            .collect();
        assert_eq!(readers, vec![(Reader::New, "n"), (Reader::Previous, "n")]);
        assert!(incompatibilities.iter().all(|i| i.version == Some(4)));
    }
}
