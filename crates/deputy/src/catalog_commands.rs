//! Unity Catalog commands: grants on securables, catalogs and what is in them, and `why`, the server's explanation of
//! an authorization decision. Like the other client commands they print tables for people and the server's JSON with
//! `--output json`.

use crate::Connection;
use crate::client_commands::{client, print, table, text, urlencode};
use anyhow::Context;
use clap::Subcommand;
use deputy_sdk::WorkspaceClient;
use serde_json::{Value, json};

const UC: &str = "/api/2.1/unity-catalog";

#[derive(Subcommand)]
pub enum GrantsCommand {
    /// Show the grants on a securable: direct ones, or with `--effective` everything that applies, with where it is
    /// inherited from.
    Show {
        /// catalog, schema, table, function, volume or connection.
        securable_type: String,
        full_name: String,
        #[arg(long)]
        effective: bool,
        /// Only this principal (a user name, group name or service principal application id).
        #[arg(long)]
        principal: Option<String>,
    },
    /// Grant privileges (`USE_CATALOG` or `"USE CATALOG"`) to a principal.
    Add {
        securable_type: String,
        full_name: String,
        principal: String,
        #[arg(required = true)]
        privileges: Vec<String>,
    },
    /// Revoke privileges from a principal.
    Remove {
        securable_type: String,
        full_name: String,
        principal: String,
        #[arg(required = true)]
        privileges: Vec<String>,
    },
}

