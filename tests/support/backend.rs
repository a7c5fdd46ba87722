//! The databases the rollback, crash and fidelity tests run each case on: SQLite, and the
//! real PostgreSQL and MariaDB servers of this test binary (a fresh database per case).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::{Project, State, exec_sql, mysql as my, pg};

/// The database a case runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
    Mysql,
}

impl Backend {
    /// A project on this backend and its server database (empty for SQLite).
    pub fn project(self) -> (Project, String) {
        match self {
            Self::Sqlite => (Project::new(), String::new()),
            Self::Postgres => pg::project(),
            Self::Mysql => my::project(),
        }
    }
}

/// One case's project on one backend (`db`: the server's database, else empty).
pub struct Case {
    pub p: Project,
    pub backend: Backend,
    pub db: String,
    /// How the test reads the state: tests compare a server's database in their own way
    /// (a dump's lines, rows per table, checksums of big tables).
    read_state: fn(&Case) -> State,
}

impl std::ops::Deref for Case {
    type Target = Project;

    fn deref(&self) -> &Project {
        &self.p
    }
}

impl Case {
    /// A fresh project on `backend` whose state `read_state` reads.
    pub fn new(backend: Backend, read_state: fn(&Case) -> State) -> Self {
        let (p, db) = backend.project();
        Self {
            p,
            backend,
            db,
            read_state,
        }
    }

    /// Database, platform and locks as the test reads them.
    pub fn state(&self) -> State {
        (self.read_state)(self)
    }

    /// The project's state with a server's database as `server_db` reads it (given the
    /// backend and the database) and the server's deploy lock among the locks.
    pub fn with_server_db(
        &self,
        server_db: impl FnOnce(Backend, &str) -> BTreeMap<String, Vec<String>>,
    ) -> State {
        let mut state = self.p.state();
        if self.backend != Backend::Sqlite {
            state.db = server_db(self.backend, &self.db);
            state.locks.extend(self.database_lock());
        }
        state
    }

    /// Runs SQL against the case's database; panics on error.
    pub fn sql(&self, sql: &str) {
        match self.backend {
            Backend::Sqlite => exec_sql(&self.file("state/app.db"), sql),
            Backend::Postgres => {
                pg::server().psql(&self.db, sql);
            }
            Backend::Mysql => {
                my::server().sql(&self.db, sql);
            }
        }
    }

    /// The server's deploy lock (PostgreSQL advisory lock, MariaDB `GET_LOCK`), if someone
    /// holds it. The lock of a process that just died may take a moment to go.
    pub fn database_lock(&self) -> Option<String> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let held = match self.backend {
                Backend::Sqlite => return None,
                Backend::Postgres => pg::server().psql(
                    "postgres",
                    &format!(
                        "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database WHERE l.locktype = 'advisory' AND d.datname = '{}'",
                        self.db
                    ),
                ),
                Backend::Mysql => {
                    use sha2::Digest;
                    let name = format!("{}/testapp:local", self.db);
                    let key = format!(
                        "cutover:{}",
                        &hex::encode(sha2::Sha256::digest(name.as_bytes()))[..40]
                    );
                    my::server().sql("mysql", &format!("SELECT COUNT(IS_USED_LOCK('{key}'))"))
                }
            };
            if held.trim() == "0" {
                return None;
            }
            if Instant::now() > deadline {
                return Some(format!("{:?} deploy lock", self.backend));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
