//! The `s3` blob store: blob bytes as objects `<prefix>blobs/sha256/<hex>` in an
//! S3-compatible bucket (Ceph RGW / OpenShift Data Foundation, MinIO, AWS S3, Garage),
//! through the `object_store` crate, shared by every replica that names the same bucket
//! and prefix. A fill stages its bytes in a local file (readers following the fill read
//! it) and uploads them as a multipart upload to the final key as they arrive; the
//! upload is completed only at commit, which the cache calls after the digest and size
//! verified, and aborted otherwise: an object exists only whole and verified. The
//! upload runs beside the fill (an uploader task reads the staged file), so clients
//! receive at the download's speed whatever the bucket's.
//! Conditional writes are not relied on: two replicas completing the same key write the
//! same bytes. Uploads of fills a crash interrupted are journaled (fill id → key and
//! upload id) and aborted at the next start; a bucket lifecycle rule cleans up any
//! other (see the README). Also the shared side tables: manifests at
//! `<prefix>manifests/sha256/<hex>` (byte-exact, media type as `Content-Type`) and tag
//! mappings at `<prefix>tags/<upstream>/<repo>/<tag>`.
//!
//! `object_store` is async and this interface is not: calls run on the store's own small
//! runtime and the calling thread (a blocking-pool thread, or startup) waits for them.
//! A fill's staging and multipart upload are in `s3/upload.rs`, the reader of an object
//! in `s3/reader.rs`.

use super::blob_store::{BlobLocation, BlobRead, BlobReader, BlobStore, StagedBlob};
use super::files::FileBlobStore;
use super::records::TagRecord;
use crate::oci::Digest;
use crate::secret::Secret;
use bytes::Bytes;
use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as Key;
use object_store::{
    Attribute, Attributes, BackoffConfig, ClientOptions, GetOptions, GetRange, MultipartId, ObjectStore,
    ObjectStoreExt, PutOptions, PutPayload, RetryConfig,
};
use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

mod reader;
mod upload;

use reader::S3Reader;
use upload::{S3Staged, StagedProgress, Uploader};

/// What the `s3` store is built from (the composition root reads the config and the
/// credential files).
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// The S3 endpoint, e.g. `https://s3.openshift-storage.svc` or
    /// `http://127.0.0.1:3900`; none: AWS by region.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    /// Prepended to every key (`team-a/pullgate/`): several pullgates can share a bucket.
    pub prefix: String,
    /// Access key id and secret; none: the standard `AWS_*` environment variables or
    /// the web-identity token OpenShift and EKS inject.
    pub credentials: Option<(Secret, Secret)>,
    pub allow_http: bool,
    /// Extra CA certificates (PEM) trusted for the endpoint.
    pub ca_pem: Option<Vec<u8>>,
    /// Bytes per uploaded part (at least 5 MiB, as S3 wants of every part but the last).
    pub part_size: usize,
    /// How the replicas sharing the bucket report their uses and evict.
    pub fleet: super::fleet::FleetSettings,
}

/// The replicas' heartbeats: the live ones (ids), and those gone long enough to forget.
pub struct Replicas {
    pub live: Vec<String>,
    pub stale: Vec<String>,
}

/// How long the startup check of the bucket waits before the replica starts anyway.
const STARTUP_PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Parts of one fill being uploaded at once (bounds memory to this many parts).
const PARTS_IN_FLIGHT: usize = 2;

/// A read of a published blob longer than this is made as ranged GETs of this size.
const SEGMENT: u64 = 2 << 20;

/// Ranged GETs of one read asked ahead of the segment being delivered: with it and the
/// one in the reader's hands, a reader holds at most `SEGMENTS_AHEAD + 2` segments.
const SEGMENTS_AHEAD: usize = 2;

/// Reads made as parallel ranged GETs at once; others stream one GET each.
const PARALLEL_READERS: usize = 2;

