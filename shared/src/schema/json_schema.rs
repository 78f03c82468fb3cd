//! JSON Schema: parsing (with meta-schema validation), payload validation, and a conservative
//! reader/writer compatibility check.
//!
//! # What compatible means
//! The reader can read the writer's data when every document valid under the writer schema is
//! also valid under the reader schema. JSON Schema has no resolution rules (no defaults, no
//! aliases): a document is simply valid or not. The check below never calls an incompatible
//! pair compatible within the subset it understands; outside the subset it errs on the side
//! of "incompatible". This matches Confluent's JSON Schema rules (its
//! `PROPERTY_ADDED_TO_OPEN_CONTENT_MODEL` and friends).
//!
//! # The subset and its rules, applied recursively (writer `w`, reader `r`)
//! - Identical (sub)schemas are compatible. Boolean schemas: `true` is `{}` (anything); a
//!   writer `false` writes nothing (compatible); a reader `false` accepts nothing.
//! - **`type`** (a string or an array; absent = any type): every type the writer allows must
//!   be allowed by the reader, where `integer` is accepted by `number` (widening integer to
//!   number is compatible, narrowing number to integer is not).
//! - **`enum`**: with a writer enum, each writer value must satisfy the reader's `type` and be
//!   in the reader's `enum` (so adding a value is backward, removing one forward compatible).
//!   A reader enum with no writer enum is incompatible.
//! - **`required`**: a property the reader requires must be required by the writer.
//! - **`properties`** and **`additionalProperties`** (absent or `true` = open, `false` =
//!   closed, a schema = partially open):
//!   - declared by both: checked recursively;
//!   - declared by the reader only: the writer never writes it if it is closed (compatible);
//!     if it is open the writer may write any value there, so a constrained reader property
//!     is incompatible (adding a property to an open model is not backward compatible); if
//!     partially open, the writer's `additionalProperties` schema is checked against it;
//!   - declared by the writer only: compatible when the reader is open, incompatible when it
//!     is closed, checked against the reader's `additionalProperties` schema when partially
//!     open (removing a property from an open model is backward compatible);
//!   - undeclared extras: a writer that allows them against a closed reader is incompatible;
//!   - a writer with `patternProperties` counts as open; a reader without
//!     `additionalProperties` uses its `unevaluatedProperties` instead, if any.
//! - **`items`** (one schema; absent = anything): checked recursively. A reader without
//!   `items` uses its `unevaluatedItems`, if any.
//! - Object rules apply only when the writer may produce an object and the reader accepts
//!   one, array rules likewise.
//! - Annotations (`title`, `description`, `default`, `examples`, `$comment`, `deprecated`,
//!   `readOnly`, `writeOnly`) are ignored.
//! - **Every other keyword** (`$ref`, `$defs`, `oneOf`, `anyOf`, `allOf`, `not`, `const`,
//!   `pattern`, `format`, `minimum`, `patternProperties`, tuple `items`, `$schema`, ...) is
//!   compared for equality at each node; a difference is reported as "unsupported keyword
//!   changed; treated as incompatible". A node holding `$ref` must be identical on both sides.
//!   Known gap: a `$ref` into a part of the document other than `$defs`/`definitions` (say
//!   `#/properties/a`) can see a change there that this comparison does not attribute to it.

use super::{Finding, child_path};
use serde_json::{Map, Value as Json};

/// Keywords that never change which documents are valid.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "default",
    "examples",
    "$comment",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// Keywords the structural rules understand (`items` only as a single schema).
const SUPPORTED: &[&str] = &[
    "type",
    "enum",
    "required",
    "properties",
    "additionalProperties",
    "items",
];

/// Parses a definition and validates it against its meta-schema (draft from `$schema`,
/// 2020-12 when absent). External `$ref`s cannot be fetched and make it invalid.
pub(crate) fn parse(definition: &str) -> Result<Json, String> {
    let schema: Json =
        serde_json::from_str(definition).map_err(|e| format!("not valid JSON: {e}"))?;
    jsonschema::validator_for(&schema).map_err(|e| format!("not a valid JSON Schema: {e}"))?;
    Ok(schema)
}

/// Validates JSON payloads against one schema, compiled once.
#[derive(Debug)]
pub struct JsonValidator {
    validator: jsonschema::Validator,
}

