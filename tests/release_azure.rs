//! Code releases on Azure Container Apps through the real binary, against the local fake of
//! Resource Manager (tests/support/azure_fake.rs): the new version as a revision beside the
//! live one at 0 %, the traffic moved in stages with the health held in between, and an
//! exact undo of the traffic and of which revisions are active, when the bake fails and
//! after a kill -9 (`recover` in a new process); an app in single-revision mode is refused
//! by the plan.

mod support;

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{Value, json};
use support::azure_fake::{AZURE_VARS, AzureFake, CLIENT_ID, CLIENT_SECRET, SUBSCRIPTION, TENANT};
use support::{Project, Run};

fn cmd(p: &Project, fake: &AzureFake) -> Command {
    let mut c = p.cmd();
    for v in AZURE_VARS {
        c.env_remove(v);
    }
    c.env("AZURE_CLIENT_SECRET", CLIENT_SECRET);
    c.env("CUTOVER_AZURE_REDIRECT", fake.redirect());
    c
}

fn run(p: &Project, fake: &AzureFake, args: &[&str]) -> Run {
    Run(cmd(p, fake).args(args).output().expect("cutover runs"))
}

fn containers() -> Value {
    json!([
        {"name": "web", "image": "mealprep.azurecr.io/api:v41", "env": [
            {"name": "DB_URL", "secretRef": "db"},
            {"name": "FEATURE_X", "value": ""}
        ]},
        {"name": "sidecar", "image": "mealprep.azurecr.io/proxy:3"}
    ])
}

/// A project whose `aca` environment is the Container App `api` (revision `api--r1`
/// running `api:v41`), with the shipped migrations applied, one more pending (the table
/// `release_notes`), and `pipeline` as its deploy pipeline.
fn project(fake: &AzureFake, pipeline: &str) -> Project {
    fake.add_app("api", containers(), 1, 3);
    let p = Project::new();
    p.write_config(&format!(
        r#"version: 1
project: testapp
pipeline: pipelines/deploy.yaml
migrations: migrations
environments:
  aca:
    database: {{ kind: sqlite, url: "sqlite://state/app.db" }}
    backups: {{ kind: local, path: state/backups }}
    azure: {{ subscription: {SUBSCRIPTION}, tenant: {TENANT}, client_id: {CLIENT_ID}, credential: client-secret }}
    platform:
      kind: azure-container-apps
      resource_group: rg
      app: api
    health: {{ url: "{}", timeout: 5s, healthy_for: 0s }}
    rehearse: off
"#,
        p.health.url
    ));
    p.write(
        "pipelines/deploy.yaml",
        "name: deploy\nsteps:\n  - uses: migrate\n",
    );
    run(&p, fake, &["deploy", "-e", "aca"]).success();
    p.add_migration(
        "20250101000000_create_release_notes",
        "CREATE TABLE release_notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);",
        Some("DROP TABLE release_notes;"),
    );
    p.write("pipelines/deploy.yaml", pipeline);
    fake.clear_requests();
    p
}

const RELEASE: &str = "  - id: release\n    uses: release\n  - uses: migrate\n    with: { to: latest, rollback: auto }\n  - id: shift\n    uses: traffic\n    with: { stages: [10, 100], bake: 1s }\n";

fn full_pipeline() -> String {
    format!(
        "name: deploy\nsteps:\n  - id: maintenance-on\n    uses: maintenance\n    with: {{ enabled: true }}\n{RELEASE}  - id: maintenance-off\n    uses: maintenance\n    with: {{ enabled: false }}\n"
    )
}

fn release_pipeline() -> String {
    format!("name: deploy\nsteps:\n{RELEASE}")
}

/// The traffic each PATCH sent, in order.
fn traffic_sent(fake: &AzureFake) -> Vec<Value> {
    fake.requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.starts_with("/subscriptions/"))
        .filter_map(|r| {
            let body: Value = serde_json::from_str(&r.body).ok()?;
            let t = body["properties"]["configuration"]["ingress"]["traffic"].clone();
            (!t.is_null()).then_some(t)
        })
        .collect()
}

