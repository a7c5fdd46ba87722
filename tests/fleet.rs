//! Fleet runs over 200 real SQLite tenant databases: the database steps run once per
//! tenant, the platform steps once around the fleet; a poisoned tenant stops the canary
//! stage, or, later, is rolled back within the failure budget while the rest move on;
//! re-running skips tenants already at the version; kill -9 mid-fleet, then `recover
//! --fleet`, leaves every tenant whole; `--shard i/n` takes a slice.

mod support;

use std::collections::BTreeMap;

use serde_json::Value;
use support::{Project, exec_sql, replace_once};

const TENANTS: usize = 200;
/// The newest shipped migration: where every tenant is after the first fleet deploy.
const LATEST: i64 = 20_240_301_100_100;
/// The release under test: fails on a tenant with two users of the same display name.
const NEW: &str = "20250101000000_unique_display_names";
const NEW_VERSION: i64 = 20_250_101_000_000;

fn name(i: usize) -> String {
    format!("t{i:03}")
}

/// A project whose `local` environment has 200 tenant databases (from a targets file) and
/// a pipeline with maintenance and scaling around the database steps.
fn fleet(settings: &str) -> Project {
    let p = Project::new();
    let mut list = String::from("# tenants\n");
    for i in 0..TENANTS {
        list.push_str(&format!("{} sqlite://tenants/{}.db\n", name(i), name(i)));
    }
    p.write("tenants.txt", &list);
    // The tenants' folder exists, as where tenants' databases are provisioned.
    std::fs::create_dir(p.file("tenants")).unwrap();
    p.write_config(&replace_once(
        &p.default_config(),
        "    health: {",
        &format!("    targets:\n      file: tenants.txt\n{settings}    health: {{"),
    ));
    p.write_pipeline(
        "name: deploy
steps:
  - id: maintenance-on
    uses: maintenance
    with: { enabled: true }
  - id: jobs-down
    uses: scale
    with: { target: jobs, replicas: 0 }
  - uses: migrate
  - uses: validate
    with: { queries: validations/ }
  - id: maintenance-off
    uses: maintenance
    with: { enabled: false }
  - id: jobs-up
    uses: scale
    with: { target: jobs, replicas: previous }
",
    );
    p
}

fn tenant_db(p: &Project, i: usize) -> std::path::PathBuf {
    p.file(&format!("tenants/{}.db", name(i)))
}

/// The schema version of each tenant, from its own migration history.
fn versions(p: &Project) -> BTreeMap<String, Option<i64>> {
    (0..TENANTS)
        .map(|i| {
            let snapshot = support::db_snapshot(&tenant_db(p, i));
            let version = snapshot.get("table _sqlx_migrations").and_then(|rows| {
                rows.iter()
                    .skip(1)
                    .filter_map(|r| r.split(" | ").next()?.parse::<i64>().ok())
                    .max()
            });
            (name(i), version)
        })
        .collect()
}

fn result(run: &support::Run) -> Value {
    let line = run
        .stdout()
        .lines()
        .rfind(|l| l.contains("\"fleet_run_id\""))
        .unwrap_or_else(|| panic!("no fleet result:\n{}\n{}", run.stdout(), run.stderr()))
        .to_owned();
    serde_json::from_str::<Value>(&line).unwrap()["result"].clone()
}

