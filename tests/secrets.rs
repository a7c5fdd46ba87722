//! Secrets never reach any output. Sentinel values come in through every kind of reference
//! (`${env:..}`, `${file:..}`, `${secret:env:..}`, `${secret:file:..}`) into every field
//! that can hold one: the command platform's `env:` (a credential field), its command
//! templates, and the health URL (as a query parameter). Then every command that prints
//! something runs, including a failing deploy whose platform command echoes the secrets to
//! stderr and a crashed run finished by `recover`; stdout, stderr, every journal file, every
//! backup file and manifest and the lock folder must hold none of them. The test also checks
//! each secret really was used, so a reference that silently resolved to nothing fails it.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use support::{Project, Run, replace_once};

/// Every sentinel starts with this; none of it may ever be printed or stored.
const MARK: &str = "S3NT1NEL-hunter2";
/// `${env:..}` in the platform's `env:`.
const VIA_ENV: &str = "S3NT1NEL-hunter2-xyz-env";
/// `${file:..}` in the platform's `env:`.
const VIA_FILE: &str = "S3NT1NEL-hunter2-xyz-file";
/// `${secret:env:..}` in the health URL's query.
const VIA_SECRET_ENV: &str = "S3NT1NEL-hunter2-xyz-secret-env";
/// `${secret:file:..}` in a command template.
const VIA_SECRET_FILE: &str = "S3NT1NEL-hunter2-xyz-secret-file";
/// `${secret:env:..}` in a command template.
const VIA_SECRET_ENV_TEMPLATE: &str = "S3NT1NEL-hunter2-xyz-template-env";

/// A health endpoint that remembers every request line (method, path and query).
struct RecordingServer {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl RecordingServer {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/health", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 8192];
                let n = stream.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                seen.lock()
                    .unwrap()
                    .push(head.lines().next().unwrap_or_default().to_owned());
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
            }
        });
        Self { url, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// The shared config with the product's default rehearsal, and secrets of every kind in
/// the platform's commands and `env:` and in the health URL: `maintenance_on` writes what
/// it was given to `used/maintenance_on`, `restart` fails and echoes it.
fn config(health_url: &str) -> String {
    let config = replace_once(
        &support::config(&format!(
            "{health_url}?token=${{secret:env:CUTOVER_TEST_HEALTH_TOKEN}}"
        )),
        "echo maintenance_on >> calls.log\"",
        r#"echo maintenance_on >> calls.log; printf '%s\n' \"$TOKEN_ENV\" \"$TOKEN_FILE\" '${secret:file:secrets/template-token}' > used/maintenance_on""#,
    );
    let config = replace_once(
        &config,
        "      restart: \"echo restart >> calls.log\"\n",
        r#"      restart: "echo restart >> calls.log; echo \"restart refused: env=$TOKEN_ENV file=$TOKEN_FILE template=${secret:env:CUTOVER_TEST_TEMPLATE_TOKEN}\" >&2; exit 1"
      env:
        TOKEN_ENV: "${env:CUTOVER_TEST_PLATFORM_TOKEN}"
        TOKEN_FILE: "${file:secrets/platform-token}"
"#,
    );
    replace_once(&config, "    rehearse: off\n", "")
}

/// The shipped pipeline with a `restart` step after the migrations: its platform command
/// fails and prints the secrets it was given, so the run rolls back.
fn failing_pipeline(p: &Project) -> String {
    let shipped = p.read("pipelines/deploy.yaml");
    let at = shipped
        .find("  - id: maintenance-off")
        .expect("shipped pipeline");
    format!("{}  - uses: restart\n{}", &shipped[..at], &shipped[at..])
}

/// Every file under `dir`, with its contents (lossy for binary files).
fn files_under(dir: &Path, out: &mut Vec<(String, String)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            let bytes = std::fs::read(&path).unwrap();
            out.push((
                path.display().to_string(),
                String::from_utf8_lossy(&bytes).into_owned(),
            ));
        }
    }
}

struct Secrets {
    p: Project,
    health: RecordingServer,
    /// Every command run so far, with its output.
    runs: Vec<(String, Run)>,
}

impl Secrets {
    fn new() -> Self {
        let p = Project::new();
        let health = RecordingServer::start();
        p.write_config(&config(&health.url));
        p.write("secrets/platform-token", &format!("{VIA_FILE}\n"));
        p.write("secrets/template-token", VIA_SECRET_FILE);
        p.write("pipelines/failing.yaml", &failing_pipeline(&p));
        std::fs::create_dir_all(p.file("used")).unwrap();
        Self {
            p,
            health,
            runs: Vec::new(),
        }
    }

