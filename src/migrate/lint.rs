//! Lint rules for PostgreSQL migrations: statements that lock or rewrite a big table while
//! the application waits, or that break the previous release, which keeps running until
//! the new one is out.
//!
//! Every statement is parsed with `sqlparser` (PostgreSQL dialect) and the rules look at
//! the syntax tree, never at the text. The file is tokenized once and split on top-level
//! semicolons (the tokenizer knows strings, quoted names, comments and `$$` bodies), so one
//! statement the parser cannot read does not hide the others: it is reported as a note.
//! The parser's own spans start at a statement's first name rather than its first keyword,
//! and some statements have none, so a statement's line is that of its first token.
//!
//! Statements on a table created earlier in the same migration are never flagged: the
//! table is new and empty, and no running release uses it yet.
//!
//! A finding that is intended (the column really is unused since the last release) is
//! allowed by a comment right before the statement: `-- cutover:allow drop-column` (several
//! rule ids separated by commas or spaces; text after ` -- ` is a reason for reviewers). It
//! covers that one statement only, is listed as allowed by `migrate lint`, and no longer
//! stops a plan under `lint: error`. An id that names no rule is a note, so a typo shows.

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use serde::Serialize;
use sqlparser::ast::{
    AlterColumnOperation, AlterTableOperation, ColumnOption, Ident, ObjectName,
    RenameTableNameKind, Statement, TableConstraint,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, TokenWithSpan, Tokenizer};

use super::{MigrationFile, MigrationSet};
use crate::place::{Message, Place};

/// A rule: its id, why the operation hurts and what to do instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Rule {
    pub id: &'static str,
    pub why: &'static str,
    pub safe: &'static str,
}

pub(crate) const CREATE_INDEX: Rule = Rule {
    id: "create-index-not-concurrently",
    why: "CREATE INDEX holds a SHARE lock until the whole table is indexed: every INSERT, UPDATE and DELETE on it waits",
    safe: "CREATE INDEX CONCURRENTLY, in a migration of its own whose first line is `-- cutover:no-transaction` (CONCURRENTLY cannot run inside a transaction)",
};

pub(crate) const ADD_COLUMN_NOT_NULL: Rule = Rule {
    id: "add-column-not-null-without-default",
    why: "adding a NOT NULL column without a DEFAULT fails on a table that has rows, and the previous release, still running, inserts rows without the column",
    safe: "add it with a DEFAULT (PostgreSQL 11+ stores a constant default without rewriting the table), or add it nullable, backfill in batches, then make it NOT NULL",
};

pub(crate) const CONSTRAINT_NOT_VALID: Rule = Rule {
    id: "add-constraint-without-not-valid",
    why: "adding a foreign key or CHECK checks every existing row while holding a lock that blocks writes (to both tables for a foreign key)",
    safe: "ADD CONSTRAINT ... NOT VALID (instant; new rows are checked), then ALTER TABLE ... VALIDATE CONSTRAINT ... in a later migration, which does not block writes",
};

pub(crate) const ALTER_COLUMN_TYPE: Rule = Rule {
    id: "alter-column-type",
    why: "changing a column's type takes an ACCESS EXCLUSIVE lock (no reads or writes) and, unless the types are binary-compatible such as varchar(n) to text, rewrites the table and its indexes; the previous release still uses the old type",
    safe: "add a column of the new type, write to both, backfill in batches, switch reads, and drop the old column in a later release",
};

pub(crate) const RENAME_COLUMN: Rule = Rule {
    id: "rename-column",
    why: "the previous release, still running during the deploy, keeps using the old column name and fails",
    safe: "add the new column, write to both and backfill, switch the code to it, and drop the old column in a later release",
};

pub(crate) const RENAME_TABLE: Rule = Rule {
    id: "rename-table",
    why: "the previous release, still running during the deploy, keeps using the old table name and fails",
    safe: "rename in two releases: keep the old name working meanwhile (e.g. a view `CREATE VIEW old AS SELECT * FROM new`), switch the code, then drop the view",
};

pub(crate) const DROP_COLUMN: Rule = Rule {
    id: "drop-column",
    why: "the previous release may still read or write the column until the new release is fully out (including ORMs that list every column)",
    safe: "first ship a release that no longer uses the column, then drop it in a migration of a later release",
};

