//! The compatibility matrix: common schema changes, for Avro and JSON Schema, with the verdict
//! Confluent's semantics give in each of the seven modes, and checks that every rejection
//! names the field and the reader.

use super::{
    CompatibilityMode, Incompatibility, Reader, SchemaError, SchemaFormat, check_compatibility,
};
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};

const PASS: bool = true;
const FAIL: bool = false;

/// One schema change.
struct Case {
    name: &'static str,
    format: SchemaFormat,
    /// Versions 1, 2, ... oldest first.
    history: &'static [&'static str],
    new: &'static str,
    /// Verdicts in the order of [`CompatibilityMode::ALL`]:
    /// BACKWARD, BACKWARD_TRANSITIVE, FORWARD, FORWARD_TRANSITIVE, FULL, FULL_TRANSITIVE, NONE.
    expect: [bool; 7],
    /// The field every incompatibility must name.
    field: &'static str,
}

// ---- Avro -------------------------------------------------------------------------------

const AVRO_BASE: &str = r#"{"type":"record","name":"User","namespace":"com.example","fields":[
    {"name":"id","type":"long"},{"name":"name","type":"string"}]}"#;
const AVRO_WITH_OPTIONAL_EMAIL: &str = r#"{"type":"record","name":"User","namespace":"com.example","fields":[
    {"name":"id","type":"long"},{"name":"name","type":"string"},
    {"name":"email","type":["null","string"],"default":null}]}"#;
const AVRO_WITH_REQUIRED_EMAIL: &str = r#"{"type":"record","name":"User","namespace":"com.example","fields":[
    {"name":"id","type":"long"},{"name":"name","type":"string"},{"name":"email","type":"string"}]}"#;
const AVRO_WITH_NICKNAME_DEFAULT: &str = r#"{"type":"record","name":"User","namespace":"com.example","fields":[
    {"name":"id","type":"long"},{"name":"name","type":"string"},
    {"name":"nickname","type":"string","default":""}]}"#;
const AVRO_WITHOUT_NAME: &str = r#"{"type":"record","name":"User","namespace":"com.example","fields":[
    {"name":"id","type":"long"}]}"#;
const AVRO_NAME_INT: &str = r#"{"type":"record","name":"User","namespace":"com.example","fields":[
    {"name":"id","type":"long"},{"name":"name","type":"int"}]}"#;
const AVRO_AGE_INT: &str = r#"{"type":"record","name":"User","namespace":"com.example","fields":[
    {"name":"id","type":"long"},{"name":"age","type":"int"}]}"#;
const AVRO_AGE_LONG: &str = r#"{"type":"record","name":"User","namespace":"com.example","fields":[
    {"name":"id","type":"long"},{"name":"age","type":"long"}]}"#;
const AVRO_STATUS_2: &str = r#"{"type":"record","name":"User","namespace":"com.example","fields":[
    {"name":"id","type":"long"},
    {"name":"status","type":{"type":"enum","name":"Status","symbols":["ACTIVE","INACTIVE"]}}]}"#;
const AVRO_STATUS_3: &str = r#"{"type":"record","name":"User","namespace":"com.example","fields":[
    {"name":"id","type":"long"},
    {"name":"status","type":{"type":"enum","name":"Status","symbols":["ACTIVE","INACTIVE","BANNED"]}}]}"#;
const AVRO_STATUS_2_DEFAULT: &str = r#"{"type":"record","name":"User","namespace":"com.example","fields":[
    {"name":"id","type":"long"},
    {"name":"status","type":{"type":"enum","name":"Status","symbols":["ACTIVE","INACTIVE"],"default":"ACTIVE"}}]}"#;
const AVRO_STATUS_3_DEFAULT: &str = r#"{"type":"record","name":"User","namespace":"com.example","fields":[
    {"name":"id","type":"long"},
    {"name":"status","type":{"type":"enum","name":"Status","symbols":["ACTIVE","INACTIVE","BANNED"],"default":"ACTIVE"}}]}"#;
const AVRO_STATUS_3_NOTE: &str = r#"{"type":"record","name":"User","namespace":"com.example","fields":[
    {"name":"id","type":"long"},
    {"name":"status","type":{"type":"enum","name":"Status","symbols":["ACTIVE","INACTIVE","BANNED"]}},
    {"name":"note","type":["null","string"],"default":null}]}"#;
