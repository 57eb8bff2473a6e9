//! Client commands: each resolves names to ids where people would rather type names, makes the REST calls through
//! `deputy-sdk`, and prints a table (or the raw JSON with `--output json`).

use crate::{Connection, Output};
use anyhow::{Context, bail};
use clap::Subcommand;
use deputy_sdk::{Config, WorkspaceClient};
use serde_json::{Value, json};

pub(crate) const SCIM: &str = "/api/2.0/preview/scim/v2";

#[derive(Subcommand)]
pub enum UsersCommand {
    /// List users.
    List,
    /// Create a user.
    Create {
        user_name: String,
        #[arg(long)]
        display_name: Option<String>,
    },
    /// Delete a user.
    Delete { user_name: String },
    /// Show the user the token belongs to.
    Me,
}

#[derive(Subcommand)]
pub enum GroupsCommand {
    List,
    Create {
        name: String,
    },
    Delete {
        name: String,
    },
    /// Add a user, service principal (by application id) or group to a group.
    AddMember {
        group: String,
        member: String,
    },
    RemoveMember {
        group: String,
        member: String,
    },
}

#[derive(Subcommand)]
pub enum ServicePrincipalsCommand {
    List,
    /// Create a service principal; prints its application id.
    Create {
        display_name: String,
    },
    Delete {
        application_id: String,
    },
    /// Create an OAuth client secret (shown once).
    Secret {
        application_id: String,
    },
}

#[derive(Subcommand)]
pub enum TokensCommand {
    /// Create a personal access token for yourself, or (as an admin) `--for` a user or service principal.
    Create {
        /// A user name, or a service principal's application id or display name.
        #[arg(long = "for")]
        for_principal: Option<String>,
        #[arg(long)]
        lifetime_seconds: Option<i64>,
        #[arg(long, default_value = "")]
        comment: String,
        /// API scope to put in the token (repeatable); default: all of yours.
        #[arg(long = "scope")]
        scopes: Vec<String>,
    },
    /// List your tokens, or everyone's with `--all` (admins).
    List {
        #[arg(long)]
        all: bool,
    },
    /// Revoke a token by id (yours, or anyone's as an admin).
    Revoke { token_id: String },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Make a new signing key current; tokens signed by the old one stay valid until they expire.
    Rotate,
}

pub(crate) fn client(connection: &Connection) -> anyhow::Result<WorkspaceClient> {
    let config = Config::from_environment(
        connection.host.clone(),
        connection.token.clone(),
        connection.profile.clone(),
    )?;
    Ok(WorkspaceClient::from_config(config))
}

pub(crate) fn print(connection: &Connection, value: &Value, table: impl FnOnce(&Value) -> String) {
    match connection.output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(value).unwrap_or_default()
        ),
        Output::Text => print!("{}", table(value)),
    }
}

