//! Agent commands: deploy an agent behind a serving endpoint, the on-behalf-of switch, the audit log (tail, export,
//! retention), and the built-in models' files.

use crate::Connection;
use crate::client_commands::{client, print, table, text, urlencode};
use anyhow::Context;
use clap::Subcommand;
use serde_json::{Value, json};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum AgentsCommand {
    /// Deploy an agent behind a serving endpoint (created, or replaced if it already serves an agent): an MLflow model
    /// directory (its MLmodel `auth_policy` declares the agent's access), a models-from-code Python file, an
    /// executable built on the Rust SDK, or a declarative agent (a `.yaml` file naming a model, instructions and
    /// tools, which declares its own `user_scopes`). The path must be readable by the server.
    Deploy {
        path: PathBuf,
        #[arg(long)]
        name: String,
        /// A user API scope the agent may use on behalf of its callers (repeatable), when no MLmodel declares them.
        #[arg(long = "user-scope")]
        user_scopes: Vec<String>,
        /// `TYPE:NAME` of a resource the agent's own service principal needs (repeatable), with TYPE one of MLflow's
        /// resource keys: serving_endpoint, vector_search_index, sql_warehouse, function, table, uc_connection,
        /// genie_space.
        #[arg(long = "system-resource")]
        system_resources: Vec<String>,
        /// Worker processes (each handles one request at a time).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Consent to an agent acting on your behalf with the scopes it declares (needed when the workspace setting
    /// `consent-required` is on); `--withdraw` takes the consent back.
    Consent {
        name: String,
        #[arg(long)]
        withdraw: bool,
    },
    /// List the agents you consented to, with the scopes of each consent.
    Consents,
}

#[derive(Subcommand)]
pub enum SettingsCommand {
    /// Show the workspace settings.
    Show,
    /// Change a setting: `obo-enabled true|false` turns on-behalf-of-user access on or off for every agent;
    /// `consent-required true|false` makes each user consent to an agent's scopes before it may act for them.
    Set { key: String, value: String },
}

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Print audit events, oldest first; `--follow` keeps printing new ones.
    Tail {
        /// Start after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long)]
        follow: bool,
    },
    /// Write audit events as JSON lines, oldest first, one event per line in the shape the API answers (admins export
    /// everyone's events, anyone else their own). Pages through the log, so it never holds more than one page.
    Export {
        /// Only events at or after this time: RFC 3339 (`2025-01-31T00:00:00Z`) or milliseconds since the epoch.
        #[arg(long)]
        since: Option<String>,
        /// Only events before this time: RFC 3339 or milliseconds since the epoch.
        #[arg(long)]
        until: Option<String>,
        /// Only the events of this user (the end user an agent acted for).
        #[arg(long)]
        user: Option<String>,
        /// Write to this file (replaced if it exists) instead of standard output.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Events per request (at most 1000).
        #[arg(
            long,
            default_value_t = 1000,
            value_parser = clap::value_parser!(u32).range(1..=1000)
        )]
        page_size: u32,
    },
    /// How long audit events are kept before the server deletes them (admins).
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
    },
}

#[derive(Subcommand)]
pub enum RetentionCommand {
    /// Show the retention period.
    Get,
    /// Keep audit events `--days N` (1 to 36500), deleting older ones, or `--forever`.
    Set {
        /// Delete events older than this many days.
        #[arg(long, required_unless_present = "forever", conflicts_with = "forever")]
        days: Option<u32>,
        /// Keep events forever (the default).
        #[arg(long)]
        forever: bool,
    },
}

