//! The `heroku` platform adapter through the real binary, against a local fake of the
//! Heroku Platform API (tests/support/heroku_fake.rs) that records every request: the
//! exact requests of a deploy, compensation putting the formation and maintenance flag
//! back, retries of 429 and 503, clear errors for a wrong app or token, `cutover release`
//! in the release phase, and the shipped example in examples/heroku/.

mod support;

use std::path::Path;
use std::time::Duration;

use support::heroku_fake::{ACCEPT, Fault, HerokuFake};
use support::{Project, ROOT, Run, replace_once};

const APP: &str = "mealprep-prod";
const TOKEN: &str = "hk-test-7f3a2c91d5e84b06aa10";

/// A project whose only environment, `heroku`, runs on the fake, with the shipped
/// example's release pipeline.
fn setup(formation: &[(&str, u32)]) -> (Project, HerokuFake) {
    let fake = HerokuFake::start(APP, TOKEN, formation);
    let p = Project::new();
    p.write(
        "pipelines/release.yaml",
        &std::fs::read_to_string(Path::new(ROOT).join("examples/heroku/pipelines/release.yaml"))
            .unwrap(),
    );
    p.write_config(&config(&p, &fake, "heroku", APP, ""));
    (p, fake)
}

/// `deploy.yaml` with one Heroku environment named `name`; `extra` is added under it.
fn config(p: &Project, fake: &HerokuFake, name: &str, app: &str, extra: &str) -> String {
    format!(
        r#"version: 1
project: testapp
pipeline: pipelines/release.yaml
migrations: migrations
environments:
  {name}:
    database: {{ kind: sqlite, url: "sqlite://state/app.db" }}
    backups: {{ kind: local, path: state/backups }}
    platform:
      kind: heroku
      app: {app}
      api_url: "{}"
    health: {{ url: "{}", timeout: 5s, healthy_for: 0s }}
{extra}"#,
        fake.url, p.health.url
    )
}

/// Runs `cutover ARGS` with the token in HEROKU_API_KEY.
fn run(p: &Project, args: &[&str]) -> Run {
    Run(p
        .cmd()
        .env("HEROKU_API_KEY", TOKEN)
        .args(args)
        .output()
        .expect("cutover runs"))
}

/// Every file under the project's state folders, as text.
fn state_files(p: &Project) -> String {
    fn walk(dir: &Path, out: &mut String) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
            }
        }
    }
    let mut out = String::new();
    walk(&p.file(".cutover"), &mut out);
    walk(&p.file("state/backups"), &mut out);
    out
}

#[track_caller]
fn assert_token_never_shown(p: &Project, run: &Run) {
    assert!(!run.all().contains(TOKEN), "token printed:\n{}", run.all());
    assert!(
        !state_files(p).contains(TOKEN),
        "token written to the journal or state"
    );
}

