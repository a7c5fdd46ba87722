//! The PostgreSQL adapter against a real server.

mod support;

use std::time::{Duration, Instant};

use sha2::Digest;
use support::pg::{project, server};
use support::{Project, Run};

fn seed(db: &str) {
    server().psql(
        db,
        "INSERT INTO users (id, email, display_name) VALUES (1, 'a@example.com', 'A'), (2, 'b@example.com', 'B');
         INSERT INTO recipes (id, user_id, title, servings, calories) VALUES (1, 1, 'Soup', 2, 300), (2, 2, 'Salad', 1, NULL);",
    );
}

#[test]
fn full_deploy_records_migrations_as_sqlx_does() {
    let (p, db) = project();
    let run = p.run(&["deploy"]);
    run.success();
    // The verified backup's scratch copy is dropped after its connections are closed, so
    // the server never has to cut them (which the driver would print as a warning).
    assert!(!run.stderr().contains("WARN"), "{}", run.stderr());
    // Nothing pending: the run is mostly the verified backup, where the warning showed.
    for _ in 0..3 {
        let again = p.run(&["deploy"]);
        again.success();
        assert!(!again.stderr().contains("WARN"), "{}", again.stderr());
    }
    let rows = server().psql(
        &db,
        "SELECT version, description, success, encode(checksum, 'hex') FROM _sqlx_migrations ORDER BY version",
    );
    let rows: Vec<&str> = rows.lines().collect();
    assert_eq!(rows.len(), 6);
    // Exactly what `sqlx migrate run` writes: description from the file name, SHA-384 of
    // the up file.
    let up = std::fs::read(p.file("migrations/20240101120000_create_users.up.sql")).unwrap();
    let expected = format!(
        "20240101120000|create users|t|{}",
        hex::encode(sha2::Sha384::digest(&up))
    );
    assert_eq!(rows[0], expected);
    // The backup is a pg_dump custom archive, verified by a scratch restore.
    let list = p.run(&["backup", "list", "--output", "json"]);
    assert!(
        list.stdout().contains("pg_dump-custom"),
        "{}",
        list.stdout()
    );
    // Other tests of this binary make scratch copies of their own databases meanwhile.
    assert!(
        !server()
            .psql("postgres", "SELECT datname FROM pg_database")
            .contains(&format!("cutover_roundtrip_{db}_")),
        "the scratch database is dropped"
    );
    assert_eq!(p.platform(), "maintenance=false\njobs=3\n");
}

#[test]
fn a_database_migrated_by_sqlx_is_picked_up_with_nothing_reapplied() {
    let (p, db) = project();
    // Apply the first three migrations the way sqlx-cli does, recording them in its table.
    server().psql(
        &db,
        "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL, checksum BYTEA NOT NULL, execution_time BIGINT NOT NULL)",
    );
    for name in [
        "20240101120000_create_users",
        "20240101120100_create_recipes",
        "20240101120200_create_ingredients",
    ] {
        let sql = p.read(&format!("migrations/{name}.up.sql"));
        server().psql(&db, &sql);
        let (version, words) = name.split_once('_').unwrap();
        server().psql(
            &db,
            &format!(
                "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES ({version}, '{}', true, '\\x{}', 1)",
                words.replace('_', " "),
                hex::encode(sha2::Sha384::digest(sql.as_bytes()))
            ),
        );
    }
    let plan = p.run(&["plan", "--json"]);
    plan.success();
    let plan: serde_json::Value = serde_json::from_str(&plan.stdout()).unwrap();
    assert_eq!(plan["database"]["current_version"], 20_240_101_120_200_i64);
    assert_eq!(plan["database"]["pending"].as_array().unwrap().len(), 3);
    p.run(&["deploy"]).success();
}

#[test]
fn rollback_by_down_migrations_restores_schema_and_rows() {
    let (p, db) = project();
    p.run(&["deploy"]).success();
    seed(&db);
    p.add_migration("20250101000000_add_rating",
        "ALTER TABLE recipes ADD COLUMN rating INTEGER NOT NULL DEFAULT 3;\nUPDATE recipes SET title = title || '!';\n",
        Some(
            "UPDATE recipes SET title = rtrim(title, '!');\nALTER TABLE recipes DROP COLUMN rating;\n",
        ),
    );
    p.fail_validation_once_migrated("fails-after-migrating");
    p.write_pipeline(&p.pipeline().replace("rollback: auto", "rollback: down"));
    let before = server().snapshot(&db);
    let run = p.run(&["deploy"]);
    run.expect_code(1);
    assert!(
        run.stderr().contains("revert 20250101000000")
            && run.stderr().contains("checked: schema ("),
        "{}",
        run.stderr()
    );
    assert_eq!(server().snapshot(&db), before);
    assert_eq!(p.platform(), "maintenance=false\njobs=3\n");
    assert!(p.locks().is_empty());
}

