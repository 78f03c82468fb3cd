//! Avro: parsing, reader/writer compatibility, and decoding one binary datum to JSON.
//!
//! # Compatibility rules
//! The reader can read the writer's data when schema resolution (Avro specification, "Schema
//! Resolution") cannot fail for any datum the writer can produce. This is the rule set of
//! Avro Java's `SchemaCompatibility`, which Confluent and Glue run:
//!
//! - **Records** must have the same unqualified name, or the reader lists the writer's name in
//!   its `aliases`. Each reader field is matched to the writer field with the same name, else
//!   to the first writer field named by one of the reader field's `aliases` (a rename). A
//!   matched field is checked recursively. An unmatched reader field needs a `default`.
//!   Writer fields the reader does not have are skipped.
//! - **Enums** must match by name (or reader alias). Every writer symbol must be a reader
//!   symbol, unless the reader enum has a `default` symbol.
//! - **Fixed** types must match by name (or reader alias) and size; two decimals on fixed must
//!   also agree on precision and scale.
//! - **Arrays** and **maps** are checked through their items and values.
//! - **Unions**: every branch of a writer union must be readable by the reader; a non-union
//!   writer must be readable by at least one branch of a reader union. Making a field nullable
//!   (`string` to `["null","string"]`) is therefore backward but not forward compatible.
//! - **Named references** (a type used again by name) are resolved on each side before they
//!   are compared, so a changed definition is found wherever it is referenced.
//! - **Primitives and logical types**: equal types, the promotions int to long, float or
//!   double, long to float or double, float to double, and string to/from bytes. Logical types
//!   are read through their underlying type; two decimals must agree on precision and scale.
//!
//! # Where apache-avro is used
//! [`apache_avro::Schema::parse_str`] parses, [`ResolvedSchema`] finds named types, and
//! [`SchemaCompatibility::can_read`] decides every primitive and logical-type pair (the
//! promotion table above); its [`CompatibilityError`] becomes the finding for that field.
//! The structure (records, enums, fixed, unions, arrays, maps, references) is walked here,
//! because for whole schemas the library (0.22) gives answers the registry cannot use: it
//! stops at the first problem, it returns `Ok(Partial)` for a removed enum symbol or a narrowed
//! union (which Confluent rejects), it compares named references by name without comparing
//! their definitions (and fails when one side defines a type inline where the other refers to
//! it), it ignores record-name aliases, and its type errors print whole schemas. The tests at
//! the bottom of this file pin each of these behaviours.

use super::{Finding, child_path};
use apache_avro::Schema;
use apache_avro::error::CompatibilityError;
use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::schema::{
    Alias, DecimalSchema, EnumSchema, FixedSchema, InnerDecimalSchema, Name, NamesRef,
    RecordSchema, ResolvedSchema, UuidSchema,
};
use apache_avro::schema_compatibility::{Compatibility, SchemaCompatibility};
use apache_avro::types::Value;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::Value as Json;
use std::collections::HashSet;

/// Why a reader field without a writer counterpart breaks reading.
const MISSING_FIELD: &str =
    "is required by the reader and has no default, but the writer does not have it";

/// Parses a definition and checks that every named reference resolves.
pub(crate) fn parse(definition: &str) -> Result<Schema, String> {
    let schema = Schema::parse_str(definition).map_err(|e| e.to_string())?;
    ResolvedSchema::new(&schema).map_err(|e| e.to_string())?;
    Ok(schema)
}

/// Everything that stops `reader` from reading data written with `writer`.
pub(crate) fn incompatibilities(writer: &Schema, reader: &Schema) -> Vec<Finding> {
    let (writer_names, reader_names) =
        match (ResolvedSchema::new(writer), ResolvedSchema::new(reader)) {
            (Ok(w), Ok(r)) => (w, r),
            (Err(e), _) | (_, Err(e)) => {
                return vec![Finding::new(
                    "",
                    format!("has unresolvable named types: {e}"),
                )];
            }
        };
    let mut checker = Checker {
        writer_names: writer_names.get_names(),
        reader_names: reader_names.get_names(),
        in_progress: HashSet::new(),
    };
    let mut out = Vec::new();
    checker.check(writer, reader, "", &mut out);
    out
}

struct Checker<'a> {
    writer_names: &'a NamesRef<'a>,
    reader_names: &'a NamesRef<'a>,
    /// Record pairs being compared: meeting one again (a recursive type) assumes it
    /// compatible, as Avro Java does.
    in_progress: HashSet<(String, String)>,
}

