//! Guided failure: `on_failure: rollback | halt | ask` per pipeline and per step, points of
//! no return, and what a halted run leaves — `status` shows it, `deploy` refuses while it is
//! open, `resume` continues it at the failed step, `rollback` undoes it. `ask` is answered
//! by typing at a real pseudo-terminal; without one it never waits.

mod support;

use std::process::{Command, Stdio};

use rexpect::process::WaitStatus;
use serde_json::Value;
use support::{Project, State, replace_once};

/// A pending migration that fails (its transaction leaves nothing behind).
const BROKEN: &str = "20250101000000_add_notes";
const BROKEN_UP: &str =
    "CREATE TABLE notes (id INTEGER PRIMARY KEY);\nINSERT INTO no_such_table VALUES (1);\n";
const GOOD_UP: &str = "CREATE TABLE notes (id INTEGER PRIMARY KEY);\n";
const DOWN: &str = "DROP TABLE notes;\n";

/// A deployed project with data, and a pipeline changed by `edit`.
fn project(edit: impl Fn(&str) -> String) -> Project {
    let p = Project::new();
    p.deployed_with_data();
    p.write_pipeline(&edit(&p.pipeline()));
    p
}

/// The pipeline with `on_failure: VALUE` at its top.
fn pipeline_policy(value: &'static str) -> impl Fn(&str) -> String {
    move |text| {
        replace_once(
            text,
            "name: deploy\n",
            &format!("name: deploy\non_failure: {value}\n"),
        )
    }
}

/// The records of the newest run.
fn last_journal(p: &Project) -> Vec<Value> {
    p.journals().pop().expect("a run")
}

fn records<'a>(journal: &'a [Value], kind: &str) -> Vec<&'a Value> {
    journal.iter().filter(|r| r["record"] == kind).collect()
}

fn user() -> String {
    std::env::var("USER").unwrap_or_else(|_| "unknown".into())
}

fn platform_is(p: &Project, maintenance: bool, jobs: u32) {
    assert_eq!(
        p.platform(),
        format!("maintenance={maintenance}\njobs={jobs}\n")
    );
}

