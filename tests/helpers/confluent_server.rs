//! A small in-process HTTP server following the published Confluent Schema Registry REST API
//! (the subset the connector uses), for the `ConfluentRegistry` adapter's tests. It is not a
//! registry: it does not parse schemas or check compatibility (a real one cannot run here
//! without Kafka). It stores schemas in memory, assigns global ids (an identical schema gets
//! the same id under every subject, as Confluent does) and answers with the documented error
//! bodies `{"error_code": 40401, "message": "..."}`.
//!
//! Endpoints: `POST /subjects/{s}/versions`, `POST /subjects/{s}` (lookup),
//! `GET /subjects`, `GET /subjects/{s}/versions`, `GET /subjects/{s}/versions/{v|latest}`,
//! `GET /schemas/ids/{id}`, `GET /schemas/ids/{id}/versions`, `PUT /config/{s}`.
//!
//! Plain `std` threads and blocking sockets, one connection per request
//! (`Connection: close`), so it needs no HTTP crate.

use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// One request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// `GET`, `POST`, `PUT`.
    pub method: String,
    /// The raw (still percent-encoded) path.
    pub path: String,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

#[derive(Debug, Clone)]
struct Stored {
    schema: String,
    /// `None` for Avro (the API omits `schemaType` then).
    schema_type: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    /// Global id - 1 -> schema.
    schemas: Vec<Stored>,
    /// Subject -> ids of its versions, oldest first (version = index + 1).
    subjects: BTreeMap<String, Vec<u32>>,
    config: HashMap<String, String>,
    received: Vec<Received>,
    /// Canned one-shot answers: `(method, path)` to match (`None`: any request) and reply.
    canned: Vec<(Option<(String, String)>, Reply)>,
    delay_next: Option<Duration>,
    authorization: Option<String>,
}

/// The running server; stops when dropped.
#[derive(Debug)]
pub struct ConfluentServer {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

type Reply = (u16, Value);

fn error(status: u16, code: u32, message: impl Into<String>) -> Reply {
    (
        status,
        json!({ "error_code": code, "message": message.into() }),
    )
}

fn subject_not_found(subject: &str) -> Reply {
    error(404, 40401, format!("Subject '{subject}' not found."))
}

fn same_schema(a: &Stored, b: &Stored) -> bool {
    let normalized = |t: &Option<String>| t.clone().unwrap_or_else(|| "AVRO".to_owned());
    if normalized(&a.schema_type) != normalized(&b.schema_type) {
        return false;
    }
    match (
        serde_json::from_str::<Value>(&a.schema),
        serde_json::from_str::<Value>(&b.schema),
    ) {
        (Ok(x), Ok(y)) => x == y,
        _ => a.schema == b.schema,
    }
}

fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl State {
    fn schema_json(&self, id: u32) -> Value {
        let stored = &self.schemas[id as usize - 1];
        let mut body = json!({ "schema": stored.schema });
        if let Some(kind) = &stored.schema_type {
            body["schemaType"] = json!(kind);
        }
        body
    }

    fn version_json(&self, subject: &str, version: usize) -> Value {
        let id = self.subjects[subject][version - 1];
        let mut body = self.schema_json(id);
        body["subject"] = json!(subject);
        body["version"] = json!(version);
        body["id"] = json!(id);
        body
    }

    fn parse_schema(body: &[u8]) -> Result<Stored, Reply> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| error(400, 400, format!("Unrecognized request body: {e}")))?;
        let schema = value["schema"]
            .as_str()
            .ok_or_else(|| error(422, 42201, "Empty schema"))?
            .to_owned();
        let schema_type = match value.get("schemaType").and_then(Value::as_str) {
            None | Some("AVRO") => None,
            Some(kind @ ("JSON" | "PROTOBUF")) => Some(kind.to_owned()),
            Some(other) => return Err(error(422, 42201, format!("Invalid schema type {other}"))),
        };
        Ok(Stored {
            schema,
            schema_type,
        })
    }

    fn route(&mut self, method: &str, segments: &[String], body: &[u8]) -> Reply {
        let segs: Vec<&str> = segments.iter().map(String::as_str).collect();
        match (method, segs.as_slice()) {
            ("GET", ["subjects"]) => (200, json!(self.subjects.keys().collect::<Vec<_>>())),
            ("POST", ["subjects", subject, "versions"]) => {
                let stored = match Self::parse_schema(body) {
                    Ok(stored) => stored,
                    Err(reply) => return reply,
                };
                let versions = self.subjects.get(*subject).cloned().unwrap_or_default();
                if let Some(id) = versions
                    .iter()
                    .find(|id| same_schema(&self.schemas[**id as usize - 1], &stored))
                {
                    return (200, json!({ "id": id }));
                }
                let id = match self.schemas.iter().position(|s| same_schema(s, &stored)) {
                    Some(index) => index as u32 + 1,
                    None => {
                        self.schemas.push(stored);
                        self.schemas.len() as u32
                    }
                };
                self.subjects
                    .entry((*subject).to_owned())
                    .or_default()
                    .push(id);
                (200, json!({ "id": id }))
            }
            ("POST", ["subjects", subject]) => {
                let stored = match Self::parse_schema(body) {
                    Ok(stored) => stored,
                    Err(reply) => return reply,
                };
                let Some(versions) = self.subjects.get(*subject) else {
                    return subject_not_found(subject);
                };
                match versions
                    .iter()
                    .position(|id| same_schema(&self.schemas[*id as usize - 1], &stored))
                {
                    Some(index) => (200, self.version_json(subject, index + 1)),
                    None => error(404, 40403, "Schema not found"),
                }
            }
            ("GET", ["subjects", subject, "versions"]) => match self.subjects.get(*subject) {
                Some(versions) => (200, json!((1..=versions.len()).collect::<Vec<_>>())),
                None => subject_not_found(subject),
            },
            ("GET", ["subjects", subject, "versions", version]) => {
                let Some(versions) = self.subjects.get(*subject) else {
                    return subject_not_found(subject);
                };
                let number = match *version {
                    "latest" | "-1" => Some(versions.len()),
                    v => v.parse::<usize>().ok(),
                };
                match number {
                    Some(n) if (1..=versions.len()).contains(&n) => {
                        (200, self.version_json(subject, n))
                    }
                    Some(_) => error(404, 40402, format!("Version {version} not found.")),
                    None => error(
                        422,
                        42202,
                        format!("The specified version '{version}' is not a valid version id."),
                    ),
                }
            }
            ("GET", ["schemas", "ids", id]) => match id.parse::<u32>() {
                Ok(id) if id >= 1 && (id as usize) <= self.schemas.len() => {
                    (200, self.schema_json(id))
                }
                _ => error(404, 40403, "Schema not found"),
            },
            ("GET", ["schemas", "ids", id, "versions"]) => match id.parse::<u32>() {
                Ok(id) if id >= 1 && (id as usize) <= self.schemas.len() => {
                    let list: Vec<Value> =
                        self.subjects
                            .iter()
                            .flat_map(|(subject, ids)| {
                                ids.iter().enumerate().filter(move |(_, v)| **v == id).map(
                                    move |(i, _)| json!({ "subject": subject, "version": i + 1 }),
                                )
                            })
                            .collect();
                    (200, json!(list))
                }
                _ => error(404, 40403, "Schema not found"),
            },
            ("PUT", ["config", subject]) => {
                let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                let Some(mode) = value["compatibility"].as_str() else {
                    return error(422, 42203, "Invalid compatibility level");
                };
                self.config.insert((*subject).to_owned(), mode.to_owned());
                (200, json!({ "compatibility": mode }))
            }
            _ => error(404, 404, "HTTP 404 Not Found"),
        }
    }
}