/// A migration's `COMMIT` goes out with the next migration's script (one round trip per
/// migration); when the server refuses it, the error names that migration, the next one
/// never runs, and the run rolls back.
#[test]
fn a_commit_refused_with_the_next_migration_is_blamed_on_its_own_migration() {
    let (p, db) = project();
    p.run(&["deploy"]).success();
    seed(&db);
    p.add_migration("20250101000000_add_notes",
        "CREATE TABLE notes (recipe_id INTEGER REFERENCES recipes (id) DEFERRABLE INITIALLY DEFERRED);\nINSERT INTO notes VALUES (999);\n",
        Some("DROP TABLE notes;\n"),
    );
    p.add_migration(
        "20250101000100_add_note_tags",
        "CREATE TABLE note_tags (id INTEGER);\n",
        Some("DROP TABLE note_tags;\n"),
    );
    let before = server().snapshot(&db);
    let run = p.run(&["deploy"]);
    run.expect_code(1);
    assert!(
        run.stderr()
            .contains("migration 20250101000000 could not be committed"),
        "{}",
        run.stderr()
    );
    assert!(run.stderr().contains("foreign key"), "{}", run.stderr());
    assert_eq!(server().snapshot(&db), before);
    assert_eq!(
        server()
            .psql(&db, "SELECT to_regclass('note_tags') IS NULL")
            .trim(),
        "t"
    );
}

/// A migration that cannot end its transaction is recorded by one statement after its SQL;
/// one that can keeps the record written first, so committing part-way and then failing
/// leaves it dirty; and one that leaves a string open swallows its record and fails whole.
#[test]
fn records_stay_honest_whether_or_not_a_migration_ends_its_transaction() {
    let (p, db) = project();
    p.run(&["migrate", "up"]).success();
    let history = |version: &str| {
        server()
            .psql(
                &db,
                &format!(
                    "SELECT success, execution_time > 0 FROM _sqlx_migrations WHERE version = {version}"
                ),
            )
            .trim()
            .to_owned()
    };
    p.add_migration(
        "20250101000000_add_one_record",
        "CREATE TABLE one_record (id INTEGER);\n",
        None,
    );
    p.run(&["migrate", "up"]).success();
    assert_eq!(history("20250101000000"), "t|t");

    p.add_migration(
        "20250101000100_unclosed",
        "INSERT INTO one_record VALUES (1); SELECT 'never closed\n",
        None,
    );
    let before = server().snapshot(&db);
    let run = p.run(&["migrate", "up"]);
    assert_ne!(run.code(), 0, "{}", run.stderr());
    assert!(run.stderr().contains("20250101000100"), "{}", run.stderr());
    assert_eq!(history("20250101000100"), "");
    assert_eq!(server().snapshot(&db), before);
    std::fs::remove_file(p.file("migrations/20250101000100_unclosed.up.sql")).unwrap();

    p.add_migration(
        "20250101000200_half_committed",
        "CREATE TABLE committed_early (id INTEGER);\nCOMMIT;\nSELECT 1 / 0;\n",
        None,
    );
    let run = p.run(&["migrate", "up"]);
    assert_ne!(run.code(), 0, "{}", run.stderr());
    assert_eq!(history("20250101000200"), "f|f");
    assert_eq!(
        server()
            .psql(&db, "SELECT to_regclass('committed_early') IS NOT NULL")
            .trim(),
        "t"
    );
}

