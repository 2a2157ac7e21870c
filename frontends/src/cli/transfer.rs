//! `put`, `get` and `cat`: files and trees, streamed, several at once.
//! A file already there with the same size and modification time is
//! skipped, so an interrupted `put -r` / `get -r` run again picks up where
//! it stopped; modification times are carried over both ways.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::stream::{self, StreamExt, TryStreamExt};
use http::{Method, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::AsyncWriteExt;

use super::dav::{Entry, empty, error_body};
use super::listing::walk;
use super::path::RemotePath;
use super::{CliError, Remote};

/// Files sent or fetched at once. Small files go at the pace of the
/// gateway's group commits, which fill better the more arrive together:
/// measured here, 8 at a time ~1,700 files/s of 4 KiB, 32 ~3,000.
pub const PARALLEL: usize = 32;

/// Files up to this size are read whole before they are sent.
const SMALL_FILE: u64 = 256 << 10;

/// What a transfer did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub files: u64,
    pub bytes: u64,
    /// Files left as they were: already there, identical.
    pub skipped: u64,
    pub dirs: u64,
}

impl Summary {
    fn one_sent(bytes: u64) -> Summary {
        Summary {
            files: 1,
            bytes,
            ..Default::default()
        }
    }

    fn one_skipped() -> Summary {
        Summary {
            skipped: 1,
            ..Default::default()
        }
    }

    fn add(&mut self, o: Summary) {
        self.files += o.files;
        self.bytes += o.bytes;
        self.skipped += o.skipped;
        self.dirs += o.dirs;
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} files ({})",
            self.files,
            crate::human_bytes(self.bytes)
        )?;
        if self.skipped > 0 {
            write!(f, ", {} already there", self.skipped)?;
        }
        if self.dirs > 0 {
            write!(f, ", {} directories made", self.dirs)?;
        }
        Ok(())
    }
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The same file by size and modification time (to the second).
fn same(local: &std::fs::Metadata, remote: &Entry) -> bool {
    !remote.dir
        && local.len() == remote.size
        && local.modified().is_ok_and(|m| secs(m) == remote.mtime)
}

/// Runs `jobs`, [`PARALLEL`] at a time, adding up what they did; stops
/// starting new ones at the first failure.
async fn in_parallel<F>(jobs: impl Iterator<Item = F>) -> Result<Summary, CliError>
where
    F: std::future::Future<Output = Result<Summary, CliError>>,
{
    stream::iter(jobs)
        .buffer_unordered(PARALLEL)
        .try_fold(Summary::default(), |mut total, s| async move {
            total.add(s);
            Ok(total)
        })
        .await
}

async fn local_meta(path: &Path) -> Option<std::fs::Metadata> {
    tokio::fs::metadata(path).await.ok()
}

async fn is_dir(path: &Path) -> bool {
    local_meta(path).await.is_some_and(|m| m.is_dir())
}

/// `put LOCAL... REMOTE [-r]`. `dir_wanted`: REMOTE was written with a
/// trailing slash, so it must be a directory that exists.
pub async fn put(
    r: &Remote,
    locals: &[PathBuf],
    remote: &RemotePath,
    dir_wanted: bool,
    recursive: bool,
) -> Result<Summary, CliError> {
    let must_be_dir = dir_wanted || locals.len() > 1;
    let into = match r.dav.stat(remote).await? {
        Some(e) if e.dir => true,
        Some(_) if must_be_dir => {
            return Err(CliError::failed(remote.as_str(), "not a directory"));
        }
        None if must_be_dir => {
            return Err(CliError::failed(remote.as_str(), "no such directory"));
        }
        _ => false,
    };
    let mut total = Summary::default();
    for local in locals {
        let meta = tokio::fs::metadata(local)
            .await
            .map_err(|e| CliError::local(local, e))?;
        let dest = if into {
            let name = local.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
                CliError::usage(format!("{}: no usable file name", local.display()))
            })?;
            remote.join(name)
        } else {
            remote.clone()
        };
        if meta.is_dir() {
            if !recursive {
                return Err(CliError::failed(
                    &local.display().to_string(),
                    "is a directory (put -r sends it)",
                ));
            }
            total.add(put_tree(r, local, &dest).await?);
        } else {
            let there = r.dav.stat(&dest).await?;
            r.progress.grow(meta.len());
            if there.as_ref().is_some_and(|e| same(&meta, e)) {
                r.progress.advance(meta.len());
                total.skipped += 1;
            } else {
                total.bytes += put_file(r, local, &dest, &meta).await?;
                total.files += 1;
            }
        }
    }
    Ok(total)
}

