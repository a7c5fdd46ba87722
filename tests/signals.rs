//! Ctrl-C (SIGINT) and SIGTERM during a run stop the current step and roll back.
//!
//! - At every step of the shipped `pipelines/deploy.yaml`: right after it (a blocking
//!   `command` step inserted there holds the run), and inside it where the step can be held
//!   (the platform commands of `maintenance` and `scale`, and a `health` step polling an
//!   endpoint that never gets healthy). Each with SIGINT and with SIGTERM: exit 130, the
//!   rollback undid exactly the steps that had acted, and the database, platform and locks
//!   are as before the run.
//! - A signal during the rollback of a run whose step had failed: the rollback finishes,
//!   exit 1.
//! - A second signal during a rollback says what is left and does not stop it; a third
//!   abandons it: exit 3, the journal says `rollback_failed` with what is left, the next
//!   deploy is refused and `recover` finishes the rollback.
//! - `cutover rollback --to` interrupted after its database step: the undo (migrate up
//!   again) runs although the run was cancelled.
//! - On PostgreSQL, inside the database steps: while pg_dump streams, while the server runs
//!   a migration, while it runs a validation query.
//!
//! `CUTOVER_LONG_TESTS=1` runs every hold point 10 times.

mod support;

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::{
    HealthServer, MAINTENANCE_OFF, MAINTENANCE_ON, Project, Run, SCALE, State,
    assert_nothing_to_recover, ids, last_journal, processes_in, replace_once,
};

const NEW: &str = "20250101000000_add_x";
const NEW_UP: &str =
    "CREATE TABLE x_notes (id INTEGER PRIMARY KEY, recipe_id INTEGER NOT NULL, note TEXT NOT NULL);
INSERT INTO x_notes (recipe_id, note) SELECT id, 'note for ' || title FROM recipes;
UPDATE users SET display_name = display_name || ' (x)';
";
const NEW_DOWN: &str = "DROP TABLE x_notes;
UPDATE users SET display_name = substr(display_name, 1, length(display_name) - 4);
";

/// Shell that creates `held-NAME` and then waits, the first time only, until `go-NAME`
/// exists (at most 60 s, so a broken test cannot hang the suite). A cancelled step's
/// process group is killed, which ends the wait.
fn hold_once(name: &str) -> String {
    format!(
        "if [ ! -f held-{name} ]; then touch held-{name}; i=0; while [ ! -f go-{name} ]; do i=$((i+1)); if [ $i -gt 3000 ]; then exit 1; fi; sleep 0.02; done; fi"
    )
}

/// The shipped steps in order, with what each one's undo is called in the journal (the
/// step id), when it has one.
const STEPS: [(&str, bool); 9] = [
    ("preflight", false),
    ("maintenance-on", true),
    ("jobs-down", true),
    ("backup", false),
    ("migrate", true),
    ("validate", false),
    ("maintenance-off", true),
    ("jobs-up", true),
    ("health", false),
];

