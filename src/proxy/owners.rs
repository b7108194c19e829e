//! Asking the replica that owns a digest or tag (`[cluster]`). A replica that misses a
//! blob it does not own streams the owner's answer to its client and into nothing else
//! (the owner's fill writes the shared store once). Every byte from a peer is hashed
//! and the last one is held until the digest matches, as for bytes from upstream. When
//! the owner breaks off, the same bytes are asked from the next candidate from where
//! they stopped, and then from a fill here: a dead replica costs the fleet at most one
//! more upstream fetch, and its clients' pulls go on.

use super::fill::pipeline::{COALESCE_WAIT, Coalescer};
use super::read::{self, BlobStream};
use super::{Proxy, ProxyError, ProxyResult, Target};
use crate::cache::ReaderGuard;
use crate::metrics::PeerRequestLabels;
use crate::oci::range::RangeSpec;
use crate::oci::{Digest, DigestHasher};
use crate::upstream::peer::{PeerBlob, PeerClient, PeerError};
use crate::upstream::{FetchedManifest, UpstreamError};
use bytes::Bytes;
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::StreamExt as _;
use tracing::warn;

/// What a client joining a shared peer stream learns once the peer answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Head {
    Pending,
    /// The peer answered: the blob's size, when it said.
    Size(Option<u64>),
    /// No peer answered, or the stream began before this client joined: it looks again.
    Gone,
}

/// Whole-blob streams from peers, shared by this replica's clients: the first request
/// for a blob leads, and whole-blob requests arriving before its first byte went out
/// join it, so a replica asks the owner once (and hashes once) for all its clients
/// that missed together. Joined clients go at the pace of the slowest of them (each
/// has a small bounded channel), up to `STALLED_CLIENT_PATIENCE` per chunk; memory
/// stays a few chunks per client.
#[derive(Default)]
pub(super) struct SharedPeerStreams {
    open: Mutex<HashMap<Digest, Arc<SharedStream>>>,
}

pub(super) struct SharedStream {
    head: watch::Sender<Head>,
    /// Clients that joined; `None` once the first byte is on its way.
    joined: Mutex<Option<Vec<mpsc::Sender<io::Result<Bytes>>>>>,
}

/// The leading request of a shared stream. Dropped, it closes the stream to joiners
/// (those still waiting for the head look again).
pub(super) struct Lead {
    streams: Arc<SharedPeerStreams>,
    digest: Digest,
    stream: Arc<SharedStream>,
}

impl SharedPeerStreams {
    /// Joins the stream a request for `digest` leads, if its first byte has not gone
    /// out yet: the receiver of the body, and the head to wait for.
    pub(super) fn join(&self, digest: &Digest) -> Option<(mpsc::Receiver<io::Result<Bytes>>, watch::Receiver<Head>)> {
        let open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let stream = open.get(digest)?;
        let mut joined = stream.joined.lock().unwrap_or_else(|p| p.into_inner());
        let (tx, rx) = mpsc::channel(2);
        joined.as_mut()?.push(tx);
        Some((rx, stream.head.subscribe()))
    }

    /// Makes this request the one that leads the stream of `digest`.
    pub(super) fn lead(self: &Arc<Self>, digest: &Digest) -> Lead {
        let stream = Arc::new(SharedStream {
            head: watch::Sender::new(Head::Pending),
            joined: Mutex::new(Some(Vec::new())),
        });
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(digest.clone(), stream.clone());
        Lead {
            streams: self.clone(),
            digest: digest.clone(),
            stream,
        }
    }
}

impl Lead {
    /// The peer answered: joiners may go on with this size.
    pub(super) fn answered(&self, size: Option<u64>) {
        self.stream.head.send_replace(Head::Size(size));
    }

    /// The first byte is on its way: who joined (nobody joins after this).
    fn close(&self) -> Vec<mpsc::Sender<io::Result<Bytes>>> {
        self.forget();
        self.stream
            .joined
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default()
    }

    fn forget(&self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.get(&self.digest).is_some_and(|s| Arc::ptr_eq(s, &self.stream)) {
            open.remove(&self.digest);
        }
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        self.forget();
        self.stream.head.send_if_modified(|h| {
            let pending = *h == Head::Pending;
            if pending {
                *h = Head::Gone;
            }
            pending
        });
    }
}