/// Sends one file, then sets its modification time; returns its size.
pub async fn put_file(
    r: &Remote,
    local: &Path,
    dest: &RemotePath,
    meta: &std::fs::Metadata,
) -> Result<u64, CliError> {
    let size = meta.len();
    r.progress.note(dest.name());
    // A pipe or a device streams what it has, of a length unknown.
    let regular = meta.is_file();
    let body = if regular && size <= SMALL_FILE {
        // Read in one go: streaming costs a hand-off per read.
        let path = local.to_path_buf();
        let data = tessera_rpc::blocking(move || std::fs::read(&path))
            .await
            .map_err(|e| CliError::local(local, e))?;
        r.progress.advance(data.len() as u64);
        super::dav::full(bytes::Bytes::from(data))
    } else {
        let file = tokio::fs::File::open(local)
            .await
            .map_err(|e| CliError::local(local, e))?;
        let bar = r.progress.clone();
        let frames =
            tokio_util::io::ReaderStream::with_capacity(file, 256 << 10).map_ok(move |b| {
                bar.advance(b.len() as u64);
                Frame::data(b)
            });
        BodyExt::boxed(StreamBody::new(frames))
    };
    let mut headers = Vec::new();
    if regular {
        headers.push((header::CONTENT_LENGTH, size.to_string()));
    }
    let mtime = meta.modified().ok().filter(|_| regular);
    if let Some(m) = mtime {
        // Tessera (and ownCloud) take it with the PUT; others get a PROPPATCH.
        headers.push((
            header::HeaderName::from_static("x-oc-mtime"),
            secs(m).to_string(),
        ));
    }
    let resp = r.dav.send(Method::PUT, dest, false, &headers, body).await?;
    let status = resp.status();
    let mtime_taken = resp
        .headers()
        .get("x-oc-mtime")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"accepted"));
    let body = error_body(resp).await;
    match status {
        s if s.is_success() => {}
        StatusCode::CONFLICT => {
            return Err(CliError::failed(
                dest.as_str(),
                "its directory does not exist",
            ));
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            return Err(CliError::failed(dest.as_str(), "is a directory"));
        }
        s => return Err(r.refused(dest, s, &body).await),
    }
    if let Some(m) = mtime
        && !mtime_taken
    {
        r.dav.set_mtime(dest, m).await?;
    }
    Ok(size)
}

/// Every directory and file below `root`, as paths relative to it
/// (directories before what they hold).
/// A local tree: its directories, and its files with their metadata.
type LocalTree = (Vec<PathBuf>, Vec<(PathBuf, std::fs::Metadata)>);

fn local_tree(root: &Path) -> Result<LocalTree, CliError> {
    let mut dirs = Vec::new();
    let mut files = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| CliError::local(&dir, e))?
            .collect::<Result<_, _>>()
            .map_err(|e| CliError::local(&dir, e))?;
        names.sort_by_key(|e| e.file_name());
        for e in names {
            let path = e.path();
            let meta = std::fs::metadata(&path).map_err(|e| CliError::local(&path, e))?;
            let rel = rel.join(e.file_name());
            if rel.to_str().is_none() {
                return Err(CliError::failed(
                    &path.display().to_string(),
                    "the name is not UTF-8",
                ));
            }
            if meta.is_dir() {
                dirs.push(rel.clone());
                stack.push(rel);
            } else if meta.is_file() {
                files.push((rel, meta));
            }
        }
    }
    dirs.sort();
    Ok((dirs, files))
}

fn remote_of(base: &RemotePath, rel: &Path) -> RemotePath {
    rel.iter().fold(base.clone(), |p, c| {
        p.join(c.to_str().expect("checked UTF-8"))
    })
}