#[test]
fn halt_leaves_everything_in_place_and_blocks_new_runs() {
    let p = project(pipeline_policy("halt"));
    let before = p.state();
    p.add_migration(BROKEN, BROKEN_UP, Some(DOWN));
    let halted = p.run(&["deploy"]);
    halted.expect_code(3);
    let err = halted.stderr();
    assert!(
        err.contains("HALTED for a human, resumable at step `migrate`"),
        "{err}"
    );
    assert!(err.contains("cutover resume -e local"), "{err}");
    assert!(err.contains("cutover rollback -e local"), "{err}");
    // Nothing was undone: maintenance on, jobs down, schema as before the migration.
    platform_is(&p, true, 0);
    assert_eq!(p.db_snapshot(), before.db);
    assert!(p.locks().is_empty(), "the lock is released");
    let journal = last_journal(&p);
    let run_id = journal[0]["run_id"].as_str().unwrap().to_owned();
    let decision = records(&journal, "decision");
    assert_eq!(decision.len(), 1);
    assert_eq!(decision[0]["choice"], "halt");
    assert_eq!(decision[0]["asked"], false);
    assert_eq!(decision[0]["id"], "migrate");
    let halt = records(&journal, "run_halted");
    assert_eq!(halt[0]["resume_from"], 4);
    assert_eq!(halt[0]["first_replicas"]["jobs"], 3);
    assert!(records(&journal, "run_finished").is_empty());
    assert!(records(&journal, "rollback_started").is_empty());

    let refused = p.run(&["deploy"]);
    refused.expect_code(4);
    let err = refused.stderr();
    assert!(err.contains(&format!("run {run_id}")), "{err}");
    assert!(err.contains("is halted at step `migrate`"), "{err}");
    assert!(err.contains("`cutover resume -e local`"), "{err}");
    assert!(err.contains("`cutover rollback -e local`"), "{err}");
    // `rollback --to` is a new run too: refused the same way.
    p.run(&["rollback", "--to", "20240101120000", "--yes"])
        .expect_code(4);

    let status = p.run(&["status"]);
    status.success();
    assert!(
        status
            .stdout()
            .contains(&format!("HALTED: run {run_id} at step `migrate`")),
        "{}",
        status.stdout()
    );
    let json: Value = serde_json::from_str(
        p.run(&["status", "--output", "json"])
            .stdout()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(json["result"]["halted"][0]["run_id"], run_id.as_str());
    assert_eq!(json["result"]["halted"][0]["resume_at"], "migrate");

    // `recover` is for runs that died; a halted run waits for a person.
    let recover = p.run(&["recover"]);
    recover.success();
    assert!(recover.stdout().contains("is halted for a human"));
    platform_is(&p, true, 0);
    let history = p.run(&["history"]);
    assert!(history.stdout().contains("halted"), "{}", history.stdout());
}

#[test]
fn resume_continues_at_the_failed_step_in_the_same_journal() {
    let p = project(pipeline_policy("halt"));
    p.add_migration(BROKEN, BROKEN_UP, Some(DOWN));
    p.run(&["deploy"]).expect_code(3);
    // The cause is fixed: the migration is corrected.
    p.add_migration(BROKEN, GOOD_UP, Some(DOWN));
    let resumed = p.run(&["resume"]);
    resumed.success();
    assert!(
        resumed.stdout().contains("deployed to local"),
        "{}",
        resumed.stdout()
    );
    platform_is(&p, false, 3);
    assert!(p.db_snapshot().contains_key("table notes"));
    let journals = p.journals();
    assert_eq!(journals.len(), 2, "one deploy before, then this run only");
    let journal = &journals[1];
    assert_eq!(records(journal, "run_resumed")[0]["from"], 4);
    // Steps before the halt are not run again.
    let started: Vec<&str> = records(journal, "step_started")
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        started,
        [
            "preflight",
            "maintenance-on",
            "jobs-down",
            "backup",
            "migrate",
            "migrate",
            "validate",
            "maintenance-off",
            "jobs-up",
            "health"
        ]
    );
    assert_eq!(records(journal, "run_finished")[0]["status"], "succeeded");
    // Free again.
    p.run(&["status"]).success();
    p.run(&["deploy"]).success();
    p.run(&["resume"]).expect_code(2);
}

#[test]
fn rollback_undoes_a_halted_run() {
    let p = project(|t| {
        // Per step: only the migration halts.
        replace_once(
            t,
            "    with: { to: latest, rollback: auto }\n",
            "    with: { to: latest, rollback: auto }\n    on_failure: halt\n",
        )
    });
    let before = p.state();
    p.add_migration(BROKEN, BROKEN_UP, Some(DOWN));
    p.run(&["deploy"]).expect_code(3);
    let undo = p.run(&["rollback", "--yes"]);
    undo.success();
    assert!(
        undo.stdout()
            .contains("scale jobs back to 3; maintenance back off"),
        "{}",
        undo.stdout()
    );
    assert_eq!(p.state(), before);
    let journal = last_journal(&p);
    assert_eq!(
        records(&journal, "run_finished")[0]["status"],
        "rolled_back"
    );
    // Nothing halted any more: the environment is free, and `rollback` alone has nothing
    // to undo.
    let nothing = p.run(&["rollback", "--yes"]);
    nothing.expect_code(2);
    assert!(
        nothing.stderr().contains("no halted run"),
        "{}",
        nothing.stderr()
    );
    p.add_migration(BROKEN, GOOD_UP, Some(DOWN));
    p.run(&["deploy"]).success();
}

/// The shipped pipeline with `migrate` as a point of no return and a last step that fails.
fn point_of_no_return(t: &str) -> String {
    let t = replace_once(
        t,
        "    timeout: 10m\n",
        "    timeout: 10m\n    point_of_no_return: true\n",
    );
    format!("{t}  - id: smoke-test\n    uses: command\n    with: {{ run: \"test -f smoke-ok\" }}\n")
}