const AVRO_FULL_NAME_ALIAS: &str = r#"{"type":"record","name":"User","namespace":"com.example","fields":[
    {"name":"id","type":"long"},{"name":"full_name","type":"string","aliases":["name"]}]}"#;
const AVRO_TAG_STRING: &str = r#"{"type":"record","name":"User","namespace":"com.example","fields":[
    {"name":"id","type":"long"},{"name":"tag","type":"string"}]}"#;
const AVRO_TAG_INT_DEFAULT: &str = r#"{"type":"record","name":"User","namespace":"com.example","fields":[
    {"name":"id","type":"long"},{"name":"tag","type":"int","default":0}]}"#;

const AVRO_CASES: &[Case] = &[
    Case {
        name: "avro: add a field with a default",
        format: SchemaFormat::Avro,
        history: &[AVRO_BASE],
        new: AVRO_WITH_OPTIONAL_EMAIL,
        expect: [PASS, PASS, PASS, PASS, PASS, PASS, PASS],
        field: "email",
    },
    Case {
        name: "avro: add a field without a default",
        format: SchemaFormat::Avro,
        history: &[AVRO_BASE],
        new: AVRO_WITH_REQUIRED_EMAIL,
        expect: [FAIL, FAIL, PASS, PASS, FAIL, FAIL, PASS],
        field: "email",
    },
    Case {
        name: "avro: remove a field with a default",
        format: SchemaFormat::Avro,
        history: &[AVRO_WITH_NICKNAME_DEFAULT],
        new: AVRO_BASE,
        expect: [PASS, PASS, PASS, PASS, PASS, PASS, PASS],
        field: "nickname",
    },
    Case {
        name: "avro: remove a field without a default",
        format: SchemaFormat::Avro,
        history: &[AVRO_BASE],
        new: AVRO_WITHOUT_NAME,
        expect: [PASS, PASS, FAIL, FAIL, FAIL, FAIL, PASS],
        field: "name",
    },
    Case {
        name: "avro: change a type (string -> int)",
        format: SchemaFormat::Avro,
        history: &[AVRO_BASE],
        new: AVRO_NAME_INT,
        expect: [FAIL, FAIL, FAIL, FAIL, FAIL, FAIL, PASS],
        field: "name",
    },
    Case {
        name: "avro: widen a type (int -> long)",
        format: SchemaFormat::Avro,
        history: &[AVRO_AGE_INT],
        new: AVRO_AGE_LONG,
        expect: [PASS, PASS, FAIL, FAIL, FAIL, FAIL, PASS],
        field: "age",
    },
    Case {
        name: "avro: add an enum symbol",
        format: SchemaFormat::Avro,
        history: &[AVRO_STATUS_2],
        new: AVRO_STATUS_3,
        expect: [PASS, PASS, FAIL, FAIL, FAIL, FAIL, PASS],
        field: "status",
    },
    Case {
        name: "avro: add an enum symbol, enums with a default",
        format: SchemaFormat::Avro,
        history: &[AVRO_STATUS_2_DEFAULT],
        new: AVRO_STATUS_3_DEFAULT,
        expect: [PASS, PASS, PASS, PASS, PASS, PASS, PASS],
        field: "status",
    },
    Case {
        name: "avro: remove an enum symbol",
        format: SchemaFormat::Avro,
        history: &[AVRO_STATUS_3],
        new: AVRO_STATUS_2,
        expect: [FAIL, FAIL, PASS, PASS, FAIL, FAIL, PASS],
        field: "status",
    },
    Case {
        name: "avro: remove an enum symbol, new enum with a default",
        format: SchemaFormat::Avro,
        history: &[AVRO_STATUS_3],
        new: AVRO_STATUS_2_DEFAULT,
        expect: [PASS, PASS, PASS, PASS, PASS, PASS, PASS],
        field: "status",
    },
    Case {
        name: "avro: rename a field with an alias",
        format: SchemaFormat::Avro,
        history: &[AVRO_BASE],
        new: AVRO_FULL_NAME_ALIAS,
        // The old reader does not know the alias: its `name` has no writer field.
        expect: [PASS, PASS, FAIL, FAIL, FAIL, FAIL, PASS],
        field: "name",
    },
    Case {
        name: "avro: re-add a removed field with another type (only an older version conflicts)",
        format: SchemaFormat::Avro,
        history: &[AVRO_TAG_STRING, AVRO_WITHOUT_NAME],
        new: AVRO_TAG_INT_DEFAULT,
        expect: [PASS, FAIL, PASS, FAIL, PASS, FAIL, PASS],
        field: "tag",
    },
    Case {
        name: "avro: enum grew in the previous version (only the oldest reader lacks the symbol)",
        format: SchemaFormat::Avro,
        history: &[AVRO_STATUS_2, AVRO_STATUS_3],
        new: AVRO_STATUS_3_NOTE,
        expect: [PASS, PASS, PASS, FAIL, PASS, FAIL, PASS],
        field: "status",
    },
];

