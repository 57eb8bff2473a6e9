//! The sign-in administration commands against a real `deputy serve`: OAuth apps (create, list, get, delete; the
//! client secret shown once), the bootstrap admin's local password read from standard input, and identity
//! providers (an unreachable issuer is refused; a loopback one serving a discovery document is added and removed).

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod support;

use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpListener;
use support::{Cli, Server};

fn start() -> (tempfile::TempDir, Server, Cli) {
    let (data_dir, server) = Server::start_in_temp_dir();
    let cli = Cli::as_admin(&server, data_dir.path());
    (data_dir, server, cli)
}

/// The value after `label` on the line that starts with it.
fn field(output: &str, label: &str) -> String {
    output
        .lines()
        .find_map(|line| line.strip_prefix(label))
        .unwrap_or_else(|| panic!("no `{label}` line in:\n{output}"))
        .trim()
        .to_owned()
}

#[test]
fn oauth_apps_end_to_end() {
    let (_data_dir, server, cli) = start();
    // Apps the server registers itself (such as the Databricks CLI's) are listed too.
    let before = cli.json(&["oauth-apps", "list"])["apps"]
        .as_array()
        .unwrap()
        .len();

    let created = cli.ok(&[
        "oauth-apps",
        "create",
        "--name",
        "Notebook app",
        "--redirect-url",
        "http://127.0.0.1:8765/callback",
        "--redirect-url",
        "https://app.example.com/cb",
        "--scopes",
        "iam.scim sql.warehouses",
    ]);
    assert!(
        created.starts_with("created OAuth app Notebook app\n"),
        "{created}"
    );
    let client_id = field(&created, "client id:");
    let secret = field(&created, "client secret:");
    assert!(!client_id.is_empty() && !secret.is_empty(), "{created}");
    assert!(created.contains("shown only once"), "{created}");

    // A public client gets no secret.
    let public = cli.json(&[
        "oauth-apps",
        "create",
        "--name",
        "cli",
        "--redirect-url",
        "http://localhost/cb",
        "--public",
    ]);
    let public_id = public["client_id"].as_str().unwrap().to_owned();
    assert!(public.get("client_secret").is_none(), "{public}");
    assert_eq!(public["integration_id"], public_id);

    // Listed and shown, never with the secret.
    let list = cli.ok(&["oauth-apps", "list"]);
    assert!(list.starts_with("CLIENT ID"), "{list}");
    assert!(
        list.contains(&client_id) && list.contains(&public_id),
        "{list}"
    );
    assert!(!list.contains(&secret), "{list}");
    let row = list.lines().find(|line| line.contains(&client_id)).unwrap();
    assert!(
        row.contains("confidential") && row.contains("iam.scim sql.warehouses"),
        "{row}"
    );
    let listed = cli.json(&["oauth-apps", "list"]);
    let apps = listed["apps"].as_array().unwrap();
    assert_eq!(apps.len(), before + 2, "{listed}");
    assert!(
        apps.iter().all(|app| app.get("client_secret").is_none()),
        "{listed}"
    );
    assert!(!listed.to_string().contains(&secret), "{listed}");

    let shown = cli.json(&["oauth-apps", "get", &client_id]);
    assert_eq!(shown["name"], "Notebook app");
    assert_eq!(shown["confidential"], true);
    assert_eq!(shown["scopes"], json!(["iam.scim", "sql.warehouses"]));
    assert_eq!(
        shown["redirect_urls"],
        json!([
            "http://127.0.0.1:8765/callback",
            "https://app.example.com/cb"
        ])
    );
    assert!(shown.get("client_secret").is_none(), "{shown}");
    let shown_text = cli.ok(&["oauth-apps", "get", &client_id]);
    assert_eq!(field(&shown_text, "client id:"), client_id);
    assert_eq!(field(&shown_text, "name:"), "Notebook app");
    assert_eq!(field(&shown_text, "type:"), "confidential");
    assert_eq!(field(&shown_text, "scopes:"), "iam.scim sql.warehouses");
    assert!(!shown_text.contains(&secret), "{shown_text}");
    let shown_text = cli.ok(&["oauth-apps", "get", &public_id]);
    assert_eq!(field(&shown_text, "type:"), "public");

    // Bad input is refused with the server's reason.
    let refused = cli.fails(&[
        "oauth-apps",
        "create",
        "--name",
        "web",
        "--redirect-url",
        "http://app.example.com/cb",
    ]);
    assert!(
        refused.contains("could not create OAuth app `web`") && refused.contains("redirect URL"),
        "{refused}"
    );
    let refused = cli.fails(&[
        "oauth-apps",
        "create",
        "--name",
        "web",
        "--redirect-url",
        "https://app.example.com/cb",
        "--scopes",
        "no.such-scope",
    ]);
    assert!(refused.contains("no.such-scope"), "{refused}");

    assert_eq!(
        cli.ok(&["oauth-apps", "delete", &client_id]),
        format!("deleted OAuth app {client_id}\n")
    );
    let listed = cli.json(&["oauth-apps", "list"]);
    let ids: Vec<&str> = listed["apps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|app| app["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), before + 1, "{listed}");
    assert!(ids.contains(&public_id.as_str()) && !ids.contains(&client_id.as_str()));
    cli.fails(&["oauth-apps", "get", &client_id]);

    assert!(server.stop().success());
}