/// The client and its runtime, shared by the store, its staged blobs and its readers.
struct Client {
    s3: AmazonS3,
    prefix: String,
    /// Dropped with `shutdown_background` (it may be dropped on an async thread).
    runtime: Option<tokio::runtime::Runtime>,
    handle: tokio::runtime::Handle,
    /// [`PARALLEL_READERS`] permits.
    parallel_readers: Arc<tokio::sync::Semaphore>,
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

fn io_error(e: object_store::Error) -> io::Error {
    match e {
        object_store::Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e.to_string()),
        object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. } => {
            io::Error::new(io::ErrorKind::PermissionDenied, e.to_string())
        }
        other => io::Error::other(other.to_string()),
    }
}

impl Client {
    fn connect(settings: &S3Settings) -> io::Result<Client> {
        // object_store's reqwest is built without a rustls provider, like the upstream
        // client's; installing ring twice is a no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("pullgate-s3")
            .enable_all()
            .build()?;
        let mut options = ClientOptions::new()
            .with_allow_http(settings.allow_http)
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(60));
        if let Some(pem) = &settings.ca_pem {
            for cert in object_store::Certificate::from_pem_bundle(pem).map_err(io_error)? {
                options = options.with_root_certificate(cert);
            }
        }
        let retry = RetryConfig {
            backoff: BackoffConfig::default(),
            max_retries: 4,
            retry_timeout: Duration::from_secs(20),
        };
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_client_options(options)
            .with_retry(retry)
            .with_allow_http(settings.allow_http);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
        }
        // Over TLS the payload is not hashed into the signature (TLS protects it and the
        // blob's digest was verified): a part costs no second SHA-256 pass. Over plain
        // HTTP the signature keeps covering it.
        let tls = settings.endpoint.as_deref().is_none_or(|e| e.starts_with("https://"));
        builder = builder.with_unsigned_payload(tls);
        if let Some((id, secret)) = &settings.credentials {
            builder = builder
                .with_access_key_id(id.expose())
                .with_secret_access_key(secret.expose());
        }
        let s3 = builder.build().map_err(io_error)?;
        let prefix = match settings.prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        Ok(Client {
            s3,
            prefix,
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            parallel_readers: Arc::new(tokio::sync::Semaphore::new(PARALLEL_READERS)),
        })
    }

    /// Puts, reads back and deletes a probe object under the prefix.
    fn probe(self: &Arc<Self>) -> io::Result<()> {
        let client = self.clone();
        let key = self.key(&format!("probe/{}-{}", std::process::id(), super::now_ms()));
        self.run(async move {
            client
                .s3
                .put(&key, PutPayload::from_static(b"ok"))
                .await
                .map_err(io_error)?;
            client
                .s3
                .get(&key)
                .await
                .map_err(io_error)?
                .bytes()
                .await
                .map_err(io_error)?;
            client.s3.delete(&key).await.map_err(io_error)
        })?
    }

    /// Runs `fut` on the store's runtime and waits for it (from any thread).
    fn run<T: Send + 'static>(&self, fut: impl Future<Output = T> + Send + 'static) -> io::Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| io::Error::other("the object store's runtime stopped"))
    }

    fn key(&self, rest: &str) -> Key {
        Key::from(format!("{}{rest}", self.prefix))
    }

    fn blob_key(&self, d: &Digest) -> Key {
        self.key(&format!("blobs/sha256/{}", d.hex()))
    }
}

#[derive(Clone)]
pub struct S3BlobStore {
    client: Arc<Client>,
    /// Where running fills stage their bytes for the readers that follow them.
    staging: FileBlobStore,
    part_size: usize,
    /// Fill id → JSON `[key, upload id]` of its multipart upload, so an upload a crash
    /// interrupted is aborted at the next start.
    uploads: sled::Tree,
}

impl S3BlobStore {
    /// One GET of the blob's object (or of `range` of it), its body pulled as the
    /// reader reads.
    fn get(&self, digest: &Digest, range: impl Into<Option<GetRange>>) -> io::Result<BlobReader> {
        let (client, key) = (self.client.clone(), self.client.blob_key(digest));
        let options = GetOptions {
            range: range.into(),
            ..Default::default()
        };
        let got = self
            .client
            .run(async move { client.s3.get_opts(&key, options).await })?
            .map_err(io_error)?;
        Ok(Box::new(S3Reader::pumping(&self.client.handle, got.into_stream())))
    }

