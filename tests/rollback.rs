//! A failure injected at every step of the shipped `pipelines/deploy.yaml` rolls back
//! everything the run did: the database (every table and row, the migration history
//! included), the platform and the locks (the lock folder, and a server's deploy lock) end
//! exactly as they were before the run.
//!
//! Every case runs on each database backend: SQLite, and a real PostgreSQL and MariaDB
//! server (one of each for this test binary, a fresh database per test). The `cases!` list
//! at the end is the one list of cases; it makes the tests `sqlite::CASE`, `postgres::CASE`
//! and `mysql::CASE` (`cargo test --test rollback postgres::` runs one backend).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::backend::{Backend, Case};
use support::{
    HealthServer, MAINTENANCE_OFF, MAINTENANCE_ON, Project, Run, SCALE, State, assert_failed_at,
    ids, last_journal, processes_in,
};
use support::{mysql as my, pg};

/// Rows added after the first deploy, so every undo has data to keep.
const SEED: &str = "INSERT INTO users (id, email, display_name) VALUES (1, 'a@example.com', 'A'), (2, 'b@example.com', 'B');
INSERT INTO recipes (id, user_id, title, servings, calories) VALUES (1, 1, 'Soup', 2, 300), (2, 2, 'Salad', 1, NULL);";

/// A new migration, pending after the deploy with data: it adds a table, an index and
/// rows, and changes existing rows, so undoing it has real work to do.
const NEW: &str = "20250101000000_add_x";
const NEW_UP: &str = "CREATE TABLE x_notes (
    id        INTEGER PRIMARY KEY,
    recipe_id INTEGER NOT NULL REFERENCES recipes (id),
    note      TEXT NOT NULL
);
CREATE INDEX idx_x_notes_recipe ON x_notes (recipe_id);
INSERT INTO x_notes (id, recipe_id, note) SELECT id, id, 'note for ' || title FROM recipes;
UPDATE users SET display_name = display_name || ' (x)';
";
const NEW_DOWN: &str = "DROP INDEX idx_x_notes_recipe;
DROP TABLE x_notes;
UPDATE users SET display_name = substr(display_name, 1, length(display_name) - 4);
";
/// The same in MySQL's dialect (`||` is OR there).
const NEW_UP_MYSQL: &str = "CREATE TABLE x_notes (
    id        BIGINT PRIMARY KEY,
    recipe_id BIGINT NOT NULL,
    note      VARCHAR(255) NOT NULL,
    CONSTRAINT x_notes_recipe FOREIGN KEY (recipe_id) REFERENCES recipes (id)
);
CREATE INDEX idx_x_notes_recipe ON x_notes (recipe_id);
INSERT INTO x_notes (id, recipe_id, note) SELECT id, id, CONCAT('note for ', title) FROM recipes;
UPDATE users SET display_name = CONCAT(display_name, ' (x)');
";
const NEW_DOWN_MYSQL: &str = "DROP TABLE x_notes;
UPDATE users SET display_name = SUBSTRING(display_name, 1, CHAR_LENGTH(display_name) - 4);
";

/// A second new migration whose second statement fails. SQLite and PostgreSQL roll the
/// whole file back, so its down must never run (it would fail: there is no table).
/// MySQL commits the CREATE TABLE before the INSERT fails; the idempotent down cleans up.
const BROKEN: &str = "20250101000100_broken";
const BROKEN_UP: &str =
    "CREATE TABLE y_half (id INTEGER PRIMARY KEY);\nINSERT INTO no_such_table VALUES (1);\n";
const BROKEN_DOWN: &str = "DROP TABLE y_half;\n";
const BROKEN_UP_MYSQL: &str =
    "CREATE TABLE y_half (id INT PRIMARY KEY);\nINSERT INTO no_such_table VALUES (1);\n";
const BROKEN_DOWN_MYSQL: &str = "DROP TABLE IF EXISTS y_half;\n";

fn new_migration(backend: Backend) -> (&'static str, &'static str) {
    match backend {
        Backend::Sqlite | Backend::Postgres => (NEW_UP, NEW_DOWN),
        Backend::Mysql => (NEW_UP_MYSQL, NEW_DOWN_MYSQL),
    }
}