fn lines(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn formation(v: &[(&str, u32)]) -> std::collections::BTreeMap<String, u32> {
    v.iter().map(|(k, q)| ((*k).to_owned(), *q)).collect()
}

#[test]
fn deploy_sends_the_documented_requests_in_order() {
    let (p, fake) = setup(&[("web", 2), ("worker", 3)]);
    let out = run(&p, &["-vv", "deploy"]);
    out.success();
    let app = format!("/apps/{APP}");
    let formation_path = format!("/apps/{APP}/formation");
    // What changed, in order, with the exact bodies.
    assert_eq!(
        fake.changes(),
        lines(&[
            &format!("PATCH {app} {{\"maintenance\":true}}"),
            &format!("PATCH {app}/formation/worker {{\"quantity\":0}}"),
            &format!("PATCH {app} {{\"maintenance\":false}}"),
            &format!("PATCH {app}/formation/worker {{\"quantity\":3}}"),
        ])
    );
    let requests = fake.requests();
    // The plan reads the app, then its formation, before anything changes; every other
    // read is one of the two.
    assert_eq!(requests[0].line(), format!("GET {app}"));
    assert_eq!(requests[1].line(), format!("GET {formation_path}"));
    for r in &requests {
        assert!(
            r.method != "GET" || r.path == app || r.path == formation_path,
            "unexpected read {}",
            r.line()
        );
        assert_eq!(r.header("accept"), Some(ACCEPT), "{}", r.line());
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{}",
            r.line()
        );
        assert!(
            r.header("user-agent")
                .is_some_and(|ua| ua.starts_with("cutover/")),
            "{}",
            r.line()
        );
        if r.method == "PATCH" {
            assert_eq!(r.header("content-type"), Some("application/json"));
        }
        assert_eq!(r.status, 200, "{}", r.line());
    }
    // Before every change, the state it undoes to was read.
    let writes: Vec<usize> = (0..requests.len())
        .filter(|&i| requests[i].method != "GET")
        .collect();
    for i in writes {
        assert_eq!(requests[i - 1].line(), format!("GET {formation_path}"));
        assert_eq!(requests[i - 2].line(), format!("GET {app}"));
    }
    assert!(!fake.maintenance());
    assert_eq!(fake.formation(), formation(&[("web", 2), ("worker", 3)]));
    assert_eq!(p.journals()[0].last().unwrap()["status"], "succeeded");
    assert!(out.stdout().contains("deployed to heroku"), "{}", out.all());
    // The plan names the app, the results name what was done.
    assert!(
        out.all().contains(&format!("Heroku app `{APP}`")),
        "{}",
        out.all()
    );
    assert!(out.all().contains("worker scaled to 0"), "{}", out.all());
    assert_token_never_shown(&p, &out);
}

