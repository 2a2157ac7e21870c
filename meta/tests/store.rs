//! The meta store on a real redb file.

use tessera_meta::store::{Change, Outcome};
use tessera_meta::*;

fn open(dir: &tempfile::TempDir) -> MetaStore {
    MetaStore::open(&dir.path().join("meta.redb"), None).unwrap()
}

async fn inode(s: &MetaStore, c: Change) -> Result<Inode, MetaError> {
    match s.apply(c).await? {
        Outcome::Inode(i) | Outcome::Entry { inode: i, .. } => Ok(i),
        o => panic!("expected an inode, got {o:?}"),
    }
}

fn mkdir(parent: u64, name: &str) -> Change {
    Change::Create {
        parent,
        name: name.into(),
        kind: FileKind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        target: None,
        seed: 0,
        exclusive: true,
    }
}

fn path(p: &str) -> Vec<String> {
    p.split('/')
        .filter(|c| !c.is_empty())
        .map(String::from)
        .collect()
}

async fn register(s: &MetaStore, n: u32) {
    for i in 0..n {
        let c = Change::Register {
            node_id: format!("n{i}"),
            addr: format!("127.0.0.1:{}", 9000 + i),
            slot: None,
        };
        assert_eq!(s.apply(c).await.unwrap(), Outcome::Slot(i));
    }
}

/// Leases `count` object ids; returns them as objects placed by seed 7.
async fn lease(s: &MetaStore, count: u64) -> Vec<ObjectRef> {
    let Outcome::Lease {
        first,
        count: n,
        width,
        ..
    } = s.apply(Change::LeaseObjects { count }).await.unwrap()
    else {
        panic!()
    };
    assert_eq!(n, count);
    (first..first + count)
        .map(|id| ObjectRef { id, seed: 7, width })
        .collect()
}

/// The ids of objects queued for GC (any age).
async fn gc_ids(s: &MetaStore, limit: usize) -> Vec<u64> {
    let queued = s.gc_list(limit, 0).await.unwrap();
    queued.iter().map(|e| e.object.id).collect()
}

fn publish_change(parent: u64, name: &str, object: ObjectRef, size: u64) -> Change {
    Change::Publish {
        parent,
        name: name.into(),
        object,
        size,
        mode: 0o644,
        mtime: 5,
    }
}

async fn publish(s: &MetaStore, parent: u64, name: &str, size: u64) -> Inode {
    let object = lease(s, 1).await[0];
    inode(s, publish_change(parent, name, object, size))
        .await
        .unwrap()
}

#[tokio::test]
async fn namespace_operations() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    register(&s, 3).await;
    let a = inode(&s, mkdir(ROOT_INO, "a")).await.unwrap();
    let b = inode(&s, mkdir(a.ino, "b")).await.unwrap();
    assert!(matches!(
        inode(&s, mkdir(ROOT_INO, "a")).await,
        Err(MetaError::Exists(_))
    ));
    assert!(matches!(
        inode(&s, mkdir(ROOT_INO, "x/y")).await,
        Err(MetaError::InvalidName { .. })
    ));
    assert_eq!(s.resolve(path("/a/b")).await.unwrap().ino, b.ino);
    assert!(matches!(s.resolve(path("/a/zz")).await, Err(MetaError::NotFound(p)) if p == "/a/zz"));

    let f = publish(&s, b.ino, "f", 1000).await;
    assert_eq!(f.size, 1000);
    assert!(matches!(
        s.resolve(path("/a/b/f/g")).await,
        Err(MetaError::NotADirectory(_))
    ));
    let names: Vec<_> = s
        .readdir(b.ino)
        .await
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["f"]);

    // Rmdir of a non-empty directory fails; moving a directory into itself fails.
    assert!(matches!(
        s.apply(Change::Rmdir {
            parent: a.ino,
            name: "b".into()
        })
        .await,
        Err(MetaError::NotEmpty(_))
    ));
    let into_self = Change::Rename {
        parent: ROOT_INO,
        name: "a".into(),
        new_parent: b.ino,
        new_name: "a2".into(),
        flags: RenameFlags::default(),
    };
    assert!(matches!(
        s.apply(into_self).await,
        Err(MetaError::Invalid(_))
    ));

    // Rename keeps the inode and its placement.
    let mv = Change::Rename {
        parent: b.ino,
        name: "f".into(),
        new_parent: ROOT_INO,
        new_name: "g".into(),
        flags: RenameFlags::default(),
    };
    let g = inode(&s, mv).await.unwrap();
    assert_eq!((g.ino, g.object), (f.ino, f.object));
    assert!(g.version > f.version);
    assert!(s.resolve(path("/a/b/f")).await.is_err());

    // Replacing content queues the old object for GC.
    let g2 = publish(&s, ROOT_INO, "g", 10).await;
    assert_eq!(g2.ino, g.ino);
    assert_ne!(g2.object, g.object);
    let gc = s.gc_list(10, 0).await.unwrap();
    assert_eq!(
        gc.iter().map(|e| e.object).collect::<Vec<_>>(),
        vec![g.object]
    );

    // Unlink queues the current object too; rmdir works once empty.
    s.apply(Change::Unlink {
        parent: ROOT_INO,
        name: "g".into(),
        hold: None,
    })
    .await
    .unwrap();
    assert_eq!(s.gc_list(10, 0).await.unwrap().len(), 2);
    s.apply(Change::Rmdir {
        parent: a.ino,
        name: "b".into(),
    })
    .await
    .unwrap();
    assert!(s.readdir(a.ino).await.unwrap().is_empty());
}

