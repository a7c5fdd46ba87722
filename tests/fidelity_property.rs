//! Generated releases: random mixes of create/alter/insert/update migrations (some with
//! lossy downs), a seed step, with or without a backup, `rollback: auto` or `down`, and a
//! failure injected at a random step. After every rollback, either the database (schema
//! and every row) and the platform equal the state before the run and cutover says "as
//! before", or cutover exits 3 and names what differs. Never a false "as before".

mod support;

use proptest::prelude::*;
use support::{Project, replace_once};

#[derive(Debug, Clone, Copy)]
enum Change {
    /// A new table with a row; its down drops it.
    CreateTable,
    /// A new column on `users`; its down drops it.
    AddColumn,
    /// A new user; its down deletes it.
    InsertRow,
    /// Appends to every name; its down cuts it off again (lossless).
    AppendToNames,
    /// Upper-cases every name; its down lower-cases them (lossy: 'Ann' comes back 'ann').
    ShoutNames,
}

impl Change {
    fn sql(self, k: usize) -> (String, String) {
        match self {
            Self::CreateTable => (
                format!(
                    "CREATE TABLE gen_{k} (id INTEGER PRIMARY KEY, v TEXT NOT NULL);\nINSERT INTO gen_{k} (id, v) VALUES (1, 'x');\n"
                ),
                format!("DROP TABLE gen_{k};\n"),
            ),
            Self::AddColumn => (
                format!("ALTER TABLE users ADD COLUMN extra_{k} TEXT;\n"),
                format!("ALTER TABLE users DROP COLUMN extra_{k};\n"),
            ),
            Self::InsertRow => (
                format!(
                    "INSERT INTO users (id, email, display_name) VALUES ({id}, 'gen{k}@example.com', 'Gen');\n",
                    id = 100 + k
                ),
                format!("DELETE FROM users WHERE id = {};\n", 100 + k),
            ),
            Self::AppendToNames => (
                "UPDATE users SET display_name = display_name || '!';\n".into(),
                "UPDATE users SET display_name = substr(display_name, 1, length(display_name) - 1);\n".into(),
            ),
            Self::ShoutNames => (
                "UPDATE users SET display_name = upper(display_name);\n".into(),
                "UPDATE users SET display_name = lower(display_name);\n".into(),
            ),
        }
    }
}

fn change() -> impl Strategy<Value = Change> {
    prop_oneof![
        Just(Change::CreateTable),
        Just(Change::AddColumn),
        Just(Change::InsertRow),
        Just(Change::AppendToNames),
        Just(Change::ShoutNames),
    ]
}

/// Where the failing step goes: before the step this line starts.
const ANCHORS: [&str; 8] = [
    "  - id: maintenance-on",
    "  - id: jobs-down",
    "  - uses: backup",
    "  - uses: migrate",
    "  - uses: validate",
    "  - id: maintenance-off",
    "  - id: jobs-up",
    "  - uses: health",
];

#[derive(Debug, Clone)]
struct Release {
    changes: Vec<Change>,
    /// A seed step: `Some(true)` when its row is already there.
    seed: Option<bool>,
    backup: bool,
    rollback_down: bool,
    fail_before: usize,
}

fn release() -> impl Strategy<Value = Release> {
    (
        prop::collection::vec(change(), 1..4),
        prop::option::of(any::<bool>()),
        any::<bool>(),
        any::<bool>(),
        0..ANCHORS.len(),
    )
        .prop_map(
            |(changes, seed, backup, rollback_down, fail_before)| Release {
                changes,
                seed,
                backup,
                rollback_down,
                fail_before,
            },
        )
}

fn check(release: &Release) -> Result<(), TestCaseError> {
    let p = Project::new();
    // With the product's default, so the rehearsal on a copy decides `rollback: auto`.
    p.with_rehearsal();
    p.deployed_with_data();
    if release.seed == Some(true) {
        support::exec_sql(
            &p.file("state/app.db"),
            "INSERT INTO users (id, email, display_name) VALUES (50, 'seed@example.com', 'Seed')",
        );
    }
    for (k, c) in release.changes.iter().enumerate() {
        let (up, down) = c.sql(k);
        p.add_migration(&format!("2025010100000{k}_gen_{k}"), &up, Some(&down));
    }
    let mut pipeline = p.pipeline();
    pipeline = replace_once(
        &pipeline,
        ANCHORS[release.fail_before],
        &format!(
            "  - id: injected-failure\n    uses: sql\n    rehearse: off\n    with: {{ sql: \"INSERT INTO no_such_table VALUES (1)\" }}\n{}",
            ANCHORS[release.fail_before]
        ),
    );
    if release.seed.is_some() {
        pipeline = replace_once(
            &pipeline,
            "  - uses: validate",
            "  - id: seed\n    uses: sql\n    with:\n      sql: \"INSERT INTO users (id, email, display_name) SELECT 50, 'seed@example.com', 'Seed' WHERE NOT EXISTS (SELECT 1 FROM users WHERE id = 50)\"\n      undo: \"DELETE FROM users WHERE id = 50\"\n  - uses: validate",
        );
    }
    if !release.backup {
        pipeline = replace_once(
            &pipeline,
            "  - uses: backup\n    with: { name: \"pre-{version}-{timestamp}\", verify: restore }\n",
            "",
        );
    }
    if release.rollback_down {
        pipeline = replace_once(&pipeline, "rollback: auto", "rollback: down");
    }
    p.write_pipeline(&pipeline);
    let before = p.state();
    let run = p.run(&["deploy"]);
    let after = p.state();
    let err = run.stderr();
    match run.code() {
        1 => {
            prop_assert!(
                err.contains("state: as before the run") && err.contains("checked: schema ("),
                "exit 1 without the checked claim:\n{err}"
            );
            prop_assert_eq!(&after.platform, &before.platform);
            prop_assert!(
                after.db == before.db,
                "claimed as before but the database differs:\n{err}\nbefore: {:?}\nafter: {:?}",
                before.db,
                after.db
            );
        }
        // The rehearsal on a copy found a lossy down and no backup runs before the
        // migrations: the plan refuses, nothing touched.
        2 => {
            prop_assert!(
                err.contains("not every down gave the data back") && err.contains("no backup step"),
                "{err}"
            );
            prop_assert_eq!(&after, &before);
        }
        3 => {
            prop_assert!(err.contains("NOT as before the run"), "{err}");
            prop_assert!(!err.contains("state: as before"), "{err}");
            prop_assert!(after.db != before.db, "exit 3 but nothing differs:\n{err}");
        }
        code => prop_assert!(false, "unexpected exit {code}:\n{err}"),
    }
    Ok(())
}

proptest! {
    // Each case deploys twice with the real binary: few cases, no regression files.
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_rollback_is_as_before_or_says_what_differs(release in release()) {
        check(&release)?;
    }
}
