//! Databricks SQL types and their Arrow counterparts.
//!
//! Stored column types (`ColumnSpec::type_text`) use the Databricks spelling (`string`, `bigint`, `decimal(10,2)`);
//! a table's Arrow schema is derived from them, and every Arrow type a query produces maps back to a Databricks
//! `type_name` for the statement-execution manifest.

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::sql::sqlparser::dialect::DatabricksDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::SqlError;

/// The Arrow type of a SQL type as written in DDL or stored in `type_text` (`STRING`, `int`, `DECIMAL(10, 2)`).
pub fn arrow_type(type_text: &str) -> Result<DataType, SqlError> {
    let parsed = Parser::new(&DatabricksDialect {})
        .try_with_sql(type_text)
        .and_then(|mut parser| {
            let parsed = parser.parse_data_type()?;
            // Nothing may follow the type: `INT); DROP TABLE x` is not a type.
            parser.expect_token(&Token::EOF)?;
            Ok(parsed)
        })
        .map_err(|error| SqlError::Syntax(format!("invalid type `{type_text}`: {error}")))?;
    arrow_type_of_ast(&parsed.to_string())
}

/// Maps the canonical text of a parsed type. Matching on the printed form keeps this independent of how the parser
/// models each type.
fn arrow_type_of_ast(printed: &str) -> Result<DataType, SqlError> {
    let upper = printed.to_ascii_uppercase();
    let (base, arguments) = match upper.split_once('(') {
        Some((base, rest)) => (base.trim(), Some(rest.trim_end_matches(')'))),
        None => (upper.trim(), None),
    };
    let data_type = match base {
        "STRING" | "VARCHAR" | "CHAR" | "TEXT" | "CHARACTER VARYING" => DataType::Utf8,
        "INT" | "INTEGER" => DataType::Int32,
        "BIGINT" | "LONG" => DataType::Int64,
        "SMALLINT" | "SHORT" => DataType::Int16,
        "TINYINT" | "BYTE" => DataType::Int8,
        "FLOAT" | "REAL" => DataType::Float32,
        "DOUBLE" | "DOUBLE PRECISION" => DataType::Float64,
        "BOOLEAN" | "BOOL" => DataType::Boolean,
        "DATE" => DataType::Date32,
        "TIMESTAMP" | "TIMESTAMP_LTZ" | "TIMESTAMP_NTZ" => {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        }
        "BINARY" => DataType::Binary,
        "DECIMAL" | "NUMERIC" | "DEC" => {
            let (precision, scale) = decimal_arguments(arguments, printed)?;
            DataType::Decimal128(precision, scale)
        }
        _ => {
            return Err(SqlError::Unsupported(format!(
                "type `{printed}` is not supported"
            )));
        }
    };
    Ok(data_type)
}

fn decimal_arguments(arguments: Option<&str>, printed: &str) -> Result<(u8, i8), SqlError> {
    let invalid = || SqlError::Syntax(format!("invalid decimal type `{printed}`"));
    let Some(arguments) = arguments else {
        return Ok((10, 0));
    };
    let mut parts = arguments.split(',').map(|part| part.trim().parse::<u8>());
    let precision = parts
        .next()
        .transpose()
        .map_err(|_| invalid())?
        .unwrap_or(10);
    let scale = parts
        .next()
        .transpose()
        .map_err(|_| invalid())?
        .unwrap_or(0);
    if precision == 0 || precision > 38 || scale > precision {
        return Err(invalid());
    }
    Ok((precision, i8::try_from(scale).map_err(|_| invalid())?))
}

/// The Databricks `type_text` of an Arrow type, as stored for table columns and function signatures.
pub fn type_text(data_type: &DataType) -> String {
    match data_type {
        DataType::Decimal128(precision, scale) | DataType::Decimal256(precision, scale) => {
            format!("decimal({precision},{scale})")
        }
        other => match type_name(other) {
            "LONG" => "bigint".to_owned(),
            "SHORT" => "smallint".to_owned(),
            "BYTE" => "tinyint".to_owned(),
            "NULL" => "void".to_owned(),
            name => name.to_ascii_lowercase(),
        },
    }
}

/// The Databricks `type_name` (`manifest.schema.columns[].type_name`) of an Arrow type.
pub fn type_name(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "STRING",
        DataType::Int8 => "BYTE",
        DataType::Int16 | DataType::UInt8 => "SHORT",
        DataType::Int32 | DataType::UInt16 => "INT",
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "LONG",
        DataType::Float16 | DataType::Float32 => "FLOAT",
        DataType::Float64 => "DOUBLE",
        DataType::Boolean => "BOOLEAN",
        DataType::Date32 | DataType::Date64 => "DATE",
        DataType::Timestamp(..) => "TIMESTAMP",
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => "DECIMAL",
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "BINARY",
        DataType::FixedSizeBinary(_) => "BINARY",
        DataType::Null => "NULL",
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::ListView(_)
        | DataType::LargeListView(_)
        | DataType::FixedSizeList(..) => "ARRAY",
        DataType::Struct(_) => "STRUCT",
        DataType::Map(..) => "MAP",
        DataType::Interval(_) | DataType::Duration(_) => "INTERVAL",
        DataType::Dictionary(_, value) => type_name(value),
        _ => "USER_DEFINED_TYPE",
    }
}

/// The type a column of `data_type` is stored as: the canonical Arrow type of its Databricks type, so that files
/// written from any query read back with the table's declared schema. `None` for types a table cannot hold.
pub fn storage_type(data_type: &DataType) -> Option<DataType> {
    match data_type {
        // An untyped NULL column (`SELECT NULL AS x`) is stored as a nullable string, as Spark does for `void`.
        DataType::Null => Some(DataType::Utf8),
        DataType::Dictionary(_, value) => storage_type(value),
        other => arrow_type(&type_text(other)).ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_after_a_type_is_refused() {
        assert!(arrow_type("INT); DROP TABLE x; --").is_err());
        assert!(arrow_type("STRING extra").is_err());
        assert_eq!(arrow_type(" int ").unwrap(), DataType::Int32);
    }

    #[test]
    fn round_trips_stored_types() {
        for text in [
            "string",
            "int",
            "bigint",
            "smallint",
            "tinyint",
            "float",
            "double",
            "boolean",
            "date",
            "timestamp",
            "binary",
            "decimal(12,3)",
        ] {
            let arrow = arrow_type(text).unwrap();
            assert_eq!(type_text(&arrow), text, "{text}");
        }
        assert_eq!(arrow_type("LONG").unwrap(), DataType::Int64);
        assert_eq!(arrow_type("decimal").unwrap(), DataType::Decimal128(10, 0));
        assert_eq!(storage_type(&DataType::Utf8View), Some(DataType::Utf8));
        assert_eq!(storage_type(&DataType::UInt64), Some(DataType::Int64));
        assert!(arrow_type("array<int>").is_err());
    }
}