#[tokio::test]
async fn concurrent_changes_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(&dir);
        register(&s, 2).await;
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    inode(&s, mkdir(ROOT_INO, &format!("d{i}")))
                        .await
                        .unwrap()
                        .ino
                })
            })
            .collect();
        let mut inos = vec![];
        for t in tasks {
            inos.push(t.await.unwrap());
        }
        inos.sort();
        inos.dedup();
        assert_eq!(inos.len(), 200);
    }
    let s = open(&dir);
    assert_eq!(s.readdir(ROOT_INO).await.unwrap().len(), 200);
    assert_eq!(s.ring().await.unwrap().slots.len(), 2);
}

#[tokio::test]
async fn settings_are_fixed_at_creation() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("meta.redb");
    let bad = Settings {
        replicas: 3,
        write_quorum: 1,
        read_quorum: 1,
    };
    assert!(matches!(
        MetaStore::open(&p, Some(bad)),
        Err(MetaError::Settings(_))
    ));
    let three = Settings {
        replicas: 3,
        write_quorum: 2,
        read_quorum: 2,
    };
    drop(MetaStore::open(&p, Some(three)).unwrap());
    let err = MetaStore::open(&p, Some(Settings::default()))
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("created with R=3 W=2 Q=2"),
        "{err}"
    );
    assert_eq!(MetaStore::open(&p, None).unwrap().settings(), three);
}

#[tokio::test]
async fn leases_need_enough_datanodes_and_each_id_is_published_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    register(&s, 1).await;
    assert!(matches!(
        s.apply(Change::LeaseObjects { count: 3 }).await,
        Err(MetaError::Settings(_))
    ));
    register_more(&s).await;
    for bad in [0, store::MAX_LEASE + 1] {
        assert!(matches!(
            s.apply(Change::LeaseObjects { count: bad }).await,
            Err(MetaError::Invalid(_))
        ));
    }
    let ids = lease(&s, 3).await;
    assert_eq!(ids[0].width, 2);
    let Outcome::Lease { generation, .. } =
        s.apply(Change::LeaseObjects { count: 1 }).await.unwrap()
    else {
        panic!()
    };
    assert!(generation > 1);

    // Published once; a second publish of the same id is refused.
    inode(&s, publish_change(ROOT_INO, "a", ids[0], 1))
        .await
        .unwrap();
    let again = inode(&s, publish_change(ROOT_INO, "b", ids[0], 1)).await;
    assert!(matches!(again, Err(MetaError::Conflict(_))), "{again:?}");
    // An id nobody leased is refused.
    let stranger = ObjectRef {
        id: 1 << 40,
        ..ids[0]
    };
    let r = inode(&s, publish_change(ROOT_INO, "c", stranger, 1)).await;
    assert!(matches!(r, Err(MetaError::Conflict(_))), "{r:?}");
    assert!(s.resolve(path("/c")).await.is_err(), "nothing was created");

    // An abandoned upload goes to GC (by id).
    s.apply(Change::Abandon { object: ids[1].id })
        .await
        .unwrap();
    let gc = gc_ids(&s, 5).await;
    assert_eq!(gc, [ids[1].id]);
    // Nothing is old enough for a grace of an hour.
    assert!(s.gc_list(5, 3600 * 1_000_000_000).await.unwrap().is_empty());

    // Expired leases: their unused ids go to GC (not the published or
    // abandoned ones), and an upload on such an id can no longer publish.
    std::thread::sleep(std::time::Duration::from_millis(2));
    let Outcome::Count(n) = s
        .apply(Change::ReapLeases { ttl_ns: 1_000_000 })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(n, 2, "ids[2] and the lease of one");
    let gc = gc_ids(&s, 10).await;
    assert!(gc.contains(&ids[2].id) && !gc.contains(&ids[0].id));
    let late = inode(&s, publish_change(ROOT_INO, "late", ids[2], 1)).await;
    assert!(matches!(late, Err(MetaError::Conflict(_))), "{late:?}");
    assert_eq!(s.counts().await.unwrap().2, 0, "no leases left");
    assert_eq!(s.resolve(path("/a")).await.unwrap().object, ids[0]);
}

