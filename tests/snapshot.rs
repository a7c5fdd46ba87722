//! Snapshots on SQLite: a copy beside the database taken in the window, the backup to the
//! store streamed from it while the migrations run, and a rollback that swaps it back in
//! (finished by `recover` after a kill -9 in the middle of the swap); a successful run
//! removes it, and a snapshot that cannot be written stops the run before anything is
//! migrated, leaving nothing behind.

mod support;

use support::{Project, Run, assert_nothing_to_recover, assert_same_db, facts, last_journal};

/// A deployed project with data, one pending migration, and a pipeline whose backup is a
/// snapshot and whose health check decides.
fn project() -> Project {
    let p = Project::new();
    p.deployed_with_data();
    p.add_migration(
        "20250101000000_add_notes",
        "CREATE TABLE x_notes (id INTEGER PRIMARY KEY, body TEXT);
         INSERT INTO x_notes (body) VALUES ('one');
         UPDATE recipes SET servings = servings + 10;",
        Some("DROP TABLE x_notes;"),
    );
    p.write_pipeline(
        "name: deploy
steps:
  - id: maintenance-on
    uses: maintenance
    with: { enabled: true }
  - uses: backup
    with: { snapshot: true }
  - uses: migrate
    with: { rollback: restore }
  - id: maintenance-off
    uses: maintenance
    with: { enabled: false }
  - uses: health
",
    );
    p
}

/// Files in the database's folder other than the database and the backups.
fn beside(p: &Project) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(p.file("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !matches!(
                n.as_str(),
                "app.db" | "app.db-wal" | "app.db-shm" | "backups"
            )
        })
        .collect();
    names.sort();
    names
}

#[test]
fn a_run_that_succeeds_stores_the_backup_from_the_snapshot_and_removes_the_snapshot() {
    let p = project();
    let plan = p.run(&["plan"]);
    plan.success();
    assert!(
        plan.stdout()
            .contains("snapshot the database beside itself"),
        "{}",
        plan.all()
    );
    p.run(&["deploy"]).success();
    let journal = last_journal(&p);
    let taken = facts(&journal, "snapshot_taken");
    assert_eq!(taken.len(), 1, "{journal:#?}");
    let stored = facts(&journal, "backup_taken");
    assert_eq!(stored.len(), 1, "{journal:#?}");
    let id = stored[0]["backup"].as_str().unwrap();
    assert!(p.backup_ids().iter().any(|b| b == id));
    assert_eq!(facts(&journal, "snapshot_dropped").len(), 1, "{journal:#?}");
    assert!(beside(&p).is_empty(), "{:?}", beside(&p));
    // The stored backup is the database before the migration: restored, it has no
    // x_notes.
    p.run(&["backup", "restore", id, "--yes"]).success();
    assert!(!p.db_snapshot().contains_key("table x_notes"));
}

#[test]
fn a_rollback_swaps_the_snapshot_back_in_and_keeps_the_replaced_database() {
    let p = project();
    let before = p.db_snapshot();
    p.health.set_status(500);
    let run = p.run(&["deploy"]);
    run.expect_code(1);
    assert_same_db(&p.db_snapshot(), &before, "after the swap");
    assert!(
        run.all()
            .contains("swapped in; the database it replaced is kept as"),
        "{}",
        run.all()
    );
    assert!(
        run.all().contains("as before the run, checked"),
        "{}",
        run.all()
    );
    let left = beside(&p);
    assert!(
        left.len() == 1 && left[0].starts_with("app.db.replaced-"),
        "{left:?}"
    );
    // The replaced database is the one the migration changed.
    let replaced = support::db_snapshot(&p.file(&format!("state/{}", left[0])));
    assert!(replaced.contains_key("table x_notes"));
    // `backup prune` removes it.
    let dry = p.run(&["backup", "prune", "--dry-run"]);
    dry.success();
    assert!(
        dry.stdout()
            .contains(&format!("would remove copy {}", left[0])),
        "{}",
        dry.all()
    );
    assert_eq!(beside(&p), left);
    let pruned = p.run(&["backup", "prune"]);
    pruned.success();
    assert!(
        pruned
            .stdout()
            .contains(&format!("removed copy {}", left[0])),
        "{}",
        pruned.all()
    );
    assert!(beside(&p).is_empty(), "{:?}", beside(&p));
    assert_same_db(&p.db_snapshot(), &before, "after the prune");
}

