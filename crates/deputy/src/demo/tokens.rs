//! The second part of `deputy demo`, under the hood: through the same REST API any client uses, a user's token is
//! exchanged for a short-lived token narrowed to an agent's declared scopes with the agent recorded as the actor,
//! refused outside those scopes, narrowed again along a chain of agents, and dead the moment it is revoked.

use super::{SCIM, ensure_user, obo_personal_token, text};
use anyhow::Context;
use base64::Engine;
use deputy_sdk::{Credentials, WorkspaceClient};
use serde_json::{Value, json};

pub async fn walkthrough(host: &str, admin_token: &str) -> anyhow::Result<()> {
    let admin = WorkspaceClient::new(host, Credentials::Token(admin_token.to_owned()));
    println!("\n== Under the hood: the token path of one on-behalf-of request");
    let me = admin.get(&format!("{SCIM}/Me")).await?;
    println!(
        "admin token belongs to `{}`",
        me["userName"].as_str().unwrap_or_default()
    );

    let alice = ensure_user(&admin, "alice@example.com").await?;
    let agent = ensure_service_principal(&admin, "support-agent").await?;
    let helper = ensure_service_principal(&admin, "search-helper").await?;
    println!(
        "users and agents: alice@example.com, support-agent ({}), search-helper",
        text(&agent["applicationId"])
    );

    // What a user holds: a personal access token with every scope (issued here by the admin for the demo).
    let alice_token = obo_personal_token(&admin, &text(&alice["id"])).await?;
    // What an agent holds: its own OAuth access token, from client credentials.
    let agent_token = client_credentials_token(&admin, host, &agent).await?;
    let helper_token = client_credentials_token(&admin, host, &helper).await?;

    println!(
        "\n1. The agent declares the scopes it needs: serving + vector search. Exchange alice's token (RFC 8693):"
    );
    let exchanged = admin
        .exchange_token(
            &alice_token,
            Some(&agent_token),
            Some("serving.serving-endpoints vectorsearch.vector-search-indexes"),
        )
        .await?;
    let delegated = text(&exchanged["access_token"]);
    print_claims(&delegated)?;

    println!("\n2. The delegated token works inside its scopes and is refused outside them:");
    let as_alice = WorkspaceClient::new(host, Credentials::Token(delegated.clone()));
    match as_alice.get(&format!("{SCIM}/Me")).await {
        Ok(me) => println!(
            "   GET /Me                  -> 200, acting for `{}`",
            text(&me["userName"])
        ),
        Err(error) => println!("   GET /Me                  -> {error}"),
    }
    match as_alice.get(&format!("{SCIM}/Users")).await {
        Ok(_) => anyhow::bail!("a narrowed token listed users: scopes are not enforced"),
        Err(error) => println!("   GET /Users (iam.scim)    -> {error}"),
    }

    println!(
        "\n3. The agent asks a second agent for help: scopes shrink again and the actor chain grows:"
    );
    let chained = admin
        .exchange_token(
            &delegated,
            Some(&helper_token),
            Some("vectorsearch.vector-search-indexes"),
        )
        .await?;
    print_claims(&text(&chained["access_token"]))?;
    match admin
        .exchange_token(
            &text(&chained["access_token"]),
            None,
            Some("serving.serving-endpoints"),
        )
        .await
    {
        Ok(_) => anyhow::bail!("a chained token was widened"),
        Err(error) => println!("   widening it back to serving is refused: {error}"),
    }

    println!("\n4. Revocation takes effect on the next request:");
    admin.revoke_token(&delegated).await?;
    match as_alice.get(&format!("{SCIM}/Me")).await {
        Ok(_) => anyhow::bail!("a revoked token was accepted"),
        Err(error) => println!("   GET /Me with the revoked token -> {error}"),
    }
    println!("\nDone: every step above went through the public REST API of a real server.");
    Ok(())
}

async fn ensure_service_principal(
    admin: &WorkspaceClient,
    display_name: &str,
) -> anyhow::Result<Value> {
    let filter = format!("{SCIM}/ServicePrincipals?filter=displayName%20eq%20%22{display_name}%22");
    if let Some(existing) = admin.get(&filter).await?["Resources"]
        .as_array()
        .and_then(|list| list.first())
    {
        return Ok(existing.clone());
    }
    Ok(admin
        .post(
            &format!("{SCIM}/ServicePrincipals"),
            &json!({ "displayName": display_name }),
        )
        .await?)
}

async fn client_credentials_token(
    admin: &WorkspaceClient,
    host: &str,
    principal: &Value,
) -> anyhow::Result<String> {
    let path = format!(
        "/api/2.0/accounts/servicePrincipals/{}/credentials/secrets",
        text(&principal["id"])
    );
    let secret = admin.post(&path, &json!({ "lifetime": "3600s" })).await?;
    let agent = WorkspaceClient::new(
        host,
        Credentials::oauth(
            text(&principal["applicationId"]),
            text(&secret["secret"]),
            "all-apis",
        ),
    );
    // The first call makes the client fetch (and cache) its access token; read it back through introspection.
    let me = agent.get(&format!("{SCIM}/Me")).await?;
    let token = agent.access_token().await?;
    anyhow::ensure!(
        text(&me["applicationId"]) == text(&principal["applicationId"]),
        "client credentials named the wrong principal"
    );
    Ok(token)
}

fn print_claims(token: &str) -> anyhow::Result<()> {
    let payload = token.split('.').nth(1).context("not a JWT")?;
    let claims: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload)?)?;
    println!("   sub   = {}", text(&claims["sub"]));
    println!("   scope = {}", text(&claims["scope"]));
    println!(
        "   act   = {}",
        claims
            .get("act")
            .map(Value::to_string)
            .unwrap_or_else(|| "(none)".into())
    );
    let lifetime = claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0);
    println!("   lives {lifetime} s");
    Ok(())
}