/// A pipeline that scales both process types and then fails at validation.
fn failing_pipeline(p: &Project) {
    p.write_pipeline(
        "name: failing
steps:
  - uses: preflight
  - id: maintenance-on
    uses: maintenance
    with: { enabled: true }
  - id: worker-down
    uses: scale
    with: { target: worker, replicas: 0 }
  - id: web-down
    uses: scale
    with: { target: web, replicas: 1 }
  - uses: migrate
    # No backup step: the down files, although the example's last down is lossy.
    with: { to: latest, rollback: down }
  - uses: validate
    # Fails in the run, not in the rehearsal on a copy, which would stop it first.
    rehearse: off
    with: { checks: [{ name: always-fails, sql: \"SELECT 1 AS issues\" }] }
  - id: maintenance-off
    uses: maintenance
    with: { enabled: false }
",
    );
    p.write_config(&p.read("deploy.yaml").replace(
        "pipeline: pipelines/release.yaml",
        "pipeline: pipelines/deploy.yaml",
    ));
}

#[test]
fn failure_after_scaling_restores_the_exact_formation_and_maintenance() {
    let (p, fake) = setup(&[("clock", 1), ("web", 2), ("worker", 5)]);
    failing_pipeline(&p);
    let out = run(&p, &["deploy"]);
    out.expect_code(1);
    let app = format!("/apps/{APP}");
    assert_eq!(
        fake.changes(),
        lines(&[
            &format!("PATCH {app} {{\"maintenance\":true}}"),
            &format!("PATCH {app}/formation/worker {{\"quantity\":0}}"),
            &format!("PATCH {app}/formation/web {{\"quantity\":1}}"),
            // The rollback, newest first, to the quantities read before.
            &format!("PATCH {app}/formation/web {{\"quantity\":2}}"),
            &format!("PATCH {app}/formation/worker {{\"quantity\":5}}"),
            &format!("PATCH {app} {{\"maintenance\":false}}"),
        ])
    );
    assert!(!fake.maintenance());
    assert_eq!(
        fake.formation(),
        formation(&[("clock", 1), ("web", 2), ("worker", 5)])
    );
    let err = out.stderr();
    assert!(err.contains("failed at step `validate`"), "{err}");
    assert!(
        err.contains("rolled back: ")
            && err.contains("scale web back to 2")
            && err.contains("scale worker back to 5")
            && err.contains("maintenance back off"),
        "{err}"
    );
    assert_eq!(p.journals()[0].last().unwrap()["status"], "rolled_back");
    assert_token_never_shown(&p, &out);
}

#[test]
fn maintenance_that_was_already_on_stays_on_after_a_rollback() {
    let (p, fake) = setup(&[("web", 2), ("worker", 5)]);
    fake.set_maintenance(true);
    failing_pipeline(&p);
    run(&p, &["deploy"]).expect_code(1);
    assert!(fake.maintenance(), "maintenance restored to on, as it was");
    assert_eq!(fake.formation(), formation(&[("web", 2), ("worker", 5)]));
    let app = format!("/apps/{APP}");
    assert_eq!(
        fake.changes().last().unwrap(),
        &format!("PATCH {app} {{\"maintenance\":true}}")
    );
}

#[test]
fn rate_limits_and_outages_are_retried_honouring_retry_after() {
    let (p, fake) = setup(&[("web", 2), ("worker", 3)]);
    let app = format!("/apps/{APP}");
    let worker = format!("{app}/formation/worker");
    fake.fail(Fault::on("PATCH", &worker, 429).retry_after(1));
    fake.fail(Fault::on("PATCH", &app, 503));
    let out = run(&p, &["deploy"]);
    out.success();
    let requests = fake.requests();
    let patches: Vec<_> = requests.iter().filter(|r| r.method == "PATCH").collect();
    // Maintenance on: 503, then again (backoff); worker down: 429, then again after the
    // second Retry-After asked for.
    assert_eq!(patches[0].path, app);
    assert_eq!(patches[0].status, 503);
    assert_eq!(
        (patches[1].path.as_str(), patches[1].status),
        (app.as_str(), 200)
    );
    assert_eq!(patches[1].body, patches[0].body);
    assert!(patches[1].at - patches[0].at >= Duration::from_millis(400));
    assert_eq!(patches[2].path, worker);
    assert_eq!(patches[2].status, 429);
    assert_eq!(
        (patches[3].path.as_str(), patches[3].status),
        (worker.as_str(), 200)
    );
    assert!(
        patches[3].at - patches[2].at >= Duration::from_millis(950),
        "Retry-After: 1 honoured"
    );
    assert_eq!(patches.len(), 6);
    assert!(!fake.maintenance());
    assert_eq!(fake.formation(), formation(&[("web", 2), ("worker", 3)]));
    // The retries are said, not hidden.
    assert!(out.stderr().contains("trying again"), "{}", out.stderr());
    assert_token_never_shown(&p, &out);
}

#[test]
fn an_outage_longer_than_the_adapters_retries_is_transient_for_step_retries() {
    let (p, fake) = setup(&[("web", 2), ("worker", 3)]);
    let app = format!("/apps/{APP}");
    // Four 503s use up the adapter's tries; the step's `retries: 2` tries once more.
    fake.fail(Fault::on("PATCH", &app, 503).times(4));
    let out = run(&p, &["deploy"]);
    out.success();
    let maintenance_on: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path == app && r.body.contains("true"))
        .map(|r| r.status)
        .collect();
    assert_eq!(maintenance_on, [503, 503, 503, 503, 200]);
    assert!(
        out.all().contains("after 4 tries"),
        "the step retry names the error:\n{}",
        out.all()
    );

    // Without `retries:` the same outage fails the run, which rolls back cleanly.
    let (p, fake) = setup(&[("web", 2), ("worker", 3)]);
    p.write(
        "pipelines/release.yaml",
        &p.read("pipelines/release.yaml")
            .replace("retries: 2", "retries: 0"),
    );
    fake.fail(Fault::on("PATCH", &format!("{app}/formation/worker"), 503).times(4));
    let out = run(&p, &["deploy"]);
    out.expect_code(1);
    let err = out.stderr();
    assert!(err.contains("failed at step `worker-down`"), "{err}");
    assert!(
        err.contains(&format!("Heroku app `{APP}`: scaling `worker` to 0 (PATCH {app}/formation/worker) failed: Heroku is temporarily unavailable")),
        "{err}"
    );
    assert!(err.contains("HTTP 503 `unavailable`"), "{err}");
    assert!(err.contains("maintenance back off"), "{err}");
    assert!(!fake.maintenance());
    assert_eq!(fake.formation(), formation(&[("web", 2), ("worker", 3)]));
}

#[test]
fn a_wrong_app_is_refused_at_plan_and_nothing_changes() {
    let (p, fake) = setup(&[("web", 2), ("worker", 3)]);
    p.write_config(&config(&p, &fake, "heroku", "mealprep-typo", ""));
    for args in [&["plan"][..], &["deploy"], &["release"]] {
        let out = run(&p, args);
        out.expect_code(2);
        let err = out.stderr();
        assert!(
            err.contains("cannot read the platform state: Heroku app `mealprep-typo`: reading the app (GET /apps/mealprep-typo) failed: Couldn't find that app. (HTTP 404 `not_found`)"),
            "{args:?}: {err}"
        );
        assert!(err.contains("nothing was touched"), "{err}");
        assert_token_never_shown(&p, &out);
    }
    assert!(fake.changes().is_empty(), "{:?}", fake.changes());
    assert!(p.journals().is_empty());
    assert!(!p.file("state/app.db").exists());
}

#[test]
fn a_missing_or_refused_api_key_is_a_clear_error() {
    let (p, fake) = setup(&[("web", 2)]);
    let out = Run(p
        .cmd()
        .env_remove("HEROKU_API_KEY")
        .arg("plan")
        .output()
        .unwrap());
    out.expect_code(2);
    assert!(
        out.stderr()
            .contains("platform `heroku` needs an API key: set `api_key:`")
            && out.stderr().contains("HEROKU_API_KEY environment variable")
            && out.stderr().contains("environment `heroku`"),
        "{}",
        out.stderr()
    );
    assert!(fake.requests().is_empty());

    // A token Heroku refuses: 401, named as such, the token itself masked.
    let wrong = "hk-wrong-0d9c8b7a6f5e4d3c";
    p.write_config(&p.read("deploy.yaml").replace(
        "      kind: heroku\n",
        "      kind: heroku\n      api_key: \"${env:OTHER_TOKEN}\"\n",
    ));
    let out = Run(p
        .cmd()
        .env_remove("HEROKU_API_KEY")
        .env("OTHER_TOKEN", wrong)
        .arg("plan")
        .output()
        .unwrap());
    out.expect_code(2);
    assert!(
        out.stderr().contains(
            "Invalid credentials provided. (HTTP 401 `unauthorized`); the API key was refused"
        ),
        "{}",
        out.stderr()
    );
    assert!(!out.all().contains(wrong));
    assert_eq!(
        fake.requests()[0].header("authorization"),
        Some(format!("Bearer {wrong}").as_str())
    );
}

/// Envs `local` (the command platform) and a Heroku one with typed confirmation; a
/// pipeline that fails at validation when `fail`.
fn release_project(name: &str, fail: bool) -> (Project, HerokuFake) {
    let (p, fake) = setup(&[("web", 2), ("worker", 3)]);
    let local = p.default_config();
    let local = &local[local.find("  local:").unwrap()..];
    let heroku = config(&p, &fake, name, APP, local).replacen(
        &format!("  {name}:\n"),
        &format!("  {name}:\n    confirm: typed\n"),
        1,
    );
    p.write_config(&heroku);
    if fail {
        p.write(
            "pipelines/release.yaml",
            &replace_once(
                &p.read("pipelines/release.yaml"),
                "  - uses: validate\n    with: { queries: validations/ }",
                // Fails in the run, not in the rehearsal on a copy, which would stop it first.
                "  - uses: validate\n    rehearse: off\n    with: { queries: validations/, checks: [{ name: always-fails, sql: \"SELECT 1 AS issues\" }] }",
            ),
        );
    }
    (p, fake)
}

#[test]
fn release_with_cutover_env_rolls_back_and_exits_non_zero_without_prompting() {
    let (p, fake) = release_project("production", true);
    let out = Run(p
        .cmd()
        .env("HEROKU_API_KEY", TOKEN)
        .env("CUTOVER_ENV", "production")
        .arg("release")
        .output()
        .unwrap());
    out.expect_code(1);
    let err = out.stderr();
    assert!(!err.contains("CONFIRM"), "never prompts: {err}");
    assert!(err.contains("failed at step `validate`"), "{err}");
    assert!(
        err.contains("rolled back: ")
            && err.contains("scale worker back to 3")
            && err.contains("maintenance back off")
            && err.contains("restore backup pre-"),
        "{err}"
    );
    assert!(err.contains("state: as before the run"), "{err}");
    assert!(!fake.maintenance());
    assert_eq!(fake.formation(), formation(&[("web", 2), ("worker", 3)]));
    assert_eq!(p.journals()[0][0]["command"], "release");
    assert_eq!(p.journals()[0][0]["environment"], "production");
    // The `local` environment was not touched.
    assert!(p.calls().is_empty());
    assert_token_never_shown(&p, &out);
}

#[test]
fn release_picks_the_heroku_environment_and_limits_the_run_to_55_minutes() {
    let (p, fake) = release_project("heroku", false);
    let out = run(&p, &["-v", "release"]);
    out.success();
    assert!(
        out.stderr()
            .contains("release: environment `heroku`, pipeline `release`, run time limit 55m"),
        "{}",
        out.stderr()
    );
    assert_eq!(fake.changes().len(), 4);
    assert_eq!(p.journals()[0][0]["environment"], "heroku");
    assert!(p.calls().is_empty());

    // A pipeline allowed to outlast the release phase is warned about.
    p.write(
        "pipelines/release.yaml",
        &p.read("pipelines/release.yaml")
            .replace("name: release\n", "name: release\ntimeout: 2h\n"),
    );
    let out = run(&p, &["release"]);
    out.success();
    assert!(
        out.stderr().contains(
            "warning: pipeline `release` may run for 2h, but Heroku stops a release phase after 1h"
        ),
        "{}",
        out.stderr()
    );
}

#[test]
fn the_formation_list_is_read_page_by_page_and_the_rate_limit_paces_requests() {
    let (p, fake) = setup(&[("clock", 1), ("web", 2), ("worker", 3)]);
    fake.set_page_size(2);
    fake.set_remaining(10);
    let out = run(&p, &["plan", "--output", "json"]);
    out.success();
    let requests = fake.requests();
    let lines: Vec<String> = requests
        .iter()
        .map(support::heroku_fake::Request::line)
        .collect();
    let formation_path = format!("/apps/{APP}/formation");
    assert_eq!(
        lines,
        [
            format!("GET /apps/{APP}"),
            format!("GET {formation_path}"),
            format!("GET {formation_path}"),
        ]
    );
    assert_eq!(requests[1].status, 206);
    assert_eq!(requests[1].header("range"), None);
    assert_eq!(requests[2].header("range"), Some("type ]web..; max=2"));
    assert!(
        out.stdout().contains("\"clock\":1")
            && out.stdout().contains("\"web\":2")
            && out.stdout().contains("\"worker\":3"),
        "{}",
        out.stdout()
    );
    // 10 left in the bucket: requests are spaced to the refill rate.
    for pair in requests.windows(2) {
        assert!(pair[1].at - pair[0].at >= Duration::from_millis(700));
    }
}

#[test]
fn a_restart_step_restarts_every_dyno() {
    let (p, fake) = setup(&[("web", 2)]);
    p.write(
        "pipelines/release.yaml",
        "name: restart\nsteps:\n  - uses: restart\n",
    );
    let out = run(&p, &["deploy"]);
    out.success();
    assert_eq!(fake.changes(), [format!("DELETE /apps/{APP}/dynos")]);
    assert_eq!(fake.restarts(), 1);
    assert!(
        out.all()
            .contains(&format!("all dynos of Heroku app `{APP}` restarted")),
        "{}",
        out.all()
    );
}

// ---- The example in examples/heroku/. ----

#[test]
fn the_example_files_parse() {
    let dir = Path::new(ROOT).join("examples/heroku");
    // At the root of an app: beside its migrations and validations.
    let p = Project::new();
    for file in ["deploy.yaml", "pipelines/release.yaml"] {
        p.write(file, &std::fs::read_to_string(dir.join(file)).unwrap());
    }
    let config = cutover::config::load(&p.file("deploy.yaml")).expect("example loads");
    let env = config.environment("heroku").unwrap();
    assert!(matches!(
        env.platform,
        Some(cutover::config::deploy_file::PlatformConfig::Heroku { .. })
    ));
    cutover::config::load_pipeline(&config.pipeline_path(None), &config.dir)
        .expect("example pipeline loads");
    let procfile = std::fs::read_to_string(dir.join("Procfile")).unwrap();
    assert!(procfile.lines().any(|l| l == "release: cutover release"));
    let app: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("app.json")).unwrap()).unwrap();
    assert_eq!(app["env"]["HEROKU_API_KEY"]["required"], true);
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    assert!(readme.contains("one hour") && readme.contains("55 minutes"));
}

