//! Drift: a change made by hand between two releases is found before the next one builds
//! on it, named object by object, and refused until it is accepted (real SQLite files).

mod support;

use support::{Project, exec_sql};

#[test]
fn a_hand_made_change_is_named_refused_and_accepted_with_a_reason() {
    let p = Project::new();
    p.run(&["deploy"]).success();
    let clean = p.run(&["migrate", "diff"]);
    clean.success();
    assert!(clean.stdout().contains("no drift"), "{}", clean.stdout());

    // A hot-fix by hand: an index added, a column dropped.
    exec_sql(
        &p.file("state/app.db"),
        "CREATE INDEX idx_hot ON users (display_name); ALTER TABLE recipes DROP COLUMN instructions;",
    );
    p.add_migration(
        "20250101000000_add_flag",
        "ALTER TABLE users ADD COLUMN flag INTEGER;",
        Some("ALTER TABLE users DROP COLUMN flag;"),
    );
    let before = p.state();
    let refused = p.run(&["deploy"]);
    refused.expect_code(2);
    for named in [
        "the schema has drifted from the one run",
        "index idx_hot: in the database, not in the recorded schema",
        "table recipes: its definition differs from the recorded one",
        "cutover migrate accept-drift -e local",
    ] {
        assert!(
            refused.stderr().contains(named),
            "{named}:\n{}",
            refused.stderr()
        );
    }
    assert_eq!(p.state(), before, "nothing touched");
    p.run(&["plan"]).expect_code(2);
    p.run(&["check"]).expect_code(2);

    let diff = p.run(&["migrate", "diff", "--output", "json"]);
    diff.success();
    let value: serde_json::Value = serde_json::from_str(&diff.stdout()).unwrap();
    let differences = &value["result"]["differences"];
    assert_eq!(differences.as_array().unwrap().len(), 2, "{differences}");
    assert!(
        differences
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["kind"] == "added" && d["object"] == "index idx_hot"),
        "{differences}"
    );

    // Accepted, with a reason: journaled, and the deploy goes on.
    p.run(&["migrate", "accept-drift"]).expect_code(2);
    let accepted = p.run(&["migrate", "accept-drift", "--reason", "hot-fix OPS-7"]);
    accepted.success();
    assert!(
        accepted.stdout().contains("2 difference(s) accepted"),
        "{}",
        accepted.stdout()
    );
    assert!(
        p.journals()
            .iter()
            .flatten()
            .any(|r| r["fact"] == "schema_recorded" && r["reason"] == "hot-fix OPS-7")
    );
    p.run(&["deploy"]).success();
    assert!(p.run(&["migrate", "diff"]).stdout().contains("no drift"));

    // `drift: warn` shows it and goes on; `drift: off` does not look.
    exec_sql(&p.file("state/app.db"), "DROP INDEX idx_hot;");
    p.write_config(
        &p.read("deploy.yaml")
            .replace("\n  local:\n", "\n  local:\n    drift: warn\n"),
    );
    let warned = p.run(&["deploy"]);
    warned.success();
    assert!(
        warned
            .all()
            .contains("index idx_hot: in the recorded schema, gone from the database"),
        "{}",
        warned.all()
    );
}
