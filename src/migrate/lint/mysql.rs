//! The MySQL/MariaDB rules, on one parsed statement.
//!
//! InnoDB runs most ALTER TABLEs INSTANT or INPLACE with concurrent writes, but silently
//! falls back to copying the table (writes blocked) when it cannot; only an explicit
//! `ALGORITHM=`/`LOCK=` clause makes the server refuse instead. So the rules look for the
//! operations that may copy, and for the clauses that rule copying out or force a lock.

use sqlparser::ast::{
    AlterTableAlgorithm, AlterTableLock, AlterTableOperation, RenameTableNameKind, Statement,
    TableConstraint,
};

use super::rules::{
    DROP_COLUMN, MYSQL_ALGORITHM, MYSQL_LOCK, MYSQL_UNIQUE_INDEX, RENAME_COLUMN, RENAME_TABLE, Rule,
};
use super::{Scope, drops, ident_key, table_key};

/// The rules broken by one statement; records the tables and columns it creates.
pub(super) fn check(statement: &Statement, scope: &mut Scope) -> Vec<(Rule, String)> {
    let mut hits = drops(statement, scope);
    match statement {
        Statement::CreateTable(create) => {
            let table = table_key(&create.name);
            for c in &create.columns {
                scope.columns.insert((table.clone(), ident_key(&c.name)));
            }
            scope.tables.insert(table);
        }
        Statement::CreateIndex(index)
            if index.unique && !scope.tables.contains(&table_key(&index.table_name)) =>
        {
            hits.push((
                MYSQL_UNIQUE_INDEX,
                format!(
                    "CREATE UNIQUE INDEX on existing table `{}`",
                    index.table_name
                ),
            ));
        }
        Statement::RenameTable(renames) => {
            for r in renames {
                if scope.tables.contains(&table_key(&r.old_name)) {
                    scope.tables.insert(table_key(&r.new_name));
                } else {
                    hits.push((
                        RENAME_TABLE,
                        format!("RENAME TABLE `{}` TO `{}`", r.old_name, r.new_name),
                    ));
                }
            }
        }
        Statement::AlterTable(alter) => {
            let table = table_key(&alter.name);
            if scope.tables.contains(&table) {
                // New and empty, and no running release uses it: renames included.
                for op in &alter.operations {
                    if let AlterTableOperation::RenameTable {
                        table_name: RenameTableNameKind::To(to) | RenameTableNameKind::As(to),
                    } = op
                    {
                        scope.tables.insert(table_key(to));
                    }
                }
                return hits;
            }
            alter_table(
                &alter.name.to_string(),
                &table,
                &alter.operations,
                scope,
                &mut hits,
            );
        }
        _ => {}
    }
    hits
}

/// The rules of an ALTER TABLE on a table that existed before the migration.
fn alter_table(
    shown: &str,
    table: &str,
    operations: &[AlterTableOperation],
    scope: &mut Scope,
    hits: &mut Vec<(Rule, String)>,
) {
    let mut algorithm = None;
    let mut lock = None;
    // Operations the server may run by copying the table.
    let mut copying = Vec::new();
    for op in operations {
        match op {
            AlterTableOperation::Algorithm { algorithm: a, .. } => algorithm = Some(*a),
            AlterTableOperation::Lock { lock: l, .. } => lock = Some(*l),
            AlterTableOperation::ModifyColumn { col_name, .. } => {
                copying.push(format!("MODIFY COLUMN {col_name}"));
            }
            AlterTableOperation::ChangeColumn {
                old_name, new_name, ..
            } => {
                copying.push(format!("CHANGE COLUMN {old_name}"));
                let added = scope
                    .columns
                    .contains(&(table.to_owned(), ident_key(old_name)));
                if ident_key(old_name) != ident_key(new_name) && !added {
                    hits.push((
                        RENAME_COLUMN,
                        format!("CHANGE COLUMN {old_name} {new_name} renames it on `{shown}`"),
                    ));
                }
            }
            AlterTableOperation::DropPrimaryKey { .. } => copying.push("DROP PRIMARY KEY".into()),
            AlterTableOperation::AddConstraint { constraint, .. } => match constraint {
                TableConstraint::PrimaryKey(_) => copying.push("ADD PRIMARY KEY".into()),
                TableConstraint::Unique(c) => hits.push((
                    MYSQL_UNIQUE_INDEX,
                    format!(
                        "ADD UNIQUE{} on existing table `{shown}`",
                        c.name.as_ref().map(|n| format!(" {n}")).unwrap_or_default()
                    ),
                )),
                _ => {}
            },
            AlterTableOperation::AddColumn {
                column_def,
                column_position: Some(position),
                ..
            } => {
                copying.push(format!("ADD COLUMN {} {position}", column_def.name));
                scope
                    .columns
                    .insert((table.to_owned(), ident_key(&column_def.name)));
            }
            AlterTableOperation::AddColumn { column_def, .. } => {
                scope
                    .columns
                    .insert((table.to_owned(), ident_key(&column_def.name)));
            }
            AlterTableOperation::RenameColumn {
                old_column_name,
                new_column_name,
            } => {
                let old = (table.to_owned(), ident_key(old_column_name));
                if scope.columns.contains(&old) {
                    scope
                        .columns
                        .insert((table.to_owned(), ident_key(new_column_name)));
                } else {
                    hits.push((
                        RENAME_COLUMN,
                        format!(
                            "RENAME COLUMN {old_column_name} TO {new_column_name} on `{shown}`"
                        ),
                    ));
                }
            }
            AlterTableOperation::RenameTable { table_name } => {
                let (RenameTableNameKind::To(to) | RenameTableNameKind::As(to)) = table_name;
                hits.push((RENAME_TABLE, format!("RENAME `{shown}` TO `{to}`")));
            }
            AlterTableOperation::DropColumn { column_names, .. } => {
                for column in column_names {
                    if !scope
                        .columns
                        .contains(&(table.to_owned(), ident_key(column)))
                    {
                        hits.push((DROP_COLUMN, format!("DROP COLUMN {column} on `{shown}`")));
                    }
                }
            }
            _ => {}
        }
    }
    let refuses_copy = match algorithm {
        Some(AlterTableAlgorithm::Instant) => true,
        Some(AlterTableAlgorithm::Inplace) => lock == Some(AlterTableLock::None),
        _ => false,
    };
    if algorithm == Some(AlterTableAlgorithm::Copy) {
        hits.push((
            MYSQL_ALGORITHM,
            format!("ALTER TABLE `{shown}` ... ALGORITHM=COPY copies the table"),
        ));
    } else if !copying.is_empty() && !refuses_copy {
        hits.push((
            MYSQL_ALGORITHM,
            format!(
                "ALTER TABLE `{shown}` {} without ALGORITHM=INSTANT or ALGORITHM=INPLACE, LOCK=NONE",
                copying.join(", ")
            ),
        ));
    }
    if let Some(l @ (AlterTableLock::Shared | AlterTableLock::Exclusive)) = lock {
        hits.push((MYSQL_LOCK, format!("ALTER TABLE `{shown}` ... LOCK={l}")));
    }
}
