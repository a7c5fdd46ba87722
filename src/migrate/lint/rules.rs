//! The lint rules: each one's id, the databases it applies to, why the operation hurts and
//! what to do instead. `cutover migrate lint --rules` prints them as the Markdown table
//! that `docs/migrations.md` carries (a test keeps the two equal).

use serde::Serialize;

/// A database whose migrations are linted, by the SQL dialect its rules read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Db {
    Postgres,
    Mysql,
}

impl Db {
    /// The rule set for a database `kind`, when it has one.
    pub(crate) fn from_kind(kind: &str) -> Option<Self> {
        match kind {
            "postgres" => Some(Self::Postgres),
            "mysql" => Some(Self::Mysql),
            _ => None,
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Postgres => "PostgreSQL",
            Self::Mysql => "MySQL/MariaDB",
        }
    }
}

const PG: &[Db] = &[Db::Postgres];
const MYSQL: &[Db] = &[Db::Mysql];
const BOTH: &[Db] = &[Db::Postgres, Db::Mysql];

/// A rule: its id, why the operation hurts and what to do instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Rule {
    pub id: &'static str,
    pub databases: &'static [Db],
    pub why: &'static str,
    pub safe: &'static str,
}

pub(crate) const CREATE_INDEX: Rule = Rule {
    id: "create-index-not-concurrently",
    databases: PG,
    why: "CREATE INDEX holds a SHARE lock until the whole table is indexed: every INSERT, UPDATE and DELETE on it waits",
    safe: "CREATE INDEX CONCURRENTLY, in a migration of its own whose first line is `-- cutover:no-transaction` (CONCURRENTLY cannot run inside a transaction)",
};

pub(crate) const ADD_COLUMN_NOT_NULL: Rule = Rule {
    id: "add-column-not-null-without-default",
    databases: PG,
    why: "adding a NOT NULL column without a DEFAULT fails on a table that has rows, and the previous release, still running, inserts rows without the column",
    safe: "add it with a DEFAULT (PostgreSQL 11+ stores a constant default without rewriting the table), or add it nullable, backfill in batches, then make it NOT NULL",
};

pub(crate) const ADD_COLUMN_VOLATILE_DEFAULT: Rule = Rule {
    id: "add-column-volatile-default",
    databases: PG,
    why: "ADD COLUMN whose value is computed per row (a volatile DEFAULT such as random(), gen_random_uuid(), clock_timestamp() or nextval(), a serial or identity column, a stored generated column) rewrites the table under an ACCESS EXCLUSIVE lock (no reads or writes); a constant or stable default such as now() does not on PostgreSQL 11+",
    safe: "add the column without that default, backfill it in batches, then ALTER COLUMN ... SET DEFAULT for new rows",
};

pub(crate) const CONSTRAINT_NOT_VALID: Rule = Rule {
    id: "add-constraint-without-not-valid",
    databases: PG,
    why: "adding a foreign key (also ADD COLUMN ... REFERENCES) or a CHECK checks every existing row while holding a lock that blocks writes (to both tables for a foreign key)",
    safe: "ADD CONSTRAINT ... NOT VALID (instant; new rows are checked), then ALTER TABLE ... VALIDATE CONSTRAINT ... in a later migration, which does not block writes",
};

pub(crate) const UNIQUE_WITHOUT_INDEX: Rule = Rule {
    id: "unique-constraint-without-index",
    databases: PG,
    why: "ADD UNIQUE or PRIMARY KEY (also on an added column) builds its index while holding an ACCESS EXCLUSIVE lock: no reads or writes until the whole table is indexed",
    safe: "CREATE UNIQUE INDEX CONCURRENTLY in a `-- cutover:no-transaction` migration, then ADD CONSTRAINT c UNIQUE USING INDEX idx (or PRIMARY KEY USING INDEX), which is instant",
};

pub(crate) const ALTER_COLUMN_TYPE: Rule = Rule {
    id: "alter-column-type",
    databases: PG,
    why: "changing a column's type takes an ACCESS EXCLUSIVE lock (no reads or writes) and, unless the types are binary-compatible such as varchar(n) to text, rewrites the table and its indexes; the previous release still uses the old type",
    safe: "add a column of the new type, write to both, backfill in batches, switch reads, and drop the old column in a later release",
};

pub(crate) const RENAME_COLUMN: Rule = Rule {
    id: "rename-column",
    databases: BOTH,
    why: "the previous release, still running during the deploy, keeps using the old column name and fails",
    safe: "add the new column, write to both and backfill, switch the code to it, and drop the old column in a later release",
};

