//! `cutover migrate test`: every down undoes its up, checked in a scratch database (a temp
//! file for SQLite, a database on the same server for PostgreSQL and MariaDB), with the
//! real database untouched.

mod support;

use serde_json::Value;
use support::Project;

const INDEX_UP: &str =
    "-- Faster lookups by title.\nCREATE INDEX idx_recipes_title ON recipes (title);\n";
/// A down that forgets the index its up created.
const INDEX_DOWN_FORGETS: &str = "-- Nothing to undo (wrong: the index stays).\nSELECT 1;\n";

fn add_index_migration(p: &Project) {
    p.add_migration(
        "20250101000000_index_title",
        INDEX_UP,
        Some(INDEX_DOWN_FORGETS),
    );
}

/// The `result` object of a `--output json` run.
fn result(stdout: &str) -> Value {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.contains("\"event\":\"result\""))
        .unwrap_or_else(|| panic!("no result in:\n{stdout}"));
    serde_json::from_str::<Value>(line).unwrap()["result"].clone()
}

#[track_caller]
fn assert_names_index_migration(run: &support::Run) {
    let out = run.stdout();
    assert!(
        out.contains("FAILED: migrations/20250101000000_index_title.down.sql does not undo migrations/20250101000000_index_title.up.sql"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with('+') && l.contains("idx_recipes_title")),
        "the differing line is shown: {out}"
    );
}

// ---- SQLite ----

#[test]
fn sqlite_clean_round_trip_passes_and_creates_no_database() {
    let p = Project::new();
    let run = p.run(&["migrate", "test"]);
    run.success();
    assert!(
        run.stdout().contains("ok: every down undoes its up"),
        "{}",
        run.stdout()
    );
    assert!(
        run.stderr()
            .contains("20240301100100_create_tags_move_cuisine.up.sql: up, down, up: ok"),
        "{}",
        run.stderr()
    );
    assert!(
        !p.file("state/app.db").exists(),
        "the real database was not created"
    );
    let json = result(&p.run(&["migrate", "test", "--output", "json"]).stdout());
    assert_eq!(json["clean"], true);
    assert_eq!(json["checked"].as_array().unwrap().len(), 6);
    assert_eq!(json["full_cycle"], true);
    let scratch = json["scratch"].as_str().unwrap();
    assert!(
        !std::path::Path::new(scratch).exists(),
        "{scratch} was removed"
    );
}

#[test]
fn sqlite_down_that_forgets_an_index_is_named_and_the_real_database_is_unchanged() {
    let p = Project::new();
    p.deployed_with_data();
    add_index_migration(&p);
    let before = p.db_snapshot();
    let run = p.run(&["migrate", "test"]);
    run.expect_code(1);
    assert_names_index_migration(&run);
    support::assert_same_db(&p.db_snapshot(), &before, "after migrate test");
    let json = result(&p.run(&["migrate", "test", "--output", "json"]).stdout());
    assert_eq!(json["clean"], false);
    assert_eq!(json["failure"]["version"], 20_250_101_000_000_i64);
    assert_eq!(
        json["failure"]["down_file"],
        "migrations/20250101000000_index_title.down.sql"
    );
    assert!(!std::path::Path::new(json["scratch"].as_str().unwrap()).exists());
}

#[test]
fn sqlite_failing_down_and_migrations_without_down_files() {
    let p = Project::new();
    // No down file: applied, reported as not checked, and the full cycle stops above it.
    p.add_migration(
        "20250101000000_audit",
        "CREATE TABLE audit (id INTEGER PRIMARY KEY);\n",
        None,
    );
    p.add_migration(
        "20250102000000_index_title",
        INDEX_UP,
        Some("DROP INDEX idx_recipes_title;\n"),
    );
    let run = p.run(&["migrate", "test"]);
    run.success();
    assert!(
        run.stdout()
            .contains("not checked (no down file): 20250101000000"),
        "{}",
        run.stdout()
    );
    assert!(
        run.stderr()
            .contains("all 1 down to 20250101000000, then up again: ok"),
        "{}",
        run.stderr()
    );
    // A down that fails is named too.
    p.write(
        "migrations/20250102000000_index_title.down.sql",
        "DROP INDEX no_such_index;\n",
    );
    let run = p.run(&["migrate", "test"]);
    run.expect_code(1);
    assert!(
        run.stdout()
            .contains("migrations/20250102000000_index_title.down.sql failed right after its up"),
        "{}",
        run.stdout()
    );
}

#[test]
fn bad_input_is_exit_2() {
    let p = Project::new();
    p.write("migrations/not_a_migration.sql", "SELECT 1;\n");
    p.run(&["migrate", "test"]).expect_code(2);
}

/// The scratch database a run reported creating (tests run in parallel, so other scratch
/// databases may exist meanwhile).
fn scratch_name(run: &support::Run) -> String {
    let err = run.stderr();
    let name = err
        .split("scratch database ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no scratch database named in:\n{err}"));
    assert!(name.starts_with("cutover_roundtrip_"), "{name}");
    name.to_owned()
}

// ---- PostgreSQL ----

fn pg_databases() -> String {
    support::pg::server().psql("postgres", "SELECT datname FROM pg_database ORDER BY 1")
}

#[test]
fn postgres_clean_round_trip_passes_and_leaves_the_real_database_alone() {
    let (p, db) = support::pg::project();
    p.run(&["deploy"]).success();
    let before = support::pg::server().snapshot(&db);
    let run = p.run(&["migrate", "test"]);
    run.success();
    assert!(
        run.stdout().contains("ok: every down undoes its up (6 migration(s) checked in scratch database cutover_roundtrip_"),
        "{}",
        run.stdout()
    );
    assert_eq!(support::pg::server().snapshot(&db), before);
    assert!(
        !pg_databases().contains(&scratch_name(&run)),
        "{}",
        pg_databases()
    );
}

#[test]
fn postgres_down_that_forgets_an_index_is_named() {
    let (p, db) = support::pg::project();
    add_index_migration(&p);
    let before = support::pg::server().snapshot(&db);
    let run = p.run(&["migrate", "test"]);
    run.expect_code(1);
    assert_names_index_migration(&run);
    assert!(
        run.stdout()
            .contains("+ CREATE INDEX idx_recipes_title ON public.recipes USING btree (title);"),
        "{}",
        run.stdout()
    );
    assert_eq!(
        support::pg::server().snapshot(&db),
        before,
        "the real database is still empty"
    );
    assert!(
        !pg_databases().contains(&scratch_name(&run)),
        "{}",
        pg_databases()
    );
}

// ---- MariaDB ----

#[test]
fn mysql_round_trip_passes_then_names_a_down_that_forgets_an_index() {
    let (p, db) = support::mysql::project();
    let server = support::mysql::server();
    p.run(&["deploy"]).success();
    let before = server.snapshot(&db);
    p.run(&["migrate", "test"]).success();
    p.add_migration(
        "20250101000000_index_title",
        "CREATE INDEX idx_recipes_title ON recipes (title);\n",
        Some(INDEX_DOWN_FORGETS),
    );
    let run = p.run(&["migrate", "test"]);
    run.expect_code(1);
    assert_names_index_migration(&run);
    assert_eq!(server.snapshot(&db), before);
    assert!(
        !server
            .sql("mysql", "SHOW DATABASES")
            .contains(&scratch_name(&run))
    );
}