#[tokio::test]
async fn one_read_answers_a_create_and_a_listing() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    register(&s, 2).await;
    let d = inode(&s, mkdir(ROOT_INO, "d")).await.unwrap();
    let f = publish(&s, d.ino, "f", 3).await;
    let (parent, existing) = s.resolve_parent(path("/d/f")).await.unwrap();
    assert_eq!((parent.ino, existing.map(|i| i.ino)), (d.ino, Some(f.ino)));
    let (parent, existing) = s.resolve_parent(path("/d/new")).await.unwrap();
    assert_eq!((parent.ino, existing), (d.ino, None));
    assert!(matches!(
        s.resolve_parent(path("/nope/x")).await,
        Err(MetaError::NotFound(_))
    ));
    assert!(matches!(
        s.resolve_parent(path("/d/f/x")).await,
        Err(MetaError::NotADirectory(_))
    ));
    assert!(
        s.resolve_parent(vec![]).await.is_err(),
        "the root has no parent"
    );
    let (dir_inode, entries) = s.list(path("/d")).await.unwrap();
    assert_eq!(dir_inode.ino, d.ino);
    let entries = entries.expect("a directory lists its entries");
    assert_eq!(entries.len(), 1);
    assert_eq!((entries[0].0.as_str(), entries[0].1.ino), ("f", f.ino));
    let (file, none) = s.list(path("/d/f")).await.unwrap();
    assert_eq!((file.ino, none), (f.ino, None));
}

async fn register_more(s: &MetaStore) {
    let c = Change::Register {
        node_id: "n1".into(),
        addr: "127.0.0.1:9001".into(),
        slot: None,
    };
    assert_eq!(s.apply(c).await.unwrap(), Outcome::Slot(1));
    // The same node registering again keeps its slot.
    let c = Change::Register {
        node_id: "n1".into(),
        addr: "127.0.0.1:9002".into(),
        slot: None,
    };
    assert_eq!(s.apply(c).await.unwrap(), Outcome::Slot(1));
}

#[tokio::test]
async fn setattr_changes_only_what_it_names_and_bumps_the_version() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let d = inode(&s, mkdir(ROOT_INO, "d")).await.unwrap();
    let attr = SetAttr {
        mode: Some(0o100700),
        mtime: Some(42),
        ..SetAttr::default()
    };
    let d2 = inode(&s, Change::SetAttr { ino: d.ino, attr })
        .await
        .unwrap();
    assert_eq!(d2.mode, 0o700, "file-type bits are dropped");
    assert_eq!(d2.mtime, 42);
    assert_eq!((d2.uid, d2.gid, d2.atime), (d.uid, d.gid, d.atime));
    assert!(d2.version > d.version);
    assert_eq!(s.getattr(d.ino).await.unwrap(), d2);
    let missing = Change::SetAttr {
        ino: 9999,
        attr: SetAttr::default(),
    };
    assert!(matches!(
        s.apply(missing).await,
        Err(MetaError::NotFound(_))
    ));
}

