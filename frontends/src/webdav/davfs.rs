//! dav-server's `DavFileSystem` over the gateway's `Fs`.

use std::io::SeekFrom;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes};
use dav_server::davpath::DavPath;
use dav_server::fs::{
    DavDirEntry, DavFile, DavFileSystem, DavMetaData, DavProp, FsError, FsFuture, FsStream,
    OpenOptions, ReadDirMeta,
};
use http::StatusCode;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use tessera_gateway::placement::seed_for_path;
use tessera_gateway::{Error, FileReader, Fs, ObjectWriter, split_path};
use tessera_meta::{DavView, DeadProp, FileKind, Inode, LockInfo, ViewWant};

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

/// What this request has learnt about its path from meta (one [`DavView`]:
/// the inode, its parent or its entries, and the locks around it). Only reads use it, and every change made through this
/// request forgets it, so it is never staler than the request's own first
/// look.
#[derive(Default)]
struct Seen {
    /// The path's key (its components joined by '/').
    key: String,
    view: Option<DavView>,
}

/// Locks meta reported around `key`: those covering it and those below it
/// (so they answer for any path at or below `key`).
struct SeenLocks {
    key: String,
    locks: Vec<LockInfo>,
}

/// dav-server's view of the file system, one per request (see
/// [`DavFs::for_request`]): dav-server asks for a path's metadata and then
/// opens or lists it, reads its properties and checks its locks, and this
/// answers all of that from one call to meta.
#[derive(Clone)]
pub struct DavFs {
    fs: Fs,
    prefetch: Prefetch,
    seen: Arc<Mutex<Seen>>,
    locks: Arc<Mutex<Option<SeenLocks>>>,
    /// For a COPY: the source's and the destination's keys, so that the
    /// collections dav-server creates for the copy get their source's dead
    /// properties.
    copying: Option<(String, String)>,
    /// For a PROPPATCH: the Windows properties to apply with the others
    /// (an mtime, and properties to keep), until applied.
    windows: Arc<Mutex<Option<WindowsPatch>>>,
}

type WindowsPatch = (Option<i64>, Vec<DeadProp>);

