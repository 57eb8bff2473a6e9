//! The cost of row filters and column masks: the same queries over a 10M-row Parquet table, run side by side in one
//! process, by the table's owner on a table without policies and by a restricted user on the same data under a row
//! filter and a column mask. `cargo bench -p deputy-sql --bench policies`; `DEPUTY_BENCH_ROWS` changes the row count.
//!
//! The tables hold the same Parquet file. The restricted user `reader` is in `readers`, for whom the email mask shows
//! the clear value and the row filter keeps every row, so every side returns identical results (checked before
//! timing) and the difference is the policy machinery alone. Two row filters are measured:
//! - `entitled`: `is_account_group_member('readers') OR region = 'EU'`, which folds to `true` for a reader, as a
//!   filter granting a whole group everything does;
//! - `per-row`: `region IN ('EU', 'US', 'APAC', 'LATAM') AND is_account_group_member('readers')`, which must read
//!   and test the region of every row.
//!
//! A second table puts the reader's queries on the per-row table side by side written inline and through table
//! functions the owner defined (`SELECT ... FROM bench.s.guarded_rows()`, whose body is the plain scan, or a function
//! whose body is the whole query), which run with the owner's rights and the reader's policies: the difference is
//! what calling a function that reads a table costs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Int32Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::file::properties::WriterProperties;
use deputy_authz::{AuthzState, PrincipalId};
use deputy_core::ScopeSet;
use deputy_sql::{CancellationToken, Session, SqlEngine, StatementResult, apply_catalog_changes};
use deputy_store::catalog::CatalogStore;
use deputy_store::{IdentityKind, MetadataStore, NewIdentity, SqlStore, Store};

type BenchResult<T> = Result<T, Box<dyn std::error::Error>>;

const QUERIES: &[(&str, &str)] = &[
    (
        "full scan aggregate",
        "SELECT count(*), sum(amount), avg(amount) FROM {t}",
    ),
    (
        "selective filter",
        "SELECT count(*), sum(amount) FROM {t} WHERE id BETWEEN 4000000 AND 4100000",
    ),
    (
        "group by",
        "SELECT region, count(*), sum(amount) FROM {t} GROUP BY region ORDER BY region",
    ),
    (
        "join",
        "SELECT r.manager, count(*), sum(t.amount) FROM {t} t JOIN regions r ON t.region = r.region \
         GROUP BY r.manager ORDER BY r.manager",
    ),
    (
        "top-k",
        "SELECT id, amount, email FROM {t} ORDER BY amount DESC, id DESC LIMIT 10",
    ),
];
/// The reader's queries on `guarded`: (name, inline, through a table function). Each pair answers alike.
const FUNCTION_QUERIES: &[(&str, &str, &str)] = &[
    (
        "full scan aggregate",
        "SELECT count(*), sum(amount), avg(amount) FROM guarded",
        "SELECT count(*), sum(amount), avg(amount) FROM bench.s.guarded_rows()",
    ),
    (
        "range by arguments",
        "SELECT count(*), sum(amount) FROM guarded WHERE id BETWEEN 4000000 AND 4100000",
        "SELECT count(*), sum(amount) FROM bench.s.guarded_range(4000000, 4100000)",
    ),
    (
        "group by in the body",
        "SELECT region, count(*), sum(amount) FROM guarded GROUP BY region ORDER BY region",
        "SELECT * FROM bench.s.region_totals() ORDER BY region",
    ),
    (
        "join",
        "SELECT r.manager, count(*), sum(t.amount) FROM guarded t JOIN regions r ON t.region = r.region \
         GROUP BY r.manager ORDER BY r.manager",
        "SELECT r.manager, count(*), sum(t.amount) FROM bench.s.guarded_rows() t \
         JOIN regions r ON t.region = r.region GROUP BY r.manager ORDER BY r.manager",
    ),
    (
        "top-k",
        "SELECT id, amount, email FROM guarded ORDER BY amount DESC, id DESC LIMIT 10",
        "SELECT id, amount, email FROM bench.s.guarded_rows() ORDER BY amount DESC, id DESC LIMIT 10",
    ),
];
const RUNS: usize = 7;

fn main() -> BenchResult<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(bench())
}

fn identity(kind: IdentityKind, name: &str) -> NewIdentity {
    NewIdentity {
        kind,
        name: name.to_owned(),
        display_name: name.to_owned(),
        given_name: None,
        family_name: None,
        external_id: None,
        active: true,
    }
}