/// A directory renamed over an empty directory leaves its parent one link
/// fewer (one subdirectory fewer), in the same parent or across parents.
#[tokio::test]
async fn renaming_a_directory_over_an_empty_one_counts_links() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let p = inode(&s, mkdir(ROOT_INO, "p")).await.unwrap();
    let a = inode(&s, mkdir(p.ino, "a")).await.unwrap();
    inode(&s, mkdir(p.ino, "b")).await.unwrap();
    assert_eq!(s.getattr(p.ino).await.unwrap().nlink, 4);
    let mv = Change::Rename {
        parent: p.ino,
        name: "a".into(),
        new_parent: p.ino,
        new_name: "b".into(),
        flags: RenameFlags::default(),
    };
    assert_eq!(inode(&s, mv).await.unwrap().ino, a.ino);
    assert_eq!(s.getattr(p.ino).await.unwrap().nlink, 3, "same parent");
    let q = inode(&s, mkdir(ROOT_INO, "q")).await.unwrap();
    inode(&s, mkdir(q.ino, "c")).await.unwrap();
    let mv = Change::Rename {
        parent: p.ino,
        name: "b".into(),
        new_parent: q.ino,
        new_name: "c".into(),
        flags: RenameFlags::default(),
    };
    inode(&s, mv).await.unwrap();
    assert_eq!(s.getattr(p.ino).await.unwrap().nlink, 2, "old parent");
    assert_eq!(s.getattr(q.ino).await.unwrap().nlink, 3, "new parent");
}

/// A storage failure in the middle of a change leaves none of it behind,
/// while the rest of its batch commits.
#[tokio::test]
async fn a_change_failing_half_way_leaves_no_trace() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    register(&s, 2).await;
    let f = publish(&s, ROOT_INO, "f", 10).await;
    let d = inode(&s, mkdir(ROOT_INO, "d")).await.unwrap();
    let rename = || Change::Rename {
        parent: ROOT_INO,
        name: "f".into(),
        new_parent: d.ino,
        new_name: "g".into(),
        flags: RenameFlags::default(),
    };
    // A rename writes: remove the old entry, insert the new, ... Fail its
    // second write, after the old entry is gone.
    s.fail_write_after(2);
    let (r, other) = tokio::join!(s.apply(rename()), s.apply(mkdir(ROOT_INO, "x")));
    assert!(matches!(r, Err(MetaError::Storage(_))), "{r:?}");
    assert_eq!(
        s.resolve(path("/f")).await.unwrap().ino,
        f.ino,
        "f is where it was"
    );
    assert!(s.resolve(path("/d/g")).await.is_err());
    let root = s.getattr(ROOT_INO).await.unwrap();
    assert_eq!(root.nlink, 4, "root links: itself, .., d and x");
    if other.is_ok() {
        assert!(s.resolve(path("/x")).await.is_ok());
    }
    // Nothing is stuck: the same rename now succeeds.
    inode(&s, rename()).await.unwrap();
    assert_eq!(s.resolve(path("/d/g")).await.unwrap().ino, f.ino);

    // Abandon marks the id used, then queues it for GC: failing the second
    // write must not leave an id that is used but never collected.
    let ids = lease(&s, 1).await;
    s.fail_write_after(2);
    assert!(
        s.apply(Change::Abandon { object: ids[0].id })
            .await
            .is_err()
    );
    s.apply(Change::Abandon { object: ids[0].id })
        .await
        .unwrap();
    let gc = gc_ids(&s, 10).await;
    assert!(gc.contains(&ids[0].id), "{gc:?}");
}

fn begin(ino: u64, end: u64, holder: u64, ttl_ns: i64) -> Change {
    Change::BeginWrite {
        ino,
        end,
        holder,
        ttl_ns,
    }
}

async fn grant(s: &MetaStore, c: Change) -> Result<(u64, u64), MetaError> {
    match s.apply(c).await? {
        Outcome::Write {
            generation,
            dirty_end,
        } => Ok((generation, dirty_end)),
        o => panic!("expected a write lease, got {o:?}"),
    }
}

