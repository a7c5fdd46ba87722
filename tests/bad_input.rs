//! Broken inputs: every file under `tests/bad_inputs/` is written into a fresh project and
//! run through the real binary. Each must exit 2, say where the problem is (file:line:col
//! for YAML, else the offending name or value), and leave the database, the platform, the
//! backups, the journal and the lock exactly as they were. The messages are snapshotted in
//! `tests/bad_inputs/snapshots/` so a regression in their wording or location shows up.

mod support;

use std::collections::BTreeMap;
use std::path::Path;

use support::{Project, Run};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bad_inputs");

/// An applied migration the edit/delete cases work on.
const USERS_UP: &str = "migrations/20240101120000_create_users.up.sql";

/// One broken input.
struct Case {
    /// Fixture file under `tests/bad_inputs/`, and where it goes in the project.
    fixture: Option<(&'static str, &'static str)>,
    args: &'static [&'static str],
    /// Runs before the fixture is written (e.g. a first, good deploy).
    before: Option<fn(&Project)>,
    /// Each must appear in the output: the file and line:col, or the offending name/value.
    expect: &'static [&'static str],
}

const DEPLOY: &[&str] = &["deploy"];

fn config(fixture: &'static str, expect: &'static [&'static str]) -> Case {
    Case {
        fixture: Some((fixture, "deploy.yaml")),
        args: DEPLOY,
        before: None,
        expect,
    }
}

fn pipeline(fixture: &'static str, expect: &'static [&'static str]) -> Case {
    Case {
        fixture: Some((fixture, "pipelines/deploy.yaml")),
        ..config(fixture, expect)
    }
}

fn migration(fixture: &'static str, target: &'static str, expect: &'static [&'static str]) -> Case {
    Case {
        fixture: Some((fixture, target)),
        ..config(fixture, expect)
    }
}

impl Case {
    fn args(self, args: &'static [&'static str]) -> Self {
        Self { args, ..self }
    }

    fn before(self, before: fn(&Project)) -> Self {
        Self {
            before: Some(before),
            ..self
        }
    }
}

/// Everything a bad run must leave alone.
#[derive(Debug, PartialEq)]
struct Touched {
    db: BTreeMap<String, Vec<String>>,
    platform: String,
    calls: Vec<String>,
    journals: Vec<Vec<serde_json::Value>>,
    locks: Vec<String>,
    backups: Vec<String>,
}

