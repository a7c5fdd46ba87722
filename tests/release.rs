//! Code as part of the release, on the `command` platform: a `traffic` step puts the new
//! version live after the migrations, a failure after it puts the earlier version back
//! (and the schema), a run killed during it is put back by `recover`, the plan refuses
//! an unsafe order, and `rollback --release` returns code and schema together.

mod support;

use support::{Project, Run, assert_nothing_to_recover, facts, last_journal};

/// A project whose command platform runs code version `v1` (in `code/version`), with the
/// shipped migrations applied and one more pending, and a pipeline that migrates, then
/// moves the traffic, then checks health.
fn project() -> Project {
    let p = Project::new();
    p.run(&["deploy"]).success();
    let config = p.read("deploy.yaml").replace(
        "      restart: \"echo restart >> calls.log\"\n",
        "      restart: \"echo restart >> calls.log\"
      current_version: \"cat code/version\"
      release: \"echo {version} > code/version; echo release_{version}_from_{from} >> calls.log\"
      release_undo: \"echo {version} > code/version; echo undo_{version}_from_{from} >> calls.log\"
",
    );
    p.write_config(&config);
    p.write("code/version", "v1\n");
    p.write_pipeline(PIPELINE);
    p.add_migration(
        "20250101000000_add_notes",
        "CREATE TABLE x_notes (id INTEGER PRIMARY KEY, body TEXT);",
        Some("DROP TABLE x_notes;"),
    );
    p
}

const PIPELINE: &str = "name: deploy
steps:
  - id: maintenance-on
    uses: maintenance
    with: { enabled: true }
  - uses: migrate
  - uses: traffic
  - id: maintenance-off
    uses: maintenance
    with: { enabled: false }
  - uses: health
";

fn code(p: &Project) -> String {
    p.read("code/version").trim().to_owned()
}

#[test]
fn a_deploy_puts_the_new_code_live_after_its_migrations_and_history_names_both_versions() {
    let p = project();
    let plan = p.run(&["plan", "--code-version", "v2"]);
    plan.success();
    assert!(
        plan.stdout().contains(
            "send the traffic to v2: 100% (now: v1 100%); until then the code before it serves on the migrated schema"
        ),
        "{}",
        plan.all()
    );
    let report = p.file("report.json");
    p.run(&[
        "deploy",
        "--code-version",
        "v2",
        "--report",
        report.to_str().unwrap(),
    ])
    .success();
    assert_eq!(code(&p), "v2");
    let calls = p.calls();
    assert!(
        calls.contains(&"release_v2_from_v1".to_owned()),
        "{calls:?}"
    );
    let journal = last_journal(&p);
    let released = facts(&journal, "code_released");
    assert_eq!(released.len(), 1, "{journal:#?}");
    assert_eq!(released[0]["version"], "v2");
    assert_eq!(released[0]["previous"], "v1");
    assert_eq!(
        released[0]["schema_version"].as_i64(),
        Some(20_250_101_000_000)
    );
    let doc: serde_json::Value = serde_json::from_str(&p.read("report.json")).unwrap();
    assert_eq!(doc["code"]["version"], "v2");
    assert_eq!(doc["code"]["previous"], "v1");
    let history = p.run(&["history"]);
    history.success();
    assert!(
        history.stdout().contains("code v2 (was v1)"),
        "{}",
        history.all()
    );
}

#[test]
fn a_failure_after_the_traffic_moved_puts_the_earlier_code_back_then_the_schema() {
    let p = project();
    let before = p.db_snapshot();
    p.health.set_status(500);
    let run = p.run(&["deploy", "--code-version", "v2"]);
    run.expect_code(1);
    assert_eq!(code(&p), "v1", "{}", run.all());
    assert_eq!(p.db_snapshot(), before);
    let calls = p.calls();
    let release = calls.iter().position(|c| c == "release_v2_from_v1");
    let undo = calls.iter().position(|c| c == "undo_v1_from_v2");
    assert!(release.is_some() && undo > release, "{calls:?}");
    assert!(
        run.all()
            .contains("v1 is live again (checked: current_version prints it)"),
        "{}",
        run.all()
    );
    let history = p.run(&["history"]);
    assert!(
        history.stdout().contains("code v2 (was v1), not kept"),
        "{}",
        history.all()
    );
}