/// In-place writes of one file are serialised across gateways by a lease in
/// meta; bytes an uncommitted write may have left past the end are reported
/// until a commit or resize covers them.
#[tokio::test]
async fn write_leases_serialise_gateways_and_track_dirty_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    register(&s, 2).await;
    let f = publish(&s, ROOT_INO, "f", 100).await;
    let (a, b, c) = (11, 22, 33);
    let sec = 10_000_000_000;
    let (g1, dirty) = grant(&s, begin(f.ino, 5000, a, sec)).await.unwrap();
    assert_eq!(dirty, 0);
    let busy = grant(&s, begin(f.ino, 10, b, sec)).await;
    assert!(matches!(busy, Err(MetaError::Busy(_))), "{busy:?}");
    // A renews its own lease.
    let (g2, dirty) = grant(&s, begin(f.ino, 5000, a, sec)).await.unwrap();
    assert!(g2 > g1);
    assert_eq!(dirty, 5000, "A's own first attempt may have left bytes");
    // A's write fails: the lease ends, its bytes may remain.
    s.apply(Change::EndWrite {
        ino: f.ino,
        holder: a,
    })
    .await
    .unwrap();
    let (_, dirty) = grant(&s, begin(f.ino, 200, b, sec)).await.unwrap();
    assert_eq!(dirty, 5000);
    let commit = |end, holder| Change::CommitWrite {
        ino: f.ino,
        object: f.object,
        end,
        mtime: 1,
        holder,
    };
    // Only the holder commits.
    assert!(matches!(
        inode(&s, commit(200, a)).await,
        Err(MetaError::Conflict(_))
    ));
    assert_eq!(inode(&s, commit(200, b)).await.unwrap().size, 200);
    let (_, dirty) = grant(&s, begin(f.ino, 300, c, sec)).await.unwrap();
    assert_eq!(
        dirty, 5000,
        "a commit to 200 does not cover bytes up to 5000"
    );
    // A resize past the dirty bytes (after zeroing them) clears them.
    let resize = |size, holder| Change::Resize {
        ino: f.ino,
        object: f.object.id,
        size,
        holder,
    };
    assert!(matches!(
        inode(&s, resize(50, c)).await,
        Err(MetaError::Invalid(_))
    ));
    assert_eq!(inode(&s, resize(6000, c)).await.unwrap().size, 6000);
    let (_, dirty) = grant(&s, begin(f.ino, 10, a, 1)).await.unwrap();
    assert_eq!(dirty, 0);
    // An expired lease is taken over; its late commit is refused.
    std::thread::sleep(std::time::Duration::from_millis(2));
    grant(&s, begin(f.ino, 10, b, sec)).await.unwrap();
    assert!(matches!(
        inode(&s, commit(10, a)).await,
        Err(MetaError::Conflict(_))
    ));
    inode(&s, commit(10, b)).await.unwrap();
}

/// A long upload renews its pending record, so reaping expired leases does
/// not collect it.
#[tokio::test]
async fn a_renewed_upload_outlives_its_first_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    register(&s, 2).await;
    let ids = lease(&s, 2).await;
    std::thread::sleep(std::time::Duration::from_millis(30));
    s.apply(Change::RenewUpload { object: ids[0].id })
        .await
        .unwrap();
    // Granted 30 ms ago, renewed just now: a 20 ms TTL keeps it.
    let Outcome::Count(n) = s
        .apply(Change::ReapLeases { ttl_ns: 20_000_000 })
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(n, 0);
    inode(&s, publish_change(ROOT_INO, "big", ids[0], 1))
        .await
        .unwrap();
    // Once a lease has expired, renewing fails: the upload must not publish.
    std::thread::sleep(std::time::Duration::from_millis(2));
    s.apply(Change::ReapLeases { ttl_ns: 1_000_000 })
        .await
        .unwrap();
    assert!(matches!(
        s.apply(Change::RenewUpload { object: ids[1].id }).await,
        Err(MetaError::Conflict(_))
    ));
}

fn lock_req(p: &str, token: &str, shared: bool, deep: bool, timeout_s: u64) -> LockRequest {
    LockRequest {
        token: token.into(),
        path: p.into(),
        href: format!("/{p}"),
        principal: None,
        owner: Some("<D:owner xmlns:D=\"DAV:\">me</D:owner>".into()),
        shared,
        deep,
        timeout_s,
    }
}

