//! Session safety settings on PostgreSQL: a migration stuck behind another transaction's
//! lock is reported while it waits, and gives up at `lock_timeout` instead of queueing
//! forever with the application queued behind it.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::pg::{project, server};

/// Holds an exclusive lock on `recipes` in another session until the returned child ends.
fn hold_lock(db: &str, seconds: u32) -> std::process::Child {
    let child = Command::new("psql")
        .args(["-X", "-q", &server().url(db), "-c"])
        .arg(format!(
            "BEGIN; LOCK TABLE recipes IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep({seconds}); COMMIT;"
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the lock is really held.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server()
        .psql(db, "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'recipes' AND l.mode = 'AccessExclusiveLock' AND l.granted")
        .trim()
        != "1"
    {
        assert!(Instant::now() < deadline, "the lock was never taken");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// Ends the lock holder's session on the server (killing psql alone leaves it sleeping).
fn release(db: &str, holder: &mut std::process::Child) {
    server().psql(
        db,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND query LIKE '%pg_sleep%'",
    );
    holder.wait().ok();
}

#[test]
fn a_migration_waiting_for_a_lock_is_reported_then_gives_up_at_lock_timeout() {
    let (p, db) = project();
    p.run(&["deploy"]).success();
    let before = server().snapshot(&db);
    p.write(
        "migrations/20250101000000_add_rating.up.sql",
        "ALTER TABLE recipes ADD COLUMN rating INTEGER;\n",
    );
    p.write(
        "migrations/20250101000000_add_rating.down.sql",
        "ALTER TABLE recipes DROP COLUMN rating;\n",
    );
    let config = p.read("deploy.yaml").replace(
        "sslmode=disable\" }",
        "sslmode=disable\", lock_timeout: 3s }",
    );
    assert!(config.contains("lock_timeout: 3s"));
    p.write_config(&config);
    let pipeline = "name: deploy\nsteps:\n  - id: maintenance-on\n    uses: maintenance\n    with: { enabled: true }\n  - uses: migrate\n    with: { rollback: down, warn_after: 1s }\n";
    p.write("pipelines/deploy.yaml", pipeline);

    let mut holder = hold_lock(&db, 30);
    let run = p.run(&["deploy"]);
    release(&db, &mut holder);
    run.expect_code(1);
    let err = run.stderr();
    assert!(err.contains("still running after"), "{err}");
    assert!(err.contains("lock timeout"), "{err}");
    assert_eq!(server().snapshot(&db), before);
}

#[test]
fn a_backup_blocked_by_a_lock_gives_up_at_lock_timeout() {
    let (p, db) = project();
    p.run(&["deploy"]).success();
    let config = p.read("deploy.yaml").replace(
        "sslmode=disable\" }",
        "sslmode=disable\", lock_timeout: 2s }",
    );
    assert!(config.contains("lock_timeout: 2s"));
    p.write_config(&config);
    let mut holder = hold_lock(&db, 30);
    let started = Instant::now();
    let run = p.run(&["backup", "create", "--name", "blocked"]);
    release(&db, &mut holder);
    run.expect_code(1);
    assert!(
        started.elapsed() < Duration::from_secs(25),
        "pg_dump waited for the lock holder"
    );
    assert!(run.stderr().contains("pg_dump failed"), "{}", run.stderr());
    // A failed backup is never listed.
    let list = p.run(&["backup", "list"]);
    assert!(!list.stdout().contains("blocked"), "{}", list.stdout());
}
