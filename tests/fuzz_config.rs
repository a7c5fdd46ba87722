//! Property-based fuzzing (proptest) of what reads untrusted text: the `deploy.yaml`
//! loader, the pipeline loader and the `${...}` reference resolver. Inputs are arbitrary
//! strings, YAML-ish token soup built from the real keys and values, and structured
//! mutations (lines dropped, duplicated, swapped, re-indented, cut, values replaced) of the
//! shipped examples and of the bad-input corpus. Every input must give `Ok` or an error,
//! never a panic, and never take long: a watchdog aborts the run, printing the input, if
//! one case takes more than 10 s.
//!
//! Then deeply nested documents and alias bombs go through the real binary
//! (`cutover check`): exit 2 within seconds, no crash.
//!
//! Cases per property: 500 by default (the whole file takes a few seconds), or
//! `CUTOVER_FUZZ_CASES=N`; `CUTOVER_LONG_TESTS=1` runs 20 000 per property.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cutover::adapters::reference::Resolver;
use cutover::config::deploy_file::Text;
use cutover::config::{load, load_pipeline};
use cutover::secret::Redactor;
use proptest::prelude::*;
use proptest::test_runner::{Config as RunnerConfig, TestCaseError, TestRunner};
use serde_saphyr::{Location, Spanned};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn cases() -> u32 {
    if let Some(n) = std::env::var("CUTOVER_FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        return n;
    }
    if std::env::var("CUTOVER_LONG_TESTS").is_ok_and(|v| v == "1") {
        20_000
    } else {
        500
    }
}

// ---- No hang: a watchdog over the case running now ----

static CURRENT: Mutex<Option<(Instant, String)>> = Mutex::new(None);

fn watchdog() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        std::thread::spawn(|| {
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let current = CURRENT
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some((started, input)) = &*current
                    && started.elapsed() > Duration::from_secs(10)
                {
                    eprintln!("a fuzz case ran for more than 10 s (a hang); its input:\n{input:?}");
                    std::process::abort();
                }
            }
        });
    });
}

/// Runs `f` under the watchdog.
fn watched<T>(input: &str, f: impl FnOnce() -> T) -> T {
    watchdog();
    *CURRENT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) =
        Some((Instant::now(), input.to_owned()));
    let out = f();
    *CURRENT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    out
}

// ---- Inputs ----

/// A project folder (migrations, validations, pipelines) the loaded files may point at.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["migrations", "validations", "pipelines"] {
            copy_dir(&Path::new(ROOT).join(sub), &dir.path().join(sub));
        }
        std::fs::write(dir.path().join("secret.txt"), "s3cr3t-value\n").unwrap();
        Self { dir }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// The config the integration tests use, a second well-formed seed.
const TEST_CONFIG: &str = r#"version: 1
project: testapp
pipeline: pipelines/deploy.yaml
migrations: migrations
environments:
  local:
    database: { kind: sqlite, url: "sqlite://state/app.db" }
    backups: { kind: local, path: state/backups, keep: 3 }
    lock_timeout: 5s
    window: "02:00-04:00 UTC"
    confirm: typed
    platform:
      kind: command
      status: "cat platform/*"
      maintenance_on: "echo on"
      maintenance_off: "echo off"
      scale: "echo {target}={replicas}"
      restart: "echo restart"
      env: { TOKEN: "${env:HOME}" }
    health: { url: "http://127.0.0.1:1/health", timeout: 5s, expect: 200 }
"#;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap()
}

