//! What a Rust application sees through tokio-postgres, against a real
//! standalone node: `COPY ... TO STDOUT` arrives one row per CopyData
//! message (tokio-postgres hands each message to the application as one
//! chunk, as the protocol promises rows), in text and CSV, with a header
//! in its own message.

mod common;

use bytes::Bytes;
use futures::{pin_mut, TryStreamExt};

use common::{connect, start_standalone};

async fn copy_out(client: &tokio_postgres::Client, sql: &str) -> Vec<Bytes> {
    let stream = client.copy_out(sql).await.unwrap();
    pin_mut!(stream);
    let mut chunks = Vec::new();
    while let Some(chunk) = stream.try_next().await.unwrap() {
        chunks.push(chunk);
    }
    chunks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_out_sends_one_row_per_message() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut node, pg) = start_standalone(&tmp.path().join("data"));
    node.wait_ready().await;
    let client = connect(pg).await;
    client
        .batch_execute(
            "CREATE TABLE big (id int PRIMARY KEY, s text);
             INSERT INTO big SELECT g, 'row ' || g FROM generate_series(1, 3000) g;
             UPDATE big SET s = 'two\nlines' WHERE id = 2;",
        )
        .await
        .unwrap();

    let rows = copy_out(
        &client,
        "COPY (SELECT id FROM big WHERE id < 5 ORDER BY id) TO STDOUT",
    )
    .await;
    assert_eq!(rows, ["1\n", "2\n", "3\n", "4\n"].map(Bytes::from));

    // More rows than one batch: still one message each, in order.
    let rows = copy_out(&client, "COPY (SELECT id FROM big ORDER BY id) TO STDOUT").await;
    assert_eq!(rows.len(), 3000);
    assert!(rows
        .iter()
        .enumerate()
        .all(|(i, r)| r.as_ref() == format!("{}\n", i + 1).as_bytes()));

    // CSV with a header and a quoted newline.
    let rows = copy_out(
        &client,
        "COPY (SELECT id, s FROM big WHERE id <= 3 ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER true)",
    )
    .await;
    assert_eq!(
        rows,
        ["id,s\n", "1,row 1\n", "2,\"two\nlines\"\n", "3,row 3\n"].map(Bytes::from)
    );
    node.terminate_ok();
}