/// `put -r`: the tree at `local` as the directory `dest`.
async fn put_tree(r: &Remote, local: &Path, dest: &RemotePath) -> Result<Summary, CliError> {
    let root = local.to_path_buf();
    let (dirs, files) = tessera_rpc::blocking(move || local_tree(&root)).await?;
    r.progress.grow(files.iter().map(|(_, m)| m.len()).sum());
    let mut done = Summary::default();
    // What is there already, by path.
    let there: std::collections::HashMap<String, Entry> = match r.dav.stat(dest).await? {
        Some(e) if e.dir => walk(r, dest)
            .await?
            .into_iter()
            .map(|e| (e.path.clone(), e))
            .collect(),
        Some(_) => {
            return Err(CliError::failed(
                dest.as_str(),
                "exists and is not a directory",
            ));
        }
        None => {
            super::ops::mkdir(r, dest, true).await?;
            done.dirs += 1;
            Default::default()
        }
    };
    for d in &dirs {
        let p = remote_of(dest, d);
        match there.get(p.as_str()) {
            Some(e) if e.dir => {}
            Some(_) => {
                return Err(CliError::failed(
                    p.as_str(),
                    "exists and is not a directory",
                ));
            }
            None => {
                super::ops::mkdir(r, &p, false).await?;
                done.dirs += 1;
            }
        }
    }
    let jobs = files.into_iter().map(|(rel, meta)| {
        let p = remote_of(dest, &rel);
        let skip = there.get(p.as_str()).is_some_and(|e| same(&meta, e));
        let path = local.join(&rel);
        async move {
            if skip {
                r.progress.advance(meta.len());
                return Ok(Summary::one_skipped());
            }
            let bytes = put_file(r, &path, &p, &meta).await?;
            Ok(Summary::one_sent(bytes))
        }
    });
    done.add(in_parallel(jobs).await?);
    Ok(done)
}

/// `get REMOTE... LOCAL [-r]`.
pub async fn get(
    r: &Remote,
    remotes: &[RemotePath],
    local: &Path,
    recursive: bool,
) -> Result<Summary, CliError> {
    let into = is_dir(local).await;
    let dir_wanted = local.as_os_str().as_encoded_bytes().ends_with(b"/");
    if (remotes.len() > 1 || dir_wanted) && !into {
        return Err(CliError::failed(
            &local.display().to_string(),
            "no such directory",
        ));
    }
    let mut total = Summary::default();
    for remote in remotes {
        let Some(e) = r.dav.stat(remote).await? else {
            return Err(CliError::failed(
                remote.as_str(),
                "no such file or directory",
            ));
        };
        let dest = if into && !remote.is_root() {
            local.join(remote.name())
        } else {
            local.to_path_buf()
        };
        if e.dir {
            if !recursive {
                return Err(CliError::failed(
                    remote.as_str(),
                    "is a directory (get -r fetches it)",
                ));
            }
            total.add(get_tree(r, remote, &dest).await?);
        } else if local_meta(&dest).await.is_some_and(|m| same(&m, &e)) {
            r.progress.grow(e.size);
            r.progress.advance(e.size);
            total.skipped += 1;
        } else {
            r.progress.grow(e.size);
            total.bytes += get_file(r, &e, remote, &dest).await?;
            total.files += 1;
        }
    }
    Ok(total)
}

