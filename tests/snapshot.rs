//! Snapshots on SQLite: a copy beside the database taken in the window, the backup to the
//! store streamed from it while the migrations run, and a rollback that swaps it back in
//! (finished by `recover` after a kill -9 in the middle of the swap); a successful run
//! removes it, and a snapshot that cannot be written stops the run before anything is
//! migrated, leaving nothing behind.

mod support;

use support::{Project, Run, assert_nothing_to_recover, assert_same_db, last_journal};

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

fn facts<'a>(journal: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    journal
        .iter()
        .filter(|r| r["record"] == "fact" && r["fact"] == kind)
        .collect()
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
