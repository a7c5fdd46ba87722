//! Rehearsal on a copy: `deploy` first runs the release's database part on a copy of the
//! data in a scratch database, and what the copy shows decides the run.
//!
//! - A lossy down (the data does not come back) is found on the copy and named in the
//!   plan, and `rollback: auto` then restores the backup: after a failed deploy the rows
//!   are identical to before. A lossless down is proven and used as the undo.
//! - A migration with a syntax error, one that violates a constraint only with the real
//!   data, and a validation check that fails only after migrating each stop the deploy
//!   before maintenance mode: exit 2, the platform untouched, the database identical.
//! - The copy is gone after a success, a failure, Ctrl-C, and `kill -9` followed by the
//!   next rehearsal.
//!
//! On SQLite, a real PostgreSQL and a real MariaDB (one server per test binary, a fresh
//! database per test).

mod support;

use std::time::{Duration, Instant};

use support::{Project, mysql, pg, replace_once};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
    Mysql,
}

/// A step that always fails, put after the migrations, left out of the rehearsal (which
/// would otherwise stop the release before the run).
const FAILING_STEP: &str = "  - id: fail\n    uses: sql\n    rehearse: off\n    with: { sql: \"INSERT INTO no_such_table VALUES (1)\" }\n";

const LOSSY: &str = "20250101000000_shout_names";
const LOSSY_UP: &str = "UPDATE users SET display_name = upper(display_name);\n";
const LOSSY_DOWN: &str = "UPDATE users SET display_name = lower(display_name);\n";

const LOSSLESS: &str = "20250101000000_add_notes";
const LOSSLESS_UP: &str = "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT);\n";
const LOSSLESS_DOWN: &str = "DROP TABLE notes;\n";

struct Case {
    p: Project,
    backend: Backend,
    db: String,
    /// The scratch databases' temp folder (SQLite): the test's own.
    tmp: tempfile::TempDir,
}

impl std::ops::Deref for Case {
    type Target = Project;

    fn deref(&self) -> &Project {
        &self.p
    }
}

impl Case {
    /// The shipped project deployed once, with two users.
    fn deployed(backend: Backend) -> Self {
        let (p, db) = match backend {
            Backend::Sqlite => (Project::new(), String::new()),
            Backend::Postgres => pg::project(),
            Backend::Mysql => mysql::project(),
        };
        p.with_rehearsal();
        let case = Self {
            p,
            backend,
            db,
            tmp: tempfile::tempdir().unwrap(),
        };
        case.run(&["deploy"]).success();
        case.sql(
            "INSERT INTO users (id, email, display_name) VALUES (1, 'a@example.com', 'Ann'), (2, 'b@example.com', 'Bob');",
        );
        case
    }

    fn run(&self, args: &[&str]) -> support::Run {
        let out = self
            .p
            .cmd()
            .env("TMPDIR", self.tmp.path())
            .args(args)
            .output()
            .unwrap();
        support::Run(out)
    }

    fn sql(&self, sql: &str) -> String {
        match self.backend {
            Backend::Sqlite => {
                support::exec_sql(&self.file("state/app.db"), sql);
                String::new()
            }
            Backend::Postgres => pg::server().psql(&self.db, sql),
            Backend::Mysql => mysql::server().sql(&self.db, sql),
        }
    }

    /// Schema and every row, read from the real database.
    fn snapshot(&self) -> String {
        match self.backend {
            Backend::Sqlite => format!("{:?}", self.p.db_snapshot()),
            Backend::Postgres => pg::server().snapshot(&self.db),
            Backend::Mysql => mysql::server().snapshot(&self.db),
        }
    }

    /// Scratch databases of this test's database that exist now.
    fn copies(&self) -> Vec<String> {
        match self.backend {
            Backend::Sqlite => std::fs::read_dir(self.tmp.path())
                .unwrap()
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("cutover_roundtrip_"))
                .collect(),
            Backend::Postgres => pg::server()
                .psql(
                    "postgres",
                    &format!(
                        "SELECT datname FROM pg_database WHERE datname LIKE 'cutover\\_roundtrip\\_{}\\_%'",
                        self.db
                    ),
                )
                .lines()
                .map(str::to_owned)
                .collect(),
            Backend::Mysql => mysql::server()
                .sql(
                    "mysql",
                    &format!(
                        "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'cutover\\_roundtrip\\_{}\\_%'",
                        self.db
                    ),
                )
                .lines()
                .map(str::to_owned)
                .collect(),
        }
    }

    fn fail_after_migrating(&self) {
        let pipeline = self.pipeline();
        self.write_pipeline(&replace_once(
            &pipeline,
            "  - uses: validate",
            &format!("{FAILING_STEP}  - uses: validate"),
        ));
    }

    fn maintenance_calls(&self) -> usize {
        self.calls()
            .iter()
            .filter(|c| c.starts_with("maintenance"))
            .count()
    }
}

