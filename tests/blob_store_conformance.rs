//! One conformance suite for every `BlobStore` implementation (`files`, `sled`, and `s3`
//! on a real Garage), plus the cache's publish-by-CAS and startup repair.

mod common;

use pullgate::cache::{BlobLocation, BlobReader, BlobStore, Cache};
use pullgate::config::BlobStoreKind;
use pullgate::oci::Digest;
use std::io::Read;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 9) as u8)
        .collect()
}

fn read_all(mut r: BlobReader) -> Vec<u8> {
    let mut out = Vec::new();
    r.read_to_end(&mut out).expect("read");
    out
}

/// `read_all` where the server reads: on the blocking pool (a read may wait for the
/// network, which an async thread must not).
async fn read_all_blocking(r: BlobReader) -> Vec<u8> {
    tokio::task::spawn_blocking(move || read_all(r))
        .await
        .expect("reader thread")
}

/// Reads as the serving path does: `read_now` in small odd steps while it answers,
/// `Read` when it says the read would wait; must give the same bytes as `read_all`.
fn read_all_now(mut r: BlobReader) -> (Vec<u8>, usize) {
    let mut out = Vec::new();
    let mut answered = 0;
    loop {
        match r.read_now(7000).expect("read_now") {
            Some(b) if b.is_empty() => return (out, answered),
            Some(b) => {
                assert!(b.len() <= 7000);
                answered += 1;
                out.extend_from_slice(&b);
            }
            None => {
                let mut buf = [0u8; 5000];
                let n = r.read(&mut buf).expect("read");
                if n == 0 {
                    return (out, answered);
                }
                out.extend_from_slice(&buf[..n]);
            }
        }
    }
}

fn conformance(store: &dyn BlobStore) {
    // Odd write sizes cross the sled store's 8 KiB chunk boundaries in every way.
    let data = pattern(1 + 8191 + 8193 + 100_000 + 8192 + 1, 7);
    let digest = Digest::of(&data);
    let mut staged = store.begin_for(1, &digest).expect("begin");
    let mut written = 0usize;
    for size in [1usize, 8191, 8193, 100_000, 8192, 1] {
        staged.write(&data[written..written + size]).expect("write");
        written += size;
        let readable = staged.readable_len();
        assert!(
            readable <= written as u64,
            "{}: readable {readable} > written {written}",
            store.name()
        );
        // A joiner reading the staged bytes sees exactly the prefix.
        let got = read_all(store.open_staged(1, 0).expect("open staged"));
        assert!(
            got.len() as u64 >= readable,
            "{}: staged reader saw {} < readable {readable}",
            store.name(),
            got.len()
        );
        assert_eq!(
            &got[..readable as usize],
            &data[..readable as usize],
            "{}",
            store.name()
        );
        if readable > 5 {
            let tail = read_all(store.open_staged(1, 5).expect("open staged at offset"));
            assert_eq!(&tail[..readable as usize - 5], &data[5..readable as usize]);
        }
    }
    assert_eq!(written, data.len());
    let location = staged.commit(&digest).expect("commit");
    for offset in [0usize, 1, 8191, 8192, 8193, 50_000, data.len() - 1, data.len()] {
        let got = read_all(store.open(&digest, &location, offset as u64).expect("open"));
        assert_eq!(got, &data[offset..], "{}: offset {offset}", store.name());
        let (got, answered) = read_all_now(store.open(&digest, &location, offset as u64).expect("open"));
        assert_eq!(got, &data[offset..], "{}: read_now at offset {offset}", store.name());
        if store.name() == "files" && offset < data.len() {
            // Just written, so in the page cache: answered without the blocking path.
            assert!(answered > 0, "files: read_now never answered at offset {offset}");
        }
    }
    // A range: the reader gives the range's bytes first (a store may go on past its end;
    // a remote store asks for the range alone).
    let size = data.len() as u64;
    for range in [0..100u64, 8191..8193, 50_000..size, size - 1..size, 7..7] {
        let mut reader = store
            .open_checked(&digest, &location, range.clone(), size)
            .expect("open range");
        let mut got = vec![0u8; (range.end - range.start) as usize];
        reader.read_exact(&mut got).expect("the range's bytes");
        assert_eq!(
            got,
            &data[range.start as usize..range.end as usize],
            "{}: range {range:?}",
            store.name()
        );
        if store.name() == "s3" {
            assert_eq!(reader.read(&mut [0u8; 1]).unwrap(), 0, "s3: a GET of the range alone");
        }
    }
    assert_eq!(store.stored_size(&digest, &location).unwrap(), Some(data.len() as u64));
    assert!(
        store.list().unwrap().iter().any(|(_, l)| l == &location),
        "{}: list shows the blob",
        store.name()
    );

    // An empty blob is a blob.
    let empty = Digest::of(b"");
    let staged = store.begin_for(2, &empty).expect("begin");
    let empty_loc = staged.commit(&empty).expect("commit empty");
    assert_eq!(store.stored_size(&empty, &empty_loc).unwrap(), Some(0));
    assert!(read_all(store.open(&empty, &empty_loc, 0).unwrap()).is_empty());

    // A discarded fill leaves nothing behind.
    let other = pattern(20_000, 9);
    let mut staged = store.begin_for(3, &Digest::of(&other)).expect("begin");
    staged.write(&other).unwrap();
    staged.discard();
    let listed = store.list().unwrap();
    assert!(
        !listed.iter().any(|(_, l)| *l == BlobLocation::Sled { fill_id: 3 }),
        "{}: discarded fill listed",
        store.name()
    );
    assert!(!listed.iter().any(|(d, _)| d.as_ref() == Some(&Digest::of(&other))));

    // Removing a blob removes its bytes.
    store.remove(&digest, &location).unwrap();
    assert_eq!(store.stored_size(&digest, &location).unwrap(), None);
    assert!(
        !store
            .list()
            .unwrap()
            .iter()
            .any(|(d, l)| l == &location && d.as_ref() != Some(&empty))
    );

    // Crash leftovers of a fill can be discarded by id.
    let mut staged = store.begin_for(4, &Digest::of(&other)).unwrap();
    staged.write(&other).unwrap();
    drop(staged); // as if the process died: nothing cleans up on drop
    store.discard_staged(4).unwrap();
    assert!(store.open_staged(4, 0).map(read_all).unwrap_or_default().is_empty());
}

