//! Lint rules for PostgreSQL and MySQL/MariaDB migrations: statements that lock or rewrite
//! a big table while the application waits, or that break the previous release, which
//! keeps running until the new one is out. The database's kind picks the SQL dialect and
//! the rule set ([`rules`]); other databases are not linted.
//!
//! Every statement is parsed with `sqlparser` and the rules look at the syntax tree, never
//! at the text. The file is tokenized once and split on top-level semicolons (the
//! tokenizer knows strings, quoted names, comments and `$$` bodies), so one statement the
//! parser cannot read does not hide the others: it is reported as a note. The parser's own
//! spans start at a statement's first name rather than its first keyword, and some
//! statements have none, so a statement's line is that of its first token.
//!
//! Statements on a table created earlier in the same migration are never flagged: the
//! table is new and empty, and no running release uses it yet.
//!
//! A finding that is intended (the column really is unused since the last release) is
//! allowed by a comment right before the statement: `-- cutover:allow drop-column` (several
//! rule ids separated by commas or spaces; text after ` -- ` is a reason for reviewers). It
//! covers that one statement only, is listed as allowed by `migrate lint`, and no longer
//! stops a plan under `lint: error`. An id that names no rule is a note, so a typo shows.

mod mysql;
mod postgres;
pub(crate) mod rules;

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use serde::Serialize;
use sqlparser::ast::{Ident, ObjectName, ObjectType, Statement};
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect};
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use super::{MigrationFile, MigrationSet};
use crate::config::deploy_file::LintLevel;
use crate::place::{Message, Place};
use rules::{CLUSTER, VACUUM_FULL};
pub(crate) use rules::{Db, RULES, Rule};

/// A rule broken by one statement of a file's SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hit {
    /// 1-based line of the statement's first token.
    pub line: u64,
    pub rule: Rule,
    /// What the statement does, e.g. "CREATE INDEX on `recipes` without CONCURRENTLY".
    pub message: String,
}

/// A statement the parser could not read, so no rule was checked on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unparsed {
    pub line: u64,
    pub error: String,
}

/// What linting one SQL text found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SqlLint {
    pub hits: Vec<Hit>,
    /// Hits that a `-- cutover:allow <rule>` comment before their statement allows.
    pub allowed: Vec<Hit>,
    pub unparsed: Vec<Unparsed>,
    /// `-- cutover:allow` comments naming no rule (`error` says which).
    pub unknown_allows: Vec<Unparsed>,
    /// Statements read.
    pub statements: usize,
}

/// A rule broken in a migration file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Finding {
    /// The file, relative to the config folder when it is inside it.
    pub file: String,
    pub line: u64,
    pub rule: &'static str,
    pub message: String,
    pub why: &'static str,
    pub safe: &'static str,
}

impl Finding {
    /// Where it is.
    pub(crate) fn place(&self) -> Place {
        place(&self.file, self.line)
    }

    /// What it says after its place, on one line, for a plan's warnings and errors.
    pub(crate) fn said(&self) -> String {
        format!(
            "[{}] {}: {}; safe: {}",
            self.rule, self.message, self.why, self.safe
        )
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: [{}] {}\n    why:  {}\n    safe: {}",
            self.file, self.line, self.rule, self.message, self.why, self.safe
        )
    }
}

/// A statement that was not linted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Note {
    pub file: String,
    pub line: u64,
    pub message: String,
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: note: {}", self.file, self.line, self.message)
    }
}

/// What linting a set of migration files found.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Report {
    /// Files linted.
    pub files: usize,
    pub findings: Vec<Finding>,
    /// Findings allowed by a `-- cutover:allow` comment: shown, never a plan problem.
    pub allowed: Vec<Finding>,
    pub notes: Vec<Note>,
}