/// Resource Manager requests that change something.
fn changes(fake: &AzureFake) -> Vec<String> {
    fake.arm_changes()
}

fn env_names(container: &Value) -> Vec<String> {
    container["env"]
        .as_array()
        .map(|e| {
            e.iter()
                .map(|v| v["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn weights(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(n, w)| ((*n).to_owned(), *w)).collect()
}

#[test]
fn a_release_goes_out_as_a_new_revision_and_takes_the_traffic_in_stages() {
    let fake = AzureFake::start();
    let p = project(&fake, &full_pipeline());
    fake.set_multiple("api", json!([{"latestRevision": true, "weight": 100}]));

    let plan = run(&p, &fake, &["plan", "-e", "aca", "--code-version", "v42"]);
    plan.success();
    assert!(
        plan.stdout().contains("release v42 beside the live code")
            && plan.stdout().contains("api--r1 (v41) 100%"),
        "{}",
        plan.stdout()
    );
    assert!(changes(&fake).is_empty(), "{:#?}", changes(&fake));

    let report = p.file("report.json");
    let out = run(
        &p,
        &fake,
        &[
            "deploy",
            "-e",
            "aca",
            "--code-version",
            "v42",
            "--report",
            report.to_str().unwrap(),
        ],
    );
    out.success();

    // The new revision: the serving revision's containers, the first with the new image.
    let staged = fake
        .revision_template("api", "api--v42")
        .expect("revision api--v42 was made");
    assert_eq!(staged["revisionSuffix"], "v42");
    assert_eq!(
        staged["containers"][0]["image"],
        "mealprep.azurecr.io/api:v42"
    );
    assert_eq!(
        staged["containers"][1]["image"],
        "mealprep.azurecr.io/proxy:3"
    );
    // Released while maintenance was on; the empty FEATURE_X kept.
    assert_eq!(
        staged["containers"][0]["env"][1],
        json!({"name": "FEATURE_X", "value": ""})
    );
    assert!(env_names(&staged["containers"][0]).contains(&"MAINTENANCE_MODE".to_owned()));

    assert_eq!(
        traffic_sent(&fake),
        vec![
            // The release pins the traffic to the revision that had it (maintenance on
            // had made `api--r2`, the latest), so the new revision starts at 0 %.
            json!([{"revisionName": "api--r2", "weight": 100}]),
            json!([{"revisionName": "api--v42", "weight": 10}, {"revisionName": "api--r2", "weight": 90}]),
            json!([{"revisionName": "api--v42", "weight": 100}]),
            // Maintenance off makes a revision of the serving one, which takes its traffic.
            json!([{"revisionName": "api--r4", "weight": 100}]),
        ]
    );
    // At the end v42 serves, with maintenance off.
    assert_eq!(fake.weights("api"), weights(&[("api--r4", 100)]));
    let serving = fake.revision_template("api", "api--r4").unwrap();
    assert_eq!(
        serving["containers"][0]["image"],
        "mealprep.azurecr.io/api:v42"
    );
    assert_eq!(
        env_names(&serving["containers"][0]),
        ["DB_URL", "FEATURE_X"]
    );
    assert!(serving.get("revisionSuffix").is_none(), "{serving}");

    // The journal and the report say where the traffic went.
    let journal = p.journals().pop().unwrap();
    let released: Vec<&Value> = journal
        .iter()
        .filter(|r| r["fact"] == "code_released")
        .collect();
    assert_eq!(released.len(), 1, "{journal:#?}");
    assert_eq!(released[0]["version"], "v42");
    assert_eq!(released[0]["previous"], "v41");
    assert!(
        released[0]["routes"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "api--v42", "version": "v42", "weight": 100})),
        "{}",
        released[0]
    );
    assert!(
        journal
            .iter()
            .any(|r| r["fact"] == "code_staged" && r["name"] == "api--v42"),
        "{journal:#?}"
    );
    let report = std::fs::read_to_string(&report).unwrap();
    assert!(
        report.contains("code v42 gets the traffic (was v41)"),
        "{report}"
    );

    // Released once: the same release again changes nothing but finds it in place.
    fake.clear_requests();
    p.write(
        "pipelines/deploy.yaml",
        "name: deploy\nsteps:\n  - id: release\n    uses: release\n",
    );
    let again = run(&p, &fake, &["deploy", "-e", "aca", "--code-version", "v42"]);
    again.success();
    assert!(
        again.all().contains("already runs v42; nothing changed"),
        "{}",
        again.all()
    );
    assert_eq!(changes(&fake), Vec::<String>::new());
}

#[test]
fn a_failing_bake_puts_the_exact_split_back_and_deactivates_the_new_revision() {
    let fake = AzureFake::start();
    let p = project(&fake, &release_pipeline());
    fake.add_revision("api", "api--canary", "mealprep.azurecr.io/api:v41-canary");
    let split = json!([
        {"revisionName": "api--r1", "weight": 80},
        {"revisionName": "api--canary", "weight": 20, "label": "canary"}
    ]);
    fake.set_multiple("api", split.clone());
    let schema = p.db_snapshot();
    p.health.set_status(503);

    let out = run(&p, &fake, &["deploy", "-e", "aca", "--code-version", "v42"]);
    support::assert_failed_at(&out, "shift");
    assert!(
        out.all().contains("v42 at 10% did not stay healthy"),
        "{}",
        out.all()
    );
    let sent = traffic_sent(&fake);
    assert_eq!(
        sent[1],
        // 10 % to the new revision, the rest to the one that had the most; the label
        // stays where it was.
        json!([
            {"revisionName": "api--canary", "weight": 0, "label": "canary"},
            {"revisionName": "api--v42", "weight": 10},
            {"revisionName": "api--r1", "weight": 90}
        ]),
        "{sent:#?}"
    );
    // Exactly the split of before, label and all; the new revision inactive again.
    assert_eq!(fake.traffic("api"), split);
    assert_eq!(
        fake.weights("api"),
        weights(&[("api--r1", 80), ("api--canary", 20)])
    );
    assert_eq!(fake.active_revisions("api"), ["api--r1", "api--canary"]);
    assert_eq!(fake.activations(), ["deactivate api--v42"]);
    assert_eq!(p.db_snapshot(), schema);

    // A rollback to the earlier release later: the inactive revision is activated and
    // takes the traffic back.
    fake.clear_requests();
    p.health.set_status(200);
    p.write(
        "pipelines/deploy.yaml",
        "name: deploy\nsteps:\n  - id: shift\n    uses: traffic\n    with: { version: v42 }\n",
    );
    run(&p, &fake, &["deploy", "-e", "aca"]).success();
    assert_eq!(
        fake.activations(),
        ["deactivate api--v42", "activate api--v42"]
    );
    assert_eq!(fake.weights("api"), weights(&[("api--v42", 100)]));
}

#[test]
fn a_failing_bake_inside_maintenance_leaves_the_old_code_serving_without_maintenance() {
    let fake = AzureFake::start();
    let p = project(&fake, &full_pipeline());
    fake.set_multiple("api", json!([{"latestRevision": true, "weight": 100}]));
    p.health.set_status(503);
    let out = run(&p, &fake, &["deploy", "-e", "aca", "--code-version", "v42"]);
    support::assert_failed_at(&out, "shift");
    // Maintenance on had made `api--r2` (v41, maintenance on), which served; turning it off
    // again is a revision of that one (not of the released v42, the app's latest), and
    // it takes the traffic.
    assert_eq!(fake.weights("api"), weights(&[("api--r4", 100)]));
    let serving = fake.revision_template("api", "api--r4").unwrap();
    assert_eq!(
        serving["containers"][0]["image"],
        "mealprep.azurecr.io/api:v41"
    );
    assert_eq!(
        env_names(&serving["containers"][0]),
        ["DB_URL", "FEATURE_X"]
    );
    assert!(
        !fake
            .active_revisions("api")
            .contains(&"api--v42".to_owned())
    );
}

/// Deploys until the journal has `records` records on disk, then aborts (as kill -9
/// would); returns the journal.
fn crash_deploy(p: &Project, fake: &AzureFake, records: usize) -> Vec<Value> {
    use std::os::unix::process::ExitStatusExt;
    let out = cmd(p, fake)
        .args(["deploy", "-e", "aca", "--code-version", "v42"])
        .env("CUTOVER_TEST_CRASH_AFTER_RECORD", records.to_string())
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(6),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let journal = p.journals().pop().expect("a journal");
    assert_eq!(journal.len(), records, "{journal:#?}");
    journal
}

/// The journal records after which the crash tests die: the traffic step's start (the
/// traffic not moved yet), and its fact that the traffic moved.
const TRAFFIC_STARTED: usize = 9;
const TRAFFIC_MOVED: usize = 10;

#[test]
fn recover_after_kill_9_in_the_traffic_step_puts_the_traffic_back() {
    for records in [TRAFFIC_MOVED, TRAFFIC_STARTED] {
        recover_after_kill_9_at(records);
    }
}

fn recover_after_kill_9_at(records: usize) {
    let fake = AzureFake::start();
    let p = project(&fake, &release_pipeline());
    fake.set_multiple("api", json!([{"latestRevision": true, "weight": 100}]));
    let schema = p.db_snapshot();
    let journal = crash_deploy(&p, &fake, records);
    let last = journal.last().unwrap();
    assert_eq!(last["id"], "shift", "{journal:#?}");
    if records == TRAFFIC_MOVED {
        assert_eq!(last["fact"], "code_released", "{journal:#?}");
        assert_eq!(fake.weights("api"), weights(&[("api--v42", 100)]));
    } else {
        assert_eq!(fake.weights("api"), weights(&[("api--r1", 100)]));
    }
    // The earlier code state is journaled with the steps' undo.
    let release = journal
        .iter()
        .find(|r| r["id"] == "release" && r["compensation"].is_object())
        .unwrap();
    assert_eq!(
        release["compensation"]["prior"],
        json!({"app": "api", "traffic": [{"latestRevision": true, "weight": 100}], "latestRevisionName": "api--r1", "active": ["api--r1"]})
    );
    assert_eq!(fake.active_revisions("api"), ["api--r1", "api--v42"]);

    fake.clear_requests();
    let out = Run(cmd(&p, &fake)
        .args(["recover", "-e", "aca"])
        .output()
        .unwrap());
    out.expect_code(1);
    assert!(out.all().contains("rolled back"), "{}", out.all());
    // `latestRevision: true` would now mean the new revision: it names the revision it
    // meant before the release.
    let expected: Vec<Value> = if records == TRAFFIC_MOVED {
        vec![json!([{"revisionName": "api--r1", "weight": 100}])]
    } else {
        Vec::new()
    };
    assert_eq!(traffic_sent(&fake), expected);
    assert_eq!(fake.weights("api"), weights(&[("api--r1", 100)]));
    assert_eq!(fake.active_revisions("api"), ["api--r1"]);
    assert_eq!(fake.activations(), ["deactivate api--v42"]);
    assert_eq!(p.db_snapshot(), schema);

    // Recovered once: a second recover changes nothing.
    fake.clear_requests();
    Run(cmd(&p, &fake)
        .args(["recover", "-e", "aca"])
        .output()
        .unwrap())
    .success();
    assert_eq!(changes(&fake), Vec::<String>::new());
}

#[test]
fn an_app_in_single_revision_mode_is_refused_by_the_plan() {
    let fake = AzureFake::start();
    let p = project(&fake, &full_pipeline());
    for command in ["plan", "deploy"] {
        let out = run(&p, &fake, &[command, "-e", "aca", "--code-version", "v42"]);
        out.expect_code(2);
        assert!(
            out.stderr()
                .contains("Container App `api` runs in single-revision mode")
                && out
                    .stderr()
                    .contains("az containerapp revision set-mode -n api -g rg --mode multiple"),
            "{}",
            out.stderr()
        );
    }
    assert_eq!(changes(&fake), Vec::<String>::new());
}