pub async fn agents(command: AgentsCommand, connection: &Connection) -> anyhow::Result<()> {
    let client = client(connection)?;
    match command {
        AgentsCommand::Deploy {
            path,
            name,
            user_scopes,
            system_resources,
            workers,
        } => {
            let path = std::fs::canonicalize(&path)
                .with_context(|| format!("cannot find `{}`", path.display()))?;
            let body = json!({
                "name": name,
                "source_path": path,
                "user_scopes": user_scopes,
                "system_resources": system_resources,
                "workers": workers,
            });
            let endpoint = client.post("/api/2.0/deputy/agents", &body).await?;
            print(connection, &endpoint, |endpoint| {
                let agent = &endpoint["config"]["served_entities"][0]["deputy_agent"];
                let list = |value: &Value| {
                    value
                        .as_array()
                        .map(|items| items.iter().map(text).collect::<Vec<_>>().join(" "))
                        .unwrap_or_default()
                };
                format!(
                    "deployed `{}` (id {}), running as service principal {}\nuser API scopes: {}\nsystem resources: {}",
                    text(&endpoint["name"]),
                    text(&endpoint["id"]),
                    text(&agent["service_principal"]),
                    list(&agent["user_api_scopes"]),
                    list(&agent["system_resources"]),
                )
            });
        }
        AgentsCommand::Consent { name, withdraw } => {
            if withdraw {
                client
                    .delete(&format!("/api/2.0/deputy/consents/{name}"))
                    .await?;
                println!("withdrew your consent to `{name}`");
            } else {
                let consent = client
                    .post(
                        "/api/2.0/deputy/consents",
                        &json!({ "endpoint_name": name }),
                    )
                    .await?;
                print(connection, &consent, render_consent);
            }
        }
        AgentsCommand::Consents => {
            let consents = client.get("/api/2.0/deputy/consents").await?;
            print(connection, &consents, |consents| {
                consents["consents"]
                    .as_array()
                    .map(|list| {
                        list.iter()
                            .map(render_consent)
                            .collect::<Vec<_>>()
                            .join("\n")
                    })
                    .unwrap_or_default()
            });
        }
    }
    Ok(())
}

fn render_consent(consent: &Value) -> String {
    let scopes: Vec<String> = consent["scopes"]
        .as_array()
        .map(|scopes| scopes.iter().map(text).collect())
        .unwrap_or_default();
    format!(
        "`{}` may act for you with: {}",
        text(&consent["endpoint_name"]),
        scopes.join(" ")
    )
}

pub async fn settings(command: SettingsCommand, connection: &Connection) -> anyhow::Result<()> {
    let client = client(connection)?;
    let settings = match command {
        SettingsCommand::Show => client.get("/api/2.0/deputy/settings").await?,
        SettingsCommand::Set { key, value } => {
            let value: bool = match value.as_str() {
                "true" | "on" => true,
                "false" | "off" => false,
                other => anyhow::bail!("`{key}` takes true or false, not `{other}`"),
            };
            let mut change = serde_json::Map::new();
            change.insert(key, Value::Bool(value));
            client
                .patch("/api/2.0/deputy/settings", &Value::Object(change))
                .await?
        }
    };
    print(connection, &settings, |settings| {
        let rows = settings
            .as_object()
            .map(|map| {
                map.iter()
                    .map(|(key, value)| vec![key.clone(), text(value)])
                    .collect()
            })
            .unwrap_or_default();
        table(&["SETTING", "VALUE"], rows)
    });
    Ok(())
}

pub async fn audit(command: AuditCommand, connection: &Connection) -> anyhow::Result<()> {
    match command {
        AuditCommand::Tail { after, follow } => tail(after, follow, connection).await,
        AuditCommand::Export {
            since,
            until,
            user,
            file,
            page_size,
        } => {
            let query = ExportQuery {
                since_ms: since.as_deref().map(epoch_millis).transpose()?,
                until_ms: until.as_deref().map(epoch_millis).transpose()?,
                user,
                page_size,
            };
            match file {
                Some(path) => {
                    let created = std::fs::File::create(&path)
                        .with_context(|| format!("cannot create `{}`", path.display()))?;
                    let mut out = std::io::BufWriter::new(created);
                    export(&query, connection, &mut out).await?;
                    out.into_inner()
                        .map_err(|error| error.into_error())
                        .and_then(|file| file.sync_all())
                        .with_context(|| format!("cannot write `{}`", path.display()))
                }
                None => {
                    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
                    export(&query, connection, &mut out).await?;
                    Ok(std::io::Write::flush(&mut out)?)
                }
            }
        }
        AuditCommand::Retention { command } => retention(command, connection).await,
    }
}

