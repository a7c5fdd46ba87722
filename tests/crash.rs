//! kill -9 at every journal transition: the binary aborts right after its Nth journal
//! record is on disk (`CUTOVER_TEST_CRASH_AFTER_RECORD=N`). Afterwards a new deploy is
//! refused until `recover` runs, and `recover` leaves exactly the pre-deploy state — or,
//! when every step had finished, the deployed state — and is a no-op the second time.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;
use support::{Project, State, assert_same_db, exec_sql, replace_once};

const SIGABRT: i32 = 6;

const NEW: &str = "20250101000000_add_x";
const NEW_UP: &str =
    "CREATE TABLE x_notes (id INTEGER PRIMARY KEY, recipe_id INTEGER NOT NULL, note TEXT NOT NULL);
INSERT INTO x_notes (recipe_id, note) SELECT id, 'note for ' || title FROM recipes;
UPDATE users SET display_name = display_name || ' (x)';
";
const NEW_DOWN: &str = "DROP TABLE x_notes;
UPDATE users SET display_name = substr(display_name, 1, length(display_name) - 4);
";

/// Which deploy is crashed.
#[derive(Clone, Copy)]
enum Scenario {
    /// The shipped pipeline, which succeeds.
    Succeeds,
    /// The shipped pipeline with a validation that fails, so the run rolls back.
    FailsAtValidate,
}

/// A deployed project with data and one pending reversible migration; its state.
fn prepared(scenario: Scenario) -> (Project, State) {
    let p = Project::new();
    p.deployed_with_data();
    // Fixed row times, so the reference project's state compares equal to this one's.
    exec_sql(
        &p.file("state/app.db"),
        "UPDATE users SET created_at = '2025-01-01 00:00:00'; UPDATE recipes SET created_at = '2025-01-01 00:00:00';",
    );
    p.add_migration(NEW, NEW_UP, Some(NEW_DOWN));
    if let Scenario::FailsAtValidate = scenario {
        let text = replace_once(
            &p.pipeline(),
            "with: { queries: validations/ }",
            "with: { queries: validations/, checks: [{ name: always, sql: \"SELECT COUNT(*) AS issues FROM _sqlx_migrations WHERE version = 20250101000000\" }] }",
        );
        p.write_pipeline(&text);
    }
    std::fs::remove_file(p.file("calls.log")).unwrap();
    let before = p.state();
    assert!(!before.db.contains_key("table x_notes"));
    (p, before)
}

/// What an uninterrupted run of the scenario writes and leaves.
struct Reference {
    /// The record kinds of its journal, in order.
    kinds: Vec<String>,
    /// The state it leaves.
    after: State,
}

fn reference(scenario: Scenario) -> Reference {
    let (p, before) = prepared(scenario);
    let run = p.run(&["deploy"]);
    let records = p.journals().pop().unwrap();
    let after = p.state();
    match scenario {
        Scenario::Succeeds => {
            run.success();
            assert!(after.db.contains_key("table x_notes"));
            assert_eq!(records.last().unwrap()["status"], "succeeded");
        }
        Scenario::FailsAtValidate => {
            run.expect_code(1);
            assert_eq!(after, before);
            assert_eq!(records.last().unwrap()["status"], "rolled_back");
        }
    }
    assert!(after.locks.is_empty());
    Reference {
        kinds: records
            .iter()
            .map(|r| r["record"].as_str().unwrap().to_owned())
            .collect(),
        after,
    }
}

fn last_journal(p: &Project) -> Vec<Value> {
    p.journals().pop().expect("a journal")
}

