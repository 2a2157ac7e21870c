//! dav-server's `DavFileSystem` over the gateway's `Fs`.

use std::io::SeekFrom;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes};
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, FsError, FsFuture, FsStream, OpenOptions,
    ReadDirMeta,
};
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use tessera_gateway::placement::seed_for_path;
use tessera_gateway::{Error, FileReader, Fs, ObjectWriter, split_path};
use tessera_meta::{FileKind, Inode};

use super::errors::to_dav_error;

/// What one request will want from meta first, so that the first lookup
/// of its path fetches it in the same round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefetch {
    /// Just the inode (GET, HEAD, DELETE, ...).
    Inode,
    /// The directory holding the path and what is there (PUT).
    Parent,
    /// The inode and, for a directory, its entries (PROPFIND, Depth 1).
    Listing,
}

/// What this request has learnt about its path from meta. Only reads use
/// it, and every change made through this request forgets it, so it is
/// never staler than the request's own first look.
#[derive(Default)]
struct Seen {
    path: String,
    inode: Option<Inode>,
    parent: Option<(Inode, String, Option<Inode>)>,
    entries: Option<Vec<(String, Inode)>>,
}

/// dav-server's view of the file system, one per request (see
/// [`DavFs::for_request`]): dav-server asks for a path's metadata and then
/// opens or lists it, and this answers both from one call to meta.
#[derive(Clone)]
pub struct DavFs {
    fs: Fs,
    prefetch: Prefetch,
    seen: Arc<Mutex<Seen>>,
}

impl DavFs {
    pub fn new(fs: Fs) -> Self {
        Self::for_request(fs, Prefetch::Inode)
    }

    pub fn for_request(fs: Fs, prefetch: Prefetch) -> Self {
        DavFs {
            fs,
            prefetch,
            seen: Arc::default(),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets what was seen: the request is changing the namespace.
    fn forget(&self) {
        *self.seen() = Seen::default();
    }

    /// The inode at `p`, from what this request saw, else from meta (with
    /// whatever this request will want next).
    async fn inode_at(&self, p: &str) -> Result<Inode, Error> {
        {
            let seen = self.seen();
            if seen.path == p {
                if let Some(i) = &seen.inode {
                    return Ok(i.clone());
                }
                if let Some((_, _, existing)) = &seen.parent {
                    return existing
                        .clone()
                        .ok_or_else(|| Error::NotFound(p.to_string()));
                }
            }
        }
        let components = split_path(p)?;
        let mut fresh = Seen {
            path: p.to_string(),
            ..Seen::default()
        };
        let result = match self.prefetch {
            Prefetch::Parent if !components.is_empty() => {
                let name = components.last().cloned().unwrap_or_default();
                let (parent, existing) = self.fs.meta().resolve_parent(components).await?;
                fresh.parent = Some((parent, name, existing.clone()));
                existing.ok_or_else(|| Error::NotFound(p.to_string()))
            }
            Prefetch::Listing => {
                let (inode, entries) = self.fs.meta().list(components).await?;
                fresh.inode = Some(inode.clone());
                fresh.entries = entries;
                Ok(inode)
            }
            _ => {
                let inode = self.fs.meta().resolve(components).await?;
                fresh.inode = Some(inode.clone());
                Ok(inode)
            }
        };
        *self.seen() = fresh;
        result
    }

    /// The directory holding `p`, its last name, and what is there now.
    async fn parent_at(&self, p: &str) -> Result<(Inode, String, Option<Inode>), Error> {
        {
            let seen = self.seen();
            if seen.path == p
                && let Some(parent) = &seen.parent
            {
                return Ok(parent.clone());
            }
        }
        let components = split_path(p)?;
        let name = components
            .last()
            .cloned()
            .ok_or_else(|| Error::Invalid("the root has no parent".into()))?;
        let (parent, existing) = self.fs.meta().resolve_parent(components).await?;
        Ok((parent, name, existing))
    }
}

/// The decoded path as UTF-8, or a refusal.
fn path_str(path: &DavPath) -> Result<String, Error> {
    String::from_utf8(path.as_bytes().to_vec())
        .map_err(|_| Error::InvalidPath("the path is not UTF-8".into()))
}

#[derive(Debug, Clone)]
pub struct Meta(pub Inode);

fn ns_to_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH
    }
}

impl DavMetaData for Meta {
    fn len(&self) -> u64 {
        self.0.size
    }
    fn modified(&self) -> Result<SystemTime, FsError> {
        Ok(ns_to_time(self.0.mtime))
    }
    fn is_dir(&self) -> bool {
        self.0.kind == FileKind::Dir
    }
    fn is_symlink(&self) -> bool {
        self.0.kind == FileKind::Symlink
    }
    /// Strong: versions are unique across the cluster and change with every commit.
    fn etag(&self) -> Option<String> {
        Some(format!("{:x}-{:x}", self.0.ino, self.0.version))
    }
    fn accessed(&self) -> Result<SystemTime, FsError> {
        Ok(ns_to_time(self.0.atime))
    }
    fn status_changed(&self) -> Result<SystemTime, FsError> {
        Ok(ns_to_time(self.0.ctime))
    }
    fn executable(&self) -> Result<bool, FsError> {
        Ok(self.0.mode & 0o100 != 0)
    }
}

