//! The MySQL/MariaDB adapter against a real MariaDB server.

mod support;

use support::mysql::{PASSWORD, project, server};

fn seed(db: &str) {
    server().sql(
        db,
        "INSERT INTO users VALUES (1, 'a@example.com', 'A'), (2, 'b@example.com', 'B');
         INSERT INTO recipes VALUES (1, 1, 'Soup', 2, 300), (2, 2, 'Salad', 1, NULL);",
    );
}

#[test]
fn full_deploy_on_mariadb() {
    let (p, db) = project();
    p.run(&["deploy"]).success();
    let history = server().sql(
        &db,
        "SELECT version, description, success FROM _sqlx_migrations ORDER BY version",
    );
    assert_eq!(
        history,
        "20240101120000\tcreate users\t1\n20240101120100\tcreate recipes\t1\n"
    );
    let list = p.run(&["backup", "list", "--output", "json"]);
    assert!(list.stdout().contains("mysql-sql"), "{}", list.stdout());
    // Other tests of this binary make scratch copies of their own databases meanwhile.
    assert!(
        !server()
            .sql("mysql", "SHOW DATABASES")
            .contains(&format!("cutover_roundtrip_{db}_")),
        "the scratch database is dropped"
    );
    assert_eq!(p.platform(), "maintenance=false\njobs=3\n");
}

#[test]
fn rollback_by_down_and_by_restore_leave_every_row_as_it_was() {
    let (p, db) = project();
    p.run(&["deploy"]).success();
    seed(&db);
    let before = server().snapshot(&db);
    p.fail_validation_once_migrated("fails-after-migrating");

    p.write(
        "migrations/20250101000000_add_rating.up.sql",
        "ALTER TABLE recipes ADD COLUMN rating INT NOT NULL DEFAULT 3;\n",
    );
    p.write(
        "migrations/20250101000000_add_rating.down.sql",
        "ALTER TABLE recipes DROP COLUMN rating;\n",
    );
    p.run(&["deploy"]).expect_code(1);
    assert_eq!(
        server().snapshot(&db),
        before,
        "down migration undid the change"
    );

    // Without a down file the pipeline's backup is restored, dropping the new table too.
    std::fs::remove_file(p.file("migrations/20250101000000_add_rating.down.sql")).unwrap();
    p.write(
        "migrations/20250101000000_add_rating.up.sql",
        "CREATE TABLE audit (id INT PRIMARY KEY);\nDELETE FROM recipes WHERE id = 2;\n",
    );
    let run = p.run(&["deploy"]);
    run.expect_code(1);
    assert!(run.stderr().contains("restore backup"), "{}", run.stderr());
    assert_eq!(
        server().snapshot(&db),
        before,
        "restore brought back every row"
    );
}

#[test]
fn a_migration_that_fails_part_way_is_dirty_until_resolved() {
    let (p, db) = project();
    p.run(&["deploy"]).success();
    // The first statement commits implicitly (DDL); the second fails.
    p.write(
        "migrations/20250101000000_half.up.sql",
        "CREATE TABLE half (id INT PRIMARY KEY);\nINSERT INTO no_such_table VALUES (1);\n",
    );
    p.write(
        "migrations/20250101000000_half.down.sql",
        "DROP TABLE IF EXISTS half;\n",
    );
    // With automatic rollback the idempotent down cleans the half-applied migration up.
    p.run(&["deploy"]).expect_code(1);
    assert_eq!(
        server().sql(
            &db,
            "SELECT COUNT(*) FROM _sqlx_migrations WHERE version = 20250101000000"
        ),
        "0\n"
    );
    assert_eq!(server().sql(&db, "SHOW TABLES LIKE 'half'"), "");

    // With `rollback: none` nothing cleans up: the migration stays recorded as failed.
    let pipeline = p
        .read("pipelines/deploy.yaml")
        .replace("rollback: auto", "rollback: none");
    p.write("pipelines/deploy.yaml", &pipeline);
    p.run(&["deploy"]).expect_code(1);
    assert_eq!(
        server().sql(
            &db,
            "SELECT success FROM _sqlx_migrations WHERE version = 20250101000000"
        ),
        "0\n",
        "recorded as failed, as sqlx does"
    );
    let refused = p.run(&["deploy"]);
    refused.expect_code(2);
    assert!(
        refused.stderr().contains("migrate resolve 20250101000000"),
        "{}",
        refused.stderr()
    );

    // A human undoes the half-applied change and says so.
    server().sql(&db, "DROP TABLE half");
    p.run(&["migrate", "resolve", "20250101000000", "--as", "reverted"])
        .success();
    p.run(&["migrate", "resolve", "20250101000000", "--as", "reverted"])
        .expect_code(2);
    p.write(
        "migrations/20250101000000_half.up.sql",
        "CREATE TABLE half (id INT PRIMARY KEY);\n",
    );
    p.run(&["deploy"]).success();
    assert_eq!(server().sql(&db, "SELECT COUNT(*) FROM half"), "0\n");
}