async fn take(s: &MetaStore, r: LockRequest) -> Result<LockInfo, MetaError> {
    match s.apply(Change::Lock(r)).await? {
        Outcome::Lock(l) => Ok(l),
        o => panic!("expected a lock, got {o:?}"),
    }
}

#[tokio::test]
async fn locks_conflict_by_scope_and_depth_expire_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let deep = take(&s, lock_req("c", "t1", false, true, 60))
        .await
        .unwrap();
    assert_eq!((deep.timeout_s, deep.remaining_s), (60, 60));
    // Anything under a deep exclusive lock conflicts, and names it.
    for r in [
        lock_req("c/f", "t2", false, false, 60),
        lock_req("c/f", "t2", true, false, 60),
        lock_req("", "t2", true, true, 60),
    ] {
        match take(&s, r).await {
            Err(MetaError::Locked(l)) => assert_eq!(l.token, "t1"),
            other => panic!("{other:?}"),
        }
    }
    // A depth-0 lock of the root does not reach into c; a sibling is free.
    take(&s, lock_req("", "t3", false, false, 60))
        .await
        .unwrap();
    take(&s, lock_req("d", "t4", false, false, 60))
        .await
        .unwrap();
    // Shared locks share.
    take(&s, lock_req("e", "s1", true, false, 60))
        .await
        .unwrap();
    take(&s, lock_req("e", "s2", true, false, 60))
        .await
        .unwrap();
    assert!(
        take(&s, lock_req("e", "x", false, false, 60))
            .await
            .is_err()
    );
    // What a request on c/f sees: the deep lock of c (and not the root's
    // depth-0 one); on c, also locks below it.
    let around = s.locks(path("/c/f")).await.unwrap();
    assert_eq!(
        around.iter().map(|l| l.token.as_str()).collect::<Vec<_>>(),
        ["t1"]
    );
    // Unlock by token, found on an ancestor of the path given.
    s.apply(Change::Unlock {
        path: "c/f".into(),
        token: "t1".into(),
        principal: None,
    })
    .await
    .unwrap();
    assert!(
        s.apply(Change::Unlock {
            path: "c".into(),
            token: "t1".into(),
            principal: None,
        })
        .await
        .is_err()
    );
    take(&s, lock_req("c/f", "t5", false, false, 60))
        .await
        .unwrap();
    // A depth-0 lock is not released through a path below it.
    assert!(
        s.apply(Change::Unlock {
            path: "d/x".into(),
            token: "t4".into(),
            principal: None,
        })
        .await
        .is_err()
    );
    // A user's lock is released by that user only.
    let mut mine = lock_req("m", "alice-1", false, false, 60);
    mine.principal = Some("alice".into());
    take(&s, mine).await.unwrap();
    let unlock_as = |who: Option<&str>| Change::Unlock {
        path: "m".into(),
        token: "alice-1".into(),
        principal: who.map(String::from),
    };
    assert!(matches!(
        s.apply(unlock_as(Some("bob"))).await,
        Err(MetaError::Locked(_))
    ));
    assert!(matches!(
        s.apply(unlock_as(None)).await,
        Err(MetaError::Locked(_))
    ));
    s.apply(unlock_as(Some("alice"))).await.unwrap();
    // Deleting c drops the locks at and below it.
    s.apply(Change::DropLocks { path: "c".into() })
        .await
        .unwrap();
    assert!(s.locks(path("/c/f")).await.unwrap().is_empty());

    // Locks outlive a restart of meta, and expire by its clock.
    take(&s, lock_req("brief", "b", false, false, 1))
        .await
        .unwrap();
    drop(s);
    let s = open(&dir);
    assert_eq!(s.locks(path("/brief")).await.unwrap().len(), 1);
    assert_eq!(s.locks(path("/d")).await.unwrap()[0].token, "t4");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert!(s.locks(path("/brief")).await.unwrap().is_empty());
    take(&s, lock_req("brief", "b2", false, false, 1))
        .await
        .unwrap();
    // A refresh restarts the timeout; timeouts are capped.
    let long = take(&s, lock_req("long", "l", false, false, u64::MAX))
        .await
        .unwrap();
    assert_eq!(long.timeout_s, 24 * 3600);
    match s
        .apply(Change::RefreshLock {
            path: "long".into(),
            token: "l".into(),
            timeout_s: 5,
            principal: None,
        })
        .await
        .unwrap()
    {
        Outcome::Lock(l) => assert_eq!(l.timeout_s, 5),
        o => panic!("{o:?}"),
    }
}