fn lossy_down_is_found_and_the_backup_restores(backend: Backend) {
    let c = Case::deployed(backend);
    c.add_migration(LOSSY, LOSSY_UP, Some(LOSSY_DOWN));
    let plan = c.run(&["plan"]);
    plan.success();
    // The first deploy's rehearsal no longer applies: a migration was added since.
    assert!(
        plan.stdout().contains("rehearsal  stale: the migrations, the pipeline or the database changed since the last rehearsal"),
        "{}",
        plan.stdout()
    );

    let rehearsed = c.run(&["rehearse"]);
    rehearsed.success();
    let out = rehearsed.stdout();
    assert!(
        out.contains("down LOSSY") && out.contains("table users: content changed"),
        "{out}"
    );
    // A row that did not come back, by its key (MariaDB: counts only, see the README).
    assert!(
        backend == Backend::Mysql
            || out.contains(
                "e.g. the row (id=1, email=a@example.com, display_name=Ann) is not as before"
            )
            || out.contains(
                "e.g. the row (id=2, email=b@example.com, display_name=Bob) is not as before"
            ),
        "{out}"
    );
    assert!(c.copies().is_empty(), "{:?}", c.copies());

    let plan = c.run(&["plan"]).stdout();
    assert!(
        plan.contains("shout names — ")
            && plan.contains("down LOSSY (table users: content changed"),
        "{plan}"
    );
    assert!(plan.contains("rollback: restore the backup"), "{plan}");
    assert!(plan.contains("not every down gave the data back"), "{plan}");

    let before = c.snapshot();
    c.fail_after_migrating();
    let run = c.run(&["deploy"]);
    run.expect_code(1);
    assert!(
        run.stderr().contains("state: as before the run"),
        "{}",
        run.stderr()
    );
    assert_eq!(c.snapshot(), before, "the rows are not as before the run");
    assert!(c.copies().is_empty(), "{:?}", c.copies());
}

fn lossless_down_is_proven_and_used(backend: Backend) {
    let c = Case::deployed(backend);
    c.add_migration(LOSSLESS, LOSSLESS_UP, Some(LOSSLESS_DOWN));
    c.run(&["rehearse"]).success();
    let plan = c.run(&["plan"]).stdout();
    assert!(
        plan.contains("add notes — ") && plan.contains("down lossless, rollback: down file"),
        "{plan}"
    );
    assert!(
        plan.contains("the rehearsal on a copy proved every down lossless"),
        "{plan}"
    );
    let before = c.snapshot();
    c.fail_after_migrating();
    let run = c.run(&["deploy"]);
    run.expect_code(1);
    let err = run.stderr();
    assert!(err.contains("reverted 20250101000000"), "{err}");
    assert!(!err.contains("undo migrate: restore backup"), "{err}");
    assert_eq!(c.snapshot(), before);
}

/// A change that fails on the copy stops the deploy before maintenance mode.
fn stops_before_the_window(backend: Backend, what: &str, setup: impl Fn(&Case), names: &str) {
    let c = Case::deployed(backend);
    setup(&c);
    let before = c.snapshot();
    let calls = c.maintenance_calls();
    let run = c.run(&["deploy"]);
    run.expect_code(2);
    let err = run.stderr();
    assert!(
        err.contains("the rehearsal on a copy of the data") && err.contains(names),
        "{what}: {err}"
    );
    assert!(
        err.contains("nothing on production was touched"),
        "{what}: {err}"
    );
    assert_eq!(
        c.maintenance_calls(),
        calls,
        "{what}: maintenance was turned on"
    );
    assert_eq!(c.snapshot(), before, "{what}: the database changed");
    assert!(c.copies().is_empty(), "{what}: {:?}", c.copies());
}