#[test]
fn a_rollback_stops_at_the_point_of_no_return_and_halts() {
    let p = project(point_of_no_return);
    let before = p.state();
    p.add_migration(BROKEN, GOOD_UP, Some(DOWN));
    let run = p.run(&["deploy"]);
    run.expect_code(3);
    let err = run.stderr();
    assert!(err.contains("point of no return `migrate`"), "{err}");
    assert!(err.contains("resumable at step `validate`"), "{err}");
    // The steps after `migrate` were undone; the migration stays.
    platform_is(&p, true, 0);
    assert!(p.db_snapshot().contains_key("table notes"));
    let journal = last_journal(&p);
    assert_eq!(records(&journal, "point_of_no_return")[0]["id"], "migrate");
    let undone: Vec<&str> = records(&journal, "compensation_finished")
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(undone, ["jobs-up", "maintenance-off"]);
    assert_eq!(records(&journal, "run_halted")[0]["id"], "validate");

    // Resumed once the smoke test passes: on from `validate`.
    p.write("smoke-ok", "");
    p.run(&["resume"]).success();
    platform_is(&p, false, 3);

    // A person may still undo all of it, point of no return included.
    std::fs::remove_file(p.file("smoke-ok")).unwrap();
    p.add_migration(
        "20250201000000_more",
        "CREATE TABLE more (id INTEGER);\n",
        Some("DROP TABLE more;\n"),
    );
    let state_before_second = p.state();
    p.run(&["deploy"]).expect_code(3);
    p.run(&["rollback", "--yes"]).success();
    assert_eq!(p.state(), state_before_second);
    let _ = before;
}

#[test]
fn a_run_killed_past_its_point_of_no_return_is_recovered_to_it_and_halts() {
    let p = project(point_of_no_return);
    p.add_migration(BROKEN, GOOD_UP, Some(DOWN));
    // Records: run_started, the fingerprint, then started/finished per step, the facts
    // of backup and migrate, process_started for each platform action; 21 is just after
    // `maintenance-off` finished (point_of_no_return is its own record after `migrate`).
    let out = p
        .cmd()
        .arg("deploy")
        .env("CUTOVER_TEST_CRASH_AFTER_RECORD", "21")
        .output()
        .unwrap();
    assert!(out.status.code().is_none(), "killed: {out:?}");
    let journal = last_journal(&p);
    assert_eq!(
        journal.last().unwrap()["id"],
        "maintenance-off",
        "{journal:#?}"
    );
    let refused = p.run(&["deploy"]);
    refused.expect_code(4);
    assert!(refused.stderr().contains("cutover recover"));
    let recovered = p.run(&["recover"]);
    recovered.expect_code(3);
    assert!(
        recovered
            .stderr()
            .contains("HALTED for a human at step `validate`"),
        "{}",
        recovered.stderr()
    );
    platform_is(&p, true, 0);
    assert!(p.db_snapshot().contains_key("table notes"));
    p.write("smoke-ok", "");
    p.run(&["resume"]).success();
    platform_is(&p, false, 3);
}

#[test]
fn ask_without_a_terminal_rolls_back_or_does_what_unattended_says() {
    let p = project(pipeline_policy("ask"));
    let before = p.state();
    p.add_migration(BROKEN, BROKEN_UP, Some(DOWN));
    // stdin is not a terminal: nobody is asked, nothing waits.
    p.run(&["deploy"]).expect_code(1);
    assert_eq!(p.state(), before);
    let journal = last_journal(&p);
    let decision = records(&journal, "decision");
    assert_eq!(decision[0]["choice"], "rollback");
    assert_eq!(decision[0]["asked"], false);

    p.write_pipeline(&replace_once(
        &p.pipeline(),
        "on_failure: ask\n",
        "on_failure: ask\nunattended: halt\n",
    ));
    p.run(&["deploy"]).expect_code(3);
    assert_eq!(records(&last_journal(&p), "decision")[0]["choice"], "halt");
}

