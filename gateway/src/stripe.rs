//! Striping: which blocks a byte range touches, and how a write splits into
//! whole and partial blocks.

use std::ops::Range;

pub use tessera_datanode::BLOCK_SIZE;

const BS: u64 = BLOCK_SIZE as u64;

/// The largest file Tessera holds (256 TiB); offsets past it are refused
/// before any arithmetic can overflow.
pub const MAX_FILE_SIZE: u64 = 1 << 48;

/// Blocks needed to hold `size` bytes.
pub fn block_count(size: u64) -> u64 {
    size.div_ceil(BS)
}

/// The block indices covering bytes `[offset, offset + len)`, clipped to `size`.
pub fn blocks_for_read(offset: u64, len: u64, size: u64) -> Range<u64> {
    let end = offset.saturating_add(len).min(size);
    if offset >= end {
        return 0..0;
    }
    offset / BS..end.div_ceil(BS)
}

/// One block's part of a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockSpan {
    pub index: u64,
    /// Where the written bytes start inside the block.
    pub start: usize,
    /// Range of the caller's buffer that lands in this block.
    pub data: Range<usize>,
}

impl BlockSpan {
    /// True if the write leaves bytes of the block that already exist
    /// (below `start`, or between its end and the old end of the file):
    /// the old block must be read first.
    pub fn needs_read(&self, old_size: u64) -> bool {
        let block_start = self.index * BS;
        let end_in_block = self.start + self.data.len();
        let old_in_block = old_size.saturating_sub(block_start).min(BS) as usize;
        self.start > 0 && old_in_block > 0 || end_in_block < old_in_block
    }
}

/// Splits a write of `len` bytes at `offset` into per-block spans.
pub fn spans(offset: u64, len: usize) -> Vec<BlockSpan> {
    let mut out = Vec::new();
    let mut done = 0usize;
    while done < len {
        let pos = offset + done as u64;
        let index = pos / BS;
        let start = (pos % BS) as usize;
        let n = (BLOCK_SIZE - start).min(len - done);
        out.push(BlockSpan {
            index,
            start,
            data: done..done + n,
        });
        done += n;
    }
    out
}

/// The content of block `index` after writing `bytes` at `start`, given its
/// old content (shorter than 512 if it was the last block). The result is as
/// long as the furthest byte written or kept.
pub fn merge(old: &[u8], start: usize, bytes: &[u8]) -> Vec<u8> {
    let len = old.len().max(start + bytes.len());
    let mut v = vec![0u8; len];
    v[..old.len()].copy_from_slice(old);
    v[start..start + bytes.len()].copy_from_slice(bytes);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        assert_eq!(block_count(0), 0);
        assert_eq!(block_count(1), 1);
        assert_eq!(block_count(511), 1);
        assert_eq!(block_count(512), 1);
        assert_eq!(block_count(513), 2);
        assert_eq!(block_count(64 << 20), 131072);
    }

    #[test]
    fn read_ranges() {
        assert_eq!(blocks_for_read(0, 100, 0), 0..0, "empty file");
        assert_eq!(blocks_for_read(0, 1, 1), 0..1);
        assert_eq!(blocks_for_read(0, 10_000, 513), 0..2);
        assert_eq!(blocks_for_read(511, 2, 1024), 0..2, "straddles a boundary");
        assert_eq!(blocks_for_read(512, 512, 1024), 1..2, "exactly one block");
        assert_eq!(blocks_for_read(2000, 10, 1000), 0..0, "past the end");
        assert_eq!(
            blocks_for_read(u64::MAX - 1, 10, u64::MAX),
            (u64::MAX - 1) / 512..u64::MAX.div_ceil(512)
        );
    }

    #[test]
    fn write_spans() {
        assert!(spans(0, 0).is_empty());
        assert_eq!(
            spans(0, 512),
            vec![BlockSpan {
                index: 0,
                start: 0,
                data: 0..512
            }]
        );
        assert_eq!(
            spans(500, 600),
            vec![
                BlockSpan {
                    index: 0,
                    start: 500,
                    data: 0..12
                },
                BlockSpan {
                    index: 1,
                    start: 0,
                    data: 12..524
                },
                BlockSpan {
                    index: 2,
                    start: 0,
                    data: 524..600
                },
            ]
        );
        assert_eq!(
            spans(1024, 1),
            vec![BlockSpan {
                index: 2,
                start: 0,
                data: 0..1
            }]
        );
    }

    #[test]
    fn partial_blocks_need_a_read_only_when_old_bytes_survive() {
        let s = &spans(500, 600);
        // File of 2000 bytes: first and last spans keep old bytes, middle doesn't.
        assert!(s[0].needs_read(2000));
        assert!(!s[1].needs_read(2000));
        assert!(s[2].needs_read(2000));
        // Appending to an empty file never reads.
        assert!(s.iter().all(|x| !x.needs_read(0)));
        // The last block of a 1030-byte file, overwritten from its start past the old end.
        let t = spans(1024, 100);
        assert!(!t[0].needs_read(1030));
        assert!(spans(1024, 3)[0].needs_read(1030));
    }

    #[test]
    fn merging() {
        assert_eq!(merge(b"abcdef", 2, b"XY"), b"abXYef");
        assert_eq!(merge(b"ab", 4, b"X"), b"ab\0\0X", "hole filled with zeros");
        assert_eq!(merge(b"", 0, b"xyz"), b"xyz");
        assert_eq!(merge(b"abc", 1, b"XYZW"), b"aXYZW");
    }
}
