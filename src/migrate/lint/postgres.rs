//! The PostgreSQL rules, on one parsed statement.

use std::ops::ControlFlow;

use sqlparser::ast::{
    AlterColumnOperation, AlterTableOperation, ColumnDef, ColumnOption, Expr,
    GeneratedExpressionMode, Ident, RenameTableNameKind, Reset, Set, Statement, TableConstraint,
    Value, visit_expressions,
};

use super::rules::{
    ADD_COLUMN_NOT_NULL, ADD_COLUMN_VOLATILE_DEFAULT, ALTER_COLUMN_TYPE, CHAR_COLUMN,
    CONCURRENTLY_IN_TRANSACTION, CONSTRAINT_NOT_VALID, CREATE_INDEX, DROP_COLUMN, LOCK_TIMEOUT_OFF,
    PREFER_BIGINT, PREFER_IDENTITY, RENAME_COLUMN, RENAME_TABLE, Rule, SET_NOT_NULL,
    TRANSACTION_NESTING, UNIQUE_WITHOUT_INDEX, VACUUM_FULL,
};
use super::{Scope, drops, ident_key, table_key};

/// Functions whose value differs per row, so a DEFAULT calling one is computed for every
/// existing row when the column is added (`now()` and the like are stable: one value).
const VOLATILE: &[&str] = &[
    "random",
    "random_normal",
    "gen_random_uuid",
    "uuidv4",
    "uuidv7",
    "uuid_generate_v1",
    "uuid_generate_v1mc",
    "uuid_generate_v4",
    "clock_timestamp",
    "timeofday",
    "nextval",
];

