//! Network faults, injected by the small TCP proxy in `tests/support/fault_proxy.rs`.
//!
//! Between cutover and PostgreSQL (every connection cutover makes goes through the proxy:
//! its own pool, `pg_dump`, `psql`): the connection dropped in the middle of a big
//! migration, of the backup stream, of the scratch restore that verifies a backup and of
//! the restore that rolls a migration back; latency on every packet; connections refused.
//! Between cutover and the health endpoint: an endpoint that flaps between 503 (with
//! Retry-After), 429 and 200, one that never gets healthy, latency, refused connections and
//! truncated answers.
//!
//! Each run ends retried-and-succeeded (the state equals a fault-free run's) or rolled
//! back (the state equals the state before), never half-done; a backup whose stream was
//! cut is never listed. Faults are timed by what the test sees (a file growing, the server
//! running a statement), not by sleeps.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::fault_proxy::{FaultProxy, Mode, pg_fingerprint};
use support::{
    HealthServer, Project, Run, State, assert_failed_at, assert_same_db, ids, last_journal, pg,
    replace_once,
};

const SEED: &str = "INSERT INTO users (id, email, display_name) VALUES (1, 'a@example.com', 'A'), (2, 'b@example.com', 'B');
INSERT INTO recipes (id, user_id, title, servings, calories) VALUES (1, 1, 'Soup', 2, 300), (2, 2, 'Salad', 1, NULL);
UPDATE users SET created_at = '2025-01-01 00:00:00'; UPDATE recipes SET created_at = '2025-01-01 00:00:00';";

const NEW: &str = "20250101000000_add_x";
/// A big migration: a new table of 300k rows built from a query, an update of existing
/// rows, and a last statement that takes a second, so there is time to cut it.
const BIG_UP: &str = "CREATE TABLE x_events AS SELECT g AS id, md5(g::text) AS payload FROM generate_series(1, 300000) g;
ALTER TABLE x_events ADD PRIMARY KEY (id);
UPDATE users SET display_name = display_name || ' (x)';
SELECT pg_sleep(1);
";
const BIG_DOWN: &str = "DROP TABLE x_events;
UPDATE users SET display_name = substr(display_name, 1, length(display_name) - 4);
";

/// Rows in the big table some cases add, so that a dump or a restore takes a moment.
const BIG_ROWS: u32 = 300_000;

/// A project on a fresh PostgreSQL database that cutover reaches through a proxy; the
/// test itself talks to the server directly.
struct Case {
    p: Project,
    db: String,
    proxy: FaultProxy,
}

impl std::ops::Deref for Case {
    type Target = Project;

    fn deref(&self) -> &Project {
        &self.p
    }
}

