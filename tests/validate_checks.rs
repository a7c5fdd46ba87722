//! Validation checks: which results are counts (on SQLite, PostgreSQL and MariaDB, with the
//! integer types their drivers return for `COUNT(*)`), the checks refused when the plan is
//! made, and `cutover validate`, read-only against the live database.

mod support;

use serde_json::Value;
use support::{Project, Run};

/// The database a project's `local` environment uses, and how to run SQL on it directly.
enum Db {
    Sqlite,
    Postgres(String),
    Mysql(String),
}

impl Db {
    fn exec(&self, p: &Project, sql: &str) {
        match self {
            Self::Sqlite => support::exec_sql(&p.file("state/app.db"), sql),
            Self::Postgres(db) => {
                support::pg::server().psql(db, sql);
            }
            Self::Mysql(db) => {
                support::mysql::server().sql(db, sql);
            }
        }
    }

    /// The ids in `items`, in order: what a check that tries to write would change.
    fn items(&self, p: &Project) -> String {
        match self {
            Self::Sqlite => p.db_snapshot()["table items"].join("\n"),
            Self::Postgres(db) => {
                support::pg::server().psql(db, "SELECT id FROM items ORDER BY id")
            }
            Self::Mysql(db) => support::mysql::server().sql(db, "SELECT id FROM items ORDER BY id"),
        }
    }
}

/// A project on each dialect with tables `orphans` (empty) and `items` (ids 1 and 2), and
/// a pipeline whose only step validates `checks/`.
fn projects() -> Vec<(Project, Db)> {
    let sqlite = Project::new();
    std::fs::create_dir_all(sqlite.file("state")).unwrap();
    std::fs::File::create(sqlite.file("state/app.db")).unwrap();
    let (pg, pg_db) = support::pg::project();
    let (my, my_db) = support::mysql::project();
    let all = vec![
        (sqlite, Db::Sqlite),
        (pg, Db::Postgres(pg_db)),
        (my, Db::Mysql(my_db)),
    ];
    for (p, db) in &all {
        db.exec(
            p,
            "CREATE TABLE orphans (id INTEGER PRIMARY KEY); CREATE TABLE items (id INTEGER PRIMARY KEY); INSERT INTO items (id) VALUES (1), (2);",
        );
        p.write(
            "pipelines/deploy.yaml",
            "name: checks\nsteps:\n  - uses: validate\n    with: { queries: checks/ }\n",
        );
    }
    all
}

fn validate_json(p: &Project, code: i32) -> Value {
    let run = p.run(&["validate", "--json"]);
    run.expect_code(code);
    serde_json::from_str(&run.stdout()).unwrap_or_else(|e| panic!("{e}: {}", run.stdout()))
}

fn check<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {doc}"))
}

#[test]
fn a_count_named_as_a_count_counts_its_value_on_every_dialect() {
    for (p, db) in projects() {
        let kind = match db {
            Db::Sqlite => "sqlite",
            Db::Postgres(_) => "postgres",
            Db::Mysql(_) => "mysql",
        };
        // The ways seed teams write a count: none finds an issue.
        for (file, sql) in [
            (
                "issue_count_camel",
                "SELECT COUNT(*) AS IssueCount FROM orphans",
            ),
            (
                "issue_count_snake",
                "SELECT COUNT(*) AS issue_count FROM orphans",
            ),
            ("issues", "SELECT COUNT(*) AS issues FROM orphans"),
            (
                "orphan_count",
                "SELECT COUNT(*) AS orphan_count FROM orphans",
            ),
            ("cnt", "SELECT COUNT(*) AS cnt FROM orphans;"),
            ("unaliased", "-- no alias\nSELECT COUNT(*) FROM orphans"),
        ] {
            p.write(&format!("checks/{file}.sql"), sql);
        }
        let doc = validate_json(&p, 0);
        assert_eq!(doc["passed"], true, "{kind}: {doc}");
        for name in [
            "issue_count_camel",
            "issue_count_snake",
            "issues",
            "orphan_count",
            "cnt",
            "unaliased",
        ] {
            let c = check(&doc, name);
            assert_eq!(c["issues"], 0, "{kind} {name}: {c}");
            assert_eq!(c["rows"], serde_json::json!([]), "{kind} {name}: {c}");
        }

        // A count of 2 is 2 issues; a column that is not named as a count is a row.
        p.write("checks/total.sql", "SELECT COUNT(*) AS total FROM items");
        p.write(
            "checks/not_a_count.sql",
            "SELECT COUNT(*) AS items_seen FROM items",
        );
        let run = p.run(&["validate"]);
        run.expect_code(1);
        let out = run.stdout();
        assert!(
            out.contains("validate/total: 2 issue(s), 0 allowed — FAIL"),
            "{kind}: {out}"
        );
        assert!(
            out.contains(
                "validate/not_a_count: 1 issue(s), 0 allowed — FAIL\n    items_seen\n    2"
            ),
            "{kind}: {out}"
        );
        assert!(
            out.contains("validate/cnt: 0 issue(s), 0 allowed — ok"),
            "{kind}: {out}"
        );
        assert!(out.contains("==> 2 of 8 check(s) failed"), "{kind}: {out}");
        let doc = validate_json(&p, 1);
        assert_eq!(check(&doc, "total")["issues"], 2, "{kind}: {doc}");
        assert_eq!(check(&doc, "total")["passed"], false, "{kind}: {doc}");
    }
}