struct Entry {
    name: String,
    inode: Inode,
}

impl DavDirEntry for Entry {
    fn name(&self) -> Vec<u8> {
        self.name.as_bytes().to_vec()
    }
    fn metadata(&self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        let m: Box<dyn DavMetaData> = Box::new(Meta(self.inode.clone()));
        async move { Ok(m) }.boxed()
    }
}

/// An open file: a streaming reader, a streaming whole-file upload, or an
/// in-place (ranged) write.
enum File {
    Read(FileReader),
    Upload {
        writer: Option<ObjectWriter>,
        expected: Option<u64>,
        done: Option<Inode>,
    },
    Patch {
        fs: Fs,
        ino: u64,
        pos: u64,
    },
}

impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            File::Read(r) => write!(f, "Read({r:?})"),
            File::Upload { writer, .. } => write!(f, "Upload({writer:?})"),
            File::Patch { ino, pos, .. } => write!(f, "Patch({ino}@{pos})"),
        }
    }
}

impl DavFile for File {
    fn metadata(&mut self) -> FsFuture<'_, Box<dyn DavMetaData>> {
        async move {
            let inode = match self {
                File::Read(r) => r.inode().clone(),
                File::Upload { done: Some(i), .. } => i.clone(),
                File::Upload { .. } => return Err(FsError::GeneralFailure),
                File::Patch { fs, ino, .. } => fs.getattr(*ino).await.map_err(to_dav_error)?,
            };
            Ok(Box::new(Meta(inode)) as Box<dyn DavMetaData>)
        }
        .boxed()
    }

    fn write_buf(&mut self, mut buf: Box<dyn Buf + Send>) -> FsFuture<'_, ()> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        self.write_bytes(bytes)
    }

    fn write_bytes(&mut self, buf: Bytes) -> FsFuture<'_, ()> {
        async move {
            match self {
                File::Upload {
                    writer: Some(w), ..
                } => w.write(buf).await.map_err(to_dav_error),
                File::Patch { fs, ino, pos } => {
                    fs.write_at(*ino, *pos, &buf).await.map_err(to_dav_error)?;
                    *pos += buf.len() as u64;
                    Ok(())
                }
                _ => Err(FsError::Forbidden),
            }
        }
        .boxed()
    }

    fn read_bytes(&mut self, count: usize) -> FsFuture<'_, Bytes> {
        async move {
            match self {
                File::Read(r) => r.read(count).await.map_err(to_dav_error),
                _ => Err(FsError::Forbidden),
            }
        }
        .boxed()
    }

    fn seek(&mut self, pos: SeekFrom) -> FsFuture<'_, u64> {
        async move {
            match (self, pos) {
                (File::Read(r), SeekFrom::Start(p)) => {
                    r.seek(p);
                    Ok(p)
                }
                (File::Read(r), SeekFrom::Current(d)) => {
                    let p = r
                        .position()
                        .checked_add_signed(d)
                        .ok_or(FsError::GeneralFailure)?;
                    r.seek(p);
                    Ok(p)
                }
                (File::Read(r), SeekFrom::End(d)) => {
                    let p = r
                        .inode()
                        .size
                        .checked_add_signed(d)
                        .ok_or(FsError::GeneralFailure)?;
                    r.seek(p);
                    Ok(p)
                }
                (File::Patch { pos, .. }, SeekFrom::Start(p)) => {
                    *pos = p;
                    Ok(p)
                }
                _ => Err(FsError::NotImplemented),
            }
        }
        .boxed()
    }

    fn flush(&mut self) -> FsFuture<'_, ()> {
        async move {
            if let File::Upload {
                writer,
                expected,
                done,
            } = self
                && let Some(w) = writer.take()
            {
                *done = Some(w.finish(*expected).await.map_err(to_dav_error)?);
            }
            Ok(())
        }
        .boxed()
    }
}

