//! Blocks, their keys and checksums.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Bytes in one block.
pub const BLOCK_SIZE: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BlockKey {
    pub object: u64,
    pub index: u64,
}

/// One stored copy of a block. `data` is at most [`BLOCK_SIZE`] bytes; the
/// file size says where the file ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    pub generation: u64,
    pub sha256: [u8; 32],
    pub data: Bytes,
}

impl Block {
    /// A block over `data`, hashing it.
    pub fn new(generation: u64, data: Bytes) -> Block {
        Block {
            generation,
            sha256: sha256(&data),
            data,
        }
    }

    pub fn is_valid(&self) -> bool {
        self.data.len() <= BLOCK_SIZE && sha256(&self.data) == self.sha256
    }

    /// The on-disk record: generation (8, LE), sha256 (32), bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(40 + self.data.len());
        v.extend_from_slice(&self.generation.to_le_bytes());
        v.extend_from_slice(&self.sha256);
        v.extend_from_slice(&self.data);
        v
    }

    /// Parses and verifies a record; `None` if it is damaged.
    pub fn decode_verified(record: &[u8]) -> Option<Block> {
        if record.len() < 40 || record.len() > 40 + BLOCK_SIZE {
            return None;
        }
        let block = Block {
            generation: u64::from_le_bytes(record[..8].try_into().ok()?),
            sha256: record[8..40].try_into().ok()?,
            data: Bytes::copy_from_slice(&record[40..]),
        };
        block.is_valid().then_some(block)
    }

    /// Whether an on-disk record is well formed and matches its checksum.
    pub fn verify_record(record: &[u8]) -> bool {
        record.len() >= 40
            && record.len() <= 40 + BLOCK_SIZE
            && sha256(&record[40..]) == record[8..40]
    }

    /// The generation of a record without verifying it.
    pub fn record_generation(record: &[u8]) -> Option<u64> {
        Some(u64::from_le_bytes(record.get(..8)?.try_into().ok()?))
    }
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockWrite {
    pub key: BlockKey,
    pub block: Block,
}

/// The outcome of writing one block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PutResult {
    /// Durably stored.
    Stored,
    /// A record of a higher generation is kept instead (durably).
    Newer(u64),
    /// The bytes did not match their checksum: nothing stored.
    Damaged,
    /// The object was deleted (garbage-collected): nothing stored.
    Gone,
}

/// The outcome of reading one block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GetResult {
    Found(Block),
    Missing,
    /// The stored record failed verification; its bytes are withheld.
    Corrupt,
    /// The whole object was deleted (garbage-collected).
    Gone,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_detect_damage() {
        let b = Block::new(9, Bytes::from_static(b"hello"));
        let mut rec = b.encode();
        assert_eq!(Block::decode_verified(&rec), Some(b.clone()));
        assert_eq!(Block::record_generation(&rec), Some(9));
        let last = rec.len() - 1;
        rec[last] ^= 1;
        assert_eq!(Block::decode_verified(&rec), None);
        assert_eq!(Block::decode_verified(&rec[..10]), None);
        let empty = Block::new(1, Bytes::new());
        assert_eq!(Block::decode_verified(&empty.encode()), Some(empty));
        let mut big = Block::new(1, Bytes::from(vec![0u8; 513]));
        assert!(!big.is_valid());
        big.data = Bytes::from(vec![0u8; 512]);
        big.sha256 = sha256(&big.data);
        assert!(big.is_valid());
    }
}
