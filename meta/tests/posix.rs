//! What meta keeps for POSIX mounts, on a real redb file: hard links,
//! orphans held by sessions, renameat2, extended attributes, record locks
//! and the change feed.

use std::time::{Duration, Instant};

use tessera_meta::store::{Change, Outcome};
use tessera_meta::*;

fn open(dir: &tempfile::TempDir) -> MetaStore {
    MetaStore::open(&dir.path().join("meta.redb"), None).unwrap()
}

fn node(parent: u64, name: &str, kind: FileKind) -> Change {
    Change::Create {
        parent,
        name: name.into(),
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        target: None,
        seed: 0,
        exclusive: true,
    }
}

async fn make(s: &MetaStore, parent: u64, name: &str, kind: FileKind) -> Inode {
    match s.apply(node(parent, name, kind)).await.unwrap() {
        Outcome::Inode(i) | Outcome::Entry { inode: i, .. } => i,
        o => panic!("{o:?}"),
    }
}

fn unlink(parent: u64, name: &str, hold: Option<u64>) -> Change {
    Change::Unlink {
        parent,
        name: name.into(),
        hold,
    }
}

fn rename(a: (u64, &str), b: (u64, &str), flags: RenameFlags) -> Change {
    Change::Rename {
        parent: a.0,
        name: a.1.into(),
        new_parent: b.0,
        new_name: b.1.into(),
        flags,
    }
}

fn lock(session: u64, owner: u64, start: u64, end: u64, kind: LockKind) -> FileLock {
    FileLock {
        session,
        owner,
        pid: 100 + owner as u32,
        start,
        end,
        kind,
    }
}

#[tokio::test]
async fn hard_links_share_the_inode_until_the_last_name_goes() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let f = make(&s, ROOT_INO, "a", FileKind::File).await;
    let d = make(&s, ROOT_INO, "d", FileKind::Dir).await;
    let Outcome::Inode(l) = s
        .apply(Change::Link {
            ino: f.ino,
            new_parent: d.ino,
            new_name: "b".into(),
        })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!((l.ino, l.nlink), (f.ino, 2));
    assert_eq!(s.lookup(d.ino, "b".into()).await.unwrap().ino, f.ino);
    s.apply(unlink(ROOT_INO, "a", None)).await.unwrap();
    let left = s.lookup(d.ino, "b".into()).await.unwrap();
    assert_eq!(left.nlink, 1);
    // Directories get no hard links; taken names are refused.
    let e = s
        .apply(Change::Link {
            ino: d.ino,
            new_parent: ROOT_INO,
            new_name: "d2".into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::NotPermitted(_)), "{e:?}");
    let e = s
        .apply(Change::Link {
            ino: f.ino,
            new_parent: ROOT_INO,
            new_name: "d".into(),
        })
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::Exists(_)), "{e:?}");
    s.apply(unlink(d.ino, "b", None)).await.unwrap();
    assert!(matches!(
        s.getattr(f.ino).await,
        Err(MetaError::NotFound(_))
    ));
}

#[tokio::test]
async fn an_orphan_lives_while_its_session_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let session = 77;
    s.apply(Change::RenewSession {
        session,
        ttl_ns: 60_000_000_000,
    })
    .await
    .unwrap();
    // Forget drops it.
    let f = make(&s, ROOT_INO, "f", FileKind::File).await;
    s.apply(unlink(ROOT_INO, "f", Some(session))).await.unwrap();
    assert!(matches!(
        s.lookup(ROOT_INO, "f".into()).await,
        Err(MetaError::NotFound(_))
    ));
    assert_eq!(s.getattr(f.ino).await.unwrap().nlink, 0);
    // Another session's forget does nothing.
    s.apply(Change::Forget {
        ino: f.ino,
        session: 5,
    })
    .await
    .unwrap();
    assert!(s.getattr(f.ino).await.is_ok());
    s.apply(Change::Forget {
        ino: f.ino,
        session,
    })
    .await
    .unwrap();
    assert!(s.getattr(f.ino).await.is_err());

    // A file replaced by a rename is held too; ending the session drops it.
    let g = make(&s, ROOT_INO, "g", FileKind::File).await;
    make(&s, ROOT_INO, "h", FileKind::File).await;
    let flags = RenameFlags {
        hold: Some(session),
        ..RenameFlags::default()
    };
    s.apply(rename((ROOT_INO, "h"), (ROOT_INO, "g"), flags))
        .await
        .unwrap();
    assert_eq!(s.getattr(g.ino).await.unwrap().nlink, 0);
    s.apply(Change::EndSession { session }).await.unwrap();
    assert!(s.getattr(g.ino).await.is_err());

    // A session that is not renewed ends when leases are reaped.
    s.apply(Change::RenewSession {
        session: 9,
        ttl_ns: 1,
    })
    .await
    .unwrap();
    let k = make(&s, ROOT_INO, "k", FileKind::File).await;
    // Already expired: a dead session holds nothing.
    s.apply(unlink(ROOT_INO, "k", Some(9))).await.unwrap();
    assert!(s.getattr(k.ino).await.is_err());
    s.apply(Change::RenewSession {
        session: 10,
        ttl_ns: 200_000_000,
    })
    .await
    .unwrap();
    let m = make(&s, ROOT_INO, "m", FileKind::File).await;
    s.apply(unlink(ROOT_INO, "m", Some(10))).await.unwrap();
    assert!(s.getattr(m.ino).await.is_ok());
    tokio::time::sleep(Duration::from_millis(250)).await;
    s.apply(Change::ReapLeases {
        ttl_ns: i64::MAX / 2,
    })
    .await
    .unwrap();
    assert!(
        s.getattr(m.ino).await.is_err(),
        "expired session's orphan kept"
    );
}

