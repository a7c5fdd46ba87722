//! `confirm: typed`: on a terminal a person must type `CONFIRM`; without one only
//! `--confirm <that environment>` proceeds. The terminal cases run the real binary in a
//! pseudo-terminal. Every refusal exits 5 and touches nothing; Ctrl-C at the prompt exits
//! 130 and touches nothing.

mod support;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use rexpect::process::WaitStatus;
use support::Project;

const ENV: &str = "production";

/// A project whose only environment, `production`, needs typed confirmation.
fn typed_project() -> Project {
    let p = Project::new();
    let config = p.default_config();
    assert_eq!(config.matches("\n  local:\n").count(), 1);
    p.write_config(&config.replace("\n  local:\n", &format!("\n  {ENV}:\n    confirm: typed\n")));
    p
}

/// Everything a refused deploy must leave alone.
#[derive(Debug, PartialEq)]
struct Touched {
    db: BTreeMap<String, Vec<String>>,
    platform: String,
    calls: Vec<String>,
    journals: Vec<Vec<serde_json::Value>>,
    locks: Vec<String>,
}

fn touched(p: &Project) -> Touched {
    Touched {
        db: p.db_snapshot(),
        platform: p.platform(),
        calls: p.calls(),
        journals: p.journals(),
        locks: p.locks(),
    }
}

#[track_caller]
fn assert_untouched(p: &Project, before: &Touched) {
    let after = touched(p);
    assert_eq!(&after, before, "a refused deploy must touch nothing");
    assert!(after.calls.is_empty(), "no platform command ran");
    assert!(after.journals.is_empty(), "no run was journaled");
    assert!(after.locks.is_empty(), "no lock left behind");
    assert!(after.db.is_empty(), "the database was not created");
}

#[track_caller]
fn assert_deployed(p: &Project) {
    let db = p.db_snapshot();
    assert!(db.contains_key("table recipe_tags"), "migrated: {db:?}");
    let journals = p.journals();
    assert_eq!(journals.len(), 1);
    assert_eq!(journals[0].last().unwrap()["status"], "succeeded");
    assert!(!p.calls().is_empty(), "the platform was driven");
    assert!(p.locks().is_empty());
}

/// `cutover deploy` in a pseudo-terminal: stdin, stdout and stderr are all the terminal.
fn spawn_deploy(p: &Project) -> rexpect::session::PtySession {
    let mut cmd: Command = p.cmd();
    cmd.arg("deploy")
        .env("TERM", "xterm")
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    rexpect::session::spawn_command(cmd, Some(30_000)).expect("spawn cutover in a pty")
}

fn exit_code(session: &rexpect::session::PtySession) -> i32 {
    match session.process().wait().expect("wait for cutover") {
        WaitStatus::Exited(_, code) => code,
        other => panic!("cutover did not exit normally: {other:?}"),
    }
}

#[test]
fn terminal_wrong_word_is_refused_and_touches_nothing() {
    let p = typed_project();
    let before = touched(&p);
    let mut session = spawn_deploy(&p);
    // The plan is shown before the question.
    session.exp_string("Plan for testapp / production").unwrap();
    session.exp_string("Type CONFIRM to proceed").unwrap();
    session.send_line("confirm").unwrap();
    let rest = session.exp_eof().unwrap();
    assert!(
        rest.contains("typed `confirm`, not `CONFIRM`"),
        "says what was typed: {rest}"
    );
    assert_eq!(exit_code(&session), 5, "{rest}");
    assert_untouched(&p, &before);
}

#[test]
fn ctrl_c_at_the_prompt_cancels_with_130_and_touches_nothing() {
    let p = typed_project();
    let before = touched(&p);
    let mut session = spawn_deploy(&p);
    session.exp_string("Type CONFIRM to proceed").unwrap();
    // The terminal turns ^C into SIGINT for cutover, as a person's Ctrl-C does.
    session.send_control('c').unwrap();
    let rest = session.exp_eof().unwrap();
    assert!(
        rest.contains("cancelled at the confirmation prompt; nothing was touched"),
        "{rest}"
    );
    assert!(!rest.contains("IO error"), "{rest}");
    assert_eq!(exit_code(&session), 130, "{rest}");
    assert_untouched(&p, &before);
}

#[test]
fn terminal_confirm_deploys() {
    let p = typed_project();
    let mut session = spawn_deploy(&p);
    session.exp_string("Type CONFIRM to proceed").unwrap();
    assert!(p.calls().is_empty(), "nothing runs before the answer");
    session.send_line("CONFIRM").unwrap();
    let rest = session.exp_eof().unwrap();
    assert_eq!(exit_code(&session), 0, "{rest}");
    assert!(rest.contains("deployed to production"), "{rest}");
    assert_deployed(&p);
}

/// Runs `cutover deploy ARGS` with no terminal and expects exit 5, nothing touched, and
/// `message` in stderr.
#[track_caller]
fn refused_without_terminal(args: &[&str], message: &str) {
    let p = typed_project();
    let before = touched(&p);
    let run = p.run(&[&["deploy"], args].concat());
    run.expect_code(5);
    assert!(run.stderr().contains(message), "{}", run.stderr());
    assert!(
        run.stderr().contains("nothing was touched"),
        "{}",
        run.stderr()
    );
    assert_untouched(&p, &before);
}

#[test]
fn no_terminal_and_no_confirm_is_refused() {
    refused_without_terminal(
        &[],
        "environment `production` needs typed confirmation and there is no terminal; pass `--confirm production`",
    );
}

#[test]
fn no_terminal_and_yes_is_refused() {
    refused_without_terminal(&["--yes"], "`--yes` is not enough");
}

#[test]
fn no_terminal_and_confirm_naming_another_environment_is_refused() {
    refused_without_terminal(
        &["--confirm", "staging"],
        "`--confirm staging` does not name this environment (`production`)",
    );
}

#[test]
fn no_terminal_and_confirm_naming_the_environment_deploys() {
    let p = typed_project();
    p.run(&["deploy", "--confirm", ENV]).success();
    assert_deployed(&p);
}