impl<'a> Checker<'a> {
    fn check(
        &mut self,
        writer: &'a Schema,
        reader: &'a Schema,
        path: &str,
        out: &mut Vec<Finding>,
    ) {
        let Some(writer) = resolve(self.writer_names, writer) else {
            out.push(Finding::new(
                path,
                "refers to a type the writer does not define",
            ));
            return;
        };
        let Some(reader) = resolve(self.reader_names, reader) else {
            out.push(Finding::new(
                path,
                "refers to a type the reader does not define",
            ));
            return;
        };
        match (writer, reader) {
            (Schema::Union(union), _) => {
                for branch in union.variants() {
                    self.check(branch, reader, path, out);
                }
            }
            (_, Schema::Union(union)) => {
                self.check_reader_union(writer, union.variants(), reader, path, out)
            }
            (Schema::Record(w), Schema::Record(r)) => self.check_record(w, r, path, out),
            (Schema::Enum(w), Schema::Enum(r)) => check_enum(w, r, path, out),
            (Schema::Array(w), Schema::Array(r)) => {
                self.check(&w.items, &r.items, &format!("{path}[]"), out);
            }
            (Schema::Map(w), Schema::Map(r)) => {
                self.check(&w.types, &r.types, &format!("{path}{{}}"), out);
            }
            _ => match (fixed_of(writer), fixed_of(reader)) {
                (Some(w), Some(r)) => check_fixed(writer, w, reader, r, path, out),
                _ if is_leaf(writer) && is_leaf(reader) => check_leaf(writer, reader, path, out),
                _ => out.push(type_mismatch(path, writer, reader)),
            },
        }
    }

    /// A non-union writer against a union reader: some branch must read it.
    fn check_reader_union(
        &mut self,
        writer: &'a Schema,
        branches: &'a [Schema],
        reader: &'a Schema,
        path: &str,
        out: &mut Vec<Finding>,
    ) {
        let mut attempts = Vec::with_capacity(branches.len());
        for branch in branches {
            let mut findings = Vec::new();
            self.check(writer, branch, path, &mut findings);
            if findings.is_empty() {
                return;
            }
            attempts.push(findings);
        }
        // Explain with the branch the writer's type was meant for, when there is one.
        let same_kind = branches.iter().position(|branch| {
            resolve(self.reader_names, branch).is_some_and(|branch| same_kind(writer, branch))
        });
        match same_kind {
            Some(index) => out.append(&mut attempts[index]),
            None => out.push(type_mismatch(path, writer, reader)),
        }
    }

    fn check_record(
        &mut self,
        writer: &'a RecordSchema,
        reader: &'a RecordSchema,
        path: &str,
        out: &mut Vec<Finding>,
    ) {
        if !names_match(&writer.name, &reader.name, reader.aliases.as_deref()) {
            out.push(name_mismatch(path, "record", &writer.name, &reader.name));
            return;
        }
        let key = (writer.name.fullname(None), reader.name.fullname(None));
        if !self.in_progress.insert(key.clone()) {
            return;
        }
        for field in &reader.fields {
            let field_path = child_path(path, &field.name);
            let source = std::iter::once(&field.name)
                .chain(&field.aliases)
                .find_map(|name| writer.fields.iter().find(|w| &w.name == name));
            match source {
                Some(source) => self.check(&source.schema, &field.schema, &field_path, out),
                None if field.default.is_none() => {
                    out.push(Finding::new(&field_path, MISSING_FIELD))
                }
                None => {}
            }
        }
        self.in_progress.remove(&key);
    }
}

/// Follows a named reference to its definition.
fn resolve<'a>(names: &NamesRef<'a>, schema: &'a Schema) -> Option<&'a Schema> {
    match schema {
        Schema::Ref { name } => names.get(name).copied(),
        other => Some(other),
    }
}

/// The Avro Java name rule: equal unqualified names, or a reader alias naming the writer.
fn names_match(writer: &Name, reader: &Name, reader_aliases: Option<&[Alias]>) -> bool {
    writer.name() == reader.name()
        || reader_aliases.unwrap_or_default().iter().any(|alias| {
            alias.name() == writer.name()
                || alias.fullname(reader.namespace()) == writer.fullname(None)
        })
}

fn name_mismatch(path: &str, kind: &str, writer: &Name, reader: &Name) -> Finding {
    Finding::new(
        path,
        format!(
            "is {kind} \"{}\" in the writer but {kind} \"{}\" in the reader, which has no alias for the writer's name",
            writer.fullname(None),
            reader.fullname(None)
        ),
    )
}

fn check_enum(writer: &EnumSchema, reader: &EnumSchema, path: &str, out: &mut Vec<Finding>) {
    if !names_match(&writer.name, &reader.name, reader.aliases.as_deref()) {
        out.push(name_mismatch(path, "enum", &writer.name, &reader.name));
        return;
    }
    if reader.default.is_some() {
        return;
    }
    let unknown: Vec<String> = writer
        .symbols
        .iter()
        .filter(|symbol| !reader.symbols.contains(symbol))
        .map(|symbol| format!("\"{symbol}\""))
        .collect();
    if !unknown.is_empty() {
        let (noun, verb) = if unknown.len() == 1 {
            ("symbol", "is")
        } else {
            ("symbols", "are")
        };
        out.push(Finding::new(
            path,
            format!(
                "is enum \"{}\" whose writer {noun} {} {verb} unknown to the reader, which has no default symbol",
                reader.name.fullname(None),
                unknown.join(", ")
            ),
        ));
    }
}