#[test]
fn a_deploy_passes_a_check_written_as_issue_count() {
    let p = Project::new();
    let pipeline = support::replace_once(
        &p.read("pipelines/deploy.yaml"),
        "with: { queries: validations/ }",
        "with: { queries: validations/, checks: [{ name: no-blank-emails, sql: \"SELECT COUNT(*) AS IssueCount FROM users WHERE email = ''\" }] }",
    );
    p.write("pipelines/deploy.yaml", &pipeline);
    let run = p.run(&["deploy"]);
    run.success();
    assert!(
        run.stderr().contains("no-blank-emails: 0 issue(s) [ok]"),
        "{}",
        run.stderr()
    );
}

#[test]
fn validate_is_read_only_on_every_dialect() {
    for (p, db) in projects() {
        let before = db.items(&p);
        assert!(!before.is_empty());
        p.write("checks/deletes.sql", "DELETE FROM items");
        p.write("checks/fine.sql", "SELECT id FROM orphans");
        if matches!(db, Db::Postgres(_)) {
            p.write(
                "checks/inserts.sql",
                "WITH added AS (INSERT INTO items (id) VALUES (3) RETURNING id) SELECT COUNT(*) AS issues FROM added",
            );
        }
        let run = p.run(&["validate"]);
        run.expect_code(1);
        let out = run.stdout();
        assert!(out.contains("validate/deletes: ERROR"), "{out}");
        assert!(
            out.contains("validate/fine: 0 issue(s), 0 allowed — ok"),
            "{out}"
        );
        let refused = match db {
            Db::Sqlite => "readonly database",
            Db::Postgres(_) => "read-only transaction",
            Db::Mysql(_) => "READ ONLY transaction",
        };
        assert!(out.contains(refused), "{out}");
        if matches!(db, Db::Postgres(_)) {
            assert!(out.contains("validate/inserts: ERROR"), "{out}");
        }
        assert_eq!(db.items(&p), before, "{out}");
        // No lock, no journal, no backup.
        assert!(!p.file(".cutover").exists(), "{out}");
        assert!(!p.file("state/backups").exists(), "{out}");
    }
}

#[test]
fn validate_on_a_missing_sqlite_file_creates_nothing() {
    let p = Project::new();
    p.write(
        "pipelines/deploy.yaml",
        "name: checks\nsteps:\n  - uses: validate\n    with: { queries: validations/ }\n",
    );
    let run = p.run(&["validate"]);
    run.expect_code(1);
    assert!(!p.file("state/app.db").exists(), "{}", run.all());
}

/// Runs `cutover ARGS` and checks it stopped as bad input, touching nothing.
fn refused(p: &Project, args: &[&str]) -> Run {
    let before = p.db_snapshot();
    let run = p.run(args);
    run.expect_code(2);
    assert_eq!(p.db_snapshot(), before);
    assert!(p.calls().is_empty(), "{:?}", p.calls());
    assert_eq!(p.platform(), "maintenance=false\njobs=3\n");
    assert!(p.journals().is_empty());
    run
}

#[test]
fn a_check_that_is_not_one_statement_is_refused_at_plan_time() {
    for (file, text, line, why) in [
        ("empty.sql", "-- nothing yet\n\n", 1, "the check is empty"),
        (
            "two.sql",
            "SELECT COUNT(*) AS issues FROM users;\n\nSELECT id FROM users;\n",
            3,
            "holds 2 statements",
        ),
        (
            "broken.sql",
            "SELECT COUNT(*) AS issues\nFROM users\nWHERE email = = 'x'\n",
            3,
            "cannot be parsed as sqlite SQL",
        ),
    ] {
        let p = Project::new();
        p.write(&format!("validations/{file}"), text);
        for args in [&["plan"][..], &["deploy"], &["validate"]] {
            let run = refused(&p, args);
            let err = run.stderr();
            assert!(
                err.contains(&format!("validations/{file}:{line}: {why}")),
                "{args:?} {file}: {err}"
            );
            // The step's place in the pipeline too.
            assert!(
                err.contains("step `validate` (") && err.contains("pipelines/deploy.yaml:18)"),
                "{args:?} {file}: {err}"
            );
        }
    }
}

#[test]
fn an_inline_check_that_does_not_parse_is_refused_at_plan_time() {
    let p = Project::new();
    let pipeline = support::replace_once(
        &p.read("pipelines/deploy.yaml"),
        "with: { queries: validations/ }",
        "with: { checks: [{ name: typo, sql: \"SELEC COUNT(*) AS issues FROM users\" }] }",
    );
    p.write("pipelines/deploy.yaml", &pipeline);
    let run = refused(&p, &["deploy"]);
    assert!(
        run.stderr()
            .contains("check `typo` (line 1 of its `sql:`): cannot be parsed as sqlite SQL"),
        "{}",
        run.stderr()
    );
}

#[test]
fn when_naming_an_unknown_environment_is_bad_input_for_every_command() {
    let p = Project::new();
    let pipeline = support::replace_once(
        &p.read("pipelines/deploy.yaml"),
        "  - uses: validate\n",
        "  - uses: validate\n    when: { environments: [local, staging] }\n",
    );
    p.write("pipelines/deploy.yaml", &pipeline);
    for args in [&["plan"][..], &["deploy"], &["validate"], &["check"]] {
        let run = refused(&p, args);
        assert!(
            run.stderr().contains("pipelines/deploy.yaml:19:")
                && run.stderr().contains(
                    "step `validate`: `when: { environments: ... }` names environment `staging`"
                ),
            "{args:?}: {}",
            run.stderr()
        );
    }
    assert!(!p.file("state/app.db").exists());
}