#[test]
fn a_bad_on_failure_is_bad_input_at_its_line() {
    let p = project(|t| {
        replace_once(
            t,
            "    with: { to: latest, rollback: auto }\n",
            "    with: { to: latest, rollback: auto }\n    on_failure: panic\n",
        )
    });
    let run = p.run(&["deploy"]);
    run.expect_code(2);
    assert!(
        run.stderr().contains("pipelines/deploy.yaml:"),
        "{}",
        run.stderr()
    );
    assert!(run.stderr().contains("panic"), "{}", run.stderr());
}

// ---- At a terminal ----

/// The pipeline asks on failure; its last step fails until the file `fixed` exists.
fn asking(t: &str) -> String {
    let t = pipeline_policy("ask")(t);
    format!("{t}  - id: smoke-test\n    uses: command\n    with: {{ run: \"test -f fixed\" }}\n")
}

fn spawn(p: &Project, args: &[&str]) -> rexpect::session::PtySession {
    let mut cmd: Command = p.cmd();
    cmd.args(args)
        .env("TERM", "xterm")
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    rexpect::session::spawn_command(cmd, Some(60_000)).expect("spawn cutover in a pty")
}

fn exit_code(session: &rexpect::session::PtySession) -> i32 {
    match session.process().wait().expect("wait for cutover") {
        WaitStatus::Exited(_, code) => code,
        other => panic!("cutover did not exit normally: {other:?}"),
    }
}

#[test]
fn at_a_terminal_the_person_retries_after_fixing_the_cause() {
    let p = project(asking);
    let mut session = spawn(&p, &["deploy"]);
    session.exp_string("step `smoke-test` FAILED").unwrap();
    session.exp_string("a rollback would undo:").unwrap();
    session.exp_string("Type retry, rollback or halt").unwrap();
    // A word that is not a choice is refused, and the question stays.
    session.send_line("maybe").unwrap();
    session.exp_string("type retry, rollback or halt").unwrap();
    p.write("fixed", "");
    session.send_line("retry").unwrap();
    let rest = session.exp_eof().unwrap();
    assert_eq!(exit_code(&session), 0, "{rest}");
    let journal = last_journal(&p);
    let decision = records(&journal, "decision");
    assert_eq!(decision.len(), 1);
    assert_eq!(decision[0]["choice"], "retry");
    assert_eq!(decision[0]["asked"], true);
    assert_eq!(decision[0]["user"], user().as_str());
    assert_eq!(records(&journal, "run_finished")[0]["status"], "succeeded");
    platform_is(&p, false, 3);
}

#[test]
fn at_a_terminal_the_person_rolls_back_or_halts() {
    let p = project(asking);
    let before: State = p.state();
    let mut session = spawn(&p, &["deploy"]);
    session.exp_string("Type retry, rollback or halt").unwrap();
    session.send_line("rollback").unwrap();
    let rest = session.exp_eof().unwrap();
    assert_eq!(exit_code(&session), 1, "{rest}");
    assert_eq!(p.state(), before);
    assert_eq!(
        records(&last_journal(&p), "decision")[0]["choice"],
        "rollback"
    );

    let mut session = spawn(&p, &["deploy"]);
    session.exp_string("Type retry, rollback or halt").unwrap();
    session.send_line("halt").unwrap();
    let rest = session.exp_eof().unwrap();
    assert_eq!(exit_code(&session), 3, "{rest}");
    let journal = last_journal(&p);
    assert_eq!(records(&journal, "decision")[0]["choice"], "halt");
    assert_eq!(records(&journal, "decision")[0]["user"], user().as_str());
    assert_eq!(records(&journal, "run_halted")[0]["id"], "smoke-test");
    platform_is(&p, false, 3);
    p.write("fixed", "");
    p.run(&["resume"]).success();
}

/// The shipped pipeline with a `pause` step after the validation, and a pending migration.
fn pausing(timeout: &str) -> Project {
    let p = project(|text| {
        replace_once(
            text,
            "  - id: maintenance-off\n",
            &format!(
                "  - id: approve\n    uses: pause\n    with: {{ message: \"look at the dashboard\", timeout: {timeout} }}\n  - id: maintenance-off\n"
            ),
        )
    });
    p.add_migration(BROKEN, GOOD_UP, Some(DOWN));
    p
}

