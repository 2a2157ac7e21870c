//! The block store on a real redb file.

use bytes::Bytes;
use tessera_datanode::wire::PutItem;
use tessera_datanode::*;

fn w(object: u64, index: u64, generation: u64, data: &[u8]) -> PutItem {
    PutItem {
        object,
        role: 0,
        index,
        block: Block::new(generation, Bytes::copy_from_slice(data)),
    }
}

fn found(generation: u64, data: &[u8]) -> GetResult {
    GetResult::Found(Block::new(generation, Bytes::copy_from_slice(data)))
}

#[tokio::test]
async fn put_get_generations_and_damage() {
    let dir = tempfile::tempdir().unwrap();
    let s = BlockStore::open(dir.path(), 8 << 20).unwrap();
    let mut bad = w(1, 2, 5, b"bad");
    bad.block.data = Bytes::from_static(b"BAD");
    let r = s
        .put(vec![w(1, 0, 5, b"a"), bad, w(1, 1, 5, b"b")])
        .await
        .unwrap();
    assert_eq!(
        r,
        vec![PutResult::Stored, PutResult::Damaged, PutResult::Stored]
    );

    // A lower generation never replaces a higher one; a higher one does; the
    // same block twice in one put keeps the higher generation.
    let r = s
        .put(vec![
            w(1, 0, 4, b"old"),
            w(1, 1, 6, b"new"),
            w(1, 3, 8, b"eight"),
            w(1, 3, 7, b"seven"),
        ])
        .await
        .unwrap();
    assert_eq!(
        r,
        vec![
            PutResult::Newer(5),
            PutResult::Stored,
            PutResult::Stored,
            PutResult::Newer(8)
        ]
    );
    let got = s.get(1, 0, vec![0, 1, 2, 3]).await.unwrap();
    assert_eq!(
        got,
        vec![
            found(5, b"a"),
            found(6, b"new"),
            GetResult::Missing,
            found(8, b"eight")
        ]
    );
    let st = s.stats().await.unwrap();
    assert_eq!((st.blocks, st.rows, st.damaged_puts), (3, 1, 1));
    // The same block held in another replica role lives in a row of its own.
    let mut other_role = w(1, 0, 9, b"role one");
    other_role.role = 1;
    assert_eq!(
        s.put(vec![other_role]).await.unwrap(),
        vec![PutResult::Stored]
    );
    assert_eq!(
        s.get(1, 1, vec![0, 1]).await.unwrap(),
        vec![found(9, b"role one"), GetResult::Missing]
    );
    assert_eq!(s.get(1, 0, vec![0]).await.unwrap(), vec![found(5, b"a")]);
    assert_eq!(s.stats().await.unwrap().rows, 2);
    // Indices out of order are refused, not misread.
    assert!(matches!(
        s.get(1, 0, vec![1, 0]).await,
        Err(DatanodeError::Invalid(_))
    ));
}

/// Overwrites that cross row boundaries rewrite only what they cover.
#[tokio::test]
async fn partial_overwrites_across_rows() {
    let dir = tempfile::tempdir().unwrap();
    let s = BlockStore::open(dir.path(), 8 << 20).unwrap();
    let g = extent::GROUP_BLOCKS;
    let first: Vec<PutItem> = (0..3 * g).map(|i| w(9, i, 1, &[1u8; 512])).collect();
    s.put(first).await.unwrap();
    // Blocks g-3 .. 2g+3: the end of row 0, all of row 1, the start of row 2.
    let second: Vec<PutItem> = (g - 3..2 * g + 3)
        .map(|i| w(9, i, 2, &[2u8; 512]))
        .collect();
    assert!(
        s.put(second)
            .await
            .unwrap()
            .iter()
            .all(|r| *r == PutResult::Stored)
    );
    let all: Vec<u64> = (0..3 * g).collect();
    let got = s.get(9, 0, all.clone()).await.unwrap();
    for (i, r) in all.iter().zip(got) {
        let new = (g - 3..2 * g + 3).contains(i);
        let want = if new {
            found(2, &[2u8; 512])
        } else {
            found(1, &[1u8; 512])
        };
        assert_eq!(r, want, "block {i}");
    }
    let st = s.stats().await.unwrap();
    assert_eq!((st.blocks, st.rows), (3 * g, 3));
}

