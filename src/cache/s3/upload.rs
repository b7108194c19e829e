//! A fill's bytes on their way to the bucket: staged in a local file for the clients
//! following the fill while an uploader task sends them as the parts of a multipart
//! upload, completed at commit and aborted otherwise.

use super::*;

/// How far a fill's staging has got, as its uploader sees it.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct StagedProgress {
    /// Bytes staged and readable in the local file.
    pub(super) readable: u64,
    /// The fill verified and committed: nothing more comes.
    pub(super) finished: bool,
}

/// A fill's bytes: staged in a local file (clients following the fill read them there,
/// at the download's speed) while an uploader task sends them, part by part as they
/// are staged, to a multipart upload of the blob's final key. The upload is completed
/// at commit (after verification), aborted on discard. A part that fails fails the
/// fill's next write, so clients still receiving the blob get an error rather than a
/// whole body the bucket will not have.
pub(super) struct S3Staged {
    pub(super) client: Arc<Client>,
    pub(super) local: Box<dyn StagedBlob>,
    pub(super) uploads: sled::Tree,
    pub(super) fill_id: u64,
    pub(super) key: Key,
    pub(super) upload: MultipartId,
    pub(super) progress: tokio::sync::watch::Sender<StagedProgress>,
    /// Why the uploader gave up, once it has.
    pub(super) failed: Arc<std::sync::OnceLock<String>>,
    pub(super) uploader: Option<tokio::task::JoinHandle<io::Result<Vec<PartId>>>>,
}

/// What the uploader needs to read and send a fill's parts.
pub(super) struct Uploader {
    pub(super) client: Arc<Client>,
    pub(super) staging: FileBlobStore,
    pub(super) fill_id: u64,
    pub(super) key: Key,
    pub(super) upload: MultipartId,
    pub(super) part_size: u64,
}

impl Uploader {
    /// Sends each part as soon as it is staged (the last when the fill finished), at
    /// most [`PARTS_IN_FLIGHT`] at once; returns the parts in order.
    pub(super) async fn run(
        self,
        mut staged: tokio::sync::watch::Receiver<StagedProgress>,
        failed: Arc<std::sync::OnceLock<String>>,
    ) -> io::Result<Vec<PartId>> {
        let result = self.send_parts(&mut staged).await;
        if let Err(e) = &result {
            let _ = failed.set(e.to_string());
        }
        result
    }

    async fn send_parts(&self, staged: &mut tokio::sync::watch::Receiver<StagedProgress>) -> io::Result<Vec<PartId>> {
        let mut in_flight: VecDeque<tokio::task::JoinHandle<io::Result<PartId>>> = VecDeque::new();
        let mut parts = Vec::new();
        let (mut offset, mut index, mut sent_all) = (0u64, 0usize, false);
        while !(sent_all && in_flight.is_empty()) {
            let part_end = offset + self.part_size;
            tokio::select! {
                biased;
                done = async { in_flight.front_mut().expect("a part in flight").await }, if !in_flight.is_empty() => {
                    in_flight.pop_front();
                    parts.push(done.map_err(io::Error::other)??);
                }
                now = async { staged.wait_for(|s| s.finished || s.readable >= part_end).await.map(|now| *now) },
                    if !sent_all && in_flight.len() < PARTS_IN_FLIGHT =>
                {
                    let now = now.map_err(|_| io::Error::other("the fill ended without committing its upload"))?;
                    if now.readable > offset {
                        let end = part_end.min(now.readable);
                        let data = self.read(offset, end).await?;
                        let (client, key, upload) = (self.client.clone(), self.key.clone(), self.upload.clone());
                        let part = index;
                        in_flight.push_back(tokio::spawn(async move {
                            client.s3.put_part(&key, &upload, part, PutPayload::from(data)).await.map_err(io_error)
                        }));
                        (offset, index) = (end, index + 1);
                    }
                    sent_all = now.finished && offset >= now.readable;
                }
            }
        }
        Ok(parts)
    }

    /// Bytes `start..end` of the staged file.
    async fn read(&self, start: u64, end: u64) -> io::Result<Bytes> {
        let (staging, fill_id) = (self.staging.clone(), self.fill_id);
        tokio::task::spawn_blocking(move || {
            let mut reader = staging.open_staged(fill_id, start)?;
            let mut data = vec![0u8; (end - start) as usize];
            reader.read_exact(&mut data)?;
            Ok(Bytes::from(data))
        })
        .await
        .map_err(io::Error::other)?
    }
}

impl S3Staged {
    fn abort(&mut self) {
        if let Some(uploader) = self.uploader.take() {
            uploader.abort();
        }
        let (client, key, upload) = (self.client.clone(), self.key.clone(), self.upload.clone());
        if let Err(e) = self
            .client
            .run(async move { client.s3.abort_multipart(&key, &upload).await })
            .and_then(|r| r.map_err(io_error))
        {
            tracing::warn!(key = %self.key, error = %e, "could not abort a multipart upload; the bucket's lifecycle rule will");
        }
        let _ = self.uploads.remove(self.fill_id.to_be_bytes());
    }

    /// Waits for the uploader to have sent every part.
    fn parts(&mut self) -> io::Result<Vec<PartId>> {
        let uploader = self
            .uploader
            .take()
            .ok_or_else(|| io::Error::other("the upload was already finished"))?;
        self.client.run(uploader)?.map_err(io::Error::other)?
    }
}

impl StagedBlob for S3Staged {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if let Some(why) = self.failed.get() {
            return Err(io::Error::other(format!("uploading to the bucket failed: {why}")));
        }
        self.local.write(bytes)?;
        let readable = self.local.readable_len();
        self.progress.send_modify(|p| p.readable = readable);
        Ok(())
    }

    fn reserve(&mut self, size: u64) {
        self.local.reserve(size);
    }

    fn readable_len(&self) -> u64 {
        self.local.readable_len()
    }

    /// Lets the uploader send the last part, waits for every part and completes the
    /// upload: only now does the object exist.
    fn commit(mut self: Box<Self>, _digest: &Digest) -> io::Result<BlobLocation> {
        let readable = self.local.readable_len();
        self.progress.send_modify(|p| {
            p.readable = readable;
            p.finished = true;
        });
        let completed = self.parts().and_then(|parts| {
            let (client, key, upload) = (self.client.clone(), self.key.clone(), self.upload.clone());
            if parts.is_empty() {
                // The empty blob: S3 refuses an empty part, so the upload is abandoned
                // for a plain PUT of no bytes.
                self.abort();
                return self
                    .client
                    .run(async move { client.s3.put(&key, PutPayload::default()).await })?
                    .map(|_| ())
                    .map_err(io_error);
            }
            self.client
                .run(async move { client.s3.complete_multipart(&key, &upload, parts).await })?
                .map(|_| ())
                .map_err(io_error)
        });
        if let Err(e) = completed {
            self.abort();
            self.local.discard();
            return Err(e);
        }
        let _ = self.uploads.remove(self.fill_id.to_be_bytes());
        // Readers that opened the staged file keep it through their handles.
        self.local.discard();
        Ok(BlobLocation::S3)
    }

    fn discard(mut self: Box<Self>) {
        self.abort();
        self.local.discard();
    }
}
