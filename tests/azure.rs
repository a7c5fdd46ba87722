//! Azure sign-in, Key Vault secrets and the Container Apps platform through the real
//! binary, against a local fake of Entra ID, Key Vault and Resource Manager
//! (tests/support/azure_fake.rs) reached through `CUTOVER_AZURE_REDIRECT`: every
//! credential kind gets a token, a failing `auto` chain explains each step, Key Vault
//! values arrive masked, and a deploy sends exactly the documented requests and puts the
//! apps back exactly as they were when a step fails, or after a kill -9 through `recover` in
//! a new process (the exact earlier state is journaled).

mod support;

use std::process::Command;

use serde_json::{Map, Value, json};
use support::azure_fake::{
    AZURE_VARS, AzureFake, CLIENT_ID, CLIENT_SECRET, FEDERATED_TOKEN, GITHUB_REQUEST_TOKEN,
    IDENTITY_HEADER, SUBSCRIPTION, SYSTEM_ACCESS_TOKEN, TENANT,
};
use support::{Project, Run};

const API: &str = "2025-01-01";

fn cmd(p: &Project, fake: &AzureFake) -> Command {
    let mut c = p.cmd();
    for v in AZURE_VARS {
        c.env_remove(v);
    }
    // An `az` that is never signed in, unless a test puts a working one first.
    let bin = p.file("no-az");
    write_az(
        &bin,
        "echo 'ERROR: Please run az login to setup account.' >&2; exit 1",
    );
    c.env(
        "PATH",
        format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
    );
    c.env("CUTOVER_AZURE_REDIRECT", fake.redirect());
    c
}

fn write_az(dir: &std::path::Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("az");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn run(mut c: Command, args: &[&str]) -> Run {
    Run(c.args(args).output().expect("cutover runs"))
}

/// A project whose `azure` environment has this `azure:` block and a command platform
/// whose `maintenance_on` writes `$API_TOKEN` (from `token_ref`) to a file.
fn kv_project(azure: &str, token_ref: &str) -> Project {
    let p = Project::new();
    p.write_config(&format!(
        r#"version: 1
project: testapp
pipeline: pipelines/deploy.yaml
migrations: migrations
environments:
  azure:
    database: {{ kind: sqlite, url: "sqlite://state/app.db" }}
    backups: {{ kind: local, path: state/backups }}
    azure:
{azure}
    platform:
      kind: command
      status: "cat platform/*"
      maintenance_on: "echo maintenance=true > platform/maintenance; printf %s \"$API_TOKEN\" > token.txt; echo \"token is $API_TOKEN\""
      maintenance_off: "echo maintenance=false > platform/maintenance"
      scale: "echo {{target}}={{replicas}} > platform/{{target}}"
      restart: "true"
      env:
        API_TOKEN: "{token_ref}"
        SAME_TOKEN: "{token_ref}"
    health: {{ url: "{}", timeout: 5s, healthy_for: 0s }}
"#,
        p.health.url
    ));
    p
}

fn token_requests(fake: &AzureFake) -> Vec<String> {
    fake.requests()
        .iter()
        .filter(|r| {
            r.path.contains("/oauth2/")
                || r.path.starts_with("/msi/")
                || r.path.starts_with("/oidc")
                || r.path.starts_with("/gh/")
        })
        .map(|r| format!("{} {}", r.method, r.path.split('?').next().unwrap()))
        .collect()
}

/// A credential, its environment variables, and the first sign-in request it sends.
type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a str);

#[test]
fn each_credential_kind_gets_a_token_from_the_fake() {
    let fake = AzureFake::start();
    fake.add_secret("api-token", "kv-value-for-api-4d1f");
    let ids = format!("      tenant: {TENANT}\n      client_id: {CLIENT_ID}\n");
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), FEDERATED_TOKEN).unwrap();
    let cases: Vec<Case> = vec![
        (
            "client-secret",
            vec![("AZURE_CLIENT_SECRET", CLIENT_SECRET.into())],
            "POST /11111111-2222-3333-4444-555555555555/oauth2/v2.0/token",
        ),
        (
            "workload-identity",
            vec![(
                "AZURE_FEDERATED_TOKEN_FILE",
                token_file.path().display().to_string(),
            )],
            "POST /11111111-2222-3333-4444-555555555555/oauth2/v2.0/token",
        ),
        (
            "workload-identity",
            vec![
                (
                    "ACTIONS_ID_TOKEN_REQUEST_URL",
                    "https://pipelines.actions.githubusercontent.com/gh/idtoken?api-version=2.0"
                        .into(),
                ),
                (
                    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
                    GITHUB_REQUEST_TOKEN.into(),
                ),
            ],
            "GET /gh/idtoken",
        ),
        (
            "managed-identity",
            vec![
                ("IDENTITY_ENDPOINT", format!("{}/msi/token", fake.url)),
                ("IDENTITY_HEADER", IDENTITY_HEADER.into()),
            ],
            "GET /msi/token",
        ),
        (
            "azure-pipelines",
            vec![
                (
                    "SYSTEM_OIDCREQUESTURI",
                    "https://login.microsoftonline.com/oidc".into(),
                ),
                ("SYSTEM_ACCESSTOKEN", SYSTEM_ACCESS_TOKEN.into()),
                ("AZURESUBSCRIPTION_SERVICE_CONNECTION_ID", "sc-1".into()),
            ],
            "POST /oidc",
        ),
        ("azure-cli", vec![], ""),
    ];
    for (kind, vars, first_request) in cases {
        fake.clear_requests();
        let p = kv_project(
            &format!("{ids}      credential: {kind}"),
            "${secret:keyvault://kv-prod/api-token}",
        );
        let mut c = cmd(&p, &fake);
        if kind == "azure-cli" {
            let bin = p.file("az-bin");
            write_az(
                &bin,
                "case \"$*\" in *get-access-token*) echo '{\"accessToken\":\"tok-cli-1\",\"expires_on\":'$(( $(date +%s) + 3600 ))',\"tokenType\":\"Bearer\"}';; *) exit 2;; esac",
            );
            c.env(
                "PATH",
                format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
            );
        }
        for (k, v) in &vars {
            c.env(k, v);
        }
        let out = run(c, &["check", "-e", "azure"]);
        out.success();
        assert!(
            out.stdout().contains(&format!("Azure credential: {kind}")),
            "{kind}: {}",
            out.all()
        );
        assert!(
            !out.all().contains("kv-value-for-api-4d1f"),
            "{kind}: the secret leaked"
        );
        assert!(!out.all().contains("tok-"), "{kind}: a token leaked");
        let tokens = token_requests(&fake);
        if first_request.is_empty() {
            assert!(tokens.is_empty(), "{kind}: {tokens:?}");
        } else {
            assert_eq!(
                tokens.first().map(String::as_str),
                Some(first_request),
                "{kind}: {tokens:?}"
            );
        }
        // Key Vault was read with a bearer token after the challenge.
        let kv: Vec<_> = fake
            .requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/secrets/"))
            .collect();
        assert_eq!(kv.first().map(|r| r.status), Some(401), "{kind}");
        assert!(
            kv.iter().any(|r| r.status == 200
                && r.header("authorization")
                    .is_some_and(|a| a.starts_with("Bearer tok-"))),
            "{kind}"
        );
    }
}