#[tokio::test]
async fn concurrent_puts_share_commits_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let s = BlockStore::open(dir.path(), 8 << 20).unwrap();
        id = s.node_id().to_string();
        // 64 writers; pairs of them write alternate blocks of the same rows.
        let tasks: Vec<_> = (0..64u64)
            .map(|t| {
                let s = s.clone();
                tokio::spawn(async move {
                    let o = t / 2;
                    let writes = (0..32)
                        .map(|i| w(o, i * 2 + t % 2, 1, &[o as u8; 512]))
                        .collect();
                    s.put(writes).await.unwrap()
                })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap().iter().all(|r| *r == PutResult::Stored));
        }
        assert_eq!(s.delete_objects(vec![3, 4, 999]).await.unwrap(), 128);
    }
    let s = BlockStore::open(dir.path(), 8 << 20).unwrap();
    assert_eq!(s.node_id(), id);
    assert_eq!(s.stats().await.unwrap().blocks, 30 * 64);
    let got = s.get(5, 0, (0..64).collect()).await.unwrap();
    assert!(got.iter().all(|r| *r == found(1, &[5u8; 512])));
    assert_eq!(
        s.get(3, 0, vec![0]).await.unwrap(),
        vec![GetResult::Gone],
        "a deleted object answers Gone, not Missing"
    );
}

/// Damage on disk: bytes are handed out as stored (the reader checks them
/// against their SHA-256); a damaged entry is `Corrupt` for exactly its block.
#[tokio::test]
async fn corruption_on_disk_is_never_served_as_good() {
    let dir = tempfile::tempdir().unwrap();
    let pattern = b"TESSERA-CORRUPTION-PROBE-0123456789".repeat(16);
    let other = [b'o'; 512];
    let sha_of_other = block::sha256(&other);
    {
        let s = BlockStore::open(dir.path(), 8 << 20).unwrap();
        s.put(vec![
            w(7, 0, 1, &pattern[..512]),
            w(7, 1, 1, &other),
            w(7, 2, 1, b"third"),
        ])
        .await
        .unwrap();
    }
    let path = dir.path().join("blocks.redb");
    let mut file = std::fs::read(&path).unwrap();
    let at = file
        .windows(35)
        .position(|x| x == &pattern[..35])
        .expect("block bytes in the file");
    file[at + 100] ^= 0xff;
    // Block 1's entry holds its SHA-256: damage the entry there.
    let at = file
        .windows(32)
        .position(|x| x == sha_of_other)
        .expect("block 1's entry in the file");
    file[at + 5] ^= 0x01;
    std::fs::write(&path, file).unwrap();
    let s = BlockStore::open(dir.path(), 8 << 20).unwrap();
    let got = s.get(7, 0, vec![0, 1, 2]).await.unwrap();
    match &got[0] {
        GetResult::Found(b) => assert!(!b.is_valid(), "damaged bytes fail their SHA-256"),
        other => panic!("block 0: {other:?}"),
    }
    assert_eq!(got[1], GetResult::Corrupt);
    assert_eq!(got[2], found(1, b"third"));
    // Rewriting the row (a write to its neighbour) keeps the damaged entry
    // damaged: it must not turn into a hole.
    assert_eq!(
        s.put(vec![w(7, 2, 2, b"third, again")]).await.unwrap(),
        vec![PutResult::Stored]
    );
    let got = s.get(7, 0, vec![1, 2, 3]).await.unwrap();
    assert_eq!(
        got,
        vec![
            GetResult::Corrupt,
            found(2, b"third, again"),
            GetResult::Missing
        ]
    );
    s.report_corrupt(7, &[0]);
    let st = s.stats().await.unwrap();
    assert_eq!((st.corrupt_reads, st.corrupt_reported), (2, 1));
    // A repair (same generation, good bytes) replaces both.
    let r = s
        .put(vec![w(7, 0, 1, &pattern[..512]), w(7, 1, 1, &other)])
        .await
        .unwrap();
    assert_eq!(r, vec![PutResult::Stored, PutResult::Stored]);
    let got = s.get(7, 0, vec![0, 1, 2]).await.unwrap();
    assert_eq!(
        got,
        vec![
            found(1, &pattern[..512]),
            found(1, &other),
            found(2, b"third, again")
        ]
    );
}

