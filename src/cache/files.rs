//! The `files` blob store: one content-addressed file per blob under
//! `data_dir/blobs/sha256/<2>/<hex>`, staged as `data_dir/blobs/staging/<fill id>`,
//! fsynced and renamed into place on commit. Paths are built only from validated
//! digests and numeric fill ids, never from client input.

use super::blob_store::{BlobLocation, BlobRead, BlobReader, BlobStore, StagedBlob};
use super::buffers;
use crate::oci::Digest;
use bytes::Bytes;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone)]
pub struct FileBlobStore {
    root: PathBuf,
}

impl FileBlobStore {
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let root = data_dir.join("blobs");
        fs::create_dir_all(root.join("sha256"))?;
        fs::create_dir_all(root.join("staging"))?;
        Ok(FileBlobStore { root })
    }

    fn staging_path(&self, fill_id: u64) -> PathBuf {
        self.root.join("staging").join(format!("{fill_id:016x}"))
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.hex();
        self.root.join("sha256").join(&hex[..2]).join(hex)
    }
}

struct StagedFile {
    file: File,
    path: PathBuf,
    final_path: Box<dyn Fn(&Digest) -> PathBuf + Send>,
    written: u64,
}

impl StagedBlob for StagedFile {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.file.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Allocates the blocks at once (`fallocate`, size unchanged): the filesystem then
    /// maps extents once instead of per page as the writes arrive.
    #[cfg(target_os = "linux")]
    fn reserve(&mut self, size: u64) {
        let _ = rustix::fs::fallocate(&self.file, rustix::fs::FallocateFlags::KEEP_SIZE, 0, size);
    }

    fn readable_len(&self) -> u64 {
        self.written
    }

    fn commit(self: Box<Self>, digest: &Digest) -> io::Result<BlobLocation> {
        self.file.sync_all()?;
        let target = (self.final_path)(digest);
        let dir = target
            .parent()
            .ok_or_else(|| io::Error::other("blob path has no parent"))?;
        fs::create_dir_all(dir)?;
        fs::rename(&self.path, &target)?;
        File::open(dir)?.sync_all()?;
        Ok(BlobLocation::Files)
    }

    fn discard(self: Box<Self>) {
        let _ = fs::remove_file(&self.path);
    }
}

/// A blob file read with positioned reads from an offset it keeps itself.
struct FileReader {
    file: std::sync::Arc<File>,
    offset: u64,
}

impl io::Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// Set once a filesystem answered `EOPNOTSUPP` to `RWF_NOWAIT`: stop asking.
static NOWAIT_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