#[test]
fn a_run_killed_in_the_middle_of_the_swap_is_finished_by_recover() {
    let p = project();
    let before = p.db_snapshot();
    p.health.set_status(500);
    let run = Run(p
        .cmd()
        .arg("deploy")
        .env("CUTOVER_TEST_CRASH_IN_SWAP", "1")
        .output()
        .unwrap());
    assert_ne!(run.code(), 0);
    assert_ne!(run.code(), 1, "{}", run.all());
    // Killed between the two renames: the database is not there.
    assert!(!p.file("state/app.db").exists(), "{:?}", beside(&p));
    let recover = p.run(&["recover"]);
    recover.expect_code(1);
    assert_same_db(&p.db_snapshot(), &before, "after recover");
    assert!(beside(&p).iter().all(|n| n.starts_with("app.db.replaced-")));
    assert_nothing_to_recover(&p);
}

#[test]
fn a_snapshot_that_cannot_be_written_stops_the_run_before_migrating_and_leaves_nothing() {
    let p = project();
    let before = p.db_snapshot();
    // The database on a small file system, filled up so the copy cannot fit.
    let (disk, _unmount) = small_disk(&p);
    std::fs::copy(p.file("state/app.db"), disk.join("app.db")).unwrap();
    let size = std::fs::metadata(disk.join("app.db")).unwrap().len();
    // Room for the shared memory file SQLite opens (32 KiB), not for a second copy.
    assert!(size > 64 * 1024, "{size}");
    let free = 4 * 1024 * 1024 - size;
    let filler = free - 40 * 1024;
    std::fs::write(
        disk.join("filler"),
        vec![0u8; usize::try_from(filler).unwrap()],
    )
    .unwrap();
    let config = p
        .read("deploy.yaml")
        .replace("sqlite://state/app.db", "sqlite://disk/app.db");
    p.write_config(&config);
    let run = p.run(&["deploy"]);
    run.expect_code(1);
    assert!(
        run.all().contains("cannot copy the database"),
        "{}",
        run.all()
    );
    assert!(
        !run.all().contains("applied 20250101000000"),
        "{}",
        run.all()
    );
    let mut names: Vec<String> = std::fs::read_dir(&disk)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("app.db-"))
        .collect();
    names.sort();
    assert_eq!(names, vec!["app.db".to_owned(), "filler".to_owned()]);
    assert_same_db(
        &support::db_snapshot(&disk.join("app.db")),
        &before,
        "untouched",
    );
}

#[test]
fn a_backup_that_cannot_be_stored_fails_the_run_before_the_traffic_comes_back() {
    let p = project();
    // The store on a small file system: the snapshot fits beside the database, the
    // backup does not fit in the store.
    // Rows that do not compress: a backup of a few hundred KiB.
    support::exec_sql(
        &p.file("state/app.db"),
        "WITH RECURSIVE n(i) AS (SELECT 10 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
         INSERT INTO recipes (id, user_id, title, servings) SELECT i, 1, hex(randomblob(64)), 1 FROM n;",
    );
    let before = p.db_snapshot();
    let (disk, _unmount) = small_disk(&p);
    let free = fs_free(&disk);
    std::fs::write(
        disk.join("filler"),
        vec![0u8; usize::try_from(free - 64 * 1024).unwrap()],
    )
    .unwrap();
    let config = p
        .read("deploy.yaml")
        .replace("path: state/backups", "path: disk/backups");
    p.write_config(&config);
    std::fs::remove_file(p.file("calls.log")).unwrap();
    let run = p.run(&["deploy"]);
    run.expect_code(1);
    let out = run.all();
    assert!(out.contains("maintenance-off: FAILED"), "{out}");
    assert!(out.contains("(streamed from the snapshot) failed"), "{out}");
    // Maintenance never went off before the rollback put it back as it was.
    let calls = p.calls();
    assert_eq!(calls, ["maintenance_on", "maintenance_off"], "{calls:?}");
    assert!(out.contains("swapped in"), "{out}");
    assert_same_db(&p.db_snapshot(), &before, "after the rollback");
}