    fn run_with(&mut self, args: &[&str], extra_env: &[(&str, &str)]) -> &Run {
        let mut cmd = self.p.cmd();
        cmd.args(args)
            .env("CUTOVER_TEST_PLATFORM_TOKEN", VIA_ENV)
            .env("CUTOVER_TEST_HEALTH_TOKEN", VIA_SECRET_ENV)
            .env("CUTOVER_TEST_TEMPLATE_TOKEN", VIA_SECRET_ENV_TEMPLATE);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let run = Run(cmd.output().expect("cutover runs"));
        self.runs.push((args.join(" "), run));
        &self.runs.last().unwrap().1
    }

    fn run(&mut self, args: &[&str]) -> &Run {
        self.run_with(args, &[])
    }

    /// Fails with every place a sentinel shows up.
    #[track_caller]
    fn assert_nothing_leaked(&self) {
        let mut leaks = Vec::new();
        for (args, run) in &self.runs {
            for (stream, text) in [("stdout", run.stdout()), ("stderr", run.stderr())] {
                if text.contains(MARK) {
                    leaks.push(format!("`cutover {args}` {stream}:\n{text}"));
                }
            }
        }
        let mut stored = Vec::new();
        files_under(&self.p.file(".cutover"), &mut stored);
        files_under(&self.p.file("state/backups"), &mut stored);
        assert!(
            stored.iter().any(|(path, _)| path.contains("journal")),
            "journals were written: {stored:?}"
        );
        assert!(
            stored
                .iter()
                .any(|(path, _)| path.ends_with(".json") && path.contains("backups")),
            "backup manifests were written: {:?}",
            stored.iter().map(|s| &s.0).collect::<Vec<_>>()
        );
        for (path, text) in &stored {
            if text.contains(MARK) {
                leaks.push(format!("{path}:\n{text}"));
            }
        }
        assert!(
            leaks.is_empty(),
            "secrets leaked:\n{}",
            leaks.join("\n---\n")
        );
    }
}

#[test]
fn secrets_reach_their_destinations_and_no_output() {
    let mut s = Secrets::new();

    // Read-only commands on a fresh project.
    s.run(&["check"]).success();
    s.run(&["plan"]).success();
    s.run(&["plan", "--json"]).success();
    s.run(&["plan", "--output", "json"]).success();
    s.run(&["-vv", "plan"]).success();
    s.run(&["deploy", "--dry-run"]).success();

    // A failing deploy: the restart command prints the secrets to stderr and fails.
    let failed = s.run(&["deploy", "-p", "pipelines/failing.yaml"]);
    failed.expect_code(1);
    assert!(
        failed
            .stderr()
            .contains("restart refused: env=*** file=*** template=***"),
        "the platform command's stderr is shown, masked:\n{}",
        failed.stderr()
    );
    s.run(&["deploy", "-p", "pipelines/failing.yaml", "--output", "json"])
        .expect_code(1);

    // A successful deploy, in JSON and with trace logging.
    s.run(&["-vv", "deploy", "--output", "json"]).success();
    // Read now: the crash below may kill `maintenance_on` between the shell's truncating
    // this file and its writing it (the supervisor ends the group when cutover dies).
    let used = s.p.read("used/maintenance_on");
    assert_eq!(
        used,
        format!("{VIA_ENV}\n{VIA_FILE}\n{VIA_SECRET_FILE}\n"),
        "maintenance_on received the platform env and its template secret"
    );

    // A run that dies part-way (like kill -9), finished by `recover`.
    s.p.add_migration(
        "20250101000000_add_flag",
        "ALTER TABLE users ADD COLUMN flag INTEGER;",
        Some("ALTER TABLE users DROP COLUMN flag;"),
    );
    let crashed = s.run_with(&["deploy"], &[("CUTOVER_TEST_CRASH_AFTER_RECORD", "6")]);
    assert!(
        ![0, 1, 2].contains(&crashed.code()),
        "the crash hook aborts the run: {}",
        crashed.stderr()
    );
    // The dead run left its lock and open journal behind: check them before `recover`.
    assert!(
        !s.p.locks().is_empty(),
        "the crashed run still holds the lock"
    );
    s.assert_nothing_leaked();
    // Exit 1: the dead run was rolled back.
    s.run(&["-v", "recover"]).expect_code(1);
    s.run(&["recover", "--output", "json"]).success();

    // Everything that reads state back.
    s.run(&["history"]).success();
    s.run(&["history", "--json"]).success();
    s.run(&["backup", "list"]).success();
    s.run(&["backup", "list", "--output", "json"]).success();
    s.run(&["migrate", "status"]).success();
    s.run(&["migrate", "status", "--output", "json"]).success();
    s.run(&["migrate", "verify"]).success();
    s.run(&["lock", "status"]).success();

    // The secrets were used: the platform commands got them...
    assert!(
        s.p.calls().iter().any(|c| c == "restart"),
        "the restart command ran: {:?}",
        s.p.calls()
    );
    // ...and the health endpoint saw its token.
    let requests = s.health.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.contains(&format!("/health?token={VIA_SECRET_ENV} "))),
        "the health endpoint was called with the token: {requests:?}"
    );

    s.assert_nothing_leaked();
}