/// Well-formed and broken seeds: the shipped examples and the bad-input corpus.
fn seeds(prefix: &str, shipped: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = shipped.iter().map(|rel| read(rel)).collect();
    let mut corpus: Vec<PathBuf> = std::fs::read_dir(Path::new(ROOT).join("tests/bad_inputs"))
        .map(|d| d.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default();
    corpus.sort();
    for path in corpus {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with(prefix) && name.ends_with(".yaml") {
            out.push(std::fs::read_to_string(path).unwrap());
        }
    }
    out
}

fn config_seeds() -> Vec<String> {
    let mut seeds = seeds("config_", &["deploy.example.yaml"]);
    seeds.push(TEST_CONFIG.to_owned());
    seeds
}

fn pipeline_seeds() -> Vec<String> {
    seeds(
        "pipeline_",
        &["pipelines/deploy.yaml", "pipelines/rollback.yaml"],
    )
}

/// Pieces of YAML and of this schema: keys, values, punctuation, indentation.
const FRAGMENTS: &[&str] = &[
    "version",
    "project",
    "pipeline",
    "migrations",
    "environments",
    "local",
    "production",
    "database",
    "kind",
    "url",
    "backups",
    "path",
    "keep",
    "platform",
    "status",
    "maintenance_on",
    "maintenance_off",
    "scale",
    "restart",
    "health",
    "timeout",
    "expect",
    "body",
    "window",
    "confirm",
    "lock_timeout",
    "statement_timeout",
    "lint",
    "release",
    "env",
    "steps",
    "uses",
    "with",
    "id",
    "retries",
    "when",
    "name",
    "to",
    "rollback",
    "queries",
    "checks",
    "sql",
    "max_issues",
    "target",
    "replicas",
    "enabled",
    "interval",
    "verify",
    "run",
    "undo",
    "warn_after",
    "preflight",
    "maintenance",
    "backup",
    "migrate",
    "validate",
    "command",
    "sqlite",
    "postgres",
    "mysql",
    "azure-blob",
    "typed",
    "error",
    "sqlite://state/app.db",
    "postgres://u:p@h/db",
    "http://127.0.0.1:1/health",
    "1",
    "0",
    "-1",
    "2",
    "99999999999999999999",
    "1.5",
    "true",
    "false",
    "yes",
    "no",
    "null",
    "~",
    "\"\"",
    "''",
    "5s",
    "0s",
    "1h",
    "2m",
    "-5s",
    "1ms",
    "18446744073709551615s",
    "1y",
    "02:00-04:00 UTC",
    "25:00-01:00",
    "23:00-01:00 UTC",
    "${env:HOME}",
    "${file:secret.txt}",
    "${secret:env:HOME}",
    "${secret:file:secret.txt}",
    "${secret:keyvault://v/n}",
    "${nope:x}",
    "${",
    "}",
    "$${",
    "${env:}",
    "previous",
    "latest",
    "restore",
    "auto",
    "down",
    "none",
    "validations/",
    "migrations/",
    "../",
    "/",
    "{target}",
    "{replicas}",
    "{version}",
    "{timestamp}",
    ": ",
    ":",
    "\n",
    "  ",
    "    ",
    "- ",
    "-",
    "{",
    "}",
    "[",
    "]",
    ", ",
    "&a ",
    "*a",
    "&b ",
    "*b",
    "!!str ",
    "!!int ",
    "!!binary ",
    "!tag ",
    "? ",
    "|\n",
    ">-\n",
    "# c",
    "'",
    "\"",
    "\t",
    "\u{feff}",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "<<: *a\n",
    "\\",
    "\0",
    "\r\n",
    "é",
    "💥",
    "\u{202e}",
];

fn soup() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(FRAGMENTS), 0..120).prop_map(|v| v.concat())
}

