//! Notifications reach a real local HTTP server in each documented format (generic JSON
//! webhook, Slack, Microsoft Teams), in order, with retries on 5xx; a dead or hanging
//! webhook neither fails nor holds a release; webhook URLs never show anywhere.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::webhook::WebhookServer;
use support::{Project, replace_once};

const HOOK: &str = "/hooks/webhook-token-5f2a91";
const SLACK: &str = "/services/T000/B000/slack-token-77c1e0";
const TEAMS: &str = "/webhookb2/teams-token-a93d44";

/// The default project with a top-level generic webhook and `local`'s own Slack and
/// Teams targets, all on `server`.
fn project(server: &WebhookServer, extra: &str) -> Project {
    let p = Project::new();
    let config = replace_once(
        &p.default_config(),
        "    health: {",
        &format!(
            "    notify:\n      - {{ kind: slack, url: \"{b}{SLACK}\"{extra} }}\n      - {{ kind: teams, url: \"{b}{TEAMS}\"{extra} }}\n    health: {{",
            b = server.base
        ),
    );
    p.write_config(&format!(
        "{config}notify:\n  - {{ kind: webhook, url: \"{}{HOOK}\"{extra} }}\n",
        server.base
    ));
    p
}

/// A pending migration that fails, so the next deploy rolls back.
fn poison(p: &Project) {
    p.add_migration(
        "20250101000000_broken",
        "CREATE TABLE broken (id INTEGER);\nINSERT INTO no_such_table VALUES (1);\n",
        Some("DROP TABLE broken;\n"),
    );
}

/// Run ids of the project's runs, oldest first.
fn run_ids(p: &Project) -> Vec<String> {
    p.journals()
        .iter()
        .map(|j| j[0]["run_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The body with its timestamp checked and taken out.
fn without_at(mut body: Value) -> Value {
    let at = body["at"].as_str().expect("an `at` timestamp").to_owned();
    chrono::DateTime::parse_from_rfc3339(&at).expect("`at` is RFC 3339");
    body.as_object_mut().unwrap().remove("at");
    body
}

fn assert_no_tokens(p: &Project, texts: &[String]) {
    let mut all = texts.join("\n");
    for journal in p.journals() {
        for record in journal {
            all.push_str(&record.to_string());
        }
    }
    for token in ["webhook-token", "slack-token", "teams-token"] {
        assert!(!all.contains(token), "`{token}` leaked:\n{all}");
    }
}

#[test]
fn a_successful_deploy_is_announced_in_each_format() {
    let server = WebhookServer::start();
    let p = project(&server, "");
    let deploy = p.run(&["deploy", "--report", "report.json"]);
    deploy.success();
    let run = &run_ids(&p)[0];
    let hook: Vec<Value> = server
        .to(HOOK)
        .iter()
        .map(|r| without_at(r.json()))
        .collect();
    let text = |what: &str| format!("testapp: release to local {what}\nrun {run}, pipeline deploy");
    assert_eq!(
        hook,
        [
            json!({"format": 1, "event": "started", "project": "testapp", "environment": "local", "run_id": run, "pipeline": "deploy", "step": null, "error": null, "text": text("started")}),
            json!({"format": 1, "event": "succeeded", "project": "testapp", "environment": "local", "run_id": run, "pipeline": "deploy", "step": null, "error": null, "text": text("succeeded")}),
        ]
    );
    for r in server.requests() {
        assert_eq!(r.method, "POST");
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
    }
    let slack: Vec<Value> = server
        .to(SLACK)
        .iter()
        .map(support::webhook::Request::json)
        .collect();
    assert_eq!(
        slack[1],
        json!({
            "text": ":white_check_mark: testapp: release to local succeeded",
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": format!(":white_check_mark: *testapp: release to local succeeded*\nrun {run}, pipeline deploy")}}],
        })
    );
    assert_eq!(
        slack[0]["text"],
        ":rocket: testapp: release to local started"
    );
    let teams: Vec<Value> = server
        .to(TEAMS)
        .iter()
        .map(support::webhook::Request::json)
        .collect();
    assert_eq!(teams.len(), 2);
    assert_eq!(
        teams[1],
        json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {"type": "TextBlock", "text": "testapp: release to local succeeded", "weight": "Bolder", "size": "Medium", "color": "Good", "wrap": true},
                        {"type": "FactSet", "facts": [
                            {"title": "Environment", "value": "local"},
                            {"title": "Run", "value": run},
                            {"title": "Pipeline", "value": "deploy"},
                        ]},
                        {"type": "TextBlock", "text": format!("run {run}, pipeline deploy"), "wrap": true},
                    ],
                },
            }],
        })
    );
    assert_no_tokens(&p, &[deploy.all(), p.read("report.json")]);
}