#[tokio::test]
async fn rename_exchange_swaps_two_names() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let a = make(&s, ROOT_INO, "a", FileKind::Dir).await;
    let b = make(&s, ROOT_INO, "b", FileKind::Dir).await;
    let f = make(&s, a.ino, "f", FileKind::File).await;
    let sub = make(&s, b.ino, "sub", FileKind::Dir).await;
    let xchg = RenameFlags {
        exchange: true,
        ..RenameFlags::default()
    };
    s.apply(rename((a.ino, "f"), (b.ino, "sub"), xchg))
        .await
        .unwrap();
    assert_eq!(s.lookup(a.ino, "f".into()).await.unwrap().ino, sub.ino);
    assert_eq!(s.lookup(b.ino, "sub".into()).await.unwrap().ino, f.ino);
    // The directory moved from b to a: their link counts follow.
    assert_eq!(s.getattr(a.ino).await.unwrap().nlink, 3);
    assert_eq!(s.getattr(b.ino).await.unwrap().nlink, 2);
    assert_eq!(s.getattr(sub.ino).await.unwrap().parent, a.ino);
    let e = s
        .apply(rename((a.ino, "f"), (b.ino, "missing"), xchg))
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::NotFound(_)), "{e:?}");
    // A directory cannot be swapped into its own subtree.
    let e = s
        .apply(rename(
            (ROOT_INO, "a"),
            (sub.ino, "x"),
            RenameFlags::default(),
        ))
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::Invalid(_)), "{e:?}");
    make(&s, sub.ino, "inner", FileKind::File).await;
    let e = s
        .apply(rename((ROOT_INO, "a"), (sub.ino, "inner"), xchg))
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::Invalid(_)), "{e:?}");
    let both = RenameFlags {
        exchange: true,
        no_replace: true,
        hold: None,
    };
    assert!(
        s.apply(rename((a.ino, "f"), (b.ino, "sub"), both))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn extended_attributes_follow_xattr_semantics() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let f = make(&s, ROOT_INO, "f", FileKind::File).await;
    let set = |name: &str, value: &[u8], mode| Change::SetXattr {
        ino: f.ino,
        name: name.as_bytes().to_vec(),
        value: value.to_vec(),
        mode,
    };
    s.apply(set("user.a", b"1", XattrMode::Any)).await.unwrap();
    let e = s
        .apply(set("user.a", b"2", XattrMode::Create))
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::Exists(_)), "{e:?}");
    let e = s
        .apply(set("user.b", b"2", XattrMode::Replace))
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::NoAttr(_)), "{e:?}");
    s.apply(set("user.a", b"3", XattrMode::Replace))
        .await
        .unwrap();
    s.apply(set("user.b", b"", XattrMode::Create))
        .await
        .unwrap();
    assert_eq!(s.get_xattr(f.ino, b"user.a".to_vec()).await.unwrap(), b"3");
    assert_eq!(
        s.list_xattr(f.ino).await.unwrap(),
        [b"user.a".to_vec(), b"user.b".to_vec()]
    );
    // The version moves, so caches see the change.
    let v = s.getattr(f.ino).await.unwrap().version;
    s.apply(Change::RemoveXattr {
        ino: f.ino,
        name: b"user.a".to_vec(),
    })
    .await
    .unwrap();
    assert!(s.getattr(f.ino).await.unwrap().version > v);
    assert!(matches!(
        s.get_xattr(f.ino, b"user.a".to_vec()).await,
        Err(MetaError::NoAttr(_))
    ));
    // Limits: one value at most 64 KiB, all of them at most 256 KiB.
    let big = vec![7u8; MAX_XATTR_VALUE];
    assert!(
        s.apply(set("user.too", &[0; MAX_XATTR_VALUE + 1], XattrMode::Any))
            .await
            .is_err()
    );
    for i in 0..3 {
        s.apply(set(&format!("user.big{i}"), &big, XattrMode::Any))
            .await
            .unwrap();
    }
    let e = s
        .apply(set("user.big3", &big, XattrMode::Any))
        .await
        .unwrap_err();
    assert!(matches!(e, MetaError::NoSpace(_)), "{e:?}");
    // Replacing one with a value as large still fits.
    s.apply(set("user.big0", &big, XattrMode::Replace))
        .await
        .unwrap();
    // They go with the inode.
    s.apply(unlink(ROOT_INO, "f", None)).await.unwrap();
    let g = make(&s, ROOT_INO, "g", FileKind::File).await;
    assert!(s.list_xattr(g.ino).await.unwrap().is_empty());
    assert!(s.list_xattr(f.ino).await.is_err());
}

