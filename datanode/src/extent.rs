//! Extent rows: a node's blocks of one object, in one replica role, within
//! one block group, kept in one redb value (pure code, no I/O).
//!
//! The block stays the unit of placement, checksum, generation and repair;
//! the row only packs a node's blocks `[group * GROUP_BLOCKS, (group + 1) *
//! GROUP_BLOCKS)` of an object together, so redb sees one large value where
//! it used to see many tiny ones. Rows are keyed `(object, role, group)`,
//! `role` being the replica number `k` the node holds the blocks as: a read
//! at Q=1 asks every block of its first replica (`k = 0`), and finds those
//! blocks packed together instead of interleaved with the node's `k = 1`
//! copies of other blocks, which it would read and throw away.
//!
//! Layout, little endian:
//!
//! ```text
//! head   magic u8 = 0xE7 | version u8 = 1 | count u16 | !count u16 | 0 u16
//! entry  slot u16 | len u16 | offset u32 | generation u64 | sha256 [32] | check u64   (× count, by slot)
//! data   the blocks' bytes, verbatim; entry `offset` is relative to the start of data
//! ```
//!
//! `check` is a fast hash of the entry's first 48 bytes and the row's key,
//! so a damaged entry (or a row under the wrong key) is caught without
//! hashing any block: a damaged entry makes exactly its block corrupt. Block
//! bytes are verified against their SHA-256 by the reader (the gateway) and
//! by scrub ([`Row::damaged_data`]), not here.

use crate::block::{BLOCK_SIZE, sha256};

/// Blocks of an object covered by one row (168 KiB of the file). redb keeps
/// a large value in one page of a power-of-two size, so the row size is
/// chosen to fill one: with 3 datanodes (the default) a node holds 112 of
/// these blocks in each role, 63.6 KiB with their entries, in a 64 KiB
/// page; 2 datanodes fill 74% of a 128 KiB page, 4 fill 73% of 64 KiB, 6
/// fill 97% of 32 KiB.
pub const GROUP_BLOCKS: u64 = 336;

/// The key of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RowKey {
    pub object: u64,
    /// The replica number the node holds these blocks as.
    pub role: u8,
    pub group: u64,
}

/// A set of slots of one row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Slots([u64; (GROUP_BLOCKS as usize).div_ceil(64)]);

impl Slots {
    fn insert(&mut self, slot: u16) {
        self.0[slot as usize / 64] |= 1 << (slot % 64);
    }
    fn contains(&self, slot: u16) -> bool {
        self.0[slot as usize / 64] & (1 << (slot % 64)) != 0
    }
}

const MAGIC: u8 = 0xE7;
/// The row format this build writes and reads.
pub const ROW_VERSION: u8 = 1;
const HEAD: usize = 8;
const ENTRY: usize = 56;

/// The row holding block `index`, and the block's slot in it.
pub fn locate(index: u64) -> (u64, u16) {
    (index / GROUP_BLOCKS, (index % GROUP_BLOCKS) as u16)
}

/// The block index of `slot` in row `group`.
pub fn index_of(group: u64, slot: u16) -> u64 {
    group * GROUP_BLOCKS + slot as u64
}

/// One block of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub slot: u16,
    pub generation: u64,
    pub sha256: &'a [u8; 32],
    pub data: &'a [u8],
}

/// The length field of an entry that marks its slot's record as damaged:
/// a rewrite of a row keeps what it cannot read as damaged, so it reads as
/// `Corrupt` (to be repaired), never as a hole.
const DAMAGED: u16 = u16::MAX;

/// One entry to encode: a block, or a marker for a slot whose record was
/// found damaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry<'a> {
    Block(Record<'a>),
    Damaged(u16),
}

impl Entry<'_> {
    pub fn slot(&self) -> u16 {
        match self {
            Entry::Block(r) => r.slot,
            Entry::Damaged(s) => *s,
        }
    }

    fn data(&self) -> &[u8] {
        match self {
            Entry::Block(r) => r.data,
            Entry::Damaged(_) => &[],
        }
    }
}

