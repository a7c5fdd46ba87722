//! `backup: { verify: restore }` restores the fresh backup into a scratch database, runs the
//! pipeline's validation checks on it and drops it; PostgreSQL `restore: swap` restores
//! into a new database and renames it into place, keeping the one it replaced.

mod support;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use support::pg::{self, databases, server};
use support::{Project, Run, assert_same_db, exec_sql, replace_once};

/// A new reversible migration (SQLite and PostgreSQL alike).
const NOTES: &str = "20250101000000_add_notes";
const NOTES_UP: &str = "CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT);\n";
const NOTES_DOWN: &str = "DROP TABLE notes;\n";

/// A second user whose email differs from user 1's only in case: the shipped
/// `duplicate_user_emails` check counts it as one issue.
const DUPLICATE_EMAIL: &str =
    "INSERT INTO users (id, email, display_name) VALUES (3, 'A@EXAMPLE.COM', 'A again');";

const PASSED: &str = "verified: the backup reads back with its sha256 and restores into a scratch database and the pipeline's 4 validation check(s) pass on it";

/// `cutover deploy` with temporary files (SQLite's scratch databases) in `tmp`.
fn deploy(p: &Project, tmp: &Path) -> Run {
    Run(p
        .cmd()
        .arg("deploy")
        .env("TMPDIR", tmp)
        .output()
        .expect("cutover runs"))
}

/// Files cutover left in a temp folder.
fn leftovers(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

#[test]
fn sqlite_checks_pass_on_the_restored_copy_and_the_scratch_file_is_removed() {
    let p = Project::new();
    p.deployed_with_data();
    p.add_migration(NOTES, NOTES_UP, Some(NOTES_DOWN));
    let tmp = tempfile::tempdir().unwrap();
    let run = deploy(&p, tmp.path());
    run.success();
    assert!(run.all().contains(PASSED), "{}", run.all());
    assert!(p.db_snapshot().contains_key("table notes"));
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );

    // Without a validate step, the verify only restores.
    let pipeline = replace_once(
        &p.pipeline(),
        "  - uses: validate\n    with: { queries: validations/ }\n",
        "",
    );
    p.write_pipeline(&pipeline);
    p.add_migration(
        "20250101000100_add_tags",
        "CREATE TABLE more_tags (id BIGINT PRIMARY KEY);\n",
        Some("DROP TABLE more_tags;\n"),
    );
    let run = deploy(&p, tmp.path());
    run.success();
    assert!(
        run.all().contains(
            "verified: the backup reads back with its sha256 and restores into a scratch database\n"
        ),
        "{}",
        run.all()
    );
    assert!(!run.all().contains("validation check(s)"), "{}", run.all());
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
}

#[test]
fn sqlite_a_data_problem_fails_the_backup_before_anything_is_migrated() {
    let p = Project::new();
    p.deployed_with_data();
    exec_sql(&p.file("state/app.db"), DUPLICATE_EMAIL);
    p.add_migration(NOTES, NOTES_UP, Some(NOTES_DOWN));
    let before = p.db_snapshot();
    let tmp = tempfile::tempdir().unwrap();
    let run = deploy(&p, tmp.path());
    run.expect_code(1);
    assert!(
        run.stderr().contains("failed at step `backup`"),
        "{}",
        run.all()
    );
    assert!(
        run.stderr()
            .contains("`duplicate_user_emails` found 1 issue(s)"),
        "{}",
        run.all()
    );
    assert_same_db(&p.db_snapshot(), &before, "after the failed backup");
    assert_eq!(p.platform(), "maintenance=false\njobs=3\n");
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
}

// ---- PostgreSQL ----

/// The PostgreSQL tests look for databases any of them may leave; they run one at a time.
static PG: Mutex<()> = Mutex::new(());

fn pg_serial() -> MutexGuard<'static, ()> {
    PG.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn seed(db: &str) {
    server().psql(
        db,
        "INSERT INTO users (id, email, display_name) VALUES (1, 'a@example.com', 'A'), (2, 'b@example.com', 'B');
         INSERT INTO recipes (id, user_id, title, servings, calories) VALUES (1, 1, 'Soup', 2, 300), (2, 2, 'Salad', 1, NULL);",
    );
}