async fn tail(mut after: i64, follow: bool, connection: &Connection) -> anyhow::Result<()> {
    let client = client(connection)?;
    loop {
        let page = client
            .get(&format!("/api/2.0/deputy/audit?after={after}&limit=500"))
            .await?;
        let events = page["events"].as_array().cloned().unwrap_or_default();
        for event in &events {
            println!("{}", audit_line(connection, event));
        }
        if let Some(last) = page["last_seq"].as_i64() {
            after = last;
        }
        if events.is_empty() {
            if !follow {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    }
}

/// What `deputy audit export` asks for.
struct ExportQuery {
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    user: Option<String>,
    page_size: u32,
}

/// Writes the matching events to `out`, one JSON line each, page by page in `seq` order: each page starts after the
/// last `seq` of the one before, so no event is skipped or written twice. It ends at the first empty page (a page
/// shorter than asked for does not prove the end: the server may answer fewer than the limit).
async fn export(
    query: &ExportQuery,
    connection: &Connection,
    out: &mut impl std::io::Write,
) -> anyhow::Result<()> {
    let client = client(connection)?;
    let mut filters = String::new();
    if let Some(since) = query.since_ms {
        filters.push_str(&format!("&since_ms={since}"));
    }
    if let Some(until) = query.until_ms {
        filters.push_str(&format!("&until_ms={until}"));
    }
    if let Some(user) = &query.user {
        filters.push_str(&format!("&user_name={}", urlencode(user)));
    }
    let mut after = 0;
    loop {
        let path = format!(
            "/api/2.0/deputy/audit?after={after}&limit={}{filters}",
            query.page_size
        );
        let page = client.get(&path).await?;
        let events = page["events"]
            .as_array()
            .context("the server's answer has no `events`")?;
        if events.is_empty() {
            return Ok(());
        }
        for event in events {
            writeln!(out, "{event}")?;
        }
        let last = page["last_seq"]
            .as_i64()
            .context("the server's answer has no `last_seq`")?;
        anyhow::ensure!(
            last > after,
            "the server answered events at or before `seq` {after}, which it was asked to start after"
        );
        after = last;
    }
}

/// A time given as milliseconds since the epoch, or as RFC 3339.
fn epoch_millis(text: &str) -> anyhow::Result<i64> {
    if let Ok(millis) = text.parse::<i64>() {
        return Ok(millis);
    }
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    let instant = time::OffsetDateTime::parse(text, rfc3339).with_context(|| {
        format!(
            "`{text}` is neither RFC 3339 (`2025-01-31T00:00:00Z`) nor milliseconds since the epoch"
        )
    })?;
    i64::try_from(instant.unix_timestamp_nanos().div_euclid(1_000_000))
        .with_context(|| format!("`{text}` is out of range"))
}

async fn retention(command: RetentionCommand, connection: &Connection) -> anyhow::Result<()> {
    let client = client(connection)?;
    const PATH: &str = "/api/2.0/deputy/audit/retention";
    let retention = match command {
        RetentionCommand::Get => client.get(PATH).await?,
        RetentionCommand::Set { days, forever } => {
            let days = if forever { None } else { days };
            client.put(PATH, &json!({ "retention_days": days })).await?
        }
    };
    print(
        connection,
        &retention,
        |retention| match retention["retention_days"].as_u64() {
            Some(1) => "audit events are kept for 1 day\n".to_owned(),
            Some(days) => format!("audit events are kept for {days} days\n"),
            None => "audit events are kept forever\n".to_owned(),
        },
    );
    Ok(())
}

fn audit_line(connection: &Connection, event: &Value) -> String {
    if connection.output == crate::Output::Json {
        return event.to_string();
    }
    let actors = event["actors"]
        .as_array()
        .map(|actors| actors.iter().map(text).collect::<Vec<_>>().join(" <- "))
        .unwrap_or_default();
    let who = match actors.is_empty() {
        true => text(&event["user_name"]),
        false => format!("{actors} for {}", text(&event["user_name"])),
    };
    format!(
        "{} {} {} {} {} [{}] {}",
        text(&event["seq"]),
        if event["allowed"] == Value::Bool(true) {
            "ALLOW"
        } else {
            "DENY "
        },
        who,
        text(&event["api"]),
        text(&event["securable"]),
        text(&event["scope"]),
        text(&event["reason"]),
    )
}

/// Downloads (once) and verifies the built-in models' files.
pub async fn install_models(dir: Option<PathBuf>) -> anyhow::Result<()> {
    let dir = dir.unwrap_or_else(deputy_models::default_models_dir);
    let shown = dir.display().to_string();
    let installed = tokio::task::spawn_blocking(move || deputy_models::install_models(&dir))
        .await?
        .with_context(|| format!("installing the built-in models into {shown}"))?;
    println!(
        "embedding model: {}\nchat model: {}",
        installed.embedding.weights.display(),
        installed.chat.gguf.display()
    );
    Ok(())
}
