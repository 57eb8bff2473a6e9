//! `CREATE OR REPLACE TABLE` of an existing table: new columns and rows, same securable.
//!
//! As in Databricks, the table keeps its identity: id, owner and **grants** stay, so whoever could read the old table
//! reads the new one. Its **row filter and column masks stay too**: a replace that silently dropped them would hand
//! the grantees every row and clear value. A policy whose columns the new definition lacks (or whose function no
//! longer fits their types) fails the statement; the owner drops the policy first to go without it.
//!
//! The new rows are written into a new version of the table's files, committed like a DELETE's (see the `storage`
//! module), so readers see the old table or the new one, never a mix, and a failed statement changes nothing.

use deputy_store::specs::ColumnSpec;

use super::*;

impl Run<'_> {
    pub(super) async fn replace_table(
        &self,
        record: &SecurableRecord,
        full_name: &str,
        columns: Vec<ColumnDefinition>,
        query: Option<Box<Query>>,
        comment: Option<String>,
    ) -> Result<StatementResult, SqlError> {
        self.creatable(SecurableKind::Table, full_name)?;
        let securable = reference(record)
            .ok_or_else(|| SqlError::Internal(format!("`{full_name}` has an unknown kind")))?;
        if !may_grant(self.session.principal, &securable, &self.session.snapshot).is_allowed() {
            return Err(SqlError::PermissionDenied(format!(
                "ownership of or `MANAGE` on table `{full_name}` is required to replace it"
            )));
        }
        if securable.kind() != SecurableKind::Table {
            return Err(SqlError::InvalidInput(format!(
                "`{full_name}` is a {}; CREATE OR REPLACE TABLE replaces tables",
                securable.kind().noun()
            )));
        }
        // Before planning the query, which may read the table itself: the version it reads is the one replaced.
        let _lock = self.shared.locks.lock(record.id).await?;
        let (specs, plan) = self.table_columns(columns, query).await?;
        let old = table_spec(record)?;
        let spec = TableSpec {
            columns: with_masks(specs, &old.columns, full_name)?,
            ..old.clone()
        };
        if let Some(filter) = &spec.row_filter {
            self.check_policy(
                &spec,
                full_name,
                &filter.function_name,
                &filter.input_column_names,
                true,
            )?;
        }
        for column in &spec.columns {
            if let Some(mask) = &column.mask {
                let mut arguments = vec![column.name.clone()];
                arguments.extend(mask.using_column_names.iter().cloned());
                self.check_policy(&spec, full_name, &mask.function_name, &arguments, false)?;
            }
        }
        let version = self.shared.files.new_version(record.id)?;
        if let Some(plan) = plan {
            write_query(version.directory(), &spec.columns, plan).await?;
        }
        let change = |spec: &TableSpec, comment: Option<String>| -> Result<_, SqlError> {
            Ok(SecurableChanges {
                spec: Some(to_json(spec)?),
                comment: Some(comment),
                ..SecurableChanges::default()
            })
        };
        let updater = self.principal_id()?;
        self.store()
            .update_securable(record.id, change(&spec, comment)?, updater, now())
            .await?;
        if let Err(error) = version.commit() {
            // The files did not switch; put the definition that matches them back.
            let _ = self
                .store()
                .update_securable(
                    record.id,
                    change(&old, record.comment.clone())?,
                    updater,
                    now(),
                )
                .await;
            return Err(error);
        }
        Ok(empty_result(Vec::new()))
    }
}

/// The new columns with the masks of the old columns of the same name.
fn with_masks(
    mut columns: Vec<ColumnSpec>,
    old: &[ColumnSpec],
    full_name: &str,
) -> Result<Vec<ColumnSpec>, SqlError> {
    for masked in old.iter().filter(|column| column.mask.is_some()) {
        let column = columns
            .iter_mut()
            .find(|column| column.name.eq_ignore_ascii_case(&masked.name))
            .ok_or_else(|| {
                SqlError::InvalidInput(format!(
                    "column `{}` of `{full_name}` has a mask; drop it before replacing the table without that column",
                    masked.name
                ))
            })?;
        column.mask = masked.mask.clone();
    }
    Ok(columns)
}
