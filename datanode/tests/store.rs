//! The block store on a real redb file.

use bytes::Bytes;
use tessera_datanode::*;

fn w(object: u64, index: u64, generation: u64, data: &[u8]) -> BlockWrite {
    BlockWrite {
        key: BlockKey { object, index },
        block: Block::new(generation, Bytes::copy_from_slice(data)),
    }
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

    // A lower generation never replaces a higher one; a higher one does.
    let r = s
        .put(vec![w(1, 0, 4, b"old"), w(1, 1, 6, b"new")])
        .await
        .unwrap();
    assert_eq!(r, vec![PutResult::Newer(5), PutResult::Stored]);
    let got = s
        .get(vec![
            BlockKey {
                object: 1,
                index: 0,
            },
            BlockKey {
                object: 1,
                index: 1,
            },
            BlockKey {
                object: 1,
                index: 2,
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        got[0],
        GetResult::Found(Block::new(5, Bytes::from_static(b"a")))
    );
    assert_eq!(
        got[1],
        GetResult::Found(Block::new(6, Bytes::from_static(b"new")))
    );
    assert_eq!(got[2], GetResult::Missing);
    let st = s.stats().await.unwrap();
    assert_eq!((st.blocks, st.damaged_puts), (2, 1));
}

#[tokio::test]
async fn concurrent_puts_share_commits_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let id;
    {
        let s = BlockStore::open(dir.path(), 8 << 20).unwrap();
        id = s.node_id().to_string();
        let tasks: Vec<_> = (0..64u64)
            .map(|o| {
                let s = s.clone();
                tokio::spawn(async move {
                    let writes = (0..32).map(|i| w(o, i, 1, &[o as u8; 512])).collect();
                    s.put(writes).await.unwrap()
                })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap().iter().all(|r| *r == PutResult::Stored));
        }
        assert_eq!(s.delete_objects(vec![3, 4, 999]).await.unwrap(), 64);
    }
    let s = BlockStore::open(dir.path(), 8 << 20).unwrap();
    assert_eq!(s.node_id(), id);
    assert_eq!(s.stats().await.unwrap().blocks, 62 * 32);
    let got = s
        .get(vec![
            BlockKey {
                object: 5,
                index: 31,
            },
            BlockKey {
                object: 3,
                index: 0,
            },
        ])
        .await
        .unwrap();
    assert_eq!(
        got[0],
        GetResult::Found(Block::new(1, Bytes::from(vec![5u8; 512])))
    );
    assert_eq!(
        got[1],
        GetResult::Gone,
        "a deleted object answers Gone, not Missing"
    );
}

/// Flip a byte of a stored block in the file: the read reports it corrupt.
#[tokio::test]
async fn corruption_on_disk_is_reported_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let pattern = b"TESSERA-CORRUPTION-PROBE-0123456789".repeat(16);
    {
        let s = BlockStore::open(dir.path(), 8 << 20).unwrap();
        s.put(vec![w(7, 0, 1, &pattern[..512])]).await.unwrap();
    }
    let path = dir.path().join("blocks.redb");
    let mut file = std::fs::read(&path).unwrap();
    let at = file
        .windows(35)
        .position(|x| x == &pattern[..35])
        .expect("block bytes in the file");
    file[at + 100] ^= 0xff;
    std::fs::write(&path, file).unwrap();
    let s = BlockStore::open(dir.path(), 8 << 20).unwrap();
    let got = s
        .get(vec![BlockKey {
            object: 7,
            index: 0,
        }])
        .await
        .unwrap();
    assert_eq!(got, vec![GetResult::Corrupt]);
    assert_eq!(s.stats().await.unwrap().corrupt_reads, 1);
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