/// Lints the up files of `migrations` with `db`'s rules; paths are shown relative to `base`
/// when inside it.
pub(crate) fn lint<'a>(
    migrations: impl IntoIterator<Item = &'a MigrationFile>,
    base: &Path,
    db: Db,
) -> Report {
    let mut report = Report::default();
    for m in migrations {
        report.files += 1;
        let file = m
            .up_path
            .strip_prefix(base)
            .unwrap_or(&m.up_path)
            .display()
            .to_string();
        let result = lint_sql(&m.up_sql, db);
        let finding = |h: Hit| Finding {
            file: file.clone(),
            line: h.line,
            rule: h.rule.id,
            message: h.message,
            why: h.rule.why,
            safe: h.rule.safe,
        };
        report.findings.extend(result.hits.into_iter().map(finding));
        report
            .allowed
            .extend(result.allowed.into_iter().map(finding));
        report
            .notes
            .extend(result.unparsed.into_iter().map(|u| Note {
                file: file.clone(),
                line: u.line,
                message: format!(
                    "not linted: the SQL parser cannot read this statement ({}); check it by hand",
                    u.error
                ),
            }));
        report
            .notes
            .extend(result.unknown_allows.into_iter().map(|u| Note {
                file: file.clone(),
                line: u.line,
                message: u.error,
            }));
    }
    report
}

/// For a plan: lints the migrations it applies when the database has lint rules. Returns
/// the problems (findings under `lint: error`) and the warnings (findings otherwise, notes
/// about statements that could not be linted, and under `lint: off` that nothing was).
pub(crate) fn plan_messages(
    database_kind: &str,
    level: LintLevel,
    migrations: &MigrationSet,
    versions: &[i64],
    base: &Path,
) -> (Vec<Message>, Vec<Message>) {
    let Some(db) = Db::from_kind(database_kind) else {
        return (Vec::new(), Vec::new());
    };
    if level == LintLevel::Off {
        let said = (!versions.is_empty()).then(|| {
            Message::plain(format!(
                "lint: off: the {} migration(s) this run applies were not linted",
                versions.len()
            ))
        });
        return (Vec::new(), said.into_iter().collect());
    }
    let report = lint(versions.iter().filter_map(|v| migrations.get(*v)), base, db);
    let findings = report.findings.iter();
    let mut warnings = Vec::new();
    let problems = if level == LintLevel::Error {
        findings
            .map(|f| {
                Message::at(
                    f.place(),
                    format!("{} (this environment has `lint: error`)", f.said()),
                )
            })
            .collect()
    } else {
        warnings = findings.map(|f| Message::at(f.place(), f.said())).collect();
        Vec::new()
    };
    warnings.extend(
        report
            .notes
            .iter()
            .map(|n| Message::at(place(&n.file, n.line), format!("note: {}", n.message))),
    );
    (problems, warnings)
}

fn place(file: &str, line: u64) -> Place {
    Place {
        file: file.to_owned(),
        line,
        column: None,
    }
}

/// What the rules know of the file beyond the statement at hand.
#[derive(Default)]
struct Scope {
    /// Tables and columns created earlier in the same file.
    tables: HashSet<String>,
    columns: HashSet<(String, String)>,
    /// The file runs outside a transaction (`-- cutover:no-transaction` first).
    no_transaction: bool,
}

/// Lints one SQL text (a migration's up file) with `db`'s rules.
pub(crate) fn lint_sql(sql: &str, db: Db) -> SqlLint {
    match db {
        Db::Postgres => lint_with(
            sql,
            &PostgreSqlDialect {},
            postgres::check,
            keyword_fallback,
        ),
        // MySQL has neither CLUSTER nor VACUUM: every statement it cannot parse is a note.
        Db::Mysql => lint_with(sql, &MySqlDialect {}, mysql::check, |_| Fallback::Unknown),
    }
}