/// How long the clients of a shared peer stream may, together, leave one chunk untaken.
/// They go at the pace of the slowest, so one that stopped reading (a stopped process,
/// a peer that no longer reads its socket) would hold every other client of the stream;
/// past this it is cut off, and its body ends in an error when it reads again (a
/// retry, never wrong bytes), so the others go on.
const STALLED_CLIENT_PATIENCE: Duration = Duration::from_secs(30);

/// Hands `bytes` to every receiver still there (the leading client's first), cutting
/// off those that have not taken them within `patience`; false once none is left.
async fn deliver_all(
    served: &prometheus_client::metrics::counter::Counter,
    lead: &mut Option<mpsc::Sender<io::Result<Bytes>>>,
    others: &mut Vec<mpsc::Sender<io::Result<Bytes>>>,
    bytes: Bytes,
    patience: Duration,
) -> bool {
    let deadline = Instant::now() + patience;
    if let Some(tx) = lead.take() {
        *lead = deliver_before(served, tx, &bytes, deadline).await;
    }
    let mut kept = Vec::with_capacity(others.len());
    for other in others.drain(..) {
        kept.extend(deliver_before(served, other, &bytes, deadline).await);
    }
    *others = kept;
    lead.is_some() || !others.is_empty()
}

/// Hands `bytes` to one client: its sender back while it is there and took them before
/// `deadline`.
async fn deliver_before(
    served: &prometheus_client::metrics::counter::Counter,
    tx: mpsc::Sender<io::Result<Bytes>>,
    bytes: &Bytes,
    deadline: Instant,
) -> Option<mpsc::Sender<io::Result<Bytes>>> {
    match tokio::time::timeout_at(deadline, tx.send(Ok(bytes.clone()))).await {
        Ok(Ok(())) => {
            served.inc_by(bytes.len() as u64);
            Some(tx)
        }
        // The client went away.
        Ok(Err(_)) => None,
        Err(_) => {
            cut_off(tx);
            None
        }
    }
}

/// Ends a stalled client's body: the error waits in its channel behind what it has not
/// read yet (the send finishes when it reads, or fails when it goes away).
fn cut_off(tx: mpsc::Sender<io::Result<Bytes>>) {
    let secs = STALLED_CLIENT_PATIENCE.as_secs();
    warn!(
        patience_secs = secs,
        "a client of a shared peer stream took no bytes for a while; its body is cut off so the others go on"
    );
    tokio::spawn(async move {
        let e = format!("this client took no bytes for {secs} s while others shared its stream");
        let _ = tx.send(Err(io::Error::other(e))).await;
    });
}

/// A blob body as a peer began to send it, and the peers to ask if it breaks off.
pub(super) struct FromPeer {
    pub body: PeerBlob,
    pub rest: Vec<String>,
    /// When other clients of this replica may share the stream.
    pub lead: Option<Lead>,
}

/// Where the bytes of a blob asked from peers come from now.
enum Feed {
    Peer(PeerBlob),
    /// A fill (or the published blob) on this replica.
    Here(BlobStream),
}

impl Feed {
    async fn next(&mut self) -> Option<Result<Bytes, String>> {
        match self {
            Feed::Peer(body) => body.next_chunk().await.map(|r| r.map_err(|e| e.to_string())),
            Feed::Here(stream) => stream.next().await.map(|r| r.map_err(|e| e.to_string())),
        }
    }
}

/// What asking the peers in order came to.
enum Asked<T> {
    /// Peer `usize` of the list answered.
    Answered(T, usize),
    /// The owner said upstream has no such thing.
    NotFound,
    /// No peer could answer: the replica does the work itself.
    NoOne,
}

/// The cluster key of a tag: every replica revalidates it through the same owner.
pub(super) fn tag_key(target: &Target, tag: &str) -> String {
    format!("{}/{}:{tag}", target.upstream.name, target.repo)
}

impl Proxy {
    /// The peers to ask for `key` before doing the work here: none without `[cluster]`,
    /// for a request a peer sent (never forwarded twice), or when this replica is the
    /// first live candidate.
    /// (`key` is only computed when clustered: a single pullgate's path is unchanged.)
    pub(super) fn peers_for(&self, target: &Target, key: impl FnOnce() -> String) -> Vec<String> {
        match &self.cluster {
            Some(cluster) if !target.from_peer => cluster.peers_to_ask(&key()),
            _ => Vec::new(),
        }
    }