#[test]
fn a_run_killed_anywhere_in_the_traffic_step_is_put_back_by_recover() {
    // The records the traffic step writes, from its start to its end, counted in a run
    // that goes through: a crash after each of them is one case.
    let probe = project();
    probe.run(&["deploy", "--code-version", "v2"]).success();
    let journal = last_journal(&probe);
    let at = |kind: &str| {
        journal
            .iter()
            .position(|r| r["record"] == kind && r["id"] == "traffic")
            .unwrap_or_else(|| panic!("no {kind} of the traffic step: {journal:#?}"))
    };
    // Record numbers count from 1.
    let points: Vec<usize> = (at("step_started") + 1..=at("step_finished") + 1).collect();
    assert!(points.len() >= 3, "{journal:#?}");
    let failures = support::failures_of_each(
        &points,
        |n| {
            let p = project();
            let before = p.db_snapshot();
            let run = Run(p
                .cmd()
                .args(["deploy", "--code-version", "v2"])
                .env("CUTOVER_TEST_CRASH_AFTER_RECORD", n.to_string())
                .output()
                .unwrap());
            assert_ne!(run.code(), 0, "{}", run.all());
            let recover = p.run(&["recover"]);
            recover.expect_code(1);
            assert_eq!(code(&p), "v1", "{}", recover.all());
            assert_eq!(p.db_snapshot(), before);
            assert_nothing_to_recover(&p);
        },
        |n, message| format!("crash after record {n}: {message}"),
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_plan_refuses_traffic_before_the_migrations_and_touches_nothing() {
    let p = project();
    let before = p.db_snapshot();
    p.write_pipeline(
        "name: deploy
steps:
  - uses: traffic
  - uses: migrate
",
    );
    let run = p.run(&["deploy", "--code-version", "v2"]);
    run.expect_code(2);
    assert!(
        run.all().contains(
            "step `traffic` sends traffic to the new code before this step applies its migrations"
        ),
        "{}",
        run.all()
    );
    assert!(
        run.all().contains("pipelines/deploy.yaml:4"),
        "{}",
        run.all()
    );
    assert_eq!(code(&p), "v1");
    assert_eq!(p.db_snapshot(), before);
}

#[test]
fn a_contract_migration_waits_for_a_release_after_the_one_that_moves_the_traffic() {
    let p = project();
    p.add_migration(
        "20250102000000_drop_old_column",
        "-- cutover:contract\nDROP TABLE x_notes;",
        Some("CREATE TABLE x_notes (id INTEGER PRIMARY KEY, body TEXT);"),
    );
    let run = p.run(&["deploy", "--code-version", "v2"]);
    run.expect_code(2);
    assert!(
        run.all()
            .contains("migration 20250102000000 drop old column is marked `contract`"),
        "{}",
        run.all()
    );
    assert_eq!(code(&p), "v1");
    // The code moves with the migrations before it; the contract one goes in a release
    // of its own, once no old code serves.
    p.edit_pipeline(
        "  - uses: migrate\n",
        "  - uses: migrate\n    with: { to: 20250101000000 }\n",
    );
    p.run(&["deploy", "--code-version", "v2"]).success();
    p.write_pipeline(&PIPELINE.replace("  - uses: traffic\n", ""));
    p.run(&["deploy"]).success();
    assert!(!p.db_snapshot().contains_key("table x_notes"));
}

#[test]
fn a_code_step_without_a_version_or_on_a_platform_that_cannot_is_bad_input() {
    let p = project();
    let run = p.run(&["deploy"]);
    run.expect_code(2);
    assert!(
        run.all().contains("no code version to release"),
        "{}",
        run.all()
    );
    p.edit_pipeline(
        "  - uses: traffic\n",
        "  - uses: release\n  - uses: traffic\n",
    );
    let run = p.run(&["deploy", "--code-version", "v2"]);
    run.expect_code(2);
    assert!(
        run.all()
            .contains("the command platform puts code live in one go"),
        "{}",
        run.all()
    );
    assert_eq!(code(&p), "v1");
}

#[test]
fn rollback_release_returns_the_code_first_then_the_schema_it_ran_on() {
    let p = project();
    p.run(&["deploy", "--code-version", "v2"]).success();
    p.add_migration(
        "20250201000000_add_more",
        "CREATE TABLE x_more (id INTEGER PRIMARY KEY);",
        Some("DROP TABLE x_more;"),
    );
    p.run(&["deploy", "--code-version", "v3"]).success();
    assert_eq!(code(&p), "v3");
    assert!(p.db_snapshot().contains_key("table x_more"));
    std::fs::remove_file(p.file("calls.log")).unwrap();
    let run = p.run(&["rollback", "--release", "v2", "--yes"]);
    run.success();
    assert_eq!(code(&p), "v2");
    let db = p.db_snapshot();
    assert!(!db.contains_key("table x_more") && db.contains_key("table x_notes"));
    assert_eq!(
        p.calls().first().map(String::as_str),
        Some("release_v2_from_v3")
    );
    // v1 was only ever the version before: its schema is the one below what the v2 run
    // applied.
    p.run(&["rollback", "--release", "v1", "--yes"]).success();
    assert_eq!(code(&p), "v1");
    assert!(!p.db_snapshot().contains_key("table x_notes"));
    let unknown = p.run(&["rollback", "--release", "v9", "--yes"]);
    unknown.expect_code(2);
    assert!(
        unknown.all().contains("no run in `local` released code v9"),
        "{}",
        unknown.all()
    );
}
