//! Reading a table's rows for another service (vector-search sync, row-filter checks) without that service writing
//! SQL: the table and column names are quoted here, so a name can never become SQL text.

use crate::Warehouse;
use deputy_access::Error;
use deputy_sql::{CancellationToken, Session};
use serde_json::{Map, Value};

impl Warehouse {
    /// Every row of `table` (a three-part name) visible in `session`, reading `columns` (all when empty), each row a
    /// JSON object keyed by column name with numbers and booleans as JSON numbers and booleans. The session's
    /// privileges, row filters and column masks apply as to any statement.
    pub async fn scan(
        &self,
        session: &Session,
        table: &str,
        columns: &[&str],
    ) -> Result<Vec<Map<String, Value>>, Error> {
        let projection = if columns.is_empty() {
            "*".to_owned()
        } else {
            columns
                .iter()
                .map(|column| quote(column))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let sql = format!("SELECT {projection} FROM {}", quote_name(table));
        let result = self
            .sql
            .execute(session, &sql, &[], CancellationToken::new())
            .await
            .map_err(|error| {
                Error::invalid_parameter(format!("reading `{table}` failed: {error}"))
            })?;
        let columns = result.columns();
        let rows = result.data_array().map_err(Error::internal)?;
        Ok(rows
            .into_iter()
            .map(|cells| {
                columns
                    .iter()
                    .zip(cells)
                    .map(|(column, cell)| {
                        (column.name.clone(), native_cell(column.type_name, cell))
                    })
                    .collect()
            })
            .collect())
    }
}

/// A back-quoted identifier, with back quotes inside doubled.
fn quote(identifier: &str) -> String {
    format!("`{}`", identifier.replace('`', "``"))
}

/// `catalog.schema.table` with each part quoted.
fn quote_name(full_name: &str) -> String {
    full_name
        .split('.')
        .map(quote)
        .collect::<Vec<_>>()
        .join(".")
}

/// A statement-result cell (text) as the JSON value of its type.
fn native_cell(type_name: &str, cell: Option<String>) -> Value {
    let Some(text) = cell else {
        return Value::Null;
    };
    let parsed = match type_name {
        "BYTE" | "SHORT" | "INT" | "LONG" => text.parse::<i64>().ok().map(Value::from),
        "FLOAT" | "DOUBLE" | "DECIMAL" => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        "BOOLEAN" => text.parse::<bool>().ok().map(Value::Bool),
        _ => None,
    };
    parsed.unwrap_or(Value::String(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_part_by_part_and_back_quotes_doubled() {
        assert_eq!(quote_name("m.s.t"), "`m`.`s`.`t`");
        assert_eq!(quote("a`; DROP TABLE x; --"), "`a``; DROP TABLE x; --`");
    }

    #[test]
    fn cells_take_their_column_type() {
        assert_eq!(native_cell("INT", Some("7".into())), Value::from(7));
        assert_eq!(
            native_cell("BOOLEAN", Some("true".into())),
            Value::Bool(true)
        );
        assert_eq!(native_cell("STRING", Some("7".into())), Value::from("7"));
        assert_eq!(native_cell("INT", None), Value::Null);
    }
}