#[tokio::test]
async fn record_locks_conflict_between_owners_of_live_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let f = make(&s, ROOT_INO, "f", FileKind::File).await;
    for session in [1, 2] {
        s.apply(Change::RenewSession {
            session,
            ttl_ns: 60_000_000_000,
        })
        .await
        .unwrap();
    }
    let set = |l: FileLock| Change::SetLock {
        ino: f.ino,
        lock: l,
    };
    // Readers share.
    s.apply(set(lock(1, 1, 0, 99, LockKind::Read)))
        .await
        .unwrap();
    s.apply(set(lock(2, 2, 50, 150, LockKind::Read)))
        .await
        .unwrap();
    // A writer conflicts, and is told whose lock is in the way.
    let e = s
        .apply(set(lock(2, 3, 90, 95, LockKind::Write)))
        .await
        .unwrap_err();
    let MetaError::WouldBlock(holder) = e else {
        panic!("{e:?}")
    };
    assert_eq!((holder.session, holder.owner), (1, 1));
    assert_eq!(
        s.get_lock(f.ino, lock(2, 3, 90, 95, LockKind::Write))
            .await
            .unwrap()
            .map(|l| (l.session, l.owner)),
        Some((1, 1))
    );
    // Past the readers' ranges, it is free.
    s.apply(set(lock(2, 3, 151, u64::MAX, LockKind::Write)))
        .await
        .unwrap();
    // The owner's own locks never conflict with it: upgrade in place.
    s.apply(set(lock(1, 1, 0, 40, LockKind::Write)))
        .await
        .unwrap();
    // Releasing an owner frees its ranges.
    s.apply(Change::ReleaseLocks {
        ino: f.ino,
        session: 2,
        owner: Some(2),
    })
    .await
    .unwrap();
    s.apply(set(lock(2, 3, 100, 150, LockKind::Write)))
        .await
        .unwrap();
    // The locks of a session that ended are dead.
    s.apply(Change::RenewSession {
        session: 1,
        ttl_ns: 1,
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert_eq!(
        s.get_lock(f.ino, lock(2, 4, 0, 99, LockKind::Write))
            .await
            .unwrap(),
        None
    );
    s.apply(set(lock(2, 4, 0, 99, LockKind::Write)))
        .await
        .unwrap();
}

#[tokio::test]
async fn the_change_feed_tells_what_changed_and_who_did() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let start = s.watch(0, Duration::ZERO).await;
    assert!(start.events.is_empty() && !start.lost);
    let f = match s
        .apply_as(42, node(ROOT_INO, "f", FileKind::File))
        .await
        .unwrap()
    {
        Outcome::Inode(i) | Outcome::Entry { inode: i, .. } => i,
        o => panic!("{o:?}"),
    };
    s.apply(unlink(ROOT_INO, "f", None)).await.unwrap();
    let page = s.watch(start.next, Duration::from_secs(1)).await;
    assert!(!page.lost);
    let entry = Event::Entry {
        parent: ROOT_INO,
        name: "f".into(),
    };
    let of = |origin: u64| -> Vec<Event> {
        page.events
            .iter()
            .filter(|(o, _)| *o == origin)
            .map(|(_, e)| e.clone())
            .collect()
    };
    let made = of(42);
    assert!(
        made.contains(&Event::Inode(f.ino)) && made.contains(&entry),
        "{made:?}"
    );
    assert!(
        made.contains(&Event::Inode(ROOT_INO)),
        "the directory changed too"
    );
    let gone = of(0);
    assert!(
        gone.contains(&Event::Inode(f.ino)) && gone.contains(&entry),
        "{gone:?}"
    );
    let first_unlink = page.events.iter().position(|(o, _)| *o == 0).unwrap();
    assert!(
        page.events[..first_unlink].iter().all(|(o, _)| *o == 42),
        "in order"
    );
    // Nothing new: the watch waits, and wakes when a change lands.
    let next = page.next;
    let s2 = s.clone();
    let t = Instant::now();
    let later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        s2.apply(node(ROOT_INO, "g", FileKind::File)).await.unwrap();
    });
    let woke = s.watch(next, Duration::from_secs(5)).await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(!woke.events.is_empty());
    later.await.unwrap();
    // A failed change publishes nothing.
    let quiet = woke.next;
    assert!(s.apply(node(ROOT_INO, "g", FileKind::File)).await.is_err());
    assert!(
        s.watch(quiet, Duration::from_millis(50))
            .await
            .events
            .is_empty()
    );
    // A watcher left too far behind is told it lost events.
    s.set_feed_capacity(4);
    for i in 0..5 {
        s.apply(node(ROOT_INO, &format!("n{i}"), FileKind::File))
            .await
            .unwrap();
    }
    assert!(s.watch(quiet, Duration::ZERO).await.lost);
}

