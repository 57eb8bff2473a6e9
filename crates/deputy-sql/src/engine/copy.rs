//! `COPY INTO <table> FROM '<path>' FILEFORMAT = CSV | JSON | PARQUET [FORMAT_OPTIONS (...)]`, the Databricks
//! statement for loading files, reading the files with DataFusion's own CSV, newline-delimited JSON and Parquet
//! readers.
//!
//! **Who may load:** reading the server's disk is far more than any Unity Catalog privilege grants, so only members
//! of the `admins` group (the session's end user's groups, as for `is_account_group_member`) may, and the check comes
//! before anything about the path is looked at, so others cannot probe which paths exist. The path must be absolute
//! and name a regular file or a directory (of files with the format's extension), outside the warehouse's data
//! directory: the tables' own files are read through the tables, under their row filters and masks. The target
//! table needs `MODIFY`, as for INSERT.
//!
//! **Columns** are matched by name, case-insensitively (a CSV file's names come from its header; JSON keys differing
//! only in case fill the same column); a CSV file without
//! a header is matched by position. A table column missing from the files is NULL; file columns the table lacks are
//! ignored. Values are cast to the table's types, and a value that does not fit fails the statement.
//!
//! **Atomic:** the rows are appended as one new Parquet file, published complete or not at all.
//!
//! Unlike Databricks, Deputy does not remember which files it loaded: every COPY INTO loads every file, as Databricks
//! does with `COPY_OPTIONS ('force' = 'true')`.

use std::path::Path;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};
use datafusion::common::Column;
use datafusion::dataframe::DataFrame;
use datafusion::functions::core::expr_fn::coalesce;
use datafusion::logical_expr::{Expr, cast, lit};
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions};

use super::*;
use crate::parse::FileFormat;

/// The group whose members may load files.
const ADMINS: &str = "admins";

/// Characters DataFusion would read as a glob pattern in a path.
const GLOB: &[char] = &['*', '?', '['];

impl Run<'_> {
    pub(super) async fn copy_into(
        &self,
        table: &Name,
        path: &str,
        format: FileFormat,
        options: &[(String, String)],
    ) -> Result<StatementResult, SqlError> {
        if !self.session.groups.iter().any(|group| group == ADMINS) {
            return Err(SqlError::PermissionDenied(format!(
                "loading files from the server's disk is reserved to members of the `{ADMINS}` group"
            )));
        }
        let source = self.source_path(path)?;
        let full_name = self.qualify(table, 3)?;
        let (record, securable) = self
            .visible(SecurableKind::Table, &full_name)
            .ok_or_else(|| SqlError::TableNotFound(full_name.clone()))?;
        if securable.kind() != SecurableKind::Table {
            return Err(SqlError::InvalidInput(format!(
                "`{full_name}` is a {}; COPY INTO loads tables",
                securable.kind().noun()
            )));
        }
        self.require(Action::WriteTable(securable), || {
            format!("`MODIFY` on table `{full_name}`")
        })?;
        let _lock = self.shared.locks.lock(record.id).await?;
        let mut columns = table_spec(record)?.columns;
        columns.sort_by_key(|column| column.position);
        let schema = columns_schema(&columns)?;
        let frame = read_files(self.context.planner()?, &source, format, options).await?;
        let positional = format == FileFormat::Csv && !csv_header(options)?;
        let frame = conform(frame, &schema, positional, &full_name)?;
        let mut stream = frame.execute_stream().await?;
        let mut file = ParquetFile::create(&self.shared.files.current(record.id)?, &schema)?;
        while let Some(batch) = stream.next().await {
            file.write(&batch?)?;
        }
        let rows = i64::try_from(file.finish()?).unwrap_or(i64::MAX);
        let schema = Arc::new(Schema::new(vec![
            Field::new("num_affected_rows", DataType::Int64, false),
            Field::new("num_inserted_rows", DataType::Int64, false),
        ]));
        let columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![rows])),
            Arc::new(Int64Array::from(vec![rows])),
        ];
        let batch = RecordBatch::try_new(Arc::clone(&schema), columns)
            .map_err(|error| SqlError::Internal(error.to_string()))?;
        Ok(StatementResult {
            schema,
            batches: vec![batch],
            changes: Vec::new(),
        })
    }

    /// The path to read, as DataFusion takes it: absolute, resolved, a regular file or a directory (with a trailing
    /// `/`), outside the data directory.
    fn source_path(&self, path: &str) -> Result<String, SqlError> {
        let invalid = |reason: &str| SqlError::InvalidInput(format!("path `{path}` {reason}"));
        if !Path::new(path).is_absolute() {
            return Err(invalid("is not absolute"));
        }
        if path.contains(GLOB) {
            return Err(invalid("contains a glob pattern, which is not supported"));
        }
        let resolved = std::fs::canonicalize(path).map_err(|_| invalid("cannot be read"))?;
        let metadata = std::fs::metadata(&resolved).map_err(|_| invalid("cannot be read"))?;
        if resolved.starts_with(&self.shared.data_dir) {
            return Err(SqlError::PermissionDenied(format!(
                "path `{path}` is inside the warehouse's data directory; read its tables instead"
            )));
        }
        let text = resolved
            .to_str()
            .ok_or_else(|| invalid("is not valid UTF-8"))?;
        if text.contains(GLOB) {
            return Err(invalid("contains a glob pattern, which is not supported"));
        }
        if metadata.is_dir() {
            Ok(format!("{text}/"))
        } else if metadata.is_file() {
            Ok(text.to_owned())
        } else {
            Err(invalid("is neither a regular file nor a directory"))
        }
    }
}

