//! The one-off commands: migrate, backup, rollback, history, plan.

mod support;

use support::{Project, Run, exec_sql};

fn json_lines(out: &str) -> Vec<serde_json::Value> {
    out.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn result(out: &str) -> serde_json::Value {
    json_lines(out)
        .into_iter()
        .rev()
        .find(|v| v["event"] == "result")
        .map(|v| v["result"].clone())
        .expect("a result line")
}

#[test]
fn migrate_up_down_status_and_verify() {
    let p = Project::new();
    let up = p.run(&["migrate", "up", "--to", "20240101120200"]);
    up.success();
    // The closing line says what the command did, and the version the database reports.
    assert!(
        up.stdout()
            .contains("migrated local up, schema at 20240101120200 (run "),
        "{}",
        up.stdout()
    );
    let status = p.run(&["migrate", "status", "--output", "json"]);
    status.success();
    let rows = result(&status.stdout())["migrations"]
        .as_array()
        .unwrap()
        .clone();
    let applied = rows.iter().filter(|r| r["status"] == "applied").count();
    assert_eq!(applied, 3, "{rows:?}");
    let at_three = p.db_snapshot();

    p.run(&["migrate", "up"]).success();
    assert!(p.db_snapshot().contains_key("table tags"));
    let down = p.run(&["migrate", "down", "--to", "20240101120200"]);
    down.success();
    assert!(
        down.stdout()
            .contains("migrated local down, schema at 20240101120200 (run "),
        "{}",
        down.stdout()
    );
    // The example's last down re-adds `cuisine` at the end of the table (SQLite cannot add a
    // column in place), so compare objects and rows rather than the DDL text.
    let after = p.db_snapshot();
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        at_three.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        after["table _sqlx_migrations"],
        at_three["table _sqlx_migrations"]
    );
    p.run(&["migrate", "verify"]).success();

    // Edit an applied migration: verify names it and fails.
    let file = "migrations/20240101120000_create_users.up.sql";
    p.write(file, &(p.read(file) + "\n-- edited\n"));
    let verify = p.run(&["migrate", "verify"]);
    verify.expect_code(2);
    assert!(
        verify
            .stdout()
            .contains("20240101120000_create_users.up.sql"),
        "{}",
        verify.stdout()
    );

    // Every migrate run went through the journal and closed it.
    assert!(
        p.journals()
            .iter()
            .all(|j| j.last().unwrap()["record"] == "run_finished")
    );
}

#[test]
fn migrate_new_creates_a_reversible_pair() {
    let p = Project::new();
    let run = p.run(&["migrate", "new", "Add meal plans"]);
    run.success();
    let names: Vec<String> = std::fs::read_dir(p.file("migrations"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("add_meal_plans"))
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(
        names.iter().any(|n| n.ends_with(".up.sql"))
            && names.iter().any(|n| n.ends_with(".down.sql"))
    );
}

#[test]
fn backup_create_verify_restore_round_trip() {
    let p = Project::new();
    p.deployed_with_data();
    let before = p.db_snapshot();
    let create = p.run(&["backup", "create", "--name", "known-good"]);
    create.success();
    let table = p.run(&["backup", "list"]).stdout();
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("BACKUP ") && header.contains(" SHA256"),
        "{table}"
    );
    assert!(
        table.lines().nth(1).unwrap().starts_with("known-good "),
        "{table}"
    );
    assert!(
        create
            .stdout()
            .contains("took backup known-good of local (run "),
        "{}",
        create.stdout()
    );
    p.run(&["backup", "verify", "known-good"]).success();
    // A backup that does not exist is bad input: exit 2, named.
    // So is a misspelt environment, everywhere, with the name it probably meant.
    let typo = p.run(&["history", "-e", "lcoal"]);
    typo.expect_code(2);
    assert!(
        typo.stderr()
            .contains("unknown environment `lcoal`; did you mean `local`?"),
        "{}",
        typo.stderr()
    );
    let missing = p.run(&["backup", "verify", "no-such-backup"]);
    missing.expect_code(2);
    assert!(
        missing
            .stderr()
            .contains("backup `no-such-backup` not found"),
        "{}",
        missing.stderr()
    );

    exec_sql(
        &p.file("state/app.db"),
        "DELETE FROM recipes; DELETE FROM users;",
    );
    assert_ne!(p.db_snapshot(), before);
    p.run(&["backup", "restore", "known-good"]).success();
    assert_eq!(p.db_snapshot(), before, "restore brings every row back");

    // A safety backup of the state it replaced was taken first.
    let list = p.run(&["backup", "list", "--output", "json"]);
    let ids: Vec<String> = result(&list.stdout())["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(ids.iter().any(|i| i.starts_with("pre-restore-")), "{ids:?}");

    // A damaged backup fails verification.
    let dump = p.file("state/backups/known-good.dump");
    let mut bytes = std::fs::read(&dump).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&dump, bytes).unwrap();
    let verify = p.run(&["backup", "verify", "known-good"]);
    assert_ne!(verify.code(), 0);
    assert!(verify.stderr().contains("damaged"), "{}", verify.stderr());

    // Unknown backups are refused before anything is touched.
    let missing = p.run(&["backup", "restore", "no-such-backup"]);
    missing.expect_code(2);
}

