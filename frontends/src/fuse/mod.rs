//! The FUSE front end: `tessera mount` and `tessera up --mount`.
//!
//! fuser (no libfuse: as root it mounts with mount(2) itself) hands each
//! kernel request to [`ops`], which answers it against [`core::Mount`]: on
//! the fuser thread when it needs meta alone or nothing that can wait long,
//! as a task on the Tokio runtime otherwise. Reads and read-ahead are in
//! `readahead`; what the kernel says of the calling process (capabilities,
//! groups, pending signals) in [`caller`]. Around the session: a stale mount left by a
//! killed process is detached first; meta's change feed invalidates what
//! the kernel cached of files other clients changed; the mount's session in
//! meta (its locks, its unlinked-but-open files) is renewed while it runs;
//! unmounting falls back to a lazy detach when the mount is busy.

pub mod attr;
pub mod caller;
pub mod core;
pub mod dircache;
pub mod files;
pub mod ops;
mod readahead;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use fuser::{Config, INodeNo, MountOption, SessionACL, SessionUnmounter};
use tessera_gateway::Fs;
use tessera_meta::Event;
use tokio_util::sync::CancellationToken;

pub use self::core::Mount;

/// How long meta keeps a mount's session (its locks and the files it holds
/// open) after the mount stops renewing it.
pub const SESSION_TTL: Duration = Duration::from_secs(60);

/// A running mount.
pub struct Mounted {
    pub mount: Arc<Mount>,
    mountpoint: PathBuf,
    unmounter: SessionUnmounter,
    /// Ends (with the session's result) when the kernel closes the session:
    /// after an unmount, ours or someone's `umount`.
    ended: tokio::sync::watch::Receiver<bool>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
    stop: CancellationToken,
}

/// Whether `path` is a FUSE mount whose server is gone ("Transport
/// endpoint is not connected").
fn is_stale(path: &Path) -> bool {
    matches!(std::fs::metadata(path), Err(e) if e.raw_os_error() == Some(libc::ENOTCONN))
}

fn detach(path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a valid NUL-terminated path; umount2 takes no other pointers.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Mounts `fs` on `mountpoint`; the mount serves until [`Mounted::unmount`]
/// or until someone unmounts it.
pub async fn mount(fs: Fs, mountpoint: &Path) -> Result<Mounted> {
    let mp = mountpoint.to_path_buf();
    if is_stale(&mp) {
        tracing::warn!(mountpoint = %mp.display(), "detaching a stale mount left by a process that died");
        detach(&mp)
            .with_context(|| format!("cannot detach the stale mount on {}", mp.display()))?;
    }
    let meta =
        std::fs::metadata(&mp).with_context(|| format!("cannot mount on {}", mp.display()))?;
    if !meta.is_dir() {
        bail!("cannot mount on {}: not a directory", mp.display());
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        bail!(
            "tessera mount needs root (it mounts with mount(2), without fusermount); run it with sudo"
        );
    }
    if !Path::new("/dev/fuse").exists() {
        bail!("/dev/fuse is missing: load the fuse module (modprobe fuse) or install fuse3");
    }
    let mount = Arc::new(Mount::new(fs));
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("tessera".into()),
        MountOption::Subtype("tessera".into()),
        MountOption::DefaultPermissions,
        MountOption::Dev,
        MountOption::Suid,
        MountOption::RW,
    ];
    // Every user of the machine may use it; the kernel checks permissions.
    config.acl = SessionACL::All;
    // Requests answered by meta alone run on these threads (see
    // `FuseFs::inline`): enough of them that a few waiting on meta leave
    // others free.
    config.n_threads = Some(4);
    let fuse = ops::FuseFs {
        mount: mount.clone(),
        rt: tokio::runtime::Handle::current(),
    };
    let at = mp.clone();
    let mut session = tokio::task::spawn_blocking(move || fuser::Session::new(fuse, &at, &config))
        .await?
        .with_context(|| format!("cannot mount on {}", mp.display()))?;
    let _ = mount.notifier.set(session.notifier());
    let unmounter = session.unmount_callable();
    let (tx, ended) = tokio::sync::watch::channel(false);
    let thread = std::thread::Builder::new()
        .name("fuse-session".into())
        .spawn(move || {
            let r = session.run();
            let _ = tx.send(true);
            r
        })?;
    let stop = CancellationToken::new();
    tokio::spawn(renew_session(mount.clone(), stop.clone()));
    tokio::spawn(follow_changes(mount.clone(), stop.clone()));
    Ok(Mounted {
        mount,
        mountpoint: mp,
        unmounter,
        ended,
        thread: Some(thread),
        stop,
    })
}