fn broken_migration(backend: Backend) -> (&'static str, &'static str) {
    match backend {
        Backend::Sqlite | Backend::Postgres => (BROKEN_UP, BROKEN_DOWN),
        Backend::Mysql => (BROKEN_UP_MYSQL, BROKEN_DOWN_MYSQL),
    }
}

/// Deploys the shipped pipeline once and adds rows.
fn deployed_with_data(backend: Backend) -> Case {
    let c = Case::new(backend, read_state);
    match backend {
        Backend::Sqlite => {
            c.deployed_with_data();
        }
        Backend::Postgres | Backend::Mysql => {
            c.run(&["deploy"]).success();
            c.sql(SEED);
        }
    }
    c
}

/// Database, platform and locks as they are now, read from the real database: a
/// server's schema and rows, and its deploy lock among the locks.
fn read_state(c: &Case) -> State {
    c.with_server_db(|backend, db| {
        snapshot_lines(&if backend == Backend::Postgres {
            pg::server().snapshot(db)
        } else {
            my::server().snapshot(db)
        })
    })
}

/// A server snapshot as one entry of lines, compared line by line.
fn snapshot_lines(text: &str) -> BTreeMap<String, Vec<String>> {
    BTreeMap::from([(
        "snapshot".to_owned(),
        text.lines().map(str::to_owned).collect(),
    )])
}