#[test]
fn a_client_secret_request_carries_the_documented_form() {
    let fake = AzureFake::start();
    fake.add_secret("api-token", "kv-value-for-api-4d1f");
    let p = kv_project(
        &format!(
            "      tenant: {TENANT}\n      client_id: {CLIENT_ID}\n      credential: client-secret\n      client_secret: \"${{secret:env:SP_SECRET}}\""
        ),
        "${secret:keyvault://kv-prod/api-token}",
    );
    let mut c = cmd(&p, &fake);
    c.env("SP_SECRET", CLIENT_SECRET);
    run(c, &["check", "-e", "azure"]).success();
    let token = fake
        .requests()
        .into_iter()
        .find(|r| r.path.ends_with("/oauth2/v2.0/token"))
        .unwrap();
    assert_eq!(
        token.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    for part in [
        "grant_type=client_credentials",
        &format!("client_id={CLIENT_ID}"),
        "client_secret=fake-client-secret-Zq8",
    ] {
        assert!(token.body.contains(part), "{}", token.body);
    }
    // A wrong secret: the error says what Entra said, never the secret.
    let mut c = cmd(&p, &fake);
    c.env("SP_SECRET", "wrong-secret-value-99");
    let out = run(c, &["check", "-e", "azure"]);
    out.expect_code(2);
    assert!(out.stderr().contains("AADSTS7000215"), "{}", out.stderr());
    assert!(
        out.stderr().contains("kv-prod") && out.stderr().contains("api-token"),
        "{}",
        out.stderr()
    );
    assert!(
        !out.all().contains("wrong-secret-value-99"),
        "{}",
        out.all()
    );
}

#[test]
fn a_failing_auto_chain_explains_each_step() {
    let fake = AzureFake::start();
    fake.add_secret("api-token", "kv-value-for-api-4d1f");
    let p = kv_project(
        &format!("      tenant: {TENANT}"),
        "${secret:keyvault://kv-prod/api-token}",
    );
    let out = run(cmd(&p, &fake), &["check", "-e", "azure"]);
    out.expect_code(2);
    let err = out.stderr();
    for line in [
        "no Azure credential returned a token (credential: auto)",
        "workload-identity: skipped, AZURE_FEDERATED_TOKEN_FILE is not set",
        "client-secret: skipped, no client secret",
        "managed-identity: skipped, IDENTITY_ENDPOINT is not set and the instance metadata service",
        "azure-cli: ",
        "az login",
        "Key Vault `kv-prod`, secret `api-token`",
    ] {
        assert!(err.contains(line), "missing `{line}` in:\n{err}");
    }
    assert!(err.contains("nothing was touched"), "{err}");
    // With a client secret in the environment, `auto` picks it.
    let mut c = cmd(&p, &fake);
    c.env("AZURE_CLIENT_SECRET", CLIENT_SECRET)
        .env("AZURE_CLIENT_ID", CLIENT_ID);
    let out = run(c, &["check", "-e", "azure"]);
    out.success();
    assert!(
        out.stdout()
            .contains("Azure credential: client-secret (credential: auto)"),
        "{}",
        out.stdout()
    );
}

#[test]
fn key_vault_values_arrive_masked_read_once_and_errors_name_vault_and_secret() {
    let fake = AzureFake::start();
    fake.add_secret("api-token", "latest-value-8f2e1");
    fake.add_secret("api-token/v1abc", "older-value-77c3a");
    let setup = |token_ref: &str| {
        let p = kv_project(
            &format!(
                "      tenant: {TENANT}\n      client_id: {CLIENT_ID}\n      credential: client-secret"
            ),
            token_ref,
        );
        let mut c = cmd(&p, &fake);
        c.env("AZURE_CLIENT_SECRET", CLIENT_SECRET);
        (p, c)
    };
    fake.clear_requests();
    let (p, c) = setup("${secret:keyvault://kv-prod/api-token}");
    let out = run(c, &["deploy", "-e", "azure"]);
    out.success();
    assert_eq!(p.read("token.txt"), "latest-value-8f2e1");
    assert!(!out.all().contains("latest-value-8f2e1"), "{}", out.all());
    // Two references to the same secret: read once.
    let reads = fake
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/secrets/api-token/") && r.status == 200)
        .count();
    assert_eq!(reads, 1);
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.path.starts_with("/secrets/api-token/?api-version="))
    );

    // In GitHub Actions, the value is announced for masking before anything else.
    let (_p, mut c) = setup("${secret:keyvault://kv-prod/api-token}");
    c.env("GITHUB_ACTIONS", "true");
    let out = run(c, &["plan", "-e", "azure"]);
    out.success();
    assert!(
        out.stdout().starts_with("::add-mask::latest-value-8f2e1\n"),
        "{}",
        out.stdout()
    );
    assert_eq!(
        out.all().matches("latest-value-8f2e1").count(),
        1,
        "{}",
        out.all()
    );

    let (p, c) = setup("${secret:keyvault://kv-prod/api-token/v1abc}");
    run(c, &["deploy", "-e", "azure"]).success();
    assert_eq!(p.read("token.txt"), "older-value-77c3a");

    let (p, c) = setup("${secret:keyvault://kv-prod/no-such-secret}");
    let out = run(c, &["check", "-e", "azure"]);
    out.expect_code(2);
    assert!(out.stderr().contains("deploy.yaml:"), "{}", out.stderr());
    assert!(
        out.stderr()
            .contains("Key Vault `kv-prod`, secret `no-such-secret`: not found (SecretNotFound)"),
        "{}",
        out.stderr()
    );
    assert!(!p.file("token.txt").exists());

    fake.forbid_secret("locked");
    let (_p, c) = setup("${secret:keyvault://kv-prod/locked}");
    let out = run(c, &["check", "-e", "azure"]);
    out.expect_code(2);
    assert!(
        out.stderr()
            .contains("Key Vault `kv-prod`, secret `locked`: access denied (Forbidden)"),
        "{}",
        out.stderr()
    );
}

