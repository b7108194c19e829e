//! Blobs served through without being kept: while the cache's disk is full, a miss is
//! streamed from upstream to the one client that asked, hashed as it goes, with the
//! last bytes held back until digest and size are verified (as a fill holds them), and
//! nothing written anywhere. A fill on a full disk would send its 200 and then fail
//! when the staged bytes do not fit; this way a client of a full cache still gets every
//! blob, verified, at the cost of one upstream fetch per request until there is room.
//! A broken body resumes with `Range` as a fill's does; a client that leaves ends the
//! download.

use super::fill::task::{MAX_RESUMES, backoff, reopen};
use super::read::{BlobStream, async_stream, deliver};
use super::{ProxyResult, Target};
use crate::metrics::{Metrics, fill_outcome};
use crate::oci::{Digest, DigestHasher};
use crate::upstream::BlobBody;
use backon::BackoffBuilder;
use bytes::Bytes;
use std::io;
use std::sync::Arc;
use tracing::{error, info, warn};

/// Upstream's answer for a blob served through: its size (when upstream sent one) is
/// known before the client's headers go out.
pub struct Through {
    body: BlobBody,
    pub size: Option<u64>,
}

/// Asks upstream for the blob.
pub async fn open(target: &Target, digest: &Digest) -> ProxyResult<Through> {
    let body = target.upstream.get_blob(&target.repo, digest, 0).await?;
    let size = body.content_length;
    Ok(Through { body, size })
}

/// Bytes `first..end` of the blob; the stream ends with an error (the client's body is
/// cut) if the bytes cannot all be fetched or do not verify.
pub fn stream(
    through: Through,
    metrics: Arc<Metrics>,
    (target, digest): (Target, Digest),
    first: u64,
    end: u64,
) -> BlobStream {
    async_stream(move |tx| async move {
        let Through { mut body, size } = through;
        let served = metrics.served_from_upstream.clone();
        let mut hasher = DigestHasher::new();
        let mut received: u64 = 0;
        let mut skip: u64 = 0;
        let mut resumes = 0usize;
        let mut delays = backoff().build();
        let mut held: Option<Bytes> = None;
        let outcome: io::Result<()> = loop {
            match body.next_chunk().await {
                Some(Ok(chunk)) => {
                    let n = skip.min(chunk.len() as u64);
                    skip -= n;
                    let chunk = chunk.slice(n as usize..);
                    let start = received;
                    received += chunk.len() as u64;
                    if let Some(s) = size
                        && received > s
                    {
                        break Err(unverified(format!(
                            "upstream sent more than the {s} bytes it announced"
                        )));
                    }
                    hasher.update(&chunk);
                    let (lo, hi) = (first.max(start), end.min(received));
                    if lo < hi {
                        let part = chunk.slice((lo - start) as usize..(hi - start) as usize);
                        if let Some(ready) = held.replace(part)
                            && !deliver(&served, &tx, ready).await
                        {
                            // The client left: the download ends with it.
                            break Err(io::Error::new(io::ErrorKind::BrokenPipe, "the client left"));
                        }
                    }
                }
                None => break Ok(()),
                Some(Err(e)) => {
                    resumes += 1;
                    if resumes > MAX_RESUMES {
                        break Err(io::Error::other(format!("upstream body broke: {e}")));
                    }
                    metrics.fill_resumes.inc();
                    warn!(upstream = %target.upstream.name, %digest, offset = received, attempt = resumes, error = %e, "blob body broke; resuming");
                    if let Some(delay) = delays.next() {
                        tokio::time::sleep(delay).await;
                    }
                    match reopen(&target.upstream, &target.repo, &digest, received, size).await {
                        Ok(b) => body = b,
                        Err(e) => break Err(io::Error::other(e.to_string())),
                    }
                    skip = if body.status.as_u16() == 206 { 0 } else { received };
                }
            }
        };
        let outcome = outcome.and_then(|()| verify(hasher, received, size, &digest));
        let upstream = target.upstream.name.as_str();
        match &outcome {
            Ok(()) => {
                metrics.fill_ended(fill_outcome::SERVED_THROUGH);
                info!(upstream, %digest, size = received, "blob verified and served through (the cache's disk is full)");
            }
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                metrics.fill_ended(fill_outcome::VERIFICATION_FAILED);
                metrics.verification_failed(upstream);
                error!(upstream, %digest, why = %e, "blob failed verification; not served");
            }
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
            Err(e) => {
                metrics.fill_ended(fill_outcome::FAILED);
                warn!(upstream, %digest, error = %e, "blob served through failed");
            }
        }
        info!(
            target: "pullgate::audit",
            upstream,
            upstream_host = target.upstream.host(),
            cdn_host = %body.served_by,
            repo = %target.repo,
            %digest,
            bytes = received,
            verified = match &outcome {
                Ok(()) => "ok",
                Err(e) if e.kind() == io::ErrorKind::InvalidData => "failed",
                Err(_) => "incomplete",
            },
            "egress"
        );
        outcome?;
        if let Some(last) = held {
            deliver(&served, &tx, last).await;
        }
        Ok(())
    })
}

fn unverified(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Whether the whole blob arrived and hashes to its digest.
fn verify(hasher: DigestHasher, received: u64, size: Option<u64>, digest: &Digest) -> io::Result<()> {
    if let Some(s) = size
        && received != s
    {
        return Err(unverified(format!("upstream sent {received} of {s} bytes")));
    }
    let actual = hasher.finish();
    if &actual != digest {
        return Err(unverified(format!("upstream bytes hash to {actual}")));
    }
    Ok(())
}