/// Asserts two database snapshots are equal, showing the lines missing and added.
#[track_caller]
fn assert_same_db(
    actual: &BTreeMap<String, Vec<String>>,
    expected: &BTreeMap<String, Vec<String>>,
    what: &str,
) {
    let keys: BTreeSet<&String> = actual.keys().chain(expected.keys()).collect();
    let mut diffs = Vec::new();
    for key in keys {
        let (a, e) = (
            actual.get(key).cloned().unwrap_or_default(),
            expected.get(key).cloned().unwrap_or_default(),
        );
        if a != e {
            let missing: Vec<&String> = e.iter().filter(|l| !a.contains(l)).collect();
            let added: Vec<&String> = a.iter().filter(|l| !e.contains(l)).collect();
            diffs.push(format!(
                "{key}:\n  missing {missing:#?}\n  added   {added:#?}\n  (expected {} line(s), found {})",
                e.len(),
                a.len()
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "{what}: database differs\n{}",
        diffs.join("\n")
    );
}

/// A deployed project with data and one new pending migration (reversible or not), and
/// its state before the run under test.
fn setup(backend: Backend, reversible: bool) -> (Case, State) {
    let c = deployed_with_data(backend);
    let (up, down) = new_migration(backend);
    c.add_migration(NEW, up, reversible.then_some(down));
    std::fs::remove_file(c.file("calls.log")).unwrap();
    let before = c.state();
    let db = before.db.values().flatten().cloned().collect::<Vec<_>>();
    assert!(db.iter().any(|l| l.contains("recipes")), "{:#?}", before.db);
    assert!(db.iter().any(|l| l.contains("Salad")), "{:#?}", before.db);
    assert!(!db.iter().any(|l| l.contains("x_notes")));
    assert_eq!(before.platform, "maintenance=false\njobs=3\n");
    assert!(before.locks.is_empty(), "{:?}", before.locks);
    (c, before)
}

/// The run failed at `step`, exited 1, undid exactly `undone` (newest first), and the
/// database, platform and locks are what they were before it.
#[track_caller]
fn assert_rolled_back(c: &Case, before: &State, run: &Run, step: &str, undone: &[&str]) {
    assert_failed_at(run, step);
    let records = last_journal(c);
    assert_eq!(ids(&records, "step_failed"), [step], "{records:#?}");
    assert_eq!(
        ids(&records, "compensation_finished"),
        undone,
        "{records:#?}"
    );
    assert!(ids(&records, "compensation_failed").is_empty());
    assert_eq!(records.last().unwrap()["status"], "rolled_back");
    let after = c.state();
    assert_same_db(&after.db, &before.db, "after the rollback");
    assert_eq!(after.platform, before.platform);
    assert_eq!(after.locks, before.locks);
}

/// The migrate step really applied the new migration before the failure.
#[track_caller]
fn assert_migrated(p: &Project) {
    let records = last_journal(p);
    let finished = records
        .iter()
        .find(|r| r["record"] == "step_finished" && r["id"] == "migrate")
        .unwrap_or_else(|| panic!("migrate did not finish: {records:#?}"));
    assert!(
        finished["message"]
            .as_str()
            .unwrap()
            .contains("applied 1 migration(s)"),
        "{finished}"
    );
}

fn preflight_failure_is_caught_by_the_plan_and_touches_nothing(b: Backend) {
    let (c, before) = setup(b, true);
    c.health.set_status(503);
    let run = c.run(&["deploy"]);
    run.expect_code(2);
    assert!(run.stderr().contains("not healthy"), "{}", run.stderr());
    let after = c.state();
    assert_same_db(&after.db, &before.db, "after the refused deploy");
    assert_eq!(after, before);
    assert_eq!(
        c.journals().len(),
        1,
        "no journal for a run that never started"
    );
    assert!(c.calls().is_empty(), "{:?}", c.calls());
}

fn maintenance_on_failure_rolls_back(b: Backend) {
    let (c, before) = setup(b, true);
    c.set_command(
        "maintenance_on",
        MAINTENANCE_ON,
        "\"echo maintenance_on_refused >> calls.log; exit 1\"",
    );
    let run = c.run(&["deploy"]);
    assert_rolled_back(&c, &before, &run, "maintenance-on", &["maintenance-on"]);
    assert_eq!(c.calls(), ["maintenance_on_refused", "maintenance_off"]);
}

fn jobs_down_failure_rolls_back(b: Backend) {
    let (c, before) = setup(b, true);
    c.set_command("scale",
        SCALE,
        "\"if [ {replicas} = 0 ]; then echo refused >&2; exit 1; fi; echo {target}={replicas} > platform/{target}; echo scale_{target}_{replicas} >> calls.log\"",
    );
    let run = c.run(&["deploy"]);
    assert_rolled_back(
        &c,
        &before,
        &run,
        "jobs-down",
        &["jobs-down", "maintenance-on"],
    );
    assert_eq!(
        c.calls(),
        ["maintenance_on", "scale_jobs_3", "maintenance_off"]
    );
}

fn backup_failure_rolls_back_and_keeps_the_existing_backup(b: Backend) {
    let (c, before) = setup(b, true);
    c.edit_pipeline(
        "with: { name: \"pre-{version}-{timestamp}\", verify: restore }",
        "with: { name: fixed-name, verify: restore }",
    );
    // A backup with that id is already there: the store refuses to overwrite it, which
    // the plan does not check.
    c.write("state/backups/fixed-name.dump", "an older backup");
    let run = c.run(&["deploy"]);
    assert_rolled_back(
        &c,
        &before,
        &run,
        "backup",
        &["jobs-down", "maintenance-on"],
    );
    assert!(run.all().contains("already exists"), "{}", run.all());
    assert_eq!(c.read("state/backups/fixed-name.dump"), "an older backup");
    assert!(!c.file("state/backups/fixed-name.manifest.json").exists());
    assert!(!c.file("state/backups/fixed-name.dump.partial").exists());
}

fn migrate_failure_reverts_the_migrations_it_applied(b: Backend) {
    let (c, before) = setup(b, true);
    // The first new migration applies; the second fails half-way through its SQL.
    let (up, down) = broken_migration(b);
    c.add_migration(BROKEN, up, Some(down));
    // Down files, not the backup (`auto` would restore it): exactly the applied ones.
    c.write_pipeline(&c.pipeline().replace("rollback: auto", "rollback: down"));
    let run = c.run(&["deploy"]);
    assert_rolled_back(
        &c,
        &before,
        &run,
        "migrate",
        &["migrate", "jobs-down", "maintenance-on"],
    );
    assert!(run.all().contains("no_such_table"), "{}", run.all());
    assert!(
        run.all().contains("reverted 20250101000000 add x"),
        "{}",
        run.all()
    );
    // Only MySQL had half the broken migration applied and must undo it.
    assert_eq!(
        run.all().contains("reverted 20250101000100 broken"),
        b == Backend::Mysql,
        "{}",
        run.all()
    );
    // The first migration had really been applied before the second failed.
    let notes: Vec<Value> = last_journal(&c)
        .into_iter()
        .filter(|r| r["record"] == "step_started" && r["id"] == "migrate")
        .collect();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["compensation"]["action"], "revert_migrations");
}

fn validate_failure_reverts_the_new_migration(b: Backend) {
    let (c, before) = setup(b, true);
    c.fail_validation_once_migrated("after-new");
    let run = c.run(&["deploy"]);
    assert_migrated(&c);
    assert_rolled_back(
        &c,
        &before,
        &run,
        "validate",
        &["migrate", "jobs-down", "maintenance-on"],
    );
    assert!(
        run.all().contains("`after-new` found 1 issue(s)"),
        "{}",
        run.all()
    );
    assert_eq!(
        c.calls(),
        [
            "maintenance_on",
            "scale_jobs_0",
            "scale_jobs_3",
            "maintenance_off"
        ]
    );
}

fn maintenance_off_failure_rolls_back(b: Backend) {
    let (c, before) = setup(b, true);
    // Fails once: the undo of maintenance-on turns it off again later.
    c.set_command("maintenance_off",
        MAINTENANCE_OFF,
        "\"if [ -f fail-once ]; then rm fail-once; exit 1; fi; echo maintenance=false > platform/maintenance; echo maintenance_off >> calls.log\"",
    );
    c.write("fail-once", "");
    let run = c.run(&["deploy"]);
    assert_migrated(&c);
    assert_rolled_back(
        &c,
        &before,
        &run,
        "maintenance-off",
        &["maintenance-off", "migrate", "jobs-down", "maintenance-on"],
    );
}

fn jobs_up_failure_rolls_back(b: Backend) {
    let (c, before) = setup(b, true);
    c.set_command("scale",
        SCALE,
        "\"if [ {replicas} = 3 ] && [ -f fail-once ]; then rm fail-once; exit 1; fi; echo {target}={replicas} > platform/{target}; echo scale_{target}_{replicas} >> calls.log\"",
    );
    c.write("fail-once", "");
    let run = c.run(&["deploy"]);
    assert_migrated(&c);
    assert_rolled_back(
        &c,
        &before,
        &run,
        "jobs-up",
        &[
            "jobs-up",
            "maintenance-off",
            "migrate",
            "jobs-down",
            "maintenance-on",
        ],
    );
    assert_eq!(
        c.calls(),
        [
            "maintenance_on",
            "scale_jobs_0",
            "maintenance_off",
            "scale_jobs_0",
            "maintenance_on",
            "scale_jobs_3",
            "maintenance_off"
        ]
    );
}

fn health_failure_rolls_back_everything(b: Backend) {
    let (c, before) = setup(b, true);
    // Preflight (at plan time) polls the healthy server; the health step a broken one.
    let broken = HealthServer::start(500);
    c.edit_pipeline(
        "with: { expect: 200, interval: 1s, timeout: 2m }",
        &format!(
            "with: {{ url: \"{}\", expect: 200, interval: 100ms, timeout: 1s }}",
            broken.url
        ),
    );
    let run = c.run(&["deploy"]);
    assert_migrated(&c);
    assert_rolled_back(
        &c,
        &before,
        &run,
        "health",
        &[
            "jobs-up",
            "maintenance-off",
            "migrate",
            "jobs-down",
            "maintenance-on",
        ],
    );
    assert!(broken.hits() >= 2, "polled {} time(s)", broken.hits());
    assert!(run.all().contains("answered 500"), "{}", run.all());
}

fn step_timeout_kills_the_command_and_rolls_back(b: Backend) {
    let (c, before) = setup(b, true);
    c.edit_pipeline("  - uses: validate\n",
        "  - id: slow\n    uses: command\n    with: { run: \"sleep 20; echo too_late >> calls.log\" }\n    timeout: 500ms\n  - uses: validate\n",
    );
    let start = Instant::now();
    let run = c.run(&["deploy"]);
    let took = start.elapsed();
    assert_migrated(&c);
    assert_rolled_back(
        &c,
        &before,
        &run,
        "slow",
        &["migrate", "jobs-down", "maintenance-on"],
    );
    assert!(run.all().contains("timed out after 500ms"), "{}", run.all());
    assert!(took < Duration::from_secs(10), "the run took {took:?}");
    // The shell and what it started are gone: nothing keeps changing things after the
    // rollback.
    assert_eq!(processes_in(c.path()), Vec::<String>::new());
}

fn restore_rollback_puts_back_every_row(b: Backend) {
    // The new migration has no down file: only the backup can undo it.
    let (c, before) = setup(b, false);
    c.edit_pipeline(
        "with: { to: latest, rollback: auto }",
        "with: { to: latest, rollback: restore }",
    );
    c.fail_validation_once_migrated("after-new");
    let run = c.run(&["deploy"]);
    assert_migrated(&c);
    let records = last_journal(&c);
    let started = records
        .iter()
        .find(|r| r["record"] == "step_started" && r["id"] == "migrate")
        .unwrap();
    assert_eq!(started["compensation"]["action"], "restore_backup");
    assert_rolled_back(
        &c,
        &before,
        &run,
        "validate",
        &["migrate", "jobs-down", "maintenance-on"],
    );
}

fn failed_undo_stops_with_exit_3_and_recover_finishes_it(b: Backend) {
    let (c, before) = setup(b, true);
    c.fail_validation_once_migrated("after-new");
    // maintenance_off fails while the marker exists: the undo of maintenance-on fails.
    c.set_command("maintenance_off",
        MAINTENANCE_OFF,
        "\"if [ -f off-blocked ]; then echo maintenance API down >&2; exit 1; fi; echo maintenance=false > platform/maintenance; echo maintenance_off >> calls.log\"",
    );
    c.write("off-blocked", "");
    let run = c.run(&["deploy"]);
    run.expect_code(3);
    let out = run.all();
    assert!(out.contains("ROLLBACK INCOMPLETE"), "{out}");
    assert!(out.contains("maintenance back off"), "{out}");
    assert!(out.contains("maintenance API down"), "{out}");
    assert!(out.contains("cutover recover"), "{out}");
    let records = last_journal(&c);
    assert_eq!(records.last().unwrap()["status"], "rollback_failed");
    assert_eq!(
        ids(&records, "compensation_finished"),
        ["migrate", "jobs-down"]
    );
    assert_eq!(ids(&records, "compensation_failed"), ["maintenance-on"]);
    // What was undone is undone; maintenance is left on, the safe state.
    let after = c.state();
    assert_same_db(&after.db, &before.db, "after the incomplete rollback");
    assert_eq!(after.platform, "maintenance=true\njobs=3\n");
    assert!(after.locks.is_empty(), "{:?}", after.locks);

    // A new deploy must not start from this half-undone state.
    let again = c.run(&["deploy"]);
    again.expect_code(4);
    assert!(again.all().contains("cutover recover"), "{}", again.all());
    assert_eq!(c.platform(), "maintenance=true\njobs=3\n");

    // Once the cause is fixed, recover finishes the rollback.
    std::fs::remove_file(c.file("off-blocked")).unwrap();
    let recover = c.run(&["recover"]);
    assert!(
        matches!(recover.code(), 0 | 1),
        "recover exited {}:\n{}",
        recover.code(),
        recover.all()
    );
    assert_eq!(c.state(), before);
    let records = last_journal(&c);
    assert_eq!(records.last().unwrap()["status"], "rolled_back");
    assert_eq!(
        ids(&records, "compensation_finished"),
        ["migrate", "jobs-down", "maintenance-on"]
    );
    // Nothing left to recover, and a deploy can run again.
    c.run(&["recover"]).success();
    assert_eq!(c.state(), before);
}

/// Declares every case once, as a test per backend: `sqlite::NAME`, `postgres::NAME`
/// and `mysql::NAME`.
macro_rules! cases {
    ($($case:ident),* $(,)?) => {
        cases!(@backend sqlite, Sqlite; $($case),*);
        cases!(@backend postgres, Postgres; $($case),*);
        cases!(@backend mysql, Mysql; $($case),*);
    };
    (@backend $module:ident, $backend:ident; $($case:ident),*) => {
        mod $module {
            $(
                #[test]
                fn $case() {
                    super::$case(super::Backend::$backend);
                }
            )*
        }
    };
}

cases!(
    preflight_failure_is_caught_by_the_plan_and_touches_nothing,
    maintenance_on_failure_rolls_back,
    jobs_down_failure_rolls_back,
    backup_failure_rolls_back_and_keeps_the_existing_backup,
    migrate_failure_reverts_the_migrations_it_applied,
    validate_failure_reverts_the_new_migration,
    maintenance_off_failure_rolls_back,
    jobs_up_failure_rolls_back,
    health_failure_rolls_back_everything,
    step_timeout_kills_the_command_and_rolls_back,
    restore_rollback_puts_back_every_row,
    failed_undo_stops_with_exit_3_and_recover_finishes_it,
);