/// A vault that takes the connection and never answers is an error within the
/// environment's `azure.timeout`, naming the vault and the setting, with nothing touched.
#[test]
fn a_silent_vault_is_an_error_within_the_timeout() {
    let fake = AzureFake::start();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    // Connections are accepted (by the backlog) and never answered.
    let p = kv_project(
        &format!(
            "      tenant: {TENANT}\n      client_id: {CLIENT_ID}\n      credential: client-secret\n      timeout: 1s"
        ),
        "${secret:keyvault://kv-silent/api-token}",
    );
    let mut c = cmd(&p, &fake);
    c.env("AZURE_CLIENT_SECRET", CLIENT_SECRET).env(
        "CUTOVER_AZURE_REDIRECT",
        format!("kv-silent.vault.azure.net={silent_url},{}", fake.redirect()),
    );
    let out = run(c, &["deploy", "-e", "azure"]);
    out.expect_code(2);
    assert!(
        out.stderr().contains(
            "Key Vault `kv-silent`, secret `api-token`: no answer within 1s (set `azure: { timeout: ... }` to wait longer)"
        ),
        "{}",
        out.stderr()
    );
    assert_eq!(p.read("platform/maintenance"), "maintenance=false\n");
    drop(silent);
}

// ---- Container Apps ----

fn web_containers() -> Value {
    json!([
        {"name": "web", "image": "mealprep.azurecr.io/api:41", "env": [
            {"name": "DB_URL", "secretRef": "db"},
            {"name": "FEATURE_X", "value": ""},
            {"name": "LOG_LEVEL", "value": "info"}
        ], "resources": {"cpu": 0.5, "memory": "1Gi"}},
        {"name": "sidecar", "image": "mealprep.azurecr.io/proxy:3"}
    ])
}

fn apps_project(fake: &AzureFake, pipeline: &str) -> Project {
    fake.add_app("api", web_containers(), 2, 5);
    fake.add_app(
        "jobs",
        json!([{"name": "worker", "image": "mealprep.azurecr.io/jobs:41"}]),
        1,
        3,
    );
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
      jobs: jobs
    health: {{ url: "{}", timeout: 5s, healthy_for: 0s }}
"#,
        p.health.url
    ));
    if !pipeline.is_empty() {
        p.write("pipelines/deploy.yaml", pipeline);
    }
    p
}

fn app_cmd(p: &Project, fake: &AzureFake) -> Command {
    let mut c = cmd(p, fake);
    c.env("AZURE_CLIENT_SECRET", CLIENT_SECRET);
    c
}

fn app_path(app: &str) -> String {
    format!(
        "/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.App/containerApps/{app}"
    )
}

/// `check` against a Resource Manager that takes the connection and never answers ends
/// within `--timeout`, saying what could not be reached; nothing is changed.
#[test]
fn check_against_a_silent_resource_manager_ends_within_its_timeout() {
    let fake = AzureFake::start();
    let p = apps_project(&fake, "");
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let mut c = app_cmd(&p, &fake);
    c.env(
        "CUTOVER_AZURE_REDIRECT",
        format!("management.azure.com={silent_url},{}", fake.redirect()),
    );
    let out = run(c, &["check", "-e", "aca", "--timeout", "2s"]);
    out.expect_code(2);
    assert!(
        out.stderr().contains(
            "no answer within 2s: a database, platform, backup store or vault of `aca` cannot be reached"
        ),
        "{}",
        out.stderr()
    );
    assert!(changes(&fake).is_empty());
    drop(silent);
}

/// `(method, path, body)` of every change sent to Resource Manager.
fn changes(fake: &AzureFake) -> Vec<(String, String, Value)> {
    fake.requests()
        .iter()
        .filter(|r| r.method != "GET" && r.path.starts_with("/subscriptions/"))
        .map(|r| {
            (
                r.method.clone(),
                r.path.clone(),
                serde_json::from_str(&r.body).unwrap_or(Value::Null),
            )
        })
        .collect()
}

fn patch(app: &str, body: Value) -> (String, String, Value) {
    (
        "PATCH".into(),
        format!("{}?api-version={API}", app_path(app)),
        body,
    )
}

fn with_maintenance(value: Option<&str>) -> Value {
    let mut cs = web_containers();
    for c in cs.as_array_mut().unwrap() {
        if let Some(v) = value {
            if c.get("env").is_none() {
                c["env"] = json!([]);
            }
            c["env"]
                .as_array_mut()
                .unwrap()
                .push(json!({"name": "MAINTENANCE_MODE", "value": v}));
        }
    }
    json!({"properties": {"template": {"containers": cs}}})
}

fn scale(min: u32, max: u32) -> Value {
    json!({"properties": {"template": {"scale": {"minReplicas": min, "maxReplicas": max}}}})
}

/// `POST .../stop` or `.../start` of an app.
fn post(app: &str, action: &str) -> (String, String, Value) {
    (
        "POST".into(),
        format!("{}/{action}?api-version={API}", app_path(app)),
        Value::Null,
    )
}

#[test]
fn a_deploy_sends_exactly_the_documented_requests_and_leaves_the_apps_as_they_were() {
    let fake = AzureFake::start();
    let p = apps_project(&fake, "");
    let before = (
        fake.app("api")["properties"]["template"].clone(),
        fake.app("jobs")["properties"]["template"].clone(),
    );
    let plan = run(app_cmd(&p, &fake), &["plan", "-e", "aca"]);
    plan.success();
    assert!(
        plan.stdout().contains("scale jobs from 3 to 0"),
        "{}",
        plan.stdout()
    );
    fake.clear_requests();
    let out = run(app_cmd(&p, &fake), &["deploy", "-e", "aca"]);
    out.success();
    assert_eq!(
        changes(&fake),
        vec![
            patch("api", with_maintenance(Some("true"))),
            // Azure refuses maxReplicas 0: minimum 0, the maximum kept, then a stop.
            patch("jobs", scale(0, 3)),
            post("jobs", "stop"),
            // Maintenance off where the variable was absent before: removed again.
            patch("api", with_maintenance(None)),
            // Started, then back to exactly the earlier minimum and maximum.
            post("jobs", "start"),
            patch("jobs", scale(1, 3)),
        ]
    );
    // Every ARM request carried the api-version and a bearer token; the operations were
    // followed through Azure-AsyncOperation and the new revisions read until provisioned.
    for r in fake
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/subscriptions/"))
    {
        assert!(r.path.contains("api-version="), "{}", r.path);
        assert!(
            r.header("authorization")
                .is_some_and(|a| a.starts_with("Bearer tok-"))
        );
    }
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.path.contains("/containerappOperationStatuses/"))
    );
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.path.contains("/revisions/api--r2"))
    );
    let after = (
        fake.app("api")["properties"]["template"].clone(),
        fake.app("jobs")["properties"]["template"].clone(),
    );
    assert_eq!(
        after, before,
        "the empty FEATURE_X value and every other setting survive"
    );
    assert_eq!(fake.running_status("jobs"), "Running");
}

