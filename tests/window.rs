//! The way back is never locked out by a `window:`. Outside a closed window, rolling back
//! (to an older version, or a halted run), `recover`, `migrate down`, `backup create` and
//! the read-only commands run, and the journal records that they ran outside the window;
//! `deploy`, `migrate up`, `resume` of a deploy and a rollback to a newer version are refused
//! (exit 2, nothing touched) unless forced with `--outside-window --reason`, which the
//! journal and the report record.
//!
//! The window is closed deterministically: it starts two hours after the current UTC hour.

mod support;

use std::os::unix::process::ExitStatusExt;

use chrono::Timelike;
use serde_json::Value;
use support::{Project, replace_once};

/// The latest shipped migration, and two older ones.
const LATEST: &str = "20240301100100";
const OLDER: &str = "20240301100000";
const OLDEST_KEPT: &str = "20240215090000";

/// A one-hour window that starts two hours from now: closed for the whole test.
fn closed_window() -> String {
    let hour = chrono::Utc::now().hour();
    format!("{:02}:00-{:02}:00 UTC", (hour + 2) % 24, (hour + 3) % 24)
}

fn close_window(p: &Project) -> String {
    let window = closed_window();
    p.write_config(&replace_once(
        &p.default_config(),
        "  local:\n",
        &format!("  local:\n    window: \"{window}\"\n"),
    ));
    window
}

fn kinds(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["record"].as_str().unwrap_or_default())
        .collect()
}

/// The newest run's journal, which must record that it ran outside `window`, right after
/// it started (or was taken up again), not forced.
#[track_caller]
fn assert_went_back_outside(p: &Project, window: &str) -> Vec<Value> {
    let records = p.journals().pop().expect("a journal");
    let outside: Vec<&Value> = records
        .iter()
        .filter(|r| r["record"] == "outside_window")
        .collect();
    assert_eq!(outside.len(), 1, "{:?}", kinds(&records));
    assert_eq!(outside[0]["window"], window);
    assert_eq!(outside[0]["forced"], false);
    assert!(!outside[0]["user"].as_str().unwrap_or_default().is_empty());
    records
}

#[test]
fn the_way_back_runs_outside_a_closed_window_and_says_so() {
    let p = Project::new();
    p.run(&["deploy"]).success();
    let window = close_window(&p);

    // Reading only.
    p.run(&["backup", "list"]).success();
    let status = p.run(&["migrate", "status"]);
    status.success();
    assert!(status.all().contains(LATEST), "{}", status.all());

    p.run(&["backup", "create"]).success();
    let records = assert_went_back_outside(&p, &window);
    assert_eq!(kinds(&records)[..2], ["run_started", "outside_window"]);

    p.run(&["migrate", "down", "--to", OLDER]).success();
    assert_went_back_outside(&p, &window);

    let rollback = p.run(&["rollback", "--to", OLDEST_KEPT, "--report", "back.json"]);
    rollback.success();
    assert!(
        rollback.all().contains("outside the window"),
        "{}",
        rollback.all()
    );
    let records = assert_went_back_outside(&p, &window);
    assert_eq!(records[0]["command"], "rollback");
    assert_eq!(records.last().unwrap()["status"], "succeeded");
    let report: Value = serde_json::from_str(&p.read("back.json")).unwrap();
    assert_eq!(report["outside_window"]["window"], window.as_str());
    assert_eq!(report["outside_window"]["forced"], false);
    assert!(p.run(&["migrate", "status"]).all().contains(OLDEST_KEPT));

    // Forward is held back: a rollback to a newer version, migrate up, deploy.
    let before = (p.state(), p.journals().len());
    for args in [
        &["rollback", "--to", LATEST][..],
        &["migrate", "up"],
        &["deploy"],
    ] {
        let refused = p.run(args);
        refused.expect_code(2);
        assert!(
            refused.stderr().contains("--outside-window --reason"),
            "{args:?}: {}",
            refused.stderr()
        );
        assert_eq!(
            (p.state(), p.journals().len()),
            before,
            "{args:?} touched nothing"
        );
    }
}