#[test]
fn rollback_to_a_version_runs_the_rollback_pipeline() {
    let p = Project::new();
    p.run(&["migrate", "up", "--to", "20240215090000"])
        .success();
    let at_four = p.db_snapshot();
    p.run(&["deploy"]).success();
    let calls_before = p.calls().len();
    let rollback = p.run(&["rollback", "--to", "20240215090000"]);
    rollback.success();
    assert!(
        rollback
            .stdout()
            .contains("rolled back local, schema at 20240215090000 (run "),
        "{}",
        rollback.stdout()
    );
    assert_eq!(
        p.db_snapshot().keys().collect::<Vec<_>>(),
        at_four.keys().collect::<Vec<_>>()
    );
    assert_eq!(p.platform(), "maintenance=false\njobs=3\n");
    // pipelines/rollback.yaml turned maintenance on and off around the change.
    assert_eq!(
        &p.calls()[calls_before..],
        [
            "maintenance_on",
            "scale_jobs_0",
            "maintenance_off",
            "scale_jobs_3"
        ]
    );
}

#[test]
fn history_and_plan_json_have_a_stable_shape() {
    let p = Project::new();
    let plan = p.run(&["plan", "--json"]);
    plan.success();
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout()).unwrap();
    assert_eq!(plan["format"], 1);
    assert_eq!(plan["environment"], "local");
    assert_eq!(plan["database"]["pending"].as_array().unwrap().len(), 6);
    assert_eq!(plan["steps"].as_array().unwrap().len(), 9);
    assert!(p.journals().is_empty(), "plan touches nothing");
    assert!(
        !p.file("state/app.db").exists(),
        "plan does not create the database"
    );

    p.run(&["deploy"]).success();
    let history = p.run(&["history", "--json"]);
    history.success();
    let runs = result(&history.stdout())["runs"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(runs[0]["command"], "deploy");
    // For people: a table with its header.
    let table = p.run(&["history"]).stdout();
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("RUN ") && header.contains(" STATUS "),
        "{table}"
    );
    let first = lines.next().unwrap();
    assert_eq!(
        first.find("succeeded"),
        header.find("STATUS"),
        "the status sits under its header: {table}"
    );

    // JSON events during a deploy: versioned, one object per line.
    let deploy = p.run(&["deploy", "--output", "json"]);
    deploy.success();
    let events = json_lines(&deploy.stdout());
    assert!(events.iter().all(|e| e["v"] == 1 && e["at"].is_string()));
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "run_finished" && e["status"] == "succeeded")
    );
}

