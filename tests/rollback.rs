//! A failure injected at every step of the shipped `pipelines/deploy.yaml` rolls back
//! everything the run did: the database (every table and row, the migration history
//! included), the platform and the lock folder end exactly as they were before the run.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{HealthServer, Project, Run, State, assert_same_db, replace_once};

/// A new migration, pending after `deployed_with_data`: it adds a table, an index and
/// rows, and changes existing rows, so undoing it has real work to do.
const NEW: &str = "20250101000000_add_x";
const NEW_UP: &str = "CREATE TABLE x_notes (
    id        INTEGER PRIMARY KEY,
    recipe_id INTEGER NOT NULL REFERENCES recipes (id),
    note      TEXT NOT NULL
);
CREATE INDEX idx_x_notes_recipe ON x_notes (recipe_id);
INSERT INTO x_notes (recipe_id, note) SELECT id, 'note for ' || title FROM recipes;
UPDATE users SET display_name = display_name || ' (x)';
";
const NEW_DOWN: &str = "DROP INDEX idx_x_notes_recipe;
DROP TABLE x_notes;
UPDATE users SET display_name = substr(display_name, 1, length(display_name) - 4);
";

/// The shipped platform commands, as `Project::default_config` writes them.
const MAINTENANCE_ON: &str =
    "\"echo maintenance=true > platform/maintenance; echo maintenance_on >> calls.log\"";
const MAINTENANCE_OFF: &str =
    "\"echo maintenance=false > platform/maintenance; echo maintenance_off >> calls.log\"";
const SCALE: &str =
    "\"echo {target}={replicas} > platform/{target}; echo scale_{target}_{replicas} >> calls.log\"";

/// A deployed project with data and one new pending migration (reversible or not), and
/// its state before the run under test.
fn setup(reversible: bool) -> (Project, State) {
    let p = Project::new();
    p.deployed_with_data();
    p.add_migration(NEW, NEW_UP, reversible.then_some(NEW_DOWN));
    std::fs::remove_file(p.file("calls.log")).unwrap();
    let before = p.state();
    assert!(before.db.contains_key("table recipes"), "{:?}", before.db);
    assert!(!before.db.contains_key("table x_notes"));
    assert_eq!(before.platform, "maintenance=false\njobs=3\n");
    assert!(before.locks.is_empty());
    (p, before)
}

/// Replaces one platform command in the project's config.
fn set_command(p: &Project, key: &str, shipped: &str, replacement: &str) {
    let config = replace_once(
        &p.default_config(),
        &format!("{key}: {shipped}"),
        &format!("{key}: {replacement}"),
    );
    p.write_config(&config);
}

/// Replaces one piece of the project's pipeline.
fn edit_pipeline(p: &Project, from: &str, to: &str) {
    let text = replace_once(&p.pipeline(), from, to);
    p.write_pipeline(&text);
}

/// The validate step with an inline check that always reports an issue.
fn fail_validation(p: &Project) {
    edit_pipeline(
        p,
        "with: { queries: validations/ }",
        "with: { queries: validations/, checks: [{ name: always, sql: \"SELECT 1 AS issues\" }] }",
    );
}

fn last_journal(p: &Project) -> Vec<Value> {
    p.journals().pop().expect("a journal")
}