impl JsonValidator {
    /// Compiles `schema`.
    ///
    /// # Errors
    /// When `schema` is not a valid JSON Schema.
    pub fn new(schema: &Json) -> Result<Self, String> {
        let validator = jsonschema::validator_for(schema)
            .map_err(|e| format!("not a valid JSON Schema: {e}"))?;
        Ok(JsonValidator { validator })
    }

    /// Checks `instance`, returning the first error as `at <instance path>: <message>`
    /// (`<root>` for the document itself, otherwise a JSON pointer like `/address/zip`).
    ///
    /// # Errors
    /// The first validation error.
    pub fn validate(&self, instance: &Json) -> Result<(), String> {
        self.validator.validate(instance).map_err(|error| {
            // The error's own message quotes the instance (payload data): name the path,
            // the keyword and where it is in the schema instead.
            let mut path = error.instance_path().to_string();
            if path.is_empty() {
                path = super::ROOT.to_owned();
            }
            if path.len() > 200 {
                let mut end = 200;
                while !path.is_char_boundary(end) {
                    end -= 1;
                }
                path.truncate(end);
                path.push('…');
            }
            format!(
                "at {path}: fails \"{}\" (schema {})",
                error.kind().keyword(),
                error.schema_path()
            )
        })
    }
}

/// Validates `instance` against `schema` with the `jsonschema` crate and returns the first
/// error with its instance path (see [`JsonValidator::validate`]). Compiles the schema on
/// every call; keep a [`JsonValidator`] to validate many records.
///
/// # Errors
/// When the schema is invalid or the instance does not satisfy it.
pub fn validate_json(schema: &Json, instance: &Json) -> Result<(), String> {
    JsonValidator::new(schema)?.validate(instance)
}

/// Everything that stops `reader` from accepting documents valid under `writer`.
pub(crate) fn incompatibilities(writer: &Json, reader: &Json) -> Vec<Finding> {
    let mut out = Vec::new();
    check(writer, reader, "", &mut out);
    out
}

fn check(writer: &Json, reader: &Json, path: &str, out: &mut Vec<Finding>) {
    if json_eq(writer, reader) {
        return;
    }
    match (writer, reader) {
        (Json::Bool(false), _) | (_, Json::Bool(true)) => return,
        (_, Json::Bool(false)) => {
            out.push(Finding::new(
                path,
                "is rejected entirely by the reader (schema false)",
            ));
            return;
        }
        _ => {}
    }
    let empty = Map::new();
    let w = writer.as_object().unwrap_or(&empty);
    let r = reader.as_object().unwrap_or(&empty);

    if w.contains_key("$ref") || r.contains_key("$ref") {
        out.push(unsupported(path, "$ref"));
        return;
    }
    let tuple_items =
        w.get("items").is_some_and(Json::is_array) || r.get("items").is_some_and(Json::is_array);
    let mut keywords: Vec<&String> = w.keys().chain(r.keys()).collect();
    keywords.sort();
    keywords.dedup();
    for keyword in keywords {
        let analysed =
            SUPPORTED.contains(&keyword.as_str()) && !(keyword == "items" && tuple_items);
        if analysed || ANNOTATIONS.contains(&keyword.as_str()) {
            continue;
        }
        let same = match (w.get(keyword), r.get(keyword)) {
            (Some(a), Some(b)) => json_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            out.push(unsupported(path, keyword));
        }
    }

    let writer_types = types_of(w);
    let reader_types = types_of(r);
    let reader_enum = r.get("enum").and_then(Json::as_array);
    // The JSON types of the documents the writer can produce (None: any).
    let produced: Option<Vec<&str>> = match w.get("enum").and_then(Json::as_array) {
        Some(values) => {
            let values: Vec<&Json> = values
                .iter()
                .filter(|v| writer_types.as_ref().is_none_or(|t| type_accepts(t, v)))
                .collect();
            for value in &values {
                if !reader_types.as_ref().is_none_or(|t| type_accepts(t, value)) {
                    out.push(Finding::new(
                        path,
                        format!(
                            "may be {value} in the writer's enum, which the reader's type {} rejects",
                            list(reader_types.as_deref().unwrap_or_default())
                        ),
                    ));
                } else if reader_enum.is_some_and(|e| !e.iter().any(|x| json_eq(x, value))) {
                    out.push(Finding::new(
                        path,
                        format!("has enum value {value} in the writer that the reader's enum does not contain"),
                    ));
                }
            }
            Some(values.iter().map(|v| instance_type(v)).collect())
        }
        None => {
            if let Some(values) = reader_enum {
                out.push(Finding::new(
                    path,
                    format!(
                        "is restricted to the enum {} by the reader but not by the writer",
                        Json::Array(values.clone())
                    ),
                ));
            }
            check_types(writer_types.as_deref(), reader_types.as_deref(), path, out);
            writer_types.clone()
        }
    };
    let writer_may = |t: &str| produced.as_ref().is_none_or(|p| p.contains(&t));
    let reader_accepts = |t: &str| reader_types.as_ref().is_none_or(|r| r.contains(&t));
    if writer_may("object") && reader_accepts("object") {
        check_object(w, r, path, out);
    }
    if writer_may("array") && reader_accepts("array") && !tuple_items {
        let any = Json::Bool(true);
        let writer_items = w.get("items").unwrap_or(&any);
        let reader_items = r
            .get("items")
            .or_else(|| r.get("unevaluatedItems"))
            .unwrap_or(&any);
        check(writer_items, reader_items, &format!("{path}[]"), out);
    }
}

