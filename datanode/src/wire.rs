//! Packed encodings of block batches for the wire.
//!
//! Serde's element-by-element encoding of thousands of blocks (each with a
//! 32-byte array) costs more than the network; these batches travel as one
//! byte string instead, and decode into blocks that slice one buffer
//! (no per-block copy).
//!
//! Layouts (little endian):
//! - write: `object u64 | index u64 | generation u64 | sha256 [32] | len u16 | data`
//! - get result: `tag u8` (0 found, 1 missing, 2 corrupt), then for found:
//!   `generation u64 | sha256 [32] | len u16 | data`; 3 is gone (object deleted)

use bytes::{Buf, BufMut, Bytes};
use serde::de::Visitor;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::block::{BLOCK_SIZE, Block, BlockKey, BlockWrite, GetResult};

/// A batch of block writes, held packed: encoding is a single copy and
/// decoding slices the received buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutBatch(Bytes);

/// A batch of get results, held packed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetBatch(Bytes);

pub(crate) fn put_block(out: &mut Vec<u8>, generation: u64, sha256: &[u8], data: &[u8]) {
    out.put_u64_le(generation);
    out.put_slice(sha256);
    out.put_u16_le(data.len() as u16);
    out.put_slice(data);
}

fn take_block(buf: &mut Bytes) -> Result<Block, String> {
    if buf.remaining() < 42 {
        return Err("truncated block header".into());
    }
    let generation = buf.get_u64_le();
    let mut sha256 = [0u8; 32];
    buf.copy_to_slice(&mut sha256);
    let len = buf.get_u16_le() as usize;
    if len > BLOCK_SIZE || buf.remaining() < len {
        return Err(format!("bad block length {len}"));
    }
    Ok(Block {
        generation,
        sha256,
        data: buf.split_to(len),
    })
}

impl PutBatch {
    pub fn new(writes: &[BlockWrite]) -> Self {
        let mut out = Vec::with_capacity(writes.len() * (58 + BLOCK_SIZE));
        for w in writes {
            out.put_u64_le(w.key.object);
            out.put_u64_le(w.key.index);
            put_block(&mut out, w.block.generation, &w.block.sha256, &w.block.data);
        }
        PutBatch(Bytes::from(out))
    }

    /// The writes, each block's bytes a slice of the batch's buffer.
    pub fn writes(&self) -> Result<Vec<BlockWrite>, String> {
        let mut buf = self.0.clone();
        let mut v = Vec::with_capacity(buf.len() / (58 + BLOCK_SIZE) + 1);
        while buf.has_remaining() {
            if buf.remaining() < 16 {
                return Err("truncated block key".into());
            }
            let key = BlockKey {
                object: buf.get_u64_le(),
                index: buf.get_u64_le(),
            };
            v.push(BlockWrite {
                key,
                block: take_block(&mut buf)?,
            });
        }
        Ok(v)
    }
}

/// Builds a [`GetBatch`] one result at a time.
#[derive(Debug, Default)]
pub struct GetBatchBuilder(Vec<u8>);

impl GetBatchBuilder {
    pub fn with_capacity(results: usize) -> Self {
        GetBatchBuilder(Vec::with_capacity(results * (43 + BLOCK_SIZE)))
    }
    pub fn found(&mut self, generation: u64, sha256: &[u8], data: &[u8]) {
        self.0.put_u8(0);
        put_block(&mut self.0, generation, sha256, data);
    }
    pub fn missing(&mut self) {
        self.0.put_u8(1);
    }
    pub fn corrupt(&mut self) {
        self.0.put_u8(2);
    }
    pub fn gone(&mut self) {
        self.0.put_u8(3);
    }
    pub fn finish(self) -> GetBatch {
        GetBatch(Bytes::from(self.0))
    }
}

impl GetBatch {
    pub fn new(results: &[GetResult]) -> Self {
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

    /// The results, each block's bytes a slice of the batch's buffer.
    pub fn results(&self) -> Result<Vec<GetResult>, String> {
        let mut buf = self.0.clone();
        let mut v = Vec::new();
        while buf.has_remaining() {
            v.push(match buf.get_u8() {
                0 => GetResult::Found(take_block(&mut buf)?),
                1 => GetResult::Missing,
                2 => GetResult::Corrupt,
                3 => GetResult::Gone,
                t => return Err(format!("bad result tag {t}")),
            });
        }
        Ok(v)
    }
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Bytes;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a packed block batch")
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(v))
    }
    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(v))
    }
}

macro_rules! packed_serde {
    ($t:ident) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Ok($t(d.deserialize_byte_buf(BytesVisitor)?))
            }
        }
    };
}

packed_serde!(PutBatch);
packed_serde!(GetBatch);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_round_trip_and_reject_garbage() {
        let w = |i: u64, d: &'static [u8]| BlockWrite {
            key: BlockKey {
                object: 7,
                index: i,
            },
            block: Block::new(i.wrapping_add(1), Bytes::from_static(d)),
        };
        let writes = vec![w(0, b""), w(1, b"abc"), w(u64::MAX, &[9u8; 512])];
        let enc = tessera_rpc::codec::encode(&PutBatch::new(&writes));
        let back: PutBatch = tessera_rpc::codec::decode(&enc).unwrap();
        assert_eq!(back.writes().unwrap(), writes);
        let results = vec![
            GetResult::Missing,
            GetResult::Found(Block::new(3, Bytes::from_static(b"xyz"))),
            GetResult::Corrupt,
        ];
        let enc = tessera_rpc::codec::encode(&GetBatch::new(&results));
        let back: GetBatch = tessera_rpc::codec::decode(&enc).unwrap();
        assert_eq!(back.results().unwrap(), results);
        // Truncations and bad tags fail cleanly.
        let raw = PutBatch::new(&writes).0;
        for cut in [1, 17, 50, raw.len() - 1] {
            assert!(PutBatch(raw.slice(..cut)).writes().is_err(), "cut at {cut}");
        }
        assert!(GetBatch(Bytes::from_static(&[7])).results().is_err());
        assert_eq!(
            GetBatch::new(&[GetResult::Gone]).results().unwrap(),
            vec![GetResult::Gone]
        );
        let mut long = vec![0u8; 16 + 40];
        long.extend_from_slice(&600u16.to_le_bytes());
        long.extend_from_slice(&[0u8; 600]);
        assert!(
            PutBatch(Bytes::from(long)).writes().is_err(),
            "a block over 512 bytes"
        );
    }
}