    fn count_peer(&self, member: &str, outcome: &'static str) {
        self.metrics
            .peer_requests
            .get_or_create(&PeerRequestLabels {
                member: member.to_string(),
                outcome,
            })
            .inc();
    }

    /// What a peer's failure means: unreachable marks it down; an error answer is
    /// logged. Either way the next is asked.
    fn peer_failed(&self, member: &str, e: &PeerError) {
        let Some(cluster) = &self.cluster else { return };
        match e {
            PeerError::Unreachable { .. } => {
                self.count_peer(member, "unreachable");
                cluster.mark_down(member, &e.to_string());
            }
            _ => {
                self.count_peer(member, "refused");
                warn!(member, error = %e, "a cluster peer could not answer; asking the next");
            }
        }
    }

    /// Asks `peers` in order with `ask` until one answers. A member that answers is up
    /// again; one that fails is marked down or logged (see [`Self::peer_failed`]) and the
    /// next is asked. A 404 ends the asking when `not_found_answers` (the owner says
    /// upstream has no such thing).
    async fn ask_peers<'a, T, Fut>(
        &'a self,
        peers: &'a [String],
        not_found_answers: bool,
        mut ask: impl FnMut(&'a PeerClient, &'a str) -> Fut,
    ) -> Asked<T>
    where
        Fut: Future<Output = Result<T, PeerError>>,
    {
        let Some(cluster) = &self.cluster else {
            return Asked::NoOne;
        };
        for (i, member) in peers.iter().enumerate() {
            match ask(&cluster.client, member).await {
                Ok(answer) => {
                    cluster.mark_up(member);
                    self.count_peer(member, "ok");
                    return Asked::Answered(answer, i);
                }
                Err(PeerError::NotFound) if not_found_answers => {
                    cluster.mark_up(member);
                    self.count_peer(member, "not_found");
                    return Asked::NotFound;
                }
                Err(e) => self.peer_failed(member, &e),
            }
        }
        Asked::NoOne
    }

    /// Asks `peers` in order for the blob from byte `from` on. The first that answers
    /// gives the body; `Ok(None)` when none could (the caller does the work itself). A
    /// 404 from the owner is the answer: upstream has no such blob.
    pub(super) async fn blob_from_peers(
        &self,
        target: &Target,
        digest: &Digest,
        peers: &[String],
        from: u64,
    ) -> ProxyResult<Option<FromPeer>> {
        let asked = self
            .ask_peers(peers, from == 0, |client, member| {
                client.get_blob(member, target.upstream_name(), &target.repo, digest, from)
            })
            .await;
        match asked {
            Asked::Answered(body, i) => Ok(Some(FromPeer {
                body,
                rest: peers[i + 1..].to_vec(),
                lead: None,
            })),
            Asked::NotFound => Err(ProxyError::BlobUnknown),
            Asked::NoOne => Ok(None),
        }
    }

    /// A blob's size from its owner; `Ok(None)` when no peer could say.
    pub(super) async fn blob_size_from_peers(
        &self,
        target: &Target,
        digest: &Digest,
        peers: &[String],
    ) -> ProxyResult<Option<Option<u64>>> {
        let asked = self
            .ask_peers(peers, true, |client, member| {
                client.head_blob(member, target.upstream_name(), &target.repo, digest)
            })
            .await;
        match asked {
            Asked::Answered(size, _) => Ok(Some(size)),
            Asked::NotFound => Err(ProxyError::BlobUnknown),
            Asked::NoOne => Ok(None),
        }
    }

    /// A manifest by tag or digest: from the owner of `key` when this replica is not
    /// it, else (or when no peer could answer) from upstream. The caller verifies it.
    pub(super) async fn fetch_manifest(
        &self,
        target: &Target,
        reference: &str,
        key: impl FnOnce() -> String,
    ) -> Result<FetchedManifest, UpstreamError> {
        let peers = self.peers_for(target, key);
        let asked = self
            .ask_peers(&peers, true, |client, member| {
                client.get_manifest(member, target.upstream_name(), &target.repo, reference)
            })
            .await;
        match asked {
            Asked::Answered(manifest, _) => Ok(manifest),
            Asked::NotFound => Err(UpstreamError::NotFound),
            Asked::NoOne => target.upstream.get_manifest(&target.repo, reference).await,
        }
    }

    /// Bytes `first..end` of a blob coming from a peer, for a client (and those that
    /// joined it). The whole blob is read and hashed, on a thread of its own beside the
    /// receiving (a range is cut out of it); the last byte goes out only once the digest
    /// matches. A body that breaks off resumes from the next peer, then here.
    pub(super) fn from_peer_stream(
        self: &Arc<Self>,
        (target, digest): (Target, Digest),
        from_peer: FromPeer,
        size: Option<u64>,
        (first, end): (u64, u64),
        reading: ReaderGuard,
    ) -> BlobStream {
        let proxy = self.clone();
        let listed = self.peer_reads.start(
            (target.upstream_name(), target.repo(), &digest),
            from_peer.body.member(),
            size,
        );
        read::async_stream(move |tx| async move {
            let _reading = reading;
            let lead = from_peer.lead;
            let mut relay = Relay::new(&proxy, tx, size, (first, end));
            let mut rest = from_peer.rest;
            let mut feed = Feed::Peer(from_peer.body);
            let mut here_tried = false;
            let mut coalescer = Coalescer::new();
            let mut full = Vec::new();
            loop {
                let broke = loop {
                    let (end_of_feed, chunks) = match tokio::time::timeout(COALESCE_WAIT, feed.next()).await {
                        Ok(Some(Ok(chunk))) => {
                            relay
                                .others
                                .get_or_insert_with(|| lead.as_ref().map(Lead::close).unwrap_or_default());
                            coalescer.push(&chunk, &mut full);
                            (None, std::mem::take(&mut full))
                        }
                        // A pause in the feed: what is buffered goes out now.
                        Err(_) => (None, coalescer.flush().into_iter().collect()),
                        Ok(None) => (Some(None), coalescer.flush().into_iter().collect()),
                        Ok(Some(Err(e))) => (Some(Some(e)), coalescer.flush().into_iter().collect()),
                    };
                    for chunk in chunks {
                        if !relay.pass(chunk).await? {
                            return Ok(());
                        }
                    }
                    listed.read.relayed(relay.pos);
                    listed.read.clients(1 + relay.others.as_ref().map_or(0, Vec::len));
                    if let Some(broke) = end_of_feed {
                        break broke;
                    }
                };
                let pos = relay.pos;
                if broke.is_none() && size.is_none_or(|s| pos == s) {
                    break;
                }
                let why = broke.unwrap_or_else(|| "the body ended early".into());
                if let Feed::Peer(body) = &feed {
                    let member = body.member().to_string();
                    self_failed(&proxy, &member, &why);
                }
                feed = match proxy.resume(&target, &digest, &mut rest, &mut here_tried, pos).await {
                    Some(next) => next,
                    None => {
                        let e = format!("the blob's bytes broke off at {pos} and no replica could go on: {why}");
                        return Err(relay.fail(e).await);
                    }
                };
            }
            relay.finish(&target, &digest).await
        })
    }

    /// The blob from byte `from` on, after a feed broke: the next peer that answers,
    /// else a fill here (once). `None` when nothing is left to try.
    async fn resume(
        self: &Arc<Self>,
        target: &Target,
        digest: &Digest,
        rest: &mut Vec<String>,
        here_tried: &mut bool,
        from: u64,
    ) -> Option<Feed> {
        self.metrics.fill_resumes.inc();
        let peers = std::mem::take(rest);
        if let Ok(Some(next)) = self.blob_from_peers(target, digest, &peers, from).await {
            *rest = next.rest;
            return Some(Feed::Peer(next.body));
        }
        if std::mem::replace(here_tried, true) {
            return None;
        }
        let mut here = target.clone();
        here.from_peer = true;
        // Relayed into another stream, not sent as it is: real bytes only.
        here.kernel_copy = false;
        let range = (from > 0).then_some(RangeSpec::FromTo {
            first: from,
            last: None,
        });
        let answer: std::pin::Pin<Box<dyn Future<Output = ProxyResult<super::BlobAnswer>> + Send + '_>> =
            Box::pin(self.blob_once(&here, digest, range));
        match answer.await {
            Ok(answer) => answer.body.map(Feed::Here),
            Err(e) => {
                warn!(%digest, error = %e, "cannot go on with a blob here after its owner broke off");
                None
            }
        }
    }
}

