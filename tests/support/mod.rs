//! Test harness: a throwaway project folder with the shipped migrations, validations and
//! pipelines, a `command` platform whose state lives in files, a real local HTTP health
//! server, and helpers to run the real `cutover` binary and read the real state back.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod azure_fake;
pub mod azurite;
pub mod backend;
pub mod fault_proxy;
pub mod heroku_fake;
pub mod http;
pub mod mysql;
pub mod pg;
pub mod server;
pub mod webhook;

pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A local HTTP server answering every request with a status the test controls.
pub struct HealthServer {
    pub url: String,
    status: Arc<AtomicU16>,
    hits: Arc<AtomicUsize>,
}

impl HealthServer {
    pub fn start(status: u16) -> Self {
        let status = Arc::new(AtomicU16::new(status));
        let s = status.clone();
        Self::serve(status, move |_| s.load(Ordering::SeqCst))
    }

    /// A server whose status for the n-th request (from 0) is `script(n)`.
    pub fn scripted(script: impl Fn(usize) -> u16 + Send + 'static) -> Self {
        Self::serve(Arc::new(AtomicU16::new(0)), script)
    }

    fn serve(status: Arc<AtomicU16>, script: impl Fn(usize) -> u16 + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind health server");
        let url = format!("http://{}/health", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let code = script(h.fetch_add(1, Ordering::SeqCst));
                let body = if code == 200 { "ok" } else { "unhealthy" };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { url, status, hits }
    }

    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A project folder with a `local` environment.
pub struct Project {
    pub dir: tempfile::TempDir,
    pub health: HealthServer,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

impl Project {
    /// The shipped migrations, validations and pipelines, and a platform with
    /// maintenance off and 3 job replicas.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        for sub in ["migrations", "validations", "pipelines"] {
            copy_dir(&Path::new(ROOT).join(sub), &dir.path().join(sub));
        }
        // The database's folder exists, as it does where a database is deployed to; a
        // missing folder is a typo cutover refuses (tests/first_minutes.rs).
        std::fs::create_dir(dir.path().join("state")).unwrap();
        let health = HealthServer::start(200);
        let project = Self { dir, health };
        project.write_config(&project.default_config());
        project.set_platform(false, 3);
        project
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, rel: &str) -> PathBuf {
        self.path().join(rel)
    }

    pub fn write(&self, rel: &str, text: &str) {
        let path = self.file(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.file(rel)).unwrap_or_default()
    }

    pub fn default_config(&self) -> String {
        config(&self.health.url)
    }

    /// Turns off the rehearsal on a copy for the `local` environment (the last one in the
    /// config): for tests of what the real run does when a migration or check fails,
    /// which the rehearsal would otherwise catch before the run starts. The default config
    /// has it off already (the tests of the run are about the run; `tests/rehearsal.rs`
    /// and the CI output snapshots turn it on with [`Project::with_rehearsal`]).
    pub fn without_rehearsal(&self) {
        let config = self.read("deploy.yaml");
        if !config.contains("    rehearse: off\n") {
            self.write_config(&format!("{}\n    rehearse: off\n", config.trim_end()));
        }
    }

    /// The product's default: rehearse on a copy before each deploy.
    pub fn with_rehearsal(&self) {
        let config = self.read("deploy.yaml");
        self.write_config(&config.replace("    rehearse: off\n", ""));
    }

    pub fn write_config(&self, text: &str) {
        self.write("deploy.yaml", text);
    }

    pub fn set_platform(&self, maintenance: bool, jobs: u32) {
        self.write(
            "platform/maintenance",
            &format!("maintenance={maintenance}\n"),
        );
        self.write("platform/jobs", &format!("jobs={jobs}\n"));
    }

    /// The platform state as its files say.
    pub fn platform(&self) -> String {
        format!(
            "{}{}",
            self.read("platform/maintenance"),
            self.read("platform/jobs")
        )
    }

    /// The platform commands called so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.read("calls.log").lines().map(str::to_owned).collect()
    }

    pub fn cmd(&self) -> Command {
        command_in(self.path())
    }

    /// Runs `cutover ARGS` in the project and returns its output.
    pub fn run(&self, args: &[&str]) -> Run {
        Run(self.cmd().args(args).output().expect("cutover runs"))
    }

    /// Every table's schema and rows, in a stable order: equal snapshots mean equal
    /// databases as far as the application can tell.
    pub fn db_snapshot(&self) -> BTreeMap<String, Vec<String>> {
        db_snapshot(&self.file("state/app.db"))
    }

