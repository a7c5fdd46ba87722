//! kill -9 at every journal transition: the binary aborts right after its Nth journal
//! record is on disk (`CUTOVER_TEST_CRASH_AFTER_RECORD=N`). Afterwards a new deploy is
//! refused until `recover` runs, and `recover` leaves exactly the pre-deploy state — or,
//! when every step had finished, the deployed state — and is a no-op the second time.
//!
//! Every crash point runs on SQLite and on real PostgreSQL and MariaDB servers
//! (`sqlite::*`, `postgres::*` and `mysql::*` tests). Then kill -9 in the middle of long steps, timed by what the test
//! sees rather than by sleeps: while the backup streams (PostgreSQL, a big table, killed
//! once the `.dump.partial` file has bytes), inside a migration (PostgreSQL, killed while
//! the server runs the migration's SQL) and while the health step polls (both backends).

mod support;

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::backend::{Backend, Case};
use support::fault_proxy::pg_fingerprint;
use support::{
    HealthServer, Project, State, assert_nothing_to_recover, assert_same_db, last_journal,
    mysql as my, pg, replace_once,
};

const SIGABRT: i32 = 6;

const NEW: &str = "20250101000000_add_x";
const NEW_UP: &str =
    "CREATE TABLE x_notes (id INTEGER PRIMARY KEY, recipe_id INTEGER NOT NULL, note TEXT NOT NULL);
INSERT INTO x_notes (id, recipe_id, note) SELECT id, id, 'note for ' || title FROM recipes;
UPDATE users SET display_name = display_name || ' (x)';
";
const NEW_DOWN: &str = "DROP TABLE x_notes;
UPDATE users SET display_name = substr(display_name, 1, length(display_name) - 4);
";

/// Database (schema and every row, or a checksum of a big table's rows), platform and
/// locks, including a server's deploy lock.
fn read_state(c: &Case) -> State {
    c.with_server_db(|backend, db| {
        if backend == Backend::Postgres {
            pg_fingerprint(db)
        } else {
            mysql_state(db)
        }
    })
}

/// Every MariaDB table's definition and rows, per table.
fn mysql_state(db: &str) -> std::collections::BTreeMap<String, Vec<String>> {
    let server = my::server();
    let tables = server.sql(
        db,
        "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME",
    );
    let mut out = std::collections::BTreeMap::new();
    for table in tables.lines() {
        let create = server.sql(db, &format!("SHOW CREATE TABLE `{table}`"));
        // AUTO_INCREMENT counters are not data.
        let mut lines: Vec<String> = vec![
            create
                .split(' ')
                .filter(|w| !w.starts_with("AUTO_INCREMENT="))
                .collect::<Vec<_>>()
                .join(" "),
        ];
        let rows = if table == "_sqlx_migrations" {
            server.sql(db, "SELECT version, description, success, HEX(checksum) FROM _sqlx_migrations ORDER BY version")
        } else {
            server.sql(db, &format!("SELECT * FROM `{table}` ORDER BY 1"))
        };
        lines.extend(rows.lines().map(str::to_owned));
        out.insert(format!("table {table}"), lines);
    }
    out
}

/// The same in MariaDB's dialect (`||` is OR there).
const NEW_UP_MYSQL: &str = "CREATE TABLE x_notes (id BIGINT PRIMARY KEY, recipe_id BIGINT NOT NULL, note VARCHAR(255) NOT NULL);
INSERT INTO x_notes (id, recipe_id, note) SELECT id, id, CONCAT('note for ', title) FROM recipes;
UPDATE users SET display_name = CONCAT(display_name, ' (x)');
";
const NEW_DOWN_MYSQL: &str = "DROP TABLE x_notes;
UPDATE users SET display_name = SUBSTRING(display_name, 1, CHAR_LENGTH(display_name) - 4);
";

/// Which deploy is crashed.
#[derive(Clone, Copy)]
enum Scenario {
    /// The shipped pipeline, which succeeds.
    Succeeds,
    /// The shipped pipeline with a validation that fails, so the run rolls back.
    FailsAtValidate,
    /// The shipped pipeline with a `command` step after `validate` that would run for 30 s
    /// and times out after 1 s, so the run rolls back.
    LongCommand,
}