pub(crate) const RENAME_TABLE: Rule = Rule {
    id: "rename-table",
    databases: BOTH,
    why: "the previous release, still running during the deploy, keeps using the old table name and fails",
    safe: "rename in two releases: keep the old name working meanwhile (e.g. a view `CREATE VIEW old AS SELECT * FROM new`), switch the code, then drop the view",
};

pub(crate) const DROP_COLUMN: Rule = Rule {
    id: "drop-column",
    databases: BOTH,
    why: "the previous release may still read or write the column until the new release is fully out (including ORMs that list every column)",
    safe: "first ship a release that no longer uses the column, then drop it in a migration of a later release",
};

pub(crate) const DROP_TABLE: Rule = Rule {
    id: "drop-table",
    databases: BOTH,
    why: "the previous release may still use the table until the new release is fully out, and its rows are gone: a down migration can recreate it only empty",
    safe: "ship a release that no longer uses the table first, then drop it in a later one, with `-- cutover:allow drop-table -- <why it is unused>` before the statement",
};

pub(crate) const DROP_DATABASE: Rule = Rule {
    id: "drop-database",
    databases: BOTH,
    why: "DROP DATABASE removes every table at once; a release migration has no business doing it and a rollback cannot bring it back",
    safe: "drop databases by hand, outside the deploy and after a backup",
};

pub(crate) const SET_NOT_NULL: Rule = Rule {
    id: "set-not-null",
    databases: PG,
    why: "SET NOT NULL scans the whole table for NULLs while holding an ACCESS EXCLUSIVE lock (no reads or writes)",
    safe: "ADD CONSTRAINT c CHECK (col IS NOT NULL) NOT VALID; VALIDATE CONSTRAINT c in a later migration; then SET NOT NULL (PostgreSQL 12+ skips the scan) and drop the CHECK",
};

pub(crate) const PREFER_BIGINT: Rule = Rule {
    id: "prefer-bigint",
    databases: PG,
    why: "an integer or smallint column fed by a sequence (serial, smallserial, an int identity) stops at 2,147,483,647 (32,767): inserts then fail, and widening it later rewrites the table",
    safe: "bigint GENERATED ALWAYS AS IDENTITY (or bigserial); the 4 extra bytes per row cost far less than that migration",
};

pub(crate) const PREFER_IDENTITY: Rule = Rule {
    id: "prefer-identity",
    databases: PG,
    why: "a serial column's sequence is a separate object: it needs its own grants, CREATE TABLE ... LIKE copies a default that points at the old table's sequence, and explicit ids are accepted and collide with it later",
    safe: "bigint GENERATED ALWAYS AS IDENTITY (PostgreSQL 10+)",
};

pub(crate) const CHAR_COLUMN: Rule = Rule {
    id: "char-column",
    databases: PG,
    why: "char(n) pads values with spaces to n characters, which comparisons, lengths and clients then treat inconsistently, and it is no faster than text in PostgreSQL",
    safe: "text (with a CHECK on its length when the length matters) or varchar(n)",
};

pub(crate) const CONCURRENTLY_IN_TRANSACTION: Rule = Rule {
    id: "concurrently-in-transaction",
    databases: PG,
    why: "PostgreSQL refuses CREATE INDEX CONCURRENTLY inside a transaction, and a migration runs in one unless its first line is `-- cutover:no-transaction` (then cutover sends its statements one by one, each committing on its own)",
    safe: "a migration whose first line is `-- cutover:no-transaction`, with a down file that copes with a half-done up (`DROP INDEX CONCURRENTLY IF EXISTS`)",
};

pub(crate) const TRANSACTION_NESTING: Rule = Rule {
    id: "transaction-nesting",
    databases: PG,
    why: "cutover runs the migration in a transaction and records it in that same transaction: a COMMIT inside ends it early (what follows, and a failure, leave a half-applied migration), a BEGIN only warns, a ROLLBACK undoes the statements before it",
    safe: "drop the transaction statements; to control transactions yourself, make `-- cutover:no-transaction` the first line",
};

pub(crate) const LOCK_TIMEOUT_OFF: Rule = Rule {
    id: "lock-timeout-off",
    databases: PG,
    why: "cutover sets lock_timeout (5s unless the database's `lock_timeout:` says otherwise) on every session, so DDL fails instead of queueing behind a long transaction with every query on the table queued behind it; 0, DEFAULT or RESET turns that off",
    safe: "keep the session's lock_timeout, or set a longer bound (`SET lock_timeout = '30s'`), or raise `lock_timeout:` for the environment",
};

pub(crate) const VACUUM_FULL: Rule = Rule {
    id: "vacuum-full",
    databases: PG,
    why: "VACUUM FULL rewrites the whole table under an ACCESS EXCLUSIVE lock: no reads or writes until it finishes",
    safe: "plain VACUUM (no lock on reads or writes), or pg_repack outside the deploy",
};