fn prop(ns: &str, name: &str, value: &str) -> DeadProp {
    DeadProp {
        namespace: Some(ns.into()),
        name: name.into(),
        prefix: None,
        xml: Some(format!("<x:{name} xmlns:x=\"{ns}\">{value}</x:{name}>").into_bytes()),
    }
}

#[tokio::test]
async fn dead_properties_are_atomic_bounded_copied_and_dropped_with_their_inode() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    register(&s, 2).await;
    let f = publish(&s, ROOT_INO, "f", 10).await;
    let g = publish(&s, ROOT_INO, "g", 10).await;
    let set = |p: DeadProp| (true, p);
    s.apply(Change::PatchProps {
        ino: f.ino,
        patch: vec![set(prop("urn:a", "x", "1")), set(prop("urn:b", "x", "2"))],
        mtime: None,
    })
    .await
    .unwrap();
    let view = s.view(path("/f"), ViewWant::Inode, true).await.unwrap();
    assert_eq!(view.props.len(), 1);
    assert_eq!(view.props[0].1.len(), 2, "same name, two namespaces");
    assert_eq!(
        view.inode.unwrap().version,
        f.version,
        "dead properties do not change the ETag"
    );
    // Too large a value fails the whole patch: the other set stays undone.
    let big = prop("urn:a", "big", &"v".repeat(70_000));
    let r = s
        .apply(Change::PatchProps {
            ino: f.ino,
            patch: vec![set(prop("urn:a", "y", "3")), set(big)],
            mtime: None,
        })
        .await;
    assert!(matches!(r, Err(MetaError::Invalid(_))), "{r:?}");
    // A storage failure half-way leaves nothing either.
    s.fail_write_after(2);
    assert!(
        s.apply(Change::PatchProps {
            ino: f.ino,
            patch: vec![set(prop("urn:a", "y", "3")), set(prop("urn:a", "z", "4"))],
            mtime: Some(5),
        })
        .await
        .is_err()
    );
    let view = s.view(path("/f"), ViewWant::Inode, true).await.unwrap();
    assert_eq!(view.props[0].1.len(), 2);
    assert_eq!(view.inode.unwrap().mtime, f.mtime);
    // An mtime in the patch is the file's new mtime.
    s.apply(Change::PatchProps {
        ino: f.ino,
        patch: vec![(false, prop("urn:b", "x", ""))],
        mtime: Some(1_000_000_000),
    })
    .await
    .unwrap();
    let view = s.view(path("/f"), ViewWant::Inode, true).await.unwrap();
    assert_eq!(view.inode.as_ref().unwrap().mtime, 1_000_000_000);
    assert_eq!(view.props[0].1.len(), 1);
    // COPY carries them; a listing shows each entry's.
    s.apply(Change::CopyProps {
        from: f.ino,
        to: g.ino,
    })
    .await
    .unwrap();
    let listing = s.view(vec![], ViewWant::Listing, true).await.unwrap();
    let with: Vec<u64> = listing.props.iter().map(|(i, _)| *i).collect();
    assert_eq!(with, [f.ino, g.ino]);
    // Unlinking f drops its properties; g keeps its copy.
    s.apply(Change::Unlink {
        parent: ROOT_INO,
        name: "f".into(),
        hold: None,
    })
    .await
    .unwrap();
    let listing = s.view(vec![], ViewWant::Listing, true).await.unwrap();
    let with: Vec<u64> = listing.props.iter().map(|(i, _)| *i).collect();
    assert_eq!(with, [g.ino]);
}

fn range(slot: u32, object: ObjectRef, first: u64, end: u64) -> RepairRange {
    RepairRange {
        slot,
        object,
        first,
        end,
    }
}