/// Migrations after the first on a connection go to the server several in one message,
/// each its own transaction with its record. A failure part-way keeps exactly the ones
/// before it, applied and recorded; the error names the one that failed, also when it is
/// a migration's `COMMIT` the server refuses; nothing after it runs.
#[test]
fn a_failure_inside_a_batch_of_migrations_keeps_exactly_the_ones_before_it() {
    let (p, db) = project();
    p.run(&["migrate", "up"]).success();
    seed(&db);
    let recorded = || {
        server()
            .psql(
                &db,
                "SELECT string_agg(version::text || ':' || success::text, ',' ORDER BY version) FROM _sqlx_migrations WHERE version >= 20250101000000",
            )
            .trim()
            .to_owned()
    };
    let tables = || {
        server()
            .psql(
                &db,
                "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE relname LIKE 'batch_%' AND relkind = 'r'",
            )
            .trim()
            .to_owned()
    };
    for (name, sql) in [
        ("20250101000000_first", "CREATE TABLE batch_0 (id INTEGER);"),
        (
            "20250101000100_second",
            "CREATE TABLE batch_1 (id INTEGER);",
        ),
        ("20250101000200_third", "CREATE TABLE batch_2 (id INTEGER);"),
        (
            "20250101000300_fails",
            "CREATE TABLE batch_3 (id INTEGER);\nSELECT 1 / 0;",
        ),
        ("20250101000400_never", "CREATE TABLE batch_4 (id INTEGER);"),
    ] {
        p.add_migration(name, sql, None);
    }
    let run = p.run(&["migrate", "up"]);
    assert_ne!(run.code(), 0, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("migration 20250101000300 (fails) failed"),
        "{}",
        run.stderr()
    );
    assert!(
        run.stderr().contains("division by zero"),
        "{}",
        run.stderr()
    );
    assert_eq!(
        recorded(),
        "20250101000000:true,20250101000100:true,20250101000200:true"
    );
    assert_eq!(tables(), "batch_0,batch_1,batch_2");

    // A refused COMMIT inside the message: the migration whose COMMIT it was is blamed.
    p.write(
        "migrations/20250101000300_fails.up.sql",
        "CREATE TABLE batch_3 (recipe_id INTEGER REFERENCES recipes (id) DEFERRABLE INITIALLY DEFERRED);\nINSERT INTO batch_3 VALUES (999);\n",
    );
    p.add_migration(
        "20250101000250_before",
        "CREATE TABLE batch_25 (id INTEGER);",
        None,
    );
    let run = p.run(&["migrate", "up"]);
    assert_ne!(run.code(), 0, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("migration 20250101000300 could not be committed"),
        "{}",
        run.stderr()
    );
    assert!(run.stderr().contains("foreign key"), "{}", run.stderr());
    assert_eq!(
        recorded(),
        "20250101000000:true,20250101000100:true,20250101000200:true,20250101000250:true"
    );
    assert_eq!(tables(), "batch_0,batch_1,batch_2,batch_25");
}

/// Down migrations go several in one message too: a down migration that fails stops
/// the batch with the newer ones reverted, itself and the older ones untouched, and the
/// error names it; the run's rollback then applies the reverted ones again.
#[test]
fn a_failing_down_migration_inside_a_batch_reverts_none_of_its_batch() {
    let (p, db) = project();
    p.run(&["migrate", "up"]).success();
    for (i, down) in [
        "DROP TABLE rev_0;",
        "DROP TABLE rev_1;",
        "DROP TABLE rev_2; SELECT 1 / 0;",
        "DROP TABLE rev_3;",
        "DROP TABLE rev_4;",
    ]
    .iter()
    .enumerate()
    {
        p.add_migration(
            &format!("2025010100{i}000_rev_{i}"),
            &format!("CREATE TABLE rev_{i} (id INTEGER);"),
            Some(down),
        );
    }
    p.run(&["migrate", "up"]).success();
    let run = p.run(&["migrate", "down", "--to", "20240301100100"]);
    assert_ne!(run.code(), 0, "{}", run.stderr());
    // The batch reverts in one transaction: the failure takes the two newer reverts back
    // with it, so none is reported reverted and the history never changed.
    for (version, reverted) in [
        ("20250101004000", false),
        ("20250101003000", false),
        ("20250101002000", false),
        ("20250101001000", false),
    ] {
        assert_eq!(
            run.stderr().contains(&format!("reverted {version}")),
            reverted,
            "{version}: {}",
            run.stderr()
        );
    }
    assert!(
        run.stderr()
            .contains("undo database: migrate up to 20250101004000 — ok"),
        "{}",
        run.stderr()
    );
    assert!(
        run.stderr()
            .contains("migration 20250101002000 (rev 2 (down)) failed"),
        "{}",
        run.stderr()
    );
    assert_eq!(
        server()
            .psql(
                &db,
                "SELECT string_agg(version::text || ':' || success::text, ',' ORDER BY version) FROM _sqlx_migrations WHERE version >= 20250101000000",
            )
            .trim(),
        "20250101000000:true,20250101001000:true,20250101002000:true,20250101003000:true,20250101004000:true"
    );
    assert_eq!(
        server()
            .psql(
                &db,
                "SELECT string_agg(relname, ',' ORDER BY relname) FROM pg_class WHERE relname LIKE 'rev_%' AND relkind = 'r'",
            )
            .trim(),
        "rev_0,rev_1,rev_2,rev_3,rev_4"
    );
}

