//! `migrate` with `tool: command`: the team's own migrator, for real — Alembic against the
//! real PostgreSQL of `support::pg`, the shipped Alembic and EF Core examples — with
//! cutover's backup, validation and rollback around it.
//!
//! Alembic (with SQLAlchemy and psycopg2) must be importable by `python3`: scripts/test
//! installs it. Without it these tests fail; they never skip.

mod support;

use std::path::Path;
use std::process::Command;

use cutover::config::pipeline::{MigrateRollback, MigrateTool, StepWith};
use cutover::steps::external_migrator::{extract_version, fill_down};
use support::pg::server;
use support::{Project, ROOT, replace_once};

const REV1: &str = "4ec49e1f4ba8";
const REV2: &str = "bb7fb1d8e8a3";
const REV1_FILE: &str = "4ec49e1f4ba8_create_recipes.py";
const REV2_FILE: &str = "bb7fb1d8e8a3_add_servings.py";

/// Fails (never skips) when Alembic is missing.
fn require_alembic() {
    let out = Command::new("python3")
        .args(["-c", "import alembic, sqlalchemy, psycopg2"])
        .output();
    let ok = out.as_ref().is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "Alembic is not importable by python3 ({}); run scripts/test, which installs it (python3 -m pip install alembic psycopg2-binary sqlalchemy)",
        out.map_or_else(
            |e| e.to_string(),
            |o| String::from_utf8_lossy(&o.stderr).trim().to_owned()
        )
    );
}

fn example(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join("examples").join(rel))
        .unwrap_or_else(|e| panic!("examples/{rel}: {e}"))
}

/// The `migrate` step of the tests: Alembic through `python3 -m alembic` (a console script
/// may not be on PATH where pip put it).
const MIGRATE_DOWN: &str = r#"  - uses: migrate
    with:
      tool: command
      status: "python3 -m alembic current"
      up: "python3 -m alembic upgrade head"
      down: "python3 -m alembic downgrade {version}"
      base_version: base
"#;

fn pipeline(migrate: &str, failing_check: bool) -> String {
    let checks = if failing_check {
        "checks: [{ name: always-fails, sql: \"SELECT 1 AS issues\" }]"
    } else {
        "checks: [{ name: titles, sql: \"SELECT count(*) AS issues FROM recipes WHERE title = ''\" }]"
    };
    format!(
        "name: deploy\nsteps:\n  - uses: preflight\n  - uses: backup\n{migrate}  - uses: validate\n    with: {{ {checks} }}\n  - uses: health\n    with: {{ timeout: 5s, healthy_for: 0s }}\n"
    )
}

/// An Alembic project on a fresh PostgreSQL database: the shipped example's `alembic.ini`
/// and `env.py` (reading `DATABASE_URL`), with the given revisions of the example.
fn alembic_project(revisions: &[&str]) -> (Project, String) {
    require_alembic();
    let server = server();
    let db = server.database();
    let p = Project::new();
    std::fs::remove_dir_all(p.file("migrations")).unwrap();
    for rel in ["alembic.ini", "alembic/env.py", "alembic/script.py.mako"] {
        p.write(rel, &example(&format!("alembic/{rel}")));
    }
    for rev in revisions {
        add_revision(&p, rev);
    }
    let config = replace_once(
        &p.default_config(),
        "database: { kind: sqlite, url: \"sqlite://state/app.db\" }",
        &format!(
            "database: {{ kind: postgres, url: \"{}\" }}",
            server.url(&db)
        ),
    );
    p.write_config(&replace_once(&config, "migrations: migrations\n", ""));
    p.write_pipeline(&pipeline(MIGRATE_DOWN, false));
    (p, db)
}

fn add_revision(p: &Project, file: &str) {
    p.write(
        &format!("alembic/versions/{file}"),
        &example(&format!("alembic/alembic/versions/{file}")),
    );
}

fn alembic_version(db: &str) -> String {
    server()
        .psql(db, "SELECT version_num FROM alembic_version")
        .trim()
        .to_owned()
}

