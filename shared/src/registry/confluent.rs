//! The published Confluent Schema Registry REST API, as served by Confluent Schema Registry,
//! Karapace and Apicurio Registry's `ccompat` endpoint (give its base URL, e.g.
//! `http://apicurio:8080/apis/ccompat/v7`).
//!
//! # Calls
//! - `versions`: `GET /subjects/{subject}/versions` (404 with `error_code` 40401, "subject not
//!   found", is an empty history), then `GET /subjects/{subject}/versions/{version}` each.
//! - `register`: `POST /subjects/{subject}/versions` (`{"schema", "schemaType"}`, idempotent in
//!   the registry: an identical schema returns its existing id), then the lookup
//!   `POST /subjects/{subject}` for the version number and the stored text. `schemaType` is
//!   sent only for JSON Schema: absent means Avro, and registries older than 5.5 reject it.
//! - `by_id`: `GET /schemas/ids/{id}` (404, `error_code` 40403, is [`RegistryError::NotFound`]),
//!   then `GET /schemas/ids/{id}/versions` for the subject and version. Registries without that
//!   endpoint (older than 5.5) answer 404 or 405: the subject is then `""` and the version 0.
//!   One id can be registered under several subjects; the first one listed is kept.
//! - `set_compatibility`: `PUT /config/{subject}`.
//!
//! # Errors
//! Timeouts, connection failures, 5xx, 408 and 429 are transient; other 4xx are permanent,
//! except 409, the registry's own compatibility refusal, which is
//! [`RegistryError::Incompatible`], and 404, which is [`RegistryError::NotFound`].

use super::{RegisteredSchema, RegistryError, SchemaId, SchemaRegistry};
use crate::schema::{CompatibilityMode, SchemaFormat};
use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use reqwest::{Method, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::fmt;
use std::time::Duration;

/// The registry's media type, sent as `Content-Type`.
pub const CONTENT_TYPE_V1: &str = "application/vnd.schemaregistry.v1+json";
const ACCEPTS: &str = "application/vnd.schemaregistry.v1+json, application/vnd.schemaregistry+json; q=0.9, application/json; q=0.5";
/// Default bound on one HTTP request, connection included.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// `GET /subjects/{subject}/versions/{version}` calls in flight while listing a subject.
const FETCH_CONCURRENCY: usize = 4;

/// A Confluent-compatible registry at `base_url`, with optional HTTP basic auth (Confluent
/// Cloud API key and secret). `Debug` does not print the password.
#[derive(Clone)]
pub struct ConfluentRegistry {
    base_url: Url,
    http: reqwest::Client,
    auth: Option<(String, String)>,
}

impl fmt::Debug for ConfluentRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfluentRegistry")
            .field("base_url", &self.base_url.as_str())
            .field("user", &self.auth.as_ref().map(|(user, _)| user))
            .finish_non_exhaustive()
    }
}

/// A registry answer that was not 2xx: the status and the documented error body
/// `{"error_code": 40401, "message": "..."}` when there is one.
#[derive(Debug)]
struct Rejection {
    status: u16,
    error_code: Option<i64>,
    message: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: Option<i64>,
    message: Option<String>,
}

#[derive(Deserialize)]
struct IdBody {
    id: u32,
}

#[derive(Deserialize)]
struct VersionBody {
    subject: String,
    version: u32,
    id: u32,
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

#[derive(Deserialize)]
struct SchemaBody {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
}

#[derive(Deserialize)]
struct SubjectVersion {
    subject: String,
    version: u32,
}

/// Error codes of the published API.
const SUBJECT_NOT_FOUND: i64 = 40401;
const VERSION_NOT_FOUND: i64 = 40402;

fn schema_type(format: SchemaFormat) -> Option<&'static str> {
    match format {
        SchemaFormat::Avro => None,
        SchemaFormat::JsonSchema => Some("JSON"),
    }
}

fn registration_body(format: SchemaFormat, definition: &str) -> Value {
    match schema_type(format) {
        Some(kind) => json!({ "schema": definition, "schemaType": kind }),
        None => json!({ "schema": definition }),
    }
}

/// A registry URL as it may be shown: any `user:password@` part replaced by `***@`.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme && !url[scheme + 3..at].contains('/') => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

impl ConfluentRegistry {
    /// The adapter for the registry at `base_url` (any path prefix is kept), with
    /// [`DEFAULT_TIMEOUT`] per request.
    ///
    /// # Errors
    /// [`RegistryError::Permanent`] when the URL is not an `http(s)` base URL or the HTTP
    /// client cannot be built.
    pub fn new(base_url: &str, auth: Option<(String, String)>) -> Result<Self, RegistryError> {
        Self::with_timeout(base_url, auth, DEFAULT_TIMEOUT)
    }