/// Renders rows as aligned columns under a header.
pub(crate) fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|header| header.len()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| -> String {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(headers.iter().map(|header| header.to_string()).collect());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

pub(crate) fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The items of a JSON array as text (an absent or non-array value has none).
pub(crate) fn texts(value: &Value) -> Vec<String> {
    value.as_array().into_iter().flatten().map(text).collect()
}

pub(crate) fn resources(value: &Value) -> Vec<Value> {
    value["Resources"].as_array().cloned().unwrap_or_default()
}

/// Finds one SCIM resource by an attribute; an error names what was not found.
async fn find(
    client: &WorkspaceClient,
    resource: &str,
    attribute: &str,
    value: &str,
) -> anyhow::Result<Option<Value>> {
    let filter = format!("{attribute} eq \"{value}\"");
    let path = format!("{SCIM}/{resource}?filter={}", urlencode(&filter));
    Ok(resources(&client.get(&path).await?).into_iter().next())
}

pub(crate) fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (byte as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Resolves a name as people type it: a user name, a service principal's application id or display name, or a
/// group name (when `groups` is set).
async fn resolve(client: &WorkspaceClient, name: &str, groups: bool) -> anyhow::Result<Value> {
    let mut lookups = vec![
        ("Users", "userName"),
        ("ServicePrincipals", "applicationId"),
        ("ServicePrincipals", "displayName"),
    ];
    if groups {
        lookups.push(("Groups", "displayName"));
    }
    for (resource, attribute) in lookups {
        if let Some(found) = find(client, resource, attribute, name).await? {
            return Ok(found);
        }
    }
    bail!("no principal named `{name}`")
}

pub(crate) async fn require(
    client: &WorkspaceClient,
    resource: &str,
    attribute: &str,
    value: &str,
) -> anyhow::Result<Value> {
    find(client, resource, attribute, value)
        .await?
        .with_context(|| format!("no {resource} entry with {attribute} `{value}`"))
}

pub(crate) fn id_of(resource: &Value) -> String {
    text(&resource["id"])
}

pub async fn users(command: UsersCommand, connection: &Connection) -> anyhow::Result<()> {
    let client = client(connection)?;
    let value = match command {
        UsersCommand::List => client.get(&format!("{SCIM}/Users")).await?,
        UsersCommand::Me => client.get(&format!("{SCIM}/Me")).await?,
        UsersCommand::Create {
            user_name,
            display_name,
        } => {
            let body = json!({ "userName": user_name, "displayName": display_name.unwrap_or_else(|| user_name.clone()) });
            client.post(&format!("{SCIM}/Users"), &body).await?
        }
        UsersCommand::Delete { user_name } => {
            let user = require(&client, "Users", "userName", &user_name).await?;
            client
                .delete(&format!("{SCIM}/Users/{}", id_of(&user)))
                .await?;
            json!({ "deleted": user_name })
        }
    };
    print(connection, &value, |value| {
        let list = if value.get("Resources").is_some() {
            resources(value)
        } else {
            vec![value.clone()]
        };
        if value.get("deleted").is_some() {
            return format!("deleted user {}\n", text(&value["deleted"]));
        }
        let rows = list
            .iter()
            .map(|user| {
                vec![
                    id_of(user),
                    text(&user["userName"]),
                    text(&user["displayName"]),
                ]
            })
            .collect();
        table(&["ID", "USER NAME", "DISPLAY NAME"], rows)
    });
    Ok(())
}

pub async fn groups(command: GroupsCommand, connection: &Connection) -> anyhow::Result<()> {
    let client = client(connection)?;
    let membership = |op: &str, member_id: String| {
        json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{ "op": op, "path": "members", "value": [{ "value": member_id }] }],
        })
    };
    let value = match command {
        GroupsCommand::List => client.get(&format!("{SCIM}/Groups")).await?,
        GroupsCommand::Create { name } => {
            client
                .post(&format!("{SCIM}/Groups"), &json!({ "displayName": name }))
                .await?
        }
        GroupsCommand::Delete { name } => {
            let group = require(&client, "Groups", "displayName", &name).await?;
            client
                .delete(&format!("{SCIM}/Groups/{}", id_of(&group)))
                .await?;
            require_listing(&client).await?
        }
        GroupsCommand::AddMember { group, member }
        | GroupsCommand::RemoveMember { group, member }
            if group.is_empty() || member.is_empty() =>
        {
            bail!("group and member must not be empty")
        }
        GroupsCommand::AddMember { group, member } => {
            let group = require(&client, "Groups", "displayName", &group).await?;
            let member = resolve(&client, &member, true).await?;
            client
                .patch(
                    &format!("{SCIM}/Groups/{}", id_of(&group)),
                    &membership("add", id_of(&member)),
                )
                .await?
        }
        GroupsCommand::RemoveMember { group, member } => {
            let group = require(&client, "Groups", "displayName", &group).await?;
            let member = resolve(&client, &member, true).await?;
            client
                .patch(
                    &format!("{SCIM}/Groups/{}", id_of(&group)),
                    &membership("remove", id_of(&member)),
                )
                .await?
        }
    };
    print(connection, &value, |value| {
        let list = if value.get("Resources").is_some() {
            resources(value)
        } else {
            vec![value.clone()]
        };
        let rows = list
            .iter()
            .map(|group| {
                let members: Vec<String> = group["members"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| text(&m["display"]))
                    .collect();
                vec![
                    id_of(group),
                    text(&group["displayName"]),
                    members.join(", "),
                ]
            })
            .collect();
        table(&["ID", "NAME", "MEMBERS"], rows)
    });
    Ok(())
}

async fn require_listing(client: &WorkspaceClient) -> anyhow::Result<Value> {
    Ok(client.get(&format!("{SCIM}/Groups")).await?)
}