fn columns(db: &str) -> String {
    server()
        .psql(
            db,
            "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns WHERE table_name = 'recipes'",
        )
        .trim()
        .to_owned()
}

/// The compensations recorded in the journal of the latest run.
fn compensations(p: &Project) -> Vec<serde_json::Value> {
    p.journals()
        .last()
        .expect("a journal")
        .iter()
        .filter(|r| r["record"] == "step_started")
        .map(|r| r["compensation"].clone())
        .filter(|c| !c.is_null())
        .collect()
}

#[test]
fn deploy_applies_head_and_shows_the_version_before_and_after() {
    let (p, db) = alembic_project(&[REV1_FILE, REV2_FILE]);
    let url = server().url(&db);
    let plan = p.run(&["plan"]);
    plan.success();
    let text = plan.all();
    assert!(
        text.contains(
            "external migrator: at no version yet; will run `python3 -m alembic upgrade head`"
        ),
        "{text}"
    );
    assert!(
        text.contains("undo: `python3 -m alembic downgrade base`"),
        "{text}"
    );
    // Planning ran `status` only.
    assert!(
        server()
            .psql(&db, "SELECT to_regclass('recipes') IS NULL")
            .trim()
            == "t"
    );

    let run = p.run(&["deploy"]);
    run.success();
    let text = run.all();
    assert!(text.contains(&format!("now at {REV2}")), "{text}");
    // Alembic's own log lines are the step's notes.
    assert!(
        text.contains(&format!("Running upgrade {REV1} -> {REV2}")),
        "{text}"
    );
    assert!(!text.contains(&url), "the database URL is never printed");
    assert_eq!(alembic_version(&db), REV2);
    assert_eq!(columns(&db), "id,title,servings");
    assert_eq!(
        compensations(&p)
            .iter()
            .find(|c| c["action"] == "external_down"),
        Some(
            &serde_json::json!({"action": "external_down", "run": "python3 -m alembic downgrade base"})
        )
    );

    // Nothing left to do: the plan shows where it is, and a deploy changes nothing.
    let again = p.run(&["plan"]);
    again.success();
    assert!(
        again.all().contains(&format!(
            "external migrator: at {REV2}; will run `python3 -m alembic upgrade head`"
        )),
        "{}",
        again.all()
    );
}