fn statuses(result: &Value) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for t in result["targets"].as_array().unwrap() {
        *counts
            .entry(t["status"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    counts
}

fn status_of<'a>(result: &'a Value, target: &str) -> &'a Value {
    result["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == target)
        .unwrap()
}

/// Every tenant at the shipped migrations, then the new release added and `poisoned`
/// given the data it fails on.
fn deployed_then_poisoned(p: &Project, poisoned: usize) {
    let first = p.run(&["deploy", "--fleet", "--output", "json"]);
    first.success();
    assert_eq!(
        statuses(&result(&first)),
        BTreeMap::from([("succeeded".into(), TENANTS)])
    );
    assert!(versions(p).values().all(|v| *v == Some(LATEST)));
    p.add_migration(
        NEW,
        "CREATE UNIQUE INDEX ux_users_display_name ON users (display_name);\n",
        Some("DROP INDEX ux_users_display_name;\n"),
    );
    exec_sql(
        &tenant_db(p, poisoned),
        "INSERT INTO users (email, display_name) VALUES ('a@x', 'Sam'), ('b@x', 'Sam');",
    );
}

fn platform_is(p: &Project, maintenance: bool, jobs: u32) {
    assert_eq!(
        p.platform(),
        format!("maintenance={maintenance}\njobs={jobs}\n")
    );
}

#[test]
fn a_poisoned_canary_stops_the_fleet_early() {
    let p = fleet("      concurrency: 8\n      canary: 3\n");
    deployed_then_poisoned(&p, 1);
    let run = p.run(&["deploy", "--fleet", "--output", "json"]);
    run.expect_code(1);
    let r = result(&run);
    assert!(
        r["stopped"]
            .as_str()
            .unwrap()
            .contains("canary target `t001` failed"),
        "{r:#}"
    );
    assert_eq!(status_of(&r, "t001")["status"], "rolled_back");
    assert_eq!(status_of(&r, "t001")["failed_step"], "migrate");
    let counts = statuses(&r);
    assert_eq!(counts["not_started"], TENANTS - 3, "{counts:?}");
    let v = versions(&p);
    assert_eq!(v["t001"], Some(LATEST), "the failed tenant is rolled back");
    assert!(
        v.iter()
            .filter(|(n, _)| n.as_str() > "t002")
            .all(|(_, v)| *v == Some(LATEST))
    );
    // The fleet's own steps were undone: the platform is as before.
    platform_is(&p, false, 3);
    // Shared steps ran once, not per tenant.
    let calls = p.calls();
    assert_eq!(
        calls.iter().filter(|c| *c == "maintenance_on").count(),
        2,
        "{calls:?}"
    );
}

#[test]
fn the_failure_budget_lets_the_rest_through_and_a_rerun_skips_them() {
    let p = fleet("      concurrency: 8\n      canary: 5\n      max_failures: 1%\n");
    deployed_then_poisoned(&p, 150);
    let run = p.run(&["deploy", "--fleet", "--output", "json"]);
    run.expect_code(1);
    let r = result(&run);
    assert!(r["stopped"].is_null(), "{r:#}");
    assert_eq!(r["status"], "succeeded", "the fleet's own run finished");
    let counts = statuses(&r);
    assert_eq!(counts["succeeded"], TENANTS - 1, "{counts:?}");
    assert_eq!(counts["rolled_back"], 1);
    assert!(
        status_of(&r, "t150")["error"]
            .as_str()
            .unwrap()
            .contains("UNIQUE"),
        "{r:#}"
    );
    let v = versions(&p);
    assert_eq!(v["t150"], Some(LATEST));
    assert_eq!(
        v.values().filter(|v| **v == Some(NEW_VERSION)).count(),
        TENANTS - 1
    );
    platform_is(&p, false, 3);
    // One journal per target run, one for the fleet.
    let target_journal = p.file(".cutover/targets/local/t150/journal");
    assert_eq!(std::fs::read_dir(&target_journal).unwrap().count(), 2);
    let history = p.run(&["history", "--target", "t150"]);
    assert!(
        history.stdout().contains("rolled_back"),
        "{}",
        history.stdout()
    );

    // Fixed, run again: only the tenant that failed runs.
    exec_sql(
        &tenant_db(&p, 150),
        "UPDATE users SET display_name = 'Sam 2' WHERE email = 'b@x';",
    );
    let again = p.run(&["deploy", "--fleet", "--output", "json"]);
    again.success();
    let counts = statuses(&result(&again));
    assert_eq!(counts["skipped"], TENANTS - 1, "{counts:?}");
    assert_eq!(counts["succeeded"], 1);
    assert!(versions(&p).values().all(|v| *v == Some(NEW_VERSION)));
}

#[test]
fn a_budget_spent_stops_new_targets() {
    let p = fleet("      concurrency: 1\n      canary: 0\n      max_failures: 1\n");
    deployed_then_poisoned(&p, 10);
    exec_sql(
        &tenant_db(&p, 20),
        "INSERT INTO users (email, display_name) VALUES ('a@x', 'Sam'), ('b@x', 'Sam');",
    );
    let run = p.run(&["deploy", "--fleet", "--output", "json"]);
    run.expect_code(1);
    let r = result(&run);
    assert!(
        r["stopped"].as_str().unwrap().contains("max_failures"),
        "{r:#}"
    );
    let counts = statuses(&r);
    // One at a time: t000..t020 ran, t010 and t020 failed, nothing after t020 started.
    assert_eq!(counts["rolled_back"], 2);
    assert_eq!(counts["succeeded"], 19);
    assert_eq!(counts["not_started"], TENANTS - 21);
    platform_is(&p, false, 3);
}

#[test]
fn kill_mid_fleet_then_recover_finishes_every_target() {
    let p = fleet("      concurrency: 8\n      canary: 1\n      max_failures: 5\n");
    deployed_then_poisoned(&p, 199);
    // Each tenant run writes six records; the process dies with several tenants mid-run.
    let out = p
        .cmd()
        .args(["deploy", "--fleet"])
        .env("CUTOVER_TEST_CRASH_AFTER_RECORD", "400")
        .output()
        .unwrap();
    assert!(out.status.code().is_none(), "killed: {out:?}");
    let refused = p.run(&["deploy", "--fleet"]);
    refused.expect_code(4);
    let status = p.run(&["status"]);
    assert!(
        status.stdout().contains("UNFINISHED: target `"),
        "{}",
        status.stdout()
    );
    let recovered = p.run(&["recover", "--fleet"]);
    assert!(
        [1, 0].contains(&recovered.code()),
        "{}\n{}",
        recovered.stdout(),
        recovered.stderr()
    );
    assert!(
        recovered.stdout().contains("had unfinished runs"),
        "{}",
        recovered.stdout()
    );
    // No open run anywhere; each tenant at one version or the other, never in between.
    let status = p.run(&["status"]);
    assert!(
        status.stdout().contains("nothing needs attention"),
        "{}",
        status.stdout()
    );
    for name in (0..TENANTS).map(name) {
        let dir = p.file(&format!(".cutover/targets/local/{name}/journal"));
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries {
                let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
                assert!(
                    text.contains("\"run_finished\""),
                    "{name}: open journal:\n{text}"
                );
            }
        }
    }
    assert!(
        versions(&p)
            .values()
            .all(|v| *v == Some(LATEST) || *v == Some(NEW_VERSION))
    );
    platform_is(&p, false, 3);
    // And the fleet goes on from there.
    exec_sql(
        &tenant_db(&p, 199),
        "DELETE FROM users WHERE email = 'b@x';",
    );
    p.run(&["deploy", "--fleet"]).success();
    assert!(versions(&p).values().all(|v| *v == Some(NEW_VERSION)));
}