/// Hands a peer's bytes on: hashed on a thread of its own, the part the client asked
/// for to it and to the clients that joined, the last of it held until the digest
/// matches.
struct Relay {
    served: prometheus_client::metrics::counter::Counter,
    /// The leading client; `None` once it went away or was cut off for stalling.
    tx: Option<mpsc::Sender<io::Result<Bytes>>>,
    /// The clients that joined, fixed when the first byte arrives.
    others: Option<Vec<mpsc::Sender<io::Result<Bytes>>>>,
    to_hasher: mpsc::Sender<Bytes>,
    hasher: tokio::task::JoinHandle<DigestHasher>,
    held: Option<Bytes>,
    /// Bytes of the blob passed on so far.
    pos: u64,
    size: Option<u64>,
    first: u64,
    end: u64,
    metrics: Arc<crate::metrics::Metrics>,
}

/// Chunks queued for the hashing thread.
const HASH_QUEUE: usize = 16;

impl Relay {
    fn new(proxy: &Proxy, tx: mpsc::Sender<io::Result<Bytes>>, size: Option<u64>, (first, end): (u64, u64)) -> Relay {
        let (to_hasher, mut chunks) = mpsc::channel::<Bytes>(HASH_QUEUE);
        let hasher = tokio::task::spawn_blocking(move || {
            let mut hasher = DigestHasher::new();
            while let Some(chunk) = chunks.blocking_recv() {
                hasher.update(&chunk);
            }
            hasher
        });
        Relay {
            served: proxy.metrics.served_from_peer.clone(),
            tx: Some(tx),
            others: None,
            to_hasher,
            hasher,
            held: None,
            pos: 0,
            size,
            first,
            end,
            metrics: proxy.metrics.clone(),
        }
    }