fn handle(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let path = target.split('?').next().unwrap_or_default().to_owned();

    let (delay, reply) = {
        let mut state = state.lock().expect("server state");
        state.received.push(Received {
            method: method.clone(),
            path: path.clone(),
            content_type: headers.get("content-type").cloned(),
            authorization: headers.get("authorization").cloned(),
        });
        let delay = state.delay_next.take();
        let canned = state.canned.iter().position(|(matcher, _)| {
            matcher
                .as_ref()
                .is_none_or(|(m, p)| *m == method && *p == path)
        });
        let reply = if let Some(index) = canned {
            state.canned.remove(index).1
        } else if state.authorization.is_some()
            && state.authorization.as_ref() != headers.get("authorization")
        {
            error(401, 40101, "Unauthorized")
        } else {
            let segments: Vec<String> = path
                .trim_start_matches('/')
                .split('/')
                .filter(|s| !s.is_empty())
                .map(percent_decode)
                .collect();
            state.route(&method, &segments, &body)
        };
        (delay, reply)
    };
    if let Some(delay) = delay {
        std::thread::sleep(delay);
    }
    let (status, value) = reply;
    let payload = serde_json::to_vec(&value).expect("JSON");
    let mut out = stream;
    write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        if status < 400 { "OK" } else { "Error" },
        payload.len()
    )?;
    out.write_all(&payload)?;
    out.flush()
}

impl ConfluentServer {
    /// Starts the server on `127.0.0.1:0`.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let state = Arc::clone(&state);
                    std::thread::spawn(move || {
                        let _ = handle(stream, &state);
                    });
                }
            })
        };
        Self {
            addr,
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("server state")
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state().received.clone()
    }

    /// The next request is answered with `status` and `body`, whatever it asks (one-shot,
    /// queued in order).
    pub fn reply_next(&self, status: u16, body: Value) {
        self.state().canned.push((None, (status, body)));
    }

    /// The next `method` request to exactly `path` (percent-encoded as sent) is answered with
    /// `status` and `body` (one-shot).
    pub fn reply_once(&self, method: &str, path: &str, status: u16, body: Value) {
        let matcher = Some((method.to_owned(), path.to_owned()));
        self.state().canned.push((matcher, (status, body)));
    }

    /// The next request is answered only after `delay` (to provoke client timeouts).
    pub fn delay_next(&self, delay: Duration) {
        self.state().delay_next = Some(delay);
    }

    /// From now on requests without this exact `Authorization` header get 401.
    pub fn require_authorization(&self, header: &str) {
        self.state().authorization = Some(header.to_owned());
    }

    /// The compatibility last set for `subject` with `PUT /config/{subject}`.
    pub fn compatibility(&self, subject: &str) -> Option<String> {
        self.state().config.get(subject).cloned()
    }

    /// The number of versions stored under `subject`.
    pub fn version_count(&self, subject: &str) -> usize {
        self.state().subjects.get(subject).map_or(0, Vec::len)
    }
}

impl Drop for ConfluentServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept so the thread sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
