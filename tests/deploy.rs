mod support;

use sha2::Digest;

use support::Project;

#[test]
fn full_deploy_applies_migrations_backs_up_and_polls_health() {
    let p = Project::new();
    let run = p.run(&["deploy"]);
    run.success();
    // Migrations applied.
    let db = p.db_snapshot();
    assert!(db.contains_key("table recipe_tags"), "{db:?}");
    assert_eq!(db["table _sqlx_migrations"].len(), 1 + 6);
    // Backup listed with a valid sha256.
    let list = p.run(&["backup", "list", "--output", "json"]);
    list.success();
    let line: serde_json::Value =
        serde_json::from_str(list.stdout().lines().last().unwrap()).unwrap();
    let backups = line["result"]["backups"].as_array().unwrap().clone();
    assert_eq!(backups.len(), 1);
    let id = backups[0]["id"].as_str().unwrap();
    let bytes = std::fs::read(p.file(&format!("state/backups/{id}.dump"))).unwrap();
    assert_eq!(
        hex::encode(sha2::Sha256::digest(&bytes)),
        backups[0]["sha256"].as_str().unwrap()
    );
    // Journal closed as succeeded.
    let journals = p.journals();
    assert_eq!(journals.len(), 1);
    assert_eq!(journals[0].last().unwrap()["status"], "succeeded");
    // Platform commands in order, state restored.
    assert_eq!(
        p.calls(),
        [
            "maintenance_on",
            "scale_jobs_0",
            "maintenance_off",
            "scale_jobs_3"
        ]
    );
    assert_eq!(p.platform(), "maintenance=false\njobs=3\n");
    // Health polled against the real server.
    assert!(p.health.hits() >= 2, "preflight and health step both poll");
    assert!(p.locks().is_empty());
}

/// `-- cutover:no-transaction` on SQLite: `VACUUM` runs (it cannot inside a transaction),
/// and a migration that fails part-way is recorded as dirty, then undone by its down
/// file, which also removes the record: the state after the rollback is as before.
#[test]
fn sqlite_migrations_outside_a_transaction() {
    let p = Project::new();
    p.run(&["deploy"]).success();
    p.add_migration(
        "20250101000000_vacuum",
        "-- cutover:no-transaction\nCREATE TABLE scratch (id INTEGER);\nDROP TABLE scratch;\nVACUUM;\n",
        Some("-- cutover:no-transaction\nVACUUM;\n"),
    );
    let run = p.run(&["deploy"]);
    run.success();
    let db = p.db_snapshot();
    assert!(
        db["table _sqlx_migrations"]
            .iter()
            .any(|r| r.starts_with("20250101000000 | vacuum | <time> | 1 |")),
        "recorded as applied: {db:?}"
    );
    p.run(&["migrate", "down", "--to", "20240301100100"])
        .success();
    assert_eq!(p.db_snapshot()["table _sqlx_migrations"].len(), 1 + 6);

    // Half-way: the table is made (and committed), then a statement fails.
    p.edit_pipeline("rollback: auto", "rollback: down");
    let before = p.state();
    p.add_migration(
        "20250101000000_vacuum",
        "-- cutover:no-transaction\nCREATE TABLE half (id INTEGER);\nINSERT INTO no_such_table VALUES (1);\n",
        Some("-- cutover:no-transaction\nDROP TABLE IF EXISTS half;\n"),
    );
    let failed = p.run(&["deploy"]);
    failed.expect_code(1);
    assert!(
        failed.stderr().contains("no such table: no_such_table"),
        "{}",
        failed.stderr()
    );
    assert!(
        failed.stderr().contains("as before the run, checked"),
        "{}",
        failed.stderr()
    );
    assert_eq!(p.state(), before);

    // Without an undo the migration stays dirty, and the next plan says so.
    p.edit_pipeline("rollback: down", "rollback: none");
    p.run(&["deploy"]).expect_code(1);
    assert!(p.db_snapshot().contains_key("table half"));
    let refused = p.run(&["deploy"]);
    refused.expect_code(2);
    assert!(
        refused.stderr().contains("migrate resolve 20250101000000"),
        "{}",
        refused.stderr()
    );
}
