//! Read buffers for serving blobs: handed to clients as `Bytes` and put back in a small
//! pool when the last handle drops (after the HTTP layer wrote them), so serving a hot
//! blob neither allocates nor zeroes a buffer per chunk.

use bytes::Bytes;
use std::sync::Mutex;

/// The size of a pooled buffer; reads up to this size use one.
pub const BUFFER_SIZE: usize = 256 * 1024;
/// Buffers kept for reuse (12 MiB idle at most: about what one fast fill keeps in
/// flight between its receiver, writer, hasher and recent-chunks window); beyond that
/// they are freed.
const POOLED: usize = 48;

static POOL: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

fn pool() -> std::sync::MutexGuard<'static, Vec<Vec<u8>>> {
    POOL.lock().unwrap_or_else(|p| p.into_inner())
}

/// A buffer of at least `len` bytes (old contents: the caller overwrites what it uses).
pub fn take(len: usize) -> Vec<u8> {
    if len <= BUFFER_SIZE
        && let Some(buf) = pool().pop()
    {
        return buf;
    }
    vec![0u8; len.max(BUFFER_SIZE)]
}

/// The first `len` bytes of `buf` as `Bytes`; the buffer returns to the pool when the
/// last handle drops.
pub fn freeze(buf: Vec<u8>, len: usize) -> Bytes {
    if buf.len() == BUFFER_SIZE {
        Bytes::from_owner(Recycled { buf, len })
    } else {
        let mut buf = buf;
        buf.truncate(len);
        Bytes::from(buf)
    }
}

struct Recycled {
    buf: Vec<u8>,
    len: usize,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        let mut pool = pool();
        if pool.len() < POOLED {
            pool.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_and_keep_their_size() {
        let mut buf = take(1000);
        assert_eq!(buf.len(), BUFFER_SIZE);
        buf[..3].copy_from_slice(b"abc");
        let bytes = freeze(buf, 3);
        assert_eq!(&bytes[..], b"abc");
        let clone = bytes.clone();
        drop(bytes);
        assert_eq!(&clone[..], b"abc");
        drop(clone);
        assert!(pool().iter().all(|b| b.len() == BUFFER_SIZE));
        let big = take(BUFFER_SIZE + 1);
        assert_eq!(big.len(), BUFFER_SIZE + 1);
        assert_eq!(freeze(big, 5).len(), 5);
    }
}
