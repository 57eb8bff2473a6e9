//! The demo's last step: the web console's address, and a password for each demo user to sign in to it with (the
//! demo configures no identity provider, so Deputy asks for local passwords). The passwords are kept in the data
//! directory, readable only by its owner, so a second run prints the same ones.

use anyhow::Context;
use base64::Engine;
use deputy_sdk::WorkspaceClient;
use serde_json::{Map, Value, json};
use std::path::Path;

const PASSWORDS_FILE: &str = "demo-passwords.json";

pub async fn sign_in_details(host: &str, admin_token: &str, data_dir: &Path) -> anyhow::Result<()> {
    let admin = WorkspaceClient::new(host, deputy_sdk::Credentials::Token(admin_token.into()));
    let path = data_dir.join(PASSWORDS_FILE);
    let mut passwords: Map<String, Value> = match std::fs::read_to_string(&path) {
        Ok(text) => {
            serde_json::from_str(&text).with_context(|| format!("reading {}", path.display()))?
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Map::new(),
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    for (user_name, _) in super::rag::USERS {
        if !passwords.contains_key(user_name) {
            passwords.insert(user_name.into(), json!(new_password()?));
        }
        let password = super::text(&passwords[user_name]);
        admin
            .put(
                "/api/2.0/deputy/local-password",
                &json!({ "user_name": user_name, "password": password }),
            )
            .await
            .with_context(|| format!("setting {user_name}'s console password"))?;
    }
    write_private(&path, &serde_json::to_string_pretty(&passwords)?)?;

    println!("\n== The web console: {host}/console/");
    println!(
        "   Sign in as a demo user (no identity provider is configured, so Deputy asks for a password):"
    );
    for (user_name, _) in super::rag::USERS {
        println!(
            "     {user_name:<20} {}",
            super::text(&passwords[user_name])
        );
    }
    println!(
        "   (kept in {}; the admin sets their own with `deputy local-password set`)",
        path.display()
    );
    Ok(())
}

fn new_password() -> anyhow::Result<String> {
    let mut bytes = [0u8; 15];
    getrandom::fill(&mut bytes).map_err(|error| anyhow::anyhow!("no randomness: {error}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Writes `text` to `path`, readable and writable by the owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