#[test]
fn backup_prune_keeps_the_newest() {
    let p = Project::new();
    p.write_config(&p.default_config().replace(
        "backups: { kind: local, path: state/backups }",
        "backups: { kind: local, path: state/backups, keep: 2 }",
    ));
    p.deployed_with_data();
    for name in ["b1", "b2", "b3"] {
        p.run(&["backup", "create", "--name", name]).success();
    }
    let dry = p.run(&["backup", "prune", "--dry-run"]);
    dry.success();
    assert!(dry.stdout().contains("would delete"), "{}", dry.stdout());
    assert_eq!(
        std::fs::read_dir(p.file("state/backups")).unwrap().count(),
        8
    );
    p.run(&["backup", "prune"]).success();
    let list = p.run(&["backup", "list", "--output", "json"]);
    let ids: Vec<String> = result(&list.stdout())["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["b3", "b2"]);

    // Without `keep:` there is nothing to prune by: refused, nothing deleted.
    p.write_config(&p.default_config());
    p.run(&["backup", "prune"]).expect_code(2);
    assert_eq!(
        std::fs::read_dir(p.file("state/backups")).unwrap().count(),
        4
    );
}

#[test]
fn a_successful_deploy_prunes_by_keep_and_spares_what_runs_may_need() {
    let p = Project::new();
    p.write_config(&p.default_config().replace(
        "backups: { kind: local, path: state/backups }",
        "backups: { kind: local, path: state/backups, keep: 2 }",
    ));
    p.deployed_with_data();
    for name in ["b1", "b2", "b3"] {
        p.run(&["backup", "create", "--name", name]).success();
    }
    // `backup create` leaves retention to `backup prune`.
    assert_eq!(p.backup_ids().len(), 4, "{:?}", p.backup_ids());

    // A deploy that halts after its backup: that backup is what `rollback` restores.
    p.write(
        "pipelines/halting.yaml",
        &p.read("pipelines/deploy.yaml").replace(
            "    with: { to: latest, rollback: auto }\n",
            "    with: { to: latest, rollback: auto }\n    on_failure: halt\n",
        ),
    );
    p.add_migration(
        "20250101000000_broken",
        "ALTER TABLE users ADD COLUMN flag INTEGER; SELECT * FROM no_such_table;",
        Some("ALTER TABLE users DROP COLUMN flag;"),
    );
    p.run(&["deploy", "-p", "pipelines/halting.yaml"])
        .expect_code(3);
    let halted_backup = p.backup_ids()[0].clone();
    assert!(halted_backup.starts_with("pre-"), "{halted_backup}");
    // Two backups by another runner, newer than the halted run's (a halted run blocks
    // `backup create` here): the halted run's backup is no longer among the newest two.
    let halted_at: chrono::DateTime<chrono::Utc> = serde_json::from_value(
        serde_json::from_str::<serde_json::Value>(
            &p.read(&format!("state/backups/{halted_backup}.manifest.json")),
        )
        .unwrap()["created_at"]
            .clone(),
    )
    .unwrap();
    for (name, ms) in [("b4", 1), ("b5", 2)] {
        let mut manifest: serde_json::Value =
            serde_json::from_str(&p.read("state/backups/b3.manifest.json")).unwrap();
        manifest["id"] = name.into();
        manifest["created_at"] = (halted_at + chrono::Duration::milliseconds(ms))
            .to_rfc3339()
            .into();
        p.write(
            &format!("state/backups/{name}.manifest.json"),
            &manifest.to_string(),
        );
        std::fs::copy(
            p.file("state/backups/b3.dump"),
            p.file(&format!("state/backups/{name}.dump")),
        )
        .unwrap();
    }
    let pruned = p.run(&["backup", "prune"]);
    pruned.success();
    assert!(
        pruned
            .stdout()
            .contains("and 1 a halted or unfinished run may still restore"),
        "{}",
        pruned.stdout()
    );
    let ids = p.backup_ids();
    assert_eq!(
        ids,
        ["b5", "b4", halted_backup.as_str()],
        "the newest two, and the halted run's backup"
    );

    // Undo the halted run, fix the migration, deploy: the retention runs by itself.
    p.run(&["rollback", "--yes"]).success();
    p.add_migration(
        "20250101000000_broken",
        "ALTER TABLE users ADD COLUMN flag INTEGER;",
        Some("ALTER TABLE users DROP COLUMN flag;"),
    );
    let deploy = p.run(&["deploy", "--output", "json"]);
    deploy.success();
    let ids = p.backup_ids();
    assert_eq!(ids.len(), 2, "{ids:?}");
    assert_eq!(ids[1], "b5", "the newest two are kept");
    let pruned: Vec<serde_json::Value> = json_lines(&deploy.stdout())
        .into_iter()
        .filter(|e| e["fact"] == "backups_pruned")
        .collect();
    assert_eq!(pruned.len(), 1, "{}", deploy.stdout());
    assert_eq!(
        pruned[0]["deleted"],
        serde_json::json!(["b4", halted_backup])
    );
    assert!(
        p.journals().iter().flatten().any(|r| r["record"] == "fact"
            && r["fact"] == "backups_pruned"
            && r["deleted"] == serde_json::json!(["b4", halted_backup])),
        "the journal records the prune"
    );
}

#[test]
fn deploy_applies_exactly_the_approved_plan_or_refuses() {
    let p = Project::new();
    p.run(&["plan", "--out", "approved.json"]).success();
    // Something changes between approval and deploy: a new migration lands.
    p.write(
        "migrations/20250101000000_late.up.sql",
        "CREATE TABLE late (id INTEGER);\n",
    );
    p.write(
        "migrations/20250101000000_late.down.sql",
        "DROP TABLE late;\n",
    );
    let refused = p.run(&["deploy", "--plan", "approved.json"]);
    refused.expect_code(2);
    assert!(
        refused.stderr().contains("approved plan"),
        "{}",
        refused.stderr()
    );
    assert!(p.journals().is_empty() && p.calls().is_empty() && !p.file("state/app.db").exists());

    // A fresh approval of the new plan is applied.
    p.run(&["plan", "--out", "approved.json"]).success();
    p.run(&["deploy", "--plan", "approved.json"]).success();
    assert!(p.db_snapshot().contains_key("table late"));
}

#[test]
fn a_check_returning_rows_shows_them_and_fails_the_deploy() {
    let p = Project::new();
    p.deployed_with_data();
    let pipeline = p.read("pipelines/deploy.yaml").replace(
        "with: { queries: validations/ }",
        "with: { queries: validations/, checks: [{ name: soups, sql: \"SELECT id, title FROM recipes WHERE title = 'Soup'\" }] }",
    );
    p.write("pipelines/deploy.yaml", &pipeline);
    let run = p.run(&["deploy"]);
    run.expect_code(1);
    assert!(
        run.stderr().contains("soups: 1 issue(s) [FAIL]"),
        "{}",
        run.stderr()
    );
    assert!(
        run.stderr().contains("id | title\n        1 | Soup"),
        "{}",
        run.stderr()
    );

    let json = p.run(&["deploy", "--output", "json"]);
    json.expect_code(1);
    let check = json_lines(&json.stdout())
        .into_iter()
        .find(|e| e["event"] == "check_result" && e["check"] == "soups")
        .expect("a check_result event");
    assert_eq!(check["issues"], 1);
    assert_eq!(check["columns"], serde_json::json!(["id", "title"]));
    assert_eq!(check["rows"], serde_json::json!([["1", "Soup"]]));
}

#[test]
fn a_missing_config_names_the_folder_and_the_one_above() {
    let p = Project::new();
    // One folder too deep: the project's deploy.yaml is named, not used.
    let below = Run(p
        .cmd()
        .current_dir(p.file("migrations"))
        .args(["migrate", "status"])
        .output()
        .unwrap());
    below.expect_code(2);
    let above = p.file("deploy.yaml").canonicalize().unwrap();
    assert!(
        below.stderr().contains(&format!(
            "no such file in {}; there is one in a folder above, {}: run cutover there, or pass `-c {}`",
            p.file("migrations").canonicalize().unwrap().display(),
            above.display(),
            above.display()
        )),
        "{}",
        below.stderr()
    );
    // Nowhere near a project.
    let empty = tempfile::tempdir().unwrap();
    let nowhere = Run(p
        .cmd()
        .current_dir(empty.path())
        .args(["migrate", "status"])
        .output()
        .unwrap());
    nowhere.expect_code(2);
    assert!(
        nowhere
            .stderr()
            .contains("run cutover in the project's folder, pass `-c PATH` to name the config file, or start a project here with `cutover init`"),
        "{}",
        nowhere.stderr()
    );
}

#[test]
fn check_does_not_tell_you_to_run_check() {
    let p = Project::new();
    p.write_config(&p.default_config().replace(
        "project: testapp",
        "project: testapp
projcet: x",
    ));
    let check = p.run(&["check"]);
    check.expect_code(2);
    assert!(
        check.stderr().contains("unknown field `projcet`"),
        "{}",
        check.stderr()
    );
    assert!(
        check
            .stderr()
            .contains("hint: nothing was touched; fix the input")
    );
    assert!(
        !check.stderr().contains("`cutover check`"),
        "{}",
        check.stderr()
    );
    // Other commands still point at it.
    let plan = p.run(&["plan"]);
    plan.expect_code(2);
    assert!(plan.stderr().contains("`cutover check` checks everything"));
}

/// Who ran what: `migrate status` names, per applied migration, when it was installed, how
/// long it took, and the run (and its user) that applied it; `history` names each run's
/// user and how it was confirmed.
#[test]
fn migration_info_and_history_name_who_ran_and_who_confirmed() {
    let p = Project::new();
    p.write_config(
        &p.default_config()
            .replace("\n  local:\n", "\n  local:\n    confirm: typed\n"),
    );
    let run =
        |args: &[&str]| support::Run(p.cmd().args(args).env("USER", "alice").output().unwrap());
    run(&["deploy", "--confirm", "local", "--report", "report.json"]).success();
    let report: serde_json::Value = serde_json::from_str(&p.read("report.json")).unwrap();
    assert!(
        report["run_by"].as_str().unwrap().starts_with("alice@"),
        "{}",
        report["run_by"]
    );
    assert_eq!(report["confirmed"], "alice, `--confirm local`");
    let status = run(&["migrate", "status", "--output", "json"]);
    status.success();
    let rows = result(&status.stdout())["migrations"].clone();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 6);
    let run_id = rows[0]["run_id"].as_str().unwrap().to_owned();
    for row in rows {
        assert!(
            row["installed_by"].as_str().unwrap().starts_with("alice@"),
            "{row}"
        );
        assert_eq!(row["run_id"], run_id.as_str(), "{row}");
        assert_eq!(row["command"], "deploy");
        assert!(row["installed_on"].as_str().unwrap().len() >= 19, "{row}");
        assert!(row["execution_ms"].as_f64().unwrap() >= 0.0, "{row}");
    }
    let table = run(&["migrate", "status"]).stdout();
    assert!(table.contains("INSTALLED"), "{table}");
    assert!(table.contains("alice@"), "{table}");

    // The run that reverted it removes the claim.
    run(&[
        "migrate",
        "down",
        "--to",
        "20240301100000",
        "--confirm",
        "local",
    ])
    .success();
    let status = run(&["migrate", "status", "--output", "json"]);
    let rows = result(&status.stdout())["migrations"].clone();
    assert_eq!(rows[5]["status"], "pending");
    assert!(rows[5]["run_id"].is_null(), "{}", rows[5]);

    let history = run(&["history", "--json"]);
    let runs = result(&history.stdout())["runs"].clone();
    let deploy = runs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["run_id"] == run_id.as_str())
        .unwrap()
        .clone();
    assert!(
        deploy["user"].as_str().unwrap().starts_with("alice@"),
        "{deploy}"
    );
    assert_eq!(deploy["confirmed"], "alice, `--confirm local`");
    assert!(
        run(&["history"])
            .stdout()
            .contains("confirmed by alice, `--confirm local`"),
        "the table says it too"
    );
}

