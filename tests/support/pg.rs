//! A real PostgreSQL server for the tests of one test binary: initdb into a temp folder,
//! a free port on 127.0.0.1, run as the unprivileged `postgres` user when the tests run as
//! root. A watchdog shell stops the server and deletes its folder when the test process
//! exits, however it exits. Each test gets its own database.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::server::{free_port, quote, spawn_watched, temp_dir, unique_name, wait_ready};

pub struct PgServer {
    pub port: u16,
    pub dir: PathBuf,
}

static SERVER: OnceLock<PgServer> = OnceLock::new();

fn bin_dir() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.path().join("bin"))
                .filter(|p| p.join("pg_ctl").exists())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    if let Some(dir) = found.pop() {
        return dir;
    }
    let out = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        .expect("sh runs");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        !path.is_empty(),
        "PostgreSQL server binaries not found; run scripts/test to install them"
    );
    Path::new(&path).parent().unwrap().to_owned()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"))
}

/// Wraps a command line so it runs as the cluster owner.
fn as_owner(line: &str) -> Vec<String> {
    if is_root() {
        vec![
            "runuser".into(),
            "-u".into(),
            "postgres".into(),
            "--".into(),
            "sh".into(),
            "-c".into(),
            line.into(),
        ]
    } else {
        vec!["sh".into(), "-c".into(), line.into()]
    }
}

fn run(args: &[String]) -> std::process::Output {
    Command::new(&args[0])
        .args(&args[1..])
        .output()
        .expect("command runs")
}

fn start() -> PgServer {
    let bin = bin_dir();
    let dir = temp_dir("cutover-pg-");
    std::fs::create_dir_all(dir.join("sock")).unwrap();
    if is_root() {
        let ok = Command::new("chown")
            .args(["-R", "postgres"])
            .arg(&dir)
            .status()
            .unwrap();
        assert!(ok.success(), "chown the cluster folder to postgres");
    }
    let data = dir.join("data");
    let init = run(&as_owner(&format!(
        "{}/initdb -D {} -U postgres -A trust -E UTF8 --locale=C --no-sync",
        bin.display(),
        data.display()
    )));
    assert!(
        init.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let port = free_port();
    let server = format!(
        "{}/postgres -D {} -c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
        bin.display(),
        data.display(),
        dir.join("sock").display()
    );
    let server_cmd = as_owner(&format!("exec {server}"))
        .iter()
        .map(|a| quote(a))
        .collect::<Vec<_>>()
        .join(" ");
    // The postmaster is signalled by its pid file: `runuser` does not pass signals on.
    let stop = format!(
        "kill -INT $(head -1 {} 2>/dev/null) $server 2>/dev/null",
        quote(&data.join("postmaster.pid").display().to_string())
    );
    spawn_watched("PostgreSQL", &dir, &server_cmd, &stop);
    wait_ready("PostgreSQL", &dir, || {
        Command::new(bin.join("pg_isready"))
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-U",
                "postgres",
                "-q",
            ])
            .status()
            .is_ok_and(|s| s.success())
    });
    PgServer { port, dir }
}

pub fn server() -> &'static PgServer {
    SERVER.get_or_init(start)
}

impl PgServer {
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{database}?sslmode=disable",
            self.port
        )
    }

    /// Runs SQL with psql against a database; panics on error.
    pub fn psql(&self, database: &str, sql: &str) -> String {
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                &self.url(database),
                "-c",
                sql,
            ])
            .output()
            .expect("psql runs");
        assert!(
            out.status.success(),
            "psql failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A fresh, empty database for one test.
    pub fn database(&self) -> String {
        let name = unique_name('_');
        self.psql("postgres", &format!("CREATE DATABASE {name}"));
        name
    }

    /// Schema and every row of a database, in a stable order, from pg_dump's plain output
    /// with data as ordered INSERTs: equal snapshots mean equal databases.
    pub fn snapshot(&self, database: &str) -> String {
        let out = Command::new("pg_dump")
            .args([
                "--no-owner",
                "--no-acl",
                "--inserts",
                "--rows-per-insert=1",
                &self.url(database),
            ])
            .output()
            .expect("pg_dump runs");
        assert!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines: Vec<String> = text
            .lines()
            .filter(|l| {
                !l.starts_with("--")
                    && !l.trim().is_empty()
                    && !l.starts_with("\\restrict")
                    && !l.starts_with("\\unrestrict")
            })
            .map(|l| {
                // Install times differ between runs of the same migration.
                if l.starts_with("INSERT INTO public._sqlx_migrations") {
                    let fields: Vec<&str> = l.splitn(4, ", ").collect();
                    format!("{} ...", fields[..2].join(", "))
                } else {
                    l.to_owned()
                }
            })
            .collect();
        // Row order in a dump follows physical order; sort the INSERTs per table.
        lines.sort_by(|a, b| {
            let ia = a.starts_with("INSERT");
            let ib = b.starts_with("INSERT");
            ia.cmp(&ib).then_with(|| {
                if ia && ib {
                    a.cmp(b)
                } else {
                    std::cmp::Ordering::Equal
                }
            })
        });
        lines.join("\n")
    }
}

/// A project whose `local` environment uses a fresh PostgreSQL database.
pub fn project() -> (super::Project, String) {
    let server = server();
    let db = server.database();
    let p = super::Project::new();
    let config = p.default_config().replace(
        "database: { kind: sqlite, url: \"sqlite://state/app.db\" }",
        &format!(
            "database: {{ kind: postgres, url: \"{}\" }}",
            server.url(&db)
        ),
    );
    p.write_config(&config);
    (p, db)
}

/// The path of one of the PostgreSQL programs the tests use (`psql`, `pg_dump`,
/// `pg_restore`), the real binary rather than a distribution's wrapper script.
pub fn tool(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(path.exists(), "{} not found", path.display());
    path
}

/// Names of the databases on the server matching a `LIKE` pattern.
pub fn databases(like: &str) -> Vec<String> {
    server()
        .psql(
            "postgres",
            &format!("SELECT datname FROM pg_database WHERE datname LIKE '{like}' ORDER BY 1"),
        )
        .lines()
        .map(str::to_owned)
        .collect()
}