/// The fixed type under `fixed`, a decimal or uuid on fixed, and `duration`.
fn fixed_of(schema: &Schema) -> Option<&FixedSchema> {
    match schema {
        Schema::Fixed(fixed)
        | Schema::Decimal(DecimalSchema {
            inner: InnerDecimalSchema::Fixed(fixed),
            ..
        })
        | Schema::Uuid(UuidSchema::Fixed(fixed))
        | Schema::Duration(fixed) => Some(fixed),
        _ => None,
    }
}

fn check_fixed(
    writer_schema: &Schema,
    writer: &FixedSchema,
    reader_schema: &Schema,
    reader: &FixedSchema,
    path: &str,
    out: &mut Vec<Finding>,
) {
    if !names_match(&writer.name, &reader.name, reader.aliases.as_deref()) {
        out.push(name_mismatch(path, "fixed", &writer.name, &reader.name));
    } else if writer.size != reader.size {
        out.push(Finding::new(
            path,
            format!(
                "is fixed \"{}\" of {} bytes in the writer but {} bytes in the reader",
                reader.name.fullname(None),
                writer.size,
                reader.size
            ),
        ));
    } else if let (Schema::Decimal(w), Schema::Decimal(r)) = (writer_schema, reader_schema) {
        if (w.precision, w.scale) != (r.precision, r.scale) {
            out.push(type_mismatch(path, writer_schema, reader_schema));
        }
    }
}

/// Primitive and logical types without names or children: decided by the library.
fn is_leaf(schema: &Schema) -> bool {
    !matches!(
        schema,
        Schema::Record(_)
            | Schema::Enum(_)
            | Schema::Array(_)
            | Schema::Map(_)
            | Schema::Union(_)
            | Schema::Ref { .. }
    ) && fixed_of(schema).is_none()
}

fn check_leaf(writer: &Schema, reader: &Schema, path: &str, out: &mut Vec<Finding>) {
    match SchemaCompatibility::can_read(writer, reader) {
        Ok(Compatibility::Full) => {}
        // Only unions and enums are partial; a leaf pair never is. Conservative if it were.
        Ok(Compatibility::Partial) => out.push(type_mismatch(path, writer, reader)),
        Err(error) => out.push(from_library(path, writer, reader, &error)),
    }
}

/// Turns the library's verdict on a leaf pair into a finding for the field at `path`.
fn from_library(
    path: &str,
    writer: &Schema,
    reader: &Schema,
    error: &CompatibilityError,
) -> Finding {
    match error {
        // The library's own text prints the schemas' Debug form; name the types instead.
        CompatibilityError::WrongType { .. }
        | CompatibilityError::TypeExpected { .. }
        | CompatibilityError::DecimalMismatch { .. } => type_mismatch(path, writer, reader),
        other => Finding::new(path, format!("cannot be read: {other}")),
    }
}

fn type_mismatch(path: &str, writer: &Schema, reader: &Schema) -> Finding {
    Finding::new(
        path,
        format!(
            "has an incompatible type: the writer writes {} but the reader expects {}",
            describe(writer),
            describe(reader)
        ),
    )
}

/// True when `reader` is the union branch meant for `writer` (same name or same container).
fn same_kind(writer: &Schema, reader: &Schema) -> bool {
    match (writer.name(), reader.name()) {
        (Some(w), Some(r)) => w.name() == r.name(),
        _ => matches!(
            (writer, reader),
            (Schema::Array(_), Schema::Array(_)) | (Schema::Map(_), Schema::Map(_))
        ),
    }
}

/// A short name for a schema in explanations, e.g. `record "com.example.User"`.
fn describe(schema: &Schema) -> String {
    let simple = match schema {
        Schema::Null => "null",
        Schema::Boolean => "boolean",
        Schema::Int => "int",
        Schema::Long => "long",
        Schema::Float => "float",
        Schema::Double => "double",
        Schema::Bytes => "bytes",
        Schema::String => "string",
        Schema::BigDecimal => "big-decimal",
        Schema::Uuid(_) => "uuid",
        Schema::Date => "date",
        Schema::TimeMillis => "time-millis",
        Schema::TimeMicros => "time-micros",
        Schema::TimestampMillis => "timestamp-millis",
        Schema::TimestampMicros => "timestamp-micros",
        Schema::TimestampNanos => "timestamp-nanos",
        Schema::LocalTimestampMillis => "local-timestamp-millis",
        Schema::LocalTimestampMicros => "local-timestamp-micros",
        Schema::LocalTimestampNanos => "local-timestamp-nanos",
        Schema::Duration(_) => "duration",
        Schema::Array(array) => return format!("array of {}", describe(&array.items)),
        Schema::Map(map) => return format!("map of {}", describe(&map.types)),
        Schema::Union(union) => {
            let branches: Vec<String> = union.variants().iter().map(describe).collect();
            return format!("one of [{}]", branches.join(", "));
        }
        Schema::Record(record) => return format!("record \"{}\"", record.name.fullname(None)),
        Schema::Enum(e) => return format!("enum \"{}\"", e.name.fullname(None)),
        Schema::Fixed(fixed) => {
            return format!(
                "fixed \"{}\" ({} bytes)",
                fixed.name.fullname(None),
                fixed.size
            );
        }
        Schema::Decimal(decimal) => {
            return format!("decimal({},{})", decimal.precision, decimal.scale);
        }
        Schema::Ref { name } => return format!("\"{}\"", name.fullname(None)),
    };
    simple.to_string()
}

