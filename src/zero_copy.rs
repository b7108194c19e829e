//! Blob bytes the kernel copies: with `[server] sendfile = true`, a warm blob of the
//! `files` store, sent on a plain HTTP/1.x connection, goes from the page cache to the
//! socket with sendfile(2) instead of being read into a buffer and written from it. Off by
//! default: on the machine we measured (loopback, 2 vCPUs), copying served one client
//! faster at the same server CPU per GB (the receiver then copies from socket pages
//! still in the shared cache instead of page-cache pages that are not; benches/README.md,
//! "sendfile or copy").
//!
//! hyper cannot hand over its socket, so the hand-off happens under it. The body yields
//! *placeholder* frames: slices of a region of memory that is never read, each standing
//! for a range of an open file. hyper queues body frames as they are and gives their
//! slices to the connection's writer unchanged (it writes vectored because the writer
//! says it can, so nothing is copied into its own buffer), and the writer,
//! [`KernelCopyStream`], knows a placeholder slice by its address: it sends the file
//! range the slice stands for, from the offset the slice's position says, and counts
//! those bytes as written. A partial send is a short write, as hyper expects of any.
//!
//! The region is cut into slots; a frame holds one from the moment it is made until
//! hyper drops it, so a slot always names the right file range, whatever order frames
//! are written or dropped in. The region is an anonymous mapping never touched, so it
//! costs address space, not memory. A connection is given placeholder frames only when
//! its writer is a [`KernelCopyStream`] (plain TCP) and the request is HTTP/1.x; TLS and
//! HTTP/2 read and copy as before, as does any frame when every slot is taken. A file
//! that turns out shorter than its range fails the write, which closes the connection:
//! the client sees a cut body, never wrong bytes.

use bytes::Bytes;
use std::fs::File;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// Largest placeholder frame.
pub const SLOT_SIZE: usize = 1024 * 1024;
/// Placeholder frames alive at once (on hyper's queue and in the body's channel), across
/// every connection: 256 MiB of address space.
const SLOTS: usize = 256;

/// Marks a request whose connection writes with a [`KernelCopyStream`] (a request
/// extension).
#[derive(Debug, Clone, Copy)]
pub struct KernelCopyCapable;

struct Segment {
    file: Arc<File>,
    offset: u64,
}

struct Slots {
    free: Vec<usize>,
    segments: Vec<Option<Segment>>,
}

/// The region: an anonymous read-only mapping (memmap2), never written and never read,
/// so it takes address space and no memory whatever the allocator does. `None` when it
/// could not be mapped: every frame is then copied.
fn region() -> Option<&'static [u8]> {
    static REGION: OnceLock<Option<&'static [u8]>> = OnceLock::new();
    *REGION.get_or_init(|| {
        let map = memmap2::MmapMut::map_anon(SLOTS * SLOT_SIZE)
            .and_then(memmap2::MmapMut::make_read_only)
            .ok()?;
        let map: &'static memmap2::Mmap = Box::leak(Box::new(map));
        Some(&map[..])
    })
}

fn slots() -> std::sync::MutexGuard<'static, Slots> {
    static TABLE: Mutex<Slots> = Mutex::new(Slots {
        free: Vec::new(),
        segments: Vec::new(),
    });
    let mut table = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    if table.segments.is_empty() {
        table.segments.resize_with(SLOTS, || None);
        table.free = (0..SLOTS).rev().collect();
    }
    table
}

/// A placeholder frame's slot, given back when the frame is dropped.
struct Placeholder {
    slot: usize,
    len: usize,
}

impl AsRef<[u8]> for Placeholder {
    fn as_ref(&self) -> &[u8] {
        let start = self.slot * SLOT_SIZE;
        // A placeholder exists only once the region does.
        region().map_or(&[], |r| &r[start..start + self.len])
    }
}

impl Drop for Placeholder {
    fn drop(&mut self) {
        let mut table = slots();
        table.segments[self.slot] = None;
        table.free.push(self.slot);
    }
}

/// A frame standing for bytes `offset..offset + len` of `file`, to be sent by a
/// [`KernelCopyStream`]; `None` when `len` is 0 or above [`SLOT_SIZE`], or every slot is
/// taken (the caller then reads and copies).
pub fn frame(file: &Arc<File>, offset: u64, len: usize) -> Option<Bytes> {
    if len == 0 || len > SLOT_SIZE || region().is_none() {
        return None;
    }
    let slot = {
        let mut table = slots();
        let slot = table.free.pop()?;
        table.segments[slot] = Some(Segment {
            file: file.clone(),
            offset,
        });
        slot
    };
    Some(Bytes::from_owner(Placeholder { slot, len }))
}

/// Whether bytes `offset..offset + len` of `file` look to be in the page cache: its first
/// and last byte can be read without waiting for the disk (`preadv2(RWF_NOWAIT)`). A
/// blob read once is cached whole or not at all far more often than in patches; a page
/// missed in between costs sendfile a wait on the disk, no wrong byte.
pub fn resident(file: &File, offset: u64, len: usize) -> bool {
    use rustix::io::{ReadWriteFlags, preadv2};
    let cached = |at: u64| {
        let mut byte = [0u8; 1];
        matches!(
            preadv2(file, &mut [io::IoSliceMut::new(&mut byte)], at, ReadWriteFlags::NOWAIT),
            Ok(1)
        )
    };
    len > 0 && cached(offset) && cached(offset + len as u64 - 1)
}