#[test]
fn the_example_plans_and_releases_against_the_fake_and_postgres() {
    let server = support::pg::server();
    let db = server.database();
    let fake = HerokuFake::start(APP, TOKEN, &[("web", 1), ("worker", 2)]);
    let p = Project::new();
    let example = Path::new(ROOT).join("examples/heroku");
    // The example as shipped, pointed at the fake, and its health step passing on the first
    // good answer (this test is about the release, not health): the two changes the test makes.
    let text = std::fs::read_to_string(example.join("deploy.yaml")).unwrap();
    let text = replace_once(&text, "timeout: 2m }", "timeout: 2m, healthy_for: 0s }");
    p.write_config(&replace_once(
        &text,
        "      kind: heroku\n",
        &format!("      kind: heroku\n      api_url: \"{}\"\n", fake.url),
    ));
    p.write(
        "pipelines/release.yaml",
        &std::fs::read_to_string(example.join("pipelines/release.yaml")).unwrap(),
    );
    let heroku_env = |cmd: &mut std::process::Command| {
        cmd.env("DATABASE_URL", server.url(&db))
            .env("HEROKU_APP_NAME", APP)
            .env("HEROKU_API_KEY", TOKEN)
            .env("HEALTH_URL", &p.health.url);
    };
    let mut check = p.cmd();
    heroku_env(&mut check);
    let check = Run(check.arg("check").output().unwrap());
    check.success();
    assert!(
        check.stdout().contains("ok: `heroku`"),
        "{}",
        check.stdout()
    );
    let mut plan = p.cmd();
    heroku_env(&mut plan);
    let plan = Run(plan.arg("plan").output().unwrap());
    plan.success();
    assert!(
        plan.stdout().contains("scale worker from 2 to 0"),
        "{}",
        plan.stdout()
    );
    assert!(fake.changes().is_empty());
    // What the Procfile runs in the release phase.
    let mut release = p.cmd();
    heroku_env(&mut release);
    let release = Run(release.arg("release").output().unwrap());
    release.success();
    assert_eq!(fake.changes().len(), 4, "{:?}", fake.changes());
    assert_eq!(fake.formation(), formation(&[("web", 1), ("worker", 2)]));
    assert!(!fake.maintenance());
    let applied = server.psql(&db, "SELECT count(*) FROM _sqlx_migrations");
    assert_eq!(applied.trim(), "6");
    assert_token_never_shown(&p, &release);
}