/// A saved plan records who approved it and until when: `deploy --plan` names the
/// approver in the journal and refuses an expired approval, touching nothing.
#[test]
fn an_approved_plan_names_its_approver_and_expires() {
    let p = Project::new();
    p.run(&[
        "plan",
        "--out",
        "approved.json",
        "--approved-by",
        "dana",
        "--expires-in",
        "2h",
    ])
    .success();
    let saved: serde_json::Value = serde_json::from_str(&p.read("approved.json")).unwrap();
    assert_eq!(saved["approval"]["by"], "dana");
    let at =
        chrono::DateTime::parse_from_rfc3339(saved["approval"]["at"].as_str().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(saved["approval"]["expires_at"].as_str().unwrap())
            .unwrap();
    assert_eq!(expires - at, chrono::Duration::hours(2));

    // Expired: refused, nothing touched.
    let mut old = saved.clone();
    old["approval"]["expires_at"] = "2026-01-01T00:00:00Z".into();
    p.write("expired.json", &old.to_string());
    let before = p.state();
    let refused = p.run(&["deploy", "--plan", "expired.json"]);
    refused.expect_code(2);
    assert!(
        refused
            .stderr()
            .contains("the approval by dana expired at 2026-01-01 00:00 UTC"),
        "{}",
        refused.stderr()
    );
    assert_eq!(p.state(), before);

    p.run(&["deploy", "--plan", "approved.json"]).success();
    let history = p.run(&["history", "--json"]);
    let runs = result(&history.stdout())["runs"].clone();
    let confirmed = runs[0]["confirmed"].as_str().unwrap().to_owned();
    assert!(
        confirmed.ends_with(&format!(
            "the plan {} approved by dana",
            saved["digest"].as_str().unwrap()
        )),
        "{confirmed}"
    );
}

/// SQLite reverts a batch of down files in one transaction: all of it, or, when one down
/// file fails, none of it, with the failing migration named.
#[test]
fn sqlite_reverts_a_batch_whole_or_not_at_all() {
    let p = Project::new();
    p.run(&["migrate", "up"]).success();
    let before = p.db_snapshot();
    let add = |fail: bool| {
        for i in 0..5 {
            let down = if fail && i == 2 {
                format!("DROP TABLE rev_{i}; DROP TABLE no_such_table;")
            } else {
                format!("DROP TABLE rev_{i};")
            };
            p.add_migration(
                &format!("2025010100{i}000_rev_{i}"),
                &format!("CREATE TABLE rev_{i} (id INTEGER); INSERT INTO rev_{i} VALUES ({i});"),
                Some(&down),
            );
        }
    };
    add(true);
    p.run(&["migrate", "up"]).success();
    let applied = p.db_snapshot();
    let failed = p.run(&["migrate", "down", "--to", "20240301100100"]);
    assert_ne!(failed.code(), 0, "{}", failed.all());
    assert!(
        failed
            .all()
            .contains("migration 20250101002000 (rev 2 (down)) failed"),
        "{}",
        failed.all()
    );
    assert!(!failed.all().contains("reverted 2025"), "{}", failed.all());
    assert_eq!(p.db_snapshot(), applied);

    add(false);
    // Only the down files change: a migration's checksum is its up file's.
    let down = p.run(&["migrate", "down", "--to", "20240301100100"]);
    down.success();
    assert!(
        down.all().contains("reverted 20250101000000"),
        "{}",
        down.all()
    );
    assert_eq!(p.db_snapshot(), before);
}