/// Where a run is held when the signal comes.
#[derive(Clone, Copy, Debug)]
enum At {
    /// In a blocking `command` step inserted right after this shipped step.
    After(&'static str),
    /// Inside this shipped step.
    In(&'static str),
}

/// A deployed project with data and one pending reversible migration, and its state.
fn prepared() -> (Project, State) {
    support::prepared(NEW, NEW_UP, NEW_DOWN)
}

/// The pipeline's text from `step`'s entry to the next step (or the end).
fn step_entry(p: &Project, step: &str) -> String {
    let text = p.pipeline();
    let marker = match step {
        "preflight" | "backup" | "migrate" | "validate" | "health" => {
            format!("  - uses: {step}\n")
        }
        id => format!("  - id: {id}\n"),
    };
    let start = text.find(&marker).unwrap_or_else(|| panic!("{step}"));
    // From the newline that ends the entry's first line.
    let from = start + marker.len() - 1;
    let end = text[from..]
        .find("\n  - ")
        .map_or(text.len(), |e| from + e + 1);
    text[start..end].to_owned()
}

/// Sets up the hold and returns the file whose appearance means the run is held there.
fn hold(p: &Project, at: At) -> std::path::PathBuf {
    match at {
        At::After(step) => {
            let entry = step_entry(p, step);
            let held = format!(
                "{entry}  - id: hold\n    uses: command\n    with: {{ run: '{}' }}\n",
                hold_once("step")
            );
            p.edit_pipeline(&entry, &held);
            p.file("held-step")
        }
        At::In("maintenance-on") => {
            p.set_command(
                "maintenance_on",
                MAINTENANCE_ON,
                &format!("\"{}; {}", hold_once("step"), &MAINTENANCE_ON[1..]),
            );
            p.file("held-step")
        }
        At::In("maintenance-off") => {
            p.set_command(
                "maintenance_off",
                MAINTENANCE_OFF,
                &format!("\"{}; {}", hold_once("step"), &MAINTENANCE_OFF[1..]),
            );
            p.file("held-step")
        }
        At::In("jobs-down" | "jobs-up") => {
            let replicas = if matches!(at, At::In("jobs-down")) {
                0
            } else {
                3
            };
            p.set_command(
                "scale",
                SCALE,
                &format!(
                    "\"if [ {{replicas}} = {replicas} ]; then {}; fi; {}",
                    hold_once("step"),
                    &SCALE[1..]
                ),
            );
            p.file("held-step")
        }
        At::In(other) => panic!("no way to hold inside {other}"),
    }
}

/// A running `cutover` whose output is collected as it comes.
struct Running {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

fn collect(
    mut from: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => into
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n])),
            }
        }
    })
}