    /// Passes the blob's next bytes on; false once no client is left.
    async fn pass(&mut self, chunk: Bytes) -> io::Result<bool> {
        let start = self.pos;
        self.pos += chunk.len() as u64;
        if self.size.is_some_and(|s| self.pos > s) {
            return Err(self.fail("a peer sent more bytes than the blob has".into()).await);
        }
        self.to_hasher
            .send(chunk.clone())
            .await
            .map_err(|_| io::Error::other("the hashing thread ended"))?;
        let (lo, hi) = (self.first.max(start), self.end.min(self.pos));
        if lo < hi {
            let part = chunk.slice((lo - start) as usize..(hi - start) as usize);
            if let Some(ready) = self.held.replace(part) {
                let others = self.others.get_or_insert_with(Vec::new);
                return Ok(deliver_all(&self.served, &mut self.tx, others, ready, STALLED_CLIENT_PATIENCE).await);
            }
        }
        Ok(true)
    }

    /// Ends the joined clients' bodies with `e`; the error for the leading client's.
    async fn fail(&mut self, e: String) -> io::Error {
        fail_all(self.others.take().unwrap_or_default(), e).await
    }

    /// The whole blob went by: the last bytes go out if the digest matches.
    async fn finish(mut self, target: &Target, digest: &Digest) -> io::Result<()> {
        drop(self.to_hasher);
        let actual = match self.hasher.await {
            Ok(hasher) => hasher.finish(),
            Err(_) => return Err(io::Error::other("the hashing thread ended")),
        };
        if &actual != digest {
            warn!(upstream = %target.upstream.name, %digest, %actual, "blob from a cluster peer failed verification; not completed");
            self.metrics.verification_failed(&target.upstream.name);
            let e = format!("blob {digest} from a peer hashes to {actual}");
            return Err(fail_all(self.others.take().unwrap_or_default(), e).await);
        }
        if let Some(last) = self.held.take() {
            let mut others = self.others.take().unwrap_or_default();
            deliver_all(&self.served, &mut self.tx, &mut others, last, STALLED_CLIENT_PATIENCE).await;
        }
        Ok(())
    }
}

/// Ends the bodies of `others` with `e`; the same error for the leading client's.
async fn fail_all(others: Vec<mpsc::Sender<io::Result<Bytes>>>, e: String) -> io::Error {
    for other in others {
        let _ = other.send(Err(io::Error::other(e.clone()))).await;
    }
    io::Error::other(e)
}

