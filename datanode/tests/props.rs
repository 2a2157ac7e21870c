//! Property tests of the datanode's packed wire formats: any bytes give a
//! clean error or blocks, never a panic, never more than asked; encoded
//! batches decode to what was packed.

use bytes::Bytes;
use proptest::prelude::*;
use tessera_datanode::wire::{GetBatchBuilder, parse_get, parse_put, put_segment};
use tessera_datanode::{BLOCK_SIZE, Block, GetResult};

fn block() -> impl Strategy<Value = Block> {
    (
        any::<u64>(),
        proptest::collection::vec(any::<u8>(), 0..=BLOCK_SIZE),
    )
        .prop_map(|(g, d)| Block::new(g, Bytes::from(d)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn put_payloads_of_any_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        roles in proptest::collection::vec(any::<u8>(), 0..4),
        max in 0usize..100,
    ) {
        if let Ok(items) = parse_put(&Bytes::from(bytes), &roles, max) {
            prop_assert!(items.len() <= max);
            prop_assert!(items.iter().all(|i| i.block.data.len() <= BLOCK_SIZE));
        }
    }

    #[test]
    fn get_batches_of_any_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        count in 0usize..40,
    ) {
        if let Ok(results) = parse_get(count, Bytes::from(bytes)) {
            prop_assert_eq!(results.len(), count);
        }
    }

    #[test]
    fn put_segments_round_trip(
        object in any::<u64>(),
        blocks in proptest::collection::vec((any::<u64>(), block()), 0..20),
        role in any::<u8>(),
    ) {
        let seg = put_segment(object, blocks.iter().map(|(i, b)| (*i, b)));
        let items = parse_put(&seg, &[role], blocks.len()).unwrap();
        prop_assert_eq!(items.len(), blocks.len());
        for (item, (index, b)) in items.iter().zip(&blocks) {
            prop_assert_eq!(item.object, object);
            prop_assert_eq!(item.index, *index);
            prop_assert_eq!(item.role, role);
            prop_assert_eq!(&item.block, b);
        }
        // One block too many for the limit: refused.
        if !blocks.is_empty() {
            prop_assert!(parse_put(&seg, &[role], blocks.len() - 1).is_err());
        }
        // Cut anywhere short: refused, never misread.
        if !seg.is_empty() {
            prop_assert!(parse_put(&seg.slice(..seg.len() - 1), &[role], blocks.len()).is_err());
        }
    }

    #[test]
    fn get_batches_round_trip(picks in proptest::collection::vec((0u8..4, block()), 0..20)) {
        let mut b = GetBatchBuilder::default();
        for (kind, blk) in &picks {
            match kind {
                0 => b.found(blk.generation, &blk.sha256, &blk.data),
                1 => b.missing(),
                2 => b.corrupt(),
                _ => b.gone(),
            }
        }
        let payload: Vec<u8> = b.finish().concat();
        let back = parse_get(picks.len(), Bytes::from(payload)).unwrap();
        for (got, (kind, blk)) in back.iter().zip(&picks) {
            let want = match kind {
                0 => GetResult::Found(blk.clone()),
                1 => GetResult::Missing,
                2 => GetResult::Corrupt,
                _ => GetResult::Gone,
            };
            prop_assert_eq!(got, &want);
        }
    }
}
