//! What a mount knows of directories between meta's answers: their
//! attributes, and every name in the ones it made or listed.
//!
//! The kernel asks for a directory's attributes again after every change
//! in it (it checks permissions with them), and looks each new name up
//! before creating it. Answering both here halves the meta calls of a
//! create or an unlink. The cache stays exact because meta answers each of
//! this mount's changes with the directory as the change left it, and its
//! change feed tells of everyone else's; it is trusted for long only while
//! the feed is followed, and for [`TRUST_ALONE`] otherwise.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tessera_meta::{FileKind, Inode};

/// How long what meta answered is trusted while the change feed is followed.
pub const TRUST_FOLLOWING: Duration = Duration::from_secs(60);
/// ... and while it is not (meta unreachable, or the mount just started).
pub const TRUST_ALONE: Duration = Duration::from_secs(1);
/// Bounds on what is kept, so a tree walk over millions of directories
/// does not grow the mount without end.
const MAX_DIRS: usize = 16_384;
const MAX_NAMES: usize = 1 << 20;

struct Dir {
    attr: Inode,
    /// When meta last answered for it; `None` once a change of this
    /// mount's that meta did not answer for (a rename) made `attr` old.
    at: Option<Instant>,
    /// Every name in it, if this mount made it or listed it whole since
    /// (kept as long as the feed is followed: it tells of every change).
    names: Option<HashSet<String>>,
}

#[derive(Default)]
struct Inner {
    dirs: HashMap<u64, Dir>,
    names: usize,
}

impl Inner {
    fn drop_names(&mut self, ino: u64) {
        if let Some(d) = self.dirs.get_mut(&ino)
            && let Some(n) = d.names.take()
        {
            self.names -= n.len();
        }
    }

    fn remove(&mut self, ino: u64) {
        self.drop_names(ino);
        self.dirs.remove(&ino);
    }

    /// Makes room for one more directory.
    fn room(&mut self) {
        if self.dirs.len() >= MAX_DIRS || self.names >= MAX_NAMES {
            self.dirs.clear();
            self.names = 0;
        }
    }

    /// Stores `attr` unless an answer of a later version is here.
    fn store(&mut self, attr: &Inode) {
        if let Some(d) = self.dirs.get_mut(&attr.ino) {
            if attr.version >= d.attr.version {
                d.attr = attr.clone();
                d.at = Some(Instant::now());
            }
            return;
        }
        self.room();
        self.dirs.insert(
            attr.ino,
            Dir {
                attr: attr.clone(),
                at: Some(Instant::now()),
                names: None,
            },
        );
    }
}

/// See the module documentation.
#[derive(Default)]
pub struct DirCache {
    inner: Mutex<Inner>,
    /// Moves on with every change heard from the feed: an answer fetched
    /// before it moved may be older than the change, and is not stored.
    epoch: AtomicU64,
    following: AtomicBool,
}