#[test]
fn shards_split_the_targets_between_runners() {
    let p = fleet("      concurrency: 4\n");
    let one = p.run(&["deploy", "--fleet", "--shard", "1/4", "--output", "json"]);
    one.success();
    let r = result(&one);
    let names: Vec<&str> = r["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["target"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), TENANTS / 4);
    assert_eq!(&names[..3], ["t000", "t004", "t008"]);
    let bad = p.run(&["deploy", "--fleet", "--shard", "5/4"]);
    bad.expect_code(2);
}

#[test]
fn targets_from_a_list_and_a_catalog_query_with_passwords_masked() {
    let p = Project::new();
    std::fs::create_dir(p.file("tenants")).unwrap();
    p.write("catalog.db", "");
    exec_sql(
        &p.file("catalog.db"),
        "CREATE TABLE tenants (name TEXT, url TEXT);
         INSERT INTO tenants VALUES ('acme', 'sqlite://tenants/acme.db'), ('globex', 'sqlite://tenants/globex.db');",
    );
    p.write_config(&replace_once(
        &p.default_config(),
        "    health: {",
        "    targets:\n      list:\n        - { name: initech, url: \"sqlite://tenants/initech.db\" }\n        - { name: hooli, url: \"postgres://app:Hunter2-secret@127.0.0.1:1/hooli\" }\n      query:\n        catalog: \"sqlite://catalog.db\"\n        sql: \"SELECT name, url FROM tenants ORDER BY name\"\n      canary: 0\n      max_failures: 1\n    health: {",
    ));
    let run = p.run(&["deploy", "--fleet", "--output", "json"]);
    run.expect_code(1);
    let all = run.all();
    assert!(!all.contains("Hunter2-secret"), "{all}");
    let r = result(&run);
    let counts = statuses(&r);
    assert_eq!(counts["succeeded"], 3, "{r:#}");
    assert_eq!(status_of(&r, "hooli")["status"], "refused");
    for t in ["acme", "globex", "initech"] {
        assert!(p.file(&format!("tenants/{t}.db")).exists());
    }
}

/// PostgreSQL: 20 tenant databases on a real server, read from a catalog table in the
/// environment's own database; one poisoned tenant is rolled back within the budget and
/// the other 19 move to the new version.
#[test]
fn postgres_tenants_from_a_catalog_table() {
    use support::pg;
    let (p, catalog) = pg::project();
    let server = pg::server();
    let tenants: Vec<String> = (0..20).map(|_| server.database()).collect();
    server.psql(&catalog, "CREATE TABLE tenants (slug TEXT, url TEXT)");
    for (i, db) in tenants.iter().enumerate() {
        server.psql(
            &catalog,
            &format!(
                "INSERT INTO tenants VALUES ('pg{i:02}', '{}')",
                server.url(db)
            ),
        );
    }
    p.write_config(&replace_once(
        &p.read("deploy.yaml"),
        "    health: {",
        &format!(
            "    targets:\n      query:\n        catalog: \"{}\"\n        sql: \"SELECT slug, url FROM tenants ORDER BY slug\"\n      concurrency: 4\n      canary: 2\n      max_failures: 1\n    health: {{",
            server.url(&catalog)
        ),
    ));
    p.write_pipeline(
        "name: deploy
steps:
  - id: maintenance-on
    uses: maintenance
    with: { enabled: true }
  - uses: migrate
  - uses: validate
    with: { queries: validations/ }
  - id: maintenance-off
    uses: maintenance
    with: { enabled: false }
",
    );
    p.run(&["deploy", "--fleet"]).success();
    let version = |db: &str| -> String {
        server
            .psql(db, "SELECT max(version) FROM _sqlx_migrations")
            .trim()
            .to_owned()
    };
    assert!(tenants.iter().all(|db| version(db) == LATEST.to_string()));
    p.add_migration(
        NEW,
        "CREATE UNIQUE INDEX ux_users_display_name ON users (display_name);\n",
        Some("DROP INDEX ux_users_display_name;\n"),
    );
    server.psql(
        &tenants[7],
        "INSERT INTO users (id, email, display_name) VALUES (1001, 'a@x', 'Sam'), (1002, 'b@x', 'Sam')",
    );
    let run = p.run(&["deploy", "--fleet", "--output", "json"]);
    run.expect_code(1);
    let r = result(&run);
    assert_eq!(status_of(&r, "pg07")["status"], "rolled_back", "{r:#}");
    assert_eq!(statuses(&r)["succeeded"], 19, "{r:#}");
    assert_eq!(version(&tenants[7]), LATEST.to_string());
    for (i, db) in tenants.iter().enumerate() {
        if i != 7 {
            assert_eq!(version(db), NEW_VERSION.to_string(), "pg{i:02}");
        }
    }
    platform_is(&p, false, 3);
}

#[test]
fn ctrl_c_mid_fleet_rolls_back_the_running_targets_and_starts_no_more() {
    let p = fleet("      concurrency: 2\n      canary: 0\n");
    p.add_migration(
        NEW,
        "CREATE TABLE notes (id INTEGER PRIMARY KEY);\n",
        Some("DROP TABLE notes;\n"),
    );
    let child = p
        .cmd()
        .args(["deploy", "--fleet"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !p.file(".cutover/targets/local/t010").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the fleet never got to t010"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = versions(&p);
    let done = v.values().filter(|v| **v == Some(NEW_VERSION)).count();
    assert!(done < TENANTS, "the fleet stopped early");
    assert!(
        v.values()
            .all(|v| *v == Some(NEW_VERSION) || *v == Some(LATEST) || v.is_none())
    );
    let status = p.run(&["status"]);
    assert!(
        status.stdout().contains("nothing needs attention"),
        "{}",
        status.stdout()
    );
    platform_is(&p, false, 3);
}

#[test]
fn a_terminal_shows_one_bar_for_the_fleet() {
    let p = fleet("      concurrency: 1\n");
    let mut cmd = p.cmd();
    cmd.args(["deploy", "--fleet"])
        .env_remove("CI")
        .env("TERM", "xterm")
        .stdin(std::process::Stdio::inherit())
        .stdout(std::process::Stdio::inherit())
        .stderr(std::process::Stdio::inherit());
    let mut session = rexpect::session::spawn_command(cmd, Some(120_000)).unwrap();
    session.exp_string("targets [").unwrap();
    session.exp_string("0 failed, ").unwrap();
    let rest = session.exp_eof().unwrap();
    assert!(rest.contains("200 succeeded"), "{rest}");
    // No line per succeeded target on a terminal: the bar counts them.
    assert!(!rest.contains("t150: succeeded"), "{rest}");
}