/// Decodes Avro binary datums (no container header, no registry prefix) written with one
/// schema, parsing the schema once for many records.
#[derive(Debug, Clone)]
pub struct AvroDecoder {
    schema: Schema,
}

impl AvroDecoder {
    /// Parses the writer schema.
    ///
    /// # Errors
    /// The parser's message when the schema is not valid Avro.
    pub fn new(writer_schema: &str) -> Result<Self, String> {
        let schema =
            parse(writer_schema).map_err(|e| format!("writer schema does not parse: {e}"))?;
        Ok(AvroDecoder { schema })
    }

    /// Decodes exactly one datum to JSON: records become objects (fields in schema order are
    /// keyed by name), unions their chosen branch, enums their symbol, bytes and fixed base64
    /// strings, maps objects, ints and longs (including dates, times and timestamps) numbers,
    /// floats and doubles numbers (`"NaN"`, `"Infinity"`, `"-Infinity"` as strings, which
    /// JSON cannot hold), decimals strings such as `"-12.50"`, uuids strings and durations
    /// `{"months","days","millis"}` objects.
    ///
    /// # Errors
    /// When the bytes are not a datum of the schema, or bytes remain after it.
    pub fn decode(&self, bytes: &[u8]) -> Result<Json, String> {
        let names = ResolvedSchema::new(&self.schema).map_err(|e| e.to_string())?;
        let mut rest = bytes;
        // `GenericDatumReader` is what 0.22's deprecated `from_avro_datum` wraps.
        let value = GenericDatumReader::builder(&self.schema)
            .resolved_writer_schemata(names.clone())
            .build()
            .and_then(|reader| reader.read_value(&mut rest))
            .map_err(|e| format!("cannot decode Avro datum: {e}"))?;
        if !rest.is_empty() {
            return Err(format!(
                "{} trailing byte(s) after the Avro datum ({} bytes in total)",
                rest.len(),
                bytes.len()
            ));
        }
        to_json(value, &self.schema, names.get_names())
    }
}

/// Decodes one Avro binary datum written with `writer_schema` to JSON (see
/// [`AvroDecoder::decode`] for the mapping). Parses the schema on every call; keep an
/// [`AvroDecoder`] to decode many records.
///
/// # Errors
/// When the schema does not parse, the bytes are not a datum of it, or bytes remain.
pub fn decode_avro(writer_schema: &str, bytes: &[u8]) -> Result<Json, String> {
    AvroDecoder::new(writer_schema)?.decode(bytes)
}

fn to_json(value: Value, schema: &Schema, names: &NamesRef<'_>) -> Result<Json, String> {
    let schema = resolve(names, schema)
        .ok_or_else(|| format!("schema refers to an undefined type: {schema:?}"))?;
    let mismatch = || format!("decoded value does not match schema {}", describe(schema));
    Ok(match value {
        Value::Null if matches!(schema, Schema::Null) => Json::Null,
        // apache-avro 0.22 decodes a string cut short by the end of input as `Null` instead
        // of failing, so a truncated datum would otherwise land with a null in it.
        Value::Null => {
            return Err(format!(
                "cannot decode Avro datum: input ends early (null decoded where the schema has {})",
                describe(schema)
            ));
        }
        Value::Boolean(b) => Json::Bool(b),
        Value::Int(n) | Value::Date(n) | Value::TimeMillis(n) => Json::from(n),
        Value::Long(n)
        | Value::TimeMicros(n)
        | Value::TimestampMillis(n)
        | Value::TimestampMicros(n)
        | Value::TimestampNanos(n)
        | Value::LocalTimestampMillis(n)
        | Value::LocalTimestampMicros(n)
        | Value::LocalTimestampNanos(n) => Json::from(n),
        Value::Float(x) => float_json(f64::from(x)),
        Value::Double(x) => float_json(x),
        Value::Bytes(bytes) | Value::Fixed(_, bytes) => Json::String(B64.encode(bytes)),
        Value::String(s) => Json::String(s),
        Value::Enum(_, symbol) => Json::String(symbol),
        Value::Uuid(uuid) => Json::String(uuid.to_string()),
        Value::BigDecimal(decimal) => Json::String(decimal.to_string()),
        Value::Decimal(decimal) => {
            let Schema::Decimal(decimal_schema) = schema else {
                return Err(mismatch());
            };
            let bytes = Vec::<u8>::try_from(&decimal).map_err(|e| e.to_string())?;
            Json::String(decimal_string(&bytes, decimal_schema.scale))
        }
        Value::Duration(duration) => serde_json::json!({
            "months": u32::from(duration.months()),
            "days": u32::from(duration.days()),
            "millis": u32::from(duration.millis()),
        }),
        Value::Union(index, inner) => {
            let Schema::Union(union) = schema else {
                return Err(mismatch());
            };
            let branch = usize::try_from(index)
                .ok()
                .and_then(|i| union.variants().get(i))
                .ok_or_else(mismatch)?;
            to_json(*inner, branch, names)?
        }
        Value::Array(items) => {
            let Schema::Array(array) = schema else {
                return Err(mismatch());
            };
            items
                .into_iter()
                .map(|item| to_json(item, &array.items, names))
                .collect::<Result<Vec<_>, _>>()?
                .into()
        }
        Value::Map(entries) => {
            let Schema::Map(map) = schema else {
                return Err(mismatch());
            };
            let mut object = serde_json::Map::new();
            for (key, item) in entries {
                object.insert(key, to_json(item, &map.types, names)?);
            }
            Json::Object(object)
        }
        Value::Record(fields) => {
            let Schema::Record(record) = schema else {
                return Err(mismatch());
            };
            let mut object = serde_json::Map::new();
            for (name, item) in fields {
                let field = record
                    .lookup
                    .get(&name)
                    .and_then(|&i| record.fields.get(i))
                    .ok_or_else(mismatch)?;
                object.insert(name, to_json(item, &field.schema, names)?);
            }
            Json::Object(object)
        }
    })
}