#[test]
fn a_failed_deploy_announces_the_failure_then_the_rollback() {
    let server = WebhookServer::start();
    let p = project(&server, "");
    p.run(&["deploy"]).success();
    poison(&p);
    let failed = p.run(&["deploy"]);
    failed.expect_code(1);
    let run = &run_ids(&p)[1];
    let hook: Vec<Value> = server.to(HOOK)[2..]
        .iter()
        .map(|r| without_at(r.json()))
        .collect();
    assert_eq!(hook.len(), 3, "{hook:#?}");
    assert_eq!(hook[0]["event"], "started");
    let error = hook[1]["error"].as_str().unwrap().to_owned();
    assert!(error.contains("no_such_table"), "{error}");
    assert_eq!(
        hook[1],
        json!({"format": 1, "event": "failed", "project": "testapp", "environment": "local", "run_id": run, "pipeline": "deploy", "step": "migrate", "error": error,
               "text": format!("testapp: release to local failed\nrun {run}, pipeline deploy\nstep migrate: {error}")})
    );
    assert_eq!(
        hook[2],
        json!({"format": 1, "event": "rolled_back", "project": "testapp", "environment": "local", "run_id": run, "pipeline": "deploy", "step": "migrate", "error": error,
               "text": format!("testapp: release to local failed and was rolled back\nrun {run}, pipeline deploy\nstep migrate: {error}\nstate: as before the run, checked: schema (9 objects) and the rows of 1 table(s) (_sqlx_migrations) identical to before the run")})
    );
    let slack = server.to(SLACK)[4].json();
    assert_eq!(
        slack["text"],
        ":leftwards_arrow_with_hook: testapp: release to local failed and was rolled back"
    );
    let teams = server.to(TEAMS)[4].json();
    let card = &teams["attachments"][0]["content"]["body"];
    assert_eq!(card[0]["color"], "Good");
    assert_eq!(
        card[1]["facts"][3],
        json!({"title": "Failed step", "value": "migrate"})
    );
    assert_no_tokens(&p, &[failed.all()]);
}

#[test]
fn events_choose_what_a_target_hears() {
    let server = WebhookServer::start();
    let p = project(&server, ", events: [failed, rollback_failed]");
    p.run(&["deploy"]).success();
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    poison(&p);
    p.run(&["deploy"]).expect_code(1);
    let hook = server.to(HOOK);
    assert_eq!(hook.len(), 1);
    assert_eq!(hook[0].json()["event"], "failed");
}

#[test]
fn server_errors_are_retried_and_the_message_goes_through() {
    let server = WebhookServer::start();
    let p = Project::new();
    p.write_config(&format!(
        "{}notify:\n  - {{ kind: webhook, url: \"{}{HOOK}\", events: [succeeded] }}\n",
        p.default_config(),
        server.base
    ));
    server.answer(&[503, 500]);
    let deploy = p.run(&["deploy"]);
    deploy.success();
    let hook = server.to(HOOK);
    assert_eq!(hook.len(), 3, "two 5xx answers, then the delivery");
    assert!(hook.iter().all(|r| r.body == hook[0].body));
    assert!(
        !deploy.stderr().contains("did not take"),
        "{}",
        deploy.stderr()
    );
}

#[test]
fn a_rejected_message_is_not_retried_and_only_warns() {
    let server = WebhookServer::start();
    let p = Project::new();
    p.write_config(&format!(
        "{}notify:\n  - {{ kind: slack, url: \"{}{SLACK}\", events: [succeeded] }}\n",
        p.default_config(),
        server.base
    ));
    server.answer(&[404]);
    let deploy = p.run(&["deploy"]);
    deploy.success();
    assert_eq!(server.to(SLACK).len(), 1);
    assert!(
        deploy.stderr().contains(
            "notify target #1 (slack) did not take the `succeeded` notification: HTTP 404"
        ),
        "{}",
        deploy.stderr()
    );
    assert_no_tokens(&p, &[deploy.all()]);
}

/// Runs `cutover deploy`, killing it (and failing) if it is still running after `limit`.
fn deploy_within(p: &Project, limit: Duration) -> (support::Run, Duration) {
    let started = Instant::now();
    let mut child = p
        .cmd()
        .arg("deploy")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "deploy still running after {limit:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = started.elapsed();
    (support::Run(child.wait_with_output().unwrap()), elapsed)
}

#[test]
fn a_hanging_webhook_neither_fails_nor_holds_the_release() {
    let hanging = WebhookServer::hanging();
    let p = Project::new();
    p.write_config(&format!(
        "{}notify:\n  - {{ kind: teams, url: \"{}{TEAMS}\", timeout: 1s }}\n",
        p.default_config(),
        hanging.base
    ));
    // The webhook never answers: each message may cost at most the 1s timeout per attempt,
    // and the end of the command waits at most 1s for what is queued. The release itself
    // never waits on it; 20s is far beyond any of that.
    let (deploy, _) = deploy_within(&p, Duration::from_secs(20));
    deploy.success();
    assert!(deploy.stdout().contains("deployed to local"));
    assert!(!hanging.requests().is_empty());
    assert!(
        deploy.stderr().contains("given up") || deploy.stderr().contains("did not take"),
        "{}",
        deploy.stderr()
    );
    assert_no_tokens(&p, &[deploy.all()]);
}

#[test]
fn a_dead_webhook_neither_fails_nor_holds_the_release() {
    // A port nothing listens on: every attempt is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = Project::new();
    p.write_config(&format!(
        "{}notify:\n  - {{ kind: webhook, url: \"http://127.0.0.1:{port}{HOOK}\", timeout: 2s }}\n",
        p.default_config()
    ));
    let (deploy, _) = deploy_within(&p, Duration::from_secs(20));
    deploy.success();
    assert_no_tokens(&p, &[deploy.all()]);
}

#[test]
fn a_bad_notify_entry_is_bad_input_with_its_location() {
    let p = Project::new();
    p.write_config(&format!(
        "{}notify:\n  - {{ kind: pager, url: \"http://127.0.0.1:1/x\" }}\n",
        p.default_config()
    ));
    let run = p.run(&["deploy"]);
    run.expect_code(2);
    assert!(run.stderr().contains("deploy.yaml:"), "{}", run.stderr());
    assert!(run.stderr().contains("pager"), "{}", run.stderr());
    assert!(p.journals().is_empty());
    let p = Project::new();
    p.write_config(&format!(
        "{}notify:\n  - {{ kind: slack, url: \"not a url\" }}\n",
        p.default_config()
    ));
    let run = p.run(&["check"]);
    run.expect_code(2);
    assert!(
        run.stderr().contains("invalid notify URL"),
        "{}",
        run.stderr()
    );
}