/// A 4 MiB tmpfs mounted in the project at `disk/`, unmounted when the guard drops.
fn small_disk(p: &Project) -> (std::path::PathBuf, Unmount) {
    let disk = p.file("disk");
    std::fs::create_dir(&disk).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs"])
        .arg(&disk)
        .status()
        .expect("mount runs");
    assert!(
        mounted.success(),
        "this test mounts a small tmpfs, which needs root"
    );
    (disk.clone(), Unmount(disk))
}

struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// Bytes free on the file system at `path`.
fn fs_free(path: &std::path::Path) -> u64 {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

// PostgreSQL: `CREATE DATABASE ... TEMPLATE` and two renames.

use support::pg::{databases, server};

/// A deployed project on a fresh PostgreSQL database (`restore: swap`, which snapshots
/// need) with rows, one pending migration that changes them, and the snapshot pipeline;
/// `role`: connect as this role (made the database's owner) instead of the superuser.
fn pg_project(role: Option<&str>) -> (Project, String) {
    let (p, db) = support::pg::project();
    let mut url = server().url(&db);
    if let Some(role) = role {
        server().psql(
            "postgres",
            &format!(
                "DO $$ BEGIN CREATE ROLE {role} LOGIN CREATEDB; EXCEPTION WHEN duplicate_object THEN NULL; END $$;
                 ALTER DATABASE {db} OWNER TO {role}"
            ),
        );
        server().psql(&db, &format!("ALTER SCHEMA public OWNER TO {role}"));
        url = url.replace("postgres@", &format!("{role}@"));
    }
    let config = p.read("deploy.yaml").replace(
        &format!("url: \"{}\" }}", server().url(&db)),
        &format!("url: \"{url}\", restore: swap }}"),
    );
    p.write_config(&config);
    p.run(&["deploy"]).success();
    server().psql(
        &db,
        "INSERT INTO users (id, email, display_name) VALUES (1, 'a@example.com', 'A'), (2, 'b@example.com', 'B');
         INSERT INTO recipes (id, user_id, title, servings, calories) VALUES (1, 1, 'Soup', 2, 300), (2, 2, 'Salad', 1, NULL);",
    );
    p.add_migration(
        "20250101000000_add_notes",
        "CREATE TABLE x_notes (id BIGINT PRIMARY KEY, body TEXT);
         INSERT INTO x_notes VALUES (1, 'one');
         UPDATE recipes SET servings = servings + 10;",
        Some("DROP TABLE x_notes;"),
    );
    p.write_pipeline(&project_pipeline());
    (p, db)
}

fn project_pipeline() -> String {
    "name: deploy
steps:
  - id: maintenance-on
    uses: maintenance
    with: { enabled: true }
  - uses: backup
    with: { snapshot: true }
  - uses: migrate
    with: { rollback: restore }
  - id: maintenance-off
    uses: maintenance
    with: { enabled: false }
  - uses: health
"
    .to_owned()
}

/// A psql session on `db` as `role` that stays until killed, started once it is there.
fn app_session(db: &str, role: &str) -> std::process::Child {
    let url = server().url(db).replace("postgres@", &format!("{role}@"));
    let child = std::process::Command::new("psql")
        .args(["-X", "-q", &url, "-c", "SELECT pg_sleep(600)"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server()
        .psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND query LIKE '%pg_sleep(600)%' AND pid <> pg_backend_pid()"),
        )
        .trim()
        == "0"
    {
        assert!(std::time::Instant::now() < deadline, "the app session never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child
}

#[test]
fn postgres_a_rollback_swaps_the_snapshot_back_in_and_the_data_is_as_before() {
    let (p, db) = pg_project(None);
    let before = server().snapshot(&db);
    // An app session the plan names and the snapshot ends.
    let mut app = app_session(&db, "postgres");
    let plan = p.run(&["plan"]);
    assert!(
        plan.stdout()
            .contains("ending every other session on it first"),
        "{}",
        plan.all()
    );
    assert!(
        plan.all().contains("the snapshot ends every other session on the database when it runs (the app should be in maintenance by then); now: pid "),
        "{}",
        plan.all()
    );
    p.health.set_status(500);
    let run = p.run(&["deploy"]);
    let _ = app.kill();
    let _ = app.wait();
    run.expect_code(1);
    assert!(run.all().contains("swapped in for"), "{}", run.all());
    assert!(
        run.all().contains("as before the run, checked"),
        "{}",
        run.all()
    );
    assert_eq!(server().snapshot(&db), before);
    assert_eq!(
        databases(&format!("{db}\\_cutover\\_%")),
        Vec::<String>::new()
    );
    let replaced = databases(&format!("{db}\\_replaced\\_%"));
    assert_eq!(replaced.len(), 1, "{replaced:?}");
    // The replaced database is the migrated one, kept for a human to look at.
    assert!(server().snapshot(&replaced[0]).contains("x_notes"));
    // The backup streamed from the snapshot is complete and holds the data as before.
    let journal = last_journal(&p);
    assert_eq!(facts(&journal, "backup_taken").len(), 1, "{journal:#?}");
}

#[test]
fn postgres_a_run_that_succeeds_removes_its_snapshot() {
    let (p, db) = pg_project(None);
    p.run(&["deploy"]).success();
    assert_eq!(
        databases(&format!("{db}\\_cutover\\_%")),
        Vec::<String>::new()
    );
    assert!(server().snapshot(&db).contains("x_notes"));
    let journal = last_journal(&p);
    assert_eq!(facts(&journal, "snapshot_dropped").len(), 1, "{journal:#?}");
    assert_eq!(facts(&journal, "backup_taken").len(), 1, "{journal:#?}");
}

#[test]
fn postgres_a_run_killed_in_the_swap_is_finished_by_recover() {
    let (p, db) = pg_project(None);
    let before = server().snapshot(&db);
    p.health.set_status(500);
    let run = Run(p
        .cmd()
        .arg("deploy")
        .env("CUTOVER_TEST_CRASH_IN_SWAP", "1")
        .output()
        .unwrap());
    assert!(![0, 1].contains(&run.code()), "{}", run.all());
    // The renames run in one transaction: the process died inside it, so nothing was
    // renamed, and the snapshot is still there.
    assert_eq!(
        databases(&format!("{db}\\_cutover\\_%")).len(),
        1,
        "databases: {:?}\n{}",
        databases(&format!("{db}%")),
        run.all()
    );
    p.run(&["recover"]).expect_code(1);
    assert_eq!(server().snapshot(&db), before);
    assert_eq!(
        databases(&format!("{db}\\_cutover\\_%")),
        Vec::<String>::new()
    );
    assert_nothing_to_recover(&p);
}

#[test]
fn postgres_a_session_that_will_not_end_is_named_and_the_rollback_restores_from_the_store() {
    let (p, db) = pg_project(Some("deployer"));
    let before = server().snapshot(&db);
    // After the migration, a superuser's session opens on the database: a role that is
    // not superuser cannot end it, so the snapshot cannot be renamed into place.
    let url = server().url(&db);
    p.write_pipeline(&project_pipeline().replace(
        "  - id: maintenance-off\n",
        &format!(
            "  - uses: command\n    with: {{ run: \"psql -X -q '{url}' -c 'SELECT pg_sleep(600)' >/dev/null 2>&1 & echo $! > admin.pid; until psql -X -tA '{url}' -c \\\"SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(600)%' AND pid <> pg_backend_pid()\\\" | grep -q 1; do sleep 0.05; done\" }}\n  - id: maintenance-off\n"
        ),
    ));
    p.health.set_status(500);
    let run = p.run(&["deploy"]);
    let admin = p.read("admin.pid");
    let _ = std::process::Command::new("kill")
        .arg(admin.trim())
        .status();
    run.expect_code(1);
    let out = run.all();
    assert!(out.contains("cannot be swapped in"), "{out}");
    assert!(out.contains("did not end: pid "), "{out}");
    assert!(out.contains("restored backup"), "{out}");
    assert_eq!(server().snapshot(&db), before);
}