fn check_types(
    writer: Option<&[&str]>,
    reader: Option<&[&str]>,
    path: &str,
    out: &mut Vec<Finding>,
) {
    let Some(reader) = reader else {
        return;
    };
    let rejected: Vec<&str> = match writer {
        None => {
            out.push(Finding::new(
                path,
                format!(
                    "has an incompatible type: the writer allows any type but the reader accepts only {}",
                    list(reader)
                ),
            ));
            return;
        }
        Some(writer) => writer
            .iter()
            .copied()
            .filter(|t| !type_name_accepts(reader, t))
            .collect(),
    };
    if !rejected.is_empty() {
        out.push(Finding::new(
            path,
            format!(
                "has an incompatible type: the writer allows {} but the reader accepts only {}",
                list(&rejected),
                list(reader)
            ),
        ));
    }
}

fn check_object(w: &Map<String, Json>, r: &Map<String, Json>, path: &str, out: &mut Vec<Finding>) {
    let empty = Map::new();
    let writer_properties = w
        .get("properties")
        .and_then(Json::as_object)
        .unwrap_or(&empty);
    let reader_properties = r
        .get("properties")
        .and_then(Json::as_object)
        .unwrap_or(&empty);
    let open = Json::Bool(true);
    let writer_extra = if w.contains_key("patternProperties") {
        &open
    } else {
        w.get("additionalProperties").unwrap_or(&open)
    };
    let reader_extra = r
        .get("additionalProperties")
        .or_else(|| r.get("unevaluatedProperties"))
        .unwrap_or(&open);

    let writer_required = strings(w.get("required"));
    for name in strings(r.get("required")) {
        if !writer_required.contains(&name) {
            out.push(Finding::new(
                &child_path(path, name),
                "is required by the reader but not by the writer",
            ));
        }
    }
    for (name, reader_property) in reader_properties {
        let property_path = child_path(path, name);
        match writer_properties.get(name) {
            Some(writer_property) => check(writer_property, reader_property, &property_path, out),
            None if is_closed(writer_extra) || is_unconstrained(reader_property) => {}
            None if is_unconstrained(writer_extra) => out.push(Finding::new(
                &property_path,
                "is declared by the reader but not by the writer, whose open content model (additionalProperties absent or true) lets it hold any value",
            )),
            None => check(writer_extra, reader_property, &property_path, out),
        }
    }
    for (name, writer_property) in writer_properties {
        if reader_properties.contains_key(name) || is_unconstrained(reader_extra) {
            continue;
        }
        let property_path = child_path(path, name);
        if is_closed(reader_extra) {
            if !is_closed(writer_property) {
                out.push(Finding::new(
                    &property_path,
                    "is written by the writer but the reader has additionalProperties: false and does not declare it",
                ));
            }
        } else {
            check(writer_property, reader_extra, &property_path, out);
        }
    }
    if is_closed(writer_extra) || is_unconstrained(reader_extra) {
        return;
    }
    if is_closed(reader_extra) {
        out.push(Finding::new(
            path,
            "allows additional properties in the writer but the reader has additionalProperties: false",
        ));
    } else if is_unconstrained(writer_extra) {
        out.push(Finding::new(
            path,
            "allows any additional property in the writer but the reader constrains additional properties",
        ));
    } else {
        check(
            writer_extra,
            reader_extra,
            &format!("{}.*", if path.is_empty() { super::ROOT } else { path }),
            out,
        );
    }
}