/// The key meta files a path's locks under: its components joined by '/'
/// ("" is the root).
pub fn lock_key(path: &DavPath) -> Result<String, Error> {
    Ok(split_path(&path_str(path)?)?.join("/"))
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
            locks: Arc::default(),
            copying: None,
            windows: Arc::default(),
        }
    }

    /// Windows properties this PROPPATCH sets (see `props::win32_patch`).
    pub fn windows_patch(&self, mtime: Option<i64>, keep: Vec<DeadProp>) {
        *self.windows.lock().unwrap_or_else(|e| e.into_inner()) = Some((mtime, keep));
    }

    /// Whether the Windows properties are still to be applied.
    pub fn windows_pending(&self) -> bool {
        self.windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// A whole-file upload publishes with the modification time the PUT
    /// gave (see [`DavFs::windows_patch`]), so nothing is left to apply
    /// after it.
    fn take_put_mtime(&self) -> Option<i64> {
        let mut w = self.windows.lock().unwrap_or_else(|e| e.into_inner());
        match w.as_ref() {
            Some((Some(ns), keep)) if keep.is_empty() => {
                let ns = *ns;
                *w = None;
                Some(ns)
            }
            _ => None,
        }
    }

    fn take_windows(&self) -> Option<WindowsPatch> {
        self.windows
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Applies the Windows properties on their own (the request had no
    /// other dead property to apply them with).
    pub async fn apply_windows_patch(&self, p: &str) -> Result<(), Error> {
        let Some((mtime, keep)) = self.take_windows() else {
            return Ok(());
        };
        let inode = self.inode_at(p).await?;
        self.forget();
        let patch = keep.into_iter().map(|d| (true, d)).collect();
        Ok(self.fs.meta().patch_props(inode.ino, patch, mtime).await?)
    }

    /// Marks this request a COPY from `src` to `dest` (decoded paths).
    pub fn copying(mut self, src: &str, dest: &str) -> Self {
        if let (Ok(s), Ok(d)) = (split_path(src), split_path(dest)) {
            self.copying = Some((s.join("/"), d.join("/")));
        }
        self
    }

    /// The source of the collection dav-server creates at `key` while
    /// copying, if it is one.
    fn copy_source(&self, key: &str) -> Option<String> {
        let (src, dest) = self.copying.as_ref()?;
        if key == dest {
            return Some(src.clone());
        }
        let rest = key.strip_prefix(dest.as_str())?;
        let rest = if dest.is_empty() {
            rest
        } else {
            rest.strip_prefix('/')?
        };
        Some(if src.is_empty() {
            rest.to_string()
        } else {
            format!("{src}/{rest}")
        })
    }

    pub fn fs(&self) -> &Fs {
        &self.fs
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn seen_locks(&self) -> std::sync::MutexGuard<'_, Option<SeenLocks>> {
        self.locks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets what was seen: the request is changing the namespace.
    fn forget(&self) {
        *self.seen() = Seen::default();
    }

    /// Forgets the locks seen: the request is changing them.
    pub fn forget_locks(&self) {
        *self.seen_locks() = None;
    }

    /// Asks meta about `p` (with whatever this request will want next) and
    /// remembers the answer.
    async fn look(&self, p: &str, want: ViewWant, props: bool) -> Result<DavView, Error> {
        let components = split_path(p)?;
        let key = components.join("/");
        let view = self.fs.meta().view(components, want, props).await?;
        *self.seen_locks() = Some(SeenLocks {
            key: key.clone(),
            locks: view.locks.clone(),
        });
        *self.seen() = Seen {
            key,
            view: Some(view.clone()),
        };
        Ok(view)
    }

    /// The view of `p` this request already has, if any.
    fn seen_view(&self, p: &str) -> Option<DavView> {
        let key = split_path(p).ok()?.join("/");
        let seen = self.seen();
        if seen.key == key {
            seen.view.clone()
        } else {
            None
        }
    }

    /// The inode at `p`, from what this request saw, else from meta.
    async fn inode_at(&self, p: &str) -> Result<Inode, Error> {
        let view = match self.seen_view(p) {
            Some(v) => v,
            None => {
                let want = match self.prefetch {
                    Prefetch::Parent if !split_path(p)?.is_empty() => ViewWant::Parent,
                    Prefetch::Listing => ViewWant::Listing,
                    _ => ViewWant::Inode,
                };
                self.look(p, want, false).await?
            }
        };
        view.inode.ok_or_else(|| Error::NotFound(p.to_string()))
    }

    /// The directory holding `p`, its last name, and what is there now.
    async fn parent_at(&self, p: &str) -> Result<(Inode, String, Option<Inode>), Error> {
        let components = split_path(p)?;
        let name = components
            .last()
            .cloned()
            .ok_or_else(|| Error::Invalid("the root has no parent".into()))?;
        if let Some(DavView {
            parent: Some(parent),
            inode,
            ..
        }) = self.seen_view(p)
        {
            return Ok((parent, name, inode));
        }
        let (parent, existing) = self.fs.meta().resolve_parent(components).await?;
        Ok((parent, name, existing))
    }

    /// The dead properties of `p`, from meta (PROPFIND, which reads them
    /// in bulk, is answered by `props::propfind`; dav-server asks here only
    /// in the rare requests it still answers itself).
    async fn props_at(&self, p: &str) -> Result<Vec<DeadProp>, Error> {
        let view = self.look(p, ViewWant::Inode, true).await?;
        let ino = view
            .inode
            .as_ref()
            .ok_or_else(|| Error::NotFound(p.to_string()))?
            .ino;
        Ok(view
            .props
            .into_iter()
            .find(|(i, _)| *i == ino)
            .map(|(_, p)| p)
            .unwrap_or_default())
    }

    /// `key` of the path and the live locks covering it or below it: from
    /// what this request saw when that covers the path, else from meta.
    pub async fn locks_around(&self, path: &DavPath) -> Result<(String, Vec<LockInfo>), Error> {
        let p = path_str(path)?;
        let components = split_path(&p)?;
        let key = components.join("/");
        if let Some(seen) = &*self.seen_locks()
            && (seen.key == key || super::locks::is_below(&key, &seen.key))
        {
            return Ok((key, seen.locks.clone()));
        }
        let locks = self.fs.meta().locks(components).await?;
        *self.seen_locks() = Some(SeenLocks {
            key: key.clone(),
            locks: locks.clone(),
        });
        Ok((key, locks))
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
            let mut writer = self.fs.replace(parent.ino, &name, seed, mode).await?;
            if let Some(ns) = self.take_put_mtime() {
                writer.set_mtime(ns);
            }
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
                let listed = self.seen_view(&p).and_then(|v| v.entries);
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
                let p = path_str(path)?;
                let (parent, name) = self.fs.parent_of(&p).await?;
                let dir = self.fs.mkdir(parent.ino, &name, 0o755).await?;
                if let Some(src) = self.copy_source(&split_path(&p)?.join("/")) {
                    let src = self.fs.resolve(&format!("/{src}")).await?;
                    self.fs.meta().copy_props(src.ino, dir.ino).await?;
                }
                Ok::<_, Error>(())
            };
            run.await.map_err(to_dav_error)
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
                    let dir = self.fs.mkdir(parent.ino, &name, src.mode).await?;
                    return Ok(self.fs.meta().copy_props(src.ino, dir.ino).await?);
                }
                let seed = match self.fs.lookup(parent.ino, &name).await {
                    Ok(i) => i.object.seed,
                    Err(_) => seed_for_path(&dest),
                };
                let copy = self.fs.copy_file(&src, parent.ino, &name, seed).await?;
                // RFC 4918 §9.8.2: the copy carries the dead properties.
                Ok(self.fs.meta().copy_props(src.ino, copy.ino).await?)
            };
            run.await.map(|_| ()).map_err(to_dav_error)
        }
        .boxed()
    }
    fn have_props<'a>(
        &'a self,
        _path: &'a DavPath,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(futures::future::ready(true))
    }

    fn get_props<'a>(&'a self, path: &'a DavPath, do_content: bool) -> FsFuture<'a, Vec<DavProp>> {
        async move {
            let run = async { self.props_at(&path_str(path)?).await };
            let props = run.await.map_err(to_dav_error)?;
            Ok(props
                .into_iter()
                .map(|p| DavProp {
                    name: p.name,
                    prefix: p.prefix,
                    namespace: p.namespace,
                    xml: if do_content { p.xml } else { None },
                })
                .collect())
        }
        .boxed()
    }

    fn get_prop<'a>(&'a self, path: &'a DavPath, prop: DavProp) -> FsFuture<'a, Vec<u8>> {
        async move {
            let run = async { self.props_at(&path_str(path)?).await };
            let props = run.await.map_err(to_dav_error)?;
            props
                .into_iter()
                .find(|p| p.name == prop.name && p.namespace == prop.namespace)
                .and_then(|p| p.xml)
                .ok_or(FsError::NotFound)
        }
        .boxed()
    }

    fn patch_props<'a>(
        &'a self,
        path: &'a DavPath,
        patch: Vec<(bool, DavProp)>,
    ) -> FsFuture<'a, Vec<(StatusCode, DavProp)>> {
        async move {
            let run = async {
                let p = path_str(path)?;
                let inode = self.inode_at(&p).await?;
                let windows = self.take_windows();
                let mut changes: Vec<(bool, DeadProp)> = patch
                    .iter()
                    .map(|(set, d)| {
                        (
                            *set,
                            DeadProp {
                                namespace: d.namespace.clone(),
                                name: d.name.clone(),
                                prefix: d.prefix.clone(),
                                xml: d.xml.clone(),
                            },
                        )
                    })
                    .collect();
                let mut mtime = None;
                if let Some((m, keep)) = windows {
                    mtime = m;
                    changes.extend(keep.into_iter().map(|d| (true, d)));
                }
                self.forget();
                self.fs
                    .meta()
                    .patch_props(inode.ino, changes, mtime)
                    .await?;
                Ok::<_, Error>(())
            };
            run.await.map_err(to_dav_error)?;
            Ok(patch
                .into_iter()
                .map(|(_, mut d)| {
                    d.xml = None;
                    (StatusCode::OK, d)
                })
                .collect())
        }
        .boxed()
    }
}