/// The file range a placeholder slice stands for: the file and the offset of the slice's
/// first byte. `None` for any other memory.
fn placeholder_of(buf: &[u8]) -> Option<(Arc<File>, u64)> {
    let base = region()?.as_ptr() as usize;
    let at = (buf.as_ptr() as usize).wrapping_sub(base);
    if buf.is_empty() || at >= SLOTS * SLOT_SIZE {
        return None;
    }
    let (slot, within) = (at / SLOT_SIZE, at % SLOT_SIZE);
    let table = slots();
    let segment = table.segments[slot].as_ref()?;
    Some((segment.file.clone(), segment.offset + within as u64))
}

/// A client's TCP connection whose writer sends placeholder frames with sendfile(2).
pub struct KernelCopyStream {
    tcp: TcpStream,
}

impl KernelCopyStream {
    pub fn new(tcp: TcpStream) -> KernelCopyStream {
        KernelCopyStream { tcp }
    }

    /// Sends up to `len` bytes of `file` from `offset`; waits for room in the socket.
    fn poll_send_file(&self, cx: &mut Context<'_>, file: &File, offset: u64, len: usize) -> Poll<io::Result<usize>> {
        loop {
            ready!(self.tcp.poll_write_ready(cx))?;
            let sent = self.tcp.try_io(Interest::WRITABLE, || {
                let mut at = offset;
                rustix::fs::sendfile(&self.tcp, file, Some(&mut at), len).map_err(io::Error::from)
            });
            match sent {
                Ok(0) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "blob file is shorter than the range being sent",
                    )));
                }
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for KernelCopyStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for KernelCopyStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match placeholder_of(buf) {
            Some((file, offset)) => self.poll_send_file(cx, &file, offset, buf.len()),
            None => Pin::new(&mut self.tcp).poll_write(cx, buf),
        }
    }

    /// The slices before the first placeholder go out in one writev; a placeholder at
    /// the front goes out alone with sendfile. Either is a short write of the whole.
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let Some(first) = bufs.iter().position(|b| !b.is_empty()) else {
            return Poll::Ready(Ok(0));
        };
        if let Some((file, offset)) = placeholder_of(&bufs[first]) {
            return self.poll_send_file(cx, &file, offset, bufs[first].len());
        }
        let plain = bufs[first..]
            .iter()
            .position(|b| placeholder_of(b).is_some())
            .map_or(bufs.len(), |n| first + n);
        Pin::new(&mut self.tcp).poll_write_vectored(cx, &bufs[first..plain])
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// The slots are global: the test that takes them all must not run beside the others.
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    fn file_of(bytes: &[u8]) -> (tempfile::NamedTempFile, Arc<File>) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        let file = Arc::new(File::open(f.path()).unwrap());
        (f, file)
    }

    async fn pair() -> (KernelCopyStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(client, listener.accept());
        (KernelCopyStream::new(accepted.unwrap().0), client.unwrap())
    }

    #[tokio::test]
    async fn placeholders_between_plain_slices_arrive_as_the_file_bytes_in_order() {
        let _serial = SERIAL.lock().await;
        let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let (_keep, file) = file_of(&content);
        let (mut writer, mut reader) = pair().await;
        let frames = [
            Bytes::from_static(b"HEAD\r\n"),
            frame(&file, 10, SLOT_SIZE).unwrap(),
            Bytes::from_static(b"|"),
            frame(&file, 2_000_000, 999_999).unwrap(),
            Bytes::from_static(b"END"),
        ];
        let expected: Vec<u8> = [
            &b"HEAD\r\n"[..],
            &content[10..10 + SLOT_SIZE],
            b"|",
            &content[2_000_000..2_999_999],
            b"END",
        ]
        .concat();
        let sender = tokio::spawn(async move {
            let mut bufs: Vec<Bytes> = frames.to_vec();
            while bufs.iter().any(|b| !b.is_empty()) {
                let slices: Vec<io::IoSlice<'_>> = bufs.iter().map(|b| io::IoSlice::new(b)).collect();
                let mut n = writer.write_vectored(&slices).await.unwrap();
                for b in bufs.iter_mut() {
                    let take = n.min(b.len());
                    bytes::Buf::advance(b, take);
                    n -= take;
                }
            }
            writer.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.unwrap();
        sender.await.unwrap();
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "the bytes differ");
    }

    #[tokio::test]
    async fn a_file_shorter_than_its_range_fails_the_write() {
        let _serial = SERIAL.lock().await;
        let (_keep, file) = file_of(b"short");
        let (mut writer, _reader) = pair().await;
        let placeholder = frame(&file, 0, 100).unwrap();
        let mut sent = 0;
        let err = loop {
            match writer.write(&placeholder[sent..]).await {
                Ok(n) => sent += n,
                Err(e) => break e,
            }
        };
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(sent, 5);
    }

    #[test]
    fn slots_are_given_back_and_other_memory_is_never_a_placeholder() {
        let _serial = SERIAL.blocking_lock();
        let (_keep, file) = file_of(b"abc");
        assert!(placeholder_of(b"abc").is_none());
        assert!(frame(&file, 0, 0).is_none());
        assert!(frame(&file, 0, SLOT_SIZE + 1).is_none());
        let frames: Vec<Bytes> = (0..SLOTS).map_while(|_| frame(&file, 0, 3)).collect();
        assert_eq!(frames.len(), SLOTS);
        assert!(frame(&file, 0, 3).is_none(), "every slot taken");
        let (f, offset) = placeholder_of(&frames[0][1..]).unwrap();
        assert!(Arc::ptr_eq(&f, &file));
        assert_eq!(offset, 1);
        drop(frames);
        assert!(frame(&file, 0, 3).is_some());
    }

    #[test]
    fn a_file_just_written_is_resident_and_a_range_past_its_end_is_not() {
        let (_keep, file) = file_of(&[7u8; 8192]);
        assert!(resident(&file, 0, 8192));
        assert!(!resident(&file, 0, 8193));
        assert!(!resident(&file, 0, 0));
    }
}