fn lint_with(
    sql: &str,
    dialect: &dyn Dialect,
    check: fn(&Statement, &mut Scope) -> Vec<(Rule, String)>,
    fallback: fn(&[TokenWithSpan]) -> Fallback,
) -> SqlLint {
    let mut out = SqlLint::default();
    let tokens = match Tokenizer::new(dialect, sql).tokenize_with_location() {
        Ok(t) => t,
        Err(e) => {
            out.unparsed.push(Unparsed {
                line: e.location.line.max(1),
                error: e.message,
            });
            return out;
        }
    };
    let statements: Vec<_> = split(tokens)
        .into_iter()
        .filter(|s| s.iter().any(|t| !is_trivia(&t.token)))
        .collect();
    let mut scope = Scope {
        no_transaction: super::source::no_transaction(sql),
        ..Scope::default()
    };
    for statement in statements {
        let Some(first) = statement.iter().find(|t| !is_trivia(&t.token)) else {
            continue;
        };
        let line = first.span.start.line;
        out.statements += 1;
        let allow = allowed_rules(&statement, &mut out.unknown_allows);
        let mut parser = Parser::new(dialect).with_tokens_with_locations(statement.clone());
        let parsed = parser.parse_statement().and_then(|s| {
            if parser.peek_token_ref().token == Token::EOF {
                Ok(s)
            } else {
                let next = parser.peek_token();
                Err(sqlparser::parser::ParserError::ParserError(format!(
                    "unexpected {} at line {}, column {}",
                    next.token, next.span.start.line, next.span.start.column
                )))
            }
        });
        match parsed {
            Ok(s) => {
                for (rule, message) in check(&s, &mut scope) {
                    out.record(
                        &allow,
                        Hit {
                            line,
                            rule,
                            message,
                        },
                    );
                }
            }
            Err(e) => match fallback(&statement) {
                Fallback::Hit(rule, message) => out.record(
                    &allow,
                    Hit {
                        line,
                        rule,
                        message,
                    },
                ),
                Fallback::Clean => {}
                Fallback::Unknown => out.unparsed.push(Unparsed {
                    line,
                    error: e
                        .to_string()
                        .trim_start_matches("sql parser error: ")
                        .to_owned(),
                }),
            },
        }
    }
    out
}

impl SqlLint {
    fn record(&mut self, allow: &[&str], hit: Hit) {
        if allow.contains(&hit.rule.id) {
            self.allowed.push(hit);
        } else {
            self.hits.push(hit);
        }
    }
}

/// The rule ids of the `-- cutover:allow` comments before a statement's first token. Ids
/// that name no rule become notes.
fn allowed_rules(statement: &[TokenWithSpan], notes: &mut Vec<Unparsed>) -> Vec<&'static str> {
    use sqlparser::tokenizer::Whitespace;
    let mut allow = Vec::new();
    for t in statement.iter().take_while(|t| is_trivia(&t.token)) {
        let Token::Whitespace(
            Whitespace::SingleLineComment { comment, .. } | Whitespace::MultiLineComment(comment),
        ) = &t.token
        else {
            continue;
        };
        let Some(rest) = comment.trim().strip_prefix("cutover:allow") else {
            continue;
        };
        let ids = rest.split(" -- ").next().unwrap_or_default();
        for id in ids.split([',', ' ', '\t']).filter(|id| !id.is_empty()) {
            match RULES.iter().find(|r| r.id == id) {
                Some(rule) => allow.push(rule.id),
                None => notes.push(Unparsed {
                    line: t.span.start.line,
                    error: format!(
                        "`cutover:allow {id}` names no lint rule (rules: {})",
                        RULES.iter().map(|r| r.id).collect::<Vec<_>>().join(", ")
                    ),
                }),
            }
        }
    }
    allow
}

fn is_trivia(token: &Token) -> bool {
    matches!(token, Token::Whitespace(_))
}

/// Splits tokens into statements on top-level semicolons (the tokenizer has already kept
/// semicolons inside strings, quoted names, comments and dollar-quoted bodies).
pub(crate) fn split(tokens: Vec<TokenWithSpan>) -> Vec<Vec<TokenWithSpan>> {
    let mut out = vec![Vec::new()];
    for t in tokens {
        if t.token == Token::SemiColon {
            out.push(Vec::new());
        } else {
            out.last_mut().expect("never empty").push(t);
        }
    }
    out
}

