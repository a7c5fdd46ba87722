//! `plan --sql`: the exact SQL each pending migration and `sql` step runs, the down SQL a
//! rollback by the down files would run, and a `tool: command` migrator's command line with
//! its secrets masked, in the text and the JSON plan, without changing the digest.

mod support;

use support::pg::server;
use support::{Project, replace_once};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The pending migrations of the shipped project: (version, description, up file, its text).
fn shipped_migrations(p: &Project) -> Vec<(String, String, String, String)> {
    let mut out: Vec<_> = std::fs::read_dir(p.file("migrations"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".up.sql"))
        .map(|name| {
            let stem = name.strip_suffix(".up.sql").unwrap();
            let (version, words) = stem.split_once('_').unwrap();
            let file = format!("migrations/{name}");
            let text = p.read(&file);
            (version.to_owned(), words.replace('_', " "), file, text)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn plan_sql_prints_the_exact_sql_of_each_pending_migration_after_the_plan() {
    let p = Project::new();
    let plain = p.run(&["plan"]);
    plain.success();
    let with_sql = p.run(&["plan", "--sql"]);
    with_sql.success();
    let (plain, text) = (plain.stdout(), with_sql.stdout());
    // The plan itself is unchanged (same digest), the preview follows it.
    assert!(text.starts_with(&plain), "{plain}\n---\n{text}");
    assert!(!plain.contains("SQL preview"), "{plain}");
    let preview = &text[plain.len()..];
    assert!(
        preview.starts_with("\nSQL preview: what the steps run, in order\n"),
        "{preview}"
    );
    let migrations = shipped_migrations(&p);
    assert_eq!(migrations.len(), 6);
    let mut at = 0;
    for (version, description, file, sql) in &migrations {
        // Headed by step, version, description and file, then the file's text as it is.
        let block = format!(
            "-- step 5 `migrate` (migrate): migration {version} {description} — {file} (in one transaction with its _sqlx_migrations record)\n{sql}"
        );
        let found = preview[at..]
            .find(&block)
            .unwrap_or_else(|| panic!("{block}\nnot found in order in:\n{preview}"));
        at += found + block.len();
        assert!(!plain.contains(sql.trim()), "the plan alone shows no SQL");
    }
    // The shipped pipeline takes a backup first: its undo restores it, runs no down file.
    assert!(!preview.contains("Rollback SQL"), "{preview}");
    assert!(p.journals().is_empty() && !p.file("state/app.db").exists());
}

#[test]
fn plan_sql_json_and_out_carry_the_sql_with_the_same_digest() {
    let p = Project::new();
    let plain = p.run(&["plan", "--json"]);
    plain.success();
    let with_sql = p.run(&["plan", "--sql", "--json", "--out", "approved.json"]);
    with_sql.success();
    let plain = json(&plain.stdout());
    let mut with_sql = json(&with_sql.stdout());
    // The saved plan also carries its approval (who, when, until when).
    let mut saved = json(&p.read("approved.json"));
    let approval = saved.as_object_mut().unwrap().remove("approval");
    assert!(approval.is_some_and(|a| a["by"].is_string() && a["expires_at"].is_string()));
    assert_eq!(with_sql, saved);
    assert_eq!(plain["digest"], with_sql["digest"]);
    let migrations = shipped_migrations(&p);
    let pending = with_sql["database"]["pending"].as_array_mut().unwrap();
    assert_eq!(pending.len(), migrations.len());
    for (m, (version, _, file, sql)) in pending.iter_mut().zip(&migrations) {
        assert_eq!(m["version"].to_string(), *version);
        assert_eq!(m["sql"], sql.as_str());
        assert_eq!(m["file"], file.as_str());
        assert_eq!(m["no_transaction"], false);
        assert!(m.get("down_sql").is_none(), "the undo restores the backup");
        // Without the preview's fields, the entry is the plain plan's.
        let m = m.as_object_mut().unwrap();
        for key in ["sql", "file", "no_transaction"] {
            m.remove(key);
        }
    }
    assert_eq!(
        plain, with_sql,
        "--sql adds the SQL and changes nothing else"
    );

    // The plan approved with its SQL is applied as approved.
    p.run(&["deploy", "--plan", "approved.json"]).success();
    assert!(p.db_snapshot().contains_key("table recipes"));
}

#[test]
fn plan_sql_shows_sql_steps_and_the_down_sql_the_undo_would_run() {
    let p = Project::new();
    p.add_migration(
        "20250101000000_add_labels",
        "-- labels for recipes\nCREATE TABLE labels (id INTEGER PRIMARY KEY, name TEXT NOT NULL);\n",
        Some("DROP TABLE labels;\n"),
    );
    // No backup step: `rollback: auto` reverts with the down files.
    p.write_pipeline(
        r#"name: deploy
steps:
  - uses: preflight
  - uses: migrate
    with: { to: latest, rollback: auto }
  - id: seed-labels
    uses: sql
    with:
      sql: "INSERT INTO labels (name) SELECT 'vegan' WHERE NOT EXISTS (SELECT 1 FROM labels WHERE name = 'vegan');"
      undo: "DELETE FROM labels WHERE name = 'vegan';"
  - uses: health
    with: { timeout: 5s, healthy_for: 0s }
"#,
    );
    let run = p.run(&["plan", "--sql"]);
    run.success();
    let text = run.stdout();
    let preview = &text[text.find("\nSQL preview").expect("a preview")..];
    assert!(
        preview.contains(
            "-- step 2 `migrate` (migrate): migration 20250101000000 add labels — migrations/20250101000000_add_labels.up.sql (in one transaction with its _sqlx_migrations record)\n-- labels for recipes\nCREATE TABLE labels (id INTEGER PRIMARY KEY, name TEXT NOT NULL);\n"
        ),
        "{preview}"
    );
    assert!(
        preview.contains("-- step 3 `seed-labels` (sql)\nINSERT INTO labels (name) SELECT 'vegan' WHERE NOT EXISTS (SELECT 1 FROM labels WHERE name = 'vegan');\n-- step 3 `seed-labels` (sql): its undo, run on rollback only if the step changed rows\nDELETE FROM labels WHERE name = 'vegan';\n"),
        "{preview}"
    );
    let rollback = &preview[preview
        .find("\nRollback SQL: if a later step fails, the undo of step 2 `migrate` runs these down files, newest first\n")
        .unwrap_or_else(|| panic!("no rollback section:\n{preview}"))..];
    // Every down file, newest first, as written.
    let mut at = 0;
    let mut versions: Vec<_> = shipped_migrations(&p).into_iter().collect();
    versions.reverse();
    for (version, description, file, _) in &versions {
        let down = file.replace(".up.sql", ".down.sql");
        let block = format!(
            "-- migration {version} {description} (down) — {down}\n{}",
            p.read(&down)
        );
        let found = rollback[at..]
            .find(&block)
            .unwrap_or_else(|| panic!("{block}\nnot found in order in:\n{rollback}"));
        at += found + block.len();
    }

    let plan = p.run(&["plan", "--sql", "--json"]);
    plan.success();
    let plan = json(&plan.stdout());
    let labels = plan["database"]["pending"]
        .as_array()
        .unwrap()
        .last()
        .unwrap();
    assert_eq!(labels["down_sql"], "DROP TABLE labels;\n");
    assert_eq!(
        labels["down_file"],
        "migrations/20250101000000_add_labels.down.sql"
    );
    assert_eq!(
        plan["steps"][2]["undo_sql"],
        "DELETE FROM labels WHERE name = 'vegan';"
    );
    assert!(
        plan["steps"][2]["sql"]
            .as_str()
            .unwrap()
            .starts_with("INSERT INTO labels")
    );
    assert!(plan["steps"][1].get("command").is_none());
}

#[test]
fn plan_sql_shows_the_external_migrators_command_line_with_the_url_password_masked() {
    const PASSWORD: &str = "Pr3view-S3cret-pw";
    let server = server();
    let db = server.database();
    let p = Project::new();
    std::fs::remove_dir_all(p.file("migrations")).unwrap();
    // The password comes from a secret reference; PostgreSQL here trusts every login.
    let url = server.url(&db).replacen(
        "postgres://postgres@",
        "postgres://postgres:${secret:env:PREVIEW_DB_PASSWORD}@",
        1,
    );
    let literal = url.replace("${secret:env:PREVIEW_DB_PASSWORD}", PASSWORD);
    let config = replace_once(
        &p.default_config(),
        "database: { kind: sqlite, url: \"sqlite://state/app.db\" }",
        &format!("database: {{ kind: postgres, url: \"{url}\" }}"),
    );
    p.write_config(&replace_once(&config, "migrations: migrations\n", ""));
    // `up` quotes the URL with its password, as a team hard-coding it would.
    p.write_pipeline(&format!(
        r#"name: deploy
steps:
  - uses: preflight
  - uses: migrate
    with:
      tool: command
      status: "echo 20240101"
      up: "echo migrating \"$DATABASE_URL\" --also '{literal}'"
      down: "echo down {{version}}"
"#
    ));
    let run = |args: &[&str]| {
        let out = p
            .cmd()
            .args(args)
            .env("PREVIEW_DB_PASSWORD", PASSWORD)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!all.contains(PASSWORD), "the password is shown:\n{all}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = run(&["plan", "--sql"]);
    let dir = p.path().display().to_string();
    assert!(
        text.contains(&format!(
            "-- step 2 `migrate` (migrate): command line, run in {dir}\nDATABASE_URL=*** CUTOVER_ENVIRONMENT='local' sh -c 'echo migrating \"$DATABASE_URL\" --also '\\''***'\\'''\n"
        )),
        "{text}"
    );
    let plan = json(&run(&["plan", "--sql", "--json", "--out", "approved.json"]));
    assert_eq!(
        plan["steps"][1]["command"],
        "DATABASE_URL=*** CUTOVER_ENVIRONMENT='local' sh -c 'echo migrating \"$DATABASE_URL\" --also '\\''***'\\'''"
    );
    assert_eq!(plan["steps"][1]["workdir"], dir.as_str());
    assert!(!p.read("approved.json").contains(PASSWORD));
    assert_eq!(
        plan["digest"],
        json(&run(&["plan", "--json"]))["digest"],
        "the preview does not change the digest"
    );
}
