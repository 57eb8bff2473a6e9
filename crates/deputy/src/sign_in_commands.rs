//! Sign-in administration: `deputy idp` (the upstream identity providers people sign in with), `deputy oauth-apps`
//! (OAuth apps in the shape of Databricks' custom app integrations) and `deputy local-password` (the bootstrap
//! admin's password for signing in without a provider).

use crate::Connection;
use crate::client_commands::{client, print, table, text, texts, urlencode};
use anyhow::{Context, bail};
use clap::Subcommand;
use deputy_sdk::WorkspaceClient;
use serde_json::{Value, json};
use std::io::{BufRead, IsTerminal, Write};

const PROVIDERS: &str = "/api/2.0/deputy/identity-providers";

#[derive(Subcommand)]
pub enum IdpCommand {
    /// Let people sign in with an OpenID Connect provider; prints the redirect URI to register at the provider.
    Add {
        /// The provider's issuer URL (https://, or http:// on a loopback host); its discovery document must answer.
        #[arg(long)]
        issuer: String,
        /// The client id this server has at the provider.
        #[arg(long)]
        client_id: String,
        /// The client secret this server has at the provider (better from the environment than the command line).
        #[arg(long, env = "DEPUTY_IDP_CLIENT_SECRET", hide_env_values = true)]
        client_secret: String,
        /// The ID token claim listing the user's groups, if the provider sends one.
        #[arg(long)]
        groups_claim: Option<String>,
        /// The ID token claim that becomes the user name (default: `email`).
        #[arg(long)]
        username_claim: Option<String>,
        /// Admit only user names in this domain; repeat for several (default: any).
        #[arg(long = "allowed-domain")]
        allowed_domains: Vec<String>,
    },
    /// List the identity providers (never their client secrets) and the redirect URI they call back to.
    List,
    /// Stop signing people in with a provider.
    Remove {
        /// The provider's issuer URL.
        #[arg(long)]
        issuer: String,
    },
}

#[derive(Subcommand)]
pub enum OauthAppsCommand {
    /// Register an OAuth app (custom app integration); prints its client id and, once, its client secret.
    Create {
        #[arg(long)]
        name: String,
        /// A URL the app may receive authorization codes at; repeat for several.
        #[arg(long = "redirect-url", required = true)]
        redirect_urls: Vec<String>,
        /// A public client (no secret; PKCE only), such as a native or single-page app. Default: confidential.
        #[arg(long)]
        public: bool,
        /// The API scopes the app may ask for, separated by spaces or commas, e.g. "iam.scim sql" (default: all).
        #[arg(long = "scopes")]
        scopes: Vec<String>,
    },
    /// List the OAuth apps.
    List,
    /// Show one OAuth app.
    Get { integration_id: String },
    /// Delete an OAuth app; its tokens stop working.
    Delete { integration_id: String },
}

#[derive(Subcommand)]
pub enum LocalPasswordCommand {
    /// Set a local password, read as one line from standard input (so it stays out of shell history and process
    /// lists); only an admin, with their own token, may.
    Set {
        /// Whose password (default: your own).
        #[arg(long = "user")]
        user_name: Option<String>,
    },
}

/// Deputy's account id is its workspace id, which the server announces.
async fn account_id(client: &WorkspaceClient) -> anyhow::Result<String> {
    Ok(text(
        &client.get("/.well-known/databricks-config").await?["workspace_id"],
    ))
}