#[test]
fn rollback_by_restore_brings_back_every_row_and_drops_new_objects() {
    let (p, db) = project();
    p.run(&["deploy"]).success();
    seed(&db);
    // No down file: `rollback: auto` restores the backup taken by the pipeline.
    p.add_migration("20250101000000_irreversible",
        "CREATE TABLE audit (id BIGINT PRIMARY KEY, note TEXT);\nINSERT INTO audit VALUES (1, 'x');\nDELETE FROM recipes WHERE id = 2;\n",
        None,
    );
    p.fail_validation_once_migrated("fails-after-migrating");
    let before = server().snapshot(&db);
    let run = p.run(&["deploy"]);
    run.expect_code(1);
    assert!(run.stderr().contains("restore backup"), "{}", run.stderr());
    assert_eq!(server().snapshot(&db), before);
}

#[test]
fn ten_runners_with_separate_state_folders_exclude_each_other_in_the_database() {
    const N: usize = 10;
    let (first, db) = project();
    let pipeline = first.read("pipelines/deploy.yaml").replace(
        "  - uses: validate",
        "  - id: hold\n    uses: command\n    with: { run: \"touch holding; while [ ! -e release ]; do sleep 0.05; done\" }\n  - uses: validate",
    );
    assert!(pipeline.contains("id: hold"));
    // Every runner shares only the database, as CI machines would: its own folder, state
    // and lock file.
    let runners: Vec<Project> = (0..N)
        .map(|_| {
            let p = Project::new();
            p.write_config(&first.read("deploy.yaml"));
            p.write("pipelines/deploy.yaml", &pipeline);
            p
        })
        .collect();
    let (tx, rx) = std::sync::mpsc::channel::<(usize, std::process::Output)>();
    for (i, p) in runners.iter().enumerate() {
        let child = p
            .cmd()
            .arg("deploy")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let tx = tx.clone();
        std::thread::spawn(move || {
            tx.send((i, child.wait_with_output().unwrap())).ok();
        });
    }
    drop(tx);
    // All but one stop at the database lock; the winner parks at its hold step.
    let mut losers = Vec::new();
    for _ in 1..N {
        let (i, output) = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("all but one runner stop at once");
        losers.push(i);
        let run = Run(output);
        run.expect_code(4);
        assert!(run.stderr().contains("in the database"), "{}", run.stderr());
        assert!(
            runners[i].calls().is_empty(),
            "a blocked runner touched nothing"
        );
    }
    let winner = (0..N).find(|i| !losers.contains(i)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !runners[winner].file("holding").exists() {
        assert!(
            Instant::now() < deadline,
            "the winner never reached its hold step"
        );
        std::thread::yield_now();
    }
    runners[winner].write("release", "");
    let (i, output) = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the winner finishes");
    assert_eq!(i, winner);
    Run(output).success();
    // Exactly one migrated: every migration is recorded once.
    assert_eq!(
        server()
            .psql(&db, "SELECT count(*) FROM _sqlx_migrations")
            .trim(),
        "6"
    );
}

#[test]
fn unreachable_or_missing_databases_are_bad_input_and_touch_nothing() {
    let p = Project::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for url in [
        format!("postgres://app:s3cret@127.0.0.1:{closed}/app?sslmode=disable"),
        server().url("no_such_database"),
    ] {
        p.write_config(&p.default_config().replace(
            "database: { kind: sqlite, url: \"sqlite://state/app.db\" }",
            &format!("database: {{ kind: postgres, url: \"{url}\", lock_timeout: 2s }}"),
        ));
        let run = p.run(&["deploy"]);
        run.expect_code(2);
        assert!(
            run.stderr().contains("cannot connect") || run.stderr().contains("cannot read"),
            "{}",
            run.stderr()
        );
        assert!(
            !run.all().contains("s3cret"),
            "the password is masked: {}",
            run.all()
        );
        assert!(p.calls().is_empty() && p.journals().is_empty());
    }
}

#[test]
fn pg_dump_missing_is_bad_input_and_touches_nothing() {
    let (p, db) = project();
    p.run(&["deploy"]).success();
    seed(&db);
    p.add_migration(
        "20250101000000_add_rating",
        "ALTER TABLE recipes ADD COLUMN rating INTEGER NOT NULL DEFAULT 3;\n",
        Some("ALTER TABLE recipes DROP COLUMN rating;\n"),
    );
    std::fs::remove_file(p.file("calls.log")).unwrap();
    let journals = p.journals().len();
    let before = server().snapshot(&db);
    // PATH holds everything the run needs except pg_dump: the shell and `cat` for the
    // platform commands, and the other PostgreSQL client tools.
    let bin = tempfile::tempdir().unwrap();
    let link = |name: &str, target: &std::path::Path| {
        std::os::unix::fs::symlink(target, bin.path().join(name)).unwrap();
    };
    link("sh", std::path::Path::new("/bin/sh"));
    link("cat", std::path::Path::new("/bin/cat"));
    link("echo", std::path::Path::new("/bin/echo"));
    link("psql", &support::pg::tool("psql"));
    link("pg_restore", &support::pg::tool("pg_restore"));
    let deploy = |p: &Project| {
        Run(p
            .cmd()
            .arg("deploy")
            .env("PATH", bin.path())
            .output()
            .unwrap())
    };

    let run = deploy(&p);
    run.expect_code(2);
    assert!(run.stderr().contains("pg_dump"), "{}", run.stderr());
    assert!(run.stderr().contains("not installed"), "{}", run.stderr());
    assert_eq!(server().snapshot(&db), before);
    assert_eq!(p.platform(), "maintenance=false\njobs=3\n");
    assert!(p.calls().is_empty(), "{:?}", p.calls());
    assert_eq!(p.journals().len(), journals, "no run started");
    assert!(p.locks().is_empty());

    // With pg_dump added, the same PATH is enough for the whole deploy.
    link("pg_dump", &support::pg::tool("pg_dump"));
    deploy(&p).success();
    assert_ne!(server().snapshot(&db), before);
}

/// A database name with a typo is exit 2 naming the command that would create it;
/// cutover itself never creates it.
#[test]
fn a_database_that_does_not_exist_is_bad_input_with_the_createdb_line() {
    let (p, db) = project();
    let typo = format!("{db}_typo");
    p.write_config(
        &p.read("deploy.yaml")
            .replace(&format!("/{db}?"), &format!("/{typo}?")),
    );
    for args in [&["plan"][..], &["migrate", "status"]] {
        let run = p.run(args);
        run.expect_code(2);
        assert!(
            run.stderr()
                .contains(&format!("create it with `createdb {typo}`")),
            "{args:?}: {}",
            run.stderr()
        );
    }
    assert!(
        !server()
            .psql("postgres", "SELECT datname FROM pg_database")
            .contains(&typo)
    );
}

/// `-- cutover:no-transaction` on PostgreSQL: `CREATE INDEX CONCURRENTLY` on a table with
/// rows runs (its statements go to the server one by one, outside any transaction). A
/// unique one that fails on duplicates leaves an INVALID index behind; the migration
/// stays dirty, and the undo (its down file) drops the index: the state is as before.
#[test]
fn create_index_concurrently_and_its_invalid_leftover() {
    let (p, db) = project();
    p.run(&["deploy"]).success();
    server().psql(
        &db,
        "INSERT INTO users (id, email, display_name) VALUES (1, 'a@example.com', 'Same'), (2, 'b@example.com', 'Same');",
    );
    p.add_migration(
        "20250101000000_index_names",
        "-- cutover:no-transaction\nCREATE INDEX CONCURRENTLY idx_users_name ON users (display_name);\nCREATE INDEX CONCURRENTLY idx_users_created ON users (created_at);\n",
        Some("-- cutover:no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS idx_users_created;\nDROP INDEX CONCURRENTLY IF EXISTS idx_users_name;\n"),
    );
    p.run(&["deploy"]).success();
    assert_eq!(
        server().psql(
            &db,
            "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname LIKE 'idx_users_%' ORDER BY 1"
        ),
        "idx_users_created|t\nidx_users_name|t\n"
    );
    p.run(&["migrate", "down", "--to", "20240301100100"])
        .success();
    assert_eq!(
        server().psql(
            &db,
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'idx_users_%'"
        ),
        "0\n"
    );

    // Unique on duplicate names: the build fails and leaves the index INVALID.
    let unique = (
        "-- cutover:no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY idx_users_name ON users (display_name);\n",
        "-- cutover:no-transaction\nDROP INDEX CONCURRENTLY IF EXISTS idx_users_name;\n",
    );
    p.add_migration("20250101000000_index_names", unique.0, Some(unique.1));
    p.edit_pipeline("rollback: auto", "rollback: down");
    let failed = p.run(&["deploy"]);
    failed.expect_code(1);
    assert!(
        failed.stderr().contains("could not create unique index"),
        "{}",
        failed.stderr()
    );
    assert!(
        failed.stderr().contains("as before the run, checked"),
        "{}",
        failed.stderr()
    );
    assert_eq!(
        server().psql(
            &db,
            "SELECT count(*) FROM pg_class WHERE relname = 'idx_users_name'"
        ),
        "0\n",
        "the undo dropped the INVALID index"
    );

    // With no undo, what the failure leaves: the INVALID index and a dirty record.
    p.edit_pipeline("rollback: down", "rollback: none");
    p.run(&["deploy"]).expect_code(1);
    assert_eq!(
        server().psql(
            &db,
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'idx_users_name'"
        ),
        "f\n"
    );
    assert_eq!(
        server().psql(
            &db,
            "SELECT success FROM _sqlx_migrations WHERE version = 20250101000000"
        ),
        "f\n"
    );
    let refused = p.run(&["deploy"]);
    refused.expect_code(2);
    assert!(
        refused.stderr().contains("migrate resolve 20250101000000"),
        "{}",
        refused.stderr()
    );
}

/// Drift on PostgreSQL: a column and an index added by hand between two deploys are
/// named and refused; accepted with a reason, the next deploy goes on.
#[test]
fn a_hand_made_alter_table_is_drift() {
    let (p, db) = project();
    p.run(&["deploy"]).success();
    server().psql(
        &db,
        "ALTER TABLE users ADD COLUMN hotfix text; CREATE INDEX idx_users_hotfix ON users (hotfix);",
    );
    p.add_migration(
        "20250101000000_add_flag",
        "ALTER TABLE users ADD COLUMN flag integer;",
        Some("ALTER TABLE users DROP COLUMN flag;"),
    );
    let refused = p.run(&["deploy"]);
    refused.expect_code(2);
    for named in [
        "table public.users: its definition differs from the recorded one",
        "index public.idx_users_hotfix: in the database, not in the recorded schema",
    ] {
        assert!(
            refused.stderr().contains(named),
            "{named}:\n{}",
            refused.stderr()
        );
    }
    assert_eq!(
        server().psql(
            &db,
            "SELECT count(*) FROM _sqlx_migrations WHERE version = 20250101000000"
        ),
        "0\n"
    );
    p.run(&["migrate", "accept-drift", "--reason", "hot-fix kept"])
        .success();
    p.run(&["deploy"]).success();
    assert!(p.run(&["migrate", "diff"]).stdout().contains("no drift"));
}

/// Adopting and repairing on PostgreSQL: a schema made by hand adopted by `migrate
/// baseline`; `migrate status` names when, how long and who; an applied file edited by a
/// comment is accepted by `migrate repair` after comparing it with the text in git.
#[test]
fn baseline_status_and_repair() {
    let (p, db) = project();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .current_dir(p.path())
            .output()
            .expect("git runs");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "migrations"]);
    git(&["commit", "-q", "-m", "migrations"]);
    for file in [
        "migrations/20240101120000_create_users.up.sql",
        "migrations/20240101120100_create_recipes.up.sql",
    ] {
        server().psql(&db, &p.read(file));
    }
    p.run(&["migrate", "baseline", "--version", "20240101120100"])
        .success();
    assert_eq!(
        server().psql(
            &db,
            "SELECT version, success, execution_time FROM _sqlx_migrations ORDER BY version"
        ),
        "20240101120000|t|-1\n20240101120100|t|-1\n"
    );
    p.run(&["deploy"]).success();
    let status = p.run(&["migrate", "status", "--output", "json"]);
    let value: serde_json::Value = serde_json::from_str(&status.stdout()).unwrap();
    let rows = value["result"]["migrations"].as_array().unwrap();
    assert_eq!(rows.len(), 6);
    assert_eq!(rows[1]["command"], "migrate baseline");
    assert_eq!(rows[2]["command"], "deploy");
    assert!(
        rows[2]["execution_ms"].as_f64().unwrap() >= 0.0,
        "{}",
        rows[2]
    );
    for row in rows {
        assert!(row["installed_on"].as_str().unwrap().len() >= 19, "{row}");
        assert!(row["installed_by"].as_str().unwrap().contains('@'), "{row}");
    }

    let file = "migrations/20240101120100_create_recipes.up.sql";
    p.write(file, &format!("-- Recipes, by user.\n\n{}", p.read(file)));
    p.run(&["deploy"]).expect_code(2);
    let repaired = p.run(&["migrate", "repair", "20240101120100"]);
    repaired.success();
    assert!(
        repaired
            .stdout()
            .contains("same statements as the applied text"),
        "{}",
        repaired.stdout()
    );
    p.run(&["deploy"]).success();
}