#[test]
fn an_unreachable_api_is_tried_again_then_reported() {
    let (p, fake) = setup(&[("web", 2)]);
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    p.write_config(&p.read("deploy.yaml").replace(&fake.url, &url));
    let started = std::time::Instant::now();
    let out = run(&p, &["plan"]);
    out.expect_code(2);
    assert!(
        out.stderr().contains(&format!(
            "Heroku app `{APP}`: reading the app (GET /apps/{APP}) failed: cannot connect to the Platform API (after 4 tries)"
        )),
        "{}",
        out.stderr()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(3400),
        "backs off between tries"
    );
    assert_token_never_shown(&p, &out);
}

// ---- Code releases: the Releases API ----

/// A built slug that was never released.
const NEW_SLUG: &str = "5106a7e0-0000-4000-8000-00000000abcd";

/// A Heroku environment on the fake with releases v1..v3 (v3 current) and `pipeline`.
fn code_project(pipeline: &str) -> (Project, HerokuFake) {
    let (p, fake) = setup(&[("web", 2)]);
    fake.add_releases(3);
    fake.add_slug(NEW_SLUG);
    p.write("pipelines/release.yaml", pipeline);
    (p, fake)
}

const TRAFFIC_PIPELINE: &str = "name: release\nsteps:\n  - uses: migrate\n    with: { to: latest, rollback: down }\n  - id: go-live\n    uses: traffic\n";

