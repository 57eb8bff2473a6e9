//! What a statement returns: Arrow batches, their Databricks rendering, and the catalog changes the caller must
//! publish to the authorization state.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use deputy_authz::{AuthzError, PrincipalId, PrivilegeSet, SecurableRef, Snapshot};

use crate::SqlError;
use crate::types::{type_name, type_text};

/// The rows of a statement (empty for most DDL) and the catalog changes it made.
#[derive(Debug, Clone)]
pub struct StatementResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// What the statement changed in the catalog, in order. See [`apply_catalog_changes`].
    pub changes: Vec<CatalogChange>,
}

/// One column of `manifest.schema.columns[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnInfo {
    pub name: String,
    pub position: usize,
    pub type_name: &'static str,
    pub type_text: String,
}

impl StatementResult {
    pub fn row_count(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    pub fn columns(&self) -> Vec<ColumnInfo> {
        self.schema
            .fields()
            .iter()
            .enumerate()
            .map(|(position, field)| ColumnInfo {
                name: field.name().clone(),
                position,
                type_name: type_name(field.data_type()),
                type_text: type_text(field.data_type()),
            })
            .collect()
    }

    /// The rows as `data_array` wants them: every cell a string, or `None` for NULL.
    pub fn data_array(&self) -> Result<Vec<Vec<Option<String>>>, SqlError> {
        let options = FormatOptions::default();
        let mut rows = Vec::with_capacity(self.row_count());
        for batch in &self.batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|column| ArrayFormatter::try_new(column.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| SqlError::Internal(format!("rendering results: {error}")))?;
            for row in 0..batch.num_rows() {
                let cells = batch
                    .columns()
                    .iter()
                    .zip(&formatters)
                    .map(|(column, formatter)| {
                        (!column.is_null(row)).then(|| formatter.value(row).to_string())
                    })
                    .collect();
                rows.push(cells);
            }
        }
        Ok(rows)
    }
}

/// A change to the catalog made by a statement, for the caller to publish to the shared authorization state.
///
/// **Contract:** the engine writes every change to the `CatalogStore` before returning, but never touches the shared
/// [`deputy_authz::AuthzState`]: its sessions decide against the `Arc<Snapshot>` they were given. After a statement
/// succeeds, the caller applies `StatementResult::changes` to the live state, e.g.
/// `authz.update(|snapshot| apply_catalog_changes(snapshot, &result.changes))`, before it answers, so the caller's
/// next statement sees what it created. Reloading the whole snapshot from the store
/// (`deputy_catalog::load_snapshot`) is always a correct alternative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogChange {
    /// A catalog, schema, table, view or function was created; the creator owns it.
    Created {
        securable: SecurableRef,
        owner: PrincipalId,
    },
    /// A securable was dropped with everything under it.
    Dropped { securable: SecurableRef },
    /// Privileges were granted to and/or revoked from one principal.
    GrantsChanged {
        securable: SecurableRef,
        principal: PrincipalId,
        granted: PrivilegeSet,
        revoked: PrivilegeSet,
    },
}

/// Applies a statement's changes to a snapshot (a private copy, as `AuthzState::update` hands out).
pub fn apply_catalog_changes(
    snapshot: &mut Snapshot,
    changes: &[CatalogChange],
) -> Result<(), AuthzError> {
    for change in changes {
        match change {
            CatalogChange::Created { securable, owner } => {
                snapshot.add_securable(securable, *owner)?
            }
            CatalogChange::Dropped { securable } => snapshot.remove_securable(securable)?,
            CatalogChange::GrantsChanged {
                securable,
                principal,
                granted,
                revoked,
            } => {
                snapshot.revoke(securable, *principal, *revoked)?;
                snapshot.grant(securable, *principal, *granted)?;
            }
        }
    }
    Ok(())
}