// ---- JSON Schema ------------------------------------------------------------------------

const JSON_BASE: &str = r#"{"type":"object","properties":{
    "id":{"type":"integer"},"name":{"type":"string"}},"required":["id","name"]}"#;
const JSON_WITH_OPTIONAL_EMAIL: &str = r#"{"type":"object","properties":{
    "id":{"type":"integer"},"name":{"type":"string"},"email":{"type":"string"}},"required":["id","name"]}"#;
const JSON_WITH_REQUIRED_EMAIL: &str = r#"{"type":"object","properties":{
    "id":{"type":"integer"},"name":{"type":"string"},"email":{"type":"string"}},"required":["id","name","email"]}"#;
const JSON_CLOSED_BASE: &str = r#"{"type":"object","additionalProperties":false,"properties":{
    "id":{"type":"integer"},"name":{"type":"string"}},"required":["id","name"]}"#;
const JSON_CLOSED_WITH_OPTIONAL_EMAIL: &str = r#"{"type":"object","additionalProperties":false,"properties":{
    "id":{"type":"integer"},"name":{"type":"string"},"email":{"type":"string"}},"required":["id","name"]}"#;
const JSON_PARTIAL_BASE: &str = r#"{"type":"object","additionalProperties":{"type":"string"},"properties":{
    "id":{"type":"integer"},"name":{"type":"string"}},"required":["id","name"]}"#;
const JSON_PARTIAL_WITH_OPTIONAL_EMAIL: &str = r#"{"type":"object","additionalProperties":{"type":"string"},"properties":{
    "id":{"type":"integer"},"name":{"type":"string"},"email":{"type":"string"}},"required":["id","name"]}"#;
const JSON_WITH_OPTIONAL_NICKNAME: &str = r#"{"type":"object","properties":{
    "id":{"type":"integer"},"name":{"type":"string"},"nickname":{"type":"string"}},"required":["id","name"]}"#;
const JSON_WITHOUT_NAME: &str = r#"{"type":"object","properties":{
    "id":{"type":"integer"}},"required":["id"]}"#;
const JSON_NAME_INTEGER: &str = r#"{"type":"object","properties":{
    "id":{"type":"integer"},"name":{"type":"integer"}},"required":["id","name"]}"#;
const JSON_ID_NUMBER: &str = r#"{"type":"object","properties":{
    "id":{"type":"number"},"name":{"type":"string"}},"required":["id","name"]}"#;
const JSON_NAME_PATTERN: &str = r#"{"type":"object","properties":{
    "id":{"type":"integer"},"name":{"type":"string","pattern":"^[a-z]+$"}},"required":["id","name"]}"#;
const JSON_STATUS_2: &str = r#"{"type":"object","properties":{
    "status":{"enum":["active","inactive"]}},"required":["status"]}"#;
const JSON_STATUS_3: &str = r#"{"type":"object","properties":{
    "status":{"enum":["active","inactive","banned"]}},"required":["status"]}"#;
const JSON_STATUS_3_DESCRIBED: &str = r#"{"type":"object","description":"a user","properties":{
    "status":{"enum":["active","inactive","banned"],"description":"lifecycle"}},"required":["status"]}"#;
