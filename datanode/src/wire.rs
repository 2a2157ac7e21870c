//! Block payloads on the wire: raw bytes after the postcard request or
//! response header, never passed through a serializer.
//!
//! - A **put segment** carries blocks of one object:
//!   `object u64 | count u32 | count × (index u64 | generation u64 | sha256 [32] | len u16) | data`.
//!   A put's payload is one or more segments back to back; the request header
//!   names the replica role of each. The gateway builds a segment once per
//!   replica set and sends the same bytes to every replica holding it.
//! - A **get batch** answers the indices asked for, in order:
//!   `count × (tag u8 | len u16 | generation u64 | sha256 [32]) | data`, tag 0
//!   found, 1 missing, 2 corrupt, 3 gone (the object was deleted). It travels
//!   as two segments (table, data) that are never joined on the sender.
//!
//! Decoding hands out blocks whose bytes are slices of the received buffer:
//! no per-block allocation or copy.

use bytes::{Buf, BufMut, Bytes};
use tessera_rpc::Payload;

use crate::block::{BLOCK_SIZE, Block, GetResult};

const PUT_HEAD: usize = 12;
const PUT_ENTRY: usize = 50;
const GET_ENTRY: usize = 43;

/// One block of a put, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutItem {
    pub object: u64,
    /// The replica number the receiving node holds the block as.
    pub role: u8,
    pub index: u64,
    pub block: Block,
}