#[test]
fn postgres_checks_pass_on_the_restored_copy_and_the_scratch_database_is_dropped() {
    let _serial = pg_serial();
    let (p, db) = pg::project();
    p.run(&["deploy"]).success();
    seed(&db);
    p.add_migration(NOTES, NOTES_UP, Some(NOTES_DOWN));
    let run = p.run(&["deploy"]);
    run.success();
    assert!(run.all().contains(PASSED), "{}", run.all());
    assert_eq!(
        server()
            .psql(&db, "SELECT to_regclass('notes') IS NOT NULL")
            .trim(),
        "t"
    );
    assert_eq!(databases("cutover\\_%"), Vec::<String>::new());
}

#[test]
fn postgres_a_data_problem_fails_the_backup_before_anything_is_migrated() {
    let _serial = pg_serial();
    let (p, db) = pg::project();
    p.run(&["deploy"]).success();
    seed(&db);
    server().psql(&db, DUPLICATE_EMAIL);
    p.add_migration(NOTES, NOTES_UP, Some(NOTES_DOWN));
    let before = server().snapshot(&db);
    let run = p.run(&["deploy"]);
    run.expect_code(1);
    assert!(
        run.stderr().contains("failed at step `backup`"),
        "{}",
        run.all()
    );
    assert!(
        run.stderr()
            .contains("`duplicate_user_emails` found 1 issue(s)"),
        "{}",
        run.all()
    );
    assert_eq!(server().snapshot(&db), before);
    assert_eq!(p.platform(), "maintenance=false\njobs=3\n");
    assert_eq!(databases("cutover\\_%"), Vec::<String>::new());
}

/// A project on a fresh PostgreSQL database with `restore: swap`, deployed, with rows.
fn swap_project() -> (Project, String) {
    let (p, db) = pg::project();
    let url = server().url(&db);
    p.write_config(&replace_once(
        &p.read("deploy.yaml"),
        &format!("url: \"{url}\" }}"),
        &format!("url: \"{url}\", restore: swap }}"),
    ));
    p.run(&["deploy"]).success();
    seed(&db);
    (p, db)
}

