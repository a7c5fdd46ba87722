//! `migrate baseline` and `migrate repair` on real SQLite files: adopting a database whose
//! schema was made without cutover, and accepting a harmless edit of an applied file.

mod support;

use std::process::Command;

use sha2::Digest;
use support::{Project, exec_sql};

/// Rows of the history table: version and checksum (hex).
fn history(p: &Project) -> Vec<(i64, String)> {
    support::rt().block_on(async {
        use sqlx::Connection;
        let opts = sqlx::sqlite::SqliteConnectOptions::new().filename(p.file("state/app.db"));
        let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as(
            "SELECT version, checksum FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        rows.into_iter().map(|(v, c)| (v, hex::encode(c))).collect()
    })
}

fn checksum(p: &Project, file: &str) -> String {
    hex::encode(sha2::Sha384::digest(std::fs::read(p.file(file)).unwrap()))
}

/// The journal facts of kind `fact`, with the user of the run that recorded each.
fn facts(p: &Project, fact: &str) -> Vec<(serde_json::Value, String)> {
    p.journals()
        .iter()
        .flat_map(|run| {
            let user = run
                .iter()
                .find(|r| r["record"] == "run_started")
                .map(|r| r["user"].as_str().unwrap_or_default().to_owned())
                .unwrap_or_default();
            run.iter()
                .filter(|r| r["record"] == "fact" && r["fact"] == fact)
                .map(move |r| (r.clone(), user.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn baseline_adopts_a_schema_made_without_cutover() {
    let p = Project::new();
    let first_three = [
        "migrations/20240101120000_create_users.up.sql",
        "migrations/20240101120100_create_recipes.up.sql",
        "migrations/20240101120200_create_ingredients.up.sql",
    ];
    // An empty database has nothing to adopt.
    p.write("state/app.db", "");
    let empty = p.run(&["migrate", "baseline", "--version", "20240101120200"]);
    empty.expect_code(2);
    assert!(
        empty.stderr().contains("nothing to adopt"),
        "{}",
        empty.stderr()
    );

    // The schema made by hand, as the first three migrations would.
    for file in first_three {
        exec_sql(&p.file("state/app.db"), &p.read(file));
    }
    let typo = p.run(&["migrate", "baseline", "--version", "2024010112020"]);
    typo.expect_code(2);
    assert!(typo.stderr().contains("did you mean"), "{}", typo.stderr());

    let adopted = p.run(&[
        "migrate",
        "baseline",
        "--version",
        "20240101120200",
        "--reason",
        "schema compared by hand",
    ]);
    adopted.success();
    assert!(
        adopted
            .stdout()
            .contains("3 migration(s) up to 20240101120200 recorded as applied"),
        "{}",
        adopted.stdout()
    );
    let expected: Vec<(i64, String)> = first_three
        .iter()
        .map(|f| {
            let version = f["migrations/".len()..][..14].parse().unwrap();
            (version, checksum(&p, f))
        })
        .collect();
    assert_eq!(history(&p), expected, "recorded as sqlx-cli records them");
    let baselined = facts(&p, "migrations_baselined");
    assert_eq!(baselined.len(), 1);
    assert_eq!(baselined[0].0["reason"], "schema compared by hand");
    assert!(!baselined[0].1.is_empty(), "the journal names who did it");

    // Only into an empty history.
    let again = p.run(&["migrate", "baseline", "--version", "20240101120000"]);
    again.expect_code(2);
    assert!(
        again.stderr().contains("already holds 3 migration(s)"),
        "{}",
        again.stderr()
    );
    // The deploy applies the rest, and nothing twice; the status tells them apart.
    p.run(&["deploy"]).success();
    assert_eq!(history(&p).len(), 6);
    let status = p.run(&["migrate", "status", "--output", "json"]);
    let rows: serde_json::Value = serde_json::from_str(&status.stdout()).unwrap();
    let commands: Vec<&str> = rows["result"]["migrations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["command"].as_str().unwrap())
        .collect();
    assert_eq!(
        commands,
        [
            "migrate baseline",
            "migrate baseline",
            "migrate baseline",
            "deploy",
            "deploy",
            "deploy"
        ]
    );
    assert!(
        p.run(&["migrate", "status"])
            .stdout()
            .contains("(baseline)")
    );
}

fn git(p: &Project, args: &[&str]) {
    let out = Command::new("git")
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args(args)
        .current_dir(p.path())
        .output()
        .expect("git runs");
    assert!(out.status.success(), "git {args:?}: {out:?}");
}

#[test]
fn repair_accepts_a_comment_and_refuses_a_changed_statement_unless_forced() {
    let p = Project::new();
    git(&p, &["init", "-q"]);
    git(&p, &["add", "migrations"]);
    git(&p, &["commit", "-q", "-m", "migrations"]);
    p.run(&["deploy"]).success();
    let file = "migrations/20240101120100_create_recipes.up.sql";
    let original = p.read(file);

    // A comment and blank lines: the deploy refuses, the repair proves it harmless.
    p.write(
        file,
        &format!("-- Recipes belong to users.\n\n{original}\n"),
    );
    let refused = p.run(&["deploy"]);
    refused.expect_code(2);
    assert!(
        refused
            .stderr()
            .contains("`cutover migrate repair 20240101120100` accepts it"),
        "{}",
        refused.stderr()
    );
    let repaired = p.run(&["migrate", "repair"]);
    repaired.success();
    assert!(
        repaired
            .stdout()
            .contains("20240101120100: checksum accepted (same statements"),
        "{}",
        repaired.stdout()
    );
    assert!(history(&p).contains(&(20_240_101_120_100, checksum(&p, file))));
    p.run(&["deploy"]).success();
    p.run(&["migrate", "repair"]).expect_code(2);

    // A changed statement: named, and nothing repaired.
    git(&p, &["commit", "-q", "-am", "comment"]);
    p.write(file, &original.replacen("title", "name", 1));
    let changed = p.run(&["migrate", "repair", "20240101120100"]);
    changed.expect_code(2);
    assert!(
        changed
            .stderr()
            .contains("statement 1 changed since it was applied"),
        "{}",
        changed.stderr()
    );
    let recorded = history(&p);
    assert!(!recorded.contains(&(20_240_101_120_100, checksum(&p, file))));

    // `--force` needs a reason; with one it is accepted and journaled.
    p.run(&["migrate", "repair", "--force"]).expect_code(2);
    p.run(&[
        "migrate",
        "repair",
        "--force",
        "--reason",
        "column renamed in production by hand, ticket OPS-12",
    ])
    .success();
    assert!(history(&p).contains(&(20_240_101_120_100, checksum(&p, file))));
    let accepted = facts(&p, "checksum_accepted");
    assert_eq!(accepted.len(), 2);
    assert!(
        accepted[1].0["how"]
            .as_str()
            .unwrap()
            .contains("forced: statement 1 changed since it was applied (git "),
        "{:?}",
        accepted[1].0
    );
    assert!(
        accepted[1].0["how"]
            .as_str()
            .unwrap()
            .contains("reason: column renamed in production by hand, ticket OPS-12")
    );
}
