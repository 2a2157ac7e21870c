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
//!   `generation u64 | sha256 [32] | len u16 | data`

use bytes::{Buf, BufMut, Bytes};
use serde::de::{Error as _, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::block::{BLOCK_SIZE, Block, BlockKey, BlockWrite, GetResult};

/// A batch of block writes, packed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutBatch(pub Vec<BlockWrite>);

/// A batch of get results, packed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GetBatch(pub Vec<GetResult>);

fn put_block(out: &mut Vec<u8>, b: &Block) {
    out.put_u64_le(b.generation);
    out.put_slice(&b.sha256);
    out.put_u16_le(b.data.len() as u16);
    out.put_slice(&b.data);
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
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() * (58 + BLOCK_SIZE));
        for w in &self.0 {
            out.put_u64_le(w.key.object);
            out.put_u64_le(w.key.index);
            put_block(&mut out, &w.block);
        }
        out
    }

    pub fn decode(mut buf: Bytes) -> Result<Self, String> {
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
        Ok(PutBatch(v))
    }
}

impl GetBatch {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.0.len() * (43 + BLOCK_SIZE));
        for r in &self.0 {
            match r {
                GetResult::Found(b) => {
                    out.put_u8(0);
                    put_block(&mut out, b);
                }
                GetResult::Missing => out.put_u8(1),
                GetResult::Corrupt => out.put_u8(2),
            }
        }
        out
    }

    pub fn decode(mut buf: Bytes) -> Result<Self, String> {
        let mut v = Vec::new();
        while buf.has_remaining() {
            v.push(match buf.get_u8() {
                0 => GetResult::Found(take_block(&mut buf)?),
                1 => GetResult::Missing,
                2 => GetResult::Corrupt,
                t => return Err(format!("bad result tag {t}")),
            });
        }
        Ok(GetBatch(v))
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
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_bytes(&self.encode())
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let bytes = d.deserialize_byte_buf(BytesVisitor)?;
                <$t>::decode(bytes).map_err(D::Error::custom)
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
        let puts = PutBatch(vec![w(0, b""), w(1, b"abc"), w(u64::MAX, &[9u8; 512])]);
        let enc = tessera_rpc::codec::encode(&puts);
        assert_eq!(tessera_rpc::codec::decode::<PutBatch>(&enc).unwrap(), puts);
        let gets = GetBatch(vec![
            GetResult::Missing,
            GetResult::Found(Block::new(3, Bytes::from_static(b"xyz"))),
            GetResult::Corrupt,
        ]);
        let enc = tessera_rpc::codec::encode(&gets);
        assert_eq!(tessera_rpc::codec::decode::<GetBatch>(&enc).unwrap(), gets);
        // Truncations and bad tags fail cleanly.
        let raw = puts.encode();
        for cut in [1, 17, 50, raw.len() - 1] {
            assert!(
                PutBatch::decode(Bytes::copy_from_slice(&raw[..cut])).is_err(),
                "cut at {cut}"
            );
        }
        assert!(GetBatch::decode(Bytes::from_static(&[7])).is_err());
        let mut long = vec![0u8; 16 + 40];
        long.extend_from_slice(&600u16.to_le_bytes());
        long.extend_from_slice(&[0u8; 600]);
        assert!(
            PutBatch::decode(Bytes::from(long)).is_err(),
            "a block over 512 bytes"
        );
    }
}