pub async fn service_principals(
    command: ServicePrincipalsCommand,
    connection: &Connection,
) -> anyhow::Result<()> {
    let client = client(connection)?;
    let value = match command {
        ServicePrincipalsCommand::List => client.get(&format!("{SCIM}/ServicePrincipals")).await?,
        ServicePrincipalsCommand::Create { display_name } => {
            client
                .post(
                    &format!("{SCIM}/ServicePrincipals"),
                    &json!({ "displayName": display_name }),
                )
                .await?
        }
        ServicePrincipalsCommand::Delete { application_id } => {
            let principal = resolve(&client, &application_id, false).await?;
            client
                .delete(&format!("{SCIM}/ServicePrincipals/{}", id_of(&principal)))
                .await?;
            json!({ "deleted": application_id })
        }
        ServicePrincipalsCommand::Secret { application_id } => {
            let principal = resolve(&client, &application_id, false).await?;
            let path = format!(
                "/api/2.0/accounts/servicePrincipals/{}/credentials/secrets",
                id_of(&principal)
            );
            let mut secret = client.post(&path, &json!({})).await?;
            secret["client_id"] = principal["applicationId"].clone();
            secret
        }
    };
    print(connection, &value, |value| {
        if let Some(secret) = value.get("secret") {
            return format!(
                "client id:     {}\nclient secret: {} (shown once)\nexpires:       {}\n",
                text(&value["client_id"]),
                text(secret),
                text(&value["expire_time"])
            );
        }
        if value.get("deleted").is_some() {
            return format!("deleted service principal {}\n", text(&value["deleted"]));
        }
        let list = if value.get("Resources").is_some() {
            resources(value)
        } else {
            vec![value.clone()]
        };
        let rows = list
            .iter()
            .map(|sp| {
                vec![
                    id_of(sp),
                    text(&sp["applicationId"]),
                    text(&sp["displayName"]),
                ]
            })
            .collect();
        table(&["ID", "APPLICATION ID", "DISPLAY NAME"], rows)
    });
    Ok(())
}

pub async fn tokens(command: TokensCommand, connection: &Connection) -> anyhow::Result<()> {
    let client = client(connection)?;
    let value = match command {
        TokensCommand::Create {
            for_principal,
            lifetime_seconds,
            comment,
            scopes,
        } => {
            let mut body = json!({ "comment": comment, "lifetime_seconds": lifetime_seconds });
            if !scopes.is_empty() {
                body["scopes"] = json!(scopes);
            }
            match for_principal {
                None => client.post("/api/2.0/token/create", &body).await?,
                Some(name) => {
                    let principal = resolve(&client, &name, false).await?;
                    // Service principals are addressed by application id, users by their SCIM id.
                    let application_id = match principal.get("applicationId") {
                        Some(application_id) => text(application_id),
                        None => id_of(&principal),
                    };
                    body["application_id"] = json!(application_id);
                    client
                        .post("/api/2.0/token-management/on-behalf-of/tokens", &body)
                        .await?
                }
            }
        }
        TokensCommand::List { all: false } => client.get("/api/2.0/token/list").await?,
        TokensCommand::List { all: true } => client.get("/api/2.0/token-management/tokens").await?,
        TokensCommand::Revoke { token_id } => {
            // Admins may revoke any token; others fall back to their own-token call.
            match client
                .delete(&format!("/api/2.0/token-management/tokens/{token_id}"))
                .await
            {
                Ok(_) => {}
                Err(error) if error.status() == Some(403) => {
                    client
                        .post("/api/2.0/token/delete", &json!({ "token_id": token_id }))
                        .await?;
                }
                Err(error) => return Err(error.into()),
            }
            json!({ "revoked": token_id })
        }
    };
    print(connection, &value, |value| {
        if let Some(token) = value.get("token_value") {
            return format!(
                "token id: {}\ntoken:    {} (shown once)\n",
                text(&value["token_info"]["token_id"]),
                text(token)
            );
        }
        if let Some(revoked) = value.get("revoked") {
            return format!("revoked token {}\n", text(revoked));
        }
        let rows = value["token_infos"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|info| {
                let expiry = match info["expiry_time"].as_i64() {
                    Some(-1) | None => "never".to_owned(),
                    Some(millis) => format!("{millis}"),
                };
                vec![
                    text(&info["token_id"]),
                    text(&info["owner_id"]),
                    expiry,
                    text(&info["comment"]),
                ]
            })
            .collect();
        table(
            &["TOKEN ID", "OWNER ID", "EXPIRES (EPOCH MS)", "COMMENT"],
            rows,
        )
    });
    Ok(())
}

pub async fn keys(command: KeysCommand, connection: &Connection) -> anyhow::Result<()> {
    let client = client(connection)?;
    let value = match command {
        KeysCommand::Rotate => {
            client
                .post("/api/2.0/deputy/keys/rotate", &json!({}))
                .await?
        }
    };
    print(connection, &value, |value| {
        format!("current signing key: {}\n", text(&value["kid"]))
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let rendered = table(&["A", "LONGER"], vec![vec!["wide-cell".into(), "x".into()]]);
        assert_eq!(rendered, "A          LONGER\nwide-cell  x\n");
    }

    #[test]
    fn filters_are_percent_encoded() {
        assert_eq!(
            urlencode("userName eq \"a@b\""),
            "userName%20eq%20%22a%40b%22"
        );
    }
}