/// Bytes needed to encode `entries`.
pub fn encoded_len(entries: &[Entry<'_>]) -> usize {
    entries.iter().fold(HEAD, |n, e| n + ENTRY + e.data().len())
}

/// Encodes `entries` (sorted by slot, each slot once, blocks of at most
/// [`BLOCK_SIZE`] bytes) as row `key` into `out`, which must be exactly
/// [`encoded_len`] bytes long.
pub fn encode_into(key: RowKey, entries: &[Entry<'_>], out: &mut [u8]) {
    debug_assert_eq!(out.len(), encoded_len(entries));
    debug_assert!(entries.windows(2).all(|w| w[0].slot() < w[1].slot()));
    let count = entries.len() as u16;
    out[0] = MAGIC;
    out[1] = ROW_VERSION;
    out[2..4].copy_from_slice(&count.to_le_bytes());
    out[4..6].copy_from_slice(&(!count).to_le_bytes());
    out[6..8].copy_from_slice(&[0, 0]);
    let data_start = HEAD + entries.len() * ENTRY;
    let mut offset = 0usize;
    for (i, entry) in entries.iter().enumerate() {
        let e = &mut out[HEAD + i * ENTRY..HEAD + (i + 1) * ENTRY];
        let r = match entry {
            Entry::Block(r) => *r,
            Entry::Damaged(slot) => Record {
                slot: *slot,
                generation: 0,
                sha256: &[0; 32],
                data: &[],
            },
        };
        let len = match entry {
            Entry::Block(r) => r.data.len() as u16,
            Entry::Damaged(_) => DAMAGED,
        };
        e[0..2].copy_from_slice(&r.slot.to_le_bytes());
        e[2..4].copy_from_slice(&len.to_le_bytes());
        e[4..8].copy_from_slice(&(offset as u32).to_le_bytes());
        e[8..16].copy_from_slice(&r.generation.to_le_bytes());
        e[16..48].copy_from_slice(r.sha256);
        let check = entry_check(key, &e[..48]);
        e[48..56].copy_from_slice(&check.to_le_bytes());
        let at = data_start + offset;
        out[at..at + r.data.len()].copy_from_slice(r.data);
        offset += r.data.len();
    }
}

/// Encodes `entries` as row `key` into a new buffer.
pub fn encode(key: RowKey, entries: &[Entry<'_>]) -> Vec<u8> {
    let mut out = vec![0u8; encoded_len(entries)];
    encode_into(key, entries, &mut out);
    out
}

/// A fast 64-bit hash of an entry and the row's key; catches damage, not
/// adversaries (the block bytes themselves are covered by SHA-256).
fn entry_check(key: RowKey, entry: &[u8]) -> u64 {
    fn mix(h: u64, v: u64) -> u64 {
        let h = (h ^ v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^ (h >> 31)
    }
    let mut h = mix(mix(0x7E55_E7A0_0000_0001, key.object), key.group);
    h = mix(h, key.role as u64);
    for w in entry.chunks_exact(8) {
        h = mix(h, u64::from_le_bytes(w.try_into().expect("8-byte chunks")));
    }
    mix(h, entry.len() as u64)
}

/// What a row says about one slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    Found(Record<'a>),
    /// The row holds no record for the slot.
    Missing,
    /// The row's record for the slot (or the part of the row that would say
    /// whether there is one) is damaged.
    Corrupt,
}

/// A parsed row: borrowed, no allocation.
pub struct Row<'a> {
    raw: &'a [u8],
    /// Entry number + 1 of each slot's valid record; 0 for none.
    at: [u16; GROUP_BLOCKS as usize],
    /// Slots a damaged entry may have been about.
    suspect: Slots,
    /// The head is damaged: nothing in the row can be trusted.
    unreadable: bool,
    valid: usize,
    damaged: usize,
}

impl<'a> Row<'a> {
    /// Parses row `key`. Never fails: damage is reported per slot.
    pub fn parse(key: RowKey, raw: &'a [u8]) -> Row<'a> {
        let mut row = Row {
            raw,
            at: [0; GROUP_BLOCKS as usize],
            suspect: Slots::default(),
            unreadable: false,
            valid: 0,
            damaged: 0,
        };
        let count = match head_count(raw) {
            Some(c) => c,
            None => {
                row.unreadable = true;
                return row;
            }
        };
        let data_start = HEAD + count * ENTRY;
        let data_len = raw.len() - data_start;
        // Slot of the previous valid entry, and whether damaged entries
        // were seen since it.
        let mut prev: Option<u16> = None;
        let mut damage_since_prev = false;
        for i in 0..count {
            let e = &raw[HEAD + i * ENTRY..HEAD + (i + 1) * ENTRY];
            let slot = u16::from_le_bytes([e[0], e[1]]);
            let len = u16::from_le_bytes([e[2], e[3]]) as usize;
            let offset = u32::from_le_bytes([e[4], e[5], e[6], e[7]]) as usize;
            let check = u64::from_le_bytes(e[48..56].try_into().expect("8 bytes"));
            let checked = check == entry_check(key, &e[..48]);
            if checked
                && len == DAMAGED as usize
                && (slot as u64) < GROUP_BLOCKS
                && prev.is_none_or(|p| p < slot)
            {
                // A record found damaged by an earlier rewrite.
                row.suspect.insert(slot);
                row.damaged += 1;
                if damage_since_prev {
                    row.mark_suspect(prev, slot);
                    damage_since_prev = false;
                }
                prev = Some(slot);
                continue;
            }
            let ok = checked
                && (slot as u64) < GROUP_BLOCKS
                && len <= BLOCK_SIZE
                && offset.checked_add(len).is_some_and(|end| end <= data_len)
                && prev.is_none_or(|p| p < slot);
            if !ok {
                row.damaged += 1;
                damage_since_prev = true;
                continue;
            }
            if damage_since_prev {
                row.mark_suspect(prev, slot);
                damage_since_prev = false;
            }
            row.at[slot as usize] = (i + 1) as u16;
            row.valid += 1;
            prev = Some(slot);
        }
        if damage_since_prev {
            row.mark_suspect(prev, GROUP_BLOCKS as u16);
        }
        row
    }

    /// Marks the slots strictly between two valid entries (a damaged entry
    /// lay between them) as suspect.
    fn mark_suspect(&mut self, after: Option<u16>, before: u16) {
        let from = after.map_or(0, |a| a + 1);
        for s in from..before {
            self.suspect.insert(s);
        }
    }

    pub fn get(&self, slot: u16) -> Lookup<'a> {
        if self.unreadable {
            return Lookup::Corrupt;
        }
        let Some(&n) = self.at.get(slot as usize) else {
            return Lookup::Missing;
        };
        if n != 0 {
            Lookup::Found(self.entry(n as usize - 1))
        } else if self.suspect.contains(slot) {
            Lookup::Corrupt
        } else {
            Lookup::Missing
        }
    }

    fn entry(&self, i: usize) -> Record<'a> {
        let raw = self.raw;
        let count = u16::from_le_bytes([raw[2], raw[3]]) as usize;
        let e = &raw[HEAD + i * ENTRY..HEAD + (i + 1) * ENTRY];
        let len = u16::from_le_bytes([e[2], e[3]]) as usize;
        let offset = u32::from_le_bytes([e[4], e[5], e[6], e[7]]) as usize;
        let at = HEAD + count * ENTRY + offset;
        Record {
            slot: u16::from_le_bytes([e[0], e[1]]),
            generation: u64::from_le_bytes(e[8..16].try_into().expect("8 bytes")),
            sha256: e[16..48].try_into().expect("32 bytes"),
            data: &raw[at..at + len],
        }
    }

    /// The valid records, by slot.
    pub fn records(&self) -> impl Iterator<Item = Record<'a>> + '_ {
        self.at
            .iter()
            .filter(|&&n| n != 0)
            .map(|&n| self.entry(n as usize - 1))
    }

    /// Valid records in the row.
    pub fn valid(&self) -> usize {
        self.valid
    }

    /// Whether the row's head is damaged (no slot of it can be trusted).
    pub fn is_unreadable(&self) -> bool {
        self.unreadable
    }

    /// Slots that read as `Corrupt`: damaged records, marked or suspected
    /// (every slot, for a row whose head is damaged).
    pub fn damaged_slots(&self) -> impl Iterator<Item = u16> + '_ {
        (0..GROUP_BLOCKS as u16).filter(|&s| self.get(s) == Lookup::Corrupt)
    }

    /// Damaged entries (or 1 if the head itself is damaged).
    pub fn damaged(&self) -> usize {
        if self.unreadable { 1 } else { self.damaged }
    }

    /// Slots whose bytes do not match their SHA-256 (scrub; hashes every block).
    pub fn damaged_data(&self) -> Vec<u16> {
        self.records()
            .filter(|r| sha256(r.data) != *r.sha256)
            .map(|r| r.slot)
            .collect()
    }
}