/// Creates, unlinks and rmdirs answer with the directory as they left it
/// (a mount keeps its cache of directories exact with these).
#[tokio::test]
async fn name_changes_answer_with_their_directory() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let d = make(&s, ROOT_INO, "d", FileKind::Dir).await;
    let Outcome::Entry {
        inode: f,
        dir: after,
    } = s.apply(node(d.ino, "f", FileKind::File)).await.unwrap()
    else {
        panic!("a create answers with its directory")
    };
    assert_eq!(after.ino, d.ino);
    assert_eq!(
        (after.mtime, after.ctime, after.nlink),
        (f.ctime, f.ctime, 2)
    );
    assert!(after.version > d.version);
    let Outcome::Entry { dir: after, .. } =
        s.apply(node(d.ino, "sub", FileKind::Dir)).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(after.nlink, 3, "a subdirectory links its parent");
    // A non-exclusive create of an existing file changes nothing.
    let mut again = node(d.ino, "f", FileKind::File);
    if let Change::Create { exclusive, .. } = &mut again {
        *exclusive = false;
    }
    assert!(matches!(s.apply(again).await.unwrap(), Outcome::Inode(i) if i.ino == f.ino));
    // A second name keeps the node; the last one drops it.
    s.apply(Change::Link {
        ino: f.ino,
        new_parent: d.ino,
        new_name: "g".into(),
    })
    .await
    .unwrap();
    let Outcome::Entry { inode, dir: after } = s.apply(unlink(d.ino, "f", None)).await.unwrap()
    else {
        panic!()
    };
    assert_eq!((inode.ino, inode.nlink), (f.ino, 1));
    assert_eq!(after.mtime, after.ctime);
    let Outcome::Entry { inode, dir: last } = s.apply(unlink(d.ino, "g", None)).await.unwrap()
    else {
        panic!()
    };
    assert_eq!((inode.ino, inode.nlink), (f.ino, 0));
    assert!(last.version > after.version);
    let Outcome::Inode(after) = s
        .apply(Change::Rmdir {
            parent: d.ino,
            name: "sub".into(),
        })
        .await
        .unwrap()
    else {
        panic!("an rmdir answers with its directory")
    };
    assert_eq!((after.ino, after.nlink), (d.ino, 2));
    let fetched = s.getattr(d.ino).await.unwrap();
    assert_eq!(fetched, after, "the answer is what meta holds");
}
