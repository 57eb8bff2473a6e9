//! COPY INTO: CSV, newline-delimited JSON and Parquet files, loaded by admins only.

#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is a failed test.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{Fixture, policy_fixture, render};
use datafusion::arrow::array::{Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use deputy_sql::SqlError;

/// A directory for input files, outside the warehouse's data directory.
fn inputs(fixture: &Fixture) -> PathBuf {
    let directory = fixture.temporary.dir().join("inputs");
    std::fs::create_dir_all(&directory).unwrap();
    directory
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap();
    path.display().to_string()
}

fn write_parquet(path: &Path, ids: &[i64], names: &[&str]) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("NAME", DataType::Utf8, true),
        Field::new("id", DataType::Int64, true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(names.to_vec())),
            Arc::new(Int64Array::from(ids.to_vec())),
        ],
    )
    .unwrap();
    let mut writer =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

async fn loaded(fixture: &Fixture) -> Vec<String> {
    fixture
        .rows(
            "admin",
            "SELECT id, name, score FROM main.scratch.people ORDER BY id",
        )
        .await
}

async fn people_fixture() -> Fixture {
    let fixture = policy_fixture().await;
    fixture
        .setup(
            "admin",
            &["CREATE TABLE main.scratch.people (id INT, name STRING, score DOUBLE)"],
        )
        .await;
    fixture
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_with_and_without_a_header() {
    let fixture = people_fixture().await;
    let directory = inputs(&fixture);
    // Columns by name, in another order, with one the table lacks.
    let path = write(
        &directory.join("people.txt"),
        "score,extra,ID,name\n1.5,x,1,Ann\n,y,2,\"Ben, Jr.\"\n",
    );
    let result = fixture
        .run(
            "admin",
            &format!(
                "COPY INTO main.scratch.people FROM '{path}' FILEFORMAT = CSV FORMAT_OPTIONS ('header' = 'true')"
            ),
        )
        .await
        .unwrap();
    assert_eq!(render(&result), ["2|2"]);
    assert_eq!(result.columns()[0].name, "num_affected_rows");
    assert_eq!(loaded(&fixture).await, ["1|Ann|1.5", "2|Ben, Jr.|NULL"]);
    // Without a header, by position; another separator.
    let path = write(&directory.join("more.csv"), "3;Cid;2.0\n4;Dee;\n");
    fixture
        .setup(
            "admin",
            &[&format!(
                "COPY INTO main.scratch.people FROM '{path}' FILEFORMAT = CSV FORMAT_OPTIONS ('sep' = ';')"
            )],
        )
        .await;
    assert_eq!(
        loaded(&fixture).await,
        ["1|Ann|1.5", "2|Ben, Jr.|NULL", "3|Cid|2.0", "4|Dee|NULL"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newline_delimited_json() {
    let fixture = people_fixture().await;
    let path = write(
        &inputs(&fixture).join("people.json"),
        "{\"id\": 5, \"name\": \"Eve\", \"score\": 9.5}\n{\"NAME\": \"Fay\", \"ID\": 6, \"tags\": \"x\"}\n",
    );
    fixture
        .setup(
            "admin",
            &[&format!(
                "COPY INTO main.scratch.people FROM '{path}' FILEFORMAT = JSON"
            )],
        )
        .await;
    assert_eq!(loaded(&fixture).await, ["5|Eve|9.5", "6|Fay|NULL"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_parquet_files() {
    let fixture = people_fixture().await;
    let directory = inputs(&fixture).join("parquet");
    std::fs::create_dir_all(&directory).unwrap();
    write_parquet(&directory.join("a.parquet"), &[7, 8], &["Gus", "Hal"]);
    write_parquet(&directory.join("b.parquet"), &[9], &["Ivy"]);
    // Not a Parquet file by its extension: a directory's files are chosen by it.
    write(&directory.join("notes.txt"), "not data");
    let result = fixture
        .run(
            "admin",
            &format!(
                "COPY INTO main.scratch.people FROM '{}' FILEFORMAT = PARQUET",
                directory.display()
            ),
        )
        .await
        .unwrap();
    assert_eq!(render(&result), ["3|3"]);
    assert_eq!(
        loaded(&fixture).await,
        ["7|Gus|NULL", "8|Hal|NULL", "9|Ivy|NULL"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_load_and_only_from_plain_paths() {
    let fixture = people_fixture().await;
    let directory = inputs(&fixture);
    let path = write(&directory.join("p.csv"), "id,name,score\n1,a,1\n");
    fixture
        .setup(
            "admin",
            &["GRANT MODIFY, SELECT ON TABLE main.scratch.people TO bob"],
        )
        .await;
    // bob may write the table but not read the server's disk; a missing path fails the same way for him.
    for path in [path.as_str(), "/does/not/exist.csv"] {
        let error = fixture
            .run(
                "bob",
                &format!("COPY INTO main.scratch.people FROM '{path}' FILEFORMAT = CSV"),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(&error, SqlError::PermissionDenied(message) if message.contains("admins")),
            "{error}"
        );
        assert_eq!(error.error_code(), "PERMISSION_DENIED");
    }
    let data_file = fixture.temporary.dir().join("data").join("tables");
    for (path, expected) in [
        ("p.csv".to_owned(), "not absolute"),
        ("/does/not/exist.csv".to_owned(), "cannot be read"),
        ("/dev/null".to_owned(), "neither a regular file"),
        (format!("{}/*.csv", directory.display()), "glob"),
        (data_file.display().to_string(), "data directory"),
    ] {
        let error = fixture
            .run(
                "admin",
                &format!("COPY INTO main.scratch.people FROM '{path}' FILEFORMAT = CSV"),
            )
            .await
            .unwrap_err();
        assert!(error.to_string().contains(expected), "{path}: {error}");
    }
    // A value that does not fit the column fails the statement and loads nothing; so does a misspelt option.
    let bad = write(
        &directory.join("bad.csv"),
        "id,name,score\n1,a,1\n2,b,high\n",
    );
    for sql in [
        format!(
            "COPY INTO main.scratch.people FROM '{bad}' FILEFORMAT = CSV FORMAT_OPTIONS ('header' = 'true')"
        ),
        format!(
            "COPY INTO main.scratch.people FROM '{path}' FILEFORMAT = CSV FORMAT_OPTIONS ('headers' = 'true')"
        ),
    ] {
        let error = fixture.run("admin", &sql).await.unwrap_err();
        assert!(
            matches!(error, SqlError::Execution(_) | SqlError::InvalidInput(_)),
            "{sql}: {error}"
        );
    }
    assert_eq!(loaded(&fixture).await, Vec::<String>::new());
    let partials: Vec<_> = std::fs::read_dir(fixture.temporary.dir().join("data").join("tables"))
        .unwrap()
        .flat_map(|entry| {
            std::fs::read_dir(entry.unwrap().path())
                .into_iter()
                .flatten()
        })
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".partial"))
        .collect();
    assert!(partials.is_empty(), "{partials:?}");
}