/// The entry count of a row whose head and entry table are intact in size.
fn head_count(raw: &[u8]) -> Option<usize> {
    if raw.len() < HEAD || raw[0] != MAGIC || raw[1] != ROW_VERSION {
        return None;
    }
    let count = u16::from_le_bytes([raw[2], raw[3]]);
    let not = u16::from_le_bytes([raw[4], raw[5]]);
    let count = count as usize;
    (not == !(count as u16) && count as u64 <= GROUP_BLOCKS && HEAD + count * ENTRY <= raw.len())
        .then_some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Owned {
        slot: u16,
        generation: u64,
        sha: [u8; 32],
        data: Vec<u8>,
    }

    fn owned(slot: u16, generation: u64, data: Vec<u8>) -> Owned {
        Owned {
            slot,
            generation,
            sha: sha256(&data),
            data,
        }
    }

    fn records(v: &[Owned]) -> Vec<Entry<'_>> {
        v.iter()
            .map(|o| {
                Entry::Block(Record {
                    slot: o.slot,
                    generation: o.generation,
                    sha256: &o.sha,
                    data: &o.data,
                })
            })
            .collect()
    }

    const LAST: u16 = GROUP_BLOCKS as u16 - 1;
    const KEY: RowKey = RowKey {
        object: 7,
        role: 1,
        group: 2,
    };

    /// Slots 0, 3 (generation 9), 5, the last (a short last block); gaps elsewhere.
    fn sample() -> Vec<Owned> {
        vec![
            owned(0, 4, vec![1; 512]),
            owned(3, 9, vec![2; 512]),
            owned(5, 4, vec![3; 512]),
            owned(LAST, 5, b"the last, partial block".to_vec()),
        ]
    }

    #[test]
    fn round_trip_with_gaps_generations_and_a_short_block() {
        let v = sample();
        let raw = encode(KEY, &records(&v));
        let row = Row::parse(KEY, &raw);
        assert_eq!((row.valid(), row.damaged()), (4, 0));
        for o in &v {
            match row.get(o.slot) {
                Lookup::Found(r) => {
                    assert_eq!(
                        (r.generation, r.data, r.sha256),
                        (o.generation, &o.data[..], &o.sha)
                    );
                }
                other => panic!("slot {}: {other:?}", o.slot),
            }
        }
        for gap in [1, 2, 4, 6, LAST - 1] {
            assert_eq!(row.get(gap), Lookup::Missing, "slot {gap}");
        }
        assert_eq!(
            row.records().map(|r| r.slot).collect::<Vec<_>>(),
            [0, 3, 5, LAST]
        );
        assert!(row.damaged_data().is_empty());
        // An empty row is valid and holds nothing.
        let empty = encode(KEY, &[]);
        assert_eq!(Row::parse(KEY, &empty).get(0), Lookup::Missing);
        assert_eq!(locate(GROUP_BLOCKS + 2), (1, 2));
        assert_eq!(index_of(1, 2), GROUP_BLOCKS + 2);
    }

    #[test]
    fn a_flipped_data_byte_is_exactly_that_block() {
        let v = sample();
        let mut raw = encode(KEY, &records(&v));
        // The data of slot 5 is the third block in the data region.
        let data_start = HEAD + v.len() * ENTRY;
        raw[data_start + 2 * 512 + 100] ^= 0x40;
        let row = Row::parse(KEY, &raw);
        assert_eq!(row.damaged(), 0, "the entries are intact");
        assert_eq!(row.damaged_data(), [5]);
        // The reader gets the bytes and their stored SHA-256: the mismatch
        // shows on that block only.
        for o in &v {
            let Lookup::Found(r) = row.get(o.slot) else {
                panic!("slot {} not found", o.slot)
            };
            assert_eq!(sha256(r.data) == *r.sha256, o.slot != 5, "slot {}", o.slot);
        }
    }

    #[test]
    fn a_flipped_entry_byte_is_exactly_that_block() {
        let v = sample();
        let clean = encode(KEY, &records(&v));
        // Every byte of entry 1 (slot 3): generation, checksum, length, ...
        for byte in 0..ENTRY {
            let mut raw = clean.clone();
            raw[HEAD + ENTRY + byte] ^= 0x01;
            let row = Row::parse(KEY, &raw);
            assert_eq!(row.damaged(), 1, "byte {byte}");
            assert_eq!(row.get(3), Lookup::Corrupt, "byte {byte}");
            // Its neighbours stay readable; the slots between them that the
            // damaged entry may have named are not taken for holes.
            assert!(matches!(row.get(0), Lookup::Found(_)), "byte {byte}");
            assert!(matches!(row.get(5), Lookup::Found(_)), "byte {byte}");
            assert_eq!(row.get(4), Lookup::Corrupt, "byte {byte}");
            assert_eq!(row.get(6), Lookup::Missing, "byte {byte}");
        }
    }

    #[test]
    fn damaged_markers_read_as_corrupt_for_exactly_their_slot() {
        let v = sample();
        let mut entries = records(&v);
        entries.insert(2, Entry::Damaged(4));
        let raw = encode(KEY, &entries);
        let row = Row::parse(KEY, &raw);
        assert_eq!(row.get(4), Lookup::Corrupt);
        assert!(matches!(row.get(3), Lookup::Found(_)));
        assert!(matches!(row.get(5), Lookup::Found(_)));
        assert_eq!(row.get(6), Lookup::Missing);
        assert_eq!(row.damaged_slots().collect::<Vec<_>>(), [4]);
        assert_eq!(row.valid(), 4);
        // A damaged head: every slot is damaged, none a hole.
        let mut bad = raw.clone();
        bad[0] ^= 1;
        let row = Row::parse(KEY, &bad);
        assert!(row.is_unreadable());
        assert_eq!(row.damaged_slots().count(), GROUP_BLOCKS as usize);
    }

    #[test]
    fn a_damaged_head_or_wrong_key_is_never_read_as_holes() {
        let v = sample();
        let clean = encode(KEY, &records(&v));
        for byte in 0..HEAD - 2 {
            let mut raw = clean.clone();
            raw[byte] ^= 0x01;
            let row = Row::parse(KEY, &raw);
            for slot in [0, 1, 3, LAST] {
                assert_eq!(
                    row.get(slot),
                    Lookup::Corrupt,
                    "head byte {byte}, slot {slot}"
                );
            }
        }
        // A row stored under another key (object, role or group): every
        // entry fails its check.
        for other in [
            RowKey { object: 8, ..KEY },
            RowKey { role: 0, ..KEY },
            RowKey { group: 3, ..KEY },
        ] {
            let row = Row::parse(other, &clean);
            assert_eq!(row.valid(), 0);
            assert_eq!(row.get(0), Lookup::Corrupt);
            assert_eq!(row.get(100), Lookup::Corrupt);
        }
        // Truncated rows.
        for cut in [0, 3, HEAD, HEAD + ENTRY, clean.len() - 1] {
            let row = Row::parse(KEY, &clean[..cut]);
            assert!(row.records().all(|r| r.data.len() <= 512), "cut {cut}");
            assert_ne!(row.get(LAST), Lookup::Missing, "cut {cut}");
        }
    }
}