/// The parser does not know `CLUSTER` nor `VACUUM (FULL, ...)`. For statements it cannot
/// parse, and only for these two, the rule looks at the leading keyword tokens instead of
/// the syntax tree: the one exception to "rules read the parsed statement".
fn keyword_fallback(statement: &[TokenWithSpan]) -> Fallback {
    let starts_with_word = statement
        .iter()
        .find(|t| !is_trivia(&t.token))
        .is_some_and(|t| matches!(&t.token, Token::Word(w) if w.quote_style.is_none()));
    if !starts_with_word {
        return Fallback::Unknown;
    }
    let mut words = statement.iter().filter_map(|t| match &t.token {
        Token::Word(w) if w.quote_style.is_none() => Some(w.keyword),
        _ => None,
    });
    match words.next() {
        Some(Keyword::CLUSTER) => Fallback::Hit(CLUSTER, "CLUSTER rewrites the table".to_owned()),
        Some(Keyword::VACUUM) if words.any(|k| k == Keyword::FULL) => {
            Fallback::Hit(VACUUM_FULL, "VACUUM (FULL) rewrites the table".to_owned())
        }
        // A VACUUM without FULL: no rule applies to it.
        Some(Keyword::VACUUM) => Fallback::Clean,
        _ => Fallback::Unknown,
    }
}

/// What the keyword fallback makes of a statement the parser cannot read.
enum Fallback {
    Hit(Rule, String),
    /// One of its statements, breaking no rule.
    Clean,
    /// Not one of its statements.
    Unknown,
}

/// The last part of a name, as PostgreSQL folds it: unquoted names are lower-cased.
fn ident_key(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_lowercase()
    }
}

fn table_key(name: &ObjectName) -> String {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map_or_else(|| name.to_string().to_lowercase(), ident_key)
}