impl BlobRead for FileReader {
    /// `preadv2(RWF_NOWAIT)`: served from the page cache, or `EAGAIN` without touching
    /// the disk. Hot blobs (the common case for a cache) then cost no thread hand-off;
    /// only reads that would wait for the disk go to the blocking pool.
    #[cfg(target_os = "linux")]
    fn read_now(&mut self, max: usize) -> io::Result<Option<Bytes>> {
        use rustix::io::{Errno, ReadWriteFlags, preadv2};
        if NOWAIT_UNSUPPORTED.load(Ordering::Relaxed) {
            return Ok(None);
        }
        let mut buf = buffers::take(max);
        match preadv2(
            &self.file,
            &mut [io::IoSliceMut::new(&mut buf[..max])],
            self.offset,
            ReadWriteFlags::NOWAIT,
        ) {
            Ok(n) => {
                self.offset += n as u64;
                Ok(Some(buffers::freeze(buf, n)))
            }
            Err(Errno::AGAIN) => Ok(None),
            Err(Errno::OPNOTSUPP) | Err(Errno::NOSYS) | Err(Errno::INVAL) => {
                NOWAIT_UNSUPPORTED.store(true, Ordering::Relaxed);
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn file_at(&self) -> Option<(std::sync::Arc<File>, u64)> {
        Some((self.file.clone(), self.offset))
    }
}

fn open_at(path: &Path, offset: u64) -> io::Result<BlobReader> {
    Ok(Box::new(FileReader {
        file: std::sync::Arc::new(File::open(path)?),
        offset,
    }))
}

impl BlobStore for FileBlobStore {
    fn name(&self) -> &'static str {
        "files"
    }

    fn begin(&self, fill_id: u64) -> io::Result<Box<dyn StagedBlob>> {
        let path = self.staging_path(fill_id);
        let file = OpenOptions::new().write(true).create(true).truncate(true).open(&path)?;
        let root = self.root.clone();
        Ok(Box::new(StagedFile {
            file,
            path,
            final_path: Box::new(move |d: &Digest| root.join("sha256").join(&d.hex()[..2]).join(d.hex())),
            written: 0,
        }))
    }

    fn open_staged(&self, fill_id: u64, offset: u64) -> io::Result<BlobReader> {
        open_at(&self.staging_path(fill_id), offset)
    }

    fn open(&self, digest: &Digest, _location: &BlobLocation, offset: u64) -> io::Result<BlobReader> {
        open_at(&self.blob_path(digest), offset)
    }

    /// One `fstat` of the opened file: a truncated or replaced file is never served.
    fn open_checked(
        &self,
        digest: &Digest,
        _location: &BlobLocation,
        range: std::ops::Range<u64>,
        size: u64,
    ) -> io::Result<BlobReader> {
        let offset = range.start;
        let file = File::open(self.blob_path(digest))?;
        let len = file.metadata()?.len();
        if len != size {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("blob file has {len} bytes, its record says {size}"),
            ));
        }
        Ok(Box::new(FileReader {
            file: std::sync::Arc::new(file),
            offset,
        }))
    }

    fn stored_size(&self, digest: &Digest, _location: &BlobLocation) -> io::Result<Option<u64>> {
        match fs::metadata(self.blob_path(digest)) {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn remove(&self, digest: &Digest, _location: &BlobLocation) -> io::Result<()> {
        match fs::remove_file(self.blob_path(digest)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn discard_staged(&self, fill_id: u64) -> io::Result<()> {
        match fs::remove_file(self.staging_path(fill_id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Written straight to its final name: no staging file, no fsync per blob.
    fn import(&self, _fill_id: u64, digest: &Digest, bytes: &[u8]) -> io::Result<BlobLocation> {
        let path = self.blob_path(digest);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(&path, bytes)?;
        Ok(BlobLocation::Files)
    }

    /// `syncfs` of the filesystem holding the blobs: one call for all imported files.
    fn sync(&self) -> io::Result<()> {
        let dir = File::open(&self.root)?;
        rustix::fs::syncfs(&dir)?;
        Ok(())
    }

    fn probe(&self) -> io::Result<()> {
        let path = self.root.join("staging").join("readiness-probe");
        fs::write(&path, b"ok")?;
        fs::remove_file(&path)
    }

    fn list(&self) -> io::Result<Vec<(Option<Digest>, BlobLocation)>> {
        let mut out = Vec::new();
        self.for_each_stored(&mut |d, l| {
            out.push((d, l));
            Ok(())
        })?;
        Ok(out)
    }

    /// Shard by shard, so no more than one directory's names are held at once.
    fn for_each_stored(&self, f: &mut dyn FnMut(Option<Digest>, BlobLocation) -> io::Result<()>) -> io::Result<()> {
        for shard in fs::read_dir(self.root.join("sha256"))? {
            let shard = shard?;
            if !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(shard.path())? {
                let entry = entry?;
                let name = entry.file_name();
                match name.to_str().and_then(|n| Digest::from_hex(n).ok()) {
                    Some(d) => f(Some(d), BlobLocation::Files)?,
                    // A stray file that names no digest: nothing can reference it.
                    None => {
                        let _ = fs::remove_file(entry.path());
                    }
                }
            }
        }
        // Staging files survive only a crash; no fill is running during repair.
        for entry in fs::read_dir(self.root.join("staging"))? {
            let _ = fs::remove_file(entry?.path());
        }
        Ok(())
    }
}