const JSON_CLOSED_TAG_STRING: &str = r#"{"type":"object","additionalProperties":false,"properties":{
    "id":{"type":"integer"},"tag":{"type":"string"}},"required":["id"]}"#;
const JSON_CLOSED_ID: &str = r#"{"type":"object","additionalProperties":false,"properties":{
    "id":{"type":"integer"}},"required":["id"]}"#;
const JSON_CLOSED_TAG_INTEGER: &str = r#"{"type":"object","additionalProperties":false,"properties":{
    "id":{"type":"integer"},"tag":{"type":"integer"}},"required":["id"]}"#;

const JSON_CASES: &[Case] = &[
    Case {
        // Open model: old data may already hold an `email` of any type, so the new reader's
        // `email: string` may reject it (Confluent: PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL).
        name: "json: add an optional property (open model)",
        format: SchemaFormat::JsonSchema,
        history: &[JSON_BASE],
        new: JSON_WITH_OPTIONAL_EMAIL,
        expect: [FAIL, FAIL, PASS, PASS, FAIL, FAIL, PASS],
        field: "email",
    },
    Case {
        // Closed model: old data never holds `email`, but the old reader rejects new data
        // that does.
        name: "json: add an optional property (closed model)",
        format: SchemaFormat::JsonSchema,
        history: &[JSON_CLOSED_BASE],
        new: JSON_CLOSED_WITH_OPTIONAL_EMAIL,
        expect: [PASS, PASS, FAIL, FAIL, FAIL, FAIL, PASS],
        field: "email",
    },
    Case {
        // Partially open model whose additionalProperties schema covers the new property.
        name: "json: add an optional property covered by additionalProperties",
        format: SchemaFormat::JsonSchema,
        history: &[JSON_PARTIAL_BASE],
        new: JSON_PARTIAL_WITH_OPTIONAL_EMAIL,
        expect: [PASS, PASS, PASS, PASS, PASS, PASS, PASS],
        field: "email",
    },
    Case {
        name: "json: add a required property",
        format: SchemaFormat::JsonSchema,
        history: &[JSON_BASE],
        new: JSON_WITH_REQUIRED_EMAIL,
        expect: [FAIL, FAIL, PASS, PASS, FAIL, FAIL, PASS],
        field: "email",
    },
    Case {
        name: "json: remove an optional property (open model)",
        format: SchemaFormat::JsonSchema,
        history: &[JSON_WITH_OPTIONAL_NICKNAME],
        new: JSON_BASE,
        expect: [PASS, PASS, FAIL, FAIL, FAIL, FAIL, PASS],
        field: "nickname",
    },
    Case {
        name: "json: remove a required property",
        format: SchemaFormat::JsonSchema,
        history: &[JSON_BASE],
        new: JSON_WITHOUT_NAME,
        expect: [PASS, PASS, FAIL, FAIL, FAIL, FAIL, PASS],
        field: "name",
    },
    Case {
        name: "json: change a type (string -> integer)",
        format: SchemaFormat::JsonSchema,
        history: &[JSON_BASE],
        new: JSON_NAME_INTEGER,
        expect: [FAIL, FAIL, FAIL, FAIL, FAIL, FAIL, PASS],
        field: "name",
    },
    Case {
        name: "json: widen a type (integer -> number)",
        format: SchemaFormat::JsonSchema,
        history: &[JSON_BASE],
        new: JSON_ID_NUMBER,
        expect: [PASS, PASS, FAIL, FAIL, FAIL, FAIL, PASS],
        field: "id",
    },
    Case {
        name: "json: narrow a type (number -> integer)",
        format: SchemaFormat::JsonSchema,
        history: &[JSON_ID_NUMBER],
        new: JSON_BASE,
        expect: [FAIL, FAIL, PASS, PASS, FAIL, FAIL, PASS],
        field: "id",
    },
    Case {
        name: "json: add an enum value",
        format: SchemaFormat::JsonSchema,
        history: &[JSON_STATUS_2],
        new: JSON_STATUS_3,
        expect: [PASS, PASS, FAIL, FAIL, FAIL, FAIL, PASS],
        field: "status",
    },
    Case {
        name: "json: remove an enum value",
        format: SchemaFormat::JsonSchema,
        history: &[JSON_STATUS_3],
        new: JSON_STATUS_2,
        expect: [FAIL, FAIL, PASS, PASS, FAIL, FAIL, PASS],
        field: "status",
    },
    Case {
        name: "json: change an unsupported keyword (add a pattern)",
        format: SchemaFormat::JsonSchema,
        history: &[JSON_BASE],
        new: JSON_NAME_PATTERN,
        expect: [FAIL, FAIL, FAIL, FAIL, FAIL, FAIL, PASS],
        field: "name",
    },
    Case {
        name: "json: re-add a removed property with another type (only an older version conflicts)",
        format: SchemaFormat::JsonSchema,
        history: &[JSON_CLOSED_TAG_STRING, JSON_CLOSED_ID],
        new: JSON_CLOSED_TAG_INTEGER,
        expect: [PASS, FAIL, FAIL, FAIL, FAIL, FAIL, PASS],
        field: "tag",
    },
    Case {
        name: "json: enum grew in the previous version (only the oldest reader lacks the value)",
        format: SchemaFormat::JsonSchema,
        history: &[JSON_STATUS_2, JSON_STATUS_3],
        new: JSON_STATUS_3_DESCRIBED,
        expect: [PASS, PASS, PASS, FAIL, PASS, FAIL, PASS],
        field: "status",
    },
];

