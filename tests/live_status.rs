//! A run in progress is reported running, with its step, by `status`, `history` and
//! `recover` alike; a lock whose pid now belongs to another process (a recycled pid) is not
//! taken for a live run.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Project, Run, hostname, replace_once};

const NEW: &str = "20250101000000_add_x";
const NEW_UP: &str = "CREATE TABLE x_notes (id INTEGER PRIMARY KEY, note TEXT NOT NULL);\n";
const NEW_DOWN: &str = "DROP TABLE x_notes;\n";

/// A deployed project with one pending migration.
fn prepared() -> Project {
    let p = Project::new();
    p.deployed_with_data();
    p.add_migration(NEW, NEW_UP, Some(NEW_DOWN));
    std::fs::remove_file(p.file("calls.log")).unwrap();
    p
}

/// The `result` of a command run with `--output json` (its last line).
fn result(stdout: &str) -> Value {
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str::<Value>(last).unwrap_or_else(|e| panic!("{e}: {stdout}"))["result"]
        .clone()
}

/// Polls until `ready`, for at most a minute.
#[track_caller]
fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks since boot.
fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 1..];
    after.split_whitespace().nth(19).unwrap().parse().unwrap()
}

#[test]
fn a_live_run_is_running_at_its_step_in_status_history_and_recover() {
    let p = prepared();
    // After preflight the run waits at `gate` until the test creates `go` (bounded, so a
    // bug cannot hang the suite).
    let gate = "  - id: gate\n    uses: command\n    with:\n      run: 'i=0; while [ ! -f go ]; do i=$((i+1)); if [ $i -gt 1200 ]; then exit 1; fi; sleep 0.05; done'\n";
    let text = replace_once(
        &p.pipeline(),
        "  - id: maintenance-on\n",
        &format!("{gate}  - id: maintenance-on\n"),
    );
    p.write_pipeline(&text);

    let child = p
        .cmd()
        .arg("deploy")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    wait_for("the deploy to start step `gate`", || {
        p.journals().get(1).is_some_and(|records| {
            records
                .iter()
                .any(|r| r["record"] == "step_started" && r["id"] == "gate")
        })
    });
    let run_id = p.journals()[1][0]["run_id"].as_str().unwrap().to_owned();

    let status = p.run(&["status"]);
    status.success();
    let out = status.stdout();
    assert!(
        out.contains(&format!(
            "RUNNING: run {run_id} at step `gate` (pid {pid} on {}, since ",
            hostname()
        )),
        "{out}"
    );
    assert!(!out.contains("UNFINISHED"), "{out}");
    assert!(!out.contains("died"), "{out}");
    assert!(
        out.contains(&format!("last run: {run_id} running")),
        "{out}"
    );

    let status = p.run(&["status", "--output", "json"]);
    status.success();
    let doc = result(&status.stdout());
    assert_eq!(doc["unfinished"], serde_json::json!([]), "{doc}");
    let running = &doc["running"][0];
    assert_eq!(running["run_id"], run_id.as_str(), "{doc}");
    assert_eq!(running["step"], "gate", "{doc}");
    assert_eq!(running["pid"], pid, "{doc}");
    assert_eq!(running["evidence"], "process", "{doc}");
    assert_eq!(doc["last_run"]["status"], "running", "{doc}");

    let history = p.run(&["history"]);
    history.success();
    let line = history
        .stdout()
        .lines()
        .find(|l| l.starts_with(&run_id))
        .unwrap_or_else(|| panic!("{}", history.stdout()))
        .to_owned();
    assert!(line.contains("running (step gate)"), "{line}");
    assert!(!line.contains("unfinished"), "{line}");

    let history = p.run(&["history", "--json"]);
    history.success();
    let doc = result(&history.stdout());
    let row = &doc["runs"][0];
    assert_eq!(row["run_id"], run_id.as_str(), "{doc}");
    assert_eq!(row["status"], "running", "{doc}");
    assert_eq!(row["step"], "gate", "{doc}");

    // recover refuses, in the same words, and touches nothing.
    let recover = p.run(&["recover"]);
    recover.expect_code(4);
    let err = recover.stderr();
    assert!(
        err.contains(&format!(
            "run {run_id} at step `gate` (pid {pid} on {}, since ",
            hostname()
        )),
        "{err}"
    );
    assert!(err.contains("is running"), "{err}");
    assert_eq!(p.journals().len(), 2, "recover started nothing");

    p.write("go", "");
    let deploy = Run(child.wait_with_output().unwrap());
    deploy.success();
    let status = p.run(&["status"]);
    status.success();
    let out = status.stdout();
    assert!(!out.contains("RUNNING"), "{out}");
    assert!(
        out.contains(&format!("last run: {run_id} succeeded")),
        "{out}"
    );
}