#[test]
fn a_failing_step_puts_both_apps_back_exactly() {
    let fake = AzureFake::start();
    let pipeline = "name: deploy\nsteps:\n  - uses: preflight\n  - id: maintenance-on\n    uses: maintenance\n    with: { enabled: true }\n  - id: jobs-down\n    uses: scale\n    with: { target: jobs, replicas: 0 }\n  - uses: restart\n  - id: boom\n    uses: command\n    with: { run: \"exit 3\" }\n";
    let p = apps_project(&fake, pipeline);
    let before = (
        fake.app("api")["properties"]["template"].clone(),
        fake.app("jobs")["properties"]["template"].clone(),
    );
    // Throttled once: the 429's Retry-After is honoured and the request sent again.
    fake.throttle("PATCH", &app_path("jobs"), 1, 1);
    fake.clear_requests();
    let out = run(app_cmd(&p, &fake), &["deploy", "-e", "aca"]);
    assert_ne!(out.code(), 0, "{}", out.all());
    assert!(
        out.all().contains("rolled back") || out.all().contains("rollback"),
        "{}",
        out.all()
    );
    assert_eq!(
        changes(&fake),
        vec![
            patch("api", with_maintenance(Some("true"))),
            patch("jobs", scale(0, 3)),
            patch("jobs", scale(0, 3)),
            post("jobs", "stop"),
            (
                "POST".into(),
                format!(
                    "{}/revisions/api--r2/restart?api-version={API}",
                    app_path("api")
                ),
                Value::Null
            ),
            post("jobs", "start"),
            patch("jobs", scale(1, 3)),
            patch("api", with_maintenance(None)),
        ]
    );
    let throttled: Vec<u16> = fake
        .requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.starts_with(&app_path("jobs")))
        .map(|r| r.status)
        .collect();
    assert_eq!(throttled, vec![429, 202, 202]);
    assert_eq!(fake.restarts(), vec!["api/api--r2"]);
    let after = (
        fake.app("api")["properties"]["template"].clone(),
        fake.app("jobs")["properties"]["template"].clone(),
    );
    assert_eq!(after, before);
    assert_eq!(fake.running_status("jobs"), "Running");
}

#[test]
fn a_revision_that_fails_to_start_fails_the_step_and_is_rolled_back() {
    let fake = AzureFake::start();
    let pipeline = "name: deploy\nsteps:\n  - id: maintenance-on\n    uses: maintenance\n    with: { enabled: true }\n";
    let p = apps_project(&fake, pipeline);
    let before = fake.app("api")["properties"]["template"].clone();
    fake.fail_revisions(1);
    let out = run(app_cmd(&p, &fake), &["deploy", "-e", "aca"]);
    assert_ne!(out.code(), 0, "{}", out.all());
    assert!(
        out.stderr().contains("revision `api--r2` of Container App `api` did not start (Failed, Failed): Container 'web' failed to start: exit code 1"),
        "{}",
        out.stderr()
    );
    // The failed step is undone: the variable is removed again, in a new revision.
    assert_eq!(
        changes(&fake).last().unwrap(),
        &patch("api", with_maintenance(None))
    );
    assert_eq!(fake.app("api")["properties"]["template"], before);
    assert_eq!(
        fake.app("api")["properties"]["latestReadyRevisionName"],
        "api--r3"
    );
}

#[test]
fn location_only_operations_and_arm_errors() {
    let fake = AzureFake::start();
    fake.location_only();
    let p = apps_project(
        &fake,
        "name: deploy\nsteps:\n  - id: jobs-down\n    uses: scale\n    with: { target: jobs, replicas: 0 }\n",
    );
    run(app_cmd(&p, &fake), &["deploy", "-e", "aca"]).success();
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.path.contains("/containerappOperationResults/") && r.status == 202)
    );
    assert_eq!(
        fake.app("jobs")["properties"]["template"]["scale"],
        json!({"minReplicas": 0, "maxReplicas": 3})
    );
    assert_eq!(fake.running_status("jobs"), "Stopped");
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.path.starts_with(&format!("{}/stop", app_path("jobs"))) && r.status == 202)
    );
    // A missing app: the ARM error code and message, and where to look.
    let text = std::fs::read_to_string(p.file("deploy.yaml"))
        .unwrap()
        .replace("app: api", "app: nope");
    p.write_config(&text);
    let out = run(app_cmd(&p, &fake), &["check", "-e", "aca"]);
    assert_ne!(out.code(), 0);
    assert!(
        out.stderr().contains("404 Not Found: ResourceNotFound"),
        "{}",
        out.stderr()
    );
    assert!(
        out.stderr().contains("Container App `nope`"),
        "{}",
        out.stderr()
    );
}

/// Deploys `pipeline` until the journal has `records` records on disk, then aborts the
/// process (as kill -9 would), and returns the journal it left.
fn crash_deploy(p: &Project, fake: &AzureFake, env: &str, records: usize) -> Vec<Value> {
    use std::os::unix::process::ExitStatusExt;
    let out = app_cmd(p, fake)
        .args(["deploy", "-e", env])
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

/// The pipeline the crash tests die in: maintenance on, a target down, then a step that
/// never gets to run.
const CRASH_PIPELINE: &str = "name: deploy\nsteps:\n  - id: maintenance-on\n    uses: maintenance\n    with: { enabled: true }\n  - id: down\n    uses: scale\n    with: { target: TARGET, replicas: 0 }\n  - id: later\n    uses: command\n    with: { run: \"true\" }\n";

#[test]
fn recover_in_a_new_process_puts_container_apps_back_exactly_after_kill_9() {
    let fake = AzureFake::start();
    let p = apps_project(&fake, &CRASH_PIPELINE.replace("TARGET", "jobs"));
    // One container has the variable at a value of its own, the other has none.
    let mut containers = web_containers();
    containers[0]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "MAINTENANCE_MODE", "value": "no"}));
    fake.add_app("api", containers, 2, 5);
    let before = (
        fake.app("api")["properties"]["template"].clone(),
        fake.app("jobs")["properties"]["template"].clone(),
    );
    // Died right after the third step's start was journaled: both changes are made.
    let journal = crash_deploy(&p, &fake, "aca", 7);
    assert_eq!(journal[6]["id"], "later", "{journal:#?}");
    assert_eq!(
        fake.app("jobs")["properties"]["template"]["scale"],
        json!({"minReplicas": 0, "maxReplicas": 3})
    );
    assert_eq!(fake.running_status("jobs"), "Stopped");
    assert_ne!(fake.app("api")["properties"]["template"], before.0);
    // The exact earlier state is in the journal, with each step's compensation.
    assert_eq!(
        journal[2]["compensation"],
        json!({"action": "maintenance", "enabled": false, "prior": {"variable": "MAINTENANCE_MODE", "containers": {"web": "no", "sidecar": null}}})
    );
    assert_eq!(
        journal[4]["compensation"],
        json!({"action": "scale", "target": "jobs", "replicas": 3, "prior": {"minReplicas": 1, "maxReplicas": 3, "running": true}})
    );

    fake.clear_requests();
    let out = run(app_cmd(&p, &fake), &["recover", "-e", "aca"]);
    out.expect_code(1);
    assert!(out.all().contains("rolled back"), "{}", out.all());
    let mut api_back = with_maintenance(None);
    api_back["properties"]["template"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "MAINTENANCE_MODE", "value": "no"}));
    assert_eq!(
        changes(&fake),
        vec![
            // Started, and not min = max = 3: exactly the earlier minimum and maximum.
            post("jobs", "start"),
            patch("jobs", scale(1, 3)),
            // Not `false` everywhere: `no` where it was, absent where it was absent.
            patch("api", api_back),
        ]
    );
    let after = (
        fake.app("api")["properties"]["template"].clone(),
        fake.app("jobs")["properties"]["template"].clone(),
    );
    assert_eq!(after, before);
    assert_eq!(fake.running_status("jobs"), "Running");
    // Recovered once: a second recover changes nothing.
    fake.clear_requests();
    run(app_cmd(&p, &fake), &["recover", "-e", "aca"]).success();
    assert_eq!(changes(&fake), vec![]);
}