    /// Lock files present.
    pub fn locks(&self) -> Vec<String> {
        match std::fs::read_dir(self.file(".cutover/locks")) {
            Ok(entries) => entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Journal records of every run, oldest first, as JSON values.
    pub fn journals(&self) -> Vec<Vec<serde_json::Value>> {
        let dir = self.file(".cutover/journal");
        let mut paths: Vec<_> = match std::fs::read_dir(&dir) {
            Ok(e) => e.map(|e| e.unwrap().path()).collect(),
            Err(_) => return Vec::new(),
        };
        paths.sort();
        paths
            .iter()
            .map(|p| {
                std::fs::read_to_string(p)
                    .unwrap()
                    .lines()
                    .filter_map(|l| serde_json::from_str(l).ok())
                    .collect()
            })
            .collect()
    }

    /// Deploys the shipped pipeline once, so the database is at the latest version with
    /// some data in it.
    pub fn deployed_with_data(&self) -> &Self {
        self.run(&["deploy"]).success();
        let sql = "INSERT INTO users (id, email, display_name) VALUES (1, 'a@example.com', 'A'), (2, 'b@example.com', 'B');
                   INSERT INTO recipes (id, user_id, title, servings, calories) VALUES (1, 1, 'Soup', 2, 300), (2, 2, 'Salad', 1, NULL);";
        exec_sql(&self.file("state/app.db"), sql);
        self
    }
}

/// The config of a project with a `local` environment whose health endpoint is
/// `health_url`: a SQLite database and local backups in `state/`, a `command` platform
/// whose state lives in `platform/` and whose calls go to `calls.log`, no rehearsal.
pub fn config(health_url: &str) -> String {
    format!(
        r#"version: 1
project: testapp
pipeline: pipelines/deploy.yaml
migrations: migrations
environments:
  local:
    database: {{ kind: sqlite, url: "sqlite://state/app.db" }}
    backups: {{ kind: local, path: state/backups }}
    platform:
      kind: command
      status: "cat platform/*"
      maintenance_on: "echo maintenance=true > platform/maintenance; echo maintenance_on >> calls.log"
      maintenance_off: "echo maintenance=false > platform/maintenance; echo maintenance_off >> calls.log"
      scale: "echo {{target}}={{replicas}} > platform/{{target}}; echo scale_{{target}}_{{replicas}} >> calls.log"
      restart: "echo restart >> calls.log"
    health: {{ url: "{health_url}", timeout: 5s, healthy_for: 0s }}
    rehearse: off
"#
    )
}

/// The shipped platform commands, as [`config`] writes them.
pub const MAINTENANCE_ON: &str =
    "\"echo maintenance=true > platform/maintenance; echo maintenance_on >> calls.log\"";
pub const MAINTENANCE_OFF: &str =
    "\"echo maintenance=false > platform/maintenance; echo maintenance_off >> calls.log\"";
pub const SCALE: &str =
    "\"echo {target}={replicas} > platform/{target}; echo scale_{target}_{replicas} >> calls.log\"";

/// A runtime for a test's own async calls.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs SQL against a SQLite file with sqlx (no CLI tool needed).
pub fn exec_sql(path: &Path, sql: &str) {
    rt().block_on(async {
        use sqlx::Connection;
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
        let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        sqlx::Executor::execute(&mut conn, sql).await.unwrap();
        conn.close().await.unwrap();
    });
}

pub fn db_snapshot(path: &Path) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    if !path.exists() {
        return out;
    }
    rt().block_on(async {
        use sqlx::{Column, Connection, Row, ValueRef};
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(path).read_only(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        let objects = sqlx::query("SELECT type, name, COALESCE(sql, '') FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        for o in &objects {
            let (kind, name, sql): (String, String, String) = (o.get(0), o.get(1), o.get(2));
            let mut rows = vec![format!("{kind}: {sql}")];
            if kind == "table" {
                let data = sqlx::query(&format!("SELECT * FROM \"{name}\" ORDER BY 1"))
                    .fetch_all(&mut conn)
                    .await
                    .unwrap();
                for row in data {
                    let cells: Vec<String> = (0..row.columns().len())
                        .map(|i| {
                            let raw = row.try_get_raw(i).unwrap();
                            if raw.is_null() {
                                return "NULL".to_owned();
                            }
                            // The install time of a migration differs between runs of the same
                            // migration; compare everything else.
                            if name == "_sqlx_migrations" && row.columns()[i].name() == "installed_on" {
                                return "<time>".to_owned();
                            }
                            if name == "_sqlx_migrations" && row.columns()[i].name() == "execution_time" {
                                return "<elapsed>".to_owned();
                            }
                            row.try_get::<String, _>(i)
                                .or_else(|_| row.try_get::<i64, _>(i).map(|v| v.to_string()))
                                .or_else(|_| row.try_get::<f64, _>(i).map(|v| v.to_string()))
                                .or_else(|_| row.try_get::<Vec<u8>, _>(i).map(|v| format!("{v:02x?}")))
                                .unwrap_or_else(|_| "?".into())
                        })
                        .collect();
                    rows.push(cells.join(" | "));
                }
            }
            out.insert(format!("{kind} {name}"), rows);
        }
        conn.close().await.unwrap();
    });
    out
}

/// A finished command.
/// `cutover` run in `dir`, away from the settings of the shell running the tests.
pub fn command_in(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cutover"));
    cmd.current_dir(dir)
        .env_remove("CUTOVER_ENV")
        .env_remove("CUTOVER_CONFIG")
        .env_remove("CUTOVER_OUTPUT")
        .env_remove("CUTOVER_REPORT")
        .env_remove("CUTOVER_TEST_CRASH_AFTER_RECORD")
        .env_remove("GITHUB_ACTIONS")
        .env_remove("TF_BUILD")
        .env("NO_COLOR", "1")
        .env("CI", "1")
        .stdin(std::process::Stdio::null());
    cmd
}

pub struct Run(pub Output);

impl Run {
    pub fn code(&self) -> i32 {
        self.0.status.code().unwrap_or(-1)
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.0.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.0.stderr).into_owned()
    }

    pub fn all(&self) -> String {
        format!("{}{}", self.stdout(), self.stderr())
    }

    #[track_caller]
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code(),
            code,
            "expected exit {code}, got {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code(),
            self.stdout(),
            self.stderr()
        );
        self
    }

    #[track_caller]
    pub fn success(&self) -> &Self {
        self.expect_code(0)
    }
}