pub async fn idp(command: IdpCommand, connection: &Connection) -> anyhow::Result<()> {
    let client = client(connection)?;
    let value = match command {
        IdpCommand::Add {
            issuer,
            client_id,
            client_secret,
            groups_claim,
            username_claim,
            allowed_domains,
        } => {
            let mut body = json!({
                "issuer": issuer,
                "client_id": client_id,
                "client_secret": client_secret,
                "allowed_domains": allowed_domains,
            });
            if let Some(claim) = groups_claim {
                body["groups_claim"] = json!(claim);
            }
            if let Some(claim) = username_claim {
                body["username_claim"] = json!(claim);
            }
            client
                .post(PROVIDERS, &body)
                .await
                .with_context(|| format!("could not add identity provider `{issuer}`"))?
        }
        IdpCommand::List => client.get(PROVIDERS).await?,
        IdpCommand::Remove { issuer } => {
            client
                .delete(&format!("{PROVIDERS}?issuer={}", urlencode(&issuer)))
                .await
                .with_context(|| format!("could not remove identity provider `{issuer}`"))?;
            json!({ "removed": issuer })
        }
    };
    print(connection, &value, |value| {
        if let Some(removed) = value.get("removed") {
            return format!("removed identity provider {}\n", text(removed));
        }
        if let Some(providers) = value.get("identity_providers") {
            let rows = providers
                .as_array()
                .into_iter()
                .flatten()
                .map(provider_row)
                .collect();
            let mut out = table(
                &[
                    "ISSUER",
                    "CLIENT ID",
                    "USERNAME CLAIM",
                    "GROUPS CLAIM",
                    "ALLOWED DOMAINS",
                ],
                rows,
            );
            out.push_str(&format!(
                "\nredirect URI (register it at each provider): {}\n",
                text(&value["redirect_uri"])
            ));
            return out;
        }
        format!(
            "added identity provider {} (client id {})\n\
             register this redirect URI at the provider: {}\n",
            text(&value["issuer"]),
            text(&value["client_id"]),
            text(&value["redirect_uri"]),
        )
    });
    Ok(())
}

fn provider_row(provider: &Value) -> Vec<String> {
    let domains: Vec<String> = texts(&provider["allowed_domains"]);
    vec![
        text(&provider["issuer"]),
        text(&provider["client_id"]),
        text(&provider["username_claim"]),
        text(&provider["groups_claim"]),
        if domains.is_empty() {
            "(any)".to_owned()
        } else {
            domains.join(" ")
        },
    ]
}

/// `--scopes "iam.scim sql"`, `--scopes iam.scim,sql` and `--scopes iam.scim --scopes sql` alike.
fn split_scopes(scopes: &[String]) -> Vec<String> {
    scopes
        .iter()
        .flat_map(|scopes| scopes.split(|c: char| c.is_whitespace() || c == ','))
        .filter(|scope| !scope.is_empty())
        .map(str::to_owned)
        .collect()
}

pub async fn oauth_apps(command: OauthAppsCommand, connection: &Connection) -> anyhow::Result<()> {
    let client = client(connection)?;
    let account = account_id(&client).await?;
    let apps = format!("/api/2.0/accounts/{account}/oauth2/custom-app-integrations");
    let value = match command {
        OauthAppsCommand::Create {
            name,
            redirect_urls,
            public,
            scopes,
        } => {
            let mut body = json!({
                "name": name,
                "redirect_urls": redirect_urls,
                "confidential": !public,
            });
            let scopes = split_scopes(&scopes);
            if !scopes.is_empty() {
                body["scopes"] = json!(scopes);
            }
            let mut created = client
                .post(&apps, &body)
                .await
                .with_context(|| format!("could not create OAuth app `{name}`"))?;
            created["name"] = json!(name);
            created
        }
        OauthAppsCommand::List => client.get(&apps).await?,
        OauthAppsCommand::Get { integration_id } => {
            client
                .get(&format!("{apps}/{}", urlencode(&integration_id)))
                .await?
        }
        OauthAppsCommand::Delete { integration_id } => {
            client
                .delete(&format!("{apps}/{}", urlencode(&integration_id)))
                .await?;
            json!({ "deleted": integration_id })
        }
    };
    print(connection, &value, |value| {
        if let Some(deleted) = value.get("deleted") {
            return format!("deleted OAuth app {}\n", text(deleted));
        }
        if value.get("create_time").is_none() && value.get("apps").is_none() {
            // A new app: the answer of create.
            let mut out = format!(
                "created OAuth app {}\nclient id:     {}\n",
                text(&value["name"]),
                text(&value["client_id"])
            );
            match value.get("client_secret") {
                Some(secret) => out.push_str(&format!(
                    "client secret: {}\n\
                     The client secret is shown only once: store it now, it cannot be shown again.\n",
                    text(secret)
                )),
                None => out.push_str("public client: no secret; the app signs in with PKCE\n"),
            }
            return out;
        }
        let Some(apps) = value.get("apps") else {
            // One app, from get: every detail, one per line.
            return format!(
                "client id:     {}\nname:          {}\ntype:          {}\nscopes:        {}\n\
                 redirect URLs: {}\ncreated:       {}\n",
                text(&value["client_id"]),
                text(&value["name"]),
                client_type(value),
                words(&value["scopes"]),
                words(&value["redirect_urls"]),
                text(&value["create_time"]),
            );
        };
        let rows = apps.as_array().into_iter().flatten().map(app_row).collect();
        table(
            &[
                "CLIENT ID",
                "NAME",
                "TYPE",
                "SCOPES",
                "REDIRECT URLS",
                "CREATED",
            ],
            rows,
        )
    });
    Ok(())
}