fn option<'a>(options: &'a [(String, String)], key: &str) -> Option<&'a str> {
    options
        .iter()
        .find(|(name, _)| name == key)
        .map(|(_, value)| value.as_str())
}

fn boolean(options: &[(String, String)], key: &str) -> Result<bool, SqlError> {
    match option(options, key).map(str::to_ascii_lowercase).as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(SqlError::InvalidInput(format!(
            "FORMAT_OPTIONS `{key}` must be 'true' or 'false', not '{other}'"
        ))),
    }
}

fn csv_header(options: &[(String, String)]) -> Result<bool, SqlError> {
    boolean(options, "header")
}

/// A one-byte CSV option (`sep`, `quote`, `escape`).
fn byte(options: &[(String, String)], keys: &[&str]) -> Result<Option<u8>, SqlError> {
    let Some((key, value)) = keys
        .iter()
        .find_map(|key| option(options, key).map(|value| (key, value)))
    else {
        return Ok(None);
    };
    match value.as_bytes() {
        [byte] => Ok(Some(*byte)),
        _ => Err(SqlError::InvalidInput(format!(
            "FORMAT_OPTIONS `{key}` must be one ASCII character"
        ))),
    }
}

/// Reads the files with the format's DataFusion reader. Unknown options are refused rather than ignored, so a
/// misspelt one cannot silently change what is loaded.
async fn read_files(
    planner: &SessionState,
    path: &str,
    format: FileFormat,
    options: &[(String, String)],
) -> Result<DataFrame, SqlError> {
    let known: &[&str] = match format {
        FileFormat::Csv => &["header", "sep", "delimiter", "quote", "escape"],
        FileFormat::Json => &["multiline"],
        FileFormat::Parquet => &[],
    };
    if let Some((key, _)) = options
        .iter()
        .find(|(key, _)| !known.contains(&key.as_str()))
    {
        return Err(SqlError::InvalidInput(format!(
            "FORMAT_OPTIONS `{key}` is not supported for this FILEFORMAT; supported: {}",
            known.join(", ")
        )));
    }
    // A named file is read whatever its extension; a directory's files are chosen by it.
    let directory = path.ends_with('/');
    let extension = |default: &'static str| if directory { default } else { "" };
    let context = SessionContext::new_with_state(planner.clone());
    let frame = match format {
        FileFormat::Csv => {
            let mut read = CsvReadOptions::new()
                .has_header(csv_header(options)?)
                .file_extension(extension(".csv"));
            if let Some(delimiter) = byte(options, &["sep", "delimiter"])? {
                read = read.delimiter(delimiter);
            }
            if let Some(quote) = byte(options, &["quote"])? {
                read = read.quote(quote);
            }
            if let Some(escape) = byte(options, &["escape"])? {
                read = read.escape(escape);
            }
            context.read_csv(path, read).await?
        }
        FileFormat::Json => {
            let read = JsonReadOptions {
                file_extension: extension(".json"),
                newline_delimited: !boolean(options, "multiline")?,
                ..JsonReadOptions::default()
            };
            context.read_json(path, read).await?
        }
        FileFormat::Parquet => {
            let read = ParquetReadOptions {
                file_extension: extension(".parquet"),
                ..ParquetReadOptions::default()
            };
            context.read_parquet(path, read).await?
        }
    };
    Ok(frame)
}

/// The files' rows as the table's columns (see the module docs).
fn conform(
    frame: DataFrame,
    table: &SchemaRef,
    positional: bool,
    full_name: &str,
) -> Result<DataFrame, SqlError> {
    let source: Vec<String> = frame
        .schema()
        .fields()
        .iter()
        .map(|field| field.name().clone())
        .collect();
    let mut matched = 0;
    let mut columns = Vec::with_capacity(table.fields().len());
    for (index, field) in table.fields().iter().enumerate() {
        // JSON keys that differ only in case are separate columns of the files; they fill one table column.
        let mut found: Vec<Expr> = source
            .iter()
            .enumerate()
            .filter(|(position, name)| {
                if positional {
                    *position == index
                } else {
                    name.eq_ignore_ascii_case(field.name())
                }
            })
            .map(|(_, name)| Expr::Column(Column::new_unqualified(name)))
            .collect();
        let value = match found.len() {
            0 => None,
            1 => found.pop(),
            _ => Some(coalesce(found)),
        };
        matched += usize::from(value.is_some());
        let value = value.unwrap_or_else(|| lit(ScalarValue::Null));
        columns.push(cast(value, field.data_type().clone()).alias(field.name()));
    }
    if matched == 0 {
        return Err(SqlError::InvalidInput(format!(
            "no column of the files ({}) matches a column of `{full_name}`",
            source.join(", ")
        )));
    }
    Ok(frame.select(columns)?)
}
