//! `deputy federation`: the token federation policies under which `/oidc/v1/token` exchanges another issuer's JWT
//! for a Deputy token. Without `--service-principal`, a policy's subject claim names a user (matched by user name);
//! with it, every token the policy accepts becomes that service principal (workload identity federation).

use crate::Connection;
use crate::client_commands::{SCIM, client, id_of, print, require, resources, table, text, texts};
use clap::Subcommand;
use deputy_sdk::WorkspaceClient;
use serde_json::{Value, json};

#[derive(Subcommand)]
pub enum FederationCommand {
    /// Trust JWTs from an issuer.
    Add {
        /// The issuer URL, exactly as tokens carry it in `iss` (https://, or http:// on a loopback host).
        #[arg(long)]
        issuer: String,
        /// An accepted `aud` value; repeat for several (default: this server's token audience).
        #[arg(long = "audience")]
        audiences: Vec<String>,
        /// The claim naming the subject (default: `sub`).
        #[arg(long)]
        subject_claim: Option<String>,
        /// Accept only this subject-claim value.
        #[arg(long)]
        subject: Option<String>,
        /// Map every accepted token to this service principal (its application id).
        #[arg(long)]
        service_principal: Option<String>,
        #[arg(long)]
        description: Option<String>,
        /// The policy's id (default: a new UUID).
        #[arg(long)]
        policy_id: Option<String>,
    },
    /// List the policies: account-wide ones and every service principal's.
    List,
    /// Remove a policy.
    Remove {
        policy_id: String,
        /// The service principal (application id) the policy belongs to, if it is not account-wide.
        #[arg(long)]
        service_principal: Option<String>,
    },
}

/// The policies' collection path: account-wide, or of the service principal with SCIM id `service_principal`.
fn collection(account: &str, service_principal: Option<&str>) -> String {
    match service_principal {
        Some(id) => {
            format!("/api/2.0/accounts/{account}/servicePrincipals/{id}/federationPolicies")
        }
        None => format!("/api/2.0/accounts/{account}/federationPolicies"),
    }
}

/// Deputy's account id is its workspace id, which the server announces.
async fn account_id(client: &WorkspaceClient) -> anyhow::Result<String> {
    Ok(text(
        &client.get("/.well-known/databricks-config").await?["workspace_id"],
    ))
}

async fn service_principal_id(
    client: &WorkspaceClient,
    application_id: &str,
) -> anyhow::Result<String> {
    Ok(id_of(
        &require(client, "ServicePrincipals", "applicationId", application_id).await?,
    ))
}

pub async fn federation(command: FederationCommand, connection: &Connection) -> anyhow::Result<()> {
    let client = client(connection)?;
    let account = account_id(&client).await?;
    let value = match command {
        FederationCommand::Add {
            issuer,
            audiences,
            subject_claim,
            subject,
            service_principal,
            description,
            policy_id,
        } => {
            let owner = match &service_principal {
                Some(application_id) => Some(service_principal_id(&client, application_id).await?),
                None => None,
            };
            let mut path = collection(&account, owner.as_deref());
            if let Some(id) = policy_id {
                path = format!(
                    "{path}?policy_id={}",
                    crate::client_commands::urlencode(&id)
                );
            }
            let mut oidc = json!({ "issuer": issuer, "audiences": audiences });
            if let Some(claim) = subject_claim {
                oidc["subject_claim"] = json!(claim);
            }
            if let Some(subject) = subject {
                oidc["subject"] = json!(subject);
            }
            let body =
                json!({ "description": description.unwrap_or_default(), "oidc_policy": oidc });
            json!({ "policies": [client.post(&path, &body).await?] })
        }
        FederationCommand::List => {
            let mut policies = client.get(&collection(&account, None)).await?["policies"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for principal in resources(&client.get(&format!("{SCIM}/ServicePrincipals")).await?) {
                let path = collection(&account, Some(&id_of(&principal)));
                policies.extend(
                    client.get(&path).await?["policies"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default(),
                );
            }
            json!({ "policies": policies })
        }
        FederationCommand::Remove {
            policy_id,
            service_principal,
        } => {
            let owner = match &service_principal {
                Some(application_id) => Some(service_principal_id(&client, application_id).await?),
                None => None,
            };
            client
                .delete(&format!(
                    "{}/{policy_id}",
                    collection(&account, owner.as_deref())
                ))
                .await?;
            json!({ "removed": policy_id })
        }
    };
    print(connection, &value, |value| {
        if value.get("removed").is_some() {
            return format!("removed federation policy {}\n", text(&value["removed"]));
        }
        let rows = value["policies"]
            .as_array()
            .into_iter()
            .flatten()
            .map(policy_row)
            .collect();
        table(
            &[
                "POLICY ID",
                "ISSUER",
                "AUDIENCES",
                "SUBJECT CLAIM",
                "SERVICE PRINCIPAL",
            ],
            rows,
        )
    });
    Ok(())
}

fn policy_row(policy: &Value) -> Vec<String> {
    let oidc = &policy["oidc_policy"];
    let audiences: Vec<String> = texts(&oidc["audiences"]);
    vec![
        text(&policy["policy_id"]),
        text(&oidc["issuer"]),
        audiences.join(" "),
        text(&oidc["subject_claim"]),
        policy
            .get("service_principal_id")
            .map(text)
            .unwrap_or_default(),
    ]
}