#[derive(Subcommand)]
pub enum CatalogCommand {
    /// List the catalogs you can see.
    List,
    /// Create a catalog; you become its owner.
    Create {
        name: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// Delete a catalog; `--force` also deletes everything in it.
    Delete {
        name: String,
        #[arg(long)]
        force: bool,
    },
    /// List the schemas of a catalog.
    Schemas { catalog: String },
    /// Create a schema, named `CATALOG.SCHEMA`.
    CreateSchema {
        full_name: String,
        #[arg(long)]
        comment: Option<String>,
    },
    /// List the tables, views and vector indexes of a schema, named `CATALOG.SCHEMA`.
    Tables { schema: String },
}

/// The wire name of a privilege as people type it: `use catalog`, `USE CATALOG` and `USE_CATALOG` are the same.
fn privilege_name(privilege: &str) -> String {
    privilege
        .split_whitespace()
        .collect::<Vec<_>>()
        .join("_")
        .to_ascii_uppercase()
}

/// A full name as one path segment: dots stay, anything that would change the path is escaped.
fn segment(full_name: &str) -> String {
    urlencode(full_name)
}

fn securable_path(kind: &str, securable_type: &str, full_name: &str) -> String {
    format!(
        "{UC}/{kind}/{}/{}",
        segment(&securable_type.to_ascii_lowercase()),
        segment(full_name)
    )
}

/// Every item of a paged Unity Catalog list, following `next_page_token`.
async fn list_all(client: &WorkspaceClient, path: &str, key: &str) -> anyhow::Result<Vec<Value>> {
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    let mut page_token: Option<String> = None;
    loop {
        let page_path = match &page_token {
            Some(token) => format!("{path}{separator}page_token={}", urlencode(token)),
            None => path.to_owned(),
        };
        let page = client.get(&page_path).await?;
        items.extend(page[key].as_array().cloned().unwrap_or_default());
        match page["next_page_token"]
            .as_str()
            .filter(|token| !token.is_empty())
        {
            Some(next) if page_token.as_deref() != Some(next) => page_token = Some(next.to_owned()),
            _ => return Ok(items),
        }
    }
}

fn assignments(value: &Value) -> Vec<Value> {
    value["privilege_assignments"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Direct grants: one row per principal.
fn grants_table(value: &Value) -> String {
    let rows = assignments(value)
        .iter()
        .map(|assignment| {
            let privileges: Vec<String> = assignment["privileges"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            vec![text(&assignment["principal"]), privileges.join(", ")]
        })
        .collect();
    table(&["PRINCIPAL", "PRIVILEGES"], rows)
}

/// Effective grants: one row per privilege, with where it comes from.
fn effective_table(value: &Value) -> String {
    let mut rows = Vec::new();
    for assignment in assignments(value) {
        for privilege in assignment["privileges"].as_array().into_iter().flatten() {
            let source = match privilege["inherited_from_name"].as_str() {
                Some(name) => format!(
                    "{} {name}",
                    text(&privilege["inherited_from_type"]).to_ascii_lowercase()
                ),
                None => "(direct)".to_owned(),
            };
            rows.push(vec![
                text(&assignment["principal"]),
                text(&privilege["privilege"]),
                source,
            ]);
        }
    }
    table(&["PRINCIPAL", "PRIVILEGE", "FROM"], rows)
}

pub async fn grants(command: GrantsCommand, connection: &Connection) -> anyhow::Result<()> {
    let client = client(connection)?;
    match command {
        GrantsCommand::Show {
            securable_type,
            full_name,
            effective,
            principal,
        } => {
            let kind = if effective {
                "effective-permissions"
            } else {
                "permissions"
            };
            let mut path = securable_path(kind, &securable_type, &full_name);
            if let Some(principal) = principal {
                path.push_str(&format!("?principal={}", urlencode(&principal)));
            }
            let value = client.get(&path).await?;
            match effective {
                true => print(connection, &value, effective_table),
                false => print(connection, &value, grants_table),
            }
        }
        GrantsCommand::Add {
            securable_type,
            full_name,
            principal,
            privileges,
        }
        | GrantsCommand::Remove {
            securable_type,
            full_name,
            principal,
            privileges,
        } if privileges
            .iter()
            .any(|privilege| privilege.trim().is_empty()) =>
        {
            anyhow::bail!(
                "empty privilege name for `{principal}` on {securable_type} `{full_name}`"
            )
        }
        GrantsCommand::Add {
            securable_type,
            full_name,
            principal,
            privileges,
        } => {
            let privileges: Vec<String> = privileges.iter().map(|p| privilege_name(p)).collect();
            let change = json!({ "principal": principal, "add": privileges });
            let path = securable_path("permissions", &securable_type, &full_name);
            let value = client.patch(&path, &json!({ "changes": [change] })).await?;
            print(connection, &value, grants_table);
        }
        GrantsCommand::Remove {
            securable_type,
            full_name,
            principal,
            privileges,
        } => {
            let privileges: Vec<String> = privileges.iter().map(|p| privilege_name(p)).collect();
            let change = json!({ "principal": principal, "remove": privileges });
            let path = securable_path("permissions", &securable_type, &full_name);
            let value = client.patch(&path, &json!({ "changes": [change] })).await?;
            print(connection, &value, grants_table);
        }
    }
    Ok(())
}

/// `CATALOG.SCHEMA` split in two.
fn schema_name(full_name: &str) -> anyhow::Result<(&str, &str)> {
    full_name
        .split_once('.')
        .filter(|(catalog, schema)| !catalog.is_empty() && !schema.is_empty())
        .with_context(|| format!("`{full_name}` is not of the form CATALOG.SCHEMA"))
}

fn securables_table(value: &Value, key: &str, with_type: bool) -> String {
    let items = value[key].as_array().cloned().unwrap_or_default();
    let rows = items
        .iter()
        .map(|item| {
            let mut row = vec![text(&item["full_name"])];
            if with_type {
                row.push(text(&item["table_type"]));
            }
            row.extend([text(&item["owner"]), text(&item["comment"])]);
            row
        })
        .collect();
    match with_type {
        true => table(&["NAME", "TYPE", "OWNER", "COMMENT"], rows),
        false => table(&["NAME", "OWNER", "COMMENT"], rows),
    }
}

pub async fn catalog(command: CatalogCommand, connection: &Connection) -> anyhow::Result<()> {
    let client = client(connection)?;
    match command {
        CatalogCommand::List => {
            let catalogs = list_all(&client, &format!("{UC}/catalogs"), "catalogs").await?;
            let value = json!({ "catalogs": catalogs });
            print(connection, &value, |value| {
                securables_table(value, "catalogs", false)
            });
        }
        CatalogCommand::Create { name, comment } => {
            let body = json!({ "name": name, "comment": comment });
            let value = client.post(&format!("{UC}/catalogs"), &body).await?;
            print(connection, &value, |value| {
                format!(
                    "created catalog {} (owner {})\n",
                    text(&value["full_name"]),
                    text(&value["owner"])
                )
            });
        }
        CatalogCommand::Delete { name, force } => {
            let query = if force { "?force=true" } else { "" };
            client
                .delete(&format!("{UC}/catalogs/{}{query}", segment(&name)))
                .await?;
            let value = json!({ "deleted": name });
            print(connection, &value, |value| {
                format!("deleted catalog {}\n", text(&value["deleted"]))
            });
        }
        CatalogCommand::Schemas { catalog } => {
            let path = format!("{UC}/schemas?catalog_name={}", urlencode(&catalog));
            let schemas = list_all(&client, &path, "schemas").await?;
            let value = json!({ "schemas": schemas });
            print(connection, &value, |value| {
                securables_table(value, "schemas", false)
            });
        }
        CatalogCommand::CreateSchema { full_name, comment } => {
            let (catalog, schema) = schema_name(&full_name)?;
            let body = json!({ "name": schema, "catalog_name": catalog, "comment": comment });
            let value = client.post(&format!("{UC}/schemas"), &body).await?;
            print(connection, &value, |value| {
                format!(
                    "created schema {} (owner {})\n",
                    text(&value["full_name"]),
                    text(&value["owner"])
                )
            });
        }
        CatalogCommand::Tables { schema } => {
            let (catalog, schema) = schema_name(&schema)?;
            let path = format!(
                "{UC}/tables?catalog_name={}&schema_name={}",
                urlencode(catalog),
                urlencode(schema)
            );
            let tables = list_all(&client, &path, "tables").await?;
            let value = json!({ "tables": tables });
            print(connection, &value, |value| {
                securables_table(value, "tables", true)
            });
        }
    }
    Ok(())
}

/// Asks the server why `principal` may or may not do `action` on `securable` (`TYPE:NAME`). Prints `allow` or
/// `deny` and then each reason on its own line; a denial is an answer, not an error.
pub async fn why(
    principal: &str,
    action: &str,
    securable: &str,
    level: Option<&str>,
    connection: &Connection,
) -> anyhow::Result<()> {
    let client = client(connection)?;
    let mut path = format!(
        "/api/2.0/deputy/authz/why?principal={}&action={}&securable={}",
        urlencode(principal),
        urlencode(action),
        urlencode(securable)
    );
    if let Some(level) = level {
        path.push_str(&format!("&level={}", urlencode(&privilege_name(level))));
    }
    let value = client.get(&path).await?;
    print(connection, &value, why_text);
    Ok(())
}

fn why_text(value: &Value) -> String {
    let mut out = match value["allowed"].as_bool() {
        Some(true) => "allow\n".to_owned(),
        _ => "deny\n".to_owned(),
    };
    for reason in value["reasons"].as_array().into_iter().flatten() {
        out.push_str(&text(reason));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privileges_are_accepted_as_sql_spells_them() {
        assert_eq!(privilege_name("USE CATALOG"), "USE_CATALOG");
        assert_eq!(privilege_name(" use  schema "), "USE_SCHEMA");
        assert_eq!(privilege_name("SELECT"), "SELECT");
        assert_eq!(privilege_name("CAN_USE"), "CAN_USE");
    }

    #[test]
    fn names_cannot_change_the_path() {
        assert_eq!(
            securable_path("permissions", "CATALOG", "a/b"),
            "/api/2.1/unity-catalog/permissions/catalog/a%2Fb"
        );
        assert_eq!(
            securable_path("permissions", "table", "main.sales.orders"),
            "/api/2.1/unity-catalog/permissions/table/main.sales.orders"
        );
    }

    #[test]
    fn schema_names_need_two_parts() {
        assert_eq!(schema_name("main.sales").unwrap(), ("main", "sales"));
        assert!(schema_name("main").is_err());
        assert!(schema_name(".sales").is_err());
    }

    #[test]
    fn why_prints_the_effect_then_one_reason_a_line() {
        let value = json!({ "allowed": false, "reasons": ["no USE_CATALOG", "no SELECT"] });
        assert_eq!(why_text(&value), "deny\nno USE_CATALOG\nno SELECT\n");
        assert_eq!(
            why_text(&json!({ "allowed": true, "reasons": [] })),
            "allow\n"
        );
    }

    #[test]
    fn effective_grants_name_their_source() {
        let value = json!({ "privilege_assignments": [{ "principal": "bob", "privileges": [
            { "privilege": "SELECT", "inherited_from_type": "CATALOG", "inherited_from_name": "main" },
            { "privilege": "USE_SCHEMA" },
        ]}]});
        assert_eq!(
            effective_table(&value),
            "PRINCIPAL  PRIVILEGE   FROM\nbob        SELECT      catalog main\nbob        USE_SCHEMA  (direct)\n"
        );
    }
}