/// Encodes blocks `(index, block)` of `object` as one put segment.
pub fn put_segment<'a, I>(object: u64, blocks: I) -> Bytes
where
    I: IntoIterator<Item = (u64, &'a Block)>,
    I::IntoIter: Clone,
{
    let blocks = blocks.into_iter();
    let (count, data) = blocks
        .clone()
        .fold((0usize, 0usize), |(n, d), (_, b)| (n + 1, d + b.data.len()));
    let mut out = Vec::with_capacity(PUT_HEAD + count * PUT_ENTRY + data);
    out.put_u64_le(object);
    out.put_u32_le(count as u32);
    for (index, b) in blocks.clone() {
        out.put_u64_le(index);
        out.put_u64_le(b.generation);
        out.put_slice(&b.sha256);
        out.put_u16_le(b.data.len() as u16);
    }
    for (_, b) in blocks {
        out.put_slice(&b.data);
    }
    Bytes::from(out)
}

/// Decodes a put payload: every segment in it, in order, segment `n` held
/// in role `roles[n]`; more than `max` blocks in all are refused before
/// they are decoded.
pub fn parse_put(payload: &Bytes, roles: &[u8], max: usize) -> Result<Vec<PutItem>, String> {
    let mut out = Vec::new();
    let mut rest = payload.clone();
    let mut roles = roles.iter();
    while rest.has_remaining() {
        let role = *roles.next().ok_or("more put segments than roles")?;
        if rest.remaining() < PUT_HEAD {
            return Err("truncated put segment header".into());
        }
        let object = rest.get_u64_le();
        let count = rest.get_u32_le() as usize;
        if out.len().saturating_add(count) > max {
            return Err(format!("more than {max} blocks in one put"));
        }
        let table_len = count
            .checked_mul(PUT_ENTRY)
            .filter(|&n| n <= rest.remaining())
            .ok_or("put segment table runs past the payload")?;
        let mut table = rest.split_to(table_len);
        out.reserve(count);
        for _ in 0..count {
            let index = table.get_u64_le();
            let generation = table.get_u64_le();
            let mut sha256 = [0u8; 32];
            table.copy_to_slice(&mut sha256);
            let len = table.get_u16_le() as usize;
            if len > BLOCK_SIZE || len > rest.remaining() {
                return Err(format!("bad block length {len} for block {index}"));
            }
            out.push(PutItem {
                object,
                role,
                index,
                block: Block {
                    generation,
                    sha256,
                    data: rest.split_to(len),
                },
            });
        }
    }
    if roles.next().is_some() {
        return Err("more roles than put segments".into());
    }
    Ok(out)
}

/// Builds a get batch one result at a time, as one buffer: the table (its
/// room for every result asked for is known at the start, each entry being
/// of fixed size) at the front, the data after it. Sent as one segment, it
/// is never joined on the way, not even by a call within the process.
#[derive(Debug, Default)]
pub struct GetBatchBuilder {
    buf: Vec<u8>,
    room: usize,
    count: usize,
    /// Entries past the room given at the start (a builder told too few).
    overflow: Vec<u8>,
}

impl GetBatchBuilder {
    pub fn with_capacity(results: usize) -> Self {
        // Room for the data of up to 4 MiB of found blocks (a sequential
        // read's batch, without growing and copying); beyond that it grows
        // as blocks are found, so a request naming many blocks of an object
        // this node lacks costs it no larger buffer.
        let table = results * GET_ENTRY;
        let mut buf = Vec::with_capacity(table + (results * BLOCK_SIZE).min(4 << 20));
        buf.resize(table, 0);
        GetBatchBuilder {
            buf,
            room: results,
            count: 0,
            overflow: Vec::new(),
        }
    }

    fn entry(&mut self, tag: u8, len: usize, generation: u64, sha256: &[u8; 32]) {
        let mut e = [0u8; GET_ENTRY];
        let mut w = &mut e[..];
        w.put_u8(tag);
        w.put_u16_le(len as u16);
        w.put_u64_le(generation);
        w.put_slice(sha256);
        if self.count < self.room {
            let at = self.count * GET_ENTRY;
            self.buf[at..at + GET_ENTRY].copy_from_slice(&e);
        } else {
            self.overflow.extend_from_slice(&e);
        }
        self.count += 1;
    }

    pub fn found(&mut self, generation: u64, sha256: &[u8; 32], data: &[u8]) {
        self.entry(0, data.len(), generation, sha256);
        self.buf.extend_from_slice(data);
    }
    pub fn missing(&mut self) {
        self.entry(1, 0, 0, &[0; 32]);
    }
    pub fn corrupt(&mut self) {
        self.entry(2, 0, 0, &[0; 32]);
    }
    pub fn gone(&mut self) {
        self.entry(3, 0, 0, &[0; 32]);
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The batch: one segment when it holds as many results as it had room
    /// for, else the table and the data as two (nothing is copied but the
    /// table).
    pub fn finish(self) -> Payload {
        if self.count == self.room {
            return vec![Bytes::from(self.buf)];
        }
        let mut all = Bytes::from(self.buf);
        let data = all.split_off(self.room * GET_ENTRY);
        let used = self.count.min(self.room) * GET_ENTRY;
        let mut table = all[..used].to_vec();
        table.extend_from_slice(&self.overflow);
        vec![Bytes::from(table), data]
    }
}

/// Encodes `results` as a get batch (tests, and answers built by hand).
pub fn get_batch(results: &[GetResult]) -> Payload {
    let mut b = GetBatchBuilder::with_capacity(results.len());
    for r in results {
        match r {
            GetResult::Found(blk) => b.found(blk.generation, &blk.sha256, &blk.data),
            GetResult::Missing => b.missing(),
            GetResult::Corrupt => b.corrupt(),
            GetResult::Gone => b.gone(),
        }
    }
    b.finish()
}

/// One entry of a get batch's table (tag, length, generation, SHA-256);
/// the caller checked that the table holds it.
fn get_entry(table: &mut impl Buf) -> (u8, usize, u64, [u8; 32]) {
    let tag = table.get_u8();
    let len = table.get_u16_le() as usize;
    let generation = table.get_u64_le();
    let mut sha256 = [0u8; 32];
    table.copy_to_slice(&mut sha256);
    (tag, len, generation, sha256)
}

/// Where one found block lies in a get batch: its checksum and the range of
/// its bytes in the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundAt {
    pub sha256: [u8; 32],
    pub data: std::ops::Range<usize>,
}

/// The blocks of a get batch of exactly `count` results when every one of
/// them was found (the common answer to a read), without a `Bytes` per
/// block; `None` when any result is not a found block or the batch is
/// malformed ([`parse_get`] then says which).
pub fn found_all(count: usize, payload: &[u8]) -> Option<Vec<FoundAt>> {
    let table_len = count.checked_mul(GET_ENTRY)?;
    let (mut table, data) = (payload.get(..table_len)?, payload.len() - table_len);
    let mut at = table_len;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let (tag, len, _generation, sha256) = get_entry(&mut table);
        if tag != 0 || len > BLOCK_SIZE || at + len > table_len + data {
            return None;
        }
        out.push(FoundAt {
            sha256,
            data: at..at + len,
        });
        at += len;
    }
    (at == payload.len()).then_some(out)
}

