//! What a Rust application sees through tokio-postgres, against a real
//! standalone node: `COPY ... TO STDOUT` arrives one row per CopyData
//! message (tokio-postgres hands each message to the application as one
//! chunk, as the protocol promises rows), in text and CSV, with a header
//! in its own message; `COPY ... FROM STDIN` through its sink loads rows
//! split across messages anywhere, and reports how many.

mod common;

use bytes::Bytes;
use futures::{pin_mut, SinkExt, TryStreamExt};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_through_the_sink() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut node, pg) = start_standalone(&tmp.path().join("data"));
    node.wait_ready().await;
    let client = connect(pg).await;
    client
        .batch_execute("CREATE TABLE loaded (id int PRIMARY KEY, s text)")
        .await
        .unwrap();
    let sink = client
        .copy_in("COPY loaded FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    pin_mut!(sink);
    // Messages that cut rows (and a quoted newline) in the middle.
    for chunk in ["1,one\n2,\"tw", "o\nlines\"\n3", ",three\n"] {
        sink.send(Bytes::from(chunk)).await.unwrap();
    }
    let n = sink.finish().await.unwrap();
    assert_eq!(n, 3);
    let rows: Vec<(i32, String)> = client
        .query("SELECT id, s FROM loaded ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        rows,
        [(1, "one"), (2, "two\nlines"), (3, "three")].map(|(i, s)| (i, s.to_owned()))
    );
    node.terminate_ok();
}
