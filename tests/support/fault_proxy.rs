//! A small fault-injecting TCP proxy (std threads) to put between `cutover` and a server
//! (PostgreSQL, an HTTP endpoint): it passes bytes through, or drops connections after a
//! number of bytes, adds latency to every chunk, or refuses connections. The mode can be
//! changed while traffic flows, and every open connection can be cut at once when the test
//! sees the moment it wants (a backup streaming, a migration running).
//!
//! Also here: [`pg_fingerprint`], a cheap comparison of PostgreSQL databases that may hold
//! a big table (the fault and crash suites make dumps and migrations take a moment).

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the proxy does to the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Bytes pass through untouched.
    Pass,
    /// A connection is cut once this many bytes (both directions) went through it.
    DropAfter(u64),
    /// Like `DropAfter`, for the first connection that reaches the limit; then `Pass`.
    DropOnceAfter(u64),
    /// Every chunk waits this long before it is forwarded.
    Latency(Duration),
    /// New connections are closed as soon as they are accepted.
    Refuse,
}

struct Shared {
    upstream: SocketAddr,
    mode: Mutex<Mode>,
    open: Mutex<HashMap<usize, (TcpStream, TcpStream)>>,
    accepted: AtomicUsize,
    refused: AtomicUsize,
    cut: AtomicUsize,
    bytes: AtomicU64,
}

/// A proxy listening on 127.0.0.1 and forwarding to `upstream`.
pub struct FaultProxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FaultProxy {
    pub fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream,
            mode: Mutex::new(Mode::Pass),
            open: Mutex::new(HashMap::new()),
            accepted: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            cut: AtomicUsize::new(0),
            bytes: AtomicU64::new(0),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for (id, client) in listener.incoming().enumerate() {
                let Ok(client) = client else { continue };
                s.accepted.fetch_add(1, Ordering::SeqCst);
                if s.mode() == Mode::Refuse {
                    s.refused.fetch_add(1, Ordering::SeqCst);
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(s.upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                s.open.lock().unwrap().insert(
                    id,
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                );
                let counted = Arc::new(AtomicU64::new(0));
                for (from, to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    let (s, counted) = (s.clone(), counted.clone());
                    std::thread::spawn(move || pump(&s, id, from, to, &counted));
                }
            }
        });
        Self { addr, shared }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn set(&self, mode: Mode) {
        *self.shared.mode.lock().unwrap() = mode;
    }

    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// Cuts every open connection now; returns how many there were.
    pub fn cut_all(&self) -> usize {
        let open: Vec<_> = self.shared.open.lock().unwrap().drain().collect();
        for (_, (a, b)) in &open {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
        self.shared.cut.fetch_add(open.len(), Ordering::SeqCst);
        open.len()
    }

    /// Connections accepted so far (refused ones included).
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections refused so far.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Connections the proxy cut (by `DropAfter` or `cut_all`).
    pub fn cut(&self) -> usize {
        self.shared.cut.load(Ordering::SeqCst)
    }

    /// Bytes forwarded so far, both directions.
    pub fn bytes(&self) -> u64 {
        self.shared.bytes.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.shared.open.lock().unwrap().len()
    }

    /// The local ports of the proxy's open connections to the upstream server: what the
    /// server sees as their client ports (PostgreSQL's `pg_stat_activity.client_port`).
    pub fn upstream_ports(&self) -> Vec<u16> {
        self.shared
            .open
            .lock()
            .unwrap()
            .values()
            .filter_map(|(_, server)| Some(server.local_addr().ok()?.port()))
            .collect()
    }
}

impl Shared {
    fn mode(&self) -> Mode {
        *self.mode.lock().unwrap()
    }

    /// Closes one connection (both of its sockets) if it is still open; true if it was.
    fn close(&self, id: usize) -> bool {
        match self.open.lock().unwrap().remove(&id) {
            Some((a, b)) => {
                let _ = a.shutdown(Shutdown::Both);
                let _ = b.shutdown(Shutdown::Both);
                true
            }
            None => false,
        }
    }
}

/// Copies one direction of a connection, applying the mode to every chunk.
fn pump(s: &Shared, id: usize, mut from: TcpStream, mut to: TcpStream, counted: &AtomicU64) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut chunk = &buf[..n];
        let mut cut_here = false;
        match s.mode() {
            Mode::Pass | Mode::Refuse => {}
            Mode::Latency(d) => std::thread::sleep(d),
            Mode::DropAfter(limit) | Mode::DropOnceAfter(limit) => {
                let so_far = counted.load(Ordering::SeqCst);
                if so_far + n as u64 >= limit {
                    chunk = &chunk[..limit.saturating_sub(so_far).min(n as u64) as usize];
                    cut_here = true;
                }
            }
        }
        counted.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        s.bytes.fetch_add(chunk.len() as u64, Ordering::SeqCst);
        if to.write_all(chunk).is_err() {
            break;
        }
        if cut_here {
            let mut mode = s.mode.lock().unwrap();
            if let Mode::DropOnceAfter(_) = *mode {
                *mode = Mode::Pass;
            }
            drop(mode);
            if s.close(id) {
                s.cut.fetch_add(1, Ordering::SeqCst);
            }
            return;
        }
    }
    s.close(id);
}

/// A PostgreSQL database compared cheaply: its schema (from `pg_dump --schema-only`) and,
/// per table, every row when there are at most 1000, else the row count and an md5 of all
/// rows in order. The migration history leaves out install and execution times.
pub fn pg_fingerprint(database: &str) -> BTreeMap<String, Vec<String>> {
    let server = super::pg::server();
    let mut out = BTreeMap::new();
    let dump = std::process::Command::new("pg_dump")
        .args(["--schema-only", "--no-owner", "--no-acl"])
        .arg(server.url(database))
        .output()
        .expect("pg_dump runs");
    assert!(
        dump.status.success(),
        "pg_dump failed: {}",
        String::from_utf8_lossy(&dump.stderr)
    );
    out.insert(
        "schema".to_owned(),
        String::from_utf8_lossy(&dump.stdout)
            .lines()
            .filter(|l| {
                !l.starts_with("--")
                    && !l.trim().is_empty()
                    && !l.starts_with("\\restrict")
                    && !l.starts_with("\\unrestrict")
            })
            .map(str::to_owned)
            .collect(),
    );
    let tables = server.psql(
        database,
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    );
    let mut parts = Vec::new();
    for table in tables.lines().filter(|t| !t.is_empty()) {
        let rows = if table == "_sqlx_migrations" {
            "SELECT version::text || ' ' || description || ' ' || success::text || ' ' || encode(checksum, 'hex') AS r FROM _sqlx_migrations".to_owned()
        } else {
            format!("SELECT t::text AS r FROM \"{table}\" t")
        };
        parts.push(format!(
            "SELECT '{table}' AS t, CASE WHEN count(*) <= 1000 THEN string_agg(r, E'\\n' ORDER BY r) ELSE count(*)::text || ' rows, md5 ' || md5(string_agg(r, E'\\n' ORDER BY r)) END FROM ({rows}) x"
        ));
    }
    if parts.is_empty() {
        return out;
    }
    let sql = format!(
        "SELECT json_object_agg(t, v)::text FROM ({}) y(t, v)",
        parts.join(" UNION ALL ")
    );
    let json: serde_json::Value = serde_json::from_str(server.psql(database, &sql).trim()).unwrap();
    for (table, rows) in json.as_object().unwrap() {
        out.insert(
            format!("table {table}"),
            rows.as_str()
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect(),
        );
    }
    out
}