/// The rules of DROP TABLE and DROP DATABASE, the same on every database.
fn drops(statement: &Statement, scope: &Scope) -> Vec<(Rule, String)> {
    let Statement::Drop {
        object_type, names, ..
    } = statement
    else {
        return Vec::new();
    };
    match object_type {
        ObjectType::Table => names
            .iter()
            .filter(|n| !scope.tables.contains(&table_key(n)))
            .map(|n| (rules::DROP_TABLE, format!("DROP TABLE `{n}`")))
            .collect(),
        ObjectType::Database => names
            .iter()
            .map(|n| (rules::DROP_DATABASE, format!("DROP DATABASE `{n}`")))
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::rules::*;
    use super::*;

    fn rules(sql: &str) -> Vec<&'static str> {
        let out = lint_sql(sql, Db::Postgres);
        assert!(out.unparsed.is_empty(), "unparsed: {:?}", out.unparsed);
        out.hits.iter().map(|h| h.rule.id).collect()
    }

    #[test]
    fn every_rule_has_a_trigger_and_a_safe_form() {
        use Db::{Mysql, Postgres};
        let cases: &[(Db, &str, &str, &str)] = &[
            (
                Postgres,
                CREATE_INDEX.id,
                "CREATE INDEX idx ON recipes (title);",
                "-- cutover:no-transaction\nCREATE INDEX CONCURRENTLY idx ON recipes (title);",
            ),
            (
                Postgres,
                ADD_COLUMN_NOT_NULL.id,
                "ALTER TABLE recipes ADD COLUMN rating int NOT NULL;",
                "ALTER TABLE recipes ADD COLUMN rating int NOT NULL DEFAULT 0;",
            ),
            (
                Postgres,
                ADD_COLUMN_VOLATILE_DEFAULT.id,
                "ALTER TABLE recipes ADD COLUMN token uuid DEFAULT gen_random_uuid();",
                "ALTER TABLE recipes ADD COLUMN added_at timestamptz NOT NULL DEFAULT now();",
            ),
            (
                Postgres,
                ADD_COLUMN_VOLATILE_DEFAULT.id,
                "ALTER TABLE recipes ADD COLUMN score float8 NOT NULL DEFAULT (random() * 10)::int;",
                "ALTER TABLE recipes ADD COLUMN score float8;\nALTER TABLE recipes ALTER COLUMN score SET DEFAULT random();",
            ),
            (
                Postgres,
                ADD_COLUMN_VOLATILE_DEFAULT.id,
                "ALTER TABLE recipes ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY;",
                "CREATE TABLE notes (n bigint GENERATED ALWAYS AS IDENTITY, at timestamptz DEFAULT clock_timestamp());",
            ),
            (
                Postgres,
                CONSTRAINT_NOT_VALID.id,
                "ALTER TABLE recipes ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id);",
                "ALTER TABLE recipes ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;",
            ),
            (
                Postgres,
                CONSTRAINT_NOT_VALID.id,
                "ALTER TABLE recipes ADD CONSTRAINT positive CHECK (servings > 0);",
                "ALTER TABLE recipes ADD CONSTRAINT positive CHECK (servings > 0) NOT VALID;\nALTER TABLE recipes VALIDATE CONSTRAINT positive;",
            ),
            (
                Postgres,
                CONSTRAINT_NOT_VALID.id,
                "ALTER TABLE recipes ADD COLUMN author_id bigint REFERENCES users (id);",
                "ALTER TABLE recipes ADD COLUMN author_id bigint;\nALTER TABLE recipes ADD CONSTRAINT fk_author FOREIGN KEY (author_id) REFERENCES users (id) NOT VALID;",
            ),
            (
                Postgres,
                UNIQUE_WITHOUT_INDEX.id,
                "ALTER TABLE recipes ADD CONSTRAINT recipes_slug_key UNIQUE (slug);",
                "ALTER TABLE recipes ADD CONSTRAINT recipes_slug_key UNIQUE USING INDEX recipes_slug_idx;",
            ),
            (
                Postgres,
                UNIQUE_WITHOUT_INDEX.id,
                "ALTER TABLE recipes ADD PRIMARY KEY (id);",
                "ALTER TABLE recipes ADD CONSTRAINT recipes_pkey PRIMARY KEY USING INDEX recipes_id_idx;",
            ),
            (
                Postgres,
                UNIQUE_WITHOUT_INDEX.id,
                "ALTER TABLE recipes ADD COLUMN slug text UNIQUE;",
                "CREATE TABLE labels (id bigint PRIMARY KEY);\nALTER TABLE labels ADD COLUMN slug text UNIQUE;",
            ),
            (
                Postgres,
                ALTER_COLUMN_TYPE.id,
                "ALTER TABLE recipes ALTER COLUMN servings TYPE bigint;",
                "ALTER TABLE recipes ALTER COLUMN servings SET DEFAULT 1;",
            ),
            (
                Postgres,
                RENAME_COLUMN.id,
                "ALTER TABLE recipes RENAME COLUMN title TO name;",
                "ALTER INDEX idx_a RENAME TO idx_b;",
            ),
            (
                Postgres,
                RENAME_TABLE.id,
                "ALTER TABLE recipes RENAME TO dishes;",
                "CREATE TABLE dishes_new (id int);\nALTER TABLE dishes_new RENAME TO dishes;",
            ),
            (
                Postgres,
                DROP_COLUMN.id,
                "ALTER TABLE recipes DROP COLUMN cuisine;",
                "ALTER TABLE recipes DROP CONSTRAINT positive;",
            ),
            (
                Postgres,
                DROP_TABLE.id,
                "DROP TABLE IF EXISTS recipes;",
                "CREATE TABLE scratch (id bigint);\nDROP TABLE scratch;",
            ),
            (
                Postgres,
                DROP_DATABASE.id,
                "DROP DATABASE app;",
                "DROP VIEW IF EXISTS recipe_titles;",
            ),
            (
                Postgres,
                SET_NOT_NULL.id,
                "ALTER TABLE recipes ALTER COLUMN title SET NOT NULL;",
                "ALTER TABLE recipes ADD CONSTRAINT title_nn CHECK (title IS NOT NULL) NOT VALID;",
            ),
            (
                Postgres,
                PREFER_BIGINT.id,
                "CREATE TABLE notes (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY);",
                "CREATE TABLE notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, rating int);",
            ),
            (
                Postgres,
                PREFER_IDENTITY.id,
                "CREATE TABLE notes (id bigserial PRIMARY KEY);",
                "CREATE TABLE notes (id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY);",
            ),
            (
                Postgres,
                CHAR_COLUMN.id,
                "CREATE TABLE countries (code char(2) PRIMARY KEY);",
                "CREATE TABLE countries (code text PRIMARY KEY CHECK (length(code) = 2), name varchar(80));",
            ),
            (
                Postgres,
                CONCURRENTLY_IN_TRANSACTION.id,
                "CREATE INDEX CONCURRENTLY idx ON recipes (title);",
                "-- cutover:no-transaction\n-- Its own migration.\nCREATE UNIQUE INDEX CONCURRENTLY idx ON recipes (title);",
            ),
            (
                Postgres,
                CONCURRENTLY_IN_TRANSACTION.id,
                "SELECT 1;\nCREATE INDEX CONCURRENTLY idx ON recipes (title);",
                "-- no-transaction\nSELECT 1;\nCREATE INDEX CONCURRENTLY idx ON recipes (title);",
            ),
            (
                Postgres,
                TRANSACTION_NESTING.id,
                "ALTER TABLE recipes ADD COLUMN note text;\nCOMMIT;",
                "-- cutover:no-transaction\nBEGIN;\nUPDATE recipes SET note = '';\nCOMMIT;",
            ),
            (
                Postgres,
                LOCK_TIMEOUT_OFF.id,
                "SET lock_timeout = 0;",
                "SET lock_timeout = '30s';\nSET statement_timeout = 0;",
            ),
            (
                Postgres,
                LOCK_TIMEOUT_OFF.id,
                "SET LOCAL lock_timeout TO DEFAULT;",
                "SET LOCAL lock_timeout TO '1min';",
            ),
            (
                Postgres,
                LOCK_TIMEOUT_OFF.id,
                "RESET lock_timeout;",
                "RESET statement_timeout;",
            ),
            (
                Postgres,
                VACUUM_FULL.id,
                "VACUUM FULL recipes;",
                "VACUUM recipes;",
            ),
            (
                Postgres,
                VACUUM_FULL.id,
                "VACUUM (FULL, VERBOSE) recipes;",
                "VACUUM ANALYZE recipes;",
            ),
            (
                Postgres,
                CLUSTER.id,
                "CLUSTER recipes USING idx_recipes_user_id;",
                "INSERT INTO cluster (id) VALUES (1);",
            ),
            (
                Mysql,
                MYSQL_ALGORITHM.id,
                "ALTER TABLE recipes MODIFY COLUMN title VARCHAR(500) NOT NULL;",
                "ALTER TABLE recipes MODIFY COLUMN title VARCHAR(500) NOT NULL, ALGORITHM=INPLACE, LOCK=NONE;",
            ),
            (
                Mysql,
                MYSQL_ALGORITHM.id,
                "ALTER TABLE recipes DROP PRIMARY KEY, ADD PRIMARY KEY (id, user_id), ALGORITHM=INPLACE;",
                "ALTER TABLE recipes ADD COLUMN rating INT, ALGORITHM=INSTANT;",
            ),
            (
                Mysql,
                MYSQL_ALGORITHM.id,
                "ALTER TABLE recipes ADD COLUMN rating INT AFTER title;",
                "ALTER TABLE recipes ADD COLUMN rating INT;",
            ),
            (
                Mysql,
                MYSQL_ALGORITHM.id,
                "ALTER TABLE recipes ADD INDEX idx_title (title), ALGORITHM=COPY;",
                "ALTER TABLE recipes ADD INDEX idx_title (title);",
            ),
            (
                Mysql,
                MYSQL_LOCK.id,
                "ALTER TABLE recipes ADD INDEX idx_title (title), LOCK=SHARED;",
                "ALTER TABLE recipes ADD INDEX idx_title (title), LOCK=NONE;",
            ),
            (
                Mysql,
                MYSQL_UNIQUE_INDEX.id,
                "CREATE UNIQUE INDEX idx_email ON users (email);",
                "CREATE INDEX idx_email ON users (email);",
            ),
            (
                Mysql,
                MYSQL_UNIQUE_INDEX.id,
                "ALTER TABLE users ADD UNIQUE KEY uq_email (email);",
                "CREATE TABLE t (id BIGINT PRIMARY KEY, email VARCHAR(200));\nALTER TABLE t ADD UNIQUE KEY uq_email (email);",
            ),
            (
                Mysql,
                RENAME_COLUMN.id,
                "ALTER TABLE recipes CHANGE COLUMN title name VARCHAR(200), ALGORITHM=INPLACE, LOCK=NONE;",
                "ALTER TABLE recipes ALTER COLUMN servings SET DEFAULT 1;",
            ),
            (
                Mysql,
                RENAME_TABLE.id,
                "RENAME TABLE recipes TO dishes;",
                "CREATE TABLE dishes_new (id INT);\nRENAME TABLE dishes_new TO dishes;",
            ),
            (
                Mysql,
                DROP_COLUMN.id,
                "ALTER TABLE recipes DROP COLUMN cuisine;",
                "ALTER TABLE recipes DROP INDEX idx_title;",
            ),
            (
                Mysql,
                DROP_TABLE.id,
                "DROP TABLE recipes;",
                "CREATE TABLE tmp (id INT);\nDROP TABLE tmp;",
            ),
            (
                Mysql,
                DROP_DATABASE.id,
                "DROP DATABASE app;",
                "DROP INDEX idx_title ON recipes;",
            ),
        ];
        for (db, rule, bad, good) in cases {
            let out = lint_sql(bad, *db);
            assert!(out.unparsed.is_empty(), "{bad}: {:?}", out.unparsed);
            assert_eq!(
                out.hits.iter().map(|h| h.rule.id).collect::<Vec<_>>(),
                vec![*rule],
                "{bad}"
            );
            let out = lint_sql(good, *db);
            assert!(out.unparsed.is_empty(), "{good}: {:?}", out.unparsed);
            assert_eq!(
                out.hits.iter().map(|h| h.rule.id).collect::<Vec<_>>(),
                Vec::<&str>::new(),
                "{good}"
            );
        }
        // Every rule is covered above, on each of its databases.
        for rule in RULES {
            for db in rule.databases {
                assert!(
                    cases.iter().any(|c| c.0 == *db && c.1 == rule.id),
                    "{} untested on {db:?}",
                    rule.id
                );
            }
        }
    }

    #[test]
    fn a_serial_key_breaks_both_type_rules_and_only_postgres_rules_apply_to_postgres() {
        assert_eq!(
            rules("CREATE TABLE notes (id serial PRIMARY KEY, body text);"),
            vec![PREFER_BIGINT.id, PREFER_IDENTITY.id]
        );
        // The MySQL rules read MySQL only: a type change there is not `alter-column-type`,
        // and PostgreSQL's CREATE INDEX rule is not MySQL's (InnoDB builds indexes online).
        let mysql = |sql| {
            let out = lint_sql(sql, Db::Mysql);
            assert!(out.unparsed.is_empty(), "{:?}", out.unparsed);
            out.hits.iter().map(|h| h.rule.id).collect::<Vec<_>>()
        };
        assert_eq!(
            mysql(
                "CREATE INDEX idx ON recipes (title);\nCREATE TABLE n (id INT AUTO_INCREMENT PRIMARY KEY, code CHAR(2));"
            ),
            Vec::<&str>::new()
        );
        assert_eq!(
            mysql("ALTER TABLE recipes MODIFY title TEXT, LOCK=EXCLUSIVE;"),
            vec![MYSQL_ALGORITHM.id, MYSQL_LOCK.id]
        );
        let out = lint_sql("VACUUM (FULL) recipes;", Db::Mysql);
        assert!(out.hits.is_empty(), "{:?}", out.hits);
        assert_eq!(out.unparsed.len(), 1);
        // A table created in the same migration is exempt there too.
        assert_eq!(
            mysql(
                "CREATE TABLE n (id INT);\nALTER TABLE n MODIFY id BIGINT, ADD UNIQUE (id), DROP COLUMN id, LOCK=SHARED;"
            ),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn a_table_created_in_the_same_migration_is_exempt() {
        let sql = "CREATE TABLE Tags (id int PRIMARY KEY, name text);
CREATE INDEX tags_name ON tags (name);
ALTER TABLE tags ADD COLUMN slug text NOT NULL;
ALTER TABLE public.tags ADD CONSTRAINT c CHECK (id > 0);
ALTER TABLE tags ALTER COLUMN name TYPE varchar(80);
ALTER TABLE tags ALTER COLUMN name SET NOT NULL;
ALTER TABLE tags RENAME COLUMN name TO label;
ALTER TABLE tags DROP COLUMN slug;
ALTER TABLE tags RENAME TO labels;
CREATE INDEX labels_label ON labels (label);";
        assert_eq!(rules(sql), Vec::<&str>::new());
        // A quoted name is case-sensitive: "Tags" is another table than tags.
        assert_eq!(
            rules("CREATE TABLE \"Tags\" (id int);\nCREATE INDEX i ON tags (id);"),
            vec![CREATE_INDEX.id]
        );
    }

    #[test]
    fn set_not_null_on_a_column_added_in_the_same_migration_is_exempt() {
        let sql = "ALTER TABLE recipes ADD COLUMN rating int;
UPDATE recipes SET rating = 3;
ALTER TABLE recipes ALTER COLUMN rating SET NOT NULL;";
        assert_eq!(rules(sql), Vec::<&str>::new());
    }

    #[test]
    fn lines_are_those_of_each_statements_first_keyword() {
        let sql = "-- a comment; with a semicolon\n\nCREATE TABLE t (id int);\n\n/* block; comment */\nINSERT INTO t VALUES (1); CREATE INDEX i\n  ON recipes (id);\nSELECT ';', $$;$$;\n\n  ALTER TABLE recipes\n    DROP COLUMN x;\n";
        let out = lint_sql(sql, Db::Postgres);
        assert!(out.unparsed.is_empty(), "{:?}", out.unparsed);
        let lines: Vec<(u64, &str)> = out.hits.iter().map(|h| (h.line, h.rule.id)).collect();
        assert_eq!(lines, vec![(6, CREATE_INDEX.id), (10, DROP_COLUMN.id)]);
        assert_eq!(out.statements, 5);
    }

    #[test]
    fn several_operations_in_one_statement_are_each_checked() {
        let sql = "ALTER TABLE recipes ADD COLUMN a int NOT NULL, DROP COLUMN b, ALTER COLUMN c TYPE text;";
        assert_eq!(
            rules(sql),
            vec![ADD_COLUMN_NOT_NULL.id, DROP_COLUMN.id, ALTER_COLUMN_TYPE.id]
        );
    }

    #[test]
    fn unparsable_statements_are_notes_and_do_not_hide_the_rest() {
        let sql = "DO $$ BEGIN RAISE NOTICE 'x; y'; END $$;\nCREATE INDEX i ON recipes (id);\nREINDEX TABLE recipes;\n";
        let out = lint_sql(sql, Db::Postgres);
        assert_eq!(
            out.unparsed.iter().map(|u| u.line).collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert!(!out.unparsed[0].error.is_empty());
        assert_eq!(
            out.hits
                .iter()
                .map(|h| (h.line, h.rule.id))
                .collect::<Vec<_>>(),
            vec![(2, CREATE_INDEX.id)]
        );
        // A file the tokenizer cannot read at all is one note.
        let out = lint_sql(
            "CREATE INDEX i ON t (a);\nSELECT 'unterminated;\n",
            Db::Postgres,
        );
        assert_eq!(out.unparsed.len(), 1);
        assert!(out.hits.is_empty());
    }

    #[test]
    fn the_shipped_example_migrations_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let set = crate::migrate::source::read_dir(&dir).unwrap();
        let report = lint(
            &set.migrations,
            Path::new(env!("CARGO_MANIFEST_DIR")),
            Db::Postgres,
        );
        assert!(report.notes.is_empty(), "{:?}", report.notes);
        // The tags migration drops recipes.cuisine; nothing else is flagged.
        let rules: Vec<_> = report.findings.iter().map(|f| f.rule).collect();
        assert_eq!(rules, vec![DROP_COLUMN.id], "{:#?}", report.findings);
        assert!(
            report.findings[0]
                .file
                .starts_with("migrations/20240301100100_create_tags_move_cuisine.up.sql")
        );
    }
}