fn release_posts(fake: &HerokuFake) -> Vec<String> {
    fake.changes()
        .into_iter()
        .filter(|c| c.starts_with("POST "))
        .collect()
}

#[test]
fn a_traffic_step_releases_the_slug_after_the_migrations() {
    let (p, fake) = code_project(TRAFFIC_PIPELINE);
    let plan = run(&p, &["plan", "--code-version", NEW_SLUG]);
    plan.success();
    assert!(
        plan.stdout().contains(&format!(
            "send the traffic to {NEW_SLUG}: 100% (now: v3 100%)"
        )),
        "{}",
        plan.stdout()
    );
    let out = run(&p, &["deploy", "--code-version", NEW_SLUG]);
    out.success();
    assert_eq!(
        release_posts(&fake),
        lines(&[&format!(
            "POST /apps/{APP}/releases {{\"slug\":\"{NEW_SLUG}\"}}"
        )])
    );
    let current = fake.current_release().unwrap();
    assert_eq!(
        (
            current.version,
            current.slug.as_deref(),
            current.status.as_str()
        ),
        (4, Some(NEW_SLUG), "succeeded")
    );
    // The new release was read until its release phase was over.
    let reads = fake
        .lines()
        .iter()
        .filter(|l| *l == &format!("GET /apps/{APP}/releases/{}", current.id))
        .count();
    assert!(reads >= 2, "{:?}", fake.lines());
    // Every list of releases asked for the newest first.
    for r in fake
        .requests()
        .iter()
        .filter(|r| r.path == format!("/apps/{APP}/releases") && r.method == "GET")
    {
        assert_eq!(r.header("range"), Some("version ..; max=10, order=desc"));
    }
    assert!(out.all().contains("live as release v4"), "{}", out.all());
    assert!(p.db_snapshot().contains_key("table users"));
    assert_token_never_shown(&p, &out);
}

