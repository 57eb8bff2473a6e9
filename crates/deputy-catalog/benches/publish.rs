//! What a publish costs after one grant, at scale: taking in the change log (read the log and the changed rows,
//! apply them to a copy of the snapshot) against rebuilding the snapshot from every row, as every publish did before.
//!
//! Run with `cargo bench -p deputy-catalog` (SQLite in a temporary directory; with `DEPUTY_TEST_POSTGRES_URL` set, a
//! fresh PostgreSQL database). `DEPUTY_BENCH_SECURABLES` sets the catalog's size (default 100,000: 20 catalogs, 1,000
//! schemas, the rest tables), with 1,000 users. Building the catalog is not timed.

use deputy_authz::SecurableKind;
use deputy_catalog::{apply_delta, new_securable, snapshot_of};
use deputy_store::catalog::{CatalogStore, GrantChange, SecurableId};
use deputy_store::{IdentityKind, MetadataStore, NewIdentity, PrincipalId, SqlStore};
use std::error::Error;
use std::time::{Duration, Instant};

const CATALOGS: usize = 20;
const SCHEMAS_PER_CATALOG: usize = 50;
const USERS: usize = 1_000;
const GRANTS_TIMED: usize = 200;
const REBUILDS_TIMED: usize = 5;

async fn create(
    store: &SqlStore,
    kind: SecurableKind,
    full_name: String,
    parent: Option<SecurableId>,
    owner: PrincipalId,
) -> Result<SecurableId, Box<dyn Error>> {
    let record = store
        .create_securable(new_securable(kind, &full_name, parent, owner), 1)
        .await?;
    Ok(record.id)
}

fn percentile(samples: &mut [Duration], fraction: f64) -> Duration {
    samples.sort();
    let index = ((samples.len() as f64 - 1.0) * fraction).round() as usize;
    samples[index]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn Error>> {
    let securables: usize = std::env::var("DEPUTY_BENCH_SECURABLES")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(100_000);
    let temporary = deputy_store::testing::TemporaryStore::new();
    let store = temporary.open().await?;
    let admins = store
        .create_identity(NewIdentity::named(IdentityKind::Group, "admins"), 1)
        .await?;
    let mut users = Vec::with_capacity(USERS);
    for user in 0..USERS {
        let name = format!("user{user}@example.com");
        users.push(
            store
                .create_identity(NewIdentity::named(IdentityKind::User, &name), 1)
                .await?
                .id,
        );
    }
    let tables_per_schema = securables.saturating_sub(CATALOGS * (1 + SCHEMAS_PER_CATALOG))
        / (CATALOGS * SCHEMAS_PER_CATALOG);
    let built = Instant::now();
    let mut tables = Vec::new();
    for catalog in 0..CATALOGS {
        let catalog_name = format!("c{catalog}");
        let catalog_id = create(
            &store,
            SecurableKind::Catalog,
            catalog_name.clone(),
            None,
            admins.id,
        )
        .await?;
        for schema in 0..SCHEMAS_PER_CATALOG {
            let schema_name = format!("{catalog_name}.s{schema}");
            let schema_id = create(
                &store,
                SecurableKind::Schema,
                schema_name.clone(),
                Some(catalog_id),
                admins.id,
            )
            .await?;
            for table in 0..tables_per_schema {
                let name = format!("{schema_name}.t{table}");
                tables.push(
                    create(
                        &store,
                        SecurableKind::Table,
                        name,
                        Some(schema_id),
                        admins.id,
                    )
                    .await?,
                );
            }
        }
    }
    let rows = store.authorization_rows().await?;
    println!(
        "catalog: {} securables, {} principals on {} (built in {:.0?}, not timed)",
        rows.securables.len(),
        rows.identities.len(),
        if temporary.url().starts_with("postgres") {
            "PostgreSQL"
        } else {
            "SQLite"
        },
        built.elapsed(),
    );

    let mut rebuilds = Vec::with_capacity(REBUILDS_TIMED);
    let (mut snapshot, mut position) = snapshot_of(&rows)?;
    for _ in 0..REBUILDS_TIMED {
        let started = Instant::now();
        let rebuilt = snapshot_of(&store.authorization_rows().await?)?;
        rebuilds.push(started.elapsed());
        (snapshot, position) = rebuilt;
    }

    let mut taken_in = Vec::with_capacity(GRANTS_TIMED);
    for grant in 0..GRANTS_TIMED {
        let table = tables[(grant * 7_919) % tables.len()];
        let change = GrantChange {
            principal_id: users[grant % users.len()],
            add: vec!["SELECT".into()],
            remove: vec![],
        };
        store.change_grants(table, &[change]).await?;
        let started = Instant::now();
        let delta = store
            .authorization_changes(position.through(), 5_000)
            .await?
            .ok_or("the log reaches back to the last position")?;
        let mut next = snapshot.clone();
        apply_delta(&mut next, &mut position, &delta)?;
        taken_in.push(started.elapsed());
        snapshot = next;
    }
    let after_grants = snapshot_of(&store.authorization_rows().await?)?.0;
    assert_eq!(snapshot.securable_count(), after_grants.securable_count());

    println!("publish after one grant                  | n   | p50        | p99");
    println!(
        "rebuild from every row (before)          | {:<3} | {:>10.2?} | {:>10.2?}",
        rebuilds.len(),
        percentile(&mut rebuilds, 0.5),
        percentile(&mut rebuilds, 0.99)
    );
    println!(
        "take in the change log (now)             | {:<3} | {:>10.2?} | {:>10.2?}",
        taken_in.len(),
        percentile(&mut taken_in, 0.5),
        percentile(&mut taken_in, 0.99)
    );
    Ok(())
}
