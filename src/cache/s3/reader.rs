//! A client's reader of an object: chunks pumped from the store's runtime through a
//! channel, handed out as the caller asks.

use super::*;

/// How many body chunks of a GET are read ahead of the client (each is what one socket
/// read gave, a few hundred KiB at the most): enough to keep the connection busy while
/// the client takes the last, and a bound on a reader's memory.
const CHUNKS_AHEAD: usize = 4;

/// A published blob read with one ranged GET. A task on the store's runtime pulls the
/// body into a small channel; reads take from it (without a wait when a chunk is there,
/// so an async server can read it in place). Dropping the reader ends the GET.
pub(super) struct S3Reader {
    chunks: Option<tokio::sync::mpsc::Receiver<io::Result<Bytes>>>,
    current: Bytes,
}

impl S3Reader {
    pub(super) fn pumping(
        runtime: &tokio::runtime::Handle,
        mut body: futures_util::stream::BoxStream<'static, object_store::Result<Bytes>>,
    ) -> S3Reader {
        let (tx, rx) = tokio::sync::mpsc::channel(CHUNKS_AHEAD);
        runtime.spawn(async move {
            while let Some(chunk) = body.next().await {
                let failed = chunk.is_err();
                if tx.send(chunk.map_err(io_error)).await.is_err() || failed {
                    return;
                }
            }
        });
        S3Reader::receiving(rx)
    }

    pub(super) fn receiving(chunks: tokio::sync::mpsc::Receiver<io::Result<Bytes>>) -> S3Reader {
        S3Reader {
            chunks: Some(chunks),
            current: Bytes::new(),
        }
    }

    pub(super) fn empty() -> S3Reader {
        S3Reader {
            chunks: None,
            current: Bytes::new(),
        }
    }

    /// Up to `max` bytes of the chunk in hand.
    fn take(&mut self, max: usize) -> Bytes {
        let n = self.current.len().min(max);
        self.current.split_to(n)
    }

    /// Holds the next chunk (`Ok(false)`: the body ended).
    fn hold(&mut self, next: Option<io::Result<Bytes>>) -> io::Result<bool> {
        match next {
            Some(chunk) => {
                self.current = chunk?;
                Ok(true)
            }
            None => {
                self.chunks = None;
                Ok(false)
            }
        }
    }
}

impl Read for S3Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            let Some(chunks) = self.chunks.as_mut() else {
                return Ok(0);
            };
            let next = chunks.blocking_recv();
            if !self.hold(next)? {
                return Ok(0);
            }
        }
        let bytes = self.take(buf.len());
        buf[..bytes.len()].copy_from_slice(&bytes);
        Ok(bytes.len())
    }
}

impl BlobRead for S3Reader {
    /// A chunk already received is read in place; otherwise the read would wait for the
    /// network and belongs on the blocking pool.
    fn read_now(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        while self.current.is_empty() {
            let Some(chunks) = self.chunks.as_mut() else {
                return Ok(Some(Bytes::new()));
            };
            let next = match chunks.try_recv() {
                Ok(chunk) => Some(chunk),
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => return Ok(None),
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => None,
            };
            if !self.hold(next)? {
                return Ok(Some(Bytes::new()));
            }
        }
        Ok(Some(self.take(max)))
    }
}