/// A `command` step that runs until it is killed (`finished` appears only if it is not),
/// listing its shell's pid in `shell.pids`; its undo is `undo.sh`.
fn long_step(timeout: &str) -> String {
    format!(
        "  - id: long
    uses: command
    with: {{ run: \"echo $$ >> shell.pids; sleep 30; touch finished\", undo: \"sh undo.sh\" }}
{timeout}"
    )
}

/// Notes in `overlap.log` any shell of the step that still runs while the undo does
/// (zombies do not run: this machine's init may never reap them).
const UNDO_SH: &str = r#"for pid in $(cat shell.pids 2>/dev/null); do
  state=$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null)
  case "$state" in ''|Z|X) ;; *) echo "undo ran while shell $pid ran" >> overlap.log ;; esac
done
echo undone >> undo.log
"#;

/// Adds the long `command` step after `validate`.
fn add_long_step(p: &Project, timeout: &str) {
    let text = replace_once(
        &p.pipeline(),
        "    with: { queries: validations/ }\n",
        &format!(
            "    with: {{ queries: validations/ }}\n{}",
            long_step(timeout)
        ),
    );
    p.write_pipeline(&text);
    p.write("undo.sh", UNDO_SH);
}

/// Rows added after the first deploy (`Project::deployed_with_data` does the same on
/// SQLite).
const SEED: &str = "INSERT INTO users (id, email, display_name) VALUES (1, 'a@example.com', 'A'), (2, 'b@example.com', 'B');
INSERT INTO recipes (id, user_id, title, servings, calories) VALUES (1, 1, 'Soup', 2, 300), (2, 2, 'Salad', 1, NULL);";

/// A project deployed once, with rows whose times are fixed, so two projects' states
/// compare equal.
fn deployed(backend: Backend) -> Case {
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
    // (MariaDB's tables, from `support::mysql::project`, have no times.)
    if backend != Backend::Mysql {
        c.sql(
            "UPDATE users SET created_at = '2025-01-01 00:00:00'; UPDATE recipes SET created_at = '2025-01-01 00:00:00';",
        );
    }
    c
}