/// Rewrites each compensation of the run `journal` belongs to with `edit`, as an older
/// version of cutover would have written it.
fn rewrite_compensations(p: &Project, journal: &[Value], edit: impl Fn(&mut Map<String, Value>)) {
    let path = std::fs::read_dir(p.file(".cutover/journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .contains(journal[0]["run_id"].as_str().unwrap())
        })
        .expect("the journal file");
    let old: Vec<String> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| {
            let mut r: Value = serde_json::from_str(l).unwrap();
            if let Some(c) = r.get_mut("compensation").and_then(Value::as_object_mut) {
                edit(c);
            }
            r.to_string()
        })
        .collect();
    std::fs::write(&path, old.join("\n") + "\n").unwrap();
}

#[test]
fn a_journal_with_the_earlier_scale_but_not_whether_it_ran_still_recovers_exactly() {
    let fake = AzureFake::start();
    let p = apps_project(&fake, &CRASH_PIPELINE.replace("TARGET", "jobs"));
    let before = fake.app("jobs")["properties"]["template"].clone();
    let journal = crash_deploy(&p, &fake, "aca", 7);
    // A prior as written before it said whether the app was running.
    rewrite_compensations(&p, &journal, |c| {
        if let Some(prior) = c.get_mut("prior").and_then(Value::as_object_mut) {
            prior.remove("running");
        }
    });
    fake.clear_requests();
    run(app_cmd(&p, &fake), &["recover", "-e", "aca"]).expect_code(1);
    let jobs: Vec<_> = changes(&fake)
        .into_iter()
        .filter(|c| c.1.starts_with(&app_path("jobs")))
        .collect();
    assert_eq!(
        jobs,
        vec![post("jobs", "start"), patch("jobs", scale(1, 3))]
    );
    assert_eq!(fake.app("jobs")["properties"]["template"], before);
    assert_eq!(fake.running_status("jobs"), "Running");
}

#[test]
fn a_journal_without_the_exact_earlier_state_still_recovers() {
    let fake = AzureFake::start();
    let p = apps_project(&fake, &CRASH_PIPELINE.replace("TARGET", "jobs"));
    let journal = crash_deploy(&p, &fake, "aca", 7);
    // A journal as written before compensations carried the earlier state.
    rewrite_compensations(&p, &journal, |c| {
        c.remove("prior");
    });
    fake.clear_requests();
    run(app_cmd(&p, &fake), &["recover", "-e", "aca"]).expect_code(1);
    // Only the plain count and flag to go on.
    assert_eq!(
        changes(&fake),
        vec![
            post("jobs", "start"),
            patch("jobs", scale(3, 3)),
            patch("api", with_maintenance(Some("false"))),
        ]
    );
    assert_eq!(fake.running_status("jobs"), "Running");
}

// ---- Container Apps jobs ----

/// `apps_project` with the Container Apps job `job` (scale target `job`).
fn job_project(fake: &AzureFake, job: &str, pipeline: &str) -> Project {
    let p = apps_project(fake, pipeline);
    let text = std::fs::read_to_string(p.file("deploy.yaml"))
        .unwrap()
        .replace(
            "      jobs: jobs\n",
            &format!("      jobs: jobs\n      job: {job}\n"),
        );
    p.write_config(&text);
    p
}

fn job_call(job: &str, method: &str, rest: &str, body: Value) -> (String, String, Value) {
    (
        method.into(),
        format!(
            "/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.App/jobs/{job}{rest}?api-version={API}"
        ),
        body,
    )
}

fn max_executions(n: u32) -> Value {
    json!({"properties": {"configuration": {"eventTriggerConfig": {"scale": {"maxExecutions": n}}}}})
}

const JOB_DOWN_THEN_FAIL: &str = "name: deploy\nsteps:\n  - id: job-down\n    uses: scale\n    with: { target: job, replicas: 0 }\n  - id: boom\n    uses: command\n    with: { run: \"exit 3\" }\n";

#[test]
fn an_event_job_stops_and_gets_its_exact_max_executions_back_after_a_failing_deploy() {
    let fake = AzureFake::start();
    fake.add_job("ingest", "Event", Some(7));
    let p = job_project(&fake, "ingest", JOB_DOWN_THEN_FAIL);
    let before = fake.job("ingest")["properties"]["configuration"].clone();
    let plan = run(app_cmd(&p, &fake), &["plan", "-e", "aca"]);
    plan.success();
    assert!(
        plan.stdout().contains("scale job from 7 to 0"),
        "{}",
        plan.stdout()
    );
    fake.clear_requests();
    let out = run(app_cmd(&p, &fake), &["deploy", "-e", "aca"]);
    assert_ne!(out.code(), 0, "{}", out.all());
    assert_eq!(
        changes(&fake),
        vec![
            job_call("ingest", "PATCH", "", max_executions(0)),
            job_call("ingest", "POST", "/stop", Value::Null),
            // Rolled back: exactly the earlier maxExecutions.
            job_call("ingest", "PATCH", "", max_executions(7)),
        ]
    );
    assert_eq!(fake.executions("ingest"), vec!["Stopped"]);
    assert_eq!(fake.job("ingest")["properties"]["configuration"], before);
}