/// A write that arrives after its object was collected stores nothing.
#[tokio::test]
async fn late_writes_into_a_deleted_object_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = BlockStore::open(dir.path(), 8 << 20).unwrap();
    s.put(vec![w(4, 0, 1, b"a")]).await.unwrap();
    s.delete_objects(vec![4]).await.unwrap();
    let r = s
        .put(vec![w(4, 1, 1, b"late"), w(5, 0, 1, b"other")])
        .await
        .unwrap();
    assert_eq!(r, vec![PutResult::Gone, PutResult::Stored]);
    assert_eq!(s.stats().await.unwrap().blocks, 1);
}

/// A data directory of the first format (one row per block) is refused
/// with a message, never misread or overwritten.
#[test]
fn the_old_format_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blocks.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<(u64, u64), &[u8]> =
                redb::TableDefinition::new("blocks");
            let mut t = tx.open_table(def).unwrap();
            t.insert((1, 0), [0u8; 40].as_slice()).unwrap();
        }
        tx.commit().unwrap();
    }
    let err = BlockStore::open(dir.path(), 8 << 20)
        .err()
        .expect("refused");
    let msg = err.to_string();
    assert!(msg.contains("first datanode format"), "{msg}");
    assert!(msg.contains("Move the directory aside"), "{msg}");
    // Nothing was changed: the old table is there, with its row, and no
    // table of the new format was committed.
    let db = redb::Database::open(&path).unwrap();
    let tx = redb::ReadableDatabase::begin_read(&db).unwrap();
    let names: Vec<String> = tx
        .list_tables()
        .unwrap()
        .map(|t| redb::TableHandle::name(&t).to_string())
        .collect();
    assert_eq!(names, ["blocks"]);
}

/// A deleted object's tombstone refuses late puts (they must not bring its
/// blocks back) until it is older than the TTL; then a later delete prunes
/// it, so tombstones do not pile up forever.
#[tokio::test]
async fn tombstones_refuse_late_puts_then_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let options = StoreOptions {
        cache_bytes: 8 << 20,
        tombstone_ttl: std::time::Duration::from_millis(200),
        ..StoreOptions::default()
    };
    let s = BlockStore::open_with(dir.path(), options).unwrap();
    s.put(vec![w(1, 0, 5, b"a")]).await.unwrap();
    assert_eq!(s.delete_objects(vec![1]).await.unwrap(), 1);
    assert_eq!(
        s.put(vec![w(1, 0, 6, b"late")]).await.unwrap(),
        [PutResult::Gone]
    );
    assert_eq!(s.get(1, 0, vec![0]).await.unwrap(), [GetResult::Gone]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    // The next delete prunes tombstones past their TTL.
    s.delete_objects(vec![2]).await.unwrap();
    assert_eq!(s.get(1, 0, vec![0]).await.unwrap(), [GetResult::Missing]);
    assert_eq!(s.get(2, 0, vec![0]).await.unwrap(), [GetResult::Gone]);
    // Tombstones survive a reopen (with their times).
    drop(s);
    let s = BlockStore::open(dir.path(), 8 << 20).unwrap();
    assert_eq!(s.get(2, 0, vec![0]).await.unwrap(), [GetResult::Gone]);
}