pub(crate) const CLUSTER: Rule = Rule {
    id: "cluster",
    databases: PG,
    why: "CLUSTER rewrites the whole table under an ACCESS EXCLUSIVE lock: no reads or writes until it finishes",
    safe: "pg_repack (which can also reorder rows) outside the deploy, or leave the physical order alone",
};

pub(crate) const MYSQL_ALGORITHM: Rule = Rule {
    id: "mysql-alter-without-algorithm",
    databases: MYSQL,
    why: "an ALTER TABLE that cannot run INSTANT or INPLACE (a column type change through MODIFY/CHANGE, adding or dropping the primary key, ALGORITHM=COPY; a column added other than last before MySQL 8.0.29 / MariaDB 10.4) silently copies the table, blocking writes until the copy ends",
    safe: "state `ALGORITHM=INSTANT`, or `ALGORITHM=INPLACE, LOCK=NONE`: the server then refuses instead of copying (MySQL 5.6+, MariaDB 10.0+); if it refuses, use gh-ost or pt-online-schema-change",
};

pub(crate) const MYSQL_LOCK: Rule = Rule {
    id: "mysql-lock-not-none",
    databases: MYSQL,
    why: "LOCK=SHARED blocks writes and LOCK=EXCLUSIVE blocks reads and writes on the table for the whole ALTER TABLE (MySQL 5.6+, MariaDB 10.0+)",
    safe: "LOCK=NONE, which the server refuses when the change cannot allow concurrent writes; then use gh-ost or pt-online-schema-change",
};

pub(crate) const MYSQL_UNIQUE_INDEX: Rule = Rule {
    id: "mysql-add-unique-index",
    databases: MYSQL,
    why: "adding a unique index to an existing table fails after the whole build if rows hold duplicates, or if writes add one during the online build (MySQL 5.6+, MariaDB 10.0+; older servers block writes throughout), and pt-online-schema-change or gh-ost silently drop duplicate rows",
    safe: "find duplicates first (`SELECT cols, COUNT(*) ... GROUP BY cols HAVING COUNT(*) > 1`), ship code that stops writing them, then add the index",
};

/// Every rule, in the order they are documented.
pub(crate) const RULES: &[Rule] = &[
    CREATE_INDEX,
    ADD_COLUMN_NOT_NULL,
    ADD_COLUMN_VOLATILE_DEFAULT,
    CONSTRAINT_NOT_VALID,
    UNIQUE_WITHOUT_INDEX,
    ALTER_COLUMN_TYPE,
    RENAME_COLUMN,
    RENAME_TABLE,
    DROP_COLUMN,
    DROP_TABLE,
    DROP_DATABASE,
    SET_NOT_NULL,
    PREFER_BIGINT,
    PREFER_IDENTITY,
    CHAR_COLUMN,
    CONCURRENTLY_IN_TRANSACTION,
    TRANSACTION_NESTING,
    LOCK_TIMEOUT_OFF,
    VACUUM_FULL,
    CLUSTER,
    MYSQL_ALGORITHM,
    MYSQL_LOCK,
    MYSQL_UNIQUE_INDEX,
];

/// The rules as a Markdown table: id, databases, why, fix.
pub(crate) fn markdown_table() -> String {
    // A `|` inside a cell would end it.
    let cell = |s: &str| s.replace('|', "\\|");
    let mut out = String::from("| Rule | Databases | Why | Fix |\n|---|---|---|---|\n");
    for rule in RULES {
        let databases: Vec<_> = rule.databases.iter().map(|d| d.name()).collect();
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            rule.id,
            databases.join(", "),
            cell(rule.why),
            cell(rule.safe)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_kebab_case() {
        for (i, rule) in RULES.iter().enumerate() {
            assert!(
                rule.id
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{}",
                rule.id
            );
            assert!(!rule.databases.is_empty(), "{}", rule.id);
            assert!(
                RULES[i + 1..].iter().all(|r| r.id != rule.id),
                "{} twice",
                rule.id
            );
        }
    }

    /// The table in the docs is this one: regenerate it with `cutover migrate lint --rules`.
    #[test]
    fn the_documented_table_is_the_generated_one() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/migrations.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let start = "<!-- lint-rules:start (generated by `cutover migrate lint --rules`) -->\n";
        let end = "<!-- lint-rules:end -->";
        let from = doc.find(start).expect("start marker") + start.len();
        let to = from + doc[from..].find(end).expect("end marker");
        assert_eq!(
            doc[from..to],
            markdown_table(),
            "docs/migrations.md's rule table differs from `cutover migrate lint --rules`"
        );
    }
}