#[test]
fn postgres_restore_swap_rolls_back_into_a_new_database_and_keeps_the_replaced_one() {
    let _serial = pg_serial();
    let (p, db) = swap_project();
    // No down file: the rollback restores the backup taken by the deploy.
    p.add_migration(
        "20250101000000_irreversible",
        "CREATE TABLE audit (id BIGINT PRIMARY KEY, note TEXT);\nINSERT INTO audit VALUES (1, 'x');\nDELETE FROM recipes WHERE id = 2;\n",
        None,
    );
    // Fails only once the migration ran: on the backup's copy the table is not there yet.
    p.write_pipeline(&replace_once(
        &p.pipeline(),
        "with: { queries: validations/ }",
        "with: { queries: validations/, checks: [{ name: no-audit-rows, sql: \"SELECT count(*) AS issues FROM audit\" }] }",
    ));
    // An application session on the database, which the swap ends.
    let mut app = std::process::Command::new("psql")
        .args(["-X", "-q", &server().url(&db), "-c", "SELECT pg_sleep(600)"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while server()
        .psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE datname = '{db}' AND query LIKE '%pg_sleep(600)%' AND pid <> pg_backend_pid()"),
        )
        .trim()
        == "0"
    {
        assert!(Instant::now() < deadline, "the app session never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Database properties the swapped-in database takes over.
    server().psql(
        "postgres",
        &format!(
            "CREATE ROLE reader; REVOKE ALL ON DATABASE {db} FROM PUBLIC; GRANT CONNECT ON DATABASE {db} TO reader;
             COMMENT ON DATABASE {db} IS 'the app''s data'; ALTER DATABASE {db} CONNECTION LIMIT 50;
             ALTER DATABASE {db} SET search_path = \"$user\", public, extra; ALTER DATABASE {db} SET work_mem = '8MB'"
        ),
    );
    server().psql(&db, "GRANT USAGE ON SCHEMA public TO reader");
    let properties = |db: &str| {
        server().psql(
            "postgres",
            &format!(
                "SELECT d.datacl, d.datconnlimit, shobj_description(d.oid, 'pg_database'), pg_get_userbyid(d.datdba),
                        (SELECT s.setconfig FROM pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0)
                 FROM pg_database d WHERE d.datname = '{db}'"
            ),
        ) + &server().psql(db, "SELECT nspacl, pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = 'public'")
    };
    let properties_before = properties(&db);
    let before = server().snapshot(&db);

    let run = p.run(&["deploy"]);
    run.expect_code(1);
    assert!(
        run.stderr().contains("`no-audit-rows` found 1 issue(s)"),
        "{}",
        run.all()
    );
    assert!(run.stderr().contains("restore backup"), "{}", run.all());
    assert_eq!(server().snapshot(&db), before);
    assert_eq!(properties(&db), properties_before);

    // The replaced database is kept, as the output says, with what the migration did.
    let replaced = databases(&format!("{db}\\_replaced\\_%"));
    assert_eq!(replaced.len(), 1, "{replaced:?}");
    let stamp = replaced[0]
        .strip_prefix(&format!("{db}_replaced_"))
        .unwrap();
    assert!(
        stamp.len() == 14 && stamp.bytes().all(|b| b.is_ascii_digit()),
        "{stamp}"
    );
    assert!(
        run.all().contains(&format!("kept as {}", replaced[0])),
        "{}",
        run.all()
    );
    assert!(
        run.all()
            .contains(&format!("DROP DATABASE \"{}\";", replaced[0])),
        "{}",
        run.all()
    );
    assert_eq!(
        server()
            .psql(&replaced[0], "SELECT count(*) FROM audit")
            .trim(),
        "1"
    );
    assert_eq!(
        databases(&format!("{db}\\_restore\\_%")),
        Vec::<String>::new()
    );
    assert_eq!(databases("cutover\\_%"), Vec::<String>::new());

    // The application's session was ended.
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = app.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the app session was not ended");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success());
}

/// A rollback pipeline of just the restore: no safety backup, whose restore would undo a
/// failed one.
const RESTORE_ONLY: &str =
    "name: restore-only\nsteps:\n  - id: database\n    uses: migrate\n    with: { to: target }\n";

/// The id of the project's one backup.
fn only_backup(p: &Project) -> String {
    let ids: Vec<String> = std::fs::read_dir(p.file("state/backups"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".manifest.json").map(str::to_owned)
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    ids[0].clone()
}

#[test]
fn postgres_restore_swap_that_fails_before_the_renames_drops_the_new_database() {
    let _serial = pg_serial();
    let (p, db) = swap_project();
    let id = only_backup(&p);
    // A backup cut short after its manifest was written, the manifest updated to match:
    // it passes the checksum and fails half-way through the restore, its compressed
    // stream ending mid-frame.
    let bytes = std::fs::read(p.file(&format!("state/backups/{id}.dump"))).unwrap();
    support::rewrite_backup(&p, &id, &bytes[..bytes.len() / 2]);
    p.write("pipelines/restore-only.yaml", RESTORE_ONLY);
    let before = server().snapshot(&db);

    let run = p.run(&[
        "rollback",
        "--backup",
        &id,
        "-p",
        "pipelines/restore-only.yaml",
    ]);
    run.expect_code(1);
    assert!(
        run.stderr().contains("cannot decompress the backup"),
        "{}",
        run.all()
    );
    assert_eq!(server().snapshot(&db), before);
    assert_eq!(
        databases(&format!("{db}\\_restore\\_%")),
        Vec::<String>::new()
    );
    assert_eq!(
        databases(&format!("{db}\\_replaced\\_%")),
        Vec::<String>::new()
    );
    // The database still takes new sessions.
    assert_eq!(
        server()
            .psql(
                "postgres",
                &format!("SELECT datallowconn FROM pg_database WHERE datname = '{db}'")
            )
            .trim(),
        "t"
    );
}

/// A PATH with what a PostgreSQL deploy runs, `pg_restore` slowed down by 30 seconds so a
/// run can be interrupted while it restores.
fn slow_pg_restore() -> tempfile::TempDir {
    let bin = tempfile::tempdir().unwrap();
    let link = |name: &str, target: &Path| {
        std::os::unix::fs::symlink(target, bin.path().join(name)).unwrap();
    };
    for tool in ["sh", "cat", "echo"] {
        link(tool, &Path::new("/bin").join(tool));
    }
    link("psql", &pg::tool("psql"));
    link("pg_dump", &pg::tool("pg_dump"));
    let wrapper = bin.path().join("pg_restore");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n[ \"$1\" = --version ] || /bin/sleep 30\nexec '{}' \"$@\"\n",
            pg::tool("pg_restore").display()
        ),
    )
    .unwrap();
    let mut permissions = std::fs::metadata(&wrapper).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&wrapper, permissions).unwrap();
    bin
}

/// Runs cutover with `args` and `path` as PATH, sends it Ctrl-C (SIGINT) once a database
/// matching `like` exists, and waits for it to stop.
fn interrupt_once_database_exists(p: &Project, args: &[&str], path: &Path, like: &str) {
    let mut child = p
        .cmd()
        .args(args)
        .env("PATH", path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while databases(like).is_empty() {
        assert!(
            Instant::now() < deadline,
            "no database like {like} appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "cutover did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn postgres_an_interrupted_verify_still_drops_the_scratch_database() {
    let _serial = pg_serial();
    let (p, _db) = pg::project();
    let path = slow_pg_restore();
    interrupt_once_database_exists(&p, &["deploy"], path.path(), "cutover\\_%");
    assert_eq!(databases("cutover\\_%"), Vec::<String>::new());
}

#[test]
fn postgres_an_interrupted_swap_drops_the_new_database() {
    let _serial = pg_serial();
    let (p, db) = swap_project();
    let id = only_backup(&p);
    p.write("pipelines/restore-only.yaml", RESTORE_ONLY);
    let before = server().snapshot(&db);
    let path = slow_pg_restore();
    interrupt_once_database_exists(
        &p,
        &[
            "rollback",
            "--backup",
            &id,
            "-p",
            "pipelines/restore-only.yaml",
        ],
        path.path(),
        &format!("{db}\\_restore\\_%"),
    );
    assert_eq!(server().snapshot(&db), before);
    assert_eq!(
        databases(&format!("{db}\\_restore\\_%")),
        Vec::<String>::new()
    );
    assert_eq!(
        databases(&format!("{db}\\_replaced\\_%")),
        Vec::<String>::new()
    );
}

#[test]
fn mysql_a_data_problem_fails_the_backup_before_anything_is_migrated() {
    use support::mysql;
    let (p, db) = mysql::project();
    p.run(&["deploy"]).success();
    mysql::server().sql(
        &db,
        "INSERT INTO users VALUES (1, 'a@example.com', 'A');
         INSERT INTO recipes VALUES (1, 1, 'Soup', 2, 300);",
    );
    p.write_pipeline(&replace_once(
        &p.pipeline(),
        "with: { queries: validations/ }",
        "with: { queries: validations/, checks: [{ name: no-soup, sql: \"SELECT COUNT(*) AS issues FROM recipes WHERE title = 'Soup'\" }] }",
    ));
    p.add_migration(
        "20250101000000_add_notes",
        "CREATE TABLE notes (id BIGINT PRIMARY KEY);\n",
        Some("DROP TABLE notes;\n"),
    );
    let before = mysql::server().snapshot(&db);
    let run = p.run(&["deploy"]);
    run.expect_code(1);
    assert!(
        run.stderr().contains("failed at step `backup`"),
        "{}",
        run.all()
    );
    assert!(
        run.stderr().contains("`no-soup` found 1 issue(s)"),
        "{}",
        run.all()
    );
    assert_eq!(mysql::server().snapshot(&db), before);
    // This binary's MariaDB server runs this test alone: any scratch database is its.
    assert_eq!(
        mysql::server().sql("mysql", "SHOW DATABASES LIKE 'cutover%'"),
        ""
    );
}
