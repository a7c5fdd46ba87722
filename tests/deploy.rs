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