pub(crate) const SET_NOT_NULL: Rule = Rule {
    id: "set-not-null",
    why: "SET NOT NULL scans the whole table for NULLs while holding an ACCESS EXCLUSIVE lock (no reads or writes)",
    safe: "ADD CONSTRAINT c CHECK (col IS NOT NULL) NOT VALID; VALIDATE CONSTRAINT c in a later migration; then SET NOT NULL (PostgreSQL 12+ skips the scan) and drop the CHECK",
};

pub(crate) const VACUUM_FULL: Rule = Rule {
    id: "vacuum-full",
    why: "VACUUM FULL rewrites the whole table under an ACCESS EXCLUSIVE lock: no reads or writes until it finishes",
    safe: "plain VACUUM (no lock on reads or writes), or pg_repack outside the deploy",
};

pub(crate) const CLUSTER: Rule = Rule {
    id: "cluster",
    why: "CLUSTER rewrites the whole table under an ACCESS EXCLUSIVE lock: no reads or writes until it finishes",
    safe: "pg_repack (which can also reorder rows) outside the deploy, or leave the physical order alone",
};

/// Every rule, in the order they are documented.
pub(crate) const RULES: &[Rule] = &[
    CREATE_INDEX,
    ADD_COLUMN_NOT_NULL,
    CONSTRAINT_NOT_VALID,
    ALTER_COLUMN_TYPE,
    RENAME_COLUMN,
    RENAME_TABLE,
    DROP_COLUMN,
    SET_NOT_NULL,
    VACUUM_FULL,
    CLUSTER,
];

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

/// Lints the up files of `migrations`; paths are shown relative to `base` when inside it.
pub(crate) fn lint<'a>(
    migrations: impl IntoIterator<Item = &'a MigrationFile>,
    base: &Path,
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
        let result = lint_sql(&m.up_sql);
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