fn history(case: &Case) -> Vec<(u32, &'static str)> {
    (1u32..).zip(case.history.iter().copied()).collect()
}

fn run(case: &Case, mode: CompatibilityMode) -> Result<(), SchemaError> {
    check_compatibility(case.format, mode, case.new, &history(case))
}

/// The readers that may appear in a rejection under `mode`.
fn readers(mode: CompatibilityMode) -> Vec<Reader> {
    let mut readers = Vec::new();
    if mode.checks_backward() {
        readers.push(Reader::New);
    }
    if mode.checks_forward() {
        readers.push(Reader::Previous);
    }
    readers
}

fn check_case(case: &Case) {
    let versions = history(case);
    let latest = versions.last().map(|&(v, _)| v);
    for (mode, expected) in CompatibilityMode::ALL.into_iter().zip(case.expect) {
        let result = run(case, mode);
        match (expected, result) {
            (true, Ok(())) => {}
            (true, Err(err)) => panic!("{}: {mode}: expected compatible, got: {err}", case.name),
            (false, Ok(())) => panic!(
                "{}: {mode}: expected incompatible, got compatible",
                case.name
            ),
            (false, Err(err)) => {
                let message = err.to_string();
                let SchemaError::Incompatible {
                    format,
                    mode: reported_mode,
                    incompatibilities,
                } = err
                else {
                    panic!(
                        "{}: {mode}: expected Incompatible, got: {message}",
                        case.name
                    );
                };
                assert_eq!(format, case.format, "{}: {mode}", case.name);
                assert_eq!(reported_mode, mode, "{}: {mode}", case.name);
                assert!(!incompatibilities.is_empty(), "{}: {mode}", case.name);
                assert!(
                    message.contains(&format!("not {mode} compatible")),
                    "{}: {mode}: {message}",
                    case.name
                );
                for Incompatibility {
                    version,
                    reader,
                    field,
                    reason,
                } in &incompatibilities
                {
                    assert_eq!(field, case.field, "{}: {mode}: {message}", case.name);
                    assert!(!reason.is_empty());
                    assert!(
                        readers(mode).contains(reader),
                        "{}: {mode}: reader {reader:?} in {message}",
                        case.name
                    );
                    if !mode.is_transitive() {
                        assert_eq!(*version, latest, "{}: {mode}: {message}", case.name);
                    }
                    let who = match reader {
                        Reader::New => "new schema as reader",
                        Reader::Previous => "as writer, version",
                    };
                    assert!(message.contains(who), "{}: {mode}: {message}", case.name);
                }
                assert!(
                    message.contains(&format!("field \"{}\"", case.field)),
                    "{}: {mode}: {message}",
                    case.name
                );
            }
        }
    }
}