    /// As [`ConfluentRegistry::new`], with `timeout` per request.
    ///
    /// # Errors
    /// As [`ConfluentRegistry::new`].
    pub fn with_timeout(
        base_url: &str,
        auth: Option<(String, String)>,
        timeout: Duration,
    ) -> Result<Self, RegistryError> {
        let invalid = |message: String| RegistryError::Permanent {
            registry: redact_url(base_url),
            operation: "configure",
            message,
        };
        let mut url =
            Url::parse(base_url).map_err(|e| invalid(format!("invalid base URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(invalid(
                "the base URL must be http(s)://host[:port][/path]".into(),
            ));
        }
        // Credentials in the URL (`https://key:secret@host`) become basic auth and leave the
        // URL, so no error, log line or health answer can print them.
        let mut auth = auth;
        if !url.username().is_empty() || url.password().is_some() {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8_lossy()
                    .into_owned()
            };
            if auth.is_none() {
                auth = Some((
                    decode(url.username()),
                    decode(url.password().unwrap_or_default()),
                ));
            }
            let _ = url.set_username("");
            let _ = url.set_password(None);
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .build()
            .map_err(|e| invalid(format!("HTTP client: {e}")))?;
        Ok(Self {
            base_url: url,
            http,
            auth,
        })
    }

    /// The base URL (never with credentials).
    pub fn base_url(&self) -> &str {
        self.base_url.as_str()
    }

    fn label(&self) -> String {
        self.base_url.as_str().trim_end_matches('/').to_owned()
    }

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base_url.clone();
        url.set_query(None);
        url.path_segments_mut()
            .expect("checked in new: the base URL can be a base")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// One request: the parsed 2xx body, or the registry's rejection for the caller to map.
    /// Transport failures and unreadable 2xx bodies are classified here.
    async fn send<T: DeserializeOwned>(
        &self,
        method: Method,
        operation: &'static str,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<Result<T, Rejection>, RegistryError> {
        let target = segments.join("/");
        let mut request = self
            .http
            .request(method, self.url(segments))
            .header(ACCEPT, ACCEPTS);
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, Some(password));
        }
        if let Some(body) = body {
            request = request
                .header(CONTENT_TYPE, CONTENT_TYPE_V1)
                .body(serde_json::to_vec(body).expect("a JSON value serialises"));
        }
        let transport = |e: reqwest::Error| {
            let message = format!("{target}: {e}");
            if e.is_builder() || e.is_redirect() {
                self.permanent(operation, message)
            } else {
                RegistryError::Transient {
                    registry: self.label(),
                    operation,
                    message,
                }
            }
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map(Ok).map_err(|e| {
                self.permanent(
                    operation,
                    format!("{target}: unreadable answer ({e}): {}", snippet(&bytes)),
                )
            });
        }
        let parsed: Option<ErrorBody> = serde_json::from_slice(&bytes).ok();
        let error_code = parsed.as_ref().and_then(|b| b.error_code);
        let message = parsed
            .and_then(|b| b.message)
            .unwrap_or_else(|| snippet(&bytes));
        Ok(Err(Rejection {
            status: status.as_u16(),
            error_code,
            message,
        }))
    }

    fn permanent(&self, operation: &'static str, message: String) -> RegistryError {
        RegistryError::Permanent {
            registry: self.label(),
            operation,
            message,
        }
    }

    /// Maps a rejection: 404 is `NotFound { what }`, 409 is `Incompatible` for `subject`,
    /// 5xx/408/429 transient, other statuses permanent.
    fn rejected(
        &self,
        operation: &'static str,
        what: &str,
        subject: &str,
        rejection: Rejection,
    ) -> RegistryError {
        let Rejection {
            status,
            error_code,
            message,
        } = rejection;
        let code = error_code
            .map(|c| format!(" (error_code {c})"))
            .unwrap_or_default();
        match status {
            404 => RegistryError::NotFound {
                registry: self.label(),
                what: format!("{what}: {message}{code}"),
            },
            409 => RegistryError::Incompatible {
                subject: subject.to_owned(),
                explanation: format!("the registry refused it: {message}{code}"),
            },
            408 | 429 | 500..=599 => RegistryError::Transient {
                registry: self.label(),
                operation,
                message: format!("{what}: HTTP {status}: {message}{code}"),
            },
            _ => self.permanent(operation, format!("{what}: HTTP {status}: {message}{code}")),
        }
    }

    fn format(
        &self,
        operation: &'static str,
        what: &str,
        schema_type: Option<&str>,
    ) -> Result<SchemaFormat, RegistryError> {
        match schema_type {
            None | Some("AVRO") => Ok(SchemaFormat::Avro),
            Some("JSON") => Ok(SchemaFormat::JsonSchema),
            Some(other) => Err(self.permanent(
                operation,
                format!("{what}: schema type {other} is not supported (AVRO and JSON are)"),
            )),
        }
    }

    fn to_registered(
        &self,
        operation: &'static str,
        body: VersionBody,
    ) -> Result<RegisteredSchema, RegistryError> {
        let what = format!("subject {} version {}", body.subject, body.version);
        Ok(RegisteredSchema {
            id: SchemaId::Confluent(body.id),
            format: self.format(operation, &what, body.schema_type.as_deref())?,
            subject: body.subject,
            version: body.version,
            definition: body.schema,
        })
    }

    /// One version; `None` when it was deleted meanwhile (40402).
    async fn version(
        &self,
        subject: &str,
        version: u32,
    ) -> Result<Option<RegisteredSchema>, RegistryError> {
        const OP: &str = "GET /subjects/{subject}/versions/{version}";
        let number = version.to_string();
        match self
            .send::<VersionBody>(
                Method::GET,
                OP,
                &["subjects", subject, "versions", &number],
                None,
            )
            .await?
        {
            Ok(body) => self.to_registered(OP, body).map(Some),
            Err(r) if r.status == 404 && r.error_code == Some(VERSION_NOT_FOUND) => Ok(None),
            Err(r) => Err(self.rejected(
                OP,
                &format!("subject {subject} version {version}"),
                subject,
                r,
            )),
        }
    }
}

fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut end = text.len().min(200);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

#[async_trait]
impl SchemaRegistry for ConfluentRegistry {
    async fn versions(&self, subject: &str) -> Result<Vec<RegisteredSchema>, RegistryError> {
        const OP: &str = "GET /subjects/{subject}/versions";
        let numbers: Vec<u32> = match self
            .send(Method::GET, OP, &["subjects", subject, "versions"], None)
            .await?
        {
            Ok(numbers) => numbers,
            Err(r) if r.status == 404 && r.error_code == Some(SUBJECT_NOT_FOUND) => {
                return Ok(Vec::new());
            }
            Err(r) => return Err(self.rejected(OP, &format!("subject {subject}"), subject, r)),
        };
        let fetched: Vec<Option<RegisteredSchema>> = futures::stream::iter(numbers)
            .map(|version| self.version(subject, version))
            .buffered(FETCH_CONCURRENCY)
            .try_collect()
            .await?;
        let mut versions: Vec<RegisteredSchema> = fetched.into_iter().flatten().collect();
        versions.sort_by_key(|v| v.version);
        Ok(versions)
    }

    async fn register(
        &self,
        subject: &str,
        format: SchemaFormat,
        definition: &str,
    ) -> Result<RegisteredSchema, RegistryError> {
        const REGISTER: &str = "POST /subjects/{subject}/versions";
        const LOOKUP: &str = "POST /subjects/{subject}";
        let body = registration_body(format, definition);
        let what = format!("subject {subject}");
        let registered: IdBody = self
            .send(
                Method::POST,
                REGISTER,
                &["subjects", subject, "versions"],
                Some(&body),
            )
            .await?
            .map_err(|r| self.rejected(REGISTER, &what, subject, r))?;
        let found: VersionBody = self
            .send(Method::POST, LOOKUP, &["subjects", subject], Some(&body))
            .await?
            .map_err(|r| self.rejected(LOOKUP, &what, subject, r))?;
        if found.id != registered.id {
            return Err(self.permanent(
                LOOKUP,
                format!(
                    "{what}: registered as id {} but looked up as id {}",
                    registered.id, found.id
                ),
            ));
        }
        let mut schema = self.to_registered(LOOKUP, found)?;
        // Some registries omit `schemaType` in the lookup answer; the request said it.
        schema.format = format;
        Ok(schema)
    }