async fn bench() -> BenchResult<()> {
    let rows: usize = std::env::var("DEPUTY_BENCH_ROWS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(10_000_000);
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqlStore::open_sqlite(&dir.path().join("meta.db")).await?);
    let admin = store
        .create_identity(identity(IdentityKind::User, "admin"), 0)
        .await?;
    let admins = store
        .create_identity(identity(IdentityKind::Group, "admins"), 0)
        .await?;
    store.add_group_member(admins.id, admin.id).await?;
    let reader = store
        .create_identity(identity(IdentityKind::User, "reader"), 0)
        .await?;
    let readers = store
        .create_identity(identity(IdentityKind::Group, "readers"), 0)
        .await?;
    store.add_group_member(readers.id, reader.id).await?;
    let admin_id = PrincipalId(u64::try_from(admin.id.0)?);
    let reader_id = PrincipalId(u64::try_from(reader.id.0)?);
    let authz = AuthzState::new(deputy_catalog::load_snapshot(&*store as &dyn Store).await?);
    let engine = SqlEngine::new(
        dir.path().join("data"),
        Arc::clone(&store) as Arc<dyn Store>,
    )?;
    let session = |principal: PrincipalId, user: &str, groups: &[&str]| Session {
        principal,
        user_name: user.to_owned(),
        groups: groups.iter().map(|group| group.to_string()).collect(),
        scopes: ScopeSet::all(),
        snapshot: authz.snapshot(),
        default_catalog: Some("bench".to_owned()),
        default_schema: Some("s".to_owned()),
    };
    for sql in [
        "CREATE CATALOG bench",
        "CREATE SCHEMA bench.s",
        "CREATE TABLE bench.s.plain (id BIGINT, region STRING, email STRING, amount INT)",
        "CREATE TABLE bench.s.guarded (id BIGINT, region STRING, email STRING, amount INT)",
        "CREATE TABLE bench.s.entitled (id BIGINT, region STRING, email STRING, amount INT)",
        "CREATE TABLE bench.s.regions (region STRING, manager STRING)",
        "INSERT INTO bench.s.regions VALUES ('EU', 'ann'), ('US', 'ben'), ('APAC', 'cid'), ('LATAM', 'ann')",
        "CREATE FUNCTION bench.s.keep(r STRING) RETURNS BOOLEAN \
         RETURN r IN ('EU', 'US', 'APAC', 'LATAM') AND is_account_group_member('readers')",
        "CREATE FUNCTION bench.s.entitle(r STRING) RETURNS BOOLEAN \
         RETURN is_account_group_member('readers') OR r = 'EU'",
        "CREATE FUNCTION bench.s.hide(e STRING) RETURNS STRING \
         RETURN CASE WHEN is_account_group_member('readers') THEN e ELSE '***' END",
        "ALTER TABLE bench.s.guarded SET ROW FILTER bench.s.keep ON (region)",
        "ALTER TABLE bench.s.guarded ALTER COLUMN email SET MASK bench.s.hide",
        "ALTER TABLE bench.s.entitled SET ROW FILTER bench.s.entitle ON (region)",
        "ALTER TABLE bench.s.entitled ALTER COLUMN email SET MASK bench.s.hide",
        "GRANT USE CATALOG ON CATALOG bench TO readers",
        "GRANT USE SCHEMA, SELECT ON SCHEMA bench.s TO readers",
        "CREATE FUNCTION bench.s.guarded_rows() \
         RETURNS TABLE (id BIGINT, region STRING, email STRING, amount INT) \
         RETURN SELECT id, region, email, amount FROM bench.s.guarded",
        "CREATE FUNCTION bench.s.guarded_range(lo BIGINT, hi BIGINT) RETURNS TABLE (id BIGINT, amount INT) \
         RETURN SELECT id, amount FROM bench.s.guarded WHERE id BETWEEN lo AND hi",
        "CREATE FUNCTION bench.s.region_totals() RETURNS TABLE (region STRING, n BIGINT, total BIGINT) \
         RETURN SELECT region, count(*), sum(amount) FROM bench.s.guarded GROUP BY region",
        "GRANT EXECUTE ON FUNCTION bench.s.guarded_rows TO readers",
        "GRANT EXECUTE ON FUNCTION bench.s.guarded_range TO readers",
        "GRANT EXECUTE ON FUNCTION bench.s.region_totals TO readers",
    ] {
        // A session per statement: each must see the snapshot with the previous statements' changes.
        let result = engine
            .execute(
                &session(admin_id, "admin", &["admins"]),
                sql,
                &[],
                CancellationToken::new(),
            )
            .await?;
        authz.update(|snapshot| apply_catalog_changes(snapshot, &result.changes))?;
    }

    let started = Instant::now();
    let mut files = Vec::new();
    for table in ["plain", "guarded", "entitled"] {
        let record = store
            .find_securable("relation", &format!("bench.s.{table}"))
            .await?
            .ok_or("table not created")?;
        files.push(
            dir.path()
                .join("data")
                .join("tables")
                .join(record.id.0.to_string())
                .join("part-0.parquet"),
        );
    }
    let [plain_file, guarded_file, entitled_file] = files.as_slice() else {
        return Err("three tables expected".into());
    };
    generate(plain_file, rows)?;
    std::fs::copy(plain_file, guarded_file)?;
    std::fs::copy(plain_file, entitled_file)?;
    println!(
        "generated {rows} rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let owner = session(admin_id, "admin", &["admins"]);
    let reader = session(reader_id, "reader", &["readers"]);
    println!(
        "{:<22} {:>10} {:>12} {:>9} {:>12} {:>9}",
        "query", "owner ms", "entitled ms", "overhead", "per-row ms", "overhead"
    );
    for (name, template) in QUERIES {
        let sides = [
            (&owner, template.replace("{t}", "plain")),
            (&reader, template.replace("{t}", "entitled")),
            (&reader, template.replace("{t}", "guarded")),
        ];
        let medians = medians(&engine, name, &sides).await?;
        let [owner_ms, entitled_ms, per_row_ms] = medians.as_slice() else {
            return Err("three sides expected".into());
        };
        let overhead = |ms: f64| (ms / owner_ms - 1.0) * 100.0;
        println!(
            "{name:<22} {owner_ms:>10.1} {entitled_ms:>12.1} {:>8.1}% {per_row_ms:>12.1} {:>8.1}%",
            overhead(*entitled_ms),
            overhead(*per_row_ms),
        );
    }

    println!();
    println!(
        "{:<22} {:>10} {:>12} {:>9}",
        "reader, per-row", "inline ms", "function ms", "overhead"
    );
    for (name, inline, through) in FUNCTION_QUERIES {
        let sides = [
            (&reader, inline.to_string()),
            (&reader, through.to_string()),
        ];
        let medians = medians(&engine, name, &sides).await?;
        let [inline_ms, function_ms] = medians.as_slice() else {
            return Err("two sides expected".into());
        };
        println!(
            "{name:<22} {inline_ms:>10.1} {function_ms:>12.1} {:>8.1}%",
            (function_ms / inline_ms - 1.0) * 100.0
        );
    }
    Ok(())
}

/// The median milliseconds of each side's statement over `RUNS` runs, after checking that every side answers alike.
async fn medians(
    engine: &SqlEngine,
    name: &str,
    sides: &[(&Session, String)],
) -> BenchResult<Vec<f64>> {
    // Warm the file cache and check that every side answers alike.
    let mut answers = Vec::new();
    for (session, sql) in sides {
        let result = engine
            .execute(session, sql, &[], CancellationToken::new())
            .await?;
        answers.push(rendered(&result)?);
    }
    if answers.windows(2).any(|pair| pair[0] != pair[1]) {
        return Err(format!("{name}: the sides disagree").into());
    }
    let mut samples = vec![Vec::with_capacity(RUNS); sides.len()];
    // Interleave the runs so that drift (thermal, page cache, other processes) hits every side alike.
    for _ in 0..RUNS {
        for ((session, sql), samples) in sides.iter().zip(&mut samples) {
            samples.push(time(engine, session, sql).await?);
        }
    }
    Ok(samples
        .iter_mut()
        .map(|samples| median(samples).as_secs_f64() * 1e3)
        .collect())
}

fn rendered(result: &StatementResult) -> BenchResult<Vec<Vec<Option<String>>>> {
    Ok(result.data_array()?)
}

async fn time(engine: &SqlEngine, session: &Session, sql: &str) -> BenchResult<Duration> {
    let started = Instant::now();
    engine
        .execute(session, sql, &[], CancellationToken::new())
        .await?;
    Ok(started.elapsed())
}

fn median(samples: &mut [Duration]) -> Duration {
    samples.sort();
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

/// Writes `rows` rows in row groups of 1M: ids ascending (so a range filter can prune), four regions, one email
/// per row.
fn generate(path: &std::path::Path, rows: usize) -> BenchResult<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, true),
        Field::new("region", DataType::Utf8, true),
        Field::new("email", DataType::Utf8, true),
        Field::new("amount", DataType::Int32, true),
    ]));
    let properties = WriterProperties::builder()
        .set_max_row_group_row_count(Some(1_000_000))
        .build();
    let mut writer = ArrowWriter::try_new(
        std::fs::File::create(path)?,
        Arc::clone(&schema),
        Some(properties),
    )?;
    let regions = ["EU", "US", "APAC", "LATAM"];
    let batch_rows = 100_000;
    let mut start = 0;
    while start < rows {
        let end = (start + batch_rows).min(rows);
        let ids: Int64Array = (start..end).map(|id| i64::try_from(id).ok()).collect();
        let region: StringArray = (start..end)
            .map(|id| regions.get(id % 4).copied())
            .collect();
        let email: StringArray = (start..end)
            .map(|id| Some(format!("user{id}@example.com")))
            .collect();
        let amount: Int32Array = (start..end)
            .map(|id| i32::try_from(id % 1000).ok())
            .collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(ids),
                Arc::new(region),
                Arc::new(email),
                Arc::new(amount),
            ],
        )?;
        writer.write(&batch)?;
        start = end;
    }
    writer.close()?;
    Ok(())
}