    fn empty_reader(&self) -> BlobReader {
        Box::new(S3Reader::empty())
    }

    /// Bytes `range` of the blob: as one GET streamed, or, when they are many and fewer
    /// than [`PARALLEL_READERS`] reads do so already, as ranged GETs of [`SEGMENT`]
    /// bytes, [`SEGMENTS_AHEAD`] at once (an object store serves one request at a
    /// fraction of what it serves several: the byte-range fetches S3's performance
    /// guide recommends; many clients at once keep it busy without, and memory stays
    /// bounded). The first is asked at once, so an object that is gone is `NotFound`
    /// here.
    fn get_range(&self, digest: &Digest, range: std::ops::Range<u64>) -> io::Result<BlobReader> {
        let parallel = match range.end - range.start > SEGMENT {
            true => self.client.parallel_readers.clone().try_acquire_owned().ok(),
            false => None,
        };
        let Some(parallel) = parallel else {
            return self.get(digest, GetRange::Bounded(range));
        };
        let (client, key) = (self.client.clone(), self.client.blob_key(digest));
        let first = range.start..range.start + SEGMENT;
        let first = self
            .client
            .run(async move { client.s3.get_range(&key, first).await })?
            .map_err(io_error)?;
        let (client, key) = (self.client.clone(), self.client.blob_key(digest));
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        self.client.handle.spawn(async move {
            let _parallel = parallel;
            let mut ahead = VecDeque::new();
            let mut next = range.start + SEGMENT;
            let mut segment = Ok(first);
            loop {
                while ahead.len() < SEGMENTS_AHEAD && next < range.end {
                    let end = (next + SEGMENT).min(range.end);
                    let (client, key) = (client.clone(), key.clone());
                    ahead.push_back(tokio::spawn(async move { client.s3.get_range(&key, next..end).await }));
                    next = end;
                }
                let failed = segment.is_err();
                if tx.send(segment.map_err(io_error)).await.is_err() || failed {
                    ahead.iter().for_each(|a: &tokio::task::JoinHandle<_>| a.abort());
                    return;
                }
                let Some(following) = ahead.pop_front() else { return };
                segment = following.await.unwrap_or_else(|e| {
                    Err(object_store::Error::Generic {
                        store: "S3",
                        source: Box::new(e),
                    })
                });
            }
        });
        Ok(Box::new(S3Reader::receiving(rx)))
    }