impl Mounted {
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Waits until the mount ends (someone ran `umount` on it).
    pub async fn ended(&mut self) {
        let _ = self.ended.wait_for(|e| *e).await;
    }

    /// Unmounts: flushes what open files hold, unmounts (detaching lazily if
    /// something still uses it), ends the session in meta.
    pub async fn unmount(mut self) -> Result<()> {
        let mp = self.mountpoint.clone();
        let mut unmounter = self.unmounter;
        let r = tokio::task::spawn_blocking(move || unmounter.unmount()).await?;
        if let Err(e) = r {
            tracing::warn!(mountpoint = %mp.display(), error = %e, "busy; detaching lazily");
            if let Err(e) = detach(&mp)
                && e.raw_os_error() != Some(libc::EINVAL)
            {
                return Err(e).with_context(|| format!("cannot unmount {}", mp.display()));
            }
        }
        // A lazily detached mount serves its open files until they close;
        // give them a moment, then store what they wrote and go.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.ended.wait_for(|e| *e)).await;
        self.mount.shutdown().await;
        self.stop.cancel();
        if let Some(t) = self.thread.take()
            && t.is_finished()
        {
            match t.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "the FUSE session ended with an error"),
                Err(_) => tracing::error!("the FUSE session thread panicked"),
            }
        }
        Ok(())
    }
}

/// Keeps the mount's session alive in meta.
async fn renew_session(mount: Arc<Mount>, stop: CancellationToken) {
    loop {
        if let Err(e) = mount
            .fs
            .meta()
            .renew_session(mount.session, SESSION_TTL)
            .await
        {
            tracing::warn!(error = %e, "cannot renew the mount's session in meta");
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(SESSION_TTL / 6) => {}
        }
    }
}

/// Follows meta's change feed and drops what the kernel cached of what
/// other clients changed.
async fn follow_changes(mount: Arc<Mount>, stop: CancellationToken) {
    let meta = mount.fs.meta().clone();
    let mut next = 0;
    loop {
        let r = tokio::select! {
            _ = stop.cancelled() => return,
            r = meta.watch(next, Duration::from_secs(25)) => r,
        };
        let events = match r {
            Ok(e) => e,
            Err(e) => {
                mount.dircache.set_following(false);
                tracing::debug!(error = %e, "change feed unavailable; retrying");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                continue;
            }
        };
        let first = next == 0;
        next = events.next;
        if first {
            // What was cached before the feed was followed may be old.
            mount.dircache.clear();
            mount.dircache.set_following(true);
            continue;
        }
        let Some(notifier) = mount.notifier.get().cloned() else {
            continue;
        };
        let mine = mount.session;
        let m = mount.clone();
        let lost = events.lost;
        let batch: Vec<Event> = events
            .events
            .into_iter()
            .filter(|(origin, _)| *origin != mine)
            .map(|(_, e)| e)
            .collect();
        if batch.is_empty() && !lost {
            mount.dircache.set_following(true);
            continue;
        }
        // The mount's own caches first, so nothing answered from here after
        // this point predates these changes.
        if lost {
            m.all_changed_elsewhere();
        }
        for e in &batch {
            match e {
                Event::Inode(ino) => m.changed_elsewhere(*ino),
                Event::Entry { parent, .. } => m.dircache.entry_changed(*parent),
            }
        }
        mount.dircache.set_following(true);
        // Invalidations write to /dev/fuse and may wait for the kernel.
        let _ = tokio::task::spawn_blocking(move || {
            if lost {
                for ino in m.open_inodes() {
                    let _ = notifier.inval_inode(INodeNo(ino), 0, 0);
                }
            }
            for e in batch {
                match e {
                    Event::Inode(ino) => {
                        let _ = notifier.inval_inode(INodeNo(ino), 0, 0);
                    }
                    Event::Entry { parent, name } => {
                        let _ = notifier.inval_entry(INodeNo(parent), OsStr::new(&name));
                    }
                }
            }
        })
        .await;
    }
}

/// `tessera mount`: mounts, prints one ready line, serves until a signal
/// (`shutdown`) or an outside `umount`, then unmounts cleanly.
pub async fn run(fs: Fs, mountpoint: &Path, shutdown: CancellationToken) -> Result<()> {
    let workers = fs.start_background(shutdown.clone());
    let mut mounted = mount(fs, mountpoint).await?;
    println!("tessera mount: serving {}", mounted.mountpoint().display());
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = mounted.ended() => {
            tracing::info!("unmounted from outside");
        }
    }
    mounted.unmount().await?;
    shutdown.cancel();
    for w in workers {
        let _ = w.await;
    }
    println!("tessera mount: unmounted {}", mountpoint.display());
    Ok(())
}