#[test]
fn local_password_comes_from_stdin() {
    let (_data_dir, server, cli) = start();
    let set = ["local-password", "set"];

    let error = cli.fails_with(&set, "short\n", &[]);
    assert!(error.contains("at least 12 characters"), "{error}");
    let error = cli.fails_with(&set, "", &[]);
    assert!(error.contains("no password"), "{error}");
    let error = cli.fails_with(&set, "\nsecond line\n", &[]);
    assert!(error.contains("no password"), "{error}");

    assert_eq!(
        cli.ok_with(&set, "correct horse battery staple\n", &[]),
        "set your local password\n"
    );
    // An admin sets other users' passwords too.
    cli.ok(&["users", "create", "bob@example.com"]);
    assert_eq!(
        cli.ok_with(
            &["local-password", "set", "--user", "bob@example.com"],
            "another horse battery staple\n",
            &[]
        ),
        "set the local password of user bob@example.com\n"
    );
    let error = cli.fails_with(
        &["local-password", "set", "--user", "nobody@example.com"],
        "another horse battery staple\n",
        &[],
    );
    assert!(error.contains("does not exist"), "{error}");

    // Anyone else is refused, even with a long password.
    let bob_token = cli.json(&["tokens", "create", "--for", "bob@example.com"])["token_value"]
        .as_str()
        .unwrap()
        .to_owned();
    let bob = Cli {
        host: cli.host.clone(),
        token: bob_token,
    };
    let error = bob.fails_with(&set, "correct horse battery staple\n", &[]);
    assert!(
        error.contains("could not set the local password"),
        "{error}"
    );

    assert!(server.stop().success());
}

/// Serves an OpenID Connect discovery document for `http://127.0.0.1:<port>` until the test process ends.
fn serve_discovery() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let document = json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/keys"),
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
    })
    .to_string();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut request = Vec::new();
            let mut buffer = [0u8; 1024];
            while !request.windows(4).any(|window| window == b"\r\n\r\n") {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(read) => request.extend_from_slice(&buffer[..read]),
                }
            }
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{document}",
                document.len()
            );
        }
    });
    issuer
}

#[test]
fn identity_providers_end_to_end() {
    let (_data_dir, server, cli) = start();

    // Nothing listens on port 9: the provider is refused and nothing is stored.
    let error = cli.fails_with(
        &[
            "idp",
            "add",
            "--issuer",
            "http://127.0.0.1:9",
            "--client-id",
            "deputy",
        ],
        "",
        &[("DEPUTY_IDP_CLIENT_SECRET", "s3cret-from-env")],
    );
    assert!(
        error.contains("could not add identity provider `http://127.0.0.1:9`")
            && error.contains("127.0.0.1:9/.well-known/openid-configuration"),
        "{error}"
    );
    assert!(!error.contains("s3cret-from-env"), "{error}");
    let listed = cli.json(&["idp", "list"]);
    assert_eq!(listed["identity_providers"], json!([]), "{listed}");
    let redirect_uri = listed["redirect_uri"].as_str().unwrap().to_owned();
    assert!(
        redirect_uri.starts_with(&cli.host) && redirect_uri.ends_with("/oidc/v1/callback"),
        "{redirect_uri}"
    );

    // Without a secret on the command line or in the environment, clap refuses.
    let error = cli.fails(&[
        "idp",
        "add",
        "--issuer",
        "http://127.0.0.1:9",
        "--client-id",
        "x",
    ]);
    assert!(error.contains("--client-secret"), "{error}");

    // A provider whose discovery document answers is added, with the redirect URI to register at it.
    let issuer = serve_discovery();
    let added = cli.ok_with(
        &[
            "idp",
            "add",
            "--issuer",
            &issuer,
            "--client-id",
            "deputy-at-idp",
            "--groups-claim",
            "groups",
            "--allowed-domain",
            "Example.com",
            "--allowed-domain",
            "@corp.example",
        ],
        "",
        &[("DEPUTY_IDP_CLIENT_SECRET", "s3cret-from-env")],
    );
    assert_eq!(
        added,
        format!(
            "added identity provider {issuer} (client id deputy-at-idp)\n\
             register this redirect URI at the provider: {redirect_uri}\n"
        )
    );

    let list = cli.ok(&["idp", "list"]);
    assert!(list.starts_with("ISSUER"), "{list}");
    let row = list.lines().find(|line| line.starts_with(&issuer)).unwrap();
    assert_eq!(
        row.split_whitespace().collect::<Vec<_>>(),
        [
            issuer.as_str(),
            "deputy-at-idp",
            "email",
            "groups",
            "example.com",
            "corp.example"
        ]
    );
    assert!(list.contains(&redirect_uri), "{list}");
    let listed = cli.json(&["idp", "list"]);
    assert_eq!(listed["identity_providers"][0]["issuer"], issuer.as_str());
    assert_eq!(
        listed["identity_providers"][0]["allowed_domains"],
        json!(["example.com", "corp.example"])
    );
    assert!(!listed.to_string().contains("s3cret-from-env"), "{listed}");

    assert_eq!(
        cli.ok(&["idp", "remove", "--issuer", &issuer]),
        format!("removed identity provider {issuer}\n")
    );
    assert_eq!(cli.json(&["idp", "list"])["identity_providers"], json!([]));

    assert!(server.stop().success());
}
