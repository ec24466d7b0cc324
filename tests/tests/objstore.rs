//! Streaming uploads and downloads against a real S3 server (moto): a file over the part size goes up in
//! parts and comes back with the same SHA-256, read as a stream or into a file; an upload cancelled half way
//! leaves no open multipart upload behind.

#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::time::Duration;

use azora_adapters::archive::sha256_of_reader;
use azora_adapters::objstore::PART_SIZE;
use azora_tests::s3::S3Server;
use azora_tests::wait;

/// A file of `len` pseudo-random (incompressible) bytes.
fn random_file(len: usize) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    let mut x: u64 = rand::random::<u64>() | 1;
    let mut left = len;
    while left > 0 {
        let n = left.min(1 << 20);
        let chunk: Vec<u8> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        f.write_all(&chunk).unwrap();
        left -= n;
    }
    f.flush().unwrap();
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_stream_up_in_parts_and_back_and_a_cancelled_upload_is_aborted() {
    let dir = tempfile::tempdir().unwrap();
    let server = S3Server::start(dir.path().join("s3.log")).await.unwrap();
    let store = server.store("streams");
    store.ensure_bucket().await.unwrap();

    // Two full parts and a bit: multipart.
    let len = 2 * PART_SIZE + 12_345;
    let f = random_file(len);
    let (want, n) = sha256_of_reader(std::fs::File::open(f.path()).unwrap()).unwrap();
    assert_eq!(n, len as u64);
    let (sent, size) = store.put_file("backups/a/archive", f.path()).await.unwrap();
    assert_eq!((sent.as_str(), size), (want.as_str(), len as u64));
    // Read back as a stream (nothing kept) and into a file: the same bytes.
    let (got, size) = store.sha256_of("backups/a/archive").await.unwrap().unwrap();
    assert_eq!((got.as_str(), size), (want.as_str(), len as u64));
    let back = tempfile::NamedTempFile::new().unwrap();
    let (got, _) = store
        .get_to_file("backups/a/archive", back.path())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, want);
    assert_eq!(
        sha256_of_reader(std::fs::File::open(back.path()).unwrap())
            .unwrap()
            .0,
        want
    );
    assert!(store.sha256_of("backups/a/none").await.unwrap().is_none());
    // Under the part size: a single PUT.
    let small = random_file(1000);
    let (sent, size) = store.put_file("backups/a/small", small.path()).await.unwrap();
    assert_eq!(size, 1000);
    assert_eq!(store.sha256_of("backups/a/small").await.unwrap().unwrap().0, sent);
    assert_eq!(store.open_uploads("backups/").await.unwrap(), 0);

    // An upload cancelled while its parts go up (a run deadline, a term ending) is aborted.
    let big = random_file(12 * PART_SIZE);
    let path = big.path().to_path_buf();
    let uploader = server.store("streams");
    let task = tokio::spawn(async move { uploader.put_file("backups/b/archive", &path).await });
    let open = wait::until(Duration::from_secs(60), || async {
        store.open_uploads("backups/b/").await.unwrap_or(0) > 0
    })
    .await;
    assert!(open, "the multipart upload was never seen in progress");
    task.abort();
    let _ = task.await;
    let aborted = wait::until(Duration::from_secs(30), || async {
        store.open_uploads("backups/b/").await.ok() == Some(0)
    })
    .await;
    assert!(aborted, "a cancelled upload was left open");
    assert!(store.sha256_of("backups/b/archive").await.unwrap().is_none());
}
