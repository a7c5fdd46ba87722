//! Rollback you can prove: a failed deploy undoes exactly what the run did, and the
//! closing words say "as before" only when the comparison with the fingerprint taken
//! before the run holds; otherwise the run exits 3 naming what differs.
//!
//! Every case runs on SQLite and on a real PostgreSQL server (one per test binary, a fresh
//! database per test), and compares the real database (schema and every row) before and
//! after, besides what cutover says.

mod support;

use std::collections::BTreeMap;

use support::{Project, State, pg, replace_once};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

/// A step that always fails, put after the migrations (and after any seed step).
const FAILING_STEP: &str =
    "  - id: fail\n    uses: sql\n    with: { sql: \"INSERT INTO no_such_table VALUES (1)\" }\n";

struct Case {
    p: Project,
    backend: Backend,
    db: String,
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
        };
        let case = Self { p, backend, db };
        case.run(&["deploy"]).success();
        case.sql(
            "INSERT INTO users (id, email, display_name) VALUES (1, 'a@example.com', 'Ann'), (2, 'b@example.com', 'Bob');",
        );
        case
    }

    fn sql(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => support::exec_sql(&self.file("state/app.db"), sql),
            Backend::Postgres => {
                pg::server().psql(&self.db, sql);
            }
        }
    }

    /// Schema and every row, platform and locks, read from the real database.
    fn state(&self) -> State {
        let mut state = self.p.state();
        if self.backend == Backend::Postgres {
            state.db = BTreeMap::from([(
                "pg_dump".to_owned(),
                pg::server()
                    .snapshot(&self.db)
                    .lines()
                    .map(str::to_owned)
                    .collect(),
            )]);
        }
        state
    }

    fn fail_after_migrating(&self) {
        self.set_pipeline(
            "  - uses: validate",
            &format!("{FAILING_STEP}  - uses: validate"),
        );
    }

    fn set_pipeline(&self, from: &str, to: &str) {
        self.write_pipeline(&replace_once(&self.pipeline(), from, to));
    }

    fn users(&self) -> String {
        let sql = "SELECT id || ':' || email || ':' || display_name FROM users ORDER BY id";
        match self.backend {
            Backend::Sqlite => self
                .p
                .db_snapshot()
                .get("table users")
                .map(|rows| rows.join("\n"))
                .unwrap_or_default(),
            Backend::Postgres => pg::server().psql(&self.db, sql),
        }
    }
}

/// Asserts a run rolled back cleanly and says so with what it compared.
#[track_caller]
fn assert_verified_as_before(run: &support::Run) {
    run.expect_code(1);
    let err = run.stderr();
    assert!(
        err.contains("state: as before the run") && err.contains("checked: schema ("),
        "{err}"
    );
    assert!(!err.contains("NOT as before"), "{err}");
}

/// Case 1: a migration numbered below the applied head (a branch merged late).
fn late_migration_is_refused_by_default(backend: Backend) {
    let c = Case::deployed(backend);
    c.add_migration(
        "20240101120050_late",
        "CREATE TABLE late_notes (id INTEGER PRIMARY KEY, note TEXT NOT NULL);\nINSERT INTO late_notes (id, note) VALUES (1, 'late');\n",
        Some("DROP TABLE late_notes;\n"),
    );
    let before = c.state();
    let run = c.run(&["deploy"]);
    run.expect_code(2);
    let err = run.stderr();
    assert!(
        err.contains("20240101120050") && err.contains("below the applied head 20240301100100"),
        "{err}"
    );
    assert!(err.contains("out_of_order: true"), "{err}");
    assert_eq!(c.state(), before, "a refused deploy touches nothing");
    let status = c.run(&["migrate", "status"]);
    assert!(
        status.stdout().contains("pending, OUT OF ORDER"),
        "{}",
        status.stdout()
    );
}

/// Case 1, allowed: the late migration is shown in the plan and reverted exactly, even
/// though its number is below the version the run started at.
fn late_migration_allowed_is_reverted_exactly(backend: Backend) {
    let c = Case::deployed(backend);
    let config = c.read("deploy.yaml");
    c.write_config(&replace_once(
        &config,
        "    database:",
        "    out_of_order: true\n    database:",
    ));
    c.add_migration(
        "20240101120050_late",
        "CREATE TABLE late_notes (id INTEGER PRIMARY KEY, note TEXT NOT NULL);\nINSERT INTO late_notes (id, note) VALUES (1, 'late');\n",
        Some("DROP TABLE late_notes;\n"),
    );
    c.set_pipeline("rollback: auto", "rollback: down");
    c.fail_after_migrating();
    let plan = c.run(&["plan"]);
    plan.success();
    assert!(
        plan.stdout().contains("out of order") && plan.stdout().contains("revert 20240101120050"),
        "{}",
        plan.stdout()
    );
    let before = c.state();
    let run = c.run(&["deploy"]);
    assert_verified_as_before(&run);
    assert!(
        run.stderr().contains("reverted 20240101120050 late"),
        "{}",
        run.stderr()
    );
    support::assert_same_db(&c.state().db, &before.db, "after the rollback");
}