fn unsupported(path: &str, keyword: &str) -> Finding {
    Finding::new(
        path,
        format!("has unsupported keyword \"{keyword}\" changed; treated as incompatible"),
    )
}

/// `type` as a list of names; `None` when absent (any type).
fn types_of(schema: &Map<String, Json>) -> Option<Vec<&str>> {
    match schema.get("type")? {
        Json::String(name) => Some(vec![name.as_str()]),
        Json::Array(names) => Some(names.iter().filter_map(Json::as_str).collect()),
        _ => None,
    }
}

/// Whether a `type` list accepts values of the named JSON type.
fn type_name_accepts(types: &[&str], name: &str) -> bool {
    types.contains(&name) || (name == "integer" && types.contains(&"number"))
}

fn type_accepts(types: &[&str], value: &Json) -> bool {
    type_name_accepts(types, instance_type(value))
}

/// The narrowest JSON Schema type of a value (`integer` for integral numbers).
fn instance_type(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Json::Number(n) if n.as_f64().is_some_and(|x| x.fract() == 0.0) => "integer",
        Json::Number(_) => "number",
        Json::String(_) => "string",
        Json::Array(_) => "array",
        Json::Object(_) => "object",
    }
}

/// A schema that accepts nothing: `false`.
fn is_closed(schema: &Json) -> bool {
    matches!(schema, Json::Bool(false))
}

/// A schema that accepts anything: `true`, or an object of annotations only.
fn is_unconstrained(schema: &Json) -> bool {
    match schema {
        Json::Bool(accepts) => *accepts,
        Json::Object(keywords) => keywords.keys().all(|k| ANNOTATIONS.contains(&k.as_str())),
        _ => false,
    }
}

fn strings(value: Option<&Json>) -> Vec<&str> {
    value
        .and_then(Json::as_array)
        .map(|items| items.iter().filter_map(Json::as_str).collect())
        .unwrap_or_default()
}

fn list(names: &[&str]) -> String {
    names.join(" or ")
}