#[test]
fn a_failure_after_the_migrate_step_downgrades_to_the_previous_revision() {
    let (p, db) = alembic_project(&[REV1_FILE]);
    p.run(&["deploy"]).success();
    assert_eq!(alembic_version(&db), REV1);
    server().psql(
        &db,
        "INSERT INTO recipes (id, title) VALUES (1, 'Soup'), (2, 'Salad')",
    );
    let before = server().snapshot(&db);
    add_revision(&p, REV2_FILE);
    p.write_pipeline(&pipeline(MIGRATE_DOWN, true));

    let plan = p.run(&["plan"]);
    plan.success();
    assert!(
        plan.all()
            .contains(&format!("undo: `python3 -m alembic downgrade {REV1}`")),
        "{}",
        plan.all()
    );
    let run = p.run(&["deploy"]);
    run.expect_code(1);
    let text = run.all();
    assert!(text.contains(&format!("now at {REV2}")), "{text}");
    assert!(
        text.contains(&format!("run `python3 -m alembic downgrade {REV1}` — ok")),
        "{text}"
    );
    assert_eq!(alembic_version(&db), REV1);
    assert_eq!(columns(&db), "id,title");
    assert_eq!(server().snapshot(&db), before);
    assert!(
        compensations(&p).contains(&serde_json::json!({
            "action": "external_down",
            "run": format!("python3 -m alembic downgrade {REV1}")
        })),
        "{:?}",
        compensations(&p)
    );
    assert_eq!(p.platform(), "maintenance=false\njobs=3\n");
    assert!(p.locks().is_empty());

    // The downgrade is idempotent: `recover` may run it again after a crash.
    let rerun = Command::new("sh")
        .args(["-c", &format!("python3 -m alembic downgrade {REV1}")])
        .current_dir(p.path())
        .env("DATABASE_URL", server().url(&db))
        .output()
        .unwrap();
    assert!(
        rerun.status.success(),
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    assert_eq!(server().snapshot(&db), before);
}

#[test]
fn rollback_restore_brings_the_backup_back() {
    let (p, db) = alembic_project(&[REV1_FILE]);
    p.run(&["deploy"]).success();
    server().psql(&db, "INSERT INTO recipes (id, title) VALUES (1, 'Soup')");
    let before = server().snapshot(&db);
    add_revision(&p, REV2_FILE);
    let migrate = format!("{MIGRATE_DOWN}      rollback: restore\n");
    p.write_pipeline(&pipeline(&migrate, true));

    let plan = p.run(&["plan"]);
    plan.success();
    assert!(
        plan.all()
            .contains("undo: restore the backup taken before it"),
        "{}",
        plan.all()
    );
    let run = p.run(&["deploy"]);
    run.expect_code(1);
    let text = run.all();
    assert!(text.contains("restore backup"), "{text}");
    assert!(!text.contains("downgrade"), "{text}");
    assert_eq!(alembic_version(&db), REV1);
    assert_eq!(server().snapshot(&db), before);
    assert!(
        compensations(&p)
            .iter()
            .any(|c| c["action"] == "restore_backup"),
        "{:?}",
        compensations(&p)
    );
}

#[test]
fn a_broken_status_command_is_bad_input_and_touches_nothing() {
    let (p, db) = alembic_project(&[REV1_FILE, REV2_FILE]);
    let url = server().url(&db);
    let before = server().snapshot(&db);
    let broken = replace_once(
        MIGRATE_DOWN,
        "status: \"python3 -m alembic current\"",
        "status: \"echo connecting to $DATABASE_URL >&2; python3 -m alembic -c missing.ini current\"",
    );
    p.write_pipeline(&pipeline(&broken, false));
    for args in [&["plan"][..], &["deploy"][..]] {
        let run = p.run(args);
        run.expect_code(2);
        let err = run.stderr();
        // The tail of the tool's stderr, with the database URL masked.
        assert!(err.contains("missing.ini"), "{err}");
        assert!(err.contains("connecting to ***"), "{err}");
        assert!(!run.all().contains(&url), "{}", run.all());
    }
    assert_eq!(server().snapshot(&db), before);
    assert!(p.calls().is_empty(), "no platform command ran");
    assert!(p.journals().is_empty() && p.locks().is_empty());

    // Output in which no version can be found is an error too, never "no version".
    let chatter = replace_once(
        MIGRATE_DOWN,
        "status: \"python3 -m alembic current\"",
        "status: \"echo 'current revision: unknown'\"",
    );
    p.write_pipeline(&pipeline(&chatter, false));
    let run = p.run(&["deploy"]);
    run.expect_code(2);
    assert!(
        run.stderr().contains("no version found in the output"),
        "{}",
        run.stderr()
    );
    assert_eq!(server().snapshot(&db), before);
}

#[test]
fn options_that_do_not_fit_together_are_refused_before_anything_runs() {
    let (p, _db) = alembic_project(&[REV1_FILE]);
    let cases = [
        (
            replace_once(MIGRATE_DOWN, "downgrade {version}", "downgrade -1"),
            "must contain `{version}`",
        ),
        (
            replace_once(MIGRATE_DOWN, "      tool: command\n", ""),
            "only for `tool: command`",
        ),
        (
            replace_once(
                MIGRATE_DOWN,
                "      up: \"python3 -m alembic upgrade head\"\n",
                "",
            ),
            "`tool: command` needs `up`",
        ),
        (
            format!("{MIGRATE_DOWN}      version_pattern: \"([a-f\"\n"),
            "invalid `version_pattern`",
        ),
    ];
    for (migrate, expected) in cases {
        p.write_pipeline(&pipeline(&migrate, false));
        let run = p.run(&["plan"]);
        run.expect_code(2);
        assert!(
            run.stderr().contains(expected),
            "{expected}:\n{}",
            run.stderr()
        );
    }
    // `restore` (explicit, or by default without `down`) needs a backup step before it.
    let no_backup =
        |migrate: &str| replace_once(&pipeline(migrate, false), "  - uses: backup\n", "");
    for migrate in [
        format!("{MIGRATE_DOWN}      rollback: restore\n"),
        replace_once(
            MIGRATE_DOWN,
            "      down: \"python3 -m alembic downgrade {version}\"\n",
            "",
        ),
    ] {
        p.write_pipeline(&no_backup(&migrate));
        let run = p.run(&["plan"]);
        run.expect_code(2);
        assert!(run.stderr().contains("`backup` step"), "{}", run.stderr());
    }
    // A fresh database has no version for `{version}`: `base_version` says what to use.
    p.write_pipeline(&pipeline(
        &replace_once(MIGRATE_DOWN, "      base_version: base\n", ""),
        false,
    ));
    let run = p.run(&["plan"]);
    run.expect_code(2);
    assert!(
        run.stderr().contains("set `base_version`"),
        "{}",
        run.stderr()
    );
    assert!(p.journals().is_empty());
}

#[test]
fn the_version_is_read_as_documented() {
    let default = |text: &str| extract_version(text, None);
    // Alembic.
    assert_eq!(
        default("4ec49e1f4ba8 (head)\n"),
        Ok(Some("4ec49e1f4ba8".into()))
    );
    assert_eq!(default("bb7fb1d8e8a3\n"), Ok(Some("bb7fb1d8e8a3".into())));
    // A 12-digit hex revision id with no digit in it at all.
    assert_eq!(
        default("abcdefabcdef (head)"),
        Ok(Some("abcdefabcdef".into()))
    );
    // EF Core's history table, through psql.
    assert_eq!(
        default("20240115084500_AddServings\n"),
        Ok(Some("20240115084500_AddServings".into()))
    );
    // Words without a digit are skipped; punctuation around the version is trimmed.
    assert_eq!(
        default("Current version: 20240101120000\n"),
        Ok(Some("20240101120000".into()))
    );
    assert_eq!(default("version \"1.4.2\"."), Ok(Some("1.4.2".into())));
    assert_eq!(
        default("[0003_auto_add_field]"),
        Ok(Some("0003_auto_add_field".into()))
    );
    // Nothing printed: the migrator has not run on this database.
    assert_eq!(default(""), Ok(None));
    assert_eq!(default("  \n\n"), Ok(None));
    // Something printed but no version in it is an error, never "no version".
    assert!(default("create_users (head)").is_err());
    assert!(default("unknown").is_err());

    let re = regex::Regex::new(r"Current version: (\S+)").unwrap();
    assert_eq!(
        extract_version("noise 12\nCurrent version: v2_users\n", Some(&re)),
        Ok(Some("v2_users".into()))
    );
    assert!(extract_version("noise 12\n", Some(&re)).is_err());
    assert_eq!(extract_version("\n", Some(&re)), Ok(None));
    let whole = regex::Regex::new(r"\d{14}").unwrap();
    assert_eq!(
        extract_version("applied: 20240101120000_x", Some(&whole)),
        Ok(Some("20240101120000".into()))
    );
    // A version goes into a shell command: only safe characters.
    let any = regex::Regex::new(r"rev=(.*)").unwrap();
    assert!(extract_version("rev=a1;rm -rf /", Some(&any)).is_err());

    assert_eq!(
        fill_down("alembic downgrade {version}", Some(REV1), Some("base")),
        Ok(format!("alembic downgrade {REV1}"))
    );
    assert_eq!(
        fill_down("alembic downgrade {version}", None, Some("base")),
        Ok("alembic downgrade base".into())
    );
    assert!(fill_down("alembic downgrade {version}", None, None).is_err());
}

// ---- The shipped examples ----

/// Loads an example's config and pipeline with the library, as `cutover` does.
fn example_migrate_step(name: &str) -> cutover::config::pipeline::MigrateWith {
    let dir = Path::new(ROOT).join("examples").join(name);
    let config = cutover::config::load(&dir.join("deploy.yaml"))
        .unwrap_or_else(|e| panic!("examples/{name}/deploy.yaml: {e}"));
    let pipeline = cutover::config::load_pipeline(&config.pipeline_path(None), &config.dir)
        .unwrap_or_else(|e| panic!("examples/{name} pipeline: {e}"));
    let mut migrate = pipeline.steps.into_iter().filter_map(|s| match s.with {
        StepWith::Migrate(w) => Some(w),
        _ => None,
    });
    let step = migrate.next().expect("a migrate step");
    assert!(migrate.next().is_none());
    step
}

#[test]
fn the_shipped_examples_parse_as_tool_command() {
    let alembic = example_migrate_step("alembic");
    assert_eq!(alembic.tool, Some(MigrateTool::Command));
    assert_eq!(alembic.status.as_deref(), Some("alembic current"));
    assert_eq!(alembic.up.as_deref(), Some("alembic upgrade head"));
    assert_eq!(alembic.down.as_deref(), Some("alembic downgrade {version}"));
    assert_eq!(alembic.base_version.as_deref(), Some("base"));
    assert_eq!(alembic.rollback, Some(MigrateRollback::Down));

    let efcore = example_migrate_step("efcore");
    assert_eq!(efcore.tool, Some(MigrateTool::Command));
    assert_eq!(
        efcore.up.as_deref(),
        Some("./efbundle --connection \"$DATABASE_URL\"")
    );
    assert_eq!(
        efcore.down.as_deref(),
        Some("./efbundle --connection \"$DATABASE_URL\" {version}")
    );
    assert!(
        efcore
            .status
            .as_deref()
            .is_some_and(|s| s.contains("__EFMigrationsHistory") && s.starts_with("if ")),
        "{:?}",
        efcore.status
    );
    assert_eq!(efcore.base_version.as_deref(), Some("0"));
}

/// A copy of a shipped example, run as shipped against the test server: `DATABASE_URL`
/// and `HEALTH_URL` are what its `deploy.yaml` reads; `bin/` comes first on PATH.
fn run_example(p: &Project, db: &str, args: &[&str]) -> support::Run {
    let path = format!(
        "{}:{}",
        p.file("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    support::Run(
        p.cmd()
            .args(args)
            .env("DATABASE_URL", server().url(db))
            .env("HEALTH_URL", &p.health.url)
            .env("PATH", path)
            .output()
            .expect("cutover runs"),
    )
}

fn copy_example(p: &Project, name: &str) {
    std::fs::remove_dir_all(p.file("migrations")).unwrap();
    std::fs::remove_dir_all(p.file("pipelines")).unwrap();
    let from = Path::new(ROOT).join("examples").join(name);
    let mut stack = vec![from.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "__pycache__") {
                    stack.push(path);
                }
            } else {
                let rel = path
                    .strip_prefix(&from)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                p.write(&rel, &std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    // These tests are about the migrator: the health step passes on the first good answer
    // instead of the shipped 10 s of sustained health.
    p.write_config(&replace_once(
        &p.read("deploy.yaml"),
        "timeout: 5m }",
        "timeout: 5m, healthy_for: 0s }",
    ));
}

fn executable(p: &Project, rel: &str, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    p.write(rel, text);
    std::fs::set_permissions(p.file(rel), std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn the_alembic_example_deploys_as_shipped() {
    require_alembic();
    let db = server().database();
    let p = Project::new();
    copy_example(&p, "alembic");
    // `alembic` as the example calls it, wherever pip put the console script.
    executable(
        &p,
        "bin/alembic",
        "#!/bin/sh\nexec python3 -m alembic \"$@\"\n",
    );
    let run = run_example(&p, &db, &["deploy"]);
    run.success();
    assert!(
        run.all().contains(&format!("now at {REV2}")),
        "{}",
        run.all()
    );
    assert_eq!(alembic_version(&db), REV2);
    let plan = run_example(&p, &db, &["plan"]);
    plan.success();
    assert!(
        plan.all()
            .contains(&format!("undo: `alembic downgrade {REV2}`")),
        "{}",
        plan.all()
    );
}

/// A stand-in for an EF Core migrations bundle (no .NET here), doing what a real one does
/// to `__EFMigrationsHistory`: `efbundle --connection CONN [TARGET]` applies every
/// migration up to TARGET (default: all) or reverts those after it (`0`: all).
const FAKE_EFBUNDLE: &str = r#"#!/bin/sh
set -eu
[ "$1" = --connection ] || { echo "usage: efbundle --connection CONN [TARGET]" >&2; exit 2; }
conn=$2
target=${3:-20240115084500_AddServings}
q() { psql -XqtA -v ON_ERROR_STOP=1 "$conn" -c "$1"; }
q 'CREATE TABLE IF NOT EXISTS "__EFMigrationsHistory" ("MigrationId" varchar(150) PRIMARY KEY, "ProductVersion" varchar(32) NOT NULL)'
applied() { [ "$(q "SELECT count(*) FROM \"__EFMigrationsHistory\" WHERE \"MigrationId\" = '$1'")" = 1 ]; }
up() { applied "$1" || { q "BEGIN; $2; INSERT INTO \"__EFMigrationsHistory\" VALUES ('$1', '8.0.0'); COMMIT"; echo "Applying migration '$1'."; }; }
down() { ! applied "$1" || { q "BEGIN; $2; DELETE FROM \"__EFMigrationsHistory\" WHERE \"MigrationId\" = '$1'; COMMIT"; echo "Reverting migration '$1'."; }; }
m1=20240114153000_CreateRecipes
m2=20240115084500_AddServings
case "$target" in
  0) down $m2 'ALTER TABLE recipes DROP COLUMN servings'; down $m1 'DROP TABLE recipes' ;;
  $m1) down $m2 'ALTER TABLE recipes DROP COLUMN servings'; up $m1 'CREATE TABLE recipes (id bigint PRIMARY KEY, title text NOT NULL)' ;;
  $m2) up $m1 'CREATE TABLE recipes (id bigint PRIMARY KEY, title text NOT NULL)'; up $m2 'ALTER TABLE recipes ADD COLUMN servings integer NOT NULL DEFAULT 0' ;;
  *) echo "No migration named '$target'." >&2; exit 1 ;;
esac
echo Done.
"#;

#[test]
fn the_efcore_example_reads_the_history_table_and_rolls_back_through_the_bundle() {
    let db = server().database();
    let p = Project::new();
    copy_example(&p, "efcore");
    executable(&p, "efbundle", FAKE_EFBUNDLE);
    // The history table does not exist yet: no version, so the undo reverts all (`0`).
    let plan = run_example(&p, &db, &["plan"]);
    plan.success();
    assert!(
        plan.all().contains("at no version yet")
            && plan
                .all()
                .contains("undo: `./efbundle --connection \"$DATABASE_URL\" 0`"),
        "{}",
        plan.all()
    );
    // Up to the first migration by hand, then a deploy whose validation fails: the
    // bundle is run again with the migration before the run as its target.
    let first = Command::new("./efbundle")
        .args([
            "--connection",
            &server().url(&db),
            "20240114153000_CreateRecipes",
        ])
        .current_dir(p.path())
        .output()
        .unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    // The second migration gives every recipe 0 servings: the example's
    // `servings-are-positive` check fails after it. (A problem already in the data would
    // fail the backup's `verify: restore`, which runs the checks on the restored copy.)
    server().psql(&db, "INSERT INTO recipes VALUES (1, 'Soup'), (2, 'Salad')");
    let before = server().snapshot(&db);
    let run = run_example(&p, &db, &["deploy"]);
    run.expect_code(1);
    let text = run.all();
    assert!(text.contains("now at 20240115084500_AddServings"), "{text}");
    assert!(
        text.contains(
            "run `./efbundle --connection \"$DATABASE_URL\" 20240114153000_CreateRecipes` — ok"
        ),
        "{text}"
    );
    assert!(
        text.contains("Reverting migration '20240115084500_AddServings'."),
        "{text}"
    );
    assert!(!text.contains(&server().url(&db)), "{text}");
    assert_eq!(server().snapshot(&db), before);
}

#[test]
fn recover_runs_the_recorded_downgrade_in_a_new_process() {
    let (p, db) = alembic_project(&[REV1_FILE]);
    p.run(&["deploy"]).success();
    server().psql(&db, "INSERT INTO recipes (id, title) VALUES (1, 'Soup')");
    let before = server().snapshot(&db);
    add_revision(&p, REV2_FILE);
    // Records: run_started, the fingerprint, preflight started/finished, backup started,
    // its fact, finished, then 8: migrate started (the undo is in the journal, `up` has
    // not run), 9 and 10: the processes of `up` and `status`, and 11: migrate finished
    // (`up` has run).
    for (n, upgraded) in [(8, false), (11, true)] {
        let crashed = p
            .cmd()
            .arg("deploy")
            .env("CUTOVER_TEST_CRASH_AFTER_RECORD", n.to_string())
            .output()
            .unwrap();
        assert!(!crashed.status.success(), "record {n}: {crashed:?}");
        let last = p.journals().last().unwrap().last().unwrap().clone();
        assert_eq!(last["id"], "migrate", "record {n}: {last}");
        assert_eq!(
            alembic_version(&db),
            if upgraded { REV2 } else { REV1 },
            "record {n}"
        );
        // The compensation is data in the journal; `recover` runs it in a new process
        // (a no-op when `up` never ran: going to a named revision is idempotent).
        let recover = p.run(&["recover"]);
        recover.expect_code(1);
        assert!(
            recover
                .all()
                .contains(&format!("run `python3 -m alembic downgrade {REV1}`")),
            "record {n}:\n{}",
            recover.all()
        );
        assert_eq!(alembic_version(&db), REV1, "record {n}");
        assert_eq!(server().snapshot(&db), before, "record {n}");
        assert!(p.run(&["recover"]).all().contains("nothing to recover"));
    }
    p.run(&["deploy"]).success();
    assert_eq!(alembic_version(&db), REV2);
}

#[test]
fn an_up_that_fails_part_way_is_taken_back_and_its_error_shown_masked() {
    let (p, db) = alembic_project(&[REV1_FILE]);
    p.run(&["deploy"]).success();
    let before = server().snapshot(&db);
    add_revision(&p, REV2_FILE);
    // A third revision that fails after the second was committed (one transaction per
    // revision), printing the database URL in its error.
    p.write(
        "alembic/versions/c0ffee000003_broken.py",
        "import os\nfrom alembic import op\n\nrevision = 'c0ffee000003'\ndown_revision = 'bb7fb1d8e8a3'\nbranch_labels = None\ndepends_on = None\n\n\ndef upgrade():\n    op.execute('CREATE TABLE half_done (id int)')\n    raise RuntimeError('cannot migrate ' + os.environ['DATABASE_URL'])\n\n\ndef downgrade():\n    op.execute('DROP TABLE half_done')\n",
    );
    let run = p.run(&["deploy"]);
    run.expect_code(1);
    let text = run.all();
    assert!(
        text.contains("`python3 -m alembic upgrade head` failed"),
        "{text}"
    );
    assert!(text.contains("RuntimeError: cannot migrate ***"), "{text}");
    assert!(!text.contains(&server().url(&db)), "{text}");
    assert!(
        text.contains(&format!("run `python3 -m alembic downgrade {REV1}` — ok")),
        "{text}"
    );
    assert_eq!(alembic_version(&db), REV1);
    assert_eq!(server().snapshot(&db), before);
}