/// For a plan: lints the migrations it applies when the database is PostgreSQL. Returns
/// the problems (findings under `lint: error`) and the warnings (findings otherwise, and
/// notes about statements that could not be linted).
pub(crate) fn plan_messages(
    database_kind: &str,
    lint_errors: bool,
    migrations: &MigrationSet,
    versions: &[i64],
    base: &Path,
) -> (Vec<Message>, Vec<Message>) {
    if database_kind != "postgres" {
        return (Vec::new(), Vec::new());
    }
    let report = lint(versions.iter().filter_map(|v| migrations.get(*v)), base);
    let findings = report.findings.iter();
    let mut warnings = Vec::new();
    let problems = if lint_errors {
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

/// Tables and columns created earlier in the same file.
#[derive(Default)]
struct Scope {
    tables: HashSet<String>,
    columns: HashSet<(String, String)>,
}

/// Lints one SQL text (a migration's up file) with the PostgreSQL rules.
pub(crate) fn lint_sql(sql: &str) -> SqlLint {
    let dialect = PostgreSqlDialect {};
    let mut out = SqlLint::default();
    let tokens = match Tokenizer::new(&dialect, sql).tokenize_with_location() {
        Ok(t) => t,
        Err(e) => {
            out.unparsed.push(Unparsed {
                line: e.location.line.max(1),
                error: e.message,
            });
            return out;
        }
    };
    let mut scope = Scope::default();
    for statement in split(tokens) {
        let Some(first) = statement.iter().find(|t| !is_trivia(&t.token)) else {
            continue;
        };
        let line = first.span.start.line;
        out.statements += 1;
        let allow = allowed_rules(&statement, &mut out.unknown_allows);
        let mut parser = Parser::new(&dialect).with_tokens_with_locations(statement.clone());
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
            Err(e) => match keyword_fallback(&statement) {
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

/// The rules broken by one statement; records the tables and columns it creates.
fn check(statement: &Statement, scope: &mut Scope) -> Vec<(Rule, String)> {
    let mut hits = Vec::new();
    match statement {
        Statement::CreateTable(create) => {
            let table = table_key(&create.name);
            for c in &create.columns {
                scope.columns.insert((table.clone(), ident_key(&c.name)));
            }
            scope.tables.insert(table);
        }
        Statement::CreateIndex(index)
            if !index.concurrently && !scope.tables.contains(&table_key(&index.table_name)) =>
        {
            hits.push((
                CREATE_INDEX,
                format!(
                    "CREATE {}INDEX{} on `{}` without CONCURRENTLY",
                    if index.unique { "UNIQUE " } else { "" },
                    index
                        .name
                        .as_ref()
                        .map(|n| format!(" {n}"))
                        .unwrap_or_default(),
                    index.table_name
                ),
            ));
        }
        Statement::AlterTable(alter) => {
            let table = table_key(&alter.name);
            let new_table = scope.tables.contains(&table);
            let shown = &alter.name;
            for op in &alter.operations {
                match op {
                    AlterTableOperation::AddColumn { column_def, .. } => {
                        let column = ident_key(&column_def.name);
                        let options = || column_def.options.iter().map(|o| &o.option);
                        let not_null = options().any(|o| {
                            matches!(o, ColumnOption::NotNull | ColumnOption::PrimaryKey(_))
                        });
                        let filled = options().any(|o| {
                            matches!(
                                o,
                                ColumnOption::Default(_)
                                    | ColumnOption::Generated { .. }
                                    | ColumnOption::Identity(_)
                            )
                        });
                        if not_null && !filled && !new_table {
                            hits.push((
                                ADD_COLUMN_NOT_NULL,
                                format!(
                                    "ADD COLUMN {} ... NOT NULL without a DEFAULT on `{shown}`",
                                    column_def.name
                                ),
                            ));
                        }
                        scope.columns.insert((table.clone(), column));
                    }
                    AlterTableOperation::AddConstraint {
                        constraint,
                        not_valid,
                    } if !not_valid && !new_table => {
                        let kind = match constraint {
                            TableConstraint::ForeignKey(_) => "FOREIGN KEY",
                            TableConstraint::Check(_) => "CHECK",
                            _ => continue,
                        };
                        let name = constraint_name(constraint)
                            .map(|n| format!(" {n}"))
                            .unwrap_or_default();
                        hits.push((
                            CONSTRAINT_NOT_VALID,
                            format!("ADD CONSTRAINT{name} {kind} on `{shown}` without NOT VALID"),
                        ));
                    }
                    AlterTableOperation::AlterColumn { column_name, op } => match op {
                        AlterColumnOperation::SetDataType { data_type, .. } if !new_table => {
                            hits.push((
                                ALTER_COLUMN_TYPE,
                                format!("ALTER COLUMN {column_name} TYPE {data_type} on `{shown}`"),
                            ));
                        }
                        AlterColumnOperation::SetNotNull
                            if !scope
                                .columns
                                .contains(&(table.clone(), ident_key(column_name))) =>
                        {
                            hits.push((
                                SET_NOT_NULL,
                                format!(
                                    "ALTER COLUMN {column_name} SET NOT NULL on existing column `{shown}.{column_name}`"
                                ),
                            ));
                        }
                        _ => {}
                    },
                    AlterTableOperation::RenameColumn {
                        old_column_name,
                        new_column_name,
                    } => {
                        let old = (table.clone(), ident_key(old_column_name));
                        if scope.columns.contains(&old) {
                            scope
                                .columns
                                .insert((table.clone(), ident_key(new_column_name)));
                        } else if !new_table {
                            hits.push((
                                RENAME_COLUMN,
                                format!(
                                    "RENAME COLUMN {old_column_name} TO {new_column_name} on `{shown}`"
                                ),
                            ));
                        }
                    }
                    AlterTableOperation::RenameTable { table_name } => {
                        let (RenameTableNameKind::To(to) | RenameTableNameKind::As(to)) =
                            table_name;
                        if new_table {
                            scope.tables.insert(table_key(to));
                        } else {
                            hits.push((RENAME_TABLE, format!("RENAME `{shown}` TO `{to}`")));
                        }
                    }
                    AlterTableOperation::DropColumn { column_names, .. } => {
                        for column in column_names {
                            let added = scope.columns.contains(&(table.clone(), ident_key(column)));
                            if !added && !new_table {
                                hits.push((
                                    DROP_COLUMN,
                                    format!("DROP COLUMN {column} on `{shown}`"),
                                ));
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        Statement::Vacuum(vacuum) if vacuum.full => {
            hits.push((
                VACUUM_FULL,
                format!(
                    "VACUUM FULL{} rewrites the table",
                    vacuum
                        .table_name
                        .as_ref()
                        .map(|t| format!(" `{t}`"))
                        .unwrap_or_default()
                ),
            ));
        }
        _ => {}
    }
    hits
}

fn constraint_name(constraint: &TableConstraint) -> Option<&Ident> {
    match constraint {
        TableConstraint::ForeignKey(c) => c.name.as_ref(),
        TableConstraint::Check(c) => c.name.as_ref(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(sql: &str) -> Vec<&'static str> {
        let out = lint_sql(sql);
        assert!(out.unparsed.is_empty(), "unparsed: {:?}", out.unparsed);
        out.hits.iter().map(|h| h.rule.id).collect()
    }

    #[test]
    fn every_rule_has_a_trigger_and_a_safe_form() {
        let cases: &[(&str, &str, &str)] = &[
            (
                CREATE_INDEX.id,
                "CREATE INDEX idx ON recipes (title);",
                "CREATE INDEX CONCURRENTLY idx ON recipes (title);",
            ),
            (
                ADD_COLUMN_NOT_NULL.id,
                "ALTER TABLE recipes ADD COLUMN rating int NOT NULL;",
                "ALTER TABLE recipes ADD COLUMN rating int NOT NULL DEFAULT 0;",
            ),
            (
                CONSTRAINT_NOT_VALID.id,
                "ALTER TABLE recipes ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id);",
                "ALTER TABLE recipes ADD CONSTRAINT fk FOREIGN KEY (user_id) REFERENCES users (id) NOT VALID;",
            ),
            (
                CONSTRAINT_NOT_VALID.id,
                "ALTER TABLE recipes ADD CONSTRAINT positive CHECK (servings > 0);",
                "ALTER TABLE recipes ADD CONSTRAINT positive CHECK (servings > 0) NOT VALID;\nALTER TABLE recipes VALIDATE CONSTRAINT positive;",
            ),
            (
                ALTER_COLUMN_TYPE.id,
                "ALTER TABLE recipes ALTER COLUMN servings TYPE bigint;",
                "ALTER TABLE recipes ALTER COLUMN servings SET DEFAULT 1;",
            ),
            (
                RENAME_COLUMN.id,
                "ALTER TABLE recipes RENAME COLUMN title TO name;",
                "ALTER INDEX idx_a RENAME TO idx_b;",
            ),
            (
                RENAME_TABLE.id,
                "ALTER TABLE recipes RENAME TO dishes;",
                "CREATE TABLE dishes_new (id int);\nALTER TABLE dishes_new RENAME TO dishes;",
            ),
            (
                DROP_COLUMN.id,
                "ALTER TABLE recipes DROP COLUMN cuisine;",
                "ALTER TABLE recipes DROP CONSTRAINT positive;",
            ),
            (
                SET_NOT_NULL.id,
                "ALTER TABLE recipes ALTER COLUMN title SET NOT NULL;",
                "ALTER TABLE recipes ADD CONSTRAINT title_nn CHECK (title IS NOT NULL) NOT VALID;",
            ),
            (VACUUM_FULL.id, "VACUUM FULL recipes;", "VACUUM recipes;"),
            (
                VACUUM_FULL.id,
                "VACUUM (FULL, VERBOSE) recipes;",
                "VACUUM ANALYZE recipes;",
            ),
            (
                CLUSTER.id,
                "CLUSTER recipes USING idx_recipes_user_id;",
                "INSERT INTO cluster (id) VALUES (1);",
            ),
        ];
        for (rule, bad, good) in cases {
            let hits = lint_sql(bad).hits;
            assert_eq!(
                hits.iter().map(|h| h.rule.id).collect::<Vec<_>>(),
                vec![*rule],
                "{bad}"
            );
            assert_eq!(rules(good), Vec::<&str>::new(), "{good}");
        }
        // Every rule is covered above.
        for rule in RULES {
            assert!(cases.iter().any(|c| c.0 == rule.id), "{} untested", rule.id);
        }
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
        let out = lint_sql(sql);
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
        let out = lint_sql(sql);
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
        let out = lint_sql("CREATE INDEX i ON t (a);\nSELECT 'unterminated;\n");
        assert_eq!(out.unparsed.len(), 1);
        assert!(out.hits.is_empty());
    }

    #[test]
    fn the_shipped_example_migrations_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let set = crate::migrate::source::read_dir(&dir).unwrap();
        let report = lint(&set.migrations, Path::new(env!("CARGO_MANIFEST_DIR")));
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