#[test]
fn a_failure_after_the_traffic_step_rolls_back_to_a_new_release_of_the_earlier_slug() {
    let (p, fake) = code_project(&format!(
        "{TRAFFIC_PIPELINE}  - id: boom\n    uses: command\n    with: {{ run: \"exit 3\" }}\n"
    ));
    let out = run(&p, &["deploy", "--code-version", NEW_SLUG]);
    out.expect_code(1);
    let v3 = support::heroku_fake::release_id(3);
    assert_eq!(
        release_posts(&fake),
        lines(&[
            &format!("POST /apps/{APP}/releases {{\"slug\":\"{NEW_SLUG}\"}}"),
            // The undo: Heroku's rollback, a new release of v3's slug.
            &format!("POST /apps/{APP}/releases {{\"release\":\"{v3}\"}}"),
        ])
    );
    let current = fake.current_release().unwrap();
    let v3_slug = support::heroku_fake::slug_id(3);
    assert_eq!(
        (current.version, current.slug.as_deref()),
        (5, Some(v3_slug.as_str()))
    );
    assert_eq!(current.description, "Rollback to v3");
    let said = format!(
        "rolled back to v3: new release v5 (id {}) runs its slug {v3_slug} again",
        current.id
    );
    let err = out.stderr();
    assert!(err.contains(&said), "{err}");
    assert!(err.contains("state: as before the run"), "{err}");
    // The journal keeps what the undo did.
    let journal = &p.journals()[0];
    let undone = journal
        .iter()
        .find(|r| r["record"] == "compensation_finished" && r["id"] == "go-live")
        .expect("the traffic step was undone");
    assert!(undone["note"].as_str().unwrap().contains(&said), "{undone}");
    let started = journal
        .iter()
        .find(|r| r["record"] == "step_started" && r["id"] == "go-live")
        .unwrap();
    assert_eq!(
        started["compensation"]["prior"],
        serde_json::json!({"release": v3, "version": 3, "slug": v3_slug})
    );
    assert_eq!(journal.last().unwrap()["status"], "rolled_back");
    assert!(!p.db_snapshot().contains_key("table users"));
    assert_token_never_shown(&p, &out);
}

