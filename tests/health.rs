//! The `health` step passes only on sustained health: after traffic comes back the app must
//! give `successes` good answers in a row over at least `healthy_for`, so an app that answers
//! once and then fails rolls the release back.

mod support;

use support::{HealthServer, Project, State, replace_once};

const NEW: &str = "20250101000000_add_x";

/// A deployed SQLite project with one pending migration whose health step polls `server`
/// with `with` added to its settings (preflight polls the project's healthy server); its
/// state before the run.
fn project(server: &HealthServer, with: &str) -> (Project, State) {
    let p = Project::new();
    p.deployed_with_data();
    p.add_migration(
        NEW,
        "CREATE TABLE x_notes (id INTEGER PRIMARY KEY, note TEXT NOT NULL);\n",
        Some("DROP TABLE x_notes;\n"),
    );
    p.write_pipeline(&replace_once(
        &p.pipeline(),
        "with: { expect: 200, interval: 1s, timeout: 2m }",
        &format!(
            "with: {{ url: \"{}\", expect: 200, interval: 20ms, {with} }}",
            server.url
        ),
    ));
    let before = p.state();
    (p, before)
}

fn last_status(p: &Project) -> String {
    let journals = p.journals();
    let last = journals
        .last()
        .expect("a journal")
        .last()
        .expect("a record");
    last["status"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn an_app_that_answers_once_then_fails_rolls_the_release_back() {
    // Up for one answer after traffic comes back, then 503 for good.
    let server = HealthServer::scripted(|n| if n == 0 { 200 } else { 503 });
    let (p, before) = project(&server, "timeout: 1s, healthy_for: 300ms, successes: 3");
    let run = p.run(&["deploy"]);
    run.expect_code(1);
    let out = run.all();
    assert!(
        out.contains("not healthy for long enough within 1s"),
        "{out}"
    );
    assert!(
        out.contains("at best 1 good answer in a row") && out.contains("answered 503"),
        "{out}"
    );
    // The streak that broke is reported as it happens.
    assert!(
        out.contains("healthy, then not after 1 good answer in a row"),
        "{out}"
    );
    assert!(server.hits() >= 2);
    assert_eq!(p.state(), before, "rolled back to exactly as before");
    assert_eq!(last_status(&p), "rolled_back");
}

#[test]
fn a_steady_app_passes_and_the_result_reports_the_streak() {
    let server = HealthServer::start(200);
    let (p, _) = project(&server, "timeout: 10s, healthy_for: 200ms, successes: 4");
    let run = p.run(&["deploy"]);
    run.success();
    let out = run.all();
    let line = out
        .lines()
        .find(|l| l.contains("healthy: "))
        .unwrap_or_else(|| panic!("no health result in:\n{out}"));
    // At least 4 answers over at least 0.2 s, as observed.
    let n: u32 = line
        .split("healthy: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(n >= 4, "{line}");
    assert!(line.contains("good answers in a row over"), "{line}");
    let secs: f64 = line
        .split(" over ")
        .nth(1)
        .and_then(|r| r.split('s').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(secs >= 0.2, "{line}");
    assert!(server.hits() >= 4);
    assert_eq!(last_status(&p), "succeeded");
    assert!(p.state().db.contains_key("table x_notes"));
}

#[test]
fn a_bad_answer_starts_the_streak_over_and_a_later_steady_streak_passes() {
    // Good, good, bad, then steady.
    let server = HealthServer::scripted(|n| if n == 2 { 503 } else { 200 });
    let (p, _) = project(&server, "timeout: 10s, healthy_for: 0s, successes: 3");
    let run = p.run(&["deploy"]);
    run.success();
    let out = run.all();
    assert!(
        out.contains("healthy, then not after 2 good answers in a row")
            && out.contains("answered 503, expected 200; starting over"),
        "{out}"
    );
    // The streak counted from the answer after the bad one.
    assert!(out.contains("healthy: 3 good answers in a row"), "{out}");
    assert_eq!(server.hits(), 6);
}

#[test]
fn the_plan_shows_the_requirement() {
    let p = Project::new();
    // The shipped pipeline and environment, with the shipped defaults.
    p.write_config(&replace_once(&p.default_config(), ", healthy_for: 0s", ""));
    let plan = p.run(&["plan"]);
    plan.success();
    let out = plan.stdout();
    assert!(
        out.contains("healthy for 10s, at least 3 good answers in a row (up to 2m)"),
        "{out}"
    );
    // Set per step.
    p.write_pipeline(&replace_once(
        &p.pipeline(),
        "with: { expect: 200, interval: 1s, timeout: 2m }",
        "with: { expect: 200, timeout: 2m, healthy_for: 30s, successes: 5 }",
    ));
    let out = p.run(&["plan"]).stdout();
    assert!(
        out.contains("healthy for 30s, at least 5 good answers in a row"),
        "{out}"
    );
}

#[test]
fn a_requirement_that_cannot_be_met_within_the_timeout_is_refused() {
    let p = Project::new();
    p.write_pipeline(&replace_once(
        &p.pipeline(),
        "with: { expect: 200, interval: 1s, timeout: 2m }",
        "with: { expect: 200, timeout: 5s, healthy_for: 10s }",
    ));
    let before = p.state();
    let run = p.run(&["deploy"]);
    run.expect_code(2);
    assert!(
        run.stderr()
            .contains("`healthy_for` (10s) must be shorter than `timeout` (5s)"),
        "{}",
        run.stderr()
    );
    assert_eq!(p.state(), before);
}
