//! Backups stream: a dump far larger than the memory cutover is allowed to use goes to the
//! store and back with the process's peak RSS staying flat.

mod support;

use std::process::Command;

use support::Project;
use support::pg::{project, server};

/// Runs `cutover ARGS` under GNU time and returns (exit code, peak RSS in MiB, stderr).
fn measured(p: &Project, args: &[&str]) -> (i32, u64, String) {
    let rss_file = p.file("rss.txt");
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(env!("CARGO_BIN_EXE_cutover"))
        .args(args)
        .current_dir(p.path())
        .env("CI", "1")
        .env_remove("CUTOVER_TEST_CRASH_AFTER_RECORD")
        .output()
        .expect("/usr/bin/time runs (apt install time)");
    let kib: u64 = std::fs::read_to_string(&rss_file)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        kib / 1024,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_dump_larger_than_memory_streams_through_with_flat_rss() {
    let (p, db) = project();
    server().psql(
        &db,
        "CREATE TABLE big (id BIGINT PRIMARY KEY, payload TEXT NOT NULL);
         INSERT INTO big SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text) || md5((g * 31)::text)
           || md5((g * 37)::text) || md5((g * 41)::text) FROM generate_series(1, 1000000) g;",
    );
    let size_mib: i64 = server()
        .psql(&db, "SELECT pg_total_relation_size('big') / 1048576")
        .trim()
        .parse()
        .unwrap();
    assert!(size_mib >= 250, "the table is {size_mib} MiB");
    let before = server().psql(
        &db,
        "SELECT count(*), md5(string_agg(payload, '' ORDER BY id)) FROM big",
    );

    let (code, backup_rss, err) = measured(&p, &["backup", "create", "--name", "big"]);
    assert_eq!(code, 0, "{err}");
    server().psql(&db, "DELETE FROM big WHERE id % 2 = 0");
    let (code, restore_rss, err) = measured(&p, &["backup", "restore", "big"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        server().psql(
            &db,
            "SELECT count(*), md5(string_agg(payload, '' ORDER BY id)) FROM big"
        ),
        before
    );

    // Flat: far below the data size, and in the range of a process that moves nothing.
    let (_, idle_rss, _) = measured(&p, &["backup", "list"]);
    eprintln!(
        "peak RSS: backup {backup_rss} MiB, restore {restore_rss} MiB, idle {idle_rss} MiB, table {size_mib} MiB"
    );
    assert!(backup_rss < 64, "backup peak RSS {backup_rss} MiB");
    assert!(restore_rss < 64, "restore peak RSS {restore_rss} MiB");
}