#[tokio::test]
async fn the_repair_queue_merges_ranges_and_keeps_what_changed_during_a_repair() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    register(&s, 3).await;
    let o = ObjectRef {
        id: 42,
        seed: 1,
        width: 3,
    };
    let other = ObjectRef { id: 43, ..o };
    let need = |ranges| Change::NeedRepair { ranges };
    // Overlapping and adjacent ranges of one object and slot merge; other
    // slots and objects stay apart.
    s.apply(need(vec![
        range(2, o, 0, 100),
        range(2, o, 100, 150),
        range(2, o, 120, 300),
        range(2, o, 1000, 1010),
        range(1, o, 0, 100),
        range(2, other, 5, 6),
    ]))
    .await
    .unwrap();
    let q = s.repairs(Some(2), 100).await.unwrap();
    let spans: Vec<(u64, u64, u64)> = q
        .iter()
        .map(|e| (e.range.object.id, e.range.first, e.range.end))
        .collect();
    assert_eq!(spans, [(42, 0, 300), (42, 1000, 1010), (43, 5, 6)]);
    assert_eq!(q[0].range.object, o, "seed and width are kept");
    // A range bridging two merges them all.
    s.apply(need(vec![range(2, o, 290, 1000)])).await.unwrap();
    let q = s.repairs(Some(2), 100).await.unwrap();
    assert_eq!((q[0].range.first, q[0].range.end), (0, 1010));
    assert_eq!(q.len(), 2);
    // Counts: the blocks placement puts on each slot (R=2 of width 3).
    let per_slot = s.under_replicated(2).await.unwrap();
    assert_eq!(
        per_slot,
        [
            (1, o.blocks_on(1, 0..100, 2)),
            (2, o.blocks_on(2, 0..1010, 2) + other.blocks_on(2, 5..6, 2))
        ]
    );
    // A repair done against an entry that changed since it was handed out
    // leaves it (a write missed meanwhile is not lost); done against the
    // current one removes it.
    let handed = q[0];
    s.apply(need(vec![range(2, o, 1010, 1020)])).await.unwrap();
    s.apply(Change::RepairDone { done: vec![handed] })
        .await
        .unwrap();
    let q = s.repairs(Some(2), 100).await.unwrap();
    assert_eq!((q[0].range.first, q[0].range.end), (0, 1020));
    s.apply(Change::RepairDone { done: vec![q[0]] })
        .await
        .unwrap();
    let q = s.repairs(Some(2), 100).await.unwrap();
    assert_eq!(q.len(), 1, "{q:?}");
    assert_eq!(q[0].range.object.id, 43);
    // Bad ranges are refused and change nothing.
    for bad in [
        range(3, o, 0, 1),
        range(0, o, 5, 5),
        range(0, ObjectRef::NONE, 0, 1),
    ] {
        assert!(matches!(
            s.apply(need(vec![range(0, o, 0, 1), bad])).await,
            Err(MetaError::Invalid(_))
        ));
    }
    assert!(s.repairs(Some(0), 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn gc_finishes_per_slot_and_waits_only_for_slots_that_have_not_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    register(&s, 3).await;
    let ids = lease(&s, 2).await;
    for o in &ids {
        s.apply(Change::Abandon { object: o.id }).await.unwrap();
    }
    s.apply(Change::NeedRepair {
        ranges: vec![range(2, ids[0], 0, 10)],
    })
    .await
    .unwrap();
    let due = s.gc_due(10, 0, 3, vec![]).await.unwrap();
    assert_eq!(due.len(), 2);
    assert!(due.iter().all(|d| d.done.is_empty()));
    // Slots 0 and 1 deleted the first; slot 2 is down: only the second is
    // still due from the slots that are up.
    for slot in [0, 1] {
        s.apply(Change::GcDoneOn {
            slot,
            objects: vec![ids[0].id],
        })
        .await
        .unwrap();
    }
    let due = s.gc_due(10, 0, 3, vec![2]).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].entry.object.id, ids[1].id);
    let due = s.gc_due(10, 0, 3, vec![]).await.unwrap();
    assert_eq!(due[0].done, [0, 1]);
    // Slot 2 back and done: the object leaves the queue, its repairs too.
    s.apply(Change::GcDoneOn {
        slot: 2,
        objects: vec![ids[0].id],
    })
    .await
    .unwrap();
    assert_eq!(gc_ids(&s, 10).await, [ids[1].id]);
    assert!(s.repairs(None, 10).await.unwrap().is_empty());
    assert!(matches!(
        s.apply(Change::GcDoneOn {
            slot: 3,
            objects: vec![ids[1].id]
        })
        .await,
        Err(MetaError::Invalid(_))
    ));
}