/// `get -r`: the remote directory `remote` as the local directory `dest`.
async fn get_tree(r: &Remote, remote: &RemotePath, dest: &Path) -> Result<Summary, CliError> {
    let entries = walk(r, remote).await?;
    r.progress
        .grow(entries.iter().filter(|e| !e.dir).map(|e| e.size).sum());
    let mut done = Summary::default();
    if !is_dir(dest).await {
        tokio::fs::create_dir_all(dest)
            .await
            .map_err(|e| CliError::local(dest, e))?;
        done.dirs += 1;
    }
    let local_of = |e: &Entry| -> PathBuf {
        let rel = e.path.strip_prefix(remote.as_str()).unwrap_or(&e.path);
        rel.split('/')
            .filter(|c| !c.is_empty())
            .fold(dest.to_path_buf(), |p, c| p.join(c))
    };
    for e in entries.iter().filter(|e| e.dir) {
        let d = local_of(e);
        if !is_dir(&d).await {
            tokio::fs::create_dir_all(&d)
                .await
                .map_err(|err| CliError::local(&d, err))?;
            done.dirs += 1;
        }
    }
    let jobs = entries.iter().filter(|e| !e.dir).map(|e| {
        let path = local_of(e);
        async move {
            if local_meta(&path).await.is_some_and(|m| same(&m, e)) {
                r.progress.advance(e.size);
                return Ok(Summary::one_skipped());
            }
            let from = RemotePath::resolve(&RemotePath::root(), &e.path)?;
            let bytes = get_file(r, e, &from, &path).await?;
            Ok(Summary::one_sent(bytes))
        }
    });
    done.add(in_parallel(jobs).await?);
    Ok(done)
}

/// Fetches one file into `dest` (through a temporary file beside it, so
/// an interrupted fetch never leaves a short file under the real name),
/// with the remote modification time; returns its size.
async fn get_file(
    r: &Remote,
    e: &Entry,
    remote: &RemotePath,
    dest: &Path,
) -> Result<u64, CliError> {
    let resp = r.dav.send(Method::GET, remote, false, &[], empty()).await?;
    if resp.status() != StatusCode::OK {
        let status = resp.status();
        let body = error_body(resp).await;
        return Err(r.refused(remote, status, &body).await);
    }
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty())
        && !is_dir(parent).await
    {
        return Err(CliError::failed(
            &dest.display().to_string(),
            "its directory does not exist",
        ));
    }
    r.progress.note(remote.name());
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let part = dest.with_file_name(format!(".{name}.tessera-part"));
    let mut file = tokio::fs::File::create(&part)
        .await
        .map_err(|err| CliError::local(&part, err))?;
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| {
            CliError::failed(remote.as_str(), format!("download cut short: {err}"))
        })?;
        if let Ok(data) = frame.into_data() {
            n += data.len() as u64;
            r.progress.advance(data.len() as u64);
            file.write_all(&data)
                .await
                .map_err(|err| CliError::local(&part, err))?;
        }
    }
    file.flush()
        .await
        .map_err(|err| CliError::local(&part, err))?;
    let file = file.into_std().await;
    let (mtime, at, to) = (e.mtime, part.clone(), dest.to_path_buf());
    tessera_rpc::blocking(move || {
        if mtime > 0 {
            let t = UNIX_EPOCH + Duration::from_secs(mtime as u64);
            file.set_modified(t)
                .map_err(|err| CliError::local(&at, err))?;
        }
        drop(file);
        std::fs::rename(&at, &to).map_err(|err| CliError::local(&to, err))
    })
    .await?;
    Ok(n)
}

/// `cat PATH`: the file's bytes to standard output, as they arrive.
pub async fn cat(r: &Remote, remote: &RemotePath) -> Result<(), CliError> {
    // A GET of a directory answers a page for browsers: not for cat.
    match r.dav.stat(remote).await? {
        None => {
            return Err(CliError::failed(
                remote.as_str(),
                "no such file or directory",
            ));
        }
        Some(e) if e.dir => return Err(CliError::failed(remote.as_str(), "is a directory")),
        Some(_) => {}
    }
    let resp = r.dav.send(Method::GET, remote, false, &[], empty()).await?;
    let status = resp.status();
    if status != StatusCode::OK {
        let body = error_body(resp).await;
        return Err(match status {
            StatusCode::METHOD_NOT_ALLOWED => CliError::failed(remote.as_str(), "is a directory"),
            s => r.refused(remote, s, &body).await,
        });
    }
    let mut out = tokio::io::stdout();
    let mut body = resp.into_body();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|err| {
            CliError::failed(remote.as_str(), format!("download cut short: {err}"))
        })?;
        if let Ok(data) = frame.into_data() {
            out.write_all(&data)
                .await
                .map_err(|err| CliError::failed("standard output", err.to_string()))?;
        }
    }
    out.flush()
        .await
        .map_err(|err| CliError::failed("standard output", err.to_string()))
}
