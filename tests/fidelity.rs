//! Rollback you can prove: a failed deploy undoes exactly what the run did, and the
//! closing words say "as before" only when the comparison with the fingerprint taken
//! before the run holds; otherwise the run exits 3 naming what differs.
//!
//! Every case runs on SQLite and on a real PostgreSQL server (one per test binary, a fresh
//! database per test), and compares the real database (schema and every row) before and
//! after, besides what cutover says.

mod support;

use std::collections::BTreeMap;

use support::backend::{Backend, Case};
use support::{State, pg, replace_once};

/// A step that always fails, put after the migrations (and after any seed step).
const FAILING_STEP: &str =
    "  - id: fail\n    uses: sql\n    with: { sql: \"INSERT INTO no_such_table VALUES (1)\" }\n";

/// The shipped project deployed once, with two users.
fn deployed(backend: Backend) -> Case {
    let case = Case::new(backend, read_state);
    case.run(&["deploy"]).success();
    case.sql(
        "INSERT INTO users (id, email, display_name) VALUES (1, 'a@example.com', 'Ann'), (2, 'b@example.com', 'Bob');",
    );
    case
}

/// Schema and every row, platform and locks, read from the real database.
fn read_state(c: &Case) -> State {
    let mut state = c.p.state();
    if c.backend == Backend::Postgres {
        state.db = BTreeMap::from([(
            "pg_dump".to_owned(),
            pg::server()
                .snapshot(&c.db)
                .lines()
                .map(str::to_owned)
                .collect(),
        )]);
    }
    state
}

fn fail_after_migrating(c: &Case) {
    c.edit_pipeline(
        "  - uses: validate",
        &format!("{FAILING_STEP}  - uses: validate"),
    );
}

fn users(c: &Case) -> String {
    let sql = "SELECT id || ':' || email || ':' || display_name FROM users ORDER BY id";
    match c.backend {
        Backend::Sqlite => c
            .db_snapshot()
            .get("table users")
            .map(|rows| rows.join("\n"))
            .unwrap_or_default(),
        Backend::Postgres => pg::server().psql(&c.db, sql),
        Backend::Mysql => unreachable!("these cases run on SQLite and PostgreSQL"),
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
    let c = deployed(backend);
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
    let c = deployed(backend);
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
    c.edit_pipeline("rollback: auto", "rollback: down");
    fail_after_migrating(&c);
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
    let c = deployed(backend);
    c.edit_pipeline(
        "  - uses: validate",
        "  - id: seed\n    uses: sql\n    with:\n      sql: \"INSERT INTO users (id, email, display_name) SELECT 1, 'a@example.com', 'Ann' WHERE NOT EXISTS (SELECT 1 FROM users WHERE email = 'a@example.com')\"\n      undo: \"DELETE FROM users WHERE email = 'a@example.com'\"\n  - uses: validate",
    );
    fail_after_migrating(&c);
    let before = c.state();
    let run = c.run(&["deploy"]);
    assert_verified_as_before(&run);
    assert!(users(&c).contains("a@example.com"), "{}", users(&c));
    support::assert_same_db(&c.state().db, &before.db, "after the rollback");

    // When the seed did insert its row, the undo removes it again.
    c.sql("DELETE FROM users WHERE id = 1");
    let before = c.state();
    let run = c.run(&["deploy"]);
    assert_verified_as_before(&run);
    assert!(!users(&c).contains("a@example.com"), "{}", users(&c));
    support::assert_same_db(&c.state().db, &before.db, "after the second rollback");
}

const LOSSY_UP: &str = "CREATE TABLE name_log (id INTEGER PRIMARY KEY);\nUPDATE users SET display_name = upper(display_name);\n";
const LOSSY_DOWN: &str =
    "DROP TABLE name_log;\nUPDATE users SET display_name = lower(display_name);\n";

/// Case 3: with a backup in the run, `rollback: auto` restores it rather than trust a
/// down migration that cannot give the data back.
fn auto_prefers_the_backup_over_a_lossy_down(backend: Backend) {
    let c = deployed(backend);
    c.add_migration("20250101000000_shout_names", LOSSY_UP, Some(LOSSY_DOWN));
    fail_after_migrating(&c);
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
    assert!(users(&c).contains("Ann"), "{}", users(&c));
    support::assert_same_db(&c.state().db, &before.db, "after the rollback");
}

/// Case 3 without a backup: the down runs, the comparison finds the changed rows, and the
/// run says so and exits 3 instead of claiming "as before".
fn lossy_down_is_caught_and_named(backend: Backend) {
    let c = deployed(backend);
    c.edit_pipeline(
        "  - uses: backup\n    with: { name: \"pre-{version}-{timestamp}\", verify: restore }\n",
        "",
    );
    c.add_migration("20250101000000_shout_names", LOSSY_UP, Some(LOSSY_DOWN));
    fail_after_migrating(&c);
    let run = c.run(&["deploy"]);
    run.expect_code(3);
    let err = run.stderr();
    assert!(
        err.contains("NOT as before the run") && err.contains("table users: content changed"),
        "{err}"
    );
    assert!(!err.contains("state: as before"), "{err}");
    // The database really differs, as it said.
    assert!(users(&c).contains("ann"), "{}", users(&c));
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
