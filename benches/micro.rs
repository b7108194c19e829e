//! Criterion micro-benchmarks of the hot paths: `cargo bench --bench micro`.
//! - sha256 over a 1 MiB buffer (blob verification);
//! - the fill's tee: hash and stage 8 MiB in 64 KiB frames, then commit (both stores);
//! - reading a published 8 MiB blob back in 256 KiB reads (both stores).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use pullgate::cache::BlobStore;
use pullgate::oci::{Digest, DigestHasher};
use std::io::Read;

const FRAME: usize = 64 * 1024;
const BLOB: usize = 8 << 20;

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(167) ^ (i >> 12) as u8 ^ seed)
        .collect()
}

fn hashing(c: &mut Criterion) {
    let buf = data(1 << 20, 1);
    let mut g = c.benchmark_group("sha256");
    g.throughput(Throughput::Bytes(buf.len() as u64));
    g.bench_function("1MiB", |b| {
        b.iter(|| {
            let mut h = DigestHasher::new();
            h.update(std::hint::black_box(&buf));
            h.finish()
        })
    });
    g.finish();
}

/// A store under test: its name, the temp dir it lives in, the store, and (for the sled
/// store) the database kept open beside it.
type StoreUnderTest = (&'static str, tempfile::TempDir, Box<dyn BlobStore>, Option<sled::Db>);

fn stores() -> Vec<StoreUnderTest> {
    let files_dir = tempfile::tempdir().expect("tempdir");
    let files = pullgate::cache::files::FileBlobStore::open(files_dir.path()).expect("files store");
    let sled_dir = tempfile::tempdir().expect("tempdir");
    let db = sled::Config::new()
        .path(sled_dir.path().join("db"))
        .open()
        .expect("sled");
    let sled_store = pullgate::cache::sled_store::SledBlobStore::open(&db).expect("sled store");
    vec![
        ("files", files_dir, Box::new(files), None),
        ("sled", sled_dir, Box::new(sled_store), Some(db)),
    ]
}

fn fill_tee(c: &mut Criterion) {
    let blob = data(BLOB, 2);
    let digest = Digest::of(&blob);
    let mut g = c.benchmark_group("fill_tee");
    g.throughput(Throughput::Bytes(BLOB as u64));
    g.sample_size(10);
    for (name, _dir, store, _db) in stores() {
        let mut id = 0u64;
        g.bench_with_input(BenchmarkId::from_parameter(name), &blob, |b, blob| {
            b.iter(|| {
                id += 1;
                let mut staged = store.begin(id).expect("begin");
                let mut h = DigestHasher::new();
                for frame in blob.chunks(FRAME) {
                    h.update(frame);
                    staged.write(frame).expect("write");
                }
                assert_eq!(h.finish(), digest);
                let location = staged.commit(&digest).expect("commit");
                store.remove(&digest, &location).expect("remove");
            })
        });
    }
    g.finish();
}

fn read_back(c: &mut Criterion) {
    let blob = data(BLOB, 3);
    let digest = Digest::of(&blob);
    let mut g = c.benchmark_group("read_published");
    g.throughput(Throughput::Bytes(BLOB as u64));
    for (name, _dir, store, _db) in stores() {
        let mut staged = store.begin(1).expect("begin");
        staged.write(&blob).expect("write");
        let location = staged.commit(&digest).expect("commit");
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let mut r = store.open(&digest, &location, 0).expect("open");
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0;
                loop {
                    let n = r.read(&mut buf).expect("read");
                    if n == 0 {
                        break;
                    }
                    total += n;
                }
                assert_eq!(total, BLOB);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, hashing, fill_tee, read_back);
criterion_main!(benches);