#[test]
fn wrong_password_is_bad_input_and_is_never_shown() {
    let (p, _) = project();
    let config = p.read("deploy.yaml").replace(PASSWORD, "Wr0ng-Passw0rd");
    p.write_config(&config);
    let run = p.run(&["deploy"]);
    run.expect_code(2);
    assert!(
        run.stderr().contains("Access denied") || run.stderr().contains("cannot connect"),
        "{}",
        run.stderr()
    );
    assert!(!run.all().contains("Wr0ng-Passw0rd"));
    assert!(p.calls().is_empty() && p.journals().is_empty());
}

/// A database name with a typo is exit 2 naming the statement that would create it;
/// cutover itself never creates it.
#[test]
fn a_database_that_does_not_exist_is_bad_input_with_the_create_statement() {
    let (p, db) = project();
    let typo = format!("{db}_typo");
    p.write_config(
        &p.read("deploy.yaml")
            .replace(&format!("/{db}\""), &format!("/{typo}\"")),
    );
    let run = p.run(&["migrate", "status"]);
    run.expect_code(2);
    assert!(
        run.stderr().contains(&format!("CREATE DATABASE `{typo}`;")),
        "{}",
        run.stderr()
    );
}

/// `-- cutover:no-transaction` on MySQL/MariaDB, whose DDL commits on its own anyway: the
/// migration is applied and recorded like any other, and reverted by its down file.
#[test]
fn a_migration_marked_no_transaction_applies_and_reverts() {
    let (p, db) = project();
    p.run(&["deploy"]).success();
    let latest = std::fs::read_dir(p.file("migrations"))
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_str()?
                .split('_')
                .next()?
                .parse::<i64>()
                .ok()
        })
        .max()
        .unwrap()
        .to_string();
    p.add_migration(
        "20250101000000_optimize",
        "-- cutover:no-transaction\nCREATE INDEX idx_users_name ON users (display_name);\nOPTIMIZE TABLE users;\n",
        Some("-- cutover:no-transaction\nDROP INDEX idx_users_name ON users;\n"),
    );
    p.run(&["deploy"]).success();
    assert_eq!(
        server().sql(
            &db,
            "SELECT success FROM _sqlx_migrations WHERE version = 20250101000000"
        ),
        "1\n"
    );
    assert_eq!(
        server().sql(&db, "SELECT COUNT(*) FROM information_schema.statistics WHERE table_schema = DATABASE() AND index_name = 'idx_users_name'"),
        "1\n"
    );
    p.run(&["migrate", "down", "--to", &latest]).success();
    assert_eq!(
        server().sql(&db, "SELECT COUNT(*) FROM information_schema.statistics WHERE table_schema = DATABASE() AND index_name = 'idx_users_name'"),
        "0\n"
    );
}

