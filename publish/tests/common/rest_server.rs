//! The test REST catalog (`tests/rest_catalog_server.py`, pyiceberg's `SqlCatalog` behind the
//! Iceberg REST API), run for one test: started on a free 127.0.0.1 port, stopped on drop.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// A running REST catalog.
#[derive(Debug)]
pub struct RestServer {
    child: Child,
    /// `http://127.0.0.1:<port>`, as `--catalog rest:<uri>` takes it.
    pub uri: String,
    /// The bearer token every request must carry.
    pub token: String,
}

impl RestServer {
    /// Starts the server with its tables in the SQLite file `db` (catalog `bronze`) under
    /// `warehouse`; its request log goes to `<db>.log`. A missing Python or pyiceberg is a
    /// failure that says so.
    pub fn start(db: &Path, warehouse: &str) -> Self {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let log_path = db.with_extension("log");
        let log = std::fs::File::create(&log_path).expect("the REST catalog's log");
        let mut child = Command::new(super::python())
            .arg(super::workspace().join("publish/tests/rest_catalog_server.py"))
            .arg(db)
            .arg(warehouse)
            .args(["--token", &token])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start publish/tests/rest_catalog_server.py (run `make venv`)");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("the server's stdout");
        // Blocks until the server has bound its port (or exited).
        let _ = BufReader::new(stdout).read_line(&mut line);
        let port: u16 = line
            .strip_prefix("port ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the REST catalog did not start (pyiceberg is in requirements-dev.txt: `make venv`): {}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                )
            });
        Self {
            child,
            uri: format!("http://127.0.0.1:{port}"),
            token,
        }
    }
}

impl Drop for RestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