/// JSON equality where numbers compare by value (`1` equals `1.0`), as JSON Schema does.
fn json_eq(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => {
            x == y || matches!((x.as_f64(), y.as_f64()), (Some(x), Some(y)) if x == y)
        }
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Findings for `reader` reading documents valid under `writer`, as `(field, reason)`.
    fn findings(writer: Json, reader: Json) -> Vec<(String, String)> {
        incompatibilities(&writer, &reader)
            .into_iter()
            .map(|f| (f.field, f.reason))
            .collect()
    }

    fn fields(writer: Json, reader: Json) -> Vec<String> {
        findings(writer, reader)
            .into_iter()
            .map(|(f, _)| f)
            .collect()
    }

    fn object(properties: Json, required: &[&str]) -> Json {
        json!({"type": "object", "properties": properties, "required": required})
    }

    #[test]
    fn nested_objects_report_the_dotted_path() {
        let writer = object(
            json!({"address": object(json!({"zip": {"type": "string"}}), &["zip"])}),
            &[],
        );
        let reader = object(
            json!({"address": object(json!({"zip": {"type": "integer"}}), &["zip"])}),
            &[],
        );
        assert_eq!(
            findings(writer, reader),
            vec![(
                "address.zip".to_string(),
                "has an incompatible type: the writer allows string but the reader accepts only integer".to_string()
            )]
        );
    }

    #[test]
    fn array_items_are_checked_under_brackets() {
        let ints = json!({"type": "array", "items": {"type": "integer"}});
        let numbers = json!({"type": "array", "items": {"type": "number"}});
        let anything = json!({"type": "array"});
        assert!(findings(ints.clone(), numbers.clone()).is_empty());
        assert_eq!(fields(numbers, ints.clone()), vec!["[]"]);
        assert_eq!(fields(anything.clone(), ints.clone()), vec!["[]"]);
        assert!(findings(ints, anything).is_empty());
        let tagged = object(
            json!({"tags": {"type": "array", "items": {"type": "string"}}}),
            &[],
        );
        let tagged_ints = object(
            json!({"tags": {"type": "array", "items": {"type": "integer"}}}),
            &[],
        );
        assert_eq!(fields(tagged, tagged_ints), vec!["tags[]"]);
    }

    #[test]
    fn type_lists_widen_and_narrow() {
        let nullable = json!({"type": ["string", "null"]});
        let string = json!({"type": "string"});
        assert!(findings(string.clone(), nullable.clone()).is_empty());
        assert_eq!(
            findings(nullable, string),
            vec![(
                "<root>".to_string(),
                "has an incompatible type: the writer allows null but the reader accepts only string".to_string()
            )]
        );
        assert_eq!(
            findings(json!({}), json!({"type": "object"})),
            vec![(
                "<root>".to_string(),
                "has an incompatible type: the writer allows any type but the reader accepts only object".to_string()
            )]
        );
    }

    #[test]
    fn boolean_schemas() {
        assert!(findings(json!(true), json!({})).is_empty());
        assert!(findings(json!(false), json!({"type": "string"})).is_empty());
        assert!(findings(json!({"type": "string"}), json!(true)).is_empty());
        assert_eq!(
            fields(json!({"type": "string"}), json!(false)),
            vec!["<root>"]
        );
        assert_eq!(
            fields(json!(true), json!({"type": "string"})),
            vec!["<root>"]
        );
    }

    #[test]
    fn writer_enum_values_are_checked_against_the_reader_type() {
        let writer = json!({"enum": ["a", 1]});
        assert!(findings(writer.clone(), json!({"type": ["string", "integer"]})).is_empty());
        assert!(findings(writer.clone(), json!({"type": ["string", "number"]})).is_empty());
        assert_eq!(
            findings(writer, json!({"type": "string"})),
            vec![(
                "<root>".to_string(),
                "may be 1 in the writer's enum, which the reader's type string rejects".to_string()
            )]
        );
        // A writer enum value the writer's own type excludes is never written.
        assert!(
            findings(
                json!({"type": "string", "enum": ["a", 1]}),
                json!({"enum": ["a"]})
            )
            .is_empty()
        );
        assert_eq!(
            fields(
                json!({"type": "string"}),
                json!({"type": "string", "enum": ["a"]})
            ),
            vec!["<root>"]
        );
        // Numbers compare by value.
        assert!(findings(json!({"enum": [1]}), json!({"enum": [1.0]})).is_empty());
    }

    #[test]
    fn annotations_are_ignored_and_other_keywords_compared() {
        let plain = object(json!({"name": {"type": "string"}}), &[]);
        let described = json!({"type": "object", "title": "T", "description": "d",
            "properties": {"name": {"type": "string", "description": "the name", "examples": ["x"]}}});
        assert!(findings(plain.clone(), described.clone()).is_empty());
        assert!(findings(described, plain.clone()).is_empty());
        let patterned = object(json!({"name": {"type": "string", "pattern": "^a"}}), &[]);
        let reason = "has unsupported keyword \"pattern\" changed; treated as incompatible";
        assert_eq!(
            findings(plain.clone(), patterned.clone()),
            vec![("name".to_string(), reason.to_string())]
        );
        assert_eq!(
            findings(patterned, plain),
            vec![("name".to_string(), reason.to_string())]
        );
        let one = json!({"oneOf": [{"type": "string"}, {"type": "integer"}]});
        let other = json!({"oneOf": [{"type": "string"}]});
        assert_eq!(fields(one.clone(), other), vec!["<root>"]);
        assert!(findings(one.clone(), one).is_empty());
    }

    #[test]
    fn refs_must_be_identical() {
        let defs = |t: &str| {
            json!({"$defs": {"Id": {"type": t}}, "type": "object",
            "properties": {"id": {"$ref": "#/$defs/Id"}}})
        };
        assert!(findings(defs("string"), defs("string")).is_empty());
        // The definition changed: caught at the root, where $defs lives.
        assert_eq!(
            findings(defs("string"), defs("integer")),
            vec![(
                "<root>".to_string(),
                "has unsupported keyword \"$defs\" changed; treated as incompatible".to_string()
            )]
        );
        let inline = object(json!({"id": {"type": "string"}}), &[]);
        let via_ref = json!({"type": "object", "properties": {"id": {"$ref": "#/$defs/Id"}},
            "$defs": {"Id": {"type": "string"}}});
        assert!(fields(inline, via_ref).contains(&"id".to_string()));
    }

    #[test]
    fn closed_reader_rejects_open_writer_extras() {
        let open = object(json!({"id": {"type": "integer"}}), &[]);
        let mut closed = open.clone();
        closed["additionalProperties"] = json!(false);
        assert_eq!(
            findings(open.clone(), closed.clone()),
            vec![(
                "<root>".to_string(),
                "allows additional properties in the writer but the reader has additionalProperties: false".to_string()
            )]
        );
        assert!(findings(closed, open).is_empty());
    }

    #[test]
    fn partially_open_models_compare_the_additional_properties_schemas() {
        let strings = json!({"type": "object", "additionalProperties": {"type": "string"}});
        let ints = json!({"type": "object", "additionalProperties": {"type": "integer"}});
        assert_eq!(fields(strings.clone(), ints), vec!["<root>.*"]);
        assert_eq!(
            fields(json!({"type": "object"}), strings.clone()),
            vec!["<root>"]
        );
        // A writer property the reader only covers through additionalProperties.
        let declared = json!({"type": "object", "properties": {"n": {"type": "integer"}},
            "additionalProperties": {"type": "string"}});
        assert_eq!(fields(declared, strings), vec!["n"]);
    }

    #[test]
    fn reader_unevaluated_properties_closes_it() {
        let writer = object(
            json!({"a": {"type": "string"}, "b": {"type": "string"}}),
            &[],
        );
        let reader = json!({"type": "object", "properties": {"a": {"type": "string"}},
            "unevaluatedProperties": false});
        let found = fields(writer, reader);
        assert!(found.contains(&"b".to_string()), "{found:?}");
    }

    #[test]
    fn non_objects_skip_object_rules() {
        // The writer only writes strings: the reader's object keywords do not apply.
        let writer = json!({"type": "string"});
        let reader =
            json!({"type": ["string", "object"], "required": ["x"], "additionalProperties": false});
        assert!(findings(writer, reader).is_empty());
    }

    #[test]
    fn parse_rejects_invalid_schemas() {
        assert!(parse(r#"{"type": "object"}"#).is_ok());
        assert!(parse("true").is_ok());
        let err = parse(r#"{"type": "strin"}"#).unwrap_err();
        assert!(err.starts_with("not a valid JSON Schema"), "{err}");
        let err = parse(r#"{"required": "id"}"#).unwrap_err();
        assert!(err.starts_with("not a valid JSON Schema"), "{err}");
        let err = parse("{").unwrap_err();
        assert!(err.starts_with("not valid JSON"), "{err}");
    }

    #[test]
    fn validate_json_reports_the_first_error_with_its_path() {
        let schema = object(
            json!({"address": object(json!({"zip": {"type": "integer"}}), &["zip"])}),
            &["address"],
        );
        assert_eq!(
            validate_json(&schema, &json!({"address": {"zip": 10115}})),
            Ok(())
        );
        let err = validate_json(&schema, &json!({"address": {"zip": "10115"}})).unwrap_err();
        assert_eq!(
            err,
            r#"at /address/zip: fails "type" (schema /properties/address/properties/zip/type)"#
        );
        assert!(!err.contains("10115"), "no payload data in reasons: {err}");
        let err = validate_json(&schema, &json!({})).unwrap_err();
        assert!(
            err.starts_with("at <root>: ") && err.contains("required"),
            "{err}"
        );
        let err = validate_json(&json!({"type": 5}), &json!(1)).unwrap_err();
        assert!(err.starts_with("not a valid JSON Schema"), "{err}");
    }

    #[test]
    fn validator_is_reusable() {
        let validator = JsonValidator::new(&json!({"type": "integer"})).unwrap();
        assert_eq!(validator.validate(&json!(1)), Ok(()));
        assert!(validator.validate(&json!("1")).is_err());
        assert_eq!(validator.validate(&json!(2)), Ok(()));
    }
}