    /// Connects to the bucket and checks it: a bucket that does not exist or refuses the
    /// credentials is an error (the configuration is wrong); an unreachable store is
    /// only logged (the replica starts not ready and serves what it holds locally).
    pub fn open(data_dir: &Path, db: &sled::Db, settings: &S3Settings) -> io::Result<S3BlobStore> {
        let client = Arc::new(Client::connect(settings)?);
        let at = format!(
            "bucket {:?} at {}",
            settings.bucket,
            settings.endpoint.as_deref().unwrap_or("AWS")
        );
        let checked = client.clone();
        let probe = client.run(async move {
            tokio::time::timeout(STARTUP_PROBE_TIMEOUT, async move {
                tokio::task::spawn_blocking(move || checked.probe())
                    .await
                    .unwrap_or_else(|e| Err(io::Error::other(e)))
            })
            .await
        })?;
        match probe {
            Ok(Ok(())) => {}
            Ok(Err(e)) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied) => {
                let what = match e.kind() {
                    io::ErrorKind::NotFound => "does not exist",
                    _ => "refuses the credentials",
                };
                return Err(io::Error::new(e.kind(), format!("{at} {what}: {e}")));
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "{at} did not answer at startup; not ready until it does"),
            Err(_) => tracing::warn!(
                "{at} did not answer within {STARTUP_PROBE_TIMEOUT:?} at startup; not ready until it does"
            ),
        }
        Ok(S3BlobStore {
            client,
            staging: FileBlobStore::open(data_dir)?,
            part_size: settings.part_size.max(5 << 20),
            uploads: db.open_tree("s3_uploads").map_err(io::Error::other)?,
        })
    }

    /// Reaches the bucket with these settings and writes, reads back and deletes an
    /// object under the prefix (`check-config --online`), without a local cache.
    pub fn check_bucket(settings: &S3Settings) -> io::Result<()> {
        let client = Arc::new(Client::connect(settings)?);
        client.probe()
    }

    fn journal(&self, fill_id: u64, key: &Key, upload: &MultipartId) -> io::Result<()> {
        let value = serde_json::to_vec(&(key.as_ref(), upload)).map_err(io::Error::other)?;
        self.uploads
            .insert(fill_id.to_be_bytes(), value)
            .map_err(io::Error::other)?;
        Ok(())
    }

    // ---- the shared side tables -------------------------------------------------------

    /// A manifest another replica stored: its media type and bytes (unchecked: the
    /// caller verifies them against the digest).
    pub fn manifest(&self, d: &Digest) -> io::Result<Option<(String, Bytes)>> {
        let (client, key) = (
            self.client.clone(),
            self.client.key(&format!("manifests/sha256/{}", d.hex())),
        );
        self.client.run(async move {
            match client.s3.get(&key).await {
                Ok(got) => {
                    let media_type = got
                        .attributes
                        .get(&Attribute::ContentType)
                        .map(|v| v.to_string())
                        .unwrap_or_default();
                    let bytes = got.bytes().await.map_err(io_error)?;
                    Ok(Some((media_type, bytes)))
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(io_error(e)),
            }
        })?
    }

    pub fn put_manifest(&self, d: &Digest, media_type: &str, bytes: Bytes) -> io::Result<()> {
        let (client, key) = (
            self.client.clone(),
            self.client.key(&format!("manifests/sha256/{}", d.hex())),
        );
        let options = PutOptions {
            attributes: Attributes::from_iter([(Attribute::ContentType, media_type.to_string())]),
            ..Default::default()
        };
        self.client.run(async move {
            client
                .s3
                .put_opts(&key, PutPayload::from(bytes), options)
                .await
                .map(|_| ())
                .map_err(io_error)
        })?
    }

    fn tag_key(&self, upstream: &str, repo: &str, tag: &str) -> Key {
        self.client.key(&format!("tags/{upstream}/{repo}/{tag}"))
    }

    /// A tag mapping as the last replica to fetch it recorded it.
    pub fn tag(&self, upstream: &str, repo: &str, tag: &str) -> io::Result<Option<TagRecord>> {
        let (client, key) = (self.client.clone(), self.tag_key(upstream, repo, tag));
        self.client.run(async move {
            match client.s3.get(&key).await {
                Ok(got) => {
                    let bytes = got.bytes().await.map_err(io_error)?;
                    Ok(serde_json::from_slice(&bytes).ok())
                }
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(io_error(e)),
            }
        })?
    }

    pub fn put_tag(&self, upstream: &str, repo: &str, tag: &str, record: &TagRecord) -> io::Result<()> {
        let (client, key) = (self.client.clone(), self.tag_key(upstream, repo, tag));
        let value = serde_json::to_vec(record).map_err(io::Error::other)?;
        self.client.run(async move {
            client
                .s3
                .put(&key, PutPayload::from(value))
                .await
                .map(|_| ())
                .map_err(io_error)
        })?
    }

    /// The size of a blob another replica published, `None` when there is none.
    pub fn blob_size(&self, d: &Digest) -> io::Result<Option<u64>> {
        self.stored_size(d, &BlobLocation::S3)
    }

    // ---- the fleet's coordination (see `fleet`) ----------------------------------------

    /// Every object under `dir`, with its last-modified time in ms.
    fn listing(&self, dir: &str) -> io::Result<Vec<(String, u64, u64)>> {
        let (client, prefix) = (self.client.clone(), self.client.key(dir));
        self.client.run(async move {
            let mut out = Vec::new();
            let mut listing = client.s3.list(Some(&prefix));
            while let Some(meta) = listing.next().await {
                let meta = meta.map_err(io_error)?;
                if let Some(name) = meta.location.filename() {
                    out.push((
                        name.to_string(),
                        meta.size,
                        meta.last_modified.timestamp_millis().max(0) as u64,
                    ));
                }
            }
            Ok(out)
        })?
    }

    fn put_object(&self, key: Key, body: Vec<u8>) -> io::Result<()> {
        let client = self.client.clone();
        self.client.run(async move {
            client
                .s3
                .put(&key, PutPayload::from(body))
                .await
                .map(|_| ())
                .map_err(io_error)
        })?
    }

    fn get_object(&self, key: Key) -> io::Result<Bytes> {
        let client = self.client.clone();
        self.client.run(async move {
            let got = client.s3.get(&key).await.map_err(io_error)?;
            got.bytes().await.map_err(io_error)
        })?
    }

    fn delete_object(&self, key: Key) -> io::Result<()> {
        let client = self.client.clone();
        self.client.run(async move {
            match client.s3.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(io_error(e)),
            }
        })?
    }

    /// Writes this replica's heartbeat and reads everyone's: live are those within
    /// `window` of this one's (the store's clock), stale those ten windows older.
    pub fn heartbeat(&self, id: &str, window: Duration) -> io::Result<Replicas> {
        self.put_object(self.client.key(&format!("replicas/{id}")), Vec::new())?;
        let beats = self.listing("replicas")?;
        let now = beats
            .iter()
            .find(|(name, _, _)| name == id)
            .map(|(_, _, at)| *at)
            .unwrap_or_else(super::now_ms);
        let window = window.as_millis() as u64;
        let mut replicas = Replicas {
            live: Vec::new(),
            stale: Vec::new(),
        };
        for (name, _, at) in beats {
            let age = now.saturating_sub(at);
            if age <= window {
                replicas.live.push(name);
            } else if age > window * 10 {
                replicas.stale.push(name);
            }
        }
        Ok(replicas)
    }

    pub fn forget_replica(&self, id: &str) -> io::Result<()> {
        self.delete_object(self.client.key(&format!("replicas/{id}")))
    }

    pub fn put_report(&self, name: &str, body: Vec<u8>) -> io::Result<()> {
        self.put_object(self.client.key(&format!("access/{name}")), body)
    }

    /// The access reports in the bucket, with their age.
    pub fn reports(&self) -> io::Result<Vec<(String, Duration)>> {
        let now = super::now_ms();
        Ok(self
            .listing("access")?
            .into_iter()
            .map(|(name, _, at)| (name, Duration::from_millis(now.saturating_sub(at))))
            .collect())
    }

    pub fn report(&self, name: &str) -> io::Result<Bytes> {
        self.get_object(self.client.key(&format!("access/{name}")))
    }

    pub fn delete_report(&self, name: &str) -> io::Result<()> {
        self.delete_object(self.client.key(&format!("access/{name}")))
    }

    /// Every blob object: digest, size, and when it was written (ms).
    pub fn blobs_with_times(&self) -> io::Result<Vec<(Digest, u64, u64)>> {
        Ok(self
            .listing("blobs/sha256")?
            .into_iter()
            .filter_map(|(name, size, at)| Some((Digest::from_hex(&name).ok()?, size, at)))
            .collect())
    }
}