fn self_failed(proxy: &Proxy, member: &str, why: &str) {
    proxy.peer_failed(
        member,
        &PeerError::Unreachable {
            member: member.to_string(),
            cause: why.to_string(),
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest() -> Digest {
        Digest::of(b"shared")
    }

    #[tokio::test]
    async fn clients_join_a_peer_stream_until_its_first_byte() {
        let streams = Arc::new(SharedPeerStreams::default());
        assert!(streams.join(&digest()).is_none(), "nothing to join yet");
        let lead = streams.lead(&digest());
        let (mut a, mut head_a) = streams.join(&digest()).expect("joins before the head");
        lead.answered(Some(6));
        let (mut b, _) = streams.join(&digest()).expect("joins after the head, before a byte");
        assert_eq!(
            *head_a.wait_for(|h| *h != Head::Pending).await.unwrap(),
            Head::Size(Some(6))
        );
        let mut joined = lead.close();
        assert_eq!(joined.len(), 2);
        assert!(
            streams.join(&digest()).is_none(),
            "closed once the first byte is on its way"
        );
        let (tx, mut own) = mpsc::channel(2);
        let mut tx = Some(tx);
        let served = prometheus_client::metrics::counter::Counter::default();
        assert!(
            deliver_all(
                &served,
                &mut tx,
                &mut joined,
                Bytes::from_static(b"bytes!"),
                STALLED_CLIENT_PATIENCE
            )
            .await
        );
        for rx in [&mut own, &mut a, &mut b] {
            assert_eq!(rx.recv().await.unwrap().unwrap(), Bytes::from_static(b"bytes!"));
        }
        assert_eq!(served.get(), 18);
        // Every client gone: the stream has no one left to feed.
        drop((own, a, b));
        assert!(
            !deliver_all(
                &served,
                &mut tx,
                &mut joined,
                Bytes::from_static(b"more"),
                STALLED_CLIENT_PATIENCE
            )
            .await
        );
    }

    /// One client of a shared stream that stops reading is cut off after the patience;
    /// the leading client and the other joiner get every byte, and the stalled one,
    /// when it reads again, what it was sent and then an error, never a skipped chunk.
    #[tokio::test]
    async fn a_stalled_client_is_cut_off_and_the_others_go_on() {
        let patience = Duration::from_millis(200);
        let served = prometheus_client::metrics::counter::Counter::default();
        let (lead_tx, mut lead_rx) = mpsc::channel::<io::Result<Bytes>>(2);
        let (stalled_tx, mut stalled) = mpsc::channel::<io::Result<Bytes>>(2);
        let (reading_tx, mut reading) = mpsc::channel(2);
        let mut lead = Some(lead_tx);
        let mut others = vec![stalled_tx, reading_tx];
        let chunks: Vec<Bytes> = (0u8..6).map(|i| Bytes::from(vec![i; 8])).collect();
        let readers = tokio::spawn(async move {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            for _ in 0..6 {
                a.push(lead_rx.recv().await.unwrap().unwrap());
                b.push(reading.recv().await.unwrap().unwrap());
            }
            (a, b)
        });
        let started = Instant::now();
        let delivered = async {
            for chunk in &chunks {
                assert!(deliver_all(&served, &mut lead, &mut others, chunk.clone(), patience).await);
            }
        };
        tokio::time::timeout(50 * patience, delivered)
            .await
            .expect("the stalled client does not hold the others");
        let waited = started.elapsed();
        assert!(
            waited >= patience && waited < 10 * patience,
            "one patience, once: {waited:?}"
        );
        assert_eq!(others.len(), 1, "the stalled client is no longer fed");
        let (a, b) = readers.await.unwrap();
        assert_eq!(
            (a, b),
            (chunks.clone(), chunks.clone()),
            "the others got every byte, in order"
        );
        for chunk in &chunks[..2] {
            assert_eq!(stalled.recv().await.unwrap().unwrap(), chunk);
        }
        assert!(stalled.recv().await.unwrap().is_err(), "then its body is cut off");
        assert!(stalled.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_lead_that_gets_no_answer_sends_its_joiners_looking_again() {
        let streams = Arc::new(SharedPeerStreams::default());
        let lead = streams.lead(&digest());
        let (_rx, mut head) = streams.join(&digest()).unwrap();
        drop(lead);
        assert_eq!(*head.wait_for(|h| *h != Head::Pending).await.unwrap(), Head::Gone);
        assert!(streams.join(&digest()).is_none());
    }
}