#[test]
fn an_event_job_scaled_down_and_back_up_in_one_run_gets_its_exact_max_executions() {
    let fake = AzureFake::start();
    fake.add_job("ingest", "Event", Some(7));
    let p = job_project(
        &fake,
        "ingest",
        "name: deploy\nsteps:\n  - id: job-down\n    uses: scale\n    with: { target: job, replicas: 0 }\n  - id: job-up\n    uses: scale\n    with: { target: job, replicas: 7 }\n",
    );
    let before = fake.job("ingest")["properties"]["configuration"].clone();
    fake.clear_requests();
    run(app_cmd(&p, &fake), &["deploy", "-e", "aca"]).success();
    assert_eq!(
        changes(&fake),
        vec![
            job_call("ingest", "PATCH", "", max_executions(0)),
            job_call("ingest", "POST", "/stop", Value::Null),
            job_call("ingest", "PATCH", "", max_executions(7)),
        ]
    );
    assert_eq!(fake.job("ingest")["properties"]["configuration"], before);
}

#[test]
fn a_schedule_job_only_has_its_executions_stopped_and_says_the_schedule_goes_on() {
    let fake = AzureFake::start();
    fake.add_job("nightly", "Schedule", None);
    let p = job_project(&fake, "nightly", JOB_DOWN_THEN_FAIL);
    let before = fake.job("nightly");
    fake.clear_requests();
    let out = run(app_cmd(&p, &fake), &["deploy", "-e", "aca"]);
    assert_ne!(out.code(), 0, "{}", out.all());
    assert!(
        out.all().contains("new executions still start on its schedule (the stable API has no pause; suspend is preview-only)"),
        "{}",
        out.all()
    );
    // No PATCH: there is nothing stable to pause, and so nothing to put back.
    assert_eq!(
        changes(&fake),
        vec![job_call("nightly", "POST", "/stop", Value::Null)]
    );
    assert_eq!(fake.executions("nightly"), vec!["Stopped"]);
    assert_eq!(
        fake.job("nightly")["properties"]["configuration"],
        before["properties"]["configuration"]
    );
}

#[test]
fn recover_in_a_new_process_puts_an_event_jobs_max_executions_back_after_kill_9() {
    let fake = AzureFake::start();
    fake.add_job("ingest", "Event", None);
    let p = job_project(&fake, "ingest", &CRASH_PIPELINE.replace("TARGET", "job"));
    let journal = crash_deploy(&p, &fake, "aca", 7);
    assert_eq!(
        fake.job("ingest")["properties"]["configuration"]["eventTriggerConfig"]["scale"]["maxExecutions"],
        0
    );
    assert_eq!(fake.executions("ingest"), vec!["Stopped"]);
    // Unset before: Azure's default 100 is what the journal holds.
    assert_eq!(
        journal[4]["compensation"],
        json!({"action": "scale", "target": "job", "replicas": 100, "prior": {"triggerType": "Event", "maxExecutions": 100}})
    );
    fake.clear_requests();
    run(app_cmd(&p, &fake), &["recover", "-e", "aca"]).expect_code(1);
    let job_changes: Vec<_> = changes(&fake)
        .into_iter()
        .filter(|c| c.1.contains("/jobs/"))
        .collect();
    assert_eq!(
        job_changes,
        vec![job_call("ingest", "PATCH", "", max_executions(100))]
    );
    fake.clear_requests();
    run(app_cmd(&p, &fake), &["recover", "-e", "aca"]).success();
    assert_eq!(changes(&fake), vec![]);
}

// ---- App Service ----

fn site_project(fake: &AzureFake, settings: Value, pipeline: &str) -> Project {
    fake.add_site("web", settings);
    let p = Project::new();
    p.write_config(&format!(
        r#"version: 1
project: testapp
pipeline: pipelines/deploy.yaml
migrations: migrations
environments:
  web:
    database: {{ kind: sqlite, url: "sqlite://state/app.db" }}
    backups: {{ kind: local, path: state/backups }}
    azure: {{ subscription: {SUBSCRIPTION}, tenant: {TENANT}, client_id: {CLIENT_ID}, credential: client-secret }}
    platform: {{ kind: azure-app-service, resource_group: rg, app: web }}
    health: {{ url: "{}", timeout: 5s, healthy_for: 0s }}
"#,
        p.health.url
    ));
    p.write("pipelines/deploy.yaml", pipeline);
    p
}

fn site_path() -> String {
    format!("/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/Microsoft.Web/sites/web")
}

fn site_call(method: &str, rest: &str, body: Value) -> (String, String, Value) {
    (
        method.into(),
        format!("{}/{rest}?api-version=2024-04-01", site_path()),
        body,
    )
}

#[test]
fn app_service_failing_deploy_restores_every_setting_and_starts_the_app_again() {
    let fake = AzureFake::start();
    let settings =
        json!({"WEBSITE_RUN_FROM_PACKAGE": "1", "FEATURE_FLAGS": "", "LOG_LEVEL": "info"});
    let pipeline = "name: deploy\nsteps:\n  - uses: preflight\n  - id: maintenance-on\n    uses: maintenance\n    with: { enabled: true }\n  - id: app-down\n    uses: scale\n    with: { target: app, replicas: 0 }\n  - uses: restart\n  - id: boom\n    uses: command\n    with: { run: \"exit 3\" }\n";
    let p = site_project(&fake, settings.clone(), pipeline);
    let plan = run(app_cmd(&p, &fake), &["plan", "-e", "web"]);
    plan.success();
    assert!(
        plan.stdout().contains("scale app from 1 to 0"),
        "{}",
        plan.stdout()
    );
    fake.clear_requests();
    let out = run(app_cmd(&p, &fake), &["deploy", "-e", "web"]);
    assert_ne!(out.code(), 0, "{}", out.all());
    let mut on = settings.clone();
    on["MAINTENANCE_MODE"] = json!("true");
    let all = changes(&fake);
    let list = site_call("POST", "config/appsettings/list", Value::Null);
    // Every PUT of the whole set comes straight after reading it.
    for (i, c) in all.iter().enumerate() {
        if c.0 == "PUT" {
            assert_eq!(all[i - 1], list, "{all:?}");
        }
    }
    assert_eq!(
        all.into_iter().filter(|c| *c != list).collect::<Vec<_>>(),
        vec![
            site_call("PUT", "config/appsettings", json!({"properties": on})),
            site_call("POST", "stop", Value::Null),
            site_call("POST", "restart", Value::Null),
            site_call("POST", "start", Value::Null),
            // The whole earlier set: MAINTENANCE_MODE absent again, nothing else lost.
            site_call("PUT", "config/appsettings", json!({"properties": settings})),
        ]
    );
    let (state, now, _) = fake.site("web");
    assert_eq!((state.as_str(), now), ("Running", settings));
}