impl BlobStore for S3BlobStore {
    fn name(&self) -> &'static str {
        "s3"
    }

    fn shares_data(&self) -> bool {
        true
    }

    fn begin(&self, fill_id: u64) -> io::Result<Box<dyn StagedBlob>> {
        Err(io::Error::other(format!(
            "the s3 store stages fill {fill_id} under its digest: use begin_for"
        )))
    }

    /// Starts the multipart upload to the blob's final key (nothing is visible there
    /// until it completes) and journals it.
    fn begin_for(&self, fill_id: u64, digest: &Digest) -> io::Result<Box<dyn StagedBlob>> {
        let key = self.client.blob_key(digest);
        let (client, k) = (self.client.clone(), key.clone());
        let upload = self
            .client
            .run(async move { client.s3.create_multipart(&k).await })?
            .map_err(io_error)?;
        self.journal(fill_id, &key, &upload)?;
        let local = self.staging.begin(fill_id)?;
        let (progress, staged) = tokio::sync::watch::channel(StagedProgress::default());
        let failed = Arc::new(std::sync::OnceLock::new());
        let uploader = Uploader {
            client: self.client.clone(),
            staging: self.staging.clone(),
            fill_id,
            key: key.clone(),
            upload: upload.clone(),
            part_size: self.part_size as u64,
        };
        let uploader = self.client.handle.spawn(uploader.run(staged, failed.clone()));
        Ok(Box::new(S3Staged {
            client: self.client.clone(),
            local,
            uploads: self.uploads.clone(),
            fill_id,
            key,
            upload,
            progress,
            failed,
            uploader: Some(uploader),
        }))
    }

    fn open_staged(&self, fill_id: u64, offset: u64) -> io::Result<BlobReader> {
        self.staging.open_staged(fill_id, offset)
    }

    fn open(&self, digest: &Digest, location: &BlobLocation, offset: u64) -> io::Result<BlobReader> {
        if offset == 0 {
            return self.get(digest, None);
        }
        match self.get(digest, GetRange::Offset(offset)) {
            // S3 answers 416 to a range starting at the end, which object_store does not
            // type: a HEAD tells an empty tail from a real failure.
            Err(e) if e.kind() == io::ErrorKind::Other => match self.stored_size(digest, location)? {
                Some(size) if offset == size => Ok(self.empty_reader()),
                _ => Err(e),
            },
            other => other,
        }
    }

    /// GETs of just `range` (see `get_range`), the first made at once: a blob another
    /// replica evicted is `NotFound` here, and an empty range needs no request.
    fn open_checked(
        &self,
        digest: &Digest,
        _location: &BlobLocation,
        range: std::ops::Range<u64>,
        size: u64,
    ) -> io::Result<BlobReader> {
        let end = range.end.min(size);
        if range.start >= end {
            return Ok(self.empty_reader());
        }
        self.get_range(digest, range.start..end)
    }

    fn stored_size(&self, digest: &Digest, _location: &BlobLocation) -> io::Result<Option<u64>> {
        let (client, key) = (self.client.clone(), self.client.blob_key(digest));
        self.client.run(async move {
            match client.s3.head(&key).await {
                Ok(meta) => Ok(Some(meta.size)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(io_error(e)),
            }
        })?
    }

    fn remove(&self, digest: &Digest, _location: &BlobLocation) -> io::Result<()> {
        let (client, key) = (self.client.clone(), self.client.blob_key(digest));
        self.client.run(async move {
            match client.s3.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(io_error(e)),
            }
        })?
    }

    /// The local staging file, and the multipart upload the journal names.
    fn discard_staged(&self, fill_id: u64) -> io::Result<()> {
        self.staging.discard_staged(fill_id)?;
        if let Some(v) = self.uploads.get(fill_id.to_be_bytes()).map_err(io::Error::other)? {
            if let Ok((key, upload)) = serde_json::from_slice::<(String, MultipartId)>(&v) {
                let client = self.client.clone();
                let key = Key::from(key);
                let aborted = self
                    .client
                    .run(async move { client.s3.abort_multipart(&key, &upload).await })?;
                if let Err(e) = aborted
                    && !matches!(e, object_store::Error::NotFound { .. })
                {
                    tracing::warn!(error = %e, "could not abort an interrupted multipart upload; the bucket's lifecycle rule will");
                }
            }
            self.uploads.remove(fill_id.to_be_bytes()).map_err(io::Error::other)?;
        }
        Ok(())
    }

    /// The bucket takes and gives back an object, and local staging takes a file.
    fn probe(&self) -> io::Result<()> {
        self.staging.probe()?;
        self.client.probe()
    }

    /// Every blob object under the prefix (startup repair does not ask a shared store:
    /// another replica's objects are not this cache's to judge).
    fn list(&self) -> io::Result<Vec<(Option<Digest>, BlobLocation)>> {
        let (client, prefix) = (self.client.clone(), self.client.key("blobs/sha256"));
        self.client.run(async move {
            let mut out = Vec::new();
            let mut listing = client.s3.list(Some(&prefix));
            while let Some(meta) = listing.next().await {
                let meta = meta.map_err(io_error)?;
                if let Some(d) = meta.location.filename().and_then(|n| Digest::from_hex(n).ok()) {
                    out.push((Some(d), BlobLocation::S3));
                }
            }
            Ok(out)
        })?
    }
}
