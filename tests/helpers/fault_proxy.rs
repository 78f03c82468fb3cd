//! A fault-injecting HTTP/1.1 reverse proxy in front of the local stack (moto), for the
//! fault-injection tests.
//!
//! The functions under test are pointed at the proxy (`AWS_ENDPOINT_URL`); every request is
//! forwarded to moto unless a [`Rule`] set by the test matches its operation, in which case
//! the proxy answers with the fault instead (or, for [`Fault::ResponseLost`], forwards and
//! then drops the answer). Each request's operation is recognised the way the service
//! routes it:
//!
//! - JSON protocols (DynamoDB, SQS, Secrets Manager, Glue...) by the `X-Amz-Target` header:
//!   `DynamoDB_20120810.TransactWriteItems` is `dynamodb:TransactWriteItems`,
//!   `AmazonSQS.SendMessage` is `sqs:SendMessage`, `secretsmanager.GetSecretValue` is
//!   `secretsmanager:GetSecretValue`;
//! - the query protocol (older SQS clients) by `Action=` in the form body;
//! - S3 by method and path: `s3:PutObject`, `s3:GetObject`, `s3:HeadObject`,
//!   `s3:DeleteObject`, `s3:ListObjectsV2` (`list-type=2`), `s3:CreateBucket`, the multipart
//!   calls (`s3:CreateMultipartUpload`, `s3:UploadPart`, `s3:CompleteMultipartUpload`,
//!   `s3:AbortMultipartUpload`, `s3:ListMultipartUploads`)...;
//! - Lambda's REST API by path (`lambda:ListEventSourceMappings`); anything else as
//!   `<service>:<METHOD>` with the service taken from the request's SigV4 credential scope.
//!
//! The proxy runs on its own thread and Tokio runtime, so a test may block its own thread
//! (as `cargo lambda invoke` does) while the proxy keeps serving. Rules and counters are
//! shared with the test through [`FaultProxy`] and [`RuleHandle`].

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the proxy does instead of (or besides) forwarding a matched request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// HTTP 503. S3: `SlowDown` (S3's throttling answer); other services:
    /// `ServiceUnavailable`.
    SlowDown,
    /// HTTP 500 `InternalError` (DynamoDB: `InternalServerError`).
    InternalError,
    /// The service's own throttling error: DynamoDB 400
    /// `ProvisionedThroughputExceededException`, SQS 400 `RequestThrottled` (the error
    /// SendMessage models), S3 503 `SlowDown`, others 400 `ThrottlingException`.
    Throttle,
    /// DynamoDB 400 `TransactionCanceledException` with these cancellation reason codes, in
    /// the order of the transaction's items (`"None"` for an item that did not fail), in
    /// the shape DynamoDB sends: `{"__type": "...#TransactionCanceledException",
    /// "Message": "... [A, None]", "CancellationReasons": [{"Code": "A", "Message": ...},
    /// {"Code": "None"}]}`.
    TransactionCanceled(Vec<String>),
    /// Any service error, e.g. 403 `AccessDenied` (permanent).
    Error {
        /// HTTP status.
        status: u16,
        /// Error code.
        code: String,
    },
    /// The connection is closed without an answer; the request never reaches the service.
    Reset,
    /// The request is forwarded and takes effect, then the connection is closed without
    /// relaying the answer: the caller cannot know it succeeded.
    ResponseLost,
    /// The request is forwarded after this delay.
    Latency(Duration),
}

/// How many matching calls a rule affects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Times {
    /// The next `n` matching calls; later ones pass.
    Next(u64),
    /// Every matching call during this long from when the rule is added (an outage that
    /// ends by itself).
    For(Duration),
    /// Every matching call until the rule is removed or the proxy is cleared.
    UntilCleared,
}

/// A fault for the calls of one operation.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The operation, e.g. `s3:PutObject`, `dynamodb:GetItem` (see the module docs).
    pub operation: String,
    /// Only calls whose body contains this text (e.g. a partition's state key), if set.
    pub body_contains: Option<String>,
    /// What is injected.
    pub fault: Fault,
    /// For how many calls.
    pub times: Times,
}

impl Rule {
    /// `fault` for the next `n` calls of `operation`.
    pub fn next(operation: &str, fault: Fault, n: u64) -> Self {
        Self {
            operation: operation.to_owned(),
            body_contains: None,
            fault,
            times: Times::Next(n),
        }
    }

    /// `fault` for every call of `operation` until cleared (an outage).
    pub fn outage(operation: &str, fault: Fault) -> Self {
        Self {
            operation: operation.to_owned(),
            body_contains: None,
            fault,
            times: Times::UntilCleared,
        }
    }