/// Without a terminal a `pause` halts the run for `resume --approve --by NAME`, which
/// journals the approver; `resume` alone, or `--approve` of a run not at a pause, is refused.
#[test]
fn in_ci_a_pause_halts_until_approved_by_name() {
    let p = pausing("2h");
    let halted = p.run(&["deploy"]);
    halted.expect_code(3);
    assert!(
        halted
            .stderr()
            .contains("waiting for approval: look at the dashboard")
            && halted
                .stderr()
                .contains("`cutover resume -e local --approve --by NAME`"),
        "{}",
        halted.stderr()
    );
    platform_is(&p, true, 0);
    let plain = p.run(&["resume"]);
    plain.expect_code(2);
    assert!(
        plain
            .stderr()
            .contains("waits for approval at step `approve`"),
        "{}",
        plain.stderr()
    );
    p.run(&["resume", "--approve"]).expect_code(2);

    p.run(&["resume", "--approve", "--by", "dana"]).success();
    platform_is(&p, false, 3);
    let journal = last_journal(&p);
    let decisions = records(&journal, "decision");
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    assert_eq!(decisions[0]["choice"], "halt");
    assert_eq!(decisions[1]["choice"], "approve");
    assert_eq!(decisions[1]["user"], "dana");
    assert!(
        records(&journal, "step_finished")
            .iter()
            .any(|r| r["id"] == "approve" && r["message"] == "approved by dana")
    );
    assert_eq!(records(&journal, "run_finished")[0]["status"], "succeeded");
}

/// An approval that comes after the pause's timeout rolls the run back instead.
#[test]
fn a_late_approval_rolls_back() {
    let p = pausing("30m");
    let before = p.state();
    p.run(&["deploy"]).expect_code(3);
    // As if it had halted an hour ago.
    let dir = p.file(".cutover/journal");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    paths.sort();
    let path = paths.pop().unwrap();
    let hour_ago = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let text: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|line| {
            let mut record: Value = serde_json::from_str(line).unwrap();
            if record["record"] == "run_halted" {
                record["at"] = hour_ago.clone().into();
            }
            record.to_string()
        })
        .collect();
    std::fs::write(&path, text.join("\n") + "\n").unwrap();

    let late = p.run(&["resume", "--approve", "--by", "dana"]);
    late.expect_code(1);
    assert!(
        late.stderr()
            .contains("the approval by dana came after the pause's timeout (30m after it halted"),
        "{}",
        late.stderr()
    );
    assert_eq!(p.state(), before);
}

/// At a terminal the person is shown what happened and types continue or rollback.
#[test]
fn at_a_terminal_a_pause_asks_continue_or_rollback() {
    let p = pausing("2h");
    let mut session = spawn(&p, &["deploy"]);
    session
        .exp_string("step `approve` waits for approval: look at the dashboard")
        .unwrap();
    session.exp_string("done so far: preflight").unwrap();
    session.exp_string("Type continue or rollback").unwrap();
    session.send_line("maybe").unwrap();
    session.exp_string("type continue or rollback").unwrap();
    session.send_line("continue").unwrap();
    let rest = session.exp_eof().unwrap();
    assert_eq!(exit_code(&session), 0, "{rest}");
    let decision = records(&last_journal(&p), "decision")
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert_eq!(decision.len(), 1);
    assert_eq!(decision[0]["choice"], "approve");
    assert_eq!(decision[0]["user"], user().as_str());

    // The next release's pause, answered with rollback: everything undone.
    p.add_migration(
        "20250201000000_more",
        "CREATE TABLE more (id INTEGER);",
        Some("DROP TABLE more;"),
    );
    let before = p.state();
    let mut session = spawn(&p, &["deploy"]);
    session.exp_string("Type continue or rollback").unwrap();
    session.send_line("rollback").unwrap();
    let rest = session.exp_eof().unwrap();
    assert_eq!(exit_code(&session), 1, "{rest}");
    assert_eq!(p.state(), before);
}