// ---- Helpers for the rollback, crash and concurrency tests. ----

/// Everything a deploy may change, read back from the real state: every table and row,
/// the platform's files and the lock folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    pub db: BTreeMap<String, Vec<String>>,
    pub platform: String,
    pub locks: Vec<String>,
}

impl Project {
    /// Adds a migration to the project's migrations folder (`down: None`: no down file).
    pub fn add_migration(&self, name: &str, up: &str, down: Option<&str>) {
        self.write(&format!("migrations/{name}.up.sql"), up);
        if let Some(down) = down {
            self.write(&format!("migrations/{name}.down.sql"), down);
        }
    }

    /// The shipped pipeline as this project has it.
    pub fn pipeline(&self) -> String {
        self.read("pipelines/deploy.yaml")
    }

    /// Replaces the project's `pipelines/deploy.yaml`.
    pub fn write_pipeline(&self, text: &str) {
        self.write("pipelines/deploy.yaml", text);
    }

    /// Database, platform and locks as they are now.
    pub fn state(&self) -> State {
        let mut locks = self.locks();
        locks.sort();
        State {
            db: self.db_snapshot(),
            platform: self.platform(),
            locks,
        }
    }

    /// The lock file of the `local` environment.
    pub fn lock_file(&self) -> PathBuf {
        self.file(".cutover/locks/local.lock.json")
    }

    /// Replaces one piece of the project's pipeline.
    pub fn edit_pipeline(&self, from: &str, to: &str) {
        let text = replace_once(&self.pipeline(), from, to);
        self.write_pipeline(&text);
    }

    /// Replaces one platform command (`shipped`: as [`config`] writes it) in the config.
    pub fn set_command(&self, key: &str, shipped: &str, replacement: &str) {
        let config = replace_once(
            &self.read("deploy.yaml"),
            &format!("{key}: {shipped}"),
            &format!("{key}: {replacement}"),
        );
        self.write_config(&config);
    }

