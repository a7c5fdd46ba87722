//! Start-up shared by the real servers the tests run (PostgreSQL, MariaDB, Azurite): a
//! temp folder and a free port on 127.0.0.1, the server under a watchdog shell that stops
//! it and deletes its folder when the test process exits (however it exits), and a wait
//! until a real check says it is ready. One server per test binary; names that no other
//! test of the binary uses.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static NEXT_NAME: AtomicU32 = AtomicU32::new(0);

/// A folder for a server's data that outlives the call (the watchdog deletes it).
pub fn temp_dir(prefix: &str) -> PathBuf {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .unwrap()
        .keep()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `s` as one single-quoted shell word.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Runs the shell line `server` (the server in the foreground, its output to
/// `dir/server.log`) under a watchdog that, once the test process or the server is gone,
/// runs `stop` (a shell line; `$server` is the server's pid), waits for the server and
/// deletes `dir`.
pub fn spawn_watched(what: &str, dir: &Path, server: &str, stop: &str) {
    let watchdog = format!(
        "{server} >{log} 2>&1 & server=$!; while kill -0 {parent} 2>/dev/null && kill -0 $server 2>/dev/null; do sleep 0.2; done; {stop}; wait $server; rm -rf {dir}",
        log = quote(&dir.join("server.log").display().to_string()),
        parent = std::process::id(),
        dir = quote(&dir.display().to_string()),
    );
    // Not waited on: the watchdog outlives this function and ends with the process.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .args(["-c", &watchdog])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start the {what} watchdog: {e}"));
}

/// Polls `ready` until it holds; fails with the server's log after a minute.
pub fn wait_ready(what: &str, dir: &Path, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start: {}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A database or container name no other test of this binary uses: `t<pid><sep><n>`.
pub fn unique_name(sep: char) -> String {
    format!(
        "t{}{sep}{}",
        std::process::id(),
        NEXT_NAME.fetch_add(1, Ordering::SeqCst)
    )
}