#[test]
fn a_forward_run_outside_the_window_needs_a_reason_which_is_recorded() {
    let p = Project::new();
    close_window(&p);
    let before = p.state();
    for args in [
        &["deploy"][..],
        &["migrate", "up"],
        &["deploy", "--outside-window"],
        &["deploy", "--outside-window", "--reason", "  "],
        &["deploy", "--reason", "hotfix INC-42"],
    ] {
        p.run(args).expect_code(2);
        assert_eq!(p.state(), before, "{args:?} touched nothing");
        assert!(p.journals().is_empty(), "{args:?} opened no journal");
    }

    let forced = p.run(&[
        "deploy",
        "--outside-window",
        "--reason",
        "hotfix INC-42",
        "--report",
        "report.json",
    ]);
    forced.success();
    assert!(forced.all().contains("hotfix INC-42"), "{}", forced.all());
    let records = p.journals().pop().unwrap();
    assert_eq!(kinds(&records)[..2], ["run_started", "outside_window"]);
    assert_eq!(records[1]["forced"], true);
    assert_eq!(records[1]["reason"], "hotfix INC-42");
    assert_eq!(records.last().unwrap()["status"], "succeeded");
    let report: Value = serde_json::from_str(&p.read("report.json")).unwrap();
    assert_eq!(report["outside_window"]["forced"], true);
    assert_eq!(report["outside_window"]["reason"], "hotfix INC-42");
    assert!(p.run(&["migrate", "status"]).all().contains(LATEST));
}

#[test]
fn recover_finishes_a_dead_run_outside_the_window() {
    let p = Project::new();
    p.write(
        "pipelines/one.yaml",
        "name: one\nsteps:\n  - id: only\n    uses: command\n    with: { run: \"echo ran >> calls.log\" }\n",
    );
    // Dies after the step finished, before the run was closed.
    let crashed = p
        .cmd()
        .args(["deploy", "-p", "pipelines/one.yaml"])
        .env("CUTOVER_TEST_CRASH_AFTER_RECORD", "5")
        .output()
        .unwrap();
    assert!(crashed.status.signal().is_some(), "{crashed:?}");
    let window = close_window(&p);
    assert_eq!(
        kinds(&p.journals().pop().unwrap()),
        [
            "run_started",
            "fact",
            "step_started",
            "process_started",
            "step_finished"
        ]
    );

    let recover = p.run(&["recover"]);
    recover.success();
    assert!(
        recover.all().contains("closed as succeeded"),
        "{}",
        recover.all()
    );
    let records = assert_went_back_outside(&p, &window);
    assert_eq!(kinds(&records)[5..], ["outside_window", "run_finished"]);
}

#[test]
fn a_halted_deploy_is_rolled_back_but_not_resumed_outside_the_window() {
    let p = Project::new();
    p.write(
        "pipelines/halting.yaml",
        "name: halting\nsteps:\n  - id: first\n    uses: command\n    with: { run: \"echo first >> calls.log\", undo: \"echo undo-first >> calls.log\" }\n  - id: gate\n    uses: command\n    with: { run: \"exit 1\" }\n    on_failure: halt\n",
    );
    p.run(&["deploy", "-p", "pipelines/halting.yaml"])
        .expect_code(3);
    let window = close_window(&p);

    let resume = p.run(&["resume", "-p", "pipelines/halting.yaml"]);
    resume.expect_code(2);
    assert!(
        resume.stderr().contains("--outside-window"),
        "{}",
        resume.stderr()
    );
    assert_eq!(p.calls(), ["first"], "resume touched nothing");

    p.run(&["rollback"]).success();
    assert_eq!(p.calls(), ["first", "undo-first"]);
    let records = assert_went_back_outside(&p, &window);
    assert_eq!(records.last().unwrap()["status"], "rolled_back");
}