    async fn by_id(&self, id: &SchemaId) -> Result<RegisteredSchema, RegistryError> {
        const OP: &str = "GET /schemas/ids/{id}";
        const VERSIONS: &str = "GET /schemas/ids/{id}/versions";
        let SchemaId::Confluent(number) = id else {
            return Err(RegistryError::NotFound {
                registry: self.label(),
                what: format!("schema id {id} (not a Confluent id)"),
            });
        };
        let number_text = number.to_string();
        let what = format!("schema id {id}");
        let body: SchemaBody = self
            .send(Method::GET, OP, &["schemas", "ids", &number_text], None)
            .await?
            .map_err(|r| self.rejected(OP, &what, "", r))?;
        let format = self.format(OP, &what, body.schema_type.as_deref())?;
        let (subject, version) = match self
            .send::<Vec<SubjectVersion>>(
                Method::GET,
                VERSIONS,
                &["schemas", "ids", &number_text, "versions"],
                None,
            )
            .await?
        {
            Ok(list) => list
                .into_iter()
                .next()
                .map(|sv| (sv.subject, sv.version))
                .unwrap_or_default(),
            // Registries older than 5.5 do not have the endpoint.
            Err(r) if matches!(r.status, 404 | 405 | 501) => (String::new(), 0),
            Err(r) => return Err(self.rejected(VERSIONS, &what, "", r)),
        };
        Ok(RegisteredSchema {
            id: id.clone(),
            subject,
            version,
            format,
            definition: body.schema,
        })
    }

    async fn set_compatibility(
        &self,
        subject: &str,
        mode: CompatibilityMode,
    ) -> Result<(), RegistryError> {
        const OP: &str = "PUT /config/{subject}";
        let body = json!({ "compatibility": mode.as_str() });
        self.send::<Value>(Method::PUT, OP, &["config", subject], Some(&body))
            .await?
            .map(|_| ())
            .map_err(|r| self.rejected(OP, &format!("subject {subject}"), subject, r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_keep_the_prefix_and_encode_subjects() {
        let registry =
            ConfluentRegistry::new("http://registry:8081/apis/ccompat/v7/", None).unwrap();
        assert_eq!(
            registry
                .url(&["subjects", "orders value/x", "versions"])
                .as_str(),
            "http://registry:8081/apis/ccompat/v7/subjects/orders%20value%2Fx/versions"
        );
        let bare = ConfluentRegistry::new("https://r.example", None).unwrap();
        assert_eq!(
            bare.url(&["schemas", "ids", "7"]).as_str(),
            "https://r.example/schemas/ids/7"
        );
        assert_eq!(bare.label(), "https://r.example");
    }

    #[test]
    fn bad_base_urls_are_permanent_errors() {
        for url in ["registry:8081", "ftp://r", "not a url"] {
            let err = ConfluentRegistry::new(url, None).unwrap_err();
            assert!(
                matches!(
                    err,
                    RegistryError::Permanent {
                        operation: "configure",
                        ..
                    }
                ),
                "{url}: {err}"
            );
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let registry = ConfluentRegistry::new(
            "http://r:8081",
            Some(("key".to_owned(), "s3cret".to_owned())),
        )
        .unwrap();
        let debug = format!("{registry:?}");
        assert!(
            debug.contains("key") && !debug.contains("s3cret"),
            "{debug}"
        );
    }

    #[test]
    fn schema_type_is_sent_only_for_json_schema() {
        assert_eq!(
            registration_body(SchemaFormat::Avro, "\"string\""),
            json!({ "schema": "\"string\"" })
        );
        assert_eq!(
            registration_body(SchemaFormat::JsonSchema, "{}"),
            json!({ "schema": "{}", "schemaType": "JSON" })
        );
    }

    #[test]
    fn rejections_are_classified() {
        let registry = ConfluentRegistry::new("http://r:8081", None).unwrap();
        let rejection = |status, error_code| Rejection {
            status,
            error_code,
            message: "m".into(),
        };
        let map = |r| registry.rejected("op", "subject s", "s", r);
        assert!(matches!(
            map(rejection(404, Some(40403))),
            RegistryError::NotFound { .. }
        ));
        assert!(
            matches!(map(rejection(409, Some(409))), RegistryError::Incompatible { subject, .. } if subject == "s")
        );
        for status in [408, 429, 500, 503] {
            assert!(map(rejection(status, None)).is_transient(), "{status}");
        }
        for status in [400, 401, 403, 422] {
            assert!(
                matches!(
                    map(rejection(status, Some(42201))),
                    RegistryError::Permanent { .. }
                ),
                "{status}"
            );
        }
    }

    #[test]
    fn credentials_in_the_url_become_basic_auth_and_never_show() {
        let r = ConfluentRegistry::new("https://key%2B1:s3cr%40t@registry.example:8081/x/", None)
            .unwrap();
        assert_eq!(r.base_url(), "https://registry.example:8081/x/");
        assert_eq!(r.auth, Some(("key+1".into(), "s3cr@t".into())));
        let debug = format!("{r:?}");
        assert!(!debug.contains("s3cr"), "{debug}");
        let err = ConfluentRegistry::new("ftp://key:s3cret@r", None).unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert_eq!(redact_url("https://a:b@h/p"), "https://***@h/p");
        assert_eq!(redact_url("https://h/p@x"), "https://h/p@x");
    }
}