fn touched(p: &Project) -> Touched {
    let mut backups: Vec<String> = std::fs::read_dir(p.file("state/backups"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    backups.sort();
    Touched {
        db: p.db_snapshot(),
        platform: p.platform(),
        calls: p.calls(),
        journals: p.journals(),
        locks: p.locks(),
        backups,
    }
}

/// A port nobody listens on: bound once to get a free port, then closed.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Escapes a literal for use in an insta filter regex.
fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\.+*?()|[]{}^$#&-~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn check(name: &str, case: Case) {
    let p = Project::new();
    if let Some(before) = case.before {
        before(&p);
        // A first deploy leaves its calls behind; only the bad run's calls matter.
        let _ = std::fs::remove_file(p.file("calls.log"));
    }
    if let Some((fixture, target)) = case.fixture {
        let text = std::fs::read_to_string(Path::new(FIXTURES).join(fixture))
            .unwrap_or_else(|e| panic!("fixture {fixture}: {e}"));
        let text = text.replace("@HEALTH@", &p.health.url).replace(
            "@CLOSED@",
            &format!("http://127.0.0.1:{}/health", closed_port()),
        );
        p.write(target, &text);
    }
    let start = touched(&p);
    assert!(start.locks.is_empty(), "no lock before the run");

    let run = Run(p
        .cmd()
        .args(case.args)
        .env_remove("CUTOVER_TEST_NEVER_SET")
        .output()
        .expect("cutover runs"));

    run.expect_code(2);
    let stderr = run.stderr();
    // `migrate verify` reports its findings as its result, on stdout.
    let said = run.all();
    for needle in case.expect {
        assert!(
            said.contains(needle),
            "output should contain {needle:?}:\n{said}"
        );
    }
    assert!(
        !said.contains("pw-never-shown"),
        "a database password must never be shown:\n{said}"
    );
    assert!(
        !said.contains("panicked"),
        "a bad input must not panic:\n{said}"
    );
    if case.args != ["migrate", "verify"] {
        assert!(
            stderr.contains("nothing was touched"),
            "the hint says nothing was touched:\n{stderr}"
        );
    }
    let end = touched(&p);
    assert_eq!(start, end, "a bad input must touch nothing");
    assert!(
        end.calls.is_empty(),
        "no platform command ran: {:?}",
        end.calls
    );
    assert!(end.locks.is_empty(), "no lock left behind");

    let mut shown = stderr;
    if !run.stdout().is_empty() {
        shown = format!("{shown}--- stdout\n{}", run.stdout());
    }
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path("bad_inputs/snapshots");
    settings.set_prepend_module_to_snapshot(false);
    settings.set_description(format!(
        "cutover {} with {}",
        case.args.join(" "),
        case.fixture.map_or("no fixture", |f| f.0)
    ));
    for dir in [p.path().to_owned(), p.path().canonicalize().unwrap()] {
        settings.add_filter(&regex_escape(&dir.display().to_string()), "[PROJECT]");
    }
    settings.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
    settings.bind(|| insta::assert_snapshot!(name, shown));
}

fn deploy_first(p: &Project) {
    p.run(&["deploy"]).success();
}

fn deploy_then_delete_applied(p: &Project) {
    deploy_first(p);
    std::fs::remove_file(p.file(USERS_UP)).unwrap();
    let _ = std::fs::remove_file(p.file("migrations/20240101120000_create_users.down.sql"));
}

fn delete_pending_down(p: &Project) {
    std::fs::remove_file(p.file("migrations/20240301100100_create_tags_move_cuisine.down.sql"))
        .unwrap();
}

macro_rules! cases {
    ($($name:ident => $case:expr;)*) => {
        $(
            #[test]
            fn $name() {
                check(stringify!($name), $case);
            }
        )*
    };
}

cases! {
    // deploy.yaml: syntax, shape and values.
    malformed_yaml => config("config_malformed_yaml.yaml", &["deploy.yaml:9:5", "flow mapping"]);
    unknown_top_level_key => config("config_unknown_top_key.yaml", &["deploy.yaml:6:1", "`colour`"]);
    unknown_environment_key => config("config_unknown_env_key.yaml", &["deploy.yaml:8:5", "`confrim`"]);
    wrong_type_string_for_bool => config("config_wrong_type_bool.yaml", &["deploy.yaml:8:14", "boolean"]);
    duplicate_yaml_key => config("config_duplicate_key.yaml", &["deploy.yaml:9:5", "duplicate", "database"]);
    unknown_environment => config("config_unknown_environment.yaml", &["deploy.yaml", "`nope`", "local, staging"])
        .args(&["deploy", "-e", "nope"]);
    missing_pipeline_file => config("config_missing_pipeline.yaml", &["deploy.yaml:4:11", "pipelines/nope.yaml"]);
    missing_migrations_folder => config("config_missing_migrations.yaml", &["deploy.yaml:5:13", "db/migrations"]);
    invalid_window => config("config_invalid_window.yaml", &["deploy.yaml:8:13", "25:00-26:00"]);
    unsupported_version => config("config_version_2.yaml", &["deploy.yaml:2:10", "version 2"]);
    unknown_adapter_kind => config("config_unknown_adapter_kind.yaml", &["deploy.yaml:11:7", "kubernetes"]);
    // Inside a `kind:` block the key itself is shown, not the block.
    unknown_key_inside_a_kind_block => config("config_unknown_platform_key.yaml", &["deploy.yaml:14:7", "`maintenance_of`", "did you mean `maintenance_off`?"]);
    misspelled_database_kind => config("config_misspelled_database_kind.yaml", &["deploy.yaml:8:17", "`postgress`", "did you mean `postgres`?"]);
    dedented_setting => config("config_dedented_backups.yaml", &["deploy.yaml:10:14", "`backups:` on line 10 is read as a name, not as a setting: is it indented too little?"]);
    invalid_duration_in_config => config("config_invalid_duration.yaml", &["deploy.yaml:8:20", "forever"]);
    invalid_health_url => config("config_invalid_health_url.yaml", &["deploy.yaml:17:20", "health URL"]);
    postgres_invalid_url => config("config_postgres_invalid_url.yaml", &["deploy.yaml", "`local`", "postgres://app:***@db.example:notaport/app", "port"]);
    azure_sql_with_local_backups => config("config_azure_sql_local_backups.yaml", &["deploy.yaml", "`local`", "azure-sql", "kind: azure-blob"]);
    // References.
    unset_env_reference => config("config_unset_env_ref.yaml", &["deploy.yaml:18:21", "CUTOVER_TEST_NEVER_SET"]);
    missing_file_reference => config("config_missing_file_ref.yaml", &["deploy.yaml:18:21", "secrets/missing-token.txt"]);
    unknown_reference_kind => config("config_unknown_ref_kind.yaml", &["deploy.yaml:18:21", "`vault`"]);
    keyvault_reference_malformed => config("config_keyvault_secret.yaml", &["deploy.yaml:18:21", "keyvault://prod-vault", "keyvault://<vault>/<name>"]);
    unclosed_reference => config("config_unclosed_ref.yaml", &["deploy.yaml:18:21", "`}`"]);
    // Found once the adapters are asked (plan time).
    unreachable_health_url => config("config_unreachable_health.yaml", &["step `preflight` (./pipelines/deploy.yaml:6)", "127.0.0.1:", "not healthy"]);
    backups_path_under_a_file => config("config_backups_under_file.yaml", &["step `backup` (./pipelines/deploy.yaml:13)", "deploy.yaml/backups"]);
    // Pipeline files.
    unknown_step_key => pipeline("pipeline_unknown_step_key.yaml", &["pipelines/deploy.yaml:6:5", "`retry`"]);
    unknown_with_key => pipeline("pipeline_unknown_with_key.yaml", &["pipelines/deploy.yaml:7:28", "`force`"]);
    unknown_step_kind => pipeline("pipeline_unknown_step_kind.yaml", &["pipelines/deploy.yaml:5:11", "deploy-magic"]);
    misspelled_step_kind => pipeline("pipeline_misspelled_step_kind.yaml", &["pipelines/deploy.yaml:5:11", "did you mean `migrate`?"]);
    wrong_type_string_for_bool_in_with => pipeline("pipeline_wrong_type_bool.yaml", &["pipelines/deploy.yaml:6:22", "boolean"]);
    duplicate_step_ids => pipeline("pipeline_duplicate_ids.yaml", &["pipelines/deploy.yaml:9:9", "`toggle`"]);
    with_before_uses => pipeline("pipeline_with_before_uses.yaml", &["pipelines/deploy.yaml:5:5", "`uses:`"]);
    invalid_duration_in_pipeline => pipeline("pipeline_invalid_duration.yaml", &["pipelines/deploy.yaml:6:14", "soon"]);
    invalid_step_id => pipeline("pipeline_invalid_step_id.yaml", &["pipelines/deploy.yaml:5:9", "turn maintenance on!"]);
    no_steps => pipeline("pipeline_no_steps.yaml", &["pipelines/deploy.yaml", "no steps"]);
    missing_validation_folder => pipeline("pipeline_missing_validation_folder.yaml", &["pipelines/deploy.yaml:7:22", "checks/"]);
    replicas_previous_without_scale => pipeline("pipeline_previous_without_scale.yaml", &["step `jobs-up` (./pipelines/deploy.yaml:6)", "previous"]);
    scale_unknown_target => pipeline("pipeline_unknown_target.yaml", &["step `scale` (./pipelines/deploy.yaml:5)", "`web`"]);
    rollback_restore_without_backup => pipeline("pipeline_restore_without_backup.yaml", &["step `migrate` (./pipelines/deploy.yaml:5)", "rollback: restore", "backup"]);
    rollback_down_with_missing_down_file => pipeline("pipeline_down_missing.yaml", &["step `migrate` (./pipelines/deploy.yaml:6)", "20240301100100", "down"])
        .before(delete_pending_down);
    // Migrations.
    migration_with_bad_name => migration("migration_bad_name.sql", "migrations/create_things.sql", &["create_things.sql"]);
    edited_applied_migration => migration("migration_edited_applied.up.sql", USERS_UP, &["20240101120000_create_users.up.sql", "checksum mismatch"])
        .before(deploy_first);
    verify_after_editing_applied_migration => migration("migration_edited_verify.up.sql", USERS_UP, &["20240101120000_create_users.up.sql", "checksum mismatch"])
        .args(&["migrate", "verify"])
        .before(deploy_first);
}

// Cases whose broken input is not a file.

#[test]
fn missing_file_of_applied_migration() {
    check(
        "missing_file_of_applied_migration",
        Case {
            fixture: None,
            args: DEPLOY,
            before: Some(deploy_then_delete_applied),
            expect: &["20240101120000", "missing"],
        },
    );
}
