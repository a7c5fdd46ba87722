//! A real Azure Blob Storage emulator (Azurite, npm `azurite`, blob service only) for the
//! tests of one test binary: a free port on 127.0.0.1, its data in a temp folder, and
//! `--skipApiVersionCheck` (the SDK speaks a newer service version than Azurite knows). A
//! watchdog shell stops it and deletes its folder when the test process exits, however it
//! exits. Each test gets its own container.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use cutover::adapters::azure_storage::{Account, Auth, Container};
use cutover::secret::Secret;
use futures::TryStreamExt;

use super::server::{free_port, quote, spawn_watched, temp_dir, unique_name, wait_ready};

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

fn start() -> Azurite {
    let dir = temp_dir("cutover-azurite-");
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
    spawn_watched("Azurite", &dir, &server, "kill $server 2>/dev/null");
    wait_ready("Azurite", &dir, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Azurite { port, dir }
}

/// A container name no other test uses (created by the first run that needs it).
pub fn container() -> String {
    unique_name('-')
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

/// A client for `name` in Azurite, for a test's own look at the blobs.
pub fn client(name: &str) -> Container {
    let account = Account::parse(&server().url()).unwrap();
    Container::connect(account, name, Auth::Key(Secret::new(KEY))).unwrap()
}

/// Every committed blob in the container, by name.
pub fn blobs(name: &str) -> Vec<String> {
    super::rt().block_on(async {
        let c = client(name);
        let mut pager = c.client.list_blobs(None).unwrap();
        let mut names = Vec::new();
        while let Some(item) = pager.try_next().await.unwrap_or(None) {
            names.push(item.name.unwrap_or_default());
        }
        names.sort();
        names
    })
}

/// A blob's bytes.
pub fn download(container: &str, blob: &str) -> Vec<u8> {
    super::rt().block_on(async {
        client(container)
            .client
            .blob_client(blob)
            .download(None)
            .await
            .unwrap()
            .body
            .collect()
            .await
            .unwrap()
            .to_vec()
    })
}