/// Adopting and repairing on MariaDB: `migrate baseline` records the first migration,
/// made by hand, as sqlx-cli would; `migrate status` names when, how long and who;
/// `migrate repair --force --reason` accepts an edited applied file.
#[test]
fn baseline_status_and_repair() {
    let (p, db) = project();
    server().sql(
        &db,
        &p.read("migrations/20240101120000_create_users.up.sql"),
    );
    p.run(&[
        "migrate",
        "baseline",
        "--version",
        "20240101120000",
        "--reason",
        "made by hand",
    ])
    .success();
    assert_eq!(
        server().sql(
            &db,
            "SELECT version, success, execution_time FROM _sqlx_migrations"
        ),
        "20240101120000\t1\t-1\n"
    );
    p.run(&["deploy"]).success();
    let status = p.run(&["migrate", "status", "--output", "json"]);
    let value: serde_json::Value = serde_json::from_str(&status.stdout()).unwrap();
    let rows = value["result"]["migrations"].as_array().unwrap();
    assert_eq!(rows[0]["command"], "migrate baseline");
    assert!(rows[0]["execution_ms"].is_null(), "a baseline has no time");
    assert_eq!(rows[1]["command"], "deploy");
    assert!(
        rows[1]["execution_ms"].as_f64().unwrap() >= 0.0,
        "{}",
        rows[1]
    );
    for row in rows {
        assert!(row["installed_on"].as_str().unwrap().len() >= 19, "{row}");
        assert!(row["installed_by"].as_str().unwrap().contains('@'), "{row}");
    }

    let file = "migrations/20240101120100_create_recipes.up.sql";
    p.write(file, &format!("-- recipes\n{}", p.read(file)));
    p.run(&["deploy"]).expect_code(2);
    // No git history here: the edit cannot be shown harmless without `--force`.
    let refused = p.run(&["migrate", "repair"]);
    refused.expect_code(2);
    assert!(
        refused
            .stderr()
            .contains("not in this folder's git history"),
        "{}",
        refused.stderr()
    );
    p.run(&["migrate", "repair", "--force", "--reason", "comment added"])
        .success();
    p.run(&["deploy"]).success();
}

/// Drift on MariaDB: an index added by hand between two deploys is named and refused;
/// rows the app wrote meanwhile are not drift.
#[test]
fn a_hand_made_index_is_drift_and_new_rows_are_not() {
    let (p, db) = project();
    p.run(&["deploy"]).success();
    server().sql(
        &db,
        "INSERT INTO users (id, email, display_name) VALUES (7, 'x@example.com', 'X');",
    );
    assert!(p.run(&["migrate", "diff"]).stdout().contains("no drift"));
    server().sql(&db, "CREATE INDEX idx_users_name ON users (display_name);");
    p.add_migration(
        "20250101000000_add_flag",
        "ALTER TABLE users ADD COLUMN flag INT NULL;",
        Some("ALTER TABLE users DROP COLUMN flag;"),
    );
    let refused = p.run(&["deploy"]);
    refused.expect_code(2);
    assert!(
        refused
            .stderr()
            .contains("index users.idx_users_name: in the database, not in the recorded schema"),
        "{}",
        refused.stderr()
    );
    p.run(&["migrate", "accept-drift", "--reason", "index kept"])
        .success();
    p.run(&["deploy"]).success();
}

#[test]
fn a_snapshot_on_mariadb_is_said_to_be_a_dump_and_the_dump_runs() {
    let (p, _db) = project();
    p.edit_pipeline(
        "with: { name: \"pre-{version}-{timestamp}\", verify: restore }",
        "with: { name: \"pre-{version}-{timestamp}\", snapshot: true }",
    );
    let plan = p.run(&["plan"]);
    plan.success();
    assert!(
        plan.all()
            .contains("`snapshot: true`: MySQL and MariaDB have no cheap copy on the same server"),
        "{}",
        plan.all()
    );
    p.run(&["deploy"]).success();
    let list = p.run(&["backup", "list", "--output", "json"]);
    assert!(list.stdout().contains("mysql-sql"), "{}", list.stdout());
}