/// Case 2: an idempotent seed whose row was already there is not undone.
fn seed_undo_keeps_rows_that_were_there(backend: Backend) {
    let c = Case::deployed(backend);
    c.set_pipeline(
        "  - uses: validate",
        "  - id: seed\n    uses: sql\n    with:\n      sql: \"INSERT INTO users (id, email, display_name) SELECT 1, 'a@example.com', 'Ann' WHERE NOT EXISTS (SELECT 1 FROM users WHERE email = 'a@example.com')\"\n      undo: \"DELETE FROM users WHERE email = 'a@example.com'\"\n  - uses: validate",
    );
    c.fail_after_migrating();
    let before = c.state();
    let run = c.run(&["deploy"]);
    assert_verified_as_before(&run);
    assert!(c.users().contains("a@example.com"), "{}", c.users());
    support::assert_same_db(&c.state().db, &before.db, "after the rollback");

    // When the seed did insert its row, the undo removes it again.
    c.sql("DELETE FROM users WHERE id = 1");
    let before = c.state();
    let run = c.run(&["deploy"]);
    assert_verified_as_before(&run);
    assert!(!c.users().contains("a@example.com"), "{}", c.users());
    support::assert_same_db(&c.state().db, &before.db, "after the second rollback");
}

const LOSSY_UP: &str = "CREATE TABLE name_log (id INTEGER PRIMARY KEY);\nUPDATE users SET display_name = upper(display_name);\n";
const LOSSY_DOWN: &str =
    "DROP TABLE name_log;\nUPDATE users SET display_name = lower(display_name);\n";

/// Case 3: with a backup in the run, `rollback: auto` restores it rather than trust a
/// down migration that cannot give the data back.
fn auto_prefers_the_backup_over_a_lossy_down(backend: Backend) {
    let c = Case::deployed(backend);
    c.add_migration("20250101000000_shout_names", LOSSY_UP, Some(LOSSY_DOWN));
    c.fail_after_migrating();
    let plan = c.run(&["plan"]);
    assert!(
        plan.stdout().contains("restore the backup taken before it")
            && plan.stdout().contains("not proven lossless"),
        "{}",
        plan.stdout()
    );
    let before = c.state();
    let run = c.run(&["deploy"]);
    assert_verified_as_before(&run);
    assert!(c.users().contains("Ann"), "{}", c.users());
    support::assert_same_db(&c.state().db, &before.db, "after the rollback");
}

/// Case 3 without a backup: the down runs, the comparison finds the changed rows, and the
/// run says so and exits 3 instead of claiming "as before".
fn lossy_down_is_caught_and_named(backend: Backend) {
    let c = Case::deployed(backend);
    c.set_pipeline(
        "  - uses: backup\n    with: { name: \"pre-{version}-{timestamp}\", verify: restore }\n",
        "",
    );
    c.add_migration("20250101000000_shout_names", LOSSY_UP, Some(LOSSY_DOWN));
    c.fail_after_migrating();
    let run = c.run(&["deploy"]);
    run.expect_code(3);
    let err = run.stderr();
    assert!(
        err.contains("NOT as before the run") && err.contains("table users: content changed"),
        "{err}"
    );
    assert!(!err.contains("state: as before"), "{err}");
    // The database really differs, as it said.
    assert!(c.users().contains("ann"), "{}", c.users());
    // The journal holds both fingerprints' facts.
    let journal = c.journals().pop().unwrap();
    let facts: Vec<&str> = journal.iter().filter_map(|r| r["fact"].as_str()).collect();
    assert!(facts.contains(&"fingerprint_taken"), "{facts:?}");
    assert!(facts.contains(&"state_compared"), "{facts:?}");
    assert!(
        journal
            .iter()
            .any(|r| r["fact"] == "migration_applied" && r["version"] == 20_250_101_000_000_i64),
        "{journal:?}"
    );
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(super::Backend::Sqlite) })*
        }
        mod postgres {
            $(#[test] fn $name() { super::$name(super::Backend::Postgres) })*
        }
    };
}

cases!(
    late_migration_is_refused_by_default,
    late_migration_allowed_is_reverted_exactly,
    seed_undo_keeps_rows_that_were_there,
    auto_prefers_the_backup_over_a_lossy_down,
    lossy_down_is_caught_and_named,
);
