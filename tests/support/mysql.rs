//! A real MariaDB server for the tests of one test binary: mariadb-install-db into a temp
//! folder, a free port on 127.0.0.1, a user with a password. A watchdog shell stops the
//! server and deletes its folder when the test process exits. Each test gets its own
//! database.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use super::server::{free_port, quote, spawn_watched, temp_dir, unique_name, wait_ready};

pub struct MysqlServer {
    pub port: u16,
    pub dir: PathBuf,
}

pub const USER: &str = "app";
pub const PASSWORD: &str = "app-pw-1";

static SERVER: OnceLock<MysqlServer> = OnceLock::new();

fn find(names: &[&str]) -> String {
    for name in names {
        for dir in ["/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"] {
            let path = format!("{dir}/{name}");
            if std::path::Path::new(&path).exists() {
                return path;
            }
        }
    }
    panic!(
        "{} not found; run scripts/test to install MariaDB",
        names.join(" or ")
    );
}

fn start() -> MysqlServer {
    let dir = temp_dir("cutover-mariadb-");
    let install = Command::new(find(&["mariadb-install-db", "mysql_install_db"]))
        .arg("--no-defaults")
        .arg(format!("--datadir={}", dir.join("data").display()))
        .arg(format!("--user={}", whoami()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db"])
        .output()
        .expect("mariadb-install-db runs");
    assert!(
        install.status.success(),
        "mariadb-install-db failed: {}",
        String::from_utf8_lossy(&install.stderr)
    );
    let port = free_port();
    let sock = dir.join("sock");
    let server = format!(
        "{} --no-defaults --datadir={} --user={} --socket={} --port={port} --bind-address=127.0.0.1 --skip-name-resolve --skip-log-bin --innodb-flush-log-at-trx-commit=0 --innodb-buffer-pool-size=64M",
        quote(&find(&["mariadbd", "mysqld"])),
        quote(&dir.join("data").display().to_string()),
        whoami(),
        quote(&sock.display().to_string())
    );
    spawn_watched("MariaDB", &dir, &server, "kill -TERM $server 2>/dev/null");
    let setup = format!(
        "CREATE USER '{USER}'@'%' IDENTIFIED BY '{PASSWORD}'; GRANT ALL ON *.* TO '{USER}'@'%';"
    );
    wait_ready("MariaDB", &dir, || {
        Command::new(find(&["mariadb", "mysql"]))
            .args(["--no-defaults", "-uroot"])
            .arg(format!("--socket={}", sock.display()))
            .args(["-e", &setup])
            .output()
            .expect("mariadb client runs")
            .status
            .success()
    });
    MysqlServer { port, dir }
}

fn whoami() -> String {
    let out = Command::new("id").arg("-un").output().expect("id runs");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

pub fn server() -> &'static MysqlServer {
    SERVER.get_or_init(start)
}

impl MysqlServer {
    pub fn url(&self, database: &str) -> String {
        format!(
            "mysql://{USER}:{PASSWORD}@127.0.0.1:{}/{database}",
            self.port
        )
    }

    /// Runs SQL with the client as the test user; panics on error.
    pub fn sql(&self, database: &str, sql: &str) -> String {
        let out = Command::new(find(&["mariadb", "mysql"]))
            .args(["--no-defaults", "-h127.0.0.1", "--protocol=TCP", "-N", "-B"])
            .arg(format!("-P{}", self.port))
            .arg(format!("-u{USER}"))
            .arg(format!("-p{PASSWORD}"))
            .arg(database)
            .args(["-e", sql])
            .output()
            .expect("client runs");
        assert!(
            out.status.success(),
            "SQL failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn database(&self) -> String {
        let name = unique_name('_');
        self.sql("mysql", &format!("CREATE DATABASE {name}"));
        name
    }

    /// Every table's definition and rows in a stable order.
    pub fn snapshot(&self, database: &str) -> String {
        let tables = self.sql(
            database,
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME",
        );
        let mut out = String::new();
        for table in tables.lines() {
            let create = self.sql(database, &format!("SHOW CREATE TABLE `{table}`"));
            // AUTO_INCREMENT counters are not data.
            let create: String = create
                .split(' ')
                .filter(|w| !w.starts_with("AUTO_INCREMENT="))
                .collect::<Vec<_>>()
                .join(" ");
            out.push_str(&create);
            let rows = if table == "_sqlx_migrations" {
                self.sql(database, "SELECT version, description, success, HEX(checksum) FROM _sqlx_migrations ORDER BY version")
            } else {
                self.sql(database, &format!("SELECT * FROM `{table}` ORDER BY 1"))
            };
            out.push_str(&rows);
        }
        out
    }
}

/// MySQL flavoured versions of the example migrations and validations, and a project whose
/// `local` environment uses a fresh MariaDB database.
pub fn project() -> (super::Project, String) {
    let server = server();
    let db = server.database();
    let p = super::Project::new();
    for entry in std::fs::read_dir(p.file("migrations")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    p.write(
        "migrations/20240101120000_create_users.up.sql",
        "CREATE TABLE users (id BIGINT PRIMARY KEY, email VARCHAR(255) NOT NULL UNIQUE, display_name VARCHAR(255) NOT NULL);\n",
    );
    p.write(
        "migrations/20240101120000_create_users.down.sql",
        "DROP TABLE users;\n",
    );
    p.write(
        "migrations/20240101120100_create_recipes.up.sql",
        "CREATE TABLE recipes (id BIGINT PRIMARY KEY, user_id BIGINT NOT NULL, title VARCHAR(255) NOT NULL, servings INT NOT NULL, calories INT NULL,\n  CONSTRAINT recipes_user FOREIGN KEY (user_id) REFERENCES users (id), CONSTRAINT servings_positive CHECK (servings > 0));\n",
    );
    p.write(
        "migrations/20240101120100_create_recipes.down.sql",
        "DROP TABLE recipes;\n",
    );
    for entry in std::fs::read_dir(p.file("validations")).unwrap() {
        std::fs::remove_file(entry.unwrap().path()).unwrap();
    }
    p.write(
        "validations/recipes_without_owner.sql",
        "SELECT COUNT(*) AS issues FROM recipes r LEFT JOIN users u ON u.id = r.user_id WHERE u.id IS NULL;\n",
    );
    let config = p.default_config().replace(
        "database: { kind: sqlite, url: \"sqlite://state/app.db\" }",
        &format!("database: {{ kind: mysql, url: \"{}\" }}", server.url(&db)),
    );
    p.write_config(&config);
    (p, db)
}