fn float_json(x: f64) -> Json {
    match serde_json::Number::from_f64(x) {
        Some(number) => Json::Number(number),
        None if x.is_nan() => Json::String("NaN".into()),
        None if x > 0.0 => Json::String("Infinity".into()),
        None => Json::String("-Infinity".into()),
    }
}

/// The decimal text of a big-endian two's-complement unscaled value with `scale` digits after
/// the point, of any length (Avro decimals can exceed 128 bits).
fn decimal_string(bytes: &[u8], scale: usize) -> String {
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    let mut magnitude: Vec<u8> = bytes.to_vec();
    if negative {
        // Two's complement: invert and add one.
        for byte in &mut magnitude {
            *byte = !*byte;
        }
        for byte in magnitude.iter_mut().rev() {
            let (sum, carry) = byte.overflowing_add(1);
            *byte = sum;
            if !carry {
                break;
            }
        }
    }
    // Repeated division by ten, least significant digit first.
    let mut digits = Vec::new();
    while magnitude.iter().any(|&b| b != 0) {
        let mut remainder = 0u16;
        for byte in &mut magnitude {
            let current = (remainder << 8) | u16::from(*byte);
            *byte = u8::try_from(current / 10).unwrap_or(u8::MAX);
            remainder = current % 10;
        }
        digits.push(char::from(b'0' + u8::try_from(remainder).unwrap_or(0)));
    }
    while digits.len() <= scale {
        digits.push('0');
    }
    digits.reverse();
    let mut text: String = digits.into_iter().collect();
    if scale > 0 {
        text.insert(text.len() - scale, '.');
    }
    if negative {
        text.insert(0, '-');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::types::Record;
    use apache_avro::writer::datum::GenericDatumWriter;

    /// Encodes one datum (what 0.22's deprecated `to_avro_datum` does).
    fn to_avro_datum(schema: &Schema, value: impl Into<Value>) -> Vec<u8> {
        GenericDatumWriter::builder(schema)
            .build()
            .unwrap()
            .write_value_to_vec(value)
            .unwrap()
    }

    fn schema(definition: &str) -> Schema {
        parse(definition).unwrap()
    }

    /// Findings for `reader` reading data written with `writer`, as `(field, reason)`.
    fn findings(writer: &str, reader: &str) -> Vec<(String, String)> {
        incompatibilities(&schema(writer), &schema(reader))
            .into_iter()
            .map(|f| (f.field, f.reason))
            .collect()
    }

    fn fields(writer: &str, reader: &str) -> Vec<String> {
        findings(writer, reader)
            .into_iter()
            .map(|(f, _)| f)
            .collect()
    }

    fn library_full(writer: &str, reader: &str) -> bool {
        matches!(
            SchemaCompatibility::can_read(&schema(writer), &schema(reader)),
            Ok(Compatibility::Full)
        )
    }

    const PERSON_ZIP_STRING: &str = r#"{"type":"record","name":"Person","fields":[
        {"name":"address","type":{"type":"record","name":"Address","fields":[{"name":"zip","type":"string"}]}}]}"#;
    const PERSON_ZIP_INT: &str = r#"{"type":"record","name":"Person","fields":[
        {"name":"address","type":{"type":"record","name":"Address","fields":[{"name":"zip","type":"int"}]}}]}"#;

    #[test]
    fn nested_records_report_the_dotted_path() {
        let found = findings(PERSON_ZIP_STRING, PERSON_ZIP_INT);
        assert_eq!(
            found,
            vec![(
                "address.zip".to_string(),
                "has an incompatible type: the writer writes string but the reader expects int"
                    .to_string()
            )]
        );
    }

    #[test]
    fn array_items_and_map_values_are_checked_with_their_own_path() {
        let ints = r#"{"type":"record","name":"R","fields":[{"name":"scores","type":{"type":"array","items":"int"}},{"name":"attrs","type":{"type":"map","values":"int"}}]}"#;
        let longs = r#"{"type":"record","name":"R","fields":[{"name":"scores","type":{"type":"array","items":"long"}},{"name":"attrs","type":{"type":"map","values":"long"}}]}"#;
        assert!(findings(ints, longs).is_empty(), "int widens to long");
        assert_eq!(fields(longs, ints), vec!["scores[]", "attrs{}"]);
    }

    #[test]
    fn every_problem_is_reported_not_just_the_first() {
        let old = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"string"},{"name":"b","type":"string"}]}"#;
        let new = r#"{"type":"record","name":"R","fields":[{"name":"a","type":"int"},{"name":"b","type":"int"},{"name":"c","type":"int"}]}"#;
        assert_eq!(fields(old, new), vec!["a", "b", "c"]);
        // The library stops at the first one.
        assert!(matches!(
            SchemaCompatibility::can_read(&schema(old), &schema(new)),
            Err(CompatibilityError::FieldTypeMismatch(field, _)) if field == "a"
        ));
    }

    #[test]
    fn promotions_follow_the_specification() {
        let promotions = [
            ("int", "long"),
            ("int", "float"),
            ("int", "double"),
            ("long", "float"),
            ("long", "double"),
            ("float", "double"),
            ("string", "bytes"),
            ("bytes", "string"),
        ];
        for (writer, reader) in promotions {
            let w = format!(r#""{writer}""#);
            let r = format!(r#""{reader}""#);
            assert!(findings(&w, &r).is_empty(), "{writer} -> {reader}");
            if writer != "string" && writer != "bytes" {
                assert_eq!(fields(&r, &w), vec!["<root>"], "{reader} -> {writer}");
            }
        }
        assert_eq!(fields(r#""boolean""#, r#""int""#), vec!["<root>"]);
    }

    #[test]
    fn nullable_field_is_backward_but_not_forward() {
        let plain = r#"{"type":"record","name":"R","fields":[{"name":"email","type":"string"}]}"#;
        let nullable =
            r#"{"type":"record","name":"R","fields":[{"name":"email","type":["null","string"]}]}"#;
        assert!(findings(plain, nullable).is_empty());
        assert_eq!(
            findings(nullable, plain),
            vec![(
                "email".to_string(),
                "has an incompatible type: the writer writes null but the reader expects string"
                    .to_string()
            )]
        );
        // The library only says "partial" for the narrowed union.
        assert!(matches!(
            SchemaCompatibility::can_read(&schema(nullable), &schema(plain)),
            Ok(Compatibility::Partial)
        ));
    }

    #[test]
    fn reader_union_explains_with_the_matching_branch() {
        let writer = r#"{"type":"record","name":"P","fields":[{"name":"home","type":{"type":"record","name":"Address","fields":[{"name":"street","type":"string"}]}}]}"#;
        let reader = r#"{"type":"record","name":"P","fields":[{"name":"home","type":["null",{"type":"record","name":"Address","fields":[{"name":"street","type":"string"},{"name":"zip","type":"string"}]}]}]}"#;
        assert_eq!(
            findings(writer, reader),
            vec![("home.zip".to_string(), MISSING_FIELD.to_string())]
        );
        let ints = r#"{"type":"record","name":"P","fields":[{"name":"n","type":"int"}]}"#;
        let nullable_strings =
            r#"{"type":"record","name":"P","fields":[{"name":"n","type":["null","string"]}]}"#;
        assert_eq!(
            findings(ints, nullable_strings),
            vec![(
                "n".to_string(),
                "has an incompatible type: the writer writes int but the reader expects one of [null, string]".to_string()
            )]
        );
    }

    #[test]
    fn enum_default_lets_the_reader_absorb_unknown_symbols() {
        let abc = r#"{"type":"enum","name":"E","symbols":["A","B","C"]}"#;
        let ab = r#"{"type":"enum","name":"E","symbols":["A","B"]}"#;
        let ab_default = r#"{"type":"enum","name":"E","symbols":["A","B"],"default":"A"}"#;
        assert_eq!(
            findings(abc, ab),
            vec![(
                "<root>".to_string(),
                "is enum \"E\" whose writer symbol \"C\" is unknown to the reader, which has no default symbol".to_string()
            )]
        );
        assert!(findings(abc, ab_default).is_empty());
        // The library calls a removed symbol "partial"; the registry must reject it.
        assert_eq!(
            SchemaCompatibility::can_read(&schema(abc), &schema(ab)),
            Ok(Compatibility::Partial)
        );
    }

    #[test]
    fn fixed_must_keep_its_size() {
        let w = r#"{"type":"record","name":"R","fields":[{"name":"hash","type":{"type":"fixed","name":"Hash","size":16}}]}"#;
        let r = r#"{"type":"record","name":"R","fields":[{"name":"hash","type":{"type":"fixed","name":"Hash","size":32}}]}"#;
        assert_eq!(
            findings(w, r),
            vec![(
                "hash".to_string(),
                "is fixed \"Hash\" of 16 bytes in the writer but 32 bytes in the reader"
                    .to_string()
            )]
        );
    }

    #[test]
    fn decimals_must_keep_precision_and_scale() {
        let w = r#"{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}"#;
        let r = r#"{"type":"bytes","logicalType":"decimal","precision":10,"scale":4}"#;
        assert_eq!(
            findings(w, r),
            vec![(
                "<root>".to_string(),
                "has an incompatible type: the writer writes decimal(10,2) but the reader expects decimal(10,4)".to_string()
            )]
        );
        assert!(findings(w, w).is_empty());
    }

    #[test]
    fn record_rename_with_alias_is_readable_but_the_library_rejects_it() {
        let user = r#"{"type":"record","name":"User","namespace":"a","fields":[{"name":"id","type":"long"}]}"#;
        let customer = r#"{"type":"record","name":"Customer","namespace":"a","aliases":["User"],"fields":[{"name":"id","type":"long"}]}"#;
        let customer_no_alias = r#"{"type":"record","name":"Customer","namespace":"a","fields":[{"name":"id","type":"long"}]}"#;
        assert!(findings(user, customer).is_empty());
        assert_eq!(
            findings(user, customer_no_alias),
            vec![(
                "<root>".to_string(),
                "is record \"a.User\" in the writer but record \"a.Customer\" in the reader, which has no alias for the writer's name".to_string()
            )]
        );
        assert!(matches!(
            SchemaCompatibility::can_read(&schema(user), &schema(customer)),
            Err(CompatibilityError::NameMismatch { .. })
        ));
    }

    /// A type defined in one field and referenced by name in another.
    const REF_AB: &str = r#"{"type":"record","name":"R","fields":[
        {"name":"a","type":{"type":"record","name":"Point","fields":[{"name":"x","type":"int"}]}},
        {"name":"b","type":"Point"}]}"#;

    #[test]
    fn named_references_are_resolved_before_comparing() {
        // Same types, but the reader defines Point in `b` and refers to it from `a`.
        let swapped = r#"{"type":"record","name":"R","fields":[
            {"name":"b","type":{"type":"record","name":"Point","fields":[{"name":"x","type":"int"}]}},
            {"name":"a","type":"Point"}]}"#;
        assert!(findings(REF_AB, swapped).is_empty());
        assert!(
            !library_full(REF_AB, swapped),
            "library: reference vs definition"
        );

        // The reader's Point requires `y`; the reader only uses it through `b` (a reference)
        // and a new field with a default. The writer's `b` has no `y`.
        let stricter = r#"{"type":"record","name":"R","fields":[
            {"name":"c","type":{"type":"record","name":"Point","fields":[{"name":"x","type":"int"},{"name":"y","type":"int"}]},"default":{"x":0,"y":0}},
            {"name":"b","type":"Point"}]}"#;
        assert_eq!(
            findings(REF_AB, stricter),
            vec![("b.y".to_string(), MISSING_FIELD.to_string())]
        );
        assert!(
            library_full(REF_AB, stricter),
            "library: names equal, definitions ignored"
        );
    }

    #[test]
    fn recursive_types_terminate_and_are_still_checked() {
        let list = r#"{"type":"record","name":"Node","fields":[{"name":"value","type":"int"},{"name":"next","type":["null","Node"],"default":null}]}"#;
        let list_long = r#"{"type":"record","name":"Node","fields":[{"name":"value","type":"long"},{"name":"next","type":["null","Node"],"default":null}]}"#;
        assert!(findings(list, list).is_empty());
        assert!(findings(list, list_long).is_empty());
        assert_eq!(fields(list_long, list), vec!["value"]);
    }

    #[test]
    fn field_alias_is_used_for_reading_only() {
        let old = r#"{"type":"record","name":"R","fields":[{"name":"name","type":"string"}]}"#;
        let renamed = r#"{"type":"record","name":"R","fields":[{"name":"full_name","type":"string","aliases":["name"]}]}"#;
        assert!(findings(old, renamed).is_empty());
        assert_eq!(
            findings(renamed, old),
            vec![("name".to_string(), MISSING_FIELD.to_string())]
        );
    }

    const DATUM_SCHEMA: &str = r#"{"type":"record","name":"Event","namespace":"com.example","fields":[
        {"name":"id","type":"long"},
        {"name":"count","type":"int"},
        {"name":"name","type":"string"},
        {"name":"payload","type":"bytes"},
        {"name":"email","type":["null","string"]},
        {"name":"status","type":{"type":"enum","name":"Status","symbols":["ACTIVE","BANNED"]}},
        {"name":"tags","type":{"type":"array","items":"string"}},
        {"name":"attrs","type":{"type":"map","values":"int"}},
        {"name":"hash","type":{"type":"fixed","name":"Hash","size":2}},
        {"name":"price","type":{"type":"bytes","logicalType":"decimal","precision":10,"scale":2}},
        {"name":"ratio","type":"double"},
        {"name":"at","type":{"type":"long","logicalType":"timestamp-millis"}},
        {"name":"home","type":{"type":"record","name":"Address","fields":[{"name":"zip","type":"string"}]}},
        {"name":"work","type":["null","Address"]}
    ]}"#;

    fn datum() -> Vec<u8> {
        let schema = schema(DATUM_SCHEMA);
        let mut record = Record::new(&schema).unwrap();
        record.put("id", Value::Long(7));
        record.put("count", Value::Int(-3));
        record.put("name", Value::String("ada".into()));
        record.put("payload", Value::Bytes(vec![0xde, 0xad]));
        record.put(
            "email",
            Value::Union(1, Box::new(Value::String("a@b.c".into()))),
        );
        record.put("status", Value::Enum(1, "BANNED".into()));
        record.put("tags", Value::Array(vec![Value::String("x".into())]));
        record.put(
            "attrs",
            Value::Map([("k".to_string(), Value::Int(1))].into_iter().collect()),
        );
        record.put("hash", Value::Fixed(2, vec![1, 2]));
        // -1250 unscaled, scale 2.
        record.put(
            "price",
            Value::Decimal(apache_avro::Decimal::from((-1250i16).to_be_bytes())),
        );
        record.put("ratio", Value::Double(f64::NAN));
        record.put("at", Value::TimestampMillis(1_700_000_000_000));
        let address = Value::Record(vec![("zip".to_string(), Value::String("10115".into()))]);
        record.put("home", address.clone());
        record.put("work", Value::Union(1, Box::new(address)));
        to_avro_datum(&schema, record)
    }

    #[test]
    fn decode_avro_turns_a_datum_into_json() {
        let json = decode_avro(DATUM_SCHEMA, &datum()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "id": 7,
                "count": -3,
                "name": "ada",
                "payload": "3q0=",
                "email": "a@b.c",
                "status": "BANNED",
                "tags": ["x"],
                "attrs": {"k": 1},
                "hash": "AQI=",
                "price": "-12.50",
                "ratio": "NaN",
                "at": 1_700_000_000_000i64,
                "home": {"zip": "10115"},
                "work": {"zip": "10115"},
            })
        );
    }

    #[test]
    fn decode_avro_rejects_trailing_and_truncated_bytes() {
        let mut bytes = datum();
        bytes.push(0);
        let err = decode_avro(DATUM_SCHEMA, &bytes).unwrap_err();
        assert!(
            err.starts_with("1 trailing byte(s) after the Avro datum"),
            "{err}"
        );
        // Cut inside the last string: the library itself answers `Null` for it.
        bytes.truncate(bytes.len() - 5);
        let err = decode_avro(DATUM_SCHEMA, &bytes).unwrap_err();
        assert!(
            err.starts_with("cannot decode Avro datum: input ends early"),
            "{err}"
        );
        // Cut inside a long.
        let err = decode_avro(DATUM_SCHEMA, &[]).unwrap_err();
        assert!(err.starts_with("cannot decode Avro datum"), "{err}");
        // A string-only schema shows the library behaviour that needs the guard.
        let string_schema = schema(r#""string""#);
        let cut = [10u8, b'a'];
        let value = GenericDatumReader::builder(&string_schema)
            .build()
            .unwrap()
            .read_value(&mut &cut[..])
            .unwrap();
        assert_eq!(value, Value::Null);
        assert!(decode_avro(r#""string""#, &cut).is_err());
        assert_eq!(decode_avro(r#""null""#, &[]), Ok(Json::Null));
        let err = decode_avro("{", &[]).unwrap_err();
        assert!(err.starts_with("writer schema does not parse"), "{err}");
    }

    #[test]
    fn decoder_reuses_the_parsed_schema() {
        let decoder = AvroDecoder::new(r#""long""#).unwrap();
        let one = to_avro_datum(&Schema::Long, Value::Long(1));
        let big = to_avro_datum(&Schema::Long, Value::Long(i64::MIN));
        assert_eq!(decoder.decode(&one).unwrap(), serde_json::json!(1));
        assert_eq!(decoder.decode(&big).unwrap(), serde_json::json!(i64::MIN));
    }

    #[test]
    fn decimal_text_handles_sign_scale_and_width() {
        assert_eq!(decimal_string(&[], 2), "0.00");
        assert_eq!(decimal_string(&[0x04, 0xe2], 2), "12.50");
        assert_eq!(decimal_string(&[0xfb, 0x1e], 2), "-12.50");
        assert_eq!(decimal_string(&[0x05], 0), "5");
        assert_eq!(decimal_string(&[0xff], 3), "-0.001");
        assert_eq!(decimal_string(&[0x80], 0), "-128");
        // 2^127 needs 17 bytes: beyond i128.
        let mut big = vec![0u8; 17];
        big[1] = 0x80;
        assert_eq!(
            decimal_string(&big, 0),
            "170141183460469231731687303715884105728"
        );
    }

    #[test]
    fn floats_that_json_cannot_hold_become_strings() {
        assert_eq!(float_json(1.5), serde_json::json!(1.5));
        assert_eq!(float_json(f64::INFINITY), serde_json::json!("Infinity"));
        assert_eq!(
            float_json(f64::NEG_INFINITY),
            serde_json::json!("-Infinity")
        );
        assert_eq!(float_json(f64::NAN), serde_json::json!("NaN"));
    }
}
