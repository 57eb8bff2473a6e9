//! What only PostgreSQL needs: the database made on first start, as SQLite makes its file, and the announcements of
//! what other replicas changed.

use crate::StoreResult;
use crate::changes::{CHANNEL, Change};
use sqlx::postgres::{PgConnectOptions, PgListener};
use sqlx::{ConnectOptions, Connection, Row};
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// How long to wait before listening again after the listening connection failed.
const RELISTEN_DELAY: Duration = Duration::from_secs(1);

/// The database that holds the server's maintenance connection, present in every cluster.
const MAINTENANCE_DATABASE: &str = "postgres";

/// Creates the database a `postgres://` URL names when it does not exist. Two replicas starting at once may both try:
/// the one that loses the race finds the database made, which is what it wanted.
pub(crate) async fn create_database_if_missing(url: &str) -> StoreResult<()> {
    let options = PgConnectOptions::from_str(url)?;
    let Some(database) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut connection = options
        .clone()
        .database(MAINTENANCE_DATABASE)
        .connect()
        .await?;
    let exists = sqlx::query("SELECT 1 AS present FROM pg_database WHERE datname = $1")
        .bind(&database)
        .fetch_optional(&mut connection)
        .await?
        .map(|row| row.try_get::<i32, _>("present"))
        .transpose()?
        .is_some();
    if !exists {
        let create = format!("CREATE DATABASE \"{}\"", database.replace('"', "\"\""));
        match sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&mut connection)
            .await
        {
            Ok(_) => {}
            // 42P04: made meanwhile by another replica; 23505: the same race seen by the catalog's unique index.
            Err(sqlx::Error::Database(error))
                if matches!(error.code().as_deref(), Some("42P04" | "23505")) => {}
            Err(error) => return Err(error.into()),
        }
    }
    connection.close().await?;
    Ok(())
}

/// A database URL fit for an error message or a log line: any password replaced.
pub(crate) fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        Ok(parsed) => parsed.to_string(),
        Err(_) => "an unparseable URL".into(),
    }
}

/// Listens for the triggers' announcements. The first change is `Everything`: what committed before the listening
/// began is covered by it. When the listening connection fails, announcements made until it listens again are lost,
/// so a new connection starts with `Everything` too. The listening ends when the receiver is dropped.
pub(crate) async fn follow_changes(url: &str) -> StoreResult<UnboundedReceiver<Change>> {
    let listener = listen(url).await?;
    let (changes, receiver) = tokio::sync::mpsc::unbounded_channel();
    let _ = changes.send(Change::Everything);
    tokio::spawn(relay_changes(url.to_owned(), listener, changes));
    Ok(receiver)
}

async fn listen(url: &str) -> StoreResult<PgListener> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

async fn relay_changes(url: String, mut listener: PgListener, changes: UnboundedSender<Change>) {
    loop {
        let change = match listener.try_recv().await {
            // A payload this version does not know (a newer replica's): reload everything rather than nothing.
            Ok(Some(announcement)) => announcement.payload().parse().unwrap_or(Change::Everything),
            Ok(None) | Err(_) => {
                listener = loop {
                    if changes.is_closed() {
                        return;
                    }
                    tokio::time::sleep(RELISTEN_DELAY).await;
                    if let Ok(listener) = listen(&url).await {
                        break listener;
                    }
                };
                Change::Everything
            }
        };
        if changes.send(change).is_err() {
            return;
        }
    }
}