#[test]
fn a_recycled_pid_does_not_keep_a_dead_run_alive() {
    let p = prepared();
    // The deploy dies (like kill -9) right after it announced its first step, leaving its
    // journal open and its lock behind.
    let crashed = p
        .cmd()
        .arg("deploy")
        .env("CUTOVER_TEST_CRASH_AFTER_RECORD", "3")
        .output()
        .unwrap();
    assert_eq!(crashed.status.signal(), Some(6), "{crashed:?}");
    let run_id = p.journals()[1][0]["run_id"].as_str().unwrap().to_owned();
    let step = p.journals()[1][2]["id"].as_str().unwrap().to_owned();

    // Its pid now names a live process that is not the run: this test.
    let mut lock: Value =
        serde_json::from_str(&std::fs::read_to_string(p.lock_file()).unwrap()).unwrap();
    assert_eq!(lock["run_id"], run_id.as_str());
    assert!(
        lock["pid_started"].is_u64(),
        "the lock records the start time: {lock}"
    );
    let me = std::process::id();
    let mut write_lock = |started: u64| {
        lock["pid"] = me.into();
        lock["pid_started"] = started.into();
        std::fs::write(p.lock_file(), lock.to_string()).unwrap();
    };

    // With this process's own start time the lock would name a live holder...
    write_lock(start_time(me));
    let status = p.run(&["status"]);
    status.success();
    assert!(
        status.stdout().contains(&format!(
            "RUNNING: run {run_id} at step `{step}` (pid {me} "
        )),
        "{}",
        status.stdout()
    );
    p.run(&["recover"]).expect_code(4);

    // ...but started at another time, the pid was recycled: the run is dead.
    write_lock(start_time(me) + 1);
    let status = p.run(&["status"]);
    status.success();
    let out = status.stdout();
    assert!(
        out.contains(&format!(
            "UNFINISHED: run {run_id} (its process died); `cutover recover -e local` finishes it"
        )),
        "{out}"
    );
    assert!(!out.contains("RUNNING"), "{out}");
    let doc = result(&p.run(&["status", "--output", "json"]).stdout());
    assert_eq!(doc["running"], serde_json::json!([]), "{doc}");
    assert_eq!(doc["unfinished"][0]["run_id"], run_id.as_str(), "{doc}");

    let history = p.run(&["history", "--json"]);
    history.success();
    let doc = result(&history.stdout());
    assert_eq!(doc["runs"][0]["run_id"], run_id.as_str(), "{doc}");
    assert!(doc["runs"][0]["status"].is_null(), "{doc}");
    let history = p.run(&["history"]);
    assert!(
        history
            .stdout()
            .contains("unfinished (run `cutover recover`)"),
        "{}",
        history.stdout()
    );

    // recover takes the lock over and finishes the run.
    let recover = p.run(&["recover"]);
    recover.expect_code(1);
    assert!(
        recover
            .stdout()
            .contains(&format!("run {run_id}: rolled back")),
        "{}",
        recover.stdout()
    );
    assert!(p.locks().is_empty(), "{:?}", p.locks());
}