#[test]
fn app_service_successful_deploy_puts_an_earlier_value_back_exactly() {
    let fake = AzureFake::start();
    let settings = json!({"MAINTENANCE_MODE": "off", "LOG_LEVEL": "info"});
    let pipeline = "name: deploy\nsteps:\n  - id: maintenance-on\n    uses: maintenance\n    with: { enabled: true }\n  - id: maintenance-off\n    uses: maintenance\n    with: { enabled: false }\n";
    let p = site_project(&fake, settings.clone(), pipeline);
    fake.throttle("PUT", &format!("{}/config/appsettings", site_path()), 1, 1);
    run(app_cmd(&p, &fake), &["deploy", "-e", "web"]).success();
    let puts: Vec<Value> = changes(&fake)
        .into_iter()
        .filter(|c| c.0 == "PUT")
        .map(|c| c.2)
        .collect();
    assert_eq!(
        puts,
        vec![
            json!({"properties": {"MAINTENANCE_MODE": "true", "LOG_LEVEL": "info"}}),
            json!({"properties": {"MAINTENANCE_MODE": "true", "LOG_LEVEL": "info"}}),
            json!({"properties": {"MAINTENANCE_MODE": "off", "LOG_LEVEL": "info"}}),
        ],
        "the throttled PUT is sent again"
    );
    assert_eq!(fake.site("web").1, settings);
}

// ---- The shipped example ----

#[test]
fn example_staging_and_production_check_out_against_the_fakes() {
    let pg = support::pg::server();
    let (staging_db, prod_db) = (pg.database(), pg.database());
    let fake = AzureFake::start();
    for app in ["mealprep-staging-api", "mealprep-prod-api"] {
        fake.add_app(app, web_containers(), 1, 4);
    }
    for app in ["mealprep-staging-jobs", "mealprep-prod-jobs"] {
        fake.add_app(app, json!([{"name": "worker", "image": "jobs:1"}]), 1, 3);
    }
    fake.add_secret("db-url", &pg.url(&prod_db));
    let p = Project::new();
    let example =
        std::fs::read_to_string(std::path::Path::new(support::ROOT).join("deploy.example.yaml"))
            .unwrap();
    // The health endpoints are public hosts; point them at the local one.
    let mut text = example
        .replace("https://staging-api.mealprep.example/health", &p.health.url)
        .replace("https://api.mealprep.example/health", &p.health.url);
    p.write_config(&text);
    let check = |env: &str| {
        let bin = p.file("az-bin");
        write_az(
            &bin,
            "echo '{\"accessToken\":\"tok-cli-1\",\"expires_on\":'$(( $(date +%s) + 3600 ))',\"tokenType\":\"Bearer\"}'",
        );
        let mut c = cmd(&p, &fake);
        c.env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .env("AZURE_SUBSCRIPTION_ID", SUBSCRIPTION)
        .env("AZURE_TENANT_ID", TENANT)
        .env("AZURE_CLIENT_ID", CLIENT_ID)
        .env("AZURE_CLIENT_SECRET", CLIENT_SECRET)
        .env("STAGING_DATABASE_URL", pg.url(&staging_db));
        run(c, &["check", "-e", env])
    };
    // The example's backups go to Blob Storage with an Entra ID token; the emulator speaks
    // plain http, which never gets a token. Blob Storage has its own suite (azure_blob.rs,
    // against Azurite); here the rest of each environment is checked, with local backups.
    for (account, keep) in [
        ("mealprepstagingbackup", "14d"),
        ("mealprepprodbackup", "35d"),
    ] {
        let blob =
            format!("{{ kind: azure-blob, account: {account}, container: backups, keep: {keep} }}");
        assert!(
            text.contains(&blob),
            "the example's backups changed: {blob}"
        );
        text = text.replace(
            &blob,
            &format!("{{ kind: local, path: state/backups-{account}, keep: {keep} }}"),
        );
    }
    p.write_config(&text);
    for (env, credential) in [
        ("staging", "client-secret (credential: auto)"),
        ("production", "azure-cli"),
    ] {
        let out = check(env);
        out.success();
        assert!(
            out.stdout().contains(&format!("ok: `{env}`")),
            "{}",
            out.all()
        );
        assert!(
            out.stdout()
                .contains(&format!("Azure credential: {credential}")),
            "{}",
            out.all()
        );
        assert!(
            !out.all().contains(&pg.url(&prod_db)),
            "the Key Vault value leaked"
        );
    }
    // Both environments' apps were read, and nothing was changed.
    assert!(fake.arm_changes().is_empty(), "{:?}", fake.arm_changes());
    for (rg, app) in [
        ("rg-mealprep-staging", "mealprep-staging-api"),
        ("rg-mealprep-staging", "mealprep-staging-jobs"),
        ("rg-mealprep-prod", "mealprep-prod-api"),
        ("rg-mealprep-prod", "mealprep-prod-jobs"),
    ] {
        let path = format!(
            "/subscriptions/{SUBSCRIPTION}/resourceGroups/{rg}/providers/Microsoft.App/containerApps/{app}?api-version={API}"
        );
        assert!(
            fake.requests()
                .iter()
                .any(|r| r.method == "GET" && r.path == path),
            "{path}"
        );
    }
}

#[test]
fn recover_in_a_new_process_puts_an_app_setting_back_exactly_after_kill_9() {
    let fake = AzureFake::start();
    let settings = json!({"MAINTENANCE_MODE": "off", "LOG_LEVEL": "info"});
    let p = site_project(
        &fake,
        settings.clone(),
        &CRASH_PIPELINE.replace("TARGET", "app"),
    );
    let journal = crash_deploy(&p, &fake, "web", 7);
    assert_eq!(
        journal[2]["compensation"],
        json!({"action": "maintenance", "enabled": false, "prior": {"setting": "MAINTENANCE_MODE", "value": "off"}})
    );
    assert_eq!(fake.site("web").0, "Stopped");
    fake.clear_requests();
    run(app_cmd(&p, &fake), &["recover", "-e", "web"]).expect_code(1);
    let list = site_call("POST", "config/appsettings/list", Value::Null);
    assert_eq!(
        changes(&fake)
            .into_iter()
            .filter(|c| *c != list)
            .collect::<Vec<_>>(),
        vec![
            site_call("POST", "start", Value::Null),
            // `off`, as it was, not `false`.
            site_call("PUT", "config/appsettings", json!({"properties": settings})),
        ]
    );
    let (state, now, _) = fake.site("web");
    assert_eq!((state.as_str(), now), ("Running", settings));
}

// ---- App Service code releases: staging slot and swap ----

const IMAGE: &str = "DOCKER|mealprep.azurecr.io/web";