#[test]
fn a_failed_release_phase_fails_the_traffic_step_and_the_earlier_release_stays() {
    let (p, fake) = code_project(
        "name: release\nsteps:\n  - uses: migrate\n    with: { to: latest, rollback: down }\n  - id: go-live\n    uses: traffic\n    with: { version: v2 }\n",
    );
    fake.fail_releases(1);
    // One release a page: the newest, v4, is not current once it failed.
    fake.set_release_page_size(1);
    let out = run(&p, &["deploy"]);
    out.expect_code(1);
    assert_eq!(
        release_posts(&fake),
        lines(&[&format!(
            "POST /apps/{APP}/releases {{\"release\":\"{}\"}}",
            support::heroku_fake::release_id(2)
        )])
    );
    let err = out.stderr();
    assert!(
        err.contains("the release phase of v4 failed, so its code did not go live"),
        "{err}"
    );
    assert!(
        err.contains("the current release v3 (slug 5106a7e0-0000-4000-8000-000000000003) runs the code of v3, as before"),
        "{err}"
    );
    assert_eq!(fake.current_release().unwrap().version, 3);
    assert_eq!(fake.releases().last().unwrap().status, "failed");
    // The current release was found on the second page.
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.header("range") == Some("version ]4..; max=10, order=desc")),
        "{:?}",
        fake.lines()
    );
    assert!(!p.db_snapshot().contains_key("table users"));

    // Going back to v2 when it works: a rollback, a new release of v2's slug.
    run(&p, &["deploy"]).success();
    let current = fake.current_release().unwrap();
    assert_eq!(
        (current.version, current.slug),
        (5, Some(support::heroku_fake::slug_id(2)))
    );
}

#[test]
fn the_plan_refuses_a_release_step_and_in_the_release_phase_a_traffic_step() {
    let (p, fake) = code_project(
        "name: release\nsteps:\n  - uses: migrate\n    with: { to: latest, rollback: down }\n  - id: stage\n    uses: release\n",
    );
    let out = run(&p, &["plan", "--code-version", NEW_SLUG]);
    out.expect_code(2);
    assert!(
        out.stderr().contains("Heroku builds and releases code in one: a release gets the traffic as soon as it is made, there is no release without traffic"),
        "{}",
        out.stderr()
    );

    p.write("pipelines/release.yaml", TRAFFIC_PIPELINE);
    let out = Run(p
        .cmd()
        .env("HEROKU_API_KEY", TOKEN)
        .env("DYNO", "release.7")
        .env("CUTOVER_CODE_VERSION", NEW_SLUG)
        .arg("release")
        .output()
        .unwrap());
    out.expect_code(2);
    assert!(
        out.stderr().contains("cutover runs as the release phase of Heroku app `mealprep-prod` (DYNO=release.7): Heroku puts this release live when the phase succeeds, and a failed phase never goes live, so no `traffic` step is needed"),
        "{}",
        out.stderr()
    );
    assert!(fake.changes().is_empty(), "{:?}", fake.changes());
    assert!(!p.db_snapshot().contains_key("table users"));
}
