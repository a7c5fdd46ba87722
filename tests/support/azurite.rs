//! A real Azure Blob Storage emulator (Azurite, npm `azurite`, blob service only) for the
//! tests of one test binary: a free port on 127.0.0.1, its data in a temp folder, and
//! `--skipApiVersionCheck` (the SDK speaks a newer service version than Azurite knows). A
//! watchdog shell stops it and deletes its folder when the test process exits, however it
//! exits. Each test gets its own container.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Azurite's well-known development account.
pub const ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development account key (public, documented by Azurite).
pub const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub struct Azurite {
    pub port: u16,
    pub dir: PathBuf,
}

static SERVER: OnceLock<Azurite> = OnceLock::new();
static NEXT_CONTAINER: AtomicU32 = AtomicU32::new(0);

/// The `azurite-blob` program: `AZURITE_BLOB`, else on PATH (scripts/test installs it).
fn program() -> String {
    if let Ok(path) = std::env::var("AZURITE_BLOB") {
        return path;
    }
    let out = Command::new("sh")
        .args(["-c", "command -v azurite-blob"])
        .output()
        .expect("sh runs");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !path.is_empty(),
        "azurite-blob not found; run scripts/test to install Azurite (npm install -g azurite)"
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn start() -> Azurite {
    let dir = tempfile::Builder::new()
        .prefix("cutover-azurite-")
        .tempdir()
        .unwrap()
        .keep();
    let port = free_port();
    let server = [
        program(),
        "--blobHost".into(),
        "127.0.0.1".into(),
        "--blobPort".into(),
        port.to_string(),
        "--location".into(),
        dir.join("data").display().to_string(),
        "--skipApiVersionCheck".into(),
        "--disableTelemetry".into(),
        "--silent".into(),
    ]
    .iter()
    .map(|a| quote(a))
    .collect::<Vec<_>>()
    .join(" ");
    // The watchdog: runs Azurite, stops it when the test process is gone.
    let watchdog = format!(
        "{server} >{log} 2>&1 & az=$!; while kill -0 {parent} 2>/dev/null && kill -0 $az 2>/dev/null; do sleep 0.2; done; kill $az 2>/dev/null; wait $az; rm -rf {dir}",
        log = quote(&dir.join("azurite.log").display().to_string()),
        parent = std::process::id(),
        dir = quote(&dir.display().to_string()),
    );
    // Not waited on: the watchdog outlives this function and ends with the process.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .args(["-c", &watchdog])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the Azurite watchdog");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "Azurite did not start: {}",
            std::fs::read_to_string(dir.join("azurite.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Azurite { port, dir }
}

/// A container name no other test uses (created by the first run that needs it).
pub fn container() -> String {
    format!(
        "t{}-{}",
        std::process::id(),
        NEXT_CONTAINER.fetch_add(1, Ordering::SeqCst)
    )
}

pub fn server() -> &'static Azurite {
    SERVER.get_or_init(start)
}

impl Azurite {
    /// The path-style blob service URL of the development account.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/{ACCOUNT}", self.port)
    }

    /// A `backups:` section for `container`, signed with the account key.
    pub fn backups(&self, container: &str, extra: &str) -> String {
        format!(
            "{{ kind: azure-blob, account: \"{}\", container: {container}, key: \"{KEY}\"{extra} }}",
            self.url()
        )
    }
}