/// One edit of a text.
#[derive(Debug, Clone)]
enum Edit {
    DropLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    Indent(usize, usize),
    Dedent(usize),
    Insert(usize, &'static str),
    ReplaceValue(usize, &'static str),
    Truncate(usize),
    FlipByte(usize, u8),
}

fn edit() -> impl Strategy<Value = Edit> {
    let i = any::<usize>();
    prop_oneof![
        i.prop_map(Edit::DropLine),
        i.prop_map(Edit::DuplicateLine),
        (i, i).prop_map(|(a, b)| Edit::SwapLines(a, b)),
        (i, 1..9usize).prop_map(|(a, n)| Edit::Indent(a, n)),
        i.prop_map(Edit::Dedent),
        (i, prop::sample::select(FRAGMENTS)).prop_map(|(a, f)| Edit::Insert(a, f)),
        (i, prop::sample::select(FRAGMENTS)).prop_map(|(a, f)| Edit::ReplaceValue(a, f)),
        i.prop_map(Edit::Truncate),
        (i, any::<u8>()).prop_map(|(a, b)| Edit::FlipByte(a, b)),
    ]
}

fn apply(text: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut bytes_edits = Vec::new();
    for e in edits {
        let n = lines.len().max(1);
        match e {
            Edit::DropLine(a) if !lines.is_empty() => {
                lines.remove(a % n);
            }
            Edit::DuplicateLine(a) if !lines.is_empty() => {
                let l = lines[a % n].clone();
                lines.insert(a % n, l);
            }
            Edit::SwapLines(a, b) if !lines.is_empty() => lines.swap(a % n, b % n),
            Edit::Indent(a, k) if !lines.is_empty() => {
                lines[a % n] = format!("{}{}", " ".repeat(*k), lines[a % n]);
            }
            Edit::Dedent(a) if !lines.is_empty() => {
                let trimmed = lines[a % n].trim_start().to_owned();
                lines[a % n] = trimmed;
            }
            Edit::Insert(a, f) => {
                let at = a % (lines.len() + 1);
                lines.insert(at, (*f).to_owned());
            }
            Edit::ReplaceValue(a, f) if !lines.is_empty() => {
                let line = &lines[a % n];
                if let Some(colon) = line.find(": ") {
                    lines[a % n] = format!("{}: {f}", &line[..colon]);
                } else {
                    lines[a % n] = format!("{line}{f}");
                }
            }
            Edit::Truncate(_) | Edit::FlipByte(..) => bytes_edits.push(e.clone()),
            _ => {}
        }
    }
    let mut text = lines.join("\n");
    text.push('\n');
    let mut bytes = text.into_bytes();
    for e in bytes_edits {
        match e {
            Edit::Truncate(a) => bytes.truncate(a % (bytes.len() + 1)),
            Edit::FlipByte(a, b) if !bytes.is_empty() => {
                let at = a % bytes.len();
                bytes[at] = b;
            }
            _ => {}
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn mutated(seeds: Vec<String>) -> impl Strategy<Value = String> {
    (
        prop::sample::select(seeds),
        prop::collection::vec(edit(), 1..4),
    )
        .prop_map(|(seed, edits)| apply(&seed, &edits))
}

/// Any of: arbitrary text, YAML-ish soup, a mutated seed.
fn inputs(seeds: Vec<String>) -> impl Strategy<Value = String> {
    prop_oneof![
        1 => any::<String>(),
        2 => soup(),
        4 => mutated(seeds),
    ]
}

fn runner() -> TestRunner {
    TestRunner::new(RunnerConfig {
        cases: cases(),
        failure_persistence: None,
        ..RunnerConfig::default()
    })
}

/// Runs one property over `strategy` and prints how many inputs loaded and how many were
/// refused.
fn check(
    what: &str,
    strategy: impl Strategy<Value = String>,
    property: impl Fn(&str) -> Result<bool, TestCaseError>,
) {
    let ok = std::cell::Cell::new(0u32);
    let err = std::cell::Cell::new(0u32);
    let started = Instant::now();
    let result = runner().run(&strategy, |input| {
        if property(&input)? {
            ok.set(ok.get() + 1);
        } else {
            err.set(err.get() + 1);
        }
        Ok(())
    });
    println!(
        "{what}: {} case(s) (plus shrinking, if any) in {:?}: {} accepted, {} refused with an error, 0 panics, 0 hangs",
        ok.get() + err.get(),
        started.elapsed(),
        ok.get(),
        err.get()
    );
    if let Err(e) = result {
        panic!("{what}: {e}");
    }
}

#[test]
fn config_loader_never_panics_or_hangs() {
    let scratch = Scratch::new();
    check("deploy.yaml loader", inputs(config_seeds()), |input| {
        let path = scratch.write("deploy.yaml", input);
        let loaded = watched(input, || load(&path));
        if let Err(e) = &loaded {
            // Every error renders, naming the file.
            let shown = e.to_string();
            prop_assert!(shown.contains("deploy.yaml"), "{shown}");
        }
        Ok(loaded.is_ok())
    });
}

#[test]
fn pipeline_loader_never_panics_or_hangs() {
    let scratch = Scratch::new();
    check("pipeline loader", inputs(pipeline_seeds()), |input| {
        let path = scratch.write("fuzz-pipeline.yaml", input);
        let loaded = watched(input, || load_pipeline(&path, scratch.dir.path()));
        if let Err(e) = &loaded {
            let shown = e.to_string();
            prop_assert!(shown.contains("fuzz-pipeline.yaml"), "{shown}");
        }
        Ok(loaded.is_ok())
    });
}

/// Reference-like strings: text around `${kind:arg}` pieces, escapes and stray braces.
fn references() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        prop::sample::select(vec![
            "${env:HOME}",
            "${env:CUTOVER_FUZZ_UNSET}",
            "${env:}",
            "${file:secret.txt}",
            "${file:no-such-file}",
            "${file:}",
            "${file:.}",
            "${secret:env:HOME}",
            "${secret:env:CUTOVER_FUZZ_UNSET}",
            "${secret:file:secret.txt}",
            "${secret:file:../nope}",
            "${secret:keyvault://vault/name}",
            "${secret:nope}",
            "${secret:}",
            "${nope:x}",
            "${novalue}",
            "${",
            "}",
            "$",
            "$$",
            "$${",
            "$${env:HOME}",
            "${${env:HOME}}",
            "postgres://app:",
            "@db/app",
            "://",
            ":",
            "@",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z0-9:/@.$\\{\\}_-]{0,12}",
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..10).prop_map(|v| v.concat())
}

#[test]
fn reference_resolver_never_panics_or_hangs_and_masks_what_it_resolves() {
    // `HOME` is set in any test environment; `CUTOVER_FUZZ_UNSET` is never set.
    let scratch = Scratch::new();
    let config_path = scratch.write("deploy.yaml", TEST_CONFIG);
    check("reference resolver", references(), |input| {
        let redactor = Redactor::default();
        let resolver = Resolver {
            config_path: &config_path,
            base_dir: scratch.dir.path(),
            redactor: &redactor,
            azure: None,
        };
        let text: Text = Spanned::new(input.to_owned(), Location::UNKNOWN, Location::UNKNOWN);
        let (plain, credential, url) = watched(input, || {
            (
                resolver.text(&text),
                resolver.credential(&text),
                resolver.url(&text),
            )
        });
        // The three ways agree on whether the text resolves, and on its value.
        prop_assert_eq!(plain.is_ok(), credential.is_ok());
        prop_assert_eq!(plain.is_ok(), url.is_ok());
        if let (Ok(plain), Ok(credential)) = (&plain, &credential) {
            prop_assert_eq!(plain, credential.expose());
            // Text without a reference is taken as written.
            if !input.contains("${") {
                prop_assert_eq!(plain, input);
            }
            // A credential's value is masked in any output from now on.
            if plain.len() >= 4 {
                let shown = redactor.redact(&format!("x {plain} y"));
                prop_assert!(!shown.contains(plain.as_str()), "{shown}");
            }
        }
        if let Err(e) = &plain {
            let shown = e.to_string();
            prop_assert!(shown.contains("deploy.yaml"), "{shown}");
            prop_assert!(!shown.contains("s3cr3t-value"), "{shown}");
        }
        Ok(plain.is_ok())
    });
}

// ---- Pathological documents through the real binary ----

fn pathological() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for depth in [1_000, 100_000] {
        out.push((
            format!("{depth} nested flow sequences"),
            format!("version: {}{}\n", "[".repeat(depth), "]".repeat(depth)),
        ));
        out.push((
            format!("{depth} unclosed flow sequences"),
            format!("version: {}\n", "[".repeat(depth)),
        ));
        out.push((
            format!("{depth} nested flow mappings"),
            format!(
                "version: 1\nproject: p\nenvironments: {}1{}\n",
                "{a: ".repeat(depth),
                "}".repeat(depth)
            ),
        ));
        out.push((
            format!("{depth} nested block sequences"),
            // Indentation grows by one per level: 2000 levels are 2 MB already.
            (0..depth.min(2_000)).fold(String::new(), |mut s, i| {
                s.push_str(&" ".repeat(i));
                s.push_str("-\n");
                s
            }),
        ));
    }
    // Each alias doubles the one before: 2^40 nodes if expanded.
    let mut bomb = String::from("a0: &a0 [x, x]\n");
    for i in 1..40 {
        bomb.push_str(&format!("a{i}: &a{i} [*a{}, *a{}]\n", i - 1, i - 1));
    }
    out.push((
        "an alias bomb (2^40 nodes)".into(),
        format!("{bomb}version: 1\n"),
    ));
    out.push((
        "an alias bomb in environments".into(),
        format!("{bomb}version: 1\nproject: p\nenvironments: *a39\n"),
    ));
    out.push((
        "one 8 MiB line".into(),
        format!("version: 1\nproject: {}\n", "x".repeat(8 << 20)),
    ));
    out.push((
        "a 2 MiB key".into(),
        format!("{}: 1\n", "k".repeat(2 << 20)),
    ));
    out
}

#[test]
fn pathological_documents_exit_2_quickly_from_the_binary() {
    let mut report = Vec::new();
    for (what, text) in pathological() {
        for target in ["deploy.yaml", "pipelines/deploy.yaml"] {
            let p = support::Project::new();
            p.write(target, &text);
            let started = Instant::now();
            let mut child = p
                .cmd()
                .arg("check")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let status = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break status;
                }
                if started.elapsed() > Duration::from_secs(20) {
                    child.kill().unwrap();
                    panic!("{what} in {target}: `cutover check` still running after 20 s");
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            let mut stderr = String::new();
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
            report.push(format!(
                "{what} in {target}: exit {:?} in {:?}: {}",
                status.code(),
                started.elapsed(),
                stderr
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .chars()
                    .take(160)
                    .collect::<String>()
            ));
            assert_eq!(
                status.code(),
                Some(2),
                "{what} in {target}: {status}\n{}",
                &stderr[..stderr.len().min(2000)]
            );
            assert!(
                stderr.contains(target),
                "{what} in {target}: {}",
                &stderr[..stderr.len().min(2000)]
            );
        }
    }
    println!("{}", report.join("\n"));
}

#[test]
fn big_valid_documents_load_in_bounded_time() {
    let scratch = Scratch::new();
    let mut report = Vec::new();
    let docs = [
        (
            "100 000 unnamed steps",
            format!(
                "name: big\nsteps:\n{}",
                "  - uses: preflight\n".repeat(100_000)
            ),
        ),
        (
            "50 000 steps with one duplicated id",
            format!(
                "name: big\nsteps:\n{}",
                "  - id: same\n    uses: preflight\n".repeat(50_000)
            ),
        ),
        (
            "100 000 aliases of one step",
            format!(
                "name: big\nsteps:\n  - &s {{ uses: preflight }}\n{}",
                "  - *s\n".repeat(100_000)
            ),
        ),
    ];
    for (what, text) in docs {
        let path = scratch.write("big.yaml", &text);
        let started = Instant::now();
        let loaded = watched(what, || load_pipeline(&path, scratch.dir.path()));
        let took = started.elapsed();
        report.push(format!(
            "{what}: {} in {took:?}",
            match &loaded {
                Ok(p) => format!("loaded, {} steps", p.steps.len()),
                Err(e) => format!(
                    "refused: {}",
                    e.to_string().lines().next().unwrap_or_default()
                ),
            }
        ));
        assert!(took < Duration::from_secs(10), "{what}: {took:?}");
    }
    println!("{}", report.join("\n"));
}
