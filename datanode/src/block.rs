//! Blocks, their keys and checksums.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Bytes in one block.
pub const BLOCK_SIZE: usize = 512;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct BlockKey {
    pub object: u64,
    pub index: u64,
}

/// One stored copy of a block. `data` is at most [`BLOCK_SIZE`] bytes; the
/// file size says where the file ends.
#[derive(Debug, Clone, PartialEq, Eq)]
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

    /// Blocks over each of `data`, hashed together ([`crate::sha::digest_all`]).
    pub fn new_all(generation: u64, data: Vec<Bytes>) -> Vec<Block> {
        let digests = crate::sha::digest_all(data.iter().map(|d| &d[..]));
        data.into_iter()
            .zip(digests)
            .map(|(data, sha256)| Block {
                generation,
                sha256,
                data,
            })
            .collect()
    }

    pub fn is_valid(&self) -> bool {
        self.data.len() <= BLOCK_SIZE && sha256(&self.data) == self.sha256
    }
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    crate::sha::single(data)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockWrite {
    pub key: BlockKey,
    /// The replica number the receiving node holds the block as.
    pub role: u8,
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

/// The outcome of reading one block. A datanode does not hash blocks on
/// reads: `Found` bytes are verified against their SHA-256 by the reader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetResult {
    Found(Block),
    Missing,
    /// The stored record is damaged (its entry failed its check); no bytes.
    Corrupt,
    /// The whole object was deleted (garbage-collected).
    Gone,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity() {
        let b = Block::new(9, Bytes::from_static(b"hello"));
        assert!(b.is_valid());
        let mut bad = b.clone();
        bad.data = Bytes::from_static(b"hellO");
        assert!(!bad.is_valid());
        assert!(Block::new(1, Bytes::new()).is_valid());
        let mut big = Block::new(1, Bytes::from(vec![0u8; 513]));
        assert!(!big.is_valid(), "longer than a block");
        big.data = Bytes::from(vec![0u8; 512]);
        big.sha256 = sha256(&big.data);
        assert!(big.is_valid());
    }
}