/// Ids of the records of one kind, in journal order.
fn ids(records: &[Value], kind: &str) -> Vec<String> {
    records
        .iter()
        .filter(|r| r["record"] == kind)
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The run failed at `step`, exited 1, undid exactly `undone` (newest first), and the
/// database, platform and locks are what they were before it.
#[track_caller]
fn assert_rolled_back(p: &Project, before: &State, run: &Run, step: &str, undone: &[&str]) {
    run.expect_code(1);
    assert!(
        run.all().contains(&format!("failed at step `{step}`")),
        "{}",
        run.all()
    );
    let records = last_journal(p);
    assert_eq!(ids(&records, "step_failed"), [step], "{records:#?}");
    assert_eq!(
        ids(&records, "compensation_finished"),
        undone,
        "{records:#?}"
    );
    assert!(ids(&records, "compensation_failed").is_empty());
    assert_eq!(records.last().unwrap()["status"], "rolled_back");
    let after = p.state();
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

#[test]
fn preflight_failure_is_caught_by_the_plan_and_touches_nothing() {
    let (p, before) = setup(true);
    p.health.set_status(503);
    let run = p.run(&["deploy"]);
    run.expect_code(2);
    assert!(run.stderr().contains("not healthy"), "{}", run.stderr());
    assert_eq!(p.state(), before);
    assert_eq!(
        p.journals().len(),
        1,
        "no journal for a run that never started"
    );
    assert!(p.calls().is_empty(), "{:?}", p.calls());
}

#[test]
fn maintenance_on_failure_rolls_back() {
    let (p, before) = setup(true);
    set_command(
        &p,
        "maintenance_on",
        MAINTENANCE_ON,
        "\"echo maintenance_on_refused >> calls.log; exit 1\"",
    );
    let run = p.run(&["deploy"]);
    assert_rolled_back(&p, &before, &run, "maintenance-on", &["maintenance-on"]);
    assert_eq!(p.calls(), ["maintenance_on_refused", "maintenance_off"]);
}

#[test]
fn jobs_down_failure_rolls_back() {
    let (p, before) = setup(true);
    set_command(
        &p,
        "scale",
        SCALE,
        "\"if [ {replicas} = 0 ]; then echo refused >&2; exit 1; fi; echo {target}={replicas} > platform/{target}; echo scale_{target}_{replicas} >> calls.log\"",
    );
    let run = p.run(&["deploy"]);
    assert_rolled_back(
        &p,
        &before,
        &run,
        "jobs-down",
        &["jobs-down", "maintenance-on"],
    );
    assert_eq!(
        p.calls(),
        ["maintenance_on", "scale_jobs_3", "maintenance_off"]
    );
}

#[test]
fn backup_failure_rolls_back_and_keeps_the_existing_backup() {
    let (p, before) = setup(true);
    edit_pipeline(
        &p,
        "with: { name: \"pre-{version}-{timestamp}\", verify: restore }",
        "with: { name: fixed-name, verify: restore }",
    );
    // A backup with that id is already there: the store refuses to overwrite it, which
    // the plan does not check.
    p.write("state/backups/fixed-name.dump", "an older backup");
    let run = p.run(&["deploy"]);
    assert_rolled_back(
        &p,
        &before,
        &run,
        "backup",
        &["jobs-down", "maintenance-on"],
    );
    assert!(run.all().contains("already exists"), "{}", run.all());
    assert_eq!(p.read("state/backups/fixed-name.dump"), "an older backup");
    assert!(!p.file("state/backups/fixed-name.manifest.json").exists());
    assert!(!p.file("state/backups/fixed-name.dump.partial").exists());
}

#[test]
fn migrate_failure_reverts_the_migrations_it_applied() {
    let (p, before) = setup(true);
    // The first new migration applies; the second fails half-way through its SQL.
    p.add_migration(
        "20250101000100_broken",
        "CREATE TABLE y_half (id INTEGER PRIMARY KEY);\nINSERT INTO no_such_table VALUES (1);\n",
        Some("DROP TABLE y_half;\n"),
    );
    let run = p.run(&["deploy"]);
    assert_rolled_back(
        &p,
        &before,
        &run,
        "migrate",
        &["migrate", "jobs-down", "maintenance-on"],
    );
    assert!(run.all().contains("no_such_table"), "{}", run.all());
    // The first migration had really been applied before the second failed.
    let notes: Vec<Value> = last_journal(&p)
        .into_iter()
        .filter(|r| r["record"] == "step_started" && r["id"] == "migrate")
        .collect();
    assert_eq!(notes.len(), 1);
    assert_eq!(notes[0]["compensation"]["action"], "migrate_down");
}

#[test]
fn validate_failure_reverts_the_new_migration() {
    let (p, before) = setup(true);
    fail_validation(&p);
    let run = p.run(&["deploy"]);
    assert_migrated(&p);
    assert_rolled_back(
        &p,
        &before,
        &run,
        "validate",
        &["migrate", "jobs-down", "maintenance-on"],
    );
    assert!(
        run.all().contains("`always` found 1 issue(s)"),
        "{}",
        run.all()
    );
    assert_eq!(
        p.calls(),
        [
            "maintenance_on",
            "scale_jobs_0",
            "scale_jobs_3",
            "maintenance_off"
        ]
    );
}

#[test]
fn maintenance_off_failure_rolls_back() {
    let (p, before) = setup(true);
    // Fails once: the undo of maintenance-on turns it off again later.
    set_command(
        &p,
        "maintenance_off",
        MAINTENANCE_OFF,
        "\"if [ -f fail-once ]; then rm fail-once; exit 1; fi; echo maintenance=false > platform/maintenance; echo maintenance_off >> calls.log\"",
    );
    p.write("fail-once", "");
    let run = p.run(&["deploy"]);
    assert_migrated(&p);
    assert_rolled_back(
        &p,
        &before,
        &run,
        "maintenance-off",
        &["maintenance-off", "migrate", "jobs-down", "maintenance-on"],
    );
}

#[test]
fn jobs_up_failure_rolls_back() {
    let (p, before) = setup(true);
    set_command(
        &p,
        "scale",
        SCALE,
        "\"if [ {replicas} = 3 ] && [ -f fail-once ]; then rm fail-once; exit 1; fi; echo {target}={replicas} > platform/{target}; echo scale_{target}_{replicas} >> calls.log\"",
    );
    p.write("fail-once", "");
    let run = p.run(&["deploy"]);
    assert_migrated(&p);
    assert_rolled_back(
        &p,
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
        p.calls(),
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

#[test]
fn health_failure_rolls_back_everything() {
    let (p, before) = setup(true);
    // Preflight (at plan time) polls the healthy server; the health step a broken one.
    let broken = HealthServer::start(500);
    edit_pipeline(
        &p,
        "with: { expect: 200, interval: 1s, timeout: 2m }",
        &format!(
            "with: {{ url: \"{}\", expect: 200, interval: 100ms, timeout: 1s }}",
            broken.url
        ),
    );
    let run = p.run(&["deploy"]);
    assert_migrated(&p);
    assert_rolled_back(
        &p,
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

#[test]
fn step_timeout_kills_the_command_and_rolls_back() {
    let (p, before) = setup(true);
    edit_pipeline(
        &p,
        "  - uses: validate\n",
        "  - id: slow\n    uses: command\n    with: { run: \"sleep 5\" }\n    timeout: 500ms\n  - uses: validate\n",
    );
    let start = Instant::now();
    let run = p.run(&["deploy"]);
    let took = start.elapsed();
    assert_migrated(&p);
    assert_rolled_back(
        &p,
        &before,
        &run,
        "slow",
        &["migrate", "jobs-down", "maintenance-on"],
    );
    assert!(run.all().contains("timed out after 500ms"), "{}", run.all());
    assert!(took < Duration::from_secs(4), "the run took {took:?}");
}

#[test]
fn restore_rollback_puts_back_every_row() {
    let (p, before) = setup(false);
    edit_pipeline(
        &p,
        "with: { to: latest, rollback: auto }",
        "with: { to: latest, rollback: restore }",
    );
    fail_validation(&p);
    let run = p.run(&["deploy"]);
    assert_migrated(&p);
    let records = last_journal(&p);
    let started = records
        .iter()
        .find(|r| r["record"] == "step_started" && r["id"] == "migrate")
        .unwrap();
    assert_eq!(started["compensation"]["action"], "restore_backup");
    assert_rolled_back(
        &p,
        &before,
        &run,
        "validate",
        &["migrate", "jobs-down", "maintenance-on"],
    );
}

#[test]
fn failed_undo_stops_with_exit_3_and_recover_finishes_it() {
    let (p, before) = setup(true);
    fail_validation(&p);
    // maintenance_off fails while the marker exists: the undo of maintenance-on fails.
    set_command(
        &p,
        "maintenance_off",
        MAINTENANCE_OFF,
        "\"if [ -f off-blocked ]; then echo maintenance API down >&2; exit 1; fi; echo maintenance=false > platform/maintenance; echo maintenance_off >> calls.log\"",
    );
    p.write("off-blocked", "");
    let run = p.run(&["deploy"]);
    run.expect_code(3);
    let out = run.all();
    assert!(out.contains("ROLLBACK INCOMPLETE"), "{out}");
    assert!(out.contains("maintenance back off"), "{out}");
    assert!(out.contains("maintenance API down"), "{out}");
    assert!(out.contains("cutover recover"), "{out}");
    let records = last_journal(&p);
    assert_eq!(records.last().unwrap()["status"], "rollback_failed");
    assert_eq!(
        ids(&records, "compensation_finished"),
        ["migrate", "jobs-down"]
    );
    assert_eq!(ids(&records, "compensation_failed"), ["maintenance-on"]);
    // What was undone is undone; maintenance is left on, the safe state.
    let after = p.state();
    assert_same_db(&after.db, &before.db, "after the incomplete rollback");
    assert_eq!(after.platform, "maintenance=true\njobs=3\n");
    assert!(after.locks.is_empty());

    // A new deploy must not start from this half-undone state.
    let again = p.run(&["deploy"]);
    again.expect_code(4);
    assert!(again.all().contains("cutover recover"), "{}", again.all());
    assert_eq!(p.state().platform, "maintenance=true\njobs=3\n");

    // Once the cause is fixed, recover finishes the rollback.
    std::fs::remove_file(p.file("off-blocked")).unwrap();
    let recover = p.run(&["recover"]);
    assert!(
        matches!(recover.code(), 0 | 1),
        "recover exited {}:\n{}",
        recover.code(),
        recover.all()
    );
    assert_eq!(p.state(), before);
    let records = last_journal(&p);
    assert_eq!(records.last().unwrap()["status"], "rolled_back");
    assert_eq!(
        ids(&records, "compensation_finished"),
        ["migrate", "jobs-down", "maintenance-on"]
    );
    // Nothing left to recover, and a deploy can run again.
    p.run(&["recover"]).success();
    assert_eq!(p.state(), before);
}