/// Decodes a get batch of exactly `count` results.
pub fn parse_get(count: usize, payload: Bytes) -> Result<Vec<GetResult>, String> {
    let table_len = count
        .checked_mul(GET_ENTRY)
        .filter(|&n| n <= payload.len())
        .ok_or("get batch shorter than its table")?;
    let mut table = payload.slice(..table_len);
    let mut data = payload.slice(table_len..);
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let (tag, len, generation, sha256) = get_entry(&mut table);
        out.push(match tag {
            0 if len <= BLOCK_SIZE && len <= data.len() => GetResult::Found(Block {
                generation,
                sha256,
                data: data.split_to(len),
            }),
            0 => return Err(format!("bad block length {len}")),
            1 => GetResult::Missing,
            2 => GetResult::Corrupt,
            3 => GetResult::Gone,
            t => return Err(format!("bad result tag {t}")),
        });
    }
    if !data.is_empty() {
        return Err(format!("{} bytes after the last block", data.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_all_only_when_every_block_was_found() {
        let blocks = [
            Block::new(4, Bytes::from(vec![1u8; 512])),
            Block::new(5, Bytes::from_static(b"short")),
            Block::new(6, Bytes::new()),
        ];
        let found: Vec<GetResult> = blocks.iter().cloned().map(GetResult::Found).collect();
        let payload = join(get_batch(&found));
        let at = found_all(3, &payload).expect("all found");
        for (a, b) in at.iter().zip(&blocks) {
            assert_eq!(a.sha256, b.sha256);
            assert_eq!(&payload[a.data.clone()], &b.data[..]);
        }
        for other in [GetResult::Missing, GetResult::Corrupt, GetResult::Gone] {
            let mut v = found.clone();
            v[1] = other;
            assert_eq!(found_all(3, &join(get_batch(&v))), None);
        }
        // Short, long, or counted wrong: refused.
        assert_eq!(found_all(3, &payload[..payload.len() - 1]), None);
        let mut longer = payload.to_vec();
        longer.push(0);
        assert_eq!(found_all(3, &longer), None);
        assert_eq!(found_all(4, &payload), None);
        assert_eq!(found_all(usize::MAX, &payload), None);
    }

    fn join(p: Payload) -> Bytes {
        Bytes::from(p.concat())
    }

    #[test]
    fn put_segments_round_trip_and_reject_garbage() {
        let blocks = [
            Block::new(1, Bytes::new()),
            Block::new(2, Bytes::from_static(b"abc")),
            Block::new(3, Bytes::from(vec![9u8; 512])),
        ];
        let a = put_segment(7, [(0, &blocks[0]), (5, &blocks[1])]);
        let b = put_segment(8, [(u64::MAX, &blocks[2])]);
        let payload = join(vec![a.clone(), b]);
        let items = parse_put(&payload, &[1, 0], 100).unwrap();
        let want = [
            (7, 1, 0, &blocks[0]),
            (7, 1, 5, &blocks[1]),
            (8, 0, u64::MAX, &blocks[2]),
        ];
        assert_eq!(items.len(), 3);
        for (item, (o, r, i, b)) in items.iter().zip(want) {
            assert_eq!(
                (item.object, item.role, item.index, &item.block),
                (o, r, i, b)
            );
        }
        assert!(parse_put(&Bytes::new(), &[], 100).unwrap().is_empty());
        assert!(parse_put(&payload, &[1, 0], 2).is_err(), "over the limit");
        assert!(
            parse_put(&payload, &[1], 100).is_err(),
            "a segment without a role"
        );
        assert!(
            parse_put(&payload, &[1, 0, 0], 100).is_err(),
            "a role without a segment"
        );
        for cut in [1, 11, 13, PUT_HEAD + PUT_ENTRY, a.len() - 1] {
            assert!(
                parse_put(&a.slice(..cut), &[0], 100).is_err(),
                "cut at {cut}"
            );
        }
        // A block longer than 512 bytes, and a count that overflows.
        let mut long = a.to_vec();
        long[PUT_HEAD + 48..PUT_HEAD + 50].copy_from_slice(&600u16.to_le_bytes());
        long.extend_from_slice(&[0; 600]);
        assert!(parse_put(&Bytes::from(long), &[0], 100).is_err());
        let mut huge = a.to_vec();
        huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_put(&Bytes::from(huge), &[0], 100).is_err());
    }

    #[test]
    fn get_batches_round_trip_and_reject_garbage() {
        let results = vec![
            GetResult::Missing,
            GetResult::Found(Block::new(3, Bytes::from_static(b"xyz"))),
            GetResult::Corrupt,
            GetResult::Found(Block::new(4, Bytes::from(vec![1u8; 512]))),
            GetResult::Gone,
        ];
        let payload = join(get_batch(&results));
        assert_eq!(parse_get(5, payload.clone()).unwrap(), results);
        // The blocks' bytes are slices of the received buffer.
        let back = parse_get(5, payload.clone()).unwrap();
        let GetResult::Found(b) = &back[1] else {
            panic!()
        };
        let base = payload.as_ptr() as usize;
        assert!((base..base + payload.len()).contains(&(b.data.as_ptr() as usize)));
        assert!(parse_get(6, payload.clone()).is_err(), "count too high");
        assert!(parse_get(4, payload.clone()).is_err(), "bytes left over");
        assert!(parse_get(5, payload.slice(..payload.len() - 1)).is_err());
        let mut bad = payload.to_vec();
        bad[0] = 9;
        assert!(parse_get(5, Bytes::from(bad)).is_err());
        assert!(parse_get(usize::MAX, payload).is_err());
    }

    /// A batch with as many results as it had room for is one segment (no
    /// join on the way); told too few or too many, it still decodes.
    #[test]
    fn get_batches_are_one_segment_when_full() {
        let block = Block::new(2, Bytes::from_static(b"abcd"));
        let fill = |room: usize, n: usize| {
            let mut b = GetBatchBuilder::with_capacity(room);
            for i in 0..n {
                if i % 2 == 0 {
                    b.found(block.generation, &block.sha256, &block.data);
                } else {
                    b.missing();
                }
            }
            b.finish()
        };
        let want = |n: usize| -> Vec<GetResult> {
            (0..n)
                .map(|i| match i % 2 {
                    0 => GetResult::Found(block.clone()),
                    _ => GetResult::Missing,
                })
                .collect()
        };
        assert_eq!(fill(3, 3).len(), 1);
        for (room, n) in [(3, 3), (5, 3), (1, 4), (0, 2), (0, 0)] {
            let p = fill(room, n);
            assert_eq!(
                parse_get(n, join(p)).unwrap(),
                want(n),
                "room {room}, {n} results"
            );
        }
    }
}
