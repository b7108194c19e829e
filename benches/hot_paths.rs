//! Micro-benchmarks of the hot paths, outside the test suite:
//! `cargo bench --bench hot_paths`. Prints MB/s for sha256 hashing and for writing
//! (stage + commit) and reading a blob through each `BlobStore`.

use pullgate::cache::BlobStore;
use pullgate::oci::{Digest, DigestHasher};
use std::io::Read;
use std::time::Instant;

const BLOB: usize = 256 * 1024 * 1024;
const FRAME: usize = 64 * 1024;

fn mb_per_s(bytes: usize, secs: f64) -> f64 {
    bytes as f64 / secs / 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn bench_hash(data: &[u8]) -> f64 {
    median(
        (0..5)
            .map(|_| {
                let t = Instant::now();
                let mut h = DigestHasher::new();
                for frame in data.chunks(FRAME) {
                    h.update(frame);
                }
                std::hint::black_box(h.finish());
                mb_per_s(data.len(), t.elapsed().as_secs_f64())
            })
            .collect(),
    )
}

fn bench_store(store: &dyn BlobStore, data: &[u8], fill_id: u64) -> (f64, f64) {
    let digest = Digest::of(data);
    let t = Instant::now();
    let mut staged = store.begin(fill_id).expect("begin");
    for frame in data.chunks(FRAME) {
        staged.write(frame).expect("write");
    }
    let location = staged.commit(&digest).expect("commit");
    let write = mb_per_s(data.len(), t.elapsed().as_secs_f64());
    let t = Instant::now();
    let mut reader = store.open(&digest, &location, 0).expect("open");
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        let n = reader.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        total += n;
    }
    assert_eq!(total, data.len());
    let read = mb_per_s(data.len(), t.elapsed().as_secs_f64());
    store.remove(&digest, &location).expect("remove");
    (write, read)
}

fn main() {
    let data: Vec<u8> = (0..BLOB)
        .map(|i| (i as u8).wrapping_mul(167) ^ (i >> 12) as u8)
        .collect();
    println!("blob: {} MiB, frames of {} KiB", BLOB >> 20, FRAME >> 10);
    println!("sha256 hashing: {:.0} MB/s", bench_hash(&data));

    let dir = tempfile::tempdir().expect("tempdir");
    let files = pullgate::cache::files::FileBlobStore::open(dir.path()).expect("files store");
    let (w, r) = bench_store(&files, &data, 1);
    println!("files store: write+fsync {w:.0} MB/s, read {r:.0} MB/s");

    let db = sled::Config::new()
        .path(dir.path().join("db"))
        .cache_capacity(64 * 1024 * 1024)
        .open()
        .expect("sled");
    let sled_store = pullgate::cache::sled_store::SledBlobStore::open(&db).expect("sled store");
    let (w, r) = bench_store(&sled_store, &data, 2);
    println!("sled store: write+flush {w:.0} MB/s, read {r:.0} MB/s");
}
