//! `deputy login` and `deputy logout`: browser sign-in for people at a terminal, so that they need not mint a
//! personal access token and keep it in an environment variable.
//!
//! `login` discovers the server's OAuth endpoints, listens on a loopback port, sends the browser to the
//! authorization endpoint (as the public client `databricks-cli`, with PKCE) and waits for the redirect; it redeems
//! the code and caches the tokens per host (`deputy_sdk::TokenCache`), where every other command finds them when no
//! token or client secret is configured. `logout` forgets a host's tokens and revokes its refresh token. The protocol
//! work is in `deputy_sdk::login`; this module is the terminal's side: messages, the browser, the timeout.

use anyhow::Context;
use clap::Args;
use deputy_sdk::login::{
    self, CachedLogin, DEFAULT_CLIENT_ID, DEFAULT_SCOPES, LoopbackListener, Pkce, ServerMetadata,
    TokenCache,
};
use deputy_sdk::{Credentials, WorkspaceClient};
use std::time::Duration;

#[derive(Args)]
pub struct LoginArgs {
    /// The server to sign in to, e.g. https://deputy.example.com.
    #[arg(long, env = "DATABRICKS_HOST")]
    host: String,
    /// The OAuth client to sign in as: a public client that accepts loopback redirect URIs.
    #[arg(long, default_value = DEFAULT_CLIENT_ID)]
    client_id: String,
    /// The scopes to ask for, space-separated; `offline_access` brings a refresh token.
    #[arg(long, default_value = DEFAULT_SCOPES)]
    scopes: String,
    /// The loopback port the browser is redirected to (0: any free port).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// How long to wait for the sign-in in the browser, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout_seconds: u64,
}

#[derive(Args)]
pub struct LogoutArgs {
    /// The server to sign out of.
    #[arg(long, env = "DATABRICKS_HOST")]
    host: String,
}

pub async fn login(args: LoginArgs) -> anyhow::Result<()> {
    let host = login::normalize_host(&args.host);
    let cache = TokenCache::from_environment()?;
    let http = login::http_client();
    let metadata = ServerMetadata::discover(&http, &host)
        .await
        .with_context(|| format!("cannot sign in to {host}"))?;
    let pkce = Pkce::generate()?;
    let state = login::random_state()?;
    let listener = LoopbackListener::bind(args.port)
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))?;
    let redirect_uri = listener.redirect_uri().to_owned();
    let url = metadata.authorize_url(&args.client_id, &redirect_uri, &args.scopes, &state, &pkce);
    eprintln!(
        "Sign in to {host} in your browser. If it does not open, visit:\n\n    {url}\n\nWaiting for the sign-in ..."
    );
    open_browser(&url);

    let callback = listener
        .wait(
            &state,
            &metadata.issuer,
            Duration::from_secs(args.timeout_seconds),
        )
        .await
        .context("sign-in did not complete")?;
    let tokens = match login::exchange_code(
        &http,
        &metadata.token_endpoint,
        &args.client_id,
        callback.code(),
        &redirect_uri,
        &pkce,
    )
    .await
    {
        Ok(tokens) => tokens,
        Err(error) => {
            callback
                .failed(&format!("Deputy did not accept the sign-in: {error}"))
                .await;
            return Err(error).context("cannot redeem the authorization code");
        }
    };
    let signed_in = CachedLogin::from_response(&tokens, &args.client_id, &args.scopes, None);
    // Cache first: the tokens are good whether or not the user lookup below works.
    if let Err(error) = cache.put(&host, signed_in.clone()).await {
        callback
            .failed(&format!("the tokens could not be saved: {error}"))
            .await;
        return Err(error.into());
    }
    let client = WorkspaceClient::new(&host, Credentials::Token(signed_in.access_token.clone()));
    let user = match client.get("/api/2.0/preview/scim/v2/Me").await {
        Ok(me) => me["userName"]
            .as_str()
            .unwrap_or("an unnamed user")
            .to_owned(),
        Err(error) => {
            eprintln!("warning: signed in, but cannot look up the user: {error}");
            "an unknown user".to_owned()
        }
    };
    callback.signed_in(&user).await;
    if signed_in.refresh_token.is_none() {
        eprintln!(
            "note: no refresh token was issued (ask for the `offline_access` scope), so this sign-in ends when the \
             access token expires"
        );
    }
    eprintln!("Tokens saved in {}", cache.path().display());
    println!("Signed in to {host} as {user}");
    Ok(())
}

pub async fn logout(args: LogoutArgs) -> anyhow::Result<()> {
    let host = login::normalize_host(&args.host);
    let cache = TokenCache::from_environment()?;
    let Some(forgotten) = cache.remove(&host).await? else {
        println!("Not signed in to {host}");
        return Ok(());
    };
    // Best effort: the tokens are gone from this machine either way, and revoking the refresh token ends its whole
    // family at the server, so no copy of it can be used either.
    if let Some(refresh_token) = &forgotten.refresh_token {
        let endpoint = format!("{host}/oidc/v1/revoke");
        if let Err(error) = login::revoke(
            &login::http_client(),
            &endpoint,
            refresh_token,
            "refresh_token",
        )
        .await
        {
            eprintln!("warning: the server did not revoke the refresh token: {error}");
        }
    }
    println!("Signed out of {host}");
    Ok(())
}

/// Starts the browser on `url` without waiting for it: `$BROWSER` (a program that takes the URL as its only
/// argument) if set, else the desktop's opener. The URL is on the terminal too, so failing to start one is only a
/// warning for `$BROWSER` and silent for the opener.
fn open_browser(url: &str) {
    let (program, chosen) = match std::env::var_os("BROWSER").filter(|value| !value.is_empty()) {
        Some(program) => (program, true),
        None if cfg!(target_os = "macos") => ("open".into(), false),
        None => ("xdg-open".into(), false),
    };
    let mut command = tokio::process::Command::new(&program);
    command
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null());
    if !chosen {
        command.stderr(std::process::Stdio::null());
    }
    match command.spawn() {
        Ok(mut child) => {
            // Reaped in the background; the sign-in ends with the redirect, not with the browser.
            tokio::spawn(async move {
                if let Ok(status) = child.wait().await
                    && chosen
                    && !status.success()
                {
                    eprintln!(
                        "warning: $BROWSER ({}) exited with {status}",
                        program.to_string_lossy()
                    );
                }
            });
        }
        Err(error) if chosen => {
            eprintln!(
                "warning: cannot start $BROWSER ({}): {error}",
                program.to_string_lossy()
            );
        }
        Err(_) => {}
    }
}