/// The rules broken by one statement; records the tables and columns it creates.
pub(super) fn check(statement: &Statement, scope: &mut Scope) -> Vec<(Rule, String)> {
    let mut hits = drops(statement, scope);
    match statement {
        Statement::CreateTable(create) => {
            let table = table_key(&create.name);
            for c in &create.columns {
                column_type(&create.name.to_string(), c, &mut hits);
                scope.columns.insert((table.clone(), ident_key(&c.name)));
            }
            scope.tables.insert(table);
        }
        Statement::CreateIndex(index) => {
            let name = index
                .name
                .as_ref()
                .map(|n| format!(" {n}"))
                .unwrap_or_default();
            let unique = if index.unique { "UNIQUE " } else { "" };
            if index.concurrently {
                if !scope.no_transaction {
                    hits.push((
                        CONCURRENTLY_IN_TRANSACTION,
                        format!(
                            "CREATE {unique}INDEX CONCURRENTLY{name} in a migration without `-- cutover:no-transaction` as its first line"
                        ),
                    ));
                }
            } else if !scope.tables.contains(&table_key(&index.table_name)) {
                hits.push((
                    CREATE_INDEX,
                    format!(
                        "CREATE {unique}INDEX{name} on `{}` without CONCURRENTLY",
                        index.table_name
                    ),
                ));
            }
        }
        Statement::AlterTable(alter) => {
            let table = table_key(&alter.name);
            let new_table = scope.tables.contains(&table);
            let shown = &alter.name;
            for op in &alter.operations {
                match op {
                    AlterTableOperation::AddColumn { column_def, .. } => {
                        column_type(&shown.to_string(), column_def, &mut hits);
                        if !new_table {
                            add_column(&shown.to_string(), column_def, &mut hits);
                        }
                        scope
                            .columns
                            .insert((table.clone(), ident_key(&column_def.name)));
                    }
                    AlterTableOperation::AddConstraint {
                        constraint,
                        not_valid,
                    } if !new_table => {
                        let kind = match constraint {
                            TableConstraint::ForeignKey(_) if !not_valid => "FOREIGN KEY",
                            TableConstraint::Check(_) if !not_valid => "CHECK",
                            TableConstraint::Unique(c) => {
                                let name = c.name.as_ref().map(|n| format!(" {n}"));
                                hits.push((
                                    UNIQUE_WITHOUT_INDEX,
                                    format!(
                                        "ADD CONSTRAINT{} UNIQUE on `{shown}` without USING INDEX",
                                        name.unwrap_or_default()
                                    ),
                                ));
                                continue;
                            }
                            TableConstraint::PrimaryKey(c) => {
                                let name = c.name.as_ref().map(|n| format!(" {n}"));
                                hits.push((
                                    UNIQUE_WITHOUT_INDEX,
                                    format!(
                                        "ADD CONSTRAINT{} PRIMARY KEY on `{shown}` without USING INDEX",
                                        name.unwrap_or_default()
                                    ),
                                ));
                                continue;
                            }
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
                    AlterTableOperation::AlterColumn { column_name, op } => {
                        let added = scope
                            .columns
                            .contains(&(table.clone(), ident_key(column_name)));
                        match op {
                            AlterColumnOperation::SetDataType { data_type, .. } if !new_table => {
                                hits.push((
                                    ALTER_COLUMN_TYPE,
                                    format!(
                                        "ALTER COLUMN {column_name} TYPE {data_type} on `{shown}`"
                                    ),
                                ));
                            }
                            AlterColumnOperation::SetNotNull if !added => {
                                hits.push((
                                    SET_NOT_NULL,
                                    format!(
                                        "ALTER COLUMN {column_name} SET NOT NULL on existing column `{shown}.{column_name}`"
                                    ),
                                ));
                            }
                            _ => {}
                        }
                    }
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
        Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback {
            savepoint: None, ..
        } if !scope.no_transaction => {
            let word = statement.to_string();
            let word = word.split_whitespace().next().unwrap_or_default();
            hits.push((
                TRANSACTION_NESTING,
                format!("{word} inside the migration's own transaction"),
            ));
        }
        Statement::Set(Set::SingleAssignment {
            variable, values, ..
        }) if is_lock_timeout(&variable.to_string()) && values.iter().all(turns_off) => {
            hits.push((
                LOCK_TIMEOUT_OFF,
                format!("SET lock_timeout TO {}", values[0]),
            ));
        }
        Statement::Reset(reset) => match &reset.reset {
            Reset::ConfigurationParameter(name) if is_lock_timeout(&name.to_string()) => {
                hits.push((LOCK_TIMEOUT_OFF, "RESET lock_timeout".to_owned()));
            }
            Reset::ALL => hits.push((
                LOCK_TIMEOUT_OFF,
                "RESET ALL resets lock_timeout too".to_owned(),
            )),
            _ => {}
        },
        _ => {}
    }
    hits
}

fn is_lock_timeout(name: &str) -> bool {
    name.eq_ignore_ascii_case("lock_timeout")
}

/// A value that leaves lock_timeout unbounded: 0 (any unit) or DEFAULT, which is the
/// server's own setting (0 unless its configuration says otherwise).
fn turns_off(value: &Expr) -> bool {
    match value {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse::<f64>().is_ok_and(|n| n == 0.0),
            Value::SingleQuotedString(s) => {
                let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
                !digits.is_empty() && digits.bytes().all(|b| b == b'0')
            }
            _ => false,
        },
        Expr::Identifier(i) => i.value.eq_ignore_ascii_case("default"),
        _ => false,
    }
}

/// The type rules of a column created or added (a new table too: the type is there to
/// stay).
fn column_type(table: &str, column: &ColumnDef, hits: &mut Vec<(Rule, String)>) {
    let ty = column.data_type.to_string().to_lowercase();
    let base = ty.split('(').next().unwrap_or_default().trim();
    let identity = column.options.iter().any(|o| {
        matches!(
            o.option,
            ColumnOption::Identity(_)
                | ColumnOption::Generated {
                    generation_expr: None,
                    ..
                }
        )
    });
    let name = &column.name;
    let small_serial = matches!(base, "serial" | "serial4" | "smallserial" | "serial2");
    let small_identity =
        identity && matches!(base, "int" | "integer" | "int4" | "smallint" | "int2");
    if small_serial || small_identity {
        hits.push((
            PREFER_BIGINT,
            format!("column `{table}.{name}` is {ty}, fed by a sequence"),
        ));
    }
    if matches!(
        base,
        "serial" | "serial4" | "smallserial" | "serial2" | "bigserial" | "serial8"
    ) {
        hits.push((PREFER_IDENTITY, format!("column `{table}.{name}` is {ty}")));
    }
    if matches!(base, "char" | "character" | "bpchar") {
        hits.push((CHAR_COLUMN, format!("column `{table}.{name}` is {ty}")));
    }
}

/// The rules of ADD COLUMN on a table that has rows.
fn add_column(shown: &str, column: &ColumnDef, hits: &mut Vec<(Rule, String)>) {
    let name = &column.name;
    let options = || column.options.iter().map(|o| &o.option);
    let not_null =
        options().any(|o| matches!(o, ColumnOption::NotNull | ColumnOption::PrimaryKey(_)));
    let filled = options().any(|o| {
        matches!(
            o,
            ColumnOption::Default(_) | ColumnOption::Generated { .. } | ColumnOption::Identity(_)
        )
    });
    if not_null && !filled {
        hits.push((
            ADD_COLUMN_NOT_NULL,
            format!("ADD COLUMN {name} ... NOT NULL without a DEFAULT on `{shown}`"),
        ));
    }
    let ty = column.data_type.to_string().to_lowercase();
    let per_row = options().find_map(|o| match o {
        ColumnOption::Default(e) => volatile_call(e).map(|f| format!("DEFAULT {f}(...)")),
        ColumnOption::Identity(_)
        | ColumnOption::Generated {
            generation_expr: None,
            ..
        } => Some("an identity".to_owned()),
        ColumnOption::Generated {
            generation_expr_mode: Some(GeneratedExpressionMode::Stored),
            ..
        } => Some("a stored generated value".to_owned()),
        _ => None,
    });
    let per_row = per_row.or_else(|| {
        matches!(
            ty.as_str(),
            "serial" | "serial4" | "smallserial" | "serial2" | "bigserial" | "serial8"
        )
        .then(|| format!("type {ty} (DEFAULT nextval(...))"))
    });
    if let Some(what) = per_row {
        hits.push((
            ADD_COLUMN_VOLATILE_DEFAULT,
            format!("ADD COLUMN {name} with {what} on `{shown}` rewrites the table"),
        ));
    }
    for o in options() {
        match o {
            ColumnOption::ForeignKey(fk) => hits.push((
                CONSTRAINT_NOT_VALID,
                format!(
                    "ADD COLUMN {name} ... REFERENCES {} on `{shown}` without NOT VALID",
                    fk.foreign_table
                ),
            )),
            ColumnOption::Unique(_) => hits.push((
                UNIQUE_WITHOUT_INDEX,
                format!("ADD COLUMN {name} ... UNIQUE on `{shown}`"),
            )),
            ColumnOption::PrimaryKey(_) => hits.push((
                UNIQUE_WITHOUT_INDEX,
                format!("ADD COLUMN {name} ... PRIMARY KEY on `{shown}`"),
            )),
            _ => {}
        }
    }
}

/// The first volatile function an expression calls.
fn volatile_call(expr: &Expr) -> Option<String> {
    let found = visit_expressions(expr, |e| {
        if let Expr::Function(f) = e {
            let name = f.name.0.last().map(ToString::to_string).unwrap_or_default();
            let name = name.trim_matches('"').to_lowercase();
            if VOLATILE.contains(&name.as_str()) {
                return ControlFlow::Break(name);
            }
        }
        ControlFlow::Continue(())
    });
    match found {
        ControlFlow::Break(name) => Some(name),
        ControlFlow::Continue(()) => None,
    }
}

fn constraint_name(constraint: &TableConstraint) -> Option<&Ident> {
    match constraint {
        TableConstraint::ForeignKey(c) => c.name.as_ref(),
        TableConstraint::Check(c) => c.name.as_ref(),
        _ => None,
    }
}