#[test]
fn files_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = pullgate::cache::files::FileBlobStore::open(dir.path()).unwrap();
    conformance(&store);
}

#[test]
fn s3_store_conforms_on_garage() {
    let garage = common::garage::Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path().join("db")).open().unwrap();
    let store = pullgate::cache::s3::S3BlobStore::open(dir.path(), &db, &garage.settings("conformance")).unwrap();
    conformance(&store);
}

#[test]
fn sled_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path().join("db")).open().unwrap();
    let store = pullgate::cache::sled_store::SledBlobStore::open(&db).unwrap();
    conformance(&store);
}

async fn publish(cache: &Cache, bytes: &[u8]) -> Digest {
    let digest = Digest::of(bytes);
    let (fill_id, mut staged) = cache.begin_fill(&digest).await.unwrap();
    staged.write(bytes).unwrap();
    let record = cache
        .publish(&digest, fill_id, staged, bytes.len() as u64)
        .await
        .unwrap();
    assert_eq!(record.size, bytes.len() as u64);
    digest
}

async fn cache_repair(kind: BlobStoreKind) {
    let dir = tempfile::tempdir().unwrap();
    let (kept, lost) = (pattern(30_000, 1), pattern(40_000, 2));
    {
        let (cache, report) = Cache::open(dir.path(), kind).unwrap();
        assert_eq!(report, Default::default());
        let kept = publish(&cache, &kept).await;
        let lost = publish(&cache, &lost).await;
        assert!(cache.blob(&kept).await.unwrap().is_some());
        // A second publish of the same digest keeps the first record (CAS).
        let again = publish(&cache, &pattern(30_000, 1)).await;
        assert_eq!(again, kept);
        // A fill that never finishes (the process "dies" now).
        let (_id, mut staged) = cache.begin_fill(&Digest::of(b"interrupted")).await.unwrap();
        staged.write(&pattern(50_000, 3)).unwrap();
        drop(staged); // dropped without discard, as a crash leaves it
        if kind == BlobStoreKind::Files {
            // Data lost under a record, and a file nobody recorded.
            std::fs::remove_file(dir.path().join("blobs/sha256").join(&lost.hex()[..2]).join(lost.hex())).unwrap();
            let orphan = Digest::of(b"orphan");
            let shard = dir.path().join("blobs/sha256").join(&orphan.hex()[..2]);
            std::fs::create_dir_all(&shard).unwrap();
            std::fs::write(shard.join(orphan.hex()), b"orphan").unwrap();
        }
        cache.flush().await.unwrap();
    }
    let (cache, report) = common::reopen_cache(dir.path(), kind).await;
    assert_eq!(report.interrupted_fills, 1, "{kind:?}: {report:?}");
    let kept_d = Digest::of(&kept);
    let record = cache.blob(&kept_d).await.unwrap().expect("published blob survives");
    let reader = cache.open_blob(&kept_d, &record, 0..record.size).await.unwrap();
    assert_eq!(read_all_blocking(reader).await, kept);
    if kind == BlobStoreKind::Files {
        assert_eq!(report.records_without_data, 1, "{report:?}");
        assert_eq!(report.data_without_record, 1, "{report:?}");
        assert!(
            cache.blob(&Digest::of(&lost)).await.unwrap().is_none(),
            "a record without data is a miss"
        );
        assert!(
            std::fs::read_dir(dir.path().join("blobs/staging"))
                .unwrap()
                .next()
                .is_none(),
            "staging is empty"
        );
    } else {
        assert!(cache.blob(&Digest::of(&lost)).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn files_cache_publishes_by_cas_and_repairs_at_startup() {
    cache_repair(BlobStoreKind::Files).await;
}

#[tokio::test]
async fn sled_cache_publishes_by_cas_and_repairs_at_startup() {
    cache_repair(BlobStoreKind::Sled).await;
}

#[tokio::test]
async fn manifests_read_back_from_the_database_are_checked_against_their_digest() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = bytes::Bytes::from_static(br#"{"schemaVersion":2}"#);
    let good = Digest::of(&bytes);
    let wrong = Digest::of(b"something else");
    {
        let (cache, _) = Cache::open(dir.path(), BlobStoreKind::Files).unwrap();
        cache
            .put_manifest(&good, "application/vnd.oci.image.manifest.v1+json", bytes.clone())
            .await
            .unwrap();
        // Stored under a digest its bytes do not hash to, as damage on disk would leave it.
        cache
            .put_manifest(&wrong, "application/vnd.oci.image.manifest.v1+json", bytes.clone())
            .await
            .unwrap();
        cache.flush().await.unwrap();
    }
    // A fresh process: nothing in memory, both read from the database.
    let (cache, _) = common::reopen_cache(dir.path(), BlobStoreKind::Files).await;
    let m = cache.manifest(&good).await.unwrap().expect("stored manifest");
    assert_eq!(m.bytes, bytes);
    match cache.manifest(&wrong).await {
        Err(pullgate::cache::CacheError::ManifestMismatch(d)) => assert_eq!(d, wrong),
        other => panic!(
            "a mismatching manifest must be reported, got {:?}",
            other.map(|m| m.is_some())
        ),
    }
    // Asked again, it is not served from memory either.
    assert!(cache.manifest(&wrong).await.is_err());
}

/// Two caches (two replicas) on one Garage bucket: what one publishes the other adopts
/// (blob, manifest, tag mapping); an object that vanished is a miss at its first read;
/// an upload a crash interrupted is aborted at the next start and never becomes an
/// object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_caches_share_content_and_repair_at_startup() {
    use pullgate::cache::{StoreSettings, TagRecord};
    let garage = common::garage::Garage::start();
    let settings = StoreSettings::S3(Box::new(garage.settings("replicas")));
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, _) = Cache::open(dir_a.path(), settings.clone()).unwrap();
    let (b, _) = Cache::open(dir_b.path(), settings.clone()).unwrap();
    let (kept, lost) = (pattern(6 << 20, 1), pattern(40_000, 2));
    let kept_d = publish(&a, &kept).await;
    let lost_d = publish(&a, &lost).await;

    // B never saw them: it adopts them from the bucket.
    for (d, bytes) in [(&kept_d, &kept), (&lost_d, &lost)] {
        let record = b.blob(d).await.unwrap().expect("adopted from the shared store");
        assert_eq!(record.size, bytes.len() as u64);
        let reader = b.open_blob(d, &record, 0..record.size).await.unwrap();
        assert_eq!(&read_all_blocking(reader).await, bytes);
    }
    // A long read is several ranged GETs in flight at once: ranges across their
    // boundaries give exactly their bytes, read as the server does (`read_now`) too.
    let record = b.blob(&kept_d).await.unwrap().unwrap();
    const MIB: u64 = 1 << 20;
    for range in [0..6 * MIB, 2 * MIB - 5..4 * MIB + 7, 1..6 * MIB - 1, 4 * MIB..6 * MIB] {
        let reader = b.open_blob(&kept_d, &record, range.clone()).await.unwrap();
        let want = &kept[range.start as usize..range.end as usize];
        assert_eq!(&read_all_blocking(reader).await, want, "range {range:?}");
        let reader = b.open_blob(&kept_d, &record, range.clone()).await.unwrap();
        let (got, _) = tokio::task::spawn_blocking(move || read_all_now(reader)).await.unwrap();
        assert_eq!(&got, want, "read_now, range {range:?}");
    }
    let manifest = bytes::Bytes::from_static(br#"{"schemaVersion":2}"#);
    let m = Digest::of(&manifest);
    a.put_manifest(&m, "application/vnd.oci.image.manifest.v1+json", manifest.clone())
        .await
        .unwrap();
    let shared = b.manifest(&m).await.unwrap().expect("manifest from the shared store");
    assert_eq!(
        (shared.bytes, shared.media_type.as_str()),
        (manifest, "application/vnd.oci.image.manifest.v1+json")
    );
    let record = TagRecord {
        digest: m.to_string(),
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        fetched_ms: 42,
    };
    a.put_tag("up", "ubi9/ubi", "latest", record.clone()).await.unwrap();
    assert_eq!(b.tag("up", "ubi9/ubi", "latest").await.unwrap(), Some(record));
    assert_eq!(b.tag("up", "ubi9/ubi", "nope").await.unwrap(), None);

    // A removes one; B, which recorded it, finds out at its first read.
    a.remove_blob(&lost_d).await.unwrap();
    let record = b.blob(&lost_d).await.unwrap().expect("B still has its record");
    match b.open_blob(&lost_d, &record, 0..record.size).await {
        Err(pullgate::cache::CacheError::BlobDataMissing(d)) => assert_eq!(d, lost_d),
        Err(e) => panic!("expected BlobDataMissing, got {e}"),
        Ok(_) => panic!("an evicted object must not open"),
    }

    // A fill a crash interrupts: its upload is aborted at the next start.
    let interrupted = pattern(7 << 20, 3);
    let interrupted_d = Digest::of(&interrupted);
    let (_id, mut staged) = a.begin_fill(&interrupted_d).await.unwrap();
    staged.write(&interrupted).unwrap();
    drop(staged); // dropped without discard, as a crash leaves it
    a.flush().await.unwrap();
    drop(a);
    let (a, report) = common::reopen_cache(dir_a.path(), settings.clone()).await;
    assert!(report.scanned && report.interrupted_fills == 1, "{report:?}");
    assert_eq!(
        report.records_without_data, 0,
        "shared objects are not checked at start"
    );
    assert!(
        a.blob(&interrupted_d).await.unwrap().is_none(),
        "no object for an upload never completed"
    );
    assert!(b.blob(&kept_d).await.unwrap().is_some());
}