/// A deployed project with data and one pending reversible migration; its state.
fn prepared(backend: Backend, scenario: Scenario) -> (Case, State) {
    let p = deployed(backend);
    match backend {
        Backend::Sqlite | Backend::Postgres => p.add_migration(NEW, NEW_UP, Some(NEW_DOWN)),
        Backend::Mysql => p.add_migration(NEW, NEW_UP_MYSQL, Some(NEW_DOWN_MYSQL)),
    }
    if let Scenario::FailsAtValidate = scenario {
        p.fail_validation_once_migrated("after-new");
    }
    if let Scenario::LongCommand = scenario {
        add_long_step(&p, "    timeout: 1s\n");
    }
    std::fs::remove_file(p.file("calls.log")).unwrap();
    let before = p.state();
    assert!(before.db.contains_key("table recipes"), "{:?}", before.db);
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

fn reference(backend: Backend, scenario: Scenario) -> Reference {
    let (p, before) = prepared(backend, scenario);
    let run = p.run(&["deploy"]);
    let records = p.journals().pop().unwrap();
    let after = p.state();
    match scenario {
        Scenario::Succeeds => {
            run.success();
            assert!(after.db.contains_key("table x_notes"));
            assert_eq!(records.last().unwrap()["status"], "succeeded");
        }
        Scenario::FailsAtValidate | Scenario::LongCommand => {
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

/// Crashes the scenario's deploy after journal record `n`, then checks deploy, recover
/// and recover again.
fn crash_case(backend: Backend, scenario: Scenario, reference: &Reference, n: usize) {
    let total = reference.kinds.len();
    let last_step_done = reference
        .kinds
        .iter()
        .rposition(|k| k == "step_finished")
        .unwrap()
        + 1;
    let (p, before) = prepared(backend, scenario);

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
    // Nothing the dead run started outlives it.
    for pgid in process_groups(&records) {
        wait_until_group_gone(
            pgid,
            &format!("a process group of the run dead at record {n}"),
        );
    }

    if n == total {
        // The run was closed before the process died: nothing to recover; the lock it
        // left is stale and the next deploy takes it over.
        assert_nothing_to_recover(&p);
        let state = p.state();
        assert_same_db(&state.db, &reference.after.db, "after a crash once closed");
        assert_eq!(state.platform, reference.after.platform);
        let again = p.run(&["deploy"]);
        again.expect_code(match scenario {
            Scenario::Succeeds => 0,
            Scenario::FailsAtValidate | Scenario::LongCommand => 1,
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
    assert_nothing_to_recover(&p);
    assert_eq!(p.state(), state);
    assert_eq!(p.journals(), journals);
    assert_eq!(p.calls(), calls);
    assert!(
        !p.file("finished").exists(),
        "the long command ran to its end"
    );
    assert_eq!(p.read("overlap.log"), "", "an undo ran beside its step");
}

/// Runs `crash_case` for every `n` in `points` on a few threads and reports every
/// failing crash point.
fn crash_at_each(backend: Backend, scenario: Scenario, reference: &Reference, points: &[usize]) {
    let failures = support::failures_of_each(
        points,
        |n| crash_case(backend, scenario, reference, n),
        |n, message| {
            format!(
                "crash after record {n} ({}): {message}",
                reference.kinds[n - 1]
            )
        },
    );
    println!(
        "{backend:?}: checked {} crash point(s), {} passed: {:?}",
        points.len(),
        points.len() - failures.len(),
        points
    );
    assert!(
        failures.is_empty(),
        "{} crash point(s) failed:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

fn crash_at_every_record_of_a_deploy_then_recover(backend: Backend) {
    let reference = reference(backend, Scenario::Succeeds);
    // run_started, the fingerprint, started/finished for each of the 9 steps,
    // process_started for each of the 4 platform actions, the backup's and the
    // migration's facts, the schema it left (for drift), run_finished.
    assert_eq!(reference.kinds.len(), 28, "{:?}", reference.kinds);
    let points: Vec<usize> = (1..=reference.kinds.len()).collect();
    crash_at_each(backend, Scenario::Succeeds, &reference, &points);
}

fn crash_at_every_record_of_a_rollback_then_recover(backend: Backend) {
    let reference = reference(backend, Scenario::FailsAtValidate);
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
    crash_at_each(backend, Scenario::FailsAtValidate, &reference, &points);
}

/// A run whose pipeline has a long `command` step (timed out after 1 s), crashed at every
/// record: no process outlives the run, and `recover` leaves the pre-run state.
#[test]
fn sqlite_crash_at_every_record_of_a_run_with_a_long_command_then_recover() {
    let reference = reference(Backend::Sqlite, Scenario::LongCommand);
    let processes = reference
        .kinds
        .iter()
        .filter(|k| *k == "process_started")
        .count();
    assert!(
        processes >= 5,
        "platform actions and the command: {:?}",
        reference.kinds
    );
    let points: Vec<usize> = (1..=reference.kinds.len()).collect();
    crash_at_each(Backend::Sqlite, Scenario::LongCommand, &reference, &points);
}

/// The process groups a run's journal says it started.
fn process_groups(records: &[Value]) -> Vec<u32> {
    records
        .iter()
        .filter(|r| r["record"] == "process_started")
        .map(|r| u32::try_from(r["pgid"].as_u64().unwrap()).unwrap())
        .collect()
}

/// `/proc/PID/stat` from field 3 (the state) on; `None` once the process is reaped.
fn stat(pid: u32) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')').unwrap() + 1..];
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// Whether a process of group `pgid` still runs (zombies do not: this machine's init may
/// never reap them).
fn group_runs(pgid: u32) -> bool {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(stat)
        .any(|f| f[2] == pgid.to_string() && !matches!(f[0].as_str(), "Z" | "X"))
}

/// Waits at most 10 s until no process of group `pgid` runs.
#[track_caller]
fn wait_until_group_gone(pgid: u32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while group_runs(pgid) {
        assert!(
            Instant::now() < deadline,
            "{what} (group {pgid}) still runs"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Deploys with the long `command` step (no timeout) and kills cutover with SIGKILL once
/// the step's shell runs, having first killed the shell's supervisor when
/// `supervisor_too`. Returns the shell's process group, the journal and the state before.
fn kill_during_the_long_command(supervisor_too: bool) -> (Case, State, u32) {
    let c = deployed(Backend::Sqlite);
    c.add_migration(NEW, NEW_UP, Some(NEW_DOWN));
    add_long_step(&c, "");
    std::fs::remove_file(c.file("calls.log")).unwrap();
    let before = c.state();
    let mut child = c
        .cmd()
        .arg("deploy")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let shell = loop {
        if let Ok(pid) = c.read("shell.pids").trim().parse::<u32>() {
            break pid;
        }
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("the deploy ended ({status}) before the command ran:\n{err}");
        }
        assert!(Instant::now() < deadline, "the command never ran");
        std::thread::sleep(Duration::from_millis(5));
    };
    let pgid: u32 = stat(shell).expect("the shell runs")[2].parse().unwrap();
    assert_ne!(pgid, child.id(), "the command runs in a group of its own");
    if supervisor_too {
        // As if something killed the supervisor alone: the command goes on, orphaned.
        assert_ne!(
            pgid, shell,
            "the shell runs under a supervisor that leads its group"
        );
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &pgid.to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
    }
    child.kill().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(9));
    let records = last_journal(&c);
    assert!(
        process_groups(&records).contains(&pgid),
        "the journal names the command's group {pgid} while it runs: {records:#?}"
    );
    (c, before, pgid)
}

/// Recovers the run killed during the long command: exit 1, everything as before, the
/// command never finished and its undo never ran beside it.
fn recover_the_long_command(c: &Case, before: &State) -> String {
    let recover = c.run(&["recover"]);
    recover.expect_code(1);
    let out = recover.all();
    assert!(out.contains("rolled back"), "{out}");
    assert_eq!(c.state(), *before);
    assert_eq!(c.read("undo.log"), "undone\n", "{out}");
    assert_eq!(c.read("overlap.log"), "", "{out}");
    assert!(!c.file("finished").exists());
    out
}

/// kill -9 while a `command` step runs: its shell and the shell's children die with
/// cutover, and `recover` then undoes the step and the rest.
#[test]
fn sqlite_kill_during_a_command_step_kills_the_command_then_recover() {
    let (c, before, pgid) = kill_during_the_long_command(false);
    wait_until_group_gone(pgid, "the command's shell and its children");
    let out = recover_the_long_command(&c, &before);
    assert!(!out.contains("was still running"), "{out}");
    assert!(!c.file("finished").exists());
}

/// A command left running after its supervisor and cutover died (as if both were killed
/// at once): `recover` finds its group in the journal, kills it, says so, and only then
/// undoes the steps.
#[test]
fn sqlite_recover_kills_a_command_left_running_before_undoing() {
    let (c, before, pgid) = kill_during_the_long_command(true);
    assert!(group_runs(pgid), "the orphaned command still runs");
    let out = recover_the_long_command(&c, &before);
    assert!(
        out.contains(&format!(
            "process group {pgid} of step `long` was still running"
        )),
        "{out}"
    );
    assert!(!group_runs(pgid));
}

// ---- kill -9 in the middle of a long step ----

/// Starts the deploy, kills it with SIGKILL as soon as `now` says so, then checks that the
/// next deploy is refused (exit 4, naming the run), that `recover` rolls everything back to
/// `before` (exit 1) and that a second `recover` changes nothing. Returns the run id.
fn kill_mid_step(c: &Case, before: &State, what: &str, now: impl Fn() -> bool) -> String {
    let mut child = c
        .cmd()
        .arg("deploy")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !now() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
            panic!("the deploy ended ({status}) before {what}:\n{err}");
        }
        assert!(Instant::now() < deadline, "never saw {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "killed {what}");
    let records = last_journal(c);
    let run_id = records[0]["run_id"].as_str().unwrap().to_owned();
    assert!(records.last().unwrap()["status"].is_null(), "{records:#?}");

    let again = c.run(&["deploy"]);
    again.expect_code(4);
    assert!(again.all().contains(&run_id), "{}", again.all());
    assert!(again.all().contains("cutover recover"), "{}", again.all());

    let recover = c.run(&["recover"]);
    recover.expect_code(1);
    assert!(recover.all().contains("rolled back"), "{}", recover.all());
    let records = last_journal(c);
    assert_eq!(records.last().unwrap()["status"], "rolled_back");
    assert!(
        records.iter().all(|r| r["record"] != "compensation_failed"),
        "{records:#?}"
    );
    let state = c.state();
    assert_same_db(
        &state.db,
        &before.db,
        &format!("after a kill {what} and recover"),
    );
    assert_eq!(state, *before);

    assert_nothing_to_recover(c);
    assert_eq!(c.state(), *before);
    run_id
}

/// Partial backups (`<id>.dump.partial`) with at least one byte in them.
fn partial_backups(c: &Case) -> Vec<String> {
    std::fs::read_dir(c.file("state/backups"))
        .map(|entries| {
            entries
                .filter_map(|e| {
                    let e = e.ok()?;
                    let name = e.file_name().to_string_lossy().into_owned();
                    let id = name.strip_suffix(".dump.partial")?.to_owned();
                    (e.metadata().ok()?.len() > 0).then_some(id)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Rows in the big table of the mid-backup case: enough that pg_dump takes a moment
/// (about 30 MB of text).
const BIG_ROWS: u32 = 300_000;

#[test]
fn postgres_kill_during_the_backup_stream_then_recover() {
    let (c, _) = prepared(Backend::Postgres, Scenario::Succeeds);
    c.sql(&format!(
        "CREATE TABLE big_events (id BIGINT PRIMARY KEY, payload TEXT NOT NULL);
         INSERT INTO big_events SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) FROM generate_series(1, {BIG_ROWS}) g;"
    ));
    // A table made by hand is drift: accepted, as an operator would.
    c.run(&["migrate", "accept-drift", "--reason", "test data"])
        .success();
    let before = c.state();
    assert!(before.db["table big_events"][0].starts_with(&format!("{BIG_ROWS} rows")));
    let listed_before = c.backup_ids();
    assert_eq!(listed_before.len(), 1, "the first deploy's backup");

    let started = Instant::now();
    kill_mid_step(&c, &before, "while the backup streams", || {
        !partial_backups(&c).is_empty()
    });
    println!("killed mid-backup after {:?}", started.elapsed());
    // It was killed mid-stream: the dump never became a backup.
    let partial = partial_backups(&c);
    assert_eq!(partial.len(), 1, "{partial:?}");
    let id = &partial[0];
    assert!(!c.file(&format!("state/backups/{id}.dump")).exists());
    assert!(
        !c.file(&format!("state/backups/{id}.manifest.json"))
            .exists()
    );
    // ...and is never offered as one.
    assert_eq!(c.backup_ids(), listed_before);
    let verify = c.run(&["backup", "verify", id]);
    assert_ne!(verify.code(), 0, "{}", verify.all());
    // The next deploy takes a new, complete backup and succeeds.
    c.run(&["deploy"]).success();
    let listed = c.backup_ids();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(!listed.contains(id), "{listed:?}");
}

/// True while the server runs a statement of the case's database (other than this query)
/// whose text contains `needle`.
fn server_runs(c: &Case, needle: &str) -> bool {
    pg::server()
        .psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND state = 'active' AND query LIKE '%{needle}%' AND pid <> pg_backend_pid()",
                c.db
            ),
        )
        .trim()
        != "0"
}

/// Waits at most 10 s for the statement `needle` finds to be gone from the server.
#[track_caller]
fn wait_until_gone(c: &Case, needle: &str, still: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while server_runs(c, needle) {
        assert!(Instant::now() < deadline, "{still}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Killed while a batch of migrations runs (after the first on a connection, several go
/// in one message, each committed inside it): the server goes on with the message after
/// its client died, and would commit the sleeping migration seconds later. The next run
/// ends that session before it reads the history, so what `recover` undoes is what stays.
#[test]
fn postgres_kill_inside_a_batch_of_migrations_then_recover() {
    let c = deployed(Backend::Postgres);
    for (name, up) in [
        ("20250601000000_add_k_a", "CREATE TABLE k_a (id INTEGER);\n"),
        (
            "20250601000100_add_k_b",
            "CREATE TABLE k_b (id INTEGER);\nSELECT pg_sleep(5);\n",
        ),
        ("20250601000200_add_k_c", "CREATE TABLE k_c (id INTEGER);\n"),
    ] {
        let table = &name[19..];
        c.add_migration(name, up, Some(&format!("DROP TABLE {table};\n")));
    }
    std::fs::remove_file(c.file("calls.log")).unwrap();
    let before = c.state();
    let running = || server_runs(&c, "pg_sleep(5)");
    kill_mid_step(&c, &before, "inside a batch of migrations", running);
    wait_until_gone(&c, "pg_sleep(5)", "the orphaned batch still runs");
    assert_eq!(c.state(), before);
}

#[test]
fn postgres_kill_inside_a_migration_then_recover() {
    let c = deployed(Backend::Postgres);
    // The server notices a dead client during a statement within 100 ms, instead of when
    // the statement ends.
    c.sql(&format!(
        "ALTER DATABASE {} SET client_connection_check_interval = '100ms'",
        c.db
    ));
    c.add_migration(
        NEW,
        &format!("{NEW_UP}SELECT pg_sleep(30);\n"),
        Some(NEW_DOWN),
    );
    std::fs::remove_file(c.file("calls.log")).unwrap();
    let before = c.state();
    let running = || server_runs(&c, "pg_sleep(30)");
    kill_mid_step(&c, &before, "inside the migration", running);
    // The migration's transaction died with its client: nothing of it is left.
    wait_until_gone(&c, "pg_sleep(30)", "the orphaned migration still runs");
    assert_eq!(c.state(), before);
}

fn kill_while_the_health_step_polls_then_recover(backend: Backend) {
    let (c, before) = prepared(backend, Scenario::Succeeds);
    // Preflight polls the healthy server; the health step one that never is.
    let broken = HealthServer::start(503);
    let text = replace_once(
        &c.pipeline(),
        "with: { expect: 200, interval: 1s, timeout: 2m }",
        &format!(
            "with: {{ url: \"{}\", expect: 200, interval: 50ms, timeout: 1m }}",
            broken.url
        ),
    );
    c.write_pipeline(&text);
    kill_mid_step(&c, &before, "while the health step polls", || {
        broken.hits() >= 2
    });
    // Everything the run did was undone, newest first.
    let records = last_journal(&c);
    let undone: Vec<&str> = records
        .iter()
        .filter(|r| r["record"] == "compensation_finished")
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        undone,
        [
            "jobs-up",
            "maintenance-off",
            "migrate",
            "jobs-down",
            "maintenance-on"
        ]
    );
}

/// Declares every case once, as a test per backend: `sqlite::NAME`, `postgres::NAME` and
/// `mysql::NAME` (MariaDB).
macro_rules! on_each_backend {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $case() {
                    super::$case(super::Backend::Sqlite);
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $case() {
                    super::$case(super::Backend::Postgres);
                }
            )*
        }
        mod mysql {
            $(
                #[test]
                fn $case() {
                    super::$case(super::Backend::Mysql);
                }
            )*
        }
    };
}

on_each_backend!(
    crash_at_every_record_of_a_deploy_then_recover,
    crash_at_every_record_of_a_rollback_then_recover,
    kill_while_the_health_step_polls_then_recover,
);