impl DavFs {
    async fn open_impl(
        &self,
        path: &DavPath,
        options: OpenOptions,
    ) -> Result<Box<dyn DavFile>, Error> {
        let p = path_str(path)?;
        if !options.write && !options.append {
            let inode = self.inode_at(&p).await?;
            if inode.is_dir() {
                return Err(Error::IsADirectory(p));
            }
            // Read one block now: if the replicas cannot be reached, the
            // client gets a 503 instead of headers followed by a cut body.
            if inode.size > 0 {
                self.fs.read(&inode, 0, 1).await?;
            }
            return Ok(Box::new(File::Read(self.fs.reader(inode))));
        }
        let (parent, name, existing) = self.parent_at(&p).await?;
        self.forget();
        match &existing {
            Some(i) if i.is_dir() => return Err(Error::IsADirectory(p)),
            Some(_) if options.create_new => return Err(Error::Exists(p)),
            None if !options.create && !options.create_new => return Err(Error::NotFound(p)),
            _ => {}
        }
        if options.truncate {
            let (seed, mode) = match &existing {
                Some(i) => (i.object.seed, i.mode),
                None => (seed_for_path(&p), 0o644),
            };
            let writer = self.fs.replace(parent.ino, &name, seed, mode).await?;
            return Ok(Box::new(File::Upload {
                writer: Some(writer),
                expected: options.size,
                done: None,
            }));
        }
        let inode = match existing {
            Some(i) => i,
            None => {
                self.fs
                    .create(parent.ino, &name, 0o644, seed_for_path(&p), false)
                    .await?
            }
        };
        let pos = if options.append { inode.size } else { 0 };
        Ok(Box::new(File::Patch {
            fs: self.fs.clone(),
            ino: inode.ino,
            pos,
        }))
    }

    async fn remove(&self, path: &DavPath, dir: bool) -> Result<(), Error> {
        self.forget();
        let (parent, name) = self.fs.parent_of(&path_str(path)?).await?;
        if dir {
            self.fs.rmdir(parent.ino, &name).await
        } else {
            self.fs.unlink(parent.ino, &name).await
        }
    }
}

impl DavFileSystem for DavFs {
    fn open<'a>(
        &'a self,
        path: &'a DavPath,
        options: OpenOptions,
    ) -> FsFuture<'a, Box<dyn DavFile>> {
        async move { self.open_impl(path, options).await.map_err(to_dav_error) }.boxed()
    }

    fn read_dir<'a>(
        &'a self,
        path: &'a DavPath,
        _meta: ReadDirMeta,
    ) -> FsFuture<'a, FsStream<Box<dyn DavDirEntry>>> {
        async move {
            let run = async {
                let p = path_str(path)?;
                let listed = {
                    let mut seen = self.seen();
                    if seen.path == p {
                        seen.entries.take()
                    } else {
                        None
                    }
                };
                match listed {
                    Some(entries) => Ok(entries),
                    None => match self.fs.meta().list(split_path(&p)?).await? {
                        (_, Some(entries)) => Ok(entries),
                        (_, None) => Err(Error::NotADirectory(p)),
                    },
                }
            };
            let entries = run.await.map_err(to_dav_error)?;
            let items: Vec<Result<Box<dyn DavDirEntry>, FsError>> = entries
                .into_iter()
                .map(|(name, inode)| Ok(Box::new(Entry { name, inode }) as Box<dyn DavDirEntry>))
                .collect();
            Ok(Box::pin(futures::stream::iter(items)) as FsStream<Box<dyn DavDirEntry>>)
        }
        .boxed()
    }

    fn metadata<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, Box<dyn DavMetaData>> {
        async move {
            let run = async { self.inode_at(&path_str(path)?).await };
            let inode = run.await.map_err(to_dav_error)?;
            Ok(Box::new(Meta(inode)) as Box<dyn DavMetaData>)
        }
        .boxed()
    }

    fn create_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            self.forget();
            let run = async {
                let (parent, name) = self.fs.parent_of(&path_str(path)?).await?;
                self.fs.mkdir(parent.ino, &name, 0o755).await
            };
            run.await.map(|_| ()).map_err(to_dav_error)
        }
        .boxed()
    }

    fn remove_dir<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move { self.remove(path, true).await.map_err(to_dav_error) }.boxed()
    }

    fn remove_file<'a>(&'a self, path: &'a DavPath) -> FsFuture<'a, ()> {
        async move { self.remove(path, false).await.map_err(to_dav_error) }.boxed()
    }

    fn rename<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            self.forget();
            let run = async {
                let (p1, n1) = self.fs.parent_of(&path_str(from)?).await?;
                let (p2, n2) = self.fs.parent_of(&path_str(to)?).await?;
                self.fs.rename(p1.ino, &n1, p2.ino, &n2, false).await
            };
            run.await.map(|_| ()).map_err(to_dav_error)
        }
        .boxed()
    }

    fn copy<'a>(&'a self, from: &'a DavPath, to: &'a DavPath) -> FsFuture<'a, ()> {
        async move {
            self.forget();
            let run = async {
                let src = self.fs.resolve(&path_str(from)?).await?;
                let dest = path_str(to)?;
                let (parent, name) = self.fs.parent_of(&dest).await?;
                if src.is_dir() {
                    return self.fs.mkdir(parent.ino, &name, src.mode).await;
                }
                let seed = match self.fs.lookup(parent.ino, &name).await {
                    Ok(i) => i.object.seed,
                    Err(_) => seed_for_path(&dest),
                };
                self.fs.copy_file(&src, parent.ino, &name, seed).await
            };
            run.await.map(|_| ()).map_err(to_dav_error)
        }
        .boxed()
    }
}