impl Case {
    /// Deployed once (through the proxy) with rows, and a pending migration.
    fn new(up: &str, down: Option<&str>) -> Self {
        let (p, db) = pg::project();
        let server = pg::server();
        let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], server.port)));
        let config = replace_once(
            &p.read("deploy.yaml"),
            &format!("@127.0.0.1:{}/", server.port),
            &format!("@127.0.0.1:{}/", proxy.port()),
        );
        p.write_config(&config);
        p.run(&["deploy"]).success();
        assert!(proxy.accepted() > 0, "cutover went through the proxy");
        server.psql(&db, SEED);
        p.add_migration(NEW, up, down);
        std::fs::remove_file(p.file("calls.log")).unwrap();
        Self { p, db, proxy }
    }

    fn sql(&self, sql: &str) -> String {
        pg::server().psql(&self.db, sql)
    }

    fn big_table(&self) {
        self.sql(&format!(
            "CREATE TABLE big_events (id BIGINT PRIMARY KEY, payload TEXT NOT NULL);
             INSERT INTO big_events SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) FROM generate_series(1, {BIG_ROWS}) g;"
        ));
        // A table made by hand is drift: accepted, as an operator would.
        self.p
            .run(&["migrate", "accept-drift", "--reason", "test data"])
            .success();
    }

    fn state(&self) -> State {
        let mut state = self.p.state();
        state.db = pg_fingerprint(&self.db);
        state
    }

    /// True while the server runs a statement of this database's (other than this query)
    /// whose text contains `needle`, or, with `psql`, any statement of a psql client.
    fn server_runs(&self, needle: &str) -> bool {
        pg::server()
            .psql(
                "postgres",
                &format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND state = 'active' AND pid <> pg_backend_pid() AND (query LIKE '%{needle}%' OR application_name = '{needle}')",
                    self.db
                ),
            )
            .trim()
            != "0"
    }

    /// Waits until no statement of this database is running (a statement whose client
    /// is gone ends when the server notices).
    fn wait_idle(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let active = pg::server().psql(
                "postgres",
                &format!(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = '{}' AND state <> 'idle' AND pid <> pg_backend_pid()",
                    self.db
                ),
            );
            if active.trim() == "0" {
                return;
            }
            assert!(Instant::now() < deadline, "statements still running");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Files in the backup folder.
    fn backup_files(&self) -> Vec<String> {
        let mut files: Vec<String> = std::fs::read_dir(self.file("state/backups"))
            .map(|e| {
                e.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    fn deploy(&self) -> Child {
        self.cmd()
            .arg("deploy")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

/// Waits until `now()` (polling), then runs `then` once; panics if the run ends first.
fn when(child: &mut Child, what: &str, now: impl Fn() -> bool, then: impl FnOnce()) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !now() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the deploy ended before {what}"
        );
        assert!(Instant::now() < deadline, "never saw {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
    then();
}

fn finish(child: Child) -> Run {
    Run(child.wait_with_output().unwrap())
}

/// The run failed at `step`, exited 1, and database, platform and locks are as before.
#[track_caller]
fn assert_rolled_back(c: &Case, before: &State, run: &Run, step: &str) {
    assert_failed_at(run, step);
    let records = last_journal(c);
    assert_eq!(records.last().unwrap()["status"], "rolled_back");
    assert!(ids(&records, "compensation_failed").is_empty());
    c.wait_idle();
    let after = c.state();
    assert_same_db(&after.db, &before.db, "after the rollback");
    assert_eq!(after, *before);
}

/// The state a fault-free deploy of the same migration leaves, from another project.
fn reference_after(up: &str, down: Option<&str>) -> State {
    let r = Case::new(up, down);
    r.run(&["deploy"]).success();
    r.state()
}

/// Scratch databases the backup verification left behind.
fn scratch_databases() -> String {
    pg::server().psql(
        "postgres",
        "SELECT string_agg(datname, ',') FROM pg_database WHERE datname LIKE 'cutover_%'",
    )
}

#[test]
fn connection_dropped_mid_migration_rolls_back() {
    let c = Case::new(BIG_UP, Some(BIG_DOWN));
    // Even with retries, a migration whose connection dropped is not run again: the run
    // rolls back.
    c.edit_pipeline(
        "    with: { to: latest, rollback: auto }\n    timeout: 10m\n",
        "    with: { to: latest, rollback: auto }\n    timeout: 10m\n    retries: 2\n",
    );
    let before = c.state();
    let mut child = c.deploy();
    let mut cut = 0;
    when(
        &mut child,
        "the migration running",
        || c.server_runs("x_events"),
        || cut = c.proxy.cut_all(),
    );
    assert!(cut >= 1);
    let run = finish(child);
    assert_rolled_back(&c, &before, &run, "migrate");
    assert!(!c.sql("SELECT to_regclass('x_events')").contains("x_events"));
    // Once the network is back, the same deploy goes through.
    c.run(&["deploy"]).success();
    assert_eq!(c.sql("SELECT count(*) FROM x_events").trim(), "300000");
}

/// The connection dropped while the big migration runs in the middle of a batch (the
/// migrations after the first on a connection go out several in one message, each
/// committed inside it): the session that ran the batch is ended before the rollback
/// reads the history, so the rollback undoes exactly what committed and nothing of the
/// batch commits afterwards.
#[test]
fn connection_dropped_mid_batch_of_migrations_rolls_back() {
    let c = Case::new(BIG_UP, Some(BIG_DOWN));
    for (name, table) in [
        ("20241231000000_add_x_a", "x_a"),
        ("20241231000100_add_x_b", "x_b"),
        ("20250101000100_add_x_c", "x_c"),
    ] {
        c.add_migration(
            name,
            &format!("CREATE TABLE {table} (id INTEGER);\n"),
            Some(&format!("DROP TABLE {table};\n")),
        );
    }
    let before = c.state();
    let mut child = c.deploy();
    let mut cut = 0;
    when(
        &mut child,
        "the batch running",
        || c.server_runs("x_events"),
        || cut = c.proxy.cut_all(),
    );
    assert!(cut >= 1);
    let run = finish(child);
    assert_rolled_back(&c, &before, &run, "migrate");
    for table in ["x_events", "x_a", "x_b", "x_c"] {
        assert_eq!(
            c.sql(&format!("SELECT to_regclass('{table}') IS NULL"))
                .trim(),
            "t",
            "{table}"
        );
    }
    c.run(&["deploy"]).success();
    assert_eq!(c.sql("SELECT count(*) FROM x_events").trim(), "300000");
}

#[test]
fn connection_dropped_mid_validation_is_retried_and_succeeds() {
    let c = Case::new(BIG_UP, Some(BIG_DOWN));
    let expected = reference_after(BIG_UP, Some(BIG_DOWN));
    c.edit_pipeline(
        "    with: { queries: validations/ }\n",
        "    with: { queries: validations/, checks: [{ name: slow, sql: \"SELECT 0 AS issues FROM pg_sleep(1)\" }] }\n    retries: 2\n",
    );
    let mut child = c.deploy();
    let mut cut = 0;
    when(
        &mut child,
        "the validation running",
        || c.server_runs("issues FROM pg_sleep"),
        || cut = c.proxy.cut_all(),
    );
    assert!(cut >= 1);
    let run = finish(child);
    run.success();
    assert!(run.all().contains("retry"), "{}", run.all());
    c.wait_idle();
    let after = c.state();
    assert_same_db(&after.db, &expected.db, "after the retried deploy");
    assert_eq!(after, expected);
}

#[test]
fn connection_dropped_mid_backup_rolls_back_and_the_backup_is_never_listed() {
    let c = Case::new(BIG_UP, Some(BIG_DOWN));
    c.big_table();
    let before = c.state();
    let listed = c.backup_ids();
    let files = c.backup_files();
    let mut child = c.deploy();
    let partial = || {
        std::fs::read_dir(c.file("state/backups"))
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| {
                e.file_name().to_string_lossy().ends_with(".dump.partial")
                    && e.metadata().is_ok_and(|m| m.len() > 0)
            })
    };
    let mut cut = 0;
    when(&mut child, "the backup streaming", partial, || {
        cut = c.proxy.cut_all();
    });
    assert!(cut >= 1);
    let run = finish(child);
    assert_rolled_back(&c, &before, &run, "backup");
    assert!(run.all().contains("pg_dump failed"), "{}", run.all());
    // The cut backup is gone, not listed, and nothing else changed in the store.
    assert_eq!(c.backup_ids(), listed);
    assert_eq!(c.backup_files(), files);
}

#[test]
fn connection_dropped_mid_verify_restore_rolls_back_and_leaves_no_scratch_database() {
    let c = Case::new(BIG_UP, Some(BIG_DOWN));
    c.big_table();
    let before = c.state();
    let listed = c.backup_ids();
    let mut child = c.deploy();
    let mut cut = 0;
    // The scratch database the restore (a psql client of this run, through this proxy)
    // is running in.
    let scratch = std::cell::RefCell::new(String::new());
    when(
        &mut child,
        "the verifying restore running",
        || {
            let ports = c.proxy.upstream_ports();
            if ports.is_empty() {
                return false;
            }
            let name = pg::server().psql(
                "postgres",
                &format!(
                    "SELECT datname FROM pg_stat_activity WHERE datname LIKE 'cutover_%' AND state = 'active' AND application_name = 'psql' AND client_port IN ({})",
                    ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")
                ),
            );
            *scratch.borrow_mut() = name.trim().to_owned();
            !scratch.borrow().is_empty()
        },
        || cut = c.proxy.cut_all(),
    );
    assert!(cut >= 1);
    let run = finish(child);
    assert_rolled_back(&c, &before, &run, "backup");
    let scratch = scratch.into_inner();
    assert!(
        !scratch_databases().split(',').any(|d| d.trim() == scratch),
        "{scratch} is left: {}",
        scratch_databases()
    );
    // The dump itself was complete and is listed; it reads back and restores.
    let now = c.backup_ids();
    assert_eq!(now.len(), listed.len() + 1, "{now:?}");
    let new = now.iter().find(|id| !listed.contains(id)).unwrap();
    c.run(&["backup", "verify", new]).success();
}

#[test]
fn connection_dropped_mid_restore_leaves_the_database_whole_and_recover_finishes() {
    // No down file: the rollback of the migration restores the backup.
    let c = Case::new(BIG_UP, None);
    c.big_table();
    c.edit_pipeline(
        "with: { to: latest, rollback: auto }",
        "with: { to: latest, rollback: restore }",
    );
    c.fail_validation_once_migrated("after-new");
    let before = c.state();
    let mut child = c.deploy();
    let mut cut = 0;
    // The restore is the one psql client on the application's database.
    when(
        &mut child,
        "the restore running",
        || c.server_runs("psql"),
        || cut = c.proxy.cut_all(),
    );
    assert!(cut >= 1);
    let run = finish(child);
    println!("restore cut mid-way: the run exited {}", run.code());
    c.wait_idle();
    let after = c.state();
    match run.code() {
        // The restore failed as a whole (one transaction): the database is exactly as the
        // migration left it, maintenance stays on, and recover finishes the rollback.
        3 => {
            let out = run.all();
            assert!(out.contains("ROLLBACK INCOMPLETE"), "{out}");
            assert!(out.contains("restore backup"), "{out}");
            assert!(
                after.db.contains_key("table x_events"),
                "the migrated state, untouched by the half restore"
            );
            assert_eq!(
                after.db["table x_events"][0].split(' ').next(),
                Some("300000")
            );
            assert_eq!(after.platform, "maintenance=true\njobs=0\n");
            c.run(&["deploy"]).expect_code(4);
            let recover = c.run(&["recover"]);
            recover.expect_code(1);
            c.wait_idle();
        }
        // Or it was retried and finished within the run.
        1 => {}
        other => panic!("unexpected exit {other}:\n{}", run.all()),
    }
    let after = c.state();
    assert_same_db(&after.db, &before.db, "after the restore");
    assert_eq!(after, before);
    assert_eq!(last_journal(&c).last().unwrap()["status"], "rolled_back");
}

#[test]
fn latency_on_every_packet_slows_the_deploy_but_it_succeeds() {
    let c = Case::new(BIG_UP, Some(BIG_DOWN));
    let expected = reference_after(BIG_UP, Some(BIG_DOWN));
    c.proxy.set(Mode::Latency(Duration::from_millis(5)));
    let started = Instant::now();
    c.run(&["deploy"]).success();
    println!("deploy with 5 ms per packet: {:?}", started.elapsed());
    let after = c.state();
    assert_same_db(&after.db, &expected.db, "after the slow deploy");
    assert_eq!(after, expected);
}

#[test]
fn refused_connections_before_the_run_touch_nothing() {
    let c = Case::new(BIG_UP, Some(BIG_DOWN));
    let before = c.state();
    c.proxy.set(Mode::Refuse);
    let run = c.run(&["deploy"]);
    run.expect_code(2);
    assert!(c.proxy.refused() >= 1);
    assert_eq!(c.state(), before);
    assert!(c.calls().is_empty(), "{:?}", c.calls());
}

#[test]
fn refused_connections_mid_run_roll_back() {
    let c = Case::new(BIG_UP, Some(BIG_DOWN));
    // maintenance_on waits for `go`: the proxy starts refusing while the run is there, so
    // the next new connection (pg_dump's) is refused.
    let config = replace_once(
        &c.read("deploy.yaml"),
        "maintenance_on: \"",
        "maintenance_on: \"touch held; i=0; while [ ! -f go ]; do i=$((i+1)); if [ $i -gt 3000 ]; then exit 1; fi; sleep 0.02; done; ",
    );
    c.write_config(&config);
    let before = c.state();
    let mut child = c.deploy();
    when(
        &mut child,
        "maintenance-on waiting",
        || c.file("held").exists(),
        || {
            c.proxy.set(Mode::Refuse);
            c.write("go", "");
        },
    );
    let run = finish(child);
    std::fs::remove_file(c.file("go")).unwrap();
    std::fs::remove_file(c.file("held")).unwrap();
    assert_rolled_back(&c, &before, &run, "backup");
    assert!(c.proxy.refused() >= 1);
}

// ---- The health endpoint ----

/// An HTTP endpoint whose answer to request `n` (from 0) is `script(n)`: a status and an
/// optional Retry-After header (seconds).
struct Scripted {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Scripted {
    fn start(script: impl Fn(usize) -> (u16, Option<u32>) + Send + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf);
                let (code, retry_after) = script(h.fetch_add(1, Ordering::SeqCst));
                let body = if code == 200 { "ok" } else { "not now" };
                let retry =
                    retry_after.map_or_else(String::new, |s| format!("retry-after: {s}\r\n"));
                let _ = write!(
                    stream,
                    "HTTP/1.1 {code} X\r\n{retry}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        Self { addr, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A SQLite project whose health step polls `url` (preflight polls the project's healthy
/// server), with one pending migration; its state.
fn health_case(url: &str, timeout: &str) -> (Project, State) {
    let p = Project::new();
    p.deployed_with_data();
    p.add_migration(
        NEW,
        "CREATE TABLE x_notes (id INTEGER PRIMARY KEY, note TEXT NOT NULL);\n",
        Some("DROP TABLE x_notes;\n"),
    );
    let text = replace_once(
        &p.pipeline(),
        "with: { expect: 200, interval: 1s, timeout: 2m }",
        &format!("with: {{ url: \"{url}\", expect: 200, interval: 50ms, timeout: {timeout} }}"),
    );
    p.write_pipeline(&text);
    std::fs::remove_file(p.file("calls.log")).unwrap();
    let before = p.state();
    (p, before)
}

#[track_caller]
fn assert_deployed(p: &Project) {
    let state = p.state();
    assert!(state.db.contains_key("table x_notes"));
    assert_eq!(state.platform, "maintenance=false\njobs=3\n");
    assert!(state.locks.is_empty());
    assert_eq!(last_journal(p).last().unwrap()["status"], "succeeded");
}

#[test]
fn health_503_with_retry_after_and_429_then_healthy() {
    // 503 and 429 with Retry-After, a 502, then healthy; the step passes on the third good
    // answer in a row (the project's `healthy_for` is 0s).
    let server = Scripted::start(|n| match n {
        0 => (503, Some(1)),
        1 => (429, Some(1)),
        2 => (503, None),
        3 => (429, None),
        4 => (502, None),
        _ => (200, None),
    });
    let (p, _) = health_case(&format!("http://{}/health", server.addr), "30s");
    let run = p.run(&["deploy"]);
    run.success();
    assert_eq!(server.hits(), 8);
    assert!(
        run.all().contains("healthy: 3 good answers in a row")
            && run.all().contains("(8 request(s) in"),
        "{}",
        run.all()
    );
    assert_deployed(&p);
}

#[test]
fn health_flapping_between_503_and_200_ends_healthy_once_steady() {
    // Flaps for nine requests, one good answer in three, then steady: a good answer between
    // bad ones is no streak, so the step passes on the third steady answer in a row.
    let server = Scripted::start(|n| {
        if n >= 9 || n % 3 == 2 {
            (200, None)
        } else {
            (503, Some(2))
        }
    });
    let (p, _) = health_case(&format!("http://{}/health", server.addr), "30s");
    let run = p.run(&["deploy"]);
    run.success();
    assert_eq!(server.hits(), 11);
    assert!(
        run.all()
            .contains("healthy, then not after 1 good answer in a row"),
        "{}",
        run.all()
    );
    assert_deployed(&p);
}

#[test]
fn health_never_healthy_times_out_cleanly_and_rolls_back() {
    let server = Scripted::start(|n| {
        if n % 2 == 0 {
            (503, Some(1))
        } else {
            (429, Some(1))
        }
    });
    let (p, before) = health_case(&format!("http://{}/health", server.addr), "1s");
    let started = Instant::now();
    let run = p.run(&["deploy"]);
    run.expect_code(1);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert!(server.hits() >= 2);
    let out = run.all();
    assert!(out.contains("never healthy within 1s"), "{out}");
    assert!(
        out.contains("answered 503") || out.contains("answered 429"),
        "{out}"
    );
    assert_eq!(p.state(), before);
    assert_eq!(last_journal(&p).last().unwrap()["status"], "rolled_back");
}

#[test]
fn health_through_a_slow_proxy_ends_healthy() {
    let server = HealthServer::start(200);
    let proxy = FaultProxy::start(server.url[7..].split('/').next().unwrap().parse().unwrap());
    proxy.set(Mode::Latency(Duration::from_millis(300)));
    let (p, _) = health_case(&format!("http://{}/health", proxy.addr), "30s");
    p.run(&["deploy"]).success();
    assert!(server.hits() >= 1);
    assert_deployed(&p);
}

#[test]
fn health_refused_then_truncated_then_healthy() {
    let server = HealthServer::start(200);
    let proxy = Arc::new(FaultProxy::start(
        server.url[7..].split('/').next().unwrap().parse().unwrap(),
    ));
    // Two connections refused, two answers cut after 10 bytes, then through.
    proxy.set(Mode::Refuse);
    let (p, _) = health_case(&format!("http://{}/health", proxy.addr), "30s");
    let flip = {
        let proxy = proxy.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while proxy.refused() < 2 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            proxy.set(Mode::DropAfter(10));
            while proxy.cut() < 2 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(1));
            }
            proxy.set(Mode::Pass);
        })
    };
    let run = p.run(&["deploy"]);
    flip.join().unwrap();
    run.success();
    assert!(proxy.refused() >= 2 && proxy.cut() >= 2);
    assert!(server.hits() >= 1);
    assert_deployed(&p);
}

#[test]
fn health_endpoint_refusing_until_the_timeout_rolls_back() {
    let server = HealthServer::start(200);
    let proxy = FaultProxy::start(server.url[7..].split('/').next().unwrap().parse().unwrap());
    proxy.set(Mode::Refuse);
    let (p, before) = health_case(&format!("http://{}/health", proxy.addr), "1s");
    let run = p.run(&["deploy"]);
    run.expect_code(1);
    assert!(
        run.all().contains("never healthy within 1s"),
        "{}",
        run.all()
    );
    assert!(proxy.refused() >= 2);
    assert_eq!(server.hits(), 0);
    assert_eq!(p.state(), before);
}

#[test]
fn backup_store_full_mid_stream_rolls_back_and_lists_nothing() {
    let c = Case::new(BIG_UP, Some(BIG_DOWN));
    c.big_table();
    c.edit_pipeline(
        "with: { name: \"pre-{version}-{timestamp}\", verify: restore }",
        "with: { name: full-disk, verify: restore }",
    );
    // The partial file of this backup is /dev/full: every write fails with ENOSPC.
    std::os::unix::fs::symlink("/dev/full", c.file("state/backups/full-disk.dump.partial"))
        .unwrap();
    let before = c.state();
    let listed = c.backup_ids();
    let started = Instant::now();
    let run = c.run(&["deploy"]);
    println!("disk full: deploy ended in {:?}", started.elapsed());
    assert_rolled_back(&c, &before, &run, "backup");
    assert!(
        run.all().contains("No space left on device"),
        "{}",
        run.all()
    );
    assert_eq!(c.backup_ids(), listed);
    assert!(!c.file("state/backups/full-disk.dump").exists());
    assert!(!c.file("state/backups/full-disk.manifest.json").exists());
}