    /// `fault` for every call of `operation` during `duration`.
    pub fn outage_for(operation: &str, fault: Fault, duration: Duration) -> Self {
        Self {
            operation: operation.to_owned(),
            body_contains: None,
            fault,
            times: Times::For(duration),
        }
    }
}

/// What a rule saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RuleStats {
    /// Calls that matched the rule's operation (and body filter) while it was active.
    pub matched: u64,
    /// Calls that got the fault.
    pub injected: u64,
}

#[derive(Debug)]
struct ActiveRule {
    id: u64,
    rule: Rule,
    added: Instant,
    stats: RuleStats,
}

impl ActiveRule {
    fn in_force(&self) -> bool {
        match self.rule.times {
            Times::Next(n) => self.stats.injected < n,
            Times::For(d) => self.added.elapsed() < d,
            Times::UntilCleared => true,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<ActiveRule>,
    /// Stats of rules removed by `clear`, kept for their handles.
    finished: BTreeMap<u64, RuleStats>,
    next_id: u64,
    /// Every call seen, by operation.
    calls: BTreeMap<String, u64>,
    /// Every fault injected, by operation.
    injected: BTreeMap<String, u64>,
}

type Shared = Arc<Mutex<State>>;

/// Reads the proxy state; a panic in another test thread must not hide this one's counts.
fn lock(state: &Shared) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running proxy. Dropping it stops it.
#[derive(Debug)]
pub struct FaultProxy {
    url: String,
    state: Shared,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A rule that was added, for its counts.
#[derive(Debug, Clone)]
pub struct RuleHandle {
    id: u64,
    state: Shared,
}

impl RuleHandle {
    /// What the rule matched and injected so far (also after it was cleared).
    pub fn stats(&self) -> RuleStats {
        let state = lock(&self.state);
        state
            .rules
            .iter()
            .find(|r| r.id == self.id)
            .map(|r| r.stats)
            .or_else(|| state.finished.get(&self.id).copied())
            .unwrap_or_default()
    }

    /// Removes the rule (its stats stay readable).
    pub fn remove(&self) {
        let mut state = lock(&self.state);
        if let Some(i) = state.rules.iter().position(|r| r.id == self.id) {
            let rule = state.rules.remove(i);
            state.finished.insert(rule.id, rule.stats);
        }
    }
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:<free port>` in front of the local stack
    /// (`AWS_ENDPOINT_URL`, as the other helpers read it).
    pub fn start() -> Result<Self> {
        let upstream = crate::aws_env()
            .into_iter()
            .find(|(k, _)| k == "AWS_ENDPOINT_URL")
            .map(|(_, v)| v)
            .context("AWS_ENDPOINT_URL")?;
        Self::with_upstream(&upstream)
    }

    /// Starts a proxy in front of `upstream` (`http://host:port`).
    pub fn with_upstream(upstream: &str) -> Result<Self> {
        let uri: Uri = upstream.parse().context("upstream URL")?;
        let host = uri.host().context("upstream host")?.to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let upstream: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(&(host, port))?
            .next()
            .context("upstream address")?;
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}", listener.local_addr()?);
        let state: Shared = Arc::default();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let served = state.clone();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("the fault proxy's runtime starts");
                rt.block_on(serve(listener, upstream, served, stopped));
            })?;
        Ok(Self {
            url,
            state,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The URL to give clients (`AWS_ENDPOINT_URL`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Adds a rule; rules are consulted in the order they were added.
    pub fn add(&self, rule: Rule) -> RuleHandle {
        let mut state = lock(&self.state);
        state.next_id += 1;
        let id = state.next_id;
        state.rules.push(ActiveRule {
            id,
            rule,
            added: Instant::now(),
            stats: RuleStats::default(),
        });
        RuleHandle {
            id,
            state: self.state.clone(),
        }
    }

    /// Removes every rule: from now on every call is forwarded.
    pub fn clear(&self) {
        let mut state = lock(&self.state);
        let rules = std::mem::take(&mut state.rules);
        for rule in rules {
            state.finished.insert(rule.id, rule.stats);
        }
    }

    /// Calls of `operation` seen so far (faulted or not).
    pub fn calls(&self, operation: &str) -> u64 {
        lock(&self.state).calls.get(operation).copied().unwrap_or(0)
    }

    /// Every call seen so far, by operation.
    pub fn all_calls(&self) -> BTreeMap<String, u64> {
        lock(&self.state).calls.clone()
    }

    /// Faults injected so far, by operation.
    pub fn injected(&self) -> BTreeMap<String, u64> {
        lock(&self.state).injected.clone()
    }

    /// Faults injected so far, in total.
    pub fn injected_total(&self) -> u64 {
        lock(&self.state).injected.values().sum()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    upstream: SocketAddr,
    state: Shared,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener =
        tokio::net::TcpListener::from_std(listener).expect("the fault proxy's listener registers");
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { handle(req, upstream, state).await }
            });
            // An error here is the connection closed on purpose (Reset, ResponseLost) or by
            // the client; either way there is nothing to do.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Why a call got no answer: a fault that closes the connection on purpose (returned as the
/// service's error, which makes hyper drop the connection without writing a response), or
/// a failure to reach moto.
#[derive(Debug)]
struct Dropped(String);

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Dropped {}

impl From<hyper::Error> for Dropped {
    fn from(e: hyper::Error) -> Self {
        Self(format!("upstream: {e}"))
    }
}

impl From<std::io::Error> for Dropped {
    fn from(e: std::io::Error) -> Self {
        Self(format!("upstream: {e}"))
    }
}

impl From<hyper::http::Error> for Dropped {
    fn from(e: hyper::http::Error) -> Self {
        Self(format!("request: {e}"))
    }
}

type ProxyResult = Result<Response<Full<Bytes>>, Dropped>;

async fn handle(req: Request<Incoming>, upstream: SocketAddr, state: Shared) -> ProxyResult {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let op = operation(&parts.method, &parts.uri, &parts.headers, &body);
    let fault = {
        let mut state = lock(&state);
        *state.calls.entry(op.name.clone()).or_default() += 1;
        let mut fault = None;
        for rule in state.rules.iter_mut() {
            if rule.rule.operation != op.name
                || !rule
                    .rule
                    .body_contains
                    .as_deref()
                    .is_none_or(|needle| contains(&body, needle.as_bytes()))
            {
                continue;
            }
            rule.stats.matched += 1;
            if fault.is_none() && rule.in_force() {
                rule.stats.injected += 1;
                fault = Some(rule.rule.fault.clone());
            }
        }
        if fault.is_some() {
            *state.injected.entry(op.name.clone()).or_default() += 1;
        }
        fault
    };
    match fault {
        None => forward(parts, body, upstream).await,
        Some(Fault::Latency(delay)) => {
            tokio::time::sleep(delay).await;
            forward(parts, body, upstream).await
        }
        Some(Fault::Reset) => Err(Dropped("reset by the fault proxy".into())),
        Some(Fault::ResponseLost) => {
            forward(parts, body, upstream).await?;
            Err(Dropped("response lost by the fault proxy".into()))
        }
        Some(fault) => Ok(error_response(&op, &fault)),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Sends the request to moto on a fresh connection and relays the whole answer.
async fn forward(
    parts: hyper::http::request::Parts,
    body: Bytes,
    upstream: SocketAddr,
) -> ProxyResult {
    let stream = tokio::net::TcpStream::connect(upstream).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let mut out = Request::builder()
        .method(parts.method.clone())
        .uri(path)
        .body(Full::new(body.clone()))?;
    copy_headers(&parts.headers, out.headers_mut());
    if parts.headers.contains_key(hyper::header::TRANSFER_ENCODING) {
        out.headers_mut().insert(
            hyper::header::CONTENT_LENGTH,
            HeaderValue::from(body.len() as u64),
        );
    }
    let answer = sender.send_request(out).await?;
    let (answer, answer_body) = answer.into_parts();
    let answer_body = answer_body.collect().await?.to_bytes();
    let mut response = Response::new(Full::new(answer_body));
    *response.status_mut() = answer.status;
    copy_headers(&answer.headers, response.headers_mut());
    Ok(response)
}

/// A request's operation and the protocol its errors are written in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// `service:Action`, e.g. `dynamodb:GetItem`.
    pub name: String,
    /// How errors of this call are written.
    pub protocol: Protocol,
}

/// How a service writes its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// S3's REST-XML `<Error><Code>..</Code></Error>`.
    RestXml,
    /// AWS JSON 1.0/1.1 (`__type`), with the `X-Amz-Target` prefix.
    Json,
    /// The query protocol's `<ErrorResponse>`.
    Query,
    /// Lambda and other REST-JSON services.
    RestJson,
}

/// The SigV4 credential scope's service (`.../<region>/<service>/aws4_request`).
fn signing_service(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    let scope = auth.split("Credential=").nth(1)?.split(',').next()?;
    scope.split('/').nth(3).map(str::to_owned)
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

/// Recognises a request's operation (see the module docs).
pub fn operation(method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Operation {
    let op = |name: String, protocol| Operation { name, protocol };
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        let (prefix, action) = target.split_once('.').unwrap_or(("unknown", target));
        let service = match prefix {
            p if p.starts_with("DynamoDB_") => "dynamodb".to_owned(),
            "AmazonSQS" => "sqs".to_owned(),
            "secretsmanager" => "secretsmanager".to_owned(),
            other => signing_service(headers).unwrap_or_else(|| other.to_lowercase()),
        };
        return op(format!("{service}:{action}"), Protocol::Json);
    }
    let service = signing_service(headers);
    let form = headers
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"));
    if form {
        let text = String::from_utf8_lossy(body);
        if let Some(action) = query_param(&text, "Action") {
            let service = service.unwrap_or_else(|| "sqs".to_owned());
            return op(format!("{service}:{action}"), Protocol::Query);
        }
    }
    let path = uri.path();
    if path.starts_with("/2015-03-31/") || service.as_deref() == Some("lambda") {
        let name = if path.starts_with("/2015-03-31/event-source-mappings") && method == Method::GET
        {
            "ListEventSourceMappings".to_owned()
        } else {
            method.as_str().to_owned()
        };
        return op(format!("lambda:{name}"), Protocol::RestJson);
    }
    if service.as_deref().is_none_or(|s| s == "s3") {
        let query = uri.query().unwrap_or("");
        let segments: Vec<&str> = path.trim_start_matches('/').splitn(2, '/').collect();
        let has_key = segments.len() == 2 && !segments[1].is_empty();
        let has_bucket = !segments[0].is_empty();
        let upload = query_param(query, "uploadId").is_some();
        let action = match (method.as_str(), has_bucket, has_key) {
            ("PUT", _, true) if upload => "UploadPart",
            ("POST", _, true) if query_param(query, "uploads").is_some() => "CreateMultipartUpload",
            ("POST", _, true) if upload => "CompleteMultipartUpload",
            ("DELETE", _, true) if upload => "AbortMultipartUpload",
            ("GET", true, false) if query_param(query, "uploads").is_some() => {
                "ListMultipartUploads"
            }
            ("PUT", _, true) if headers.contains_key("x-amz-copy-source") => "CopyObject",
            ("PUT", _, true) => "PutObject",
            ("PUT", true, false) => "CreateBucket",
            ("GET", _, true) => "GetObject",
            ("GET", true, false) if query_param(query, "list-type") == Some("2") => "ListObjectsV2",
            ("GET", true, false) => "ListObjects",
            ("GET", false, _) => "ListBuckets",
            ("HEAD", _, true) => "HeadObject",
            ("HEAD", true, false) => "HeadBucket",
            ("DELETE", _, true) => "DeleteObject",
            ("DELETE", true, false) => "DeleteBucket",
            ("POST", true, false) if query_param(query, "delete").is_some() => "DeleteObjects",
            (m, _, _) => m,
        };
        return op(format!("s3:{action}"), Protocol::RestXml);
    }
    op(
        format!("{}:{}", service.unwrap_or_default(), method.as_str()),
        Protocol::RestJson,
    )
}

fn header(name: &'static str, value: &str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_str(value).expect("header values written here are ASCII"),
    )
}

/// The error a service would send for `fault` (not `Reset`, `ResponseLost` or `Latency`).
fn error_response(op: &Operation, fault: &Fault) -> Response<Full<Bytes>> {
    let service = op.name.split(':').next().unwrap_or_default();
    let (status, code): (u16, String) = match fault {
        Fault::SlowDown if service == "s3" => (503, "SlowDown".into()),
        Fault::SlowDown => (503, "ServiceUnavailable".into()),
        Fault::InternalError if service == "dynamodb" => (500, "InternalServerError".into()),
        Fault::InternalError => (500, "InternalError".into()),
        Fault::Throttle => match service {
            "dynamodb" => (400, "ProvisionedThroughputExceededException".into()),
            "sqs" => (400, "RequestThrottled".into()),
            "s3" => (503, "SlowDown".into()),
            _ => (400, "ThrottlingException".into()),
        },
        Fault::TransactionCanceled(_) => (400, "TransactionCanceledException".into()),
        Fault::Error { status, code } => (*status, code.clone()),
        Fault::Reset | Fault::ResponseLost | Fault::Latency(_) => {
            unreachable!("{fault:?} is not an error answer")
        }
    };
    let message = format!("injected by the fault proxy: {code}");
    let sender = if status < 500 { "Sender" } else { "Receiver" };
    let mut headers = vec![header("x-amzn-requestid", "fault-proxy")];
    let body = match op.protocol {
        Protocol::RestXml => {
            headers.push(header("content-type", "application/xml"));
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
            )
        }
        Protocol::Query => {
            headers.push(header("content-type", "text/xml"));
            format!(
                "<?xml version=\"1.0\"?><ErrorResponse><Error><Type>{sender}</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>fault-proxy</RequestId></ErrorResponse>"
            )
        }
        Protocol::Json | Protocol::RestJson => {
            let namespace = match service {
                "dynamodb" => "com.amazonaws.dynamodb.v20120810#",
                "sqs" => "com.amazonaws.sqs#",
                _ => "",
            };
            let mut json = serde_json::json!({
                "__type": format!("{namespace}{code}"),
                "message": message,
            });
            if let Fault::TransactionCanceled(reasons) = fault {
                json = serde_json::json!({
                    "__type": format!("{namespace}{code}"),
                    "Message": format!(
                        "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
                        reasons.join(", ")
                    ),
                    "CancellationReasons": reasons
                        .iter()
                        .map(|c| if c == "None" {
                            serde_json::json!({"Code": "None"})
                        } else {
                            serde_json::json!({"Code": c, "Message": format!("injected: {c}")})
                        })
                        .collect::<Vec<_>>(),
                });
            }
            let content_type = match service {
                "dynamodb" | "sqs" => "application/x-amz-json-1.0",
                _ => "application/x-amz-json-1.1",
            };
            headers.push(header("content-type", content_type));
            headers.push(header("x-amzn-errortype", &code));
            if service == "sqs" {
                // SQS is awsQueryCompatible: clients take the code from this header.
                headers.push(header("x-amzn-query-error", &format!("{code};{sender}")));
            }
            json.to_string()
        }
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).expect("a valid status");
    response.headers_mut().extend(headers);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        map
    }

    fn name(method: Method, uri: &str, h: &[(&'static str, &str)], body: &str) -> String {
        operation(&method, &uri.parse().unwrap(), &headers(h), body.as_bytes()).name
    }

    const S3_AUTH: &str = "AWS4-HMAC-SHA256 Credential=testing/20250101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=x";

    #[test]
    fn recognises_operations() {
        let target = |t| name(Method::POST, "/", &[("x-amz-target", t)], "{}");
        assert_eq!(
            target("DynamoDB_20120810.TransactWriteItems"),
            "dynamodb:TransactWriteItems"
        );
        assert_eq!(target("AmazonSQS.SendMessage"), "sqs:SendMessage");
        assert_eq!(
            target("secretsmanager.GetSecretValue"),
            "secretsmanager:GetSecretValue"
        );
        assert_eq!(
            name(
                Method::POST,
                "/123456789012/dlq",
                &[("content-type", "application/x-www-form-urlencoded")],
                "Action=SendMessage&MessageBody=x&Version=2012-11-05"
            ),
            "sqs:SendMessage"
        );
        let s3 = |m, uri: &str| name(m, uri, &[("authorization", S3_AUTH)], "");
        assert_eq!(
            s3(Method::PUT, "/b/bronze/k.jsonl.gz?x-id=PutObject"),
            "s3:PutObject"
        );
        assert_eq!(
            s3(Method::GET, "/b/bronze/k.jsonl.gz?x-id=GetObject"),
            "s3:GetObject"
        );
        assert_eq!(
            s3(Method::DELETE, "/b/bronze/k.jsonl.gz"),
            "s3:DeleteObject"
        );
        assert_eq!(
            s3(Method::GET, "/b?list-type=2&prefix=bronze%2F"),
            "s3:ListObjectsV2"
        );
        assert_eq!(s3(Method::PUT, "/b"), "s3:CreateBucket");
        assert_eq!(
            name(
                Method::GET,
                "/2015-03-31/event-source-mappings/?FunctionName=f",
                &[],
                ""
            ),
            "lambda:ListEventSourceMappings"
        );
    }

    #[test]
    fn transaction_cancellation_has_dynamodbs_shape() {
        let op = Operation {
            name: "dynamodb:TransactWriteItems".into(),
            protocol: Protocol::Json,
        };
        let response = error_response(
            &op,
            &Fault::TransactionCanceled(vec!["TransactionConflict".into(), "None".into()]),
        );
        assert_eq!(response.status(), 400);
        let body = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(response.into_body().collect())
            .unwrap()
            .to_bytes();
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            json["__type"],
            "com.amazonaws.dynamodb.v20120810#TransactionCanceledException"
        );
        assert_eq!(
            json["CancellationReasons"][0]["Code"],
            "TransactionConflict"
        );
        assert_eq!(
            json["CancellationReasons"][1],
            serde_json::json!({"Code": "None"})
        );
    }
}