/// Crashes the scenario's deploy after journal record `n`, then checks deploy, recover
/// and recover again.
fn crash_case(scenario: Scenario, reference: &Reference, n: usize) {
    let total = reference.kinds.len();
    let last_step_done = reference
        .kinds
        .iter()
        .rposition(|k| k == "step_finished")
        .unwrap()
        + 1;
    let (p, before) = prepared(scenario);

    let crashed = p
        .cmd()
        .arg("deploy")
        .env("CUTOVER_TEST_CRASH_AFTER_RECORD", n.to_string())
        .output()
        .unwrap();
    assert_eq!(
        crashed.status.signal(),
        Some(SIGABRT),
        "the deploy should die after record {n}: {:?}\n{}",
        crashed.status,
        String::from_utf8_lossy(&crashed.stderr)
    );
    let records = last_journal(&p);
    assert_eq!(records.len(), n, "records on disk: {records:#?}");
    let run_id = records[0]["run_id"].as_str().unwrap().to_owned();
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r["record"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        reference.kinds[..n],
        "same records as the uninterrupted run"
    );
    assert!(
        !p.locks().is_empty(),
        "the dead run's lock file is still there"
    );

    if n == total {
        // The run was closed before the process died: nothing to recover; the lock it
        // left is stale and the next deploy takes it over.
        let recover = p.run(&["recover"]);
        recover.success();
        assert!(
            recover.all().contains("nothing to recover"),
            "{}",
            recover.all()
        );
        let state = p.state();
        assert_same_db(&state.db, &reference.after.db, "after a crash once closed");
        assert_eq!(state.platform, reference.after.platform);
        let again = p.run(&["deploy"]);
        again.expect_code(match scenario {
            Scenario::Succeeds => 0,
            Scenario::FailsAtValidate => 1,
        });
        assert!(p.locks().is_empty(), "{:?}", p.locks());
        return;
    }

    // A new deploy is refused, names the unfinished run and says what to do; it touches
    // nothing.
    let mid = p.state();
    let calls = p.calls();
    let again = p.run(&["deploy"]);
    again.expect_code(4);
    let out = again.all();
    assert!(out.contains(&run_id), "should name run {run_id}:\n{out}");
    assert!(out.contains("cutover recover"), "{out}");
    assert_eq!(p.state(), mid);
    assert_eq!(p.calls(), calls);
    assert_eq!(p.journals().len(), 2, "the refused deploy wrote no journal");

    // Recover finishes the run.
    let recover = p.run(&["recover"]);
    let records = last_journal(&p);
    let state = p.state();
    let closes_as_succeeded = matches!(scenario, Scenario::Succeeds) && n >= last_step_done;
    if closes_as_succeeded {
        recover.success();
        assert!(
            recover.all().contains("closed as succeeded"),
            "{}",
            recover.all()
        );
        assert_eq!(records.last().unwrap()["status"], "succeeded");
        assert_same_db(&state.db, &reference.after.db, "after recover");
        assert_eq!(state.platform, reference.after.platform);
    } else {
        recover.expect_code(1);
        assert!(recover.all().contains("rolled back"), "{}", recover.all());
        assert_eq!(records.last().unwrap()["status"], "rolled_back");
        assert_same_db(&state.db, &before.db, "after recover");
        assert_eq!(state.platform, before.platform);
    }
    assert!(state.locks.is_empty(), "{:?}", state.locks);

    // A second recover has nothing to do and changes nothing.
    let journals = p.journals();
    let calls = p.calls();
    let second = p.run(&["recover"]);
    second.success();
    assert!(
        second.all().contains("nothing to recover"),
        "{}",
        second.all()
    );
    assert_eq!(p.state(), state);
    assert_eq!(p.journals(), journals);
    assert_eq!(p.calls(), calls);
}

/// Runs `crash_case` for every `n` in `points` on a few threads and reports every
/// failing crash point.
fn crash_at_each(scenario: Scenario, reference: &Reference, points: &[usize]) {
    let next = AtomicUsize::new(0);
    let failures = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(&n) = points.get(i) else { return };
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        crash_case(scenario, reference, n);
                    }));
                    if let Err(panic) = outcome {
                        let message = panic
                            .downcast_ref::<String>()
                            .cloned()
                            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                            .unwrap_or_default();
                        failures.lock().unwrap().push((
                            n,
                            format!(
                                "crash after record {n} ({}): {message}",
                                reference.kinds[n - 1]
                            ),
                        ));
                    }
                }
            });
        }
    });
    println!(
        "checked {} crash point(s): {:?}",
        next.load(Ordering::SeqCst).min(points.len()),
        points
    );
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    assert!(
        failures.is_empty(),
        "{} crash point(s) failed:\n{}",
        failures.len(),
        failures
            .iter()
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join("\n\n")
    );
}

#[test]
fn crash_at_every_record_of_a_deploy_then_recover() {
    let reference = reference(Scenario::Succeeds);
    // run_started, started/finished for each of the 9 steps, run_finished.
    assert_eq!(reference.kinds.len(), 20, "{:?}", reference.kinds);
    let points: Vec<usize> = (1..=reference.kinds.len()).collect();
    crash_at_each(Scenario::Succeeds, &reference, &points);
}

#[test]
fn crash_at_every_record_of_a_rollback_then_recover() {
    let reference = reference(Scenario::FailsAtValidate);
    // From the failure of validate through the rollback to the end of the run.
    let failed = reference
        .kinds
        .iter()
        .position(|k| k == "step_failed")
        .unwrap()
        + 1;
    assert!(
        reference.kinds[failed..]
            .iter()
            .filter(|k| *k == "compensation_finished")
            .count()
            == 3,
        "{:?}",
        reference.kinds
    );
    let points: Vec<usize> = (failed..=reference.kinds.len()).collect();
    crash_at_each(Scenario::FailsAtValidate, &reference, &points);
}