/// Site `web` running `:41` in production and `:40` in its `staging` slot; `SLOT_NAME` is a
/// slot setting. The platform warms the slot on the project's health server.
fn slot_project(fake: &AzureFake, pipeline: &str) -> Project {
    let p = site_project(
        fake,
        json!({"LOG_LEVEL": "info", "SLOT_NAME": "production"}),
        pipeline,
    );
    fake.set_site_image("web", &format!("{IMAGE}:41"));
    fake.add_slot(
        "web",
        "staging",
        &format!("{IMAGE}:40"),
        json!({"LOG_LEVEL": "debug", "SLOT_NAME": "staging"}),
    );
    fake.set_slot_settings("web", &["SLOT_NAME"]);
    p.write_config(&p.read("deploy.yaml").replace(
        "platform: { kind: azure-app-service, resource_group: rg, app: web }",
        &format!(
            "platform: {{ kind: azure-app-service, resource_group: rg, app: web, warm_url: \"{}\" }}",
            p.health.url
        ),
    ));
    p
}

const SLOT_PIPELINE: &str = "name: deploy\nsteps:\n  - id: stage\n    uses: release\n  - uses: migrate\n    with: { to: latest, rollback: down }\n  - id: go-live\n    uses: traffic\n";

/// The changes sent to Resource Manager, without the reads of the app settings (a POST).
fn code_changes(fake: &AzureFake) -> Vec<(String, String, Value)> {
    let list = site_call("POST", "config/appsettings/list", Value::Null);
    changes(fake).into_iter().filter(|c| *c != list).collect()
}

fn slot_images(fake: &AzureFake) -> (String, String) {
    (fake.site_image("web"), fake.slot("web", "staging").0)
}

#[test]
fn app_service_release_stages_the_slot_warms_it_and_the_traffic_step_swaps_it_in() {
    let fake = AzureFake::start();
    let p = slot_project(&fake, SLOT_PIPELINE);
    let plan = run(
        app_cmd(&p, &fake),
        &["plan", "-e", "web", "--code-version", "42"],
    );
    plan.success();
    assert!(
        plan.stdout()
            .contains("release 42 beside the live code, without traffic (now: production (41) 100%, staging (40) 0%)"),
        "{}",
        plan.stdout()
    );
    fake.clear_requests();
    let out = run(
        app_cmd(&p, &fake),
        &["deploy", "-e", "web", "--code-version", "42"],
    );
    out.success();
    assert_eq!(
        code_changes(&fake),
        vec![
            site_call(
                "PATCH",
                "slots/staging/config/web",
                json!({"properties": {"linuxFxVersion": format!("{IMAGE}:42")}})
            ),
            site_call(
                "POST",
                "slots/staging/slotsswap",
                json!({"targetSlot": "production", "preserveVnet": true})
            ),
        ]
    );
    // The swap is an operation, followed to its end before the images were read back.
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.path.contains("/slots/staging/operationstatuses/"))
    );
    assert!(p.health.hits() > 0, "the staged slot was warmed");
    assert_eq!(
        slot_images(&fake),
        (format!("{IMAGE}:42"), format!("{IMAGE}:41"))
    );
    // The slot setting stayed with its slot; the others moved with the code.
    assert_eq!(
        fake.site("web").1,
        json!({"LOG_LEVEL": "debug", "SLOT_NAME": "production"})
    );
    assert_eq!(
        fake.slot("web", "staging").1,
        json!({"LOG_LEVEL": "info", "SLOT_NAME": "staging"})
    );
    assert!(
        out.all().contains("42 swapped into production"),
        "{}",
        out.all()
    );
    assert!(p.db_snapshot().contains_key("table users"));

    // Again: 42 is live, nothing to stage over it but the slot, nothing to swap.
    fake.clear_requests();
    run(
        app_cmd(&p, &fake),
        &["deploy", "-e", "web", "--code-version", "42"],
    )
    .success();
    assert_eq!(
        code_changes(&fake),
        vec![site_call(
            "PATCH",
            "slots/staging/config/web",
            json!({"properties": {"linuxFxVersion": format!("{IMAGE}:42")}})
        )]
    );
}

#[test]
fn app_service_failure_after_the_swap_puts_both_slots_and_the_schema_back() {
    let fake = AzureFake::start();
    let pipeline = format!(
        "{SLOT_PIPELINE}  - id: boom\n    uses: command\n    with: {{ run: \"exit 3\" }}\n"
    );
    let p = slot_project(&fake, &pipeline);
    let settings = (fake.site("web").1, fake.slot("web", "staging").1);
    fake.clear_requests();
    let out = run(
        app_cmd(&p, &fake),
        &["deploy", "-e", "web", "--code-version", "42"],
    );
    out.expect_code(1);
    let image = |tag: u32| json!({"properties": {"linuxFxVersion": format!("{IMAGE}:{tag}")}});
    let swap = site_call(
        "POST",
        "slots/staging/slotsswap",
        json!({"targetSlot": "production", "preserveVnet": true}),
    );
    assert_eq!(
        code_changes(&fake),
        vec![
            site_call("PATCH", "slots/staging/config/web", image(42)),
            swap.clone(),
            // The traffic step's undo: swapped back.
            swap,
            // The release step's undo, after the migrations': the slot's earlier image.
            site_call("PATCH", "slots/staging/config/web", image(40)),
        ]
    );
    assert_eq!(
        slot_images(&fake),
        (format!("{IMAGE}:41"), format!("{IMAGE}:40"))
    );
    assert_eq!(
        (fake.site("web").1, fake.slot("web", "staging").1),
        settings
    );
    let err = out.stderr();
    assert!(err.contains("failed at step `boom`"), "{err}");
    assert!(
        err.contains("slot `staging` swapped back into production")
            && err.contains("as before (checked: both read back)"),
        "{err}"
    );
    assert!(err.contains("state: as before the run"), "{err}");
    assert!(!p.db_snapshot().contains_key("table users"));
    assert_eq!(p.journals()[0].last().unwrap()["status"], "rolled_back");
}

#[test]
fn app_service_traffic_refuses_a_version_the_slot_does_not_run() {
    let fake = AzureFake::start();
    let p = slot_project(
        &fake,
        "name: deploy\nsteps:\n  - uses: migrate\n    with: { to: latest, rollback: down }\n  - id: go-live\n    uses: traffic\n    with: { version: \"43\" }\n",
    );
    let out = run(app_cmd(&p, &fake), &["deploy", "-e", "web"]);
    out.expect_code(1);
    assert!(
        out.stderr().contains(
            "slot `staging` of App Service `web` runs `mealprep.azurecr.io/web:40`, not 43: stage it with a `release` step first"
        ),
        "{}",
        out.stderr()
    );
    assert!(code_changes(&fake).is_empty(), "{:?}", code_changes(&fake));
    assert_eq!(
        slot_images(&fake),
        (format!("{IMAGE}:41"), format!("{IMAGE}:40"))
    );
}