/// Restores backup `good` in place with nothing around it: no safety backup to undo a
/// restore that should not have changed anything.
fn restore(p: &Project) -> Run {
    p.write(
        "pipelines/restore-only.yaml",
        "name: restore-only\nsteps:\n  - id: database\n    uses: migrate\n    with: { to: target }\n",
    );
    p.run(&[
        "rollback",
        "--backup",
        "good",
        "-p",
        "pipelines/restore-only.yaml",
    ])
}

#[test]
fn a_restore_in_place_that_cannot_read_its_whole_backup_changes_nothing() {
    let (p, db) = project();
    p.write_config(&support::replace_once(
        &p.read("deploy.yaml"),
        "path: state/backups }",
        "path: state/backups, compression: none }",
    ));
    p.run(&["deploy"]).success();
    seed(&db);
    p.run(&["backup", "create", "--name", "good"]).success();
    let dump = p.file("state/backups/good.dump");
    let good = std::fs::read(&dump).unwrap();
    // What the restores would replace: any change to it shows.
    server().psql(&db, "DELETE FROM recipes WHERE id = 1");
    let before = server().snapshot(&db);

    // One letter changed inside a row. pg_restore reads the archive without complaint,
    // so only the checksum, read as the backup streams in, stands between it and a
    // committed restore of the wrong data.
    let at = good
        .windows(13)
        .position(|w| w == b"b@example.com")
        .expect("the row is in the uncompressed archive as text");
    let mut flipped = good.clone();
    flipped[at] = b'c';
    std::fs::write(&dump, &flipped).unwrap();
    let alone = std::process::Command::new(support::pg::tool("pg_restore"))
        .args(["--file=-"])
        .arg(&dump)
        .output()
        .unwrap();
    assert!(alone.status.success());
    assert!(String::from_utf8_lossy(&alone.stdout).contains("c@example.com"));
    let run = restore(&p);
    run.expect_code(1);
    assert!(
        run.stderr()
            .contains("backup good is damaged: manifest says"),
        "{}",
        run.all()
    );
    assert_eq!(server().snapshot(&db), before);

    // Cut short, its manifest matching: pg_restore fails half-way, after psql has run
    // the first half of what it wrote.
    support::rewrite_backup(&p, "good", &good[..good.len() * 3 / 4]);
    let run = restore(&p);
    run.expect_code(1);
    assert!(run.stderr().contains("pg_restore"), "{}", run.all());
    assert_eq!(server().snapshot(&db), before);

    // Whole again, it restores.
    support::rewrite_backup(&p, "good", &good);
    restore(&p).success();
    assert_ne!(server().snapshot(&db), before);
    assert_eq!(
        server()
            .psql(&db, "SELECT id FROM recipes ORDER BY id")
            .trim(),
        "1\n2"
    );
}