    /// The ids `backup list` shows.
    pub fn backup_ids(&self) -> Vec<String> {
        let list = self.run(&["backup", "list", "--output", "json"]);
        list.success();
        let value: serde_json::Value = serde_json::from_str(&list.stdout()).unwrap();
        value["result"]["backups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// Adds to the validate step an inline check `name` that reports an issue once
    /// migration 20250101000000 is applied. (A check that always failed would fail the
    /// backup's `verify: restore` first, which runs the checks on a restored copy before
    /// migrating.)
    pub fn fail_validation_once_migrated(&self, name: &str) {
        self.edit_pipeline(
            "with: { queries: validations/ }",
            &format!(
                "with: {{ queries: validations/, checks: [{{ name: {name}, sql: \"SELECT COUNT(*) AS issues FROM _sqlx_migrations WHERE version = 20250101000000\" }}] }}"
            ),
        );
    }
}

/// A deployed project with data and one pending migration `name` (which adds the table
/// `x_notes`), no platform call logged yet, and its state.
pub fn prepared(name: &str, up: &str, down: &str) -> (Project, State) {
    let p = Project::new();
    p.deployed_with_data();
    p.add_migration(name, up, Some(down));
    std::fs::remove_file(p.file("calls.log")).unwrap();
    let before = p.state();
    assert!(!before.db.contains_key("table x_notes"));
    (p, before)
}

/// The records of the newest run's journal.
pub fn last_journal(p: &Project) -> Vec<serde_json::Value> {
    p.journals().pop().expect("a journal")
}

/// The run failed at `step` and exited 1.
#[track_caller]
pub fn assert_failed_at(run: &Run, step: &str) {
    run.expect_code(1);
    assert!(
        run.all().contains(&format!("failed at step `{step}`")),
        "{}",
        run.all()
    );
}

/// A `recover` that finds nothing to do.
#[track_caller]
pub fn assert_nothing_to_recover(p: &Project) {
    let recover = p.run(&["recover"]);
    recover.success();
    assert!(
        recover.all().contains("nothing to recover"),
        "{}",
        recover.all()
    );
}

/// `text` with `from` replaced by `to`, which must occur exactly once.
#[track_caller]
/// Backup `id`'s stored bytes replaced by `stored`, its manifest made to match them, as if
/// they had been written that way.
pub fn rewrite_backup(p: &Project, id: &str, stored: &[u8]) {
    use sha2::Digest;
    std::fs::write(p.file(&format!("state/backups/{id}.dump")), stored).unwrap();
    let path = p.file(&format!("state/backups/{id}.manifest.json"));
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    manifest["size"] = stored.len().into();
    manifest["sha256"] = hex::encode(sha2::Sha256::digest(stored)).into();
    std::fs::write(&path, manifest.to_string()).unwrap();
}

pub fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(
        text.matches(from).count(),
        1,
        "`{from}` should occur once in:\n{text}"
    );
    text.replacen(from, to, 1)
}

/// This host's name, as the lock records it.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map_or_else(
        |_| std::env::var("HOSTNAME").unwrap_or_else(|_| "unknown-host".into()),
        |s| s.trim().to_owned(),
    )
}

/// Asserts two database snapshots are equal, naming only the tables that differ.
#[track_caller]
pub fn assert_same_db(
    actual: &BTreeMap<String, Vec<String>>,
    expected: &BTreeMap<String, Vec<String>>,
    what: &str,
) {
    let keys: std::collections::BTreeSet<&String> = actual.keys().chain(expected.keys()).collect();
    let mut diffs = Vec::new();
    for key in keys {
        let (a, e) = (actual.get(key), expected.get(key));
        if a != e {
            diffs.push(format!("{key}:\n  expected {e:?}\n  actual   {a:?}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: database differs\n{}",
        diffs.join("\n")
    );
}

/// Command lines of the processes still running in `dir` (a killed one may take a moment
/// to go).
pub fn processes_in(dir: &Path) -> Vec<String> {
    let dir = dir.canonicalize().unwrap();
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let found: Vec<String> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| {
                let e = e.ok()?;
                (std::fs::read_link(e.path().join("cwd")).ok()? == dir).then(|| {
                    std::fs::read_to_string(e.path().join("cmdline"))
                        .unwrap_or_default()
                        .replace('\0', " ")
                })
            })
            .collect();
        if found.is_empty() || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ids of the records of one kind, in journal order.
pub fn ids(records: &[serde_json::Value], kind: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["record"] == kind)
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Runs `case` for every point on a few threads and returns `describe(point, panic
/// message)` for each point whose case panicked, in the points' order: a long list of
/// cases reports every failing one, not just the first.
pub fn failures_of_each<T: Copy + Sync>(
    points: &[T],
    case: impl Fn(T) + Sync,
    describe: impl Fn(T, &str) -> String + Sync,
) -> Vec<String> {
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&point) = points.get(i) else { return };
                    let outcome =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(point)));
                    if let Err(panic) = outcome {
                        let message = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                            .unwrap_or_default();
                        failures
                            .lock()
                            .unwrap()
                            .push((i, describe(point, &message)));
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    failures.into_iter().map(|(_, message)| message).collect()
}

/// The facts of kind `kind` (`code_released`, `backup_taken`, ...) in a run's journal.
pub fn facts<'a>(journal: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    journal
        .iter()
        .filter(|r| r["record"] == "fact" && r["fact"] == kind)
        .collect()
}