/// The words of a JSON array of strings, separated by spaces.
fn words(value: &Value) -> String {
    texts(value).join(" ")
}

fn client_type(app: &Value) -> &'static str {
    if app["confidential"] == true {
        "confidential"
    } else {
        "public"
    }
}

/// A row of the list: long scope lists are counted rather than spelled out (`get` shows them all).
fn app_row(app: &Value) -> Vec<String> {
    let scopes = app["scopes"].as_array().map_or(0, Vec::len);
    vec![
        text(&app["client_id"]),
        text(&app["name"]),
        client_type(app).to_owned(),
        if scopes > 3 {
            format!("({scopes} scopes)")
        } else {
            words(&app["scopes"])
        },
        words(&app["redirect_urls"]),
        text(&app["create_time"]),
    ]
}

/// One line from `input`, without its line ending; an empty line is refused.
fn read_password(input: &mut impl BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .context("could not read the password from standard input")?;
    let password = line
        .strip_suffix('\n')
        .map(|line| line.strip_suffix('\r').unwrap_or(line))
        .unwrap_or(&line);
    if password.is_empty() {
        bail!("no password: write the new password as one line on standard input");
    }
    Ok(password.to_owned())
}

pub async fn local_password(
    command: LocalPasswordCommand,
    connection: &Connection,
) -> anyhow::Result<()> {
    let client = client(connection)?;
    let LocalPasswordCommand::Set { user_name } = command;
    let stdin = std::io::stdin();
    let whose = match &user_name {
        Some(user_name) => format!("the local password of user {user_name}"),
        None => "your local password".to_owned(),
    };
    if stdin.is_terminal() {
        eprint!("new password, {whose} (one line; it is echoed): ");
        let _ = std::io::stderr().flush();
    }
    let password = read_password(&mut stdin.lock())?;
    let mut body = json!({ "password": password });
    if let Some(user_name) = &user_name {
        body["user_name"] = json!(user_name);
    }
    client
        .put("/api/2.0/deputy/local-password", &body)
        .await
        .context("could not set the local password")?;
    let value = json!({ "user_name": user_name, "local_password_set": true });
    print(connection, &value, |_| format!("set {whose}\n"));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_split_on_spaces_and_commas() {
        assert_eq!(
            split_scopes(&["iam.scim sql".into(), "a,b".into(), " ".into()]),
            ["iam.scim", "sql", "a", "b"]
        );
    }

    #[test]
    fn passwords_lose_only_the_line_ending() {
        let read = |input: &str| read_password(&mut input.as_bytes()).ok();
        assert_eq!(read("s3cret pass \n").as_deref(), Some("s3cret pass "));
        assert_eq!(read("windows\r\nsecond").as_deref(), Some("windows"));
        assert_eq!(read("no newline").as_deref(), Some("no newline"));
        assert_eq!(read("\n"), None);
        assert_eq!(read(""), None);
    }
}