/// The table itself must follow the definitions: FULL is BACKWARD and FORWARD, transitive
/// modes are at least as strict, NONE always passes, and one previous version makes
/// transitive and non-transitive agree.
fn check_table_consistency(case: &Case) {
    let [b, bt, f, ft, full, full_t, none] = case.expect;
    assert_eq!(full, b && f, "{}", case.name);
    assert_eq!(full_t, bt && ft, "{}", case.name);
    assert!(none, "{}", case.name);
    assert!(!bt || b, "{}", case.name);
    assert!(!ft || f, "{}", case.name);
    if case.history.len() == 1 {
        assert_eq!((b, f), (bt, ft), "{}", case.name);
    }
}

#[test]
fn avro_matrix() {
    for case in AVRO_CASES {
        check_table_consistency(case);
        check_case(case);
    }
}

#[test]
fn json_schema_matrix() {
    for case in JSON_CASES {
        check_table_consistency(case);
        check_case(case);
    }
}

#[test]
fn matrix_covers_a_transitive_only_conflict_in_both_formats() {
    for cases in [AVRO_CASES, JSON_CASES] {
        assert!(
            cases.iter().any(|c| c.expect[0] && !c.expect[1]),
            "BACKWARD passes, BACKWARD_TRANSITIVE fails"
        );
        assert!(
            cases.iter().any(|c| c.expect[2] && !c.expect[3]),
            "FORWARD passes, FORWARD_TRANSITIVE fails"
        );
    }
}

#[test]
fn transitive_failures_point_at_the_older_version() {
    for case in AVRO_CASES
        .iter()
        .chain(JSON_CASES)
        .filter(|c| c.history.len() == 2)
    {
        for mode in [
            CompatibilityMode::BackwardTransitive,
            CompatibilityMode::ForwardTransitive,
            CompatibilityMode::FullTransitive,
        ] {
            let Err(SchemaError::Incompatible {
                incompatibilities, ..
            }) = run(case, mode)
            else {
                continue;
            };
            // Version 2 conflicts only in the JSON closed-model case (FORWARD fails there too).
            assert!(
                incompatibilities.iter().any(|i| i.version == Some(1)),
                "{}: {mode}: {incompatibilities:?}",
                case.name
            );
        }
    }
}

#[test]
fn backward_explanation_says_which_field_and_which_reader() {
    let err = check_compatibility(
        SchemaFormat::Avro,
        CompatibilityMode::Backward,
        AVRO_WITH_REQUIRED_EMAIL,
        &[(1, AVRO_BASE), (2, AVRO_BASE)],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "new avro schema is not BACKWARD compatible: 1 incompatibility: 1) version 2 as writer, new schema as reader: field \"email\" is required by the reader and has no default, but the writer does not have it"
    );
}

#[test]
fn forward_explanation_says_which_field_and_which_reader() {
    // Removing a value is forward compatible; adding one is not.
    assert_eq!(
        check_compatibility(
            SchemaFormat::JsonSchema,
            CompatibilityMode::Forward,
            JSON_STATUS_2,
            &[(7, JSON_STATUS_3)],
        ),
        Ok(())
    );
    let err = check_compatibility(
        SchemaFormat::JsonSchema,
        CompatibilityMode::Forward,
        JSON_STATUS_3,
        &[(7, JSON_STATUS_2)],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "new json_schema schema is not FORWARD compatible: 1 incompatibility: 1) new schema as writer, version 7 as reader: field \"status\" has enum value \"banned\" in the writer that the reader's enum does not contain"
    );
}

/// apache-avro's own `can_read` gives the same verdict as ours on every Avro matrix pair,
/// once its `Partial` (may fail at run time) counts as incompatible, as Confluent counts it.
/// The cases where it differs are pinned in `avro.rs`.
#[test]
fn apache_avro_agrees_on_every_avro_matrix_pair() {
    for case in AVRO_CASES {
        let new = super::avro::parse(case.new).unwrap();
        for old in case.history {
            let old = super::avro::parse(old).unwrap();
            for (writer, reader) in [(&old, &new), (&new, &old)] {
                let ours = super::avro::incompatibilities(writer, reader).is_empty();
                let library = matches!(
                    SchemaCompatibility::can_read(writer, reader),
                    Ok(Compatibility::Full)
                );
                assert_eq!(ours, library, "{}", case.name);
            }
        }
    }
}