fn failures_stop_before_the_window(backend: Backend) {
    stops_before_the_window(
        backend,
        "syntax error",
        |c| {
            c.add_migration(
                "20250101000000_broken",
                "CREATE TABLE broken (id INTEGER PRIMARY KEY,, x);\n",
                Some("DROP TABLE broken;\n"),
            );
        },
        "migration 20250101000000 broken",
    );
    stops_before_the_window(
        backend,
        "constraint on real data",
        |c| {
            c.sql("UPDATE users SET display_name = 'Same'");
            c.add_migration(
                "20250101000000_unique_names",
                "CREATE UNIQUE INDEX users_display_name ON users (display_name);\n",
                Some(if backend == Backend::Mysql {
                    "DROP INDEX users_display_name ON users;\n"
                } else {
                    "DROP INDEX users_display_name;\n"
                }),
            );
        },
        "migration 20250101000000 unique names",
    );
    stops_before_the_window(
        backend,
        "validation after migrating",
        |c| {
            c.add_migration(LOSSY, LOSSY_UP, Some(LOSSY_DOWN));
            c.write(
                "validations/no_shouting.sql",
                if backend == Backend::Mysql {
                    // MariaDB compares text without case by default.
                    "SELECT COUNT(*) AS issues FROM users WHERE BINARY display_name = BINARY upper(display_name);\n"
                } else {
                    "SELECT COUNT(*) AS issues FROM users WHERE display_name = upper(display_name);\n"
                },
            );
        },
        "`no_shouting` found 2 issue(s)",
    );
}

#[test]
fn sqlite_lossy_down_is_found_and_the_backup_restores() {
    lossy_down_is_found_and_the_backup_restores(Backend::Sqlite);
}

#[test]
fn postgres_lossy_down_is_found_and_the_backup_restores() {
    lossy_down_is_found_and_the_backup_restores(Backend::Postgres);
}

#[test]
fn mysql_lossy_down_is_found_and_the_backup_restores() {
    lossy_down_is_found_and_the_backup_restores(Backend::Mysql);
}

#[test]
fn sqlite_lossless_down_is_proven_and_used() {
    lossless_down_is_proven_and_used(Backend::Sqlite);
}

#[test]
fn postgres_lossless_down_is_proven_and_used() {
    lossless_down_is_proven_and_used(Backend::Postgres);
}

#[test]
fn sqlite_failures_stop_before_the_window() {
    failures_stop_before_the_window(Backend::Sqlite);
}

#[test]
fn postgres_failures_stop_before_the_window() {
    failures_stop_before_the_window(Backend::Postgres);
}

#[test]
fn mysql_failures_stop_before_the_window() {
    failures_stop_before_the_window(Backend::Mysql);
}

/// Polls `check` until it holds, for at most 30 seconds.
fn wait_for(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A deploy held inside a slow migration on the copy, then signalled.
fn signalled_in_the_rehearsal(signal: &str) -> (Case, std::process::Output) {
    let c = Case::deployed(Backend::Postgres);
    c.add_migration(
        "20250101000000_slow",
        "SELECT pg_sleep(60);\n",
        Some("SELECT 1;\n"),
    );
    let before = c.snapshot();
    let calls = c.maintenance_calls();
    let child =
        c.p.cmd()
            .env("TMPDIR", c.tmp.path())
            .arg("deploy")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
    let prefix = format!("cutover\\_roundtrip\\_{}\\_%", c.db);
    wait_for("the slow migration on the copy", || {
        !pg::server()
            .psql(
                "postgres",
                &format!(
                    "SELECT pid FROM pg_stat_activity WHERE datname LIKE '{prefix}' AND query LIKE '%pg_sleep%'"
                ),
            )
            .trim()
            .is_empty()
    });
    let status = std::process::Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(c.snapshot(), before, "production changed");
    assert_eq!(c.maintenance_calls(), calls, "maintenance was turned on");
    (c, out)
}

#[test]
fn ctrl_c_in_the_rehearsal_drops_the_copy() {
    let (c, out) = signalled_in_the_rehearsal("-INT");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("interrupted during the rehearsal"), "{err}");
    assert!(c.copies().is_empty(), "{:?}", c.copies());
}

#[test]
fn a_killed_rehearsals_copy_is_dropped_by_the_next() {
    let (c, _) = signalled_in_the_rehearsal("-KILL");
    let left = c.copies();
    assert_eq!(left.len(), 1, "the killed rehearsal left no copy: {left:?}");
    // The next rehearsal drops it (and makes and drops its own).
    c.write("migrations/20250101000000_slow.up.sql", "SELECT 1;\n");
    let next = c.run(&["rehearse"]);
    next.success();
    assert!(
        next.stderr()
            .contains(&format!("dropped the copy {}", left[0])),
        "{}",
        next.stderr()
    );
    assert!(c.copies().is_empty(), "{:?}", c.copies());
}