impl DirCache {
    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("dir cache")
    }

    pub fn trust(&self) -> Duration {
        if self.following.load(Ordering::Acquire) {
            TRUST_FOLLOWING
        } else {
            TRUST_ALONE
        }
    }

    /// Whether the change feed is followed (every change elsewhere reaches
    /// this mount within milliseconds).
    pub fn following(&self) -> bool {
        self.following.load(Ordering::Acquire)
    }

    /// The feed is followed from now on (after what it told is applied),
    /// or it is not any more.
    pub fn set_following(&self, on: bool) {
        self.following.store(on, Ordering::Release);
    }

    /// Taken before asking meta, handed back with what it answered.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The attributes of directory `ino`, if known and trusted.
    pub fn attr(&self, ino: u64) -> Option<Inode> {
        let trust = self.trust();
        let inner = self.inner();
        let d = inner.dirs.get(&ino)?;
        d.at.filter(|at| at.elapsed() < trust)
            .map(|_| d.attr.clone())
    }

    /// Meta answered `inode` (asked at `epoch`): kept if it is a directory
    /// and nothing changed elsewhere since the question.
    pub fn answered(&self, inode: &Inode, epoch: u64) {
        if inode.kind != FileKind::Dir {
            return;
        }
        let mut inner = self.inner();
        if self.epoch() == epoch {
            inner.store(inode);
        }
    }

    /// Whether `parent` surely has no entry `name`.
    pub fn absent(&self, parent: u64, name: &str) -> bool {
        if !self.following() {
            return false;
        }
        let inner = self.inner();
        inner
            .dirs
            .get(&parent)
            .and_then(|d| d.names.as_ref())
            .is_some_and(|n| !n.contains(name))
    }

    /// The whole listing of `dir` (asked at `epoch`).
    pub fn listed<'a>(&self, dir: u64, names: impl Iterator<Item = &'a str>, epoch: u64) {
        let mut inner = self.inner();
        if self.epoch() != epoch || !inner.dirs.contains_key(&dir) {
            return;
        }
        inner.drop_names(dir);
        let set: HashSet<String> = names.map(str::to_string).collect();
        if inner.names + set.len() > MAX_NAMES {
            return;
        }
        inner.names += set.len();
        if let Some(d) = inner.dirs.get_mut(&dir) {
            d.names = Some(set);
        }
    }

    /// This mount made `parent/name` (asked at `epoch`); `dir` is `parent`
    /// as meta left it, `made` the new node.
    pub fn added(&self, parent: u64, name: &str, dir: Option<&Inode>, made: &Inode, epoch: u64) {
        let mut inner = self.inner();
        if self.epoch() != epoch {
            inner.remove(parent);
            return;
        }
        if let Some(dir) = dir {
            inner.store(dir);
        }
        if let Some(d) = inner.dirs.get_mut(&parent)
            && let Some(n) = d.names.as_mut()
            && n.insert(name.to_string())
        {
            inner.names += 1;
        }
        if made.kind == FileKind::Dir && dir.is_some() {
            // A new directory is empty.
            inner.store(made);
            if let Some(d) = inner.dirs.get_mut(&made.ino) {
                d.names = Some(HashSet::new());
            }
        }
    }

    /// This mount removed `parent/name` (asked at `epoch`); `dir` is
    /// `parent` as meta left it.
    pub fn removed(&self, parent: u64, name: &str, dir: &Inode, epoch: u64) {
        let mut inner = self.inner();
        if self.epoch() != epoch {
            inner.remove(parent);
            return;
        }
        inner.store(dir);
        if let Some(d) = inner.dirs.get_mut(&parent)
            && let Some(n) = d.names.as_mut()
            && n.remove(name)
        {
            inner.names -= 1;
        }
    }

    /// This mount renamed `from` to `to`: the names move; both directories
    /// changed in ways meta did not answer, so their attributes go.
    pub fn renamed(&self, from: (u64, &str), to: (u64, &str), exchange: bool) {
        let mut inner = self.inner();
        if !exchange {
            if let Some(d) = inner.dirs.get_mut(&from.0)
                && let Some(n) = d.names.as_mut()
                && n.remove(from.1)
            {
                inner.names -= 1;
            }
            if let Some(d) = inner.dirs.get_mut(&to.0)
                && let Some(n) = d.names.as_mut()
                && n.insert(to.1.to_string())
            {
                inner.names += 1;
            }
        }
        for ino in [from.0, to.0] {
            if let Some(d) = inner.dirs.get_mut(&ino) {
                d.at = None;
            }
        }
        // A directory that moved has a new parent ("..").
        let moved: Vec<u64> = inner
            .dirs
            .iter()
            .filter(|(i, d)| {
                (d.attr.parent == from.0 || d.attr.parent == to.0) && **i != d.attr.parent
            })
            .map(|(i, _)| *i)
            .collect();
        for ino in moved {
            inner.remove(ino);
        }
    }

    /// A directory in `parent` was removed by this mount: whichever it was
    /// is forgotten.
    pub fn child_dir_gone(&self, parent: u64) {
        let mut inner = self.inner();
        let gone: Vec<u64> = inner
            .dirs
            .iter()
            .filter(|(i, d)| d.attr.parent == parent && **i != parent)
            .map(|(i, _)| *i)
            .collect();
        for ino in gone {
            inner.remove(ino);
        }
    }

    /// `ino` changed in a way not answered here (elsewhere, or an xattr).
    pub fn forget(&self, ino: u64) {
        self.bump();
        self.inner().remove(ino);
    }

    /// An entry of `parent` changed elsewhere.
    pub fn entry_changed(&self, parent: u64) {
        self.bump();
        self.inner().drop_names(parent);
    }

    /// Everything may have changed (the feed lost events).
    pub fn clear(&self) {
        self.bump();
        let mut inner = self.inner();
        inner.dirs.clear();
        inner.names = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tessera_meta::ObjectRef;

    fn dir(ino: u64, parent: u64, version: u64) -> Inode {
        Inode {
            ino,
            kind: FileKind::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            size: 0,
            atime: 0,
            mtime: version as i64,
            ctime: version as i64,
            nlink: 2,
            version,
            object: ObjectRef::NONE,
            parent,
            target: None,
        }
    }

    fn file(ino: u64, parent: u64) -> Inode {
        Inode {
            kind: FileKind::File,
            nlink: 1,
            ..dir(ino, parent, 1)
        }
    }

    #[test]
    fn names_are_trusted_only_while_the_feed_is_followed() {
        let c = DirCache::default();
        let e = c.epoch();
        c.added(1, "d", Some(&dir(1, 1, 5)), &dir(2, 1, 5), e);
        assert!(!c.absent(2, "x"), "not following yet");
        c.set_following(true);
        assert!(c.absent(2, "x"), "a new directory is empty");
        c.added(2, "x", Some(&dir(2, 1, 6)), &file(3, 2), c.epoch());
        assert!(!c.absent(2, "x"));
        assert_eq!(c.attr(2).unwrap().version, 6);
        c.removed(2, "x", &dir(2, 1, 7), c.epoch());
        assert!(c.absent(2, "x"));
        c.set_following(false);
        assert!(!c.absent(2, "x"));
    }

    #[test]
    fn a_change_heard_during_a_question_keeps_its_answer_out() {
        let c = DirCache::default();
        c.set_following(true);
        let e = c.epoch();
        c.entry_changed(9);
        c.answered(&dir(4, 1, 3), e);
        assert!(c.attr(4).is_none(), "fetched before the change was heard");
        c.answered(&dir(4, 1, 3), c.epoch());
        assert!(c.attr(4).is_some());
        // An older answer never replaces a newer one.
        c.answered(&dir(4, 1, 2), c.epoch());
        assert_eq!(c.attr(4).unwrap().version, 3);
        let e = c.epoch();
        c.forget(4);
        c.listed(4, ["a"].into_iter(), e);
        assert!(!c.absent(4, "b"), "forgotten");
        // A create while a change elsewhere was heard forgets the directory.
        c.answered(&dir(4, 1, 3), c.epoch());
        c.listed(4, ["a"].into_iter(), c.epoch());
        assert!(c.absent(4, "b"));
        let e = c.epoch();
        c.entry_changed(4);
        c.added(4, "c", Some(&dir(4, 1, 9)), &file(5, 4), e);
        assert!(c.attr(4).is_none() && !c.absent(4, "b"));
    }

    #[test]
    fn renames_move_names_and_drop_attributes() {
        let c = DirCache::default();
        c.set_following(true);
        for (ino, v) in [(2, 1), (3, 1)] {
            c.answered(&dir(ino, 1, v), c.epoch());
            c.listed(ino, std::iter::empty(), c.epoch());
        }
        c.added(2, "a", Some(&dir(2, 1, 2)), &file(7, 2), c.epoch());
        c.renamed((2, "a"), (3, "b"), false);
        assert!(c.absent(2, "a") && !c.absent(3, "b"));
        assert!(c.attr(2).is_none() && c.attr(3).is_none());
        // Both children of the root were forgotten: one of them may have moved.
        c.renamed((1, "x"), (1, "y"), false);
        assert!(!c.absent(2, "a") && !c.absent(3, "a"));
    }
}