impl Running {
    fn start(p: &Project, args: &[&str]) -> Self {
        let mut child = p
            .cmd()
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let readers = vec![
            collect(child.stdout.take().unwrap(), stdout.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Self {
            child,
            stdout,
            stderr,
            readers,
        }
    }

    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    /// Waits until stderr contains `needle`.
    fn wait_for_stderr(&self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.stderr.lock().unwrap().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "`{needle}` never appeared on stderr:\n{}",
                self.stderr.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn finish(mut self) -> Run {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let threads = threads_of(self.child.id());
                let _ = self.child.kill();
                panic!(
                    "cutover did not exit after the signal:\n{}\nits threads:\n{threads}",
                    self.stderr.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
        let stdout = self.stdout.lock().unwrap().clone().into_bytes();
        let stderr = self.stderr.lock().unwrap().clone().into_bytes();
        Run(std::process::Output {
            status,
            stdout,
            stderr,
        })
    }
}

/// What each thread of a stuck process is blocked in, and the processes it started: what
/// a hang report needs.
fn threads_of(pid: u32) -> String {
    let mut report = String::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    for task in tasks.flatten() {
        let read = |name: &str| std::fs::read_to_string(task.path().join(name)).unwrap_or_default();
        report.push_str(&format!(
            "{} {} wchan={}\n{}",
            task.file_name().to_string_lossy(),
            read("comm").trim(),
            read("wchan"),
            read("stack")
        ));
    }
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|rest| rest.split_whitespace().nth(1));
        if ppid == Some(&pid.to_string()) {
            let cmdline = std::fs::read_to_string(entry.path().join("cmdline")).unwrap_or_default();
            report.push_str(&format!("child {stat}\n  {}\n", cmdline.replace('\0', " ")));
        }
    }
    report
}

/// Waits for a file the running step writes: the event the test synchronises on.
fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The steps whose undo must have run, newest first, when the run is stopped at `at`.
fn expected_undone(at: At) -> Vec<String> {
    let (step, inside) = match at {
        At::After(s) => (s, false),
        At::In(s) => (s, true),
    };
    let position = STEPS.iter().position(|(s, _)| *s == step).unwrap();
    let mut undone: Vec<String> = STEPS[..position]
        .iter()
        .filter(|(_, undo)| *undo)
        .map(|(s, _)| (*s).to_owned())
        .collect();
    // A finished step is undone; so is a platform step stopped half-way (it may have acted).
    let _ = inside;
    if STEPS[position].1 {
        undone.push(step.to_owned());
    }
    undone.reverse();
    undone
}

/// One case: hold the run at `at`, send `signal`, check exit 130 and a full rollback.
fn signal_case(at: At, signal: &str) {
    let (p, before) = prepared();
    let (held, extra_server) = match at {
        At::In("health") => {
            // Preflight polls the healthy server; the health step one that never is.
            let broken = HealthServer::start(503);
            p.edit_pipeline(
                "with: { expect: 200, interval: 1s, timeout: 2m }",
                &format!(
                    "with: {{ url: \"{}\", expect: 200, interval: 50ms, timeout: 1m }}",
                    broken.url
                ),
            );
            (None, Some(broken))
        }
        _ => (Some(hold(&p, at)), None),
    };
    let running = Running::start(&p, &["deploy"]);
    match (&held, &extra_server) {
        (Some(held), _) => wait_for(held),
        (None, Some(server)) => {
            let deadline = Instant::now() + Duration::from_secs(30);
            while server.hits() < 2 {
                assert!(Instant::now() < deadline, "the health step never polled");
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        (None, None) => unreachable!(),
    }
    running.signal(signal);
    let run = running.finish();
    run.expect_code(130);
    let out = run.all();
    assert!(out.contains("interrupted"), "{out}");
    let records = last_journal(&p);
    assert_eq!(records.last().unwrap()["status"], "rolled_back");
    assert_eq!(
        ids(&records, "compensation_finished"),
        expected_undone(at),
        "{records:#?}"
    );
    assert!(ids(&records, "compensation_failed").is_empty());
    let after = p.state();
    support::assert_same_db(&after.db, &before.db, "after the interrupted run");
    assert_eq!(after, before);
    assert_eq!(processes_in(p.path()), Vec::<String>::new());
    // Nothing left for recover, and the next deploy runs.
    assert_nothing_to_recover(&p);
    assert_eq!(p.state(), before);
}

/// Every hold point of the shipped pipeline.
fn points() -> Vec<At> {
    let mut points: Vec<At> = STEPS.iter().map(|(s, _)| At::After(s)).collect();
    for s in [
        "maintenance-on",
        "jobs-down",
        "maintenance-off",
        "jobs-up",
        "health",
    ] {
        points.push(At::In(s));
    }
    points
}

/// Runs every point with one signal on a few threads; reports every failing point. With
/// `CUTOVER_LONG_TESTS=1` every point runs 10 times, to shake out timing races.
fn every_point(signal: &str) {
    let rounds = if std::env::var("CUTOVER_LONG_TESTS").is_ok_and(|v| v == "1") {
        10
    } else {
        1
    };
    let points: Vec<At> = (0..rounds).flat_map(|_| points()).collect();
    let failures = support::failures_of_each(
        &points,
        |at| signal_case(at, signal),
        |at, message| format!("SIG{signal} {at:?}: {message}"),
    );
    println!(
        "SIG{signal}: {} hold point(s), {} passed: {:?}",
        points.len(),
        points.len() - failures.len(),
        points
    );
    assert!(
        failures.is_empty(),
        "{} point(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn sigint_at_every_step_rolls_back_and_exits_130() {
    every_point("INT");
}

#[test]
fn sigterm_at_every_step_rolls_back_and_exits_130() {
    every_point("TERM");
}

/// A failing validation, and maintenance_off (the last undo action) held once.
fn failing_run_held_in_rollback(p: &Project) {
    p.fail_validation_once_migrated("after-new");
    p.set_command(
        "maintenance_off",
        MAINTENANCE_OFF,
        &format!("\"{}; {}", hold_once("undo"), &MAINTENANCE_OFF[1..]),
    );
}

#[test]
fn a_signal_during_the_rollback_of_a_failed_step_warns_and_the_run_exits_1() {
    let (p, before) = prepared();
    failing_run_held_in_rollback(&p);
    let running = Running::start(&p, &["deploy"]);
    wait_for(&p.file("held-undo"));
    running.signal("INT");
    running.wait_for_stderr("rollback in progress: 1 undo action(s) left");
    p.write("go-undo", "");
    let run = running.finish();
    run.expect_code(1);
    assert!(
        run.all().contains("failed at step `validate`"),
        "{}",
        run.all()
    );
    let records = last_journal(&p);
    assert_eq!(records.last().unwrap()["status"], "rolled_back");
    assert_eq!(
        ids(&records, "compensation_finished"),
        ["migrate", "jobs-down", "maintenance-on"]
    );
    std::fs::remove_file(p.file("held-undo")).unwrap();
    std::fs::remove_file(p.file("go-undo")).unwrap();
    assert_eq!(p.state(), before);
}

#[test]
fn a_second_signal_during_the_rollback_warns_and_the_rollback_finishes() {
    let (p, before) = prepared();
    hold(&p, At::After("migrate"));
    p.set_command(
        "maintenance_off",
        MAINTENANCE_OFF,
        &format!("\"{}; {}", hold_once("undo"), &MAINTENANCE_OFF[1..]),
    );
    let running = Running::start(&p, &["deploy"]);
    wait_for(&p.file("held-step"));
    running.signal("TERM");
    wait_for(&p.file("held-undo"));
    running.signal("INT");
    running.wait_for_stderr(
        "rollback in progress: 1 undo action(s) left, now: maintenance back off; send the signal again",
    );
    p.write("go-undo", "");
    let run = running.finish();
    run.expect_code(130);
    let records = last_journal(&p);
    assert_eq!(records.last().unwrap()["status"], "rolled_back");
    assert_eq!(
        ids(&records, "compensation_finished"),
        ["migrate", "jobs-down", "maintenance-on"]
    );
    for f in ["held-step", "held-undo", "go-undo"] {
        std::fs::remove_file(p.file(f)).unwrap();
    }
    assert_eq!(p.state(), before);
}

#[test]
fn a_third_signal_abandons_the_rollback_with_exit_3_and_recover_finishes_it() {
    let (p, before) = prepared();
    hold(&p, At::After("migrate"));
    // The undo of jobs-down (scale jobs back to 3) is held: one undo done, two left.
    p.set_command(
        "scale",
        SCALE,
        &format!(
            "\"if [ {{replicas}} = 3 ]; then {}; fi; {}",
            hold_once("undo"),
            &SCALE[1..]
        ),
    );
    let running = Running::start(&p, &["deploy"]);
    wait_for(&p.file("held-step"));
    running.signal("INT");
    wait_for(&p.file("held-undo"));
    running.signal("INT");
    running
        .wait_for_stderr("rollback in progress: 2 undo action(s) left, now: scale jobs back to 3");
    running.signal("INT");
    let run = running.finish();
    run.expect_code(3);
    let out = run.all();
    assert!(out.contains("ROLLBACK INCOMPLETE"), "{out}");
    assert!(out.contains("rollback abandoned by a signal"), "{out}");
    assert!(
        out.contains("maintenance back off (step `maintenance-on`, not attempted)"),
        "{out}"
    );
    assert!(out.contains("cutover recover"), "{out}");
    let records = last_journal(&p);
    assert_eq!(records.last().unwrap()["status"], "rollback_failed");
    assert_eq!(ids(&records, "compensation_finished"), ["migrate"]);
    assert_eq!(ids(&records, "compensation_failed"), ["jobs-down"]);
    // The schema is back; the platform is where the abandoned rollback left it: in
    // maintenance with the jobs down, the safe state.
    let after = p.state();
    support::assert_same_db(&after.db, &before.db, "after the abandoned rollback");
    assert_eq!(after.platform, "maintenance=true\njobs=0\n");
    assert!(after.locks.is_empty(), "{:?}", after.locks);
    assert_eq!(processes_in(p.path()), Vec::<String>::new());

    // A new deploy is refused until recover has finished the rollback.
    let again = p.run(&["deploy"]);
    again.expect_code(4);
    assert!(again.all().contains("cutover recover"), "{}", again.all());
    let recover = p.run(&["recover"]);
    recover.expect_code(1);
    let records = last_journal(&p);
    assert_eq!(records.last().unwrap()["status"], "rolled_back");
    assert_eq!(
        ids(&records, "compensation_finished"),
        ["migrate", "jobs-down", "maintenance-on"]
    );
    for f in ["held-step", "held-undo"] {
        std::fs::remove_file(p.file(f)).unwrap();
    }
    assert_eq!(p.state(), before);
    p.run(&["recover"]).success();
}

#[test]
fn sigkill_is_not_a_signal_cutover_sees_recover_finishes_the_run() {
    // For completeness next to the signals cutover handles: SIGKILL cannot be caught; the
    // journal is what finishes the run (see tests/crash.rs for every record).
    let (p, before) = prepared();
    hold(&p, At::After("migrate"));
    let mut child = p
        .cmd()
        .arg("deploy")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for(&p.file("held-step"));
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9));
    // The blocking command outlives cutover (its own process group): end it.
    p.write("go-step", "");
    p.run(&["deploy"]).expect_code(4);
    p.run(&["recover"]).expect_code(1);
    std::fs::remove_file(p.file("held-step")).unwrap();
    std::fs::remove_file(p.file("go-step")).unwrap();
    assert_eq!(p.state(), before);
}

#[test]
fn an_interrupted_rollback_command_migrates_up_again() {
    // `cutover rollback --to` goes down a version; interrupted after its database step, the
    // undo migrates up again although the run was cancelled.
    let (p, _) = prepared();
    p.run(&["deploy"]).success();
    std::fs::remove_file(p.file("calls.log")).unwrap();
    let deployed = p.state();
    let text = replace_once(
        &p.read("pipelines/rollback.yaml"),
        "  - id: maintenance-off\n",
        &format!(
            "  - id: hold\n    uses: command\n    with: {{ run: '{}' }}\n  - id: maintenance-off\n",
            hold_once("step")
        ),
    );
    p.write("pipelines/rollback.yaml", &text);
    let version = last_version_before(&p);
    let running = Running::start(&p, &["rollback", "--to", &version, "--yes"]);
    wait_for(&p.file("held-step"));
    running.signal("INT");
    let run = running.finish();
    run.expect_code(130);
    let records = last_journal(&p);
    assert_eq!(
        records.last().unwrap()["status"],
        "rolled_back",
        "{records:#?}"
    );
    assert_eq!(
        ids(&records, "compensation_finished"),
        ["database", "jobs-down", "maintenance-on"]
    );
    std::fs::remove_file(p.file("held-step")).unwrap();
    assert_eq!(p.state(), deployed);
}

/// The version just below the newest migration: where `rollback --to` goes.
fn last_version_before(p: &Project) -> String {
    let mut versions: Vec<String> = std::fs::read_dir(p.file("migrations"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.ends_with(".up.sql")
                .then(|| name.split('_').next().unwrap().to_owned())
        })
        .collect();
    versions.sort();
    versions.dedup();
    versions[versions.len() - 2].clone()
}

// ---- Inside the database steps, on PostgreSQL ----

/// Where a PostgreSQL run is interrupted inside a database step.
#[derive(Clone, Copy, Debug)]
enum DbStep {
    /// While pg_dump streams a big table.
    Backup,
    /// While the server runs the new migration's SQL.
    Migrate,
    /// While the server runs a validation query.
    Validate,
}

/// Returns how long the run took to exit after the signal, and how long the interrupted
/// statement went on running on the server after that.
fn postgres_signal_case(step: DbStep, signal: &str) -> (Duration, Duration) {
    use support::fault_proxy::pg_fingerprint;
    let (p, db) = support::pg::project();
    p.run(&["deploy"]).success();
    let server = support::pg::server();
    server.psql(
        &db,
        "INSERT INTO users (id, email, display_name) VALUES (1, 'a@example.com', 'A');
         INSERT INTO recipes (id, user_id, title, servings) VALUES (1, 1, 'Soup', 2);",
    );
    let mut up = NEW_UP.replace(
        "INSERT INTO x_notes (recipe_id, note) SELECT id,",
        "INSERT INTO x_notes (id, recipe_id, note) SELECT id, id,",
    );
    assert_ne!(up, NEW_UP);
    match step {
        DbStep::Backup => {
            server.psql(
                &db,
                "CREATE TABLE big_events (id BIGINT PRIMARY KEY, payload TEXT NOT NULL);
                 INSERT INTO big_events SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) FROM generate_series(1, 300000) g;",
            );
            // A table made by hand is drift: accepted, as an operator would.
            p.run(&["migrate", "accept-drift", "--reason", "test data"])
                .success();
        }
        DbStep::Migrate => up.push_str("SELECT pg_sleep(3);\n"),
        DbStep::Validate => p.edit_pipeline("with: { queries: validations/ }",
            "with: { queries: validations/, checks: [{ name: slow, sql: \"SELECT 0 AS issues FROM pg_sleep(3)\" }] }",
        ),
    }
    p.add_migration(NEW, &up, Some(NEW_DOWN));
    let state = || {
        let mut s = p.state();
        s.db = pg_fingerprint(&db);
        s
    };
    let before = state();
    let backups = || p.run(&["backup", "list"]).stdout().lines().count();
    let backups_before = backups();
    let active = |needle: &str| {
        server
            .psql(
                "postgres",
                &format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND state = 'active' AND pid <> pg_backend_pid() AND query LIKE '%{needle}%'"
                ),
            )
            .trim()
            != "0"
    };
    let running = Running::start(&p, &["deploy"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = match step {
            DbStep::Backup => std::fs::read_dir(p.file("state/backups"))
                .unwrap()
                .filter_map(Result::ok)
                .any(|e| {
                    e.file_name().to_string_lossy().ends_with(".dump.partial")
                        && e.metadata().is_ok_and(|m| m.len() > 0)
                }),
            DbStep::Migrate => active("pg_sleep(3)"),
            DbStep::Validate => active("issues FROM pg_sleep"),
        };
        if now {
            break;
        }
        assert!(Instant::now() < deadline, "never reached {step:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
    let signalled = Instant::now();
    running.signal(signal);
    let run = running.finish();
    let took = signalled.elapsed();
    run.expect_code(130);
    assert_eq!(last_journal(&p).last().unwrap()["status"], "rolled_back");
    // A statement cut short on the client may still run on the server until it ends; it
    // is never committed.
    let exited = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(20);
    while active("pg_sleep") {
        assert!(Instant::now() < deadline, "statement still running");
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = state();
    support::assert_same_db(
        &after.db,
        &before.db,
        &format!("after SIG{signal} in {step:?}"),
    );
    assert_eq!(after, before);
    // Backups are kept on rollback; one cut short is never listed.
    let taken = usize::from(!matches!(step, DbStep::Backup));
    assert_eq!(backups(), backups_before + taken);
    (took, exited.elapsed())
}

#[test]
fn postgres_signals_inside_backup_migrate_and_validate_roll_back() {
    let mut report = Vec::new();
    for step in [DbStep::Backup, DbStep::Migrate, DbStep::Validate] {
        for signal in ["INT", "TERM"] {
            let (took, lingered) = postgres_signal_case(step, signal);
            report.push(match step {
                DbStep::Backup => {
                    format!("SIG{signal} inside {step:?}: exit 130 {took:?} after the signal")
                }
                _ => format!(
                    "SIG{signal} inside {step:?}: exit 130 {took:?} after the signal; the interrupted statement ran on in the server for {lingered:?}, never committed"
                ),
            });
        }
    }
    println!("{}", report.join("\n"));
}
