//! `cutover migrate lint` and lint findings in plans: every rule through the real binary
//! (no server needed to lint files), then end to end against a real PostgreSQL.

mod support;

use serde_json::Value;
use support::pg::{project, server};
use support::{Project, replace_once};

const SQLITE_DB: &str = "database: { kind: sqlite, url: \"sqlite://state/app.db\" }";

/// A project on PostgreSQL with no migrations. `migrate lint` reads files only, so the
/// server need not exist: the URL points at a closed port.
fn offline_project(extra: &str) -> Project {
    let p = Project::new();
    for entry in std::fs::read_dir(p.file("migrations")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    p.write_config(&replace_once(
        &p.default_config(),
        SQLITE_DB,
        &format!(
            "database: {{ kind: postgres, url: \"postgres://app@127.0.0.1:{port}/app\"{extra} }}"
        ),
    ));
    p
}

/// The `result` object of a `--output json` run.
fn result(stdout: &str) -> Value {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.contains("\"event\":\"result\""))
        .unwrap_or_else(|| panic!("no result in:\n{stdout}"));
    serde_json::from_str::<Value>(line).unwrap()["result"].clone()
}

/// Lints one migration with this up SQL; returns the rule ids found.
fn rules_for(sql: &str) -> Vec<String> {
    let p = offline_project("");
    p.write("migrations/20250101000000_change.up.sql", sql);
    let run = p.run(&["migrate", "lint", "--output", "json"]);
    run.success();
    let r = result(&run.stdout());
    assert_eq!(r["notes"], serde_json::json!([]), "{sql}: {r}");
    r["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap().to_owned())
        .collect()
}

#[track_caller]
fn check_rule(rule: &str, triggers: &str, safe: &str) {
    assert_eq!(rules_for(triggers), vec![rule.to_owned()], "{triggers}");
    assert_eq!(rules_for(safe), Vec::<String>::new(), "{safe}");
}

#[test]
fn create_index_without_concurrently() {
    check_rule(
        "create-index-not-concurrently",
        "CREATE INDEX idx_recipes_title ON recipes (title);\n",
        "-- cutover:no-transaction\nCREATE INDEX CONCURRENTLY idx_recipes_title ON recipes (title);\n",
    );
    // An index on a table created by the same migration is fine.
    assert_eq!(
        rules_for(
            "CREATE TABLE notes (id bigint PRIMARY KEY, body text);\nCREATE INDEX idx_notes_body ON notes (body);\n"
        ),
        Vec::<String>::new()
    );
}

#[test]
fn add_column_not_null_without_default() {
    check_rule(
        "add-column-not-null-without-default",
        "ALTER TABLE recipes ADD COLUMN rating integer NOT NULL;\n",
        "ALTER TABLE recipes ADD COLUMN rating integer NOT NULL DEFAULT 0;\n",
    );
}

#[test]
fn add_constraint_without_not_valid() {
    check_rule(
        "add-constraint-without-not-valid",
        "ALTER TABLE recipes ADD CONSTRAINT recipes_user FOREIGN KEY (user_id) REFERENCES users (id);\n",
        "ALTER TABLE recipes ADD CONSTRAINT recipes_user FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;\n",
    );
    check_rule(
        "add-constraint-without-not-valid",
        "ALTER TABLE recipes ADD CONSTRAINT servings_positive CHECK (servings > 0);\n",
        "ALTER TABLE recipes ADD CONSTRAINT servings_positive CHECK (servings > 0) NOT VALID;\n",
    );
}

#[test]
fn alter_column_type() {
    check_rule(
        "alter-column-type",
        "ALTER TABLE recipes ALTER COLUMN servings TYPE bigint;\n",
        "ALTER TABLE recipes ADD COLUMN servings_big bigint;\n",
    );
}

#[test]
fn rename_column() {
    check_rule(
        "rename-column",
        "ALTER TABLE recipes RENAME COLUMN title TO name;\n",
        "ALTER TABLE recipes ADD COLUMN name text;\n",
    );
}

#[test]
fn rename_table() {
    check_rule(
        "rename-table",
        "ALTER TABLE recipes RENAME TO dishes;\n",
        "CREATE VIEW dishes AS SELECT * FROM recipes;\n",
    );
}

#[test]
fn drop_column() {
    check_rule(
        "drop-column",
        "ALTER TABLE recipes DROP COLUMN cuisine;\n",
        "ALTER TABLE recipes ALTER COLUMN cuisine DROP NOT NULL;\n",
    );
}

#[test]
fn set_not_null_on_an_existing_column() {
    check_rule(
        "set-not-null",
        "ALTER TABLE recipes ALTER COLUMN title SET NOT NULL;\n",
        "ALTER TABLE recipes ADD CONSTRAINT title_not_null CHECK (title IS NOT NULL) NOT VALID;\n",
    );
}

#[test]
fn vacuum_full() {
    check_rule("vacuum-full", "VACUUM FULL recipes;\n", "VACUUM recipes;\n");
    // Option-list form, which the parser does not read: found by its leading keywords.
    check_rule(
        "vacuum-full",
        "VACUUM (FULL, ANALYZE) recipes;\n",
        "VACUUM (ANALYZE) recipes;\n",
    );
}

#[test]
fn cluster() {
    check_rule(
        "cluster",
        "CLUSTER recipes USING idx_recipes_user_id;\n",
        "CREATE TABLE cluster (id bigint);\nINSERT INTO cluster VALUES (1);\n",
    );
}

/// The rules that came from squawk's set, each through the binary.
#[test]
fn squawk_rules() {
    check_rule(
        "add-column-volatile-default",
        "ALTER TABLE recipes ADD COLUMN token uuid DEFAULT gen_random_uuid();\n",
        "ALTER TABLE recipes ADD COLUMN added_at timestamptz DEFAULT now();\n",
    );
    check_rule(
        "add-constraint-without-not-valid",
        "ALTER TABLE recipes ADD COLUMN author_id bigint REFERENCES users (id);\n",
        "ALTER TABLE recipes ADD COLUMN author_id bigint;\n",
    );
    check_rule(
        "unique-constraint-without-index",
        "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email);\n",
        "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE USING INDEX users_email_idx;\n",
    );
    check_rule(
        "drop-table",
        "DROP TABLE recipe_tags;\n",
        "-- cutover:allow drop-table -- unused since release 41\nDROP TABLE recipe_tags;\n",
    );
    check_rule(
        "drop-database",
        "DROP DATABASE app;\n",
        "DROP VIEW IF EXISTS recipe_titles;\n",
    );
    check_rule(
        "prefer-identity",
        "CREATE TABLE notes (id bigserial PRIMARY KEY);\n",
        "CREATE TABLE notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY);\n",
    );
    check_rule(
        "prefer-bigint",
        "CREATE TABLE notes (id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY);\n",
        "CREATE TABLE notes (id integer PRIMARY KEY);\n",
    );
    check_rule(
        "char-column",
        "CREATE TABLE countries (code char(2) PRIMARY KEY);\n",
        "CREATE TABLE countries (code text PRIMARY KEY);\n",
    );
    check_rule(
        "concurrently-in-transaction",
        "CREATE INDEX CONCURRENTLY idx_recipes_title ON recipes (title);\n",
        "-- cutover:no-transaction\nCREATE INDEX CONCURRENTLY idx_recipes_title ON recipes (title);\n",
    );
    check_rule(
        "transaction-nesting",
        "BEGIN;\nUPDATE recipes SET servings = 1 WHERE servings IS NULL;\n",
        "UPDATE recipes SET servings = 1 WHERE servings IS NULL;\n",
    );
    check_rule(
        "lock-timeout-off",
        "SET lock_timeout = 0;\nALTER TABLE recipes ADD COLUMN note text;\n",
        "SET lock_timeout = '30s';\nALTER TABLE recipes ADD COLUMN note text;\n",
    );
}

#[test]
fn rules_prints_the_documented_table_without_a_config() {
    let dir = tempfile::tempdir().unwrap();
    let run = support::command_in(dir.path())
        .args(["migrate", "lint", "--rules"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    let table = String::from_utf8(run.stdout).unwrap();
    assert!(
        table.starts_with("| Rule | Databases | Why | Fix |\n"),
        "{table}"
    );
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/migrations.md"))
        .unwrap();
    assert!(
        doc.contains(&table),
        "docs/migrations.md lacks the table:\n{table}"
    );
    assert!(
        table.contains("| `mysql-add-unique-index` | MySQL/MariaDB |"),
        "{table}"
    );
}

#[test]
fn lint_off_lints_nothing() {
    let p = offline_project(", lint: off");
    p.write(
        "migrations/20250101000000_change.up.sql",
        "DROP TABLE recipes;\n",
    );
    let run = p.run(&["migrate", "lint", "--output", "json"]);
    run.success();
    let r = result(&run.stdout());
    assert_eq!(r["level"], "off", "{r}");
    assert_eq!(r["findings"], serde_json::json!([]), "{r}");
    let run = p.run(&["migrate", "lint"]);
    run.success();
    assert!(
        run.stdout().contains("`lint: off`: nothing linted"),
        "{}",
        run.stdout()
    );
}

#[test]
fn findings_have_file_line_why_and_safe_pattern() {
    let p = offline_project("");
    p.write(
        "migrations/20250101000000_change.up.sql",
        "-- Faster lookups.\n\nCREATE INDEX idx_recipes_title\n    ON recipes (title);\n",
    );
    let run = p.run(&["migrate", "lint"]);
    run.success();
    let out = run.stdout();
    assert!(
        out.contains("migrations/20250101000000_change.up.sql:3: [create-index-not-concurrently]"),
        "{out}"
    );
    assert!(out.contains("why:") && out.contains("safe: CREATE INDEX CONCURRENTLY"));
    let json = result(&p.run(&["migrate", "lint", "--output", "json"]).stdout());
    let f = &json["findings"][0];
    assert_eq!(f["line"], 3);
    assert_eq!(f["file"], "migrations/20250101000000_change.up.sql");
    assert!(f["why"].as_str().unwrap().contains("SHARE lock"));
    assert!(f["safe"].as_str().unwrap().contains("CONCURRENTLY"));
}

#[test]
fn statements_the_parser_cannot_read_are_notes() {
    let p = offline_project("");
    p.write(
        "migrations/20250101000000_change.up.sql",
        "DO $$ BEGIN RAISE NOTICE 'a; b'; END $$;\nALTER TABLE recipes DROP COLUMN cuisine;\n",
    );
    let run = p.run(&["migrate", "lint", "--output", "json"]);
    run.success();
    let r = result(&run.stdout());
    assert_eq!(r["findings"][0]["rule"], "drop-column");
    assert_eq!(r["findings"][0]["line"], 2);
    assert_eq!(r["notes"][0]["line"], 1);
    assert!(
        r["notes"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not linted"),
        "{r}"
    );
}

#[test]
fn an_allow_comment_covers_its_statement_only() {
    let p = offline_project(", lint: error");
    p.write(
        "migrations/20250101000000_change.up.sql",
        "-- cutover:allow drop-column -- unused since release 41\nALTER TABLE recipes DROP COLUMN cuisine;\nALTER TABLE users DROP COLUMN nickname;\n",
    );
    let run = p.run(&["migrate", "lint", "--output", "json"]);
    run.expect_code(2);
    let r = result(&run.stdout());
    let lines = |key: &str| -> Vec<u64> {
        r[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["line"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(lines("allowed"), vec![2], "{r}");
    assert_eq!(lines("findings"), vec![3], "{r}");
    assert_eq!(r["allowed"][0]["rule"], "drop-column");
    // Allowing the second statement too clears `lint: error`; the listing still shows both.
    p.write(
        "migrations/20250101000000_change.up.sql",
        "-- cutover:allow drop-column\nALTER TABLE recipes DROP COLUMN cuisine;\n/* cutover:allow drop-column, rename-column */\nALTER TABLE users DROP COLUMN nickname;\n",
    );
    let run = p.run(&["migrate", "lint"]);
    run.success();
    assert!(
        run.stdout()
            .contains("migrations/20250101000000_change.up.sql:4: allowed [drop-column]"),
        "{}",
        run.stdout()
    );
    assert!(
        run.stdout().contains("0 finding(s), 2 allowed"),
        "{}",
        run.stdout()
    );
    // A rule id with a typo allows nothing and says so.
    p.write(
        "migrations/20250101000000_change.up.sql",
        "-- cutover:allow drop-colum\nALTER TABLE recipes DROP COLUMN cuisine;\n",
    );
    let run = p.run(&["migrate", "lint", "--output", "json"]);
    run.expect_code(2);
    let r = result(&run.stdout());
    assert_eq!(r["findings"][0]["rule"], "drop-column");
    assert!(
        r["notes"][0]["message"]
            .as_str()
            .unwrap()
            .contains("`cutover:allow drop-colum` names no lint rule"),
        "{r}"
    );
}

#[test]
fn lint_error_makes_migrate_lint_exit_2_only_with_findings() {
    let p = offline_project(", lint: error");
    p.write(
        "migrations/20250101000000_change.up.sql",
        "ALTER TABLE recipes ALTER COLUMN servings TYPE bigint;\n",
    );
    let run = p.run(&["migrate", "lint"]);
    run.expect_code(2);
    assert!(run.stdout().contains("lint: error"), "{}", run.stdout());
    p.write(
        "migrations/20250101000000_change.up.sql",
        "ALTER TABLE recipes ADD COLUMN servings_big bigint;\n",
    );
    p.run(&["migrate", "lint"]).success();
}

#[test]
fn other_databases_are_not_linted() {
    let p = Project::new();
    p.write(
        "migrations/20250101000000_change.up.sql",
        "CREATE INDEX idx_recipes_title ON recipes (title);\n",
    );
    let run = p.run(&["migrate", "lint"]);
    run.success();
    assert!(
        run.stdout()
            .contains("the lint rules are for PostgreSQL and MySQL/MariaDB"),
        "{}",
        run.stdout()
    );
    // Nor in plans.
    let plan = p.run(&["plan"]);
    plan.success();
    assert!(!plan.stdout().contains("create-index"), "{}", plan.stdout());
}

// ---- Against a real PostgreSQL. ----

const BAD_INDEX: &str =
    "-- Faster lookups by title.\nCREATE INDEX idx_recipes_title ON recipes (title);\n";

#[test]
fn plan_shows_findings_of_pending_migrations_only_as_warnings() {
    let (p, _db) = project();
    p.run(&["deploy"]).success();
    p.write("migrations/20250101000000_index_title.up.sql", BAD_INDEX);
    let plan = p.run(&["plan"]);
    plan.success();
    let out = plan.stdout();
    assert!(
        out.contains("warning: migrations/20250101000000_index_title.up.sql:2: [create-index-not-concurrently]"),
        "{out}"
    );
    // The applied migrations (one of which drops a column) are not linted again.
    assert!(!out.contains("drop-column"), "{out}");
    let json: Value = serde_json::from_str(&p.run(&["plan", "--json"]).stdout()).unwrap();
    assert_eq!(json["warnings"].as_array().unwrap().len(), 1, "{json}");
    // `migrate lint` reads every migration; `--pending` those the plan would apply.
    let all = result(&p.run(&["migrate", "lint", "--output", "json"]).stdout());
    let rules: Vec<&str> = all["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, vec!["drop-column", "create-index-not-concurrently"]);
    let pending = result(
        &p.run(&["migrate", "lint", "--pending", "--output", "json"])
            .stdout(),
    );
    assert_eq!(pending["files"], 1);
    assert_eq!(
        pending["findings"][0]["rule"],
        "create-index-not-concurrently"
    );
    // A warning does not stop the deploy.
    p.run(&["deploy"]).success();
}

#[test]
fn lint_error_stops_the_deploy_with_nothing_touched() {
    let (p, db) = project();
    p.run(&["deploy"]).success();
    p.write("migrations/20250101000000_index_title.up.sql", BAD_INDEX);
    p.write(
        "migrations/20250101000000_index_title.down.sql",
        "DROP INDEX idx_recipes_title;\n",
    );
    p.write_config(&replace_once(
        &p.read("deploy.yaml"),
        "?sslmode=disable\" }",
        "?sslmode=disable\", lint: error }",
    ));
    let before = server().snapshot(&db);
    let calls = p.calls();
    let journals = p.journals().len();
    let run = p.run(&["deploy"]);
    run.expect_code(2);
    assert!(
        run.stderr().contains(
            "migrations/20250101000000_index_title.up.sql:2: [create-index-not-concurrently]"
        ),
        "{}",
        run.stderr()
    );
    assert!(run.stderr().contains("lint: error"), "{}", run.stderr());
    assert_eq!(server().snapshot(&db), before);
    assert_eq!(p.calls(), calls, "no platform command ran");
    assert_eq!(p.journals().len(), journals, "no run was journaled");
    assert!(p.locks().is_empty());
    p.run(&["plan"]).expect_code(2);
    // In CI the finding is an error annotation at its file and line.
    let run = p.run(&["--output", "github", "plan"]);
    run.expect_code(2);
    assert!(
        run.stdout().lines().any(|l| l.starts_with(
            "::error file=migrations/20250101000000_index_title.up.sql,line=2,title=cutover plan failed::[create-index-not-concurrently]"
        )),
        "{}",
        run.stdout()
    );
    // The safe form deploys.
    p.write(
        "migrations/20250101000000_index_title.up.sql",
        "-- cutover:no-transaction\nCREATE INDEX CONCURRENTLY idx_recipes_title ON recipes (title);\n",
    );
    p.run(&["deploy"]).success();
    assert!(
        server()
            .psql(
                &db,
                "SELECT indexname FROM pg_indexes WHERE tablename = 'recipes'"
            )
            .contains("idx_recipes_title")
    );
}

// ---- Against a real MariaDB. ----

#[test]
fn mariadb_migrations_are_linted_with_the_mysql_rules() {
    use support::mysql;
    let (p, db) = mysql::project();
    p.run(&["deploy"]).success();
    p.write(
        "migrations/20250101000000_longer_title.up.sql",
        "-- Titles up to 500 characters.\nALTER TABLE recipes MODIFY COLUMN title VARCHAR(500) NOT NULL;\nCREATE UNIQUE INDEX idx_users_email ON users (email);\n",
    );
    p.write(
        "migrations/20250101000000_longer_title.down.sql",
        "DROP INDEX idx_users_email ON users;\nALTER TABLE recipes MODIFY COLUMN title VARCHAR(255) NOT NULL;\n",
    );
    let plan = p.run(&["plan"]);
    plan.success();
    let out = plan.stdout();
    let file = "migrations/20250101000000_longer_title.up.sql";
    assert!(
        out.contains(&format!(
            "warning: {file}:2: [mysql-alter-without-algorithm]"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!("warning: {file}:3: [mysql-add-unique-index]")),
        "{out}"
    );
    // PostgreSQL's rules are not MySQL's: no create-index-not-concurrently here.
    assert!(!out.contains("create-index"), "{out}");
    let pending = result(
        &p.run(&["migrate", "lint", "--pending", "--output", "json"])
            .stdout(),
    );
    assert_eq!(pending["database"], "mysql");
    let rules: Vec<&str> = pending["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert_eq!(
        rules,
        vec!["mysql-alter-without-algorithm", "mysql-add-unique-index"]
    );

    // `lint: error` stops the deploy before anything runs; in CI, at the file and line.
    let config = p.read("deploy.yaml");
    p.write_config(&replace_once(
        &config,
        "kind: mysql,",
        "kind: mysql, lint: error,",
    ));
    let before = mysql::server().snapshot(&db);
    let run = p.run(&["deploy"]);
    run.expect_code(2);
    assert!(
        run.stderr()
            .contains(&format!("{file}:2: [mysql-alter-without-algorithm]")),
        "{}",
        run.stderr()
    );
    assert_eq!(mysql::server().snapshot(&db), before);
    let run = p.run(&["--output", "github", "migrate", "lint", "--pending"]);
    run.expect_code(2);
    assert!(
        run.stdout().lines().any(|l| l.starts_with(&format!(
            "::error file={file},line=3,title=migration lint%3A mysql-add-unique-index::"
        ))),
        "{}",
        run.stdout()
    );

    // `lint: off`: the plan says so once, and the deploy goes on.
    p.write_config(&replace_once(
        &config,
        "kind: mysql,",
        "kind: mysql, lint: off,",
    ));
    let plan = p.run(&["plan"]);
    plan.success();
    let out = plan.stdout();
    assert_eq!(out.matches("lint: off").count(), 1, "{out}");
    assert!(!out.contains("mysql-"), "{out}");
    p.run(&["deploy"]).success();
    assert!(
        mysql::server()
            .sql(&db, "SHOW INDEX FROM users")
            .contains("idx_users_email")
    );
}
