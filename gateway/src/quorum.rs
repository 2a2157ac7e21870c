//! Quorum arithmetic and the read rules: counting acknowledgements and
//! answers per block, and deciding when a read has its answer (pure).

use std::fmt;

use smallvec::SmallVec;
use tessera_datanode::Block;

/// Why a quorum was not reached: how many were needed, how many answered,
/// and what the others said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuorumFailure {
    pub needed: u32,
    pub ok: u32,
    pub failures: Vec<String>,
}

impl fmt::Display for QuorumFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {} needed replicas answered", self.ok, self.needed)?;
        if !self.failures.is_empty() {
            write!(f, " ({})", self.failures.join("; "))?;
        }
        Ok(())
    }
}

/// Per-block acknowledgement counts for one write.
#[derive(Debug, Clone)]
pub struct WriteTally {
    needed: u32,
    acks: Vec<u32>,
    /// `acked[i]` holds the replica numbers `k` that acknowledged block i.
    acked: Vec<u64>,
}

impl WriteTally {
    pub fn new(blocks: usize, needed: u32) -> Self {
        WriteTally {
            needed,
            acks: vec![0; blocks],
            acked: vec![0; blocks],
        }
    }

    /// Records that replica `k` of block `i` is durable; repeats are ignored.
    pub fn ack(&mut self, i: usize, k: u32) {
        let bit = 1u64 << k;
        if self.acked[i] & bit == 0 {
            self.acked[i] |= bit;
            self.acks[i] += 1;
        }
    }

    pub fn has(&self, i: usize, k: u32) -> bool {
        self.acked[i] & (1u64 << k) != 0
    }

    /// Block `i` has fewer than W acknowledgements.
    pub fn is_short(&self, i: usize) -> bool {
        self.acks[i] < self.needed
    }

    /// Every block has at least W acknowledgements.
    pub fn complete(&self) -> bool {
        self.acks.iter().all(|a| *a >= self.needed)
    }

    /// Blocks still short of W.
    pub fn short(&self) -> impl Iterator<Item = usize> + '_ {
        self.acks
            .iter()
            .enumerate()
            .filter(|(_, a)| **a < self.needed)
            .map(|(i, _)| i)
    }

    /// The fewest acknowledgements any block has.
    pub fn min_acks(&self) -> u32 {
        self.acks.iter().copied().min().unwrap_or(self.needed)
    }

    pub fn needed(&self) -> u32 {
        self.needed
    }
}

/// What one replica said about one block during a read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// A copy whose bytes matched its SHA-256, of this generation.
    Valid(u64),
    Missing,
    /// Damaged at rest: the datanode said so, or the bytes failed their SHA-256 here.
    Corrupt,
    /// The object was deleted.
    Gone,
}

/// The answers gathered for one block of a read.
#[derive(Debug, Default)]
pub struct ReadState {
    /// Replicas whose answer counts toward Q: a valid copy, "missing" or
    /// "gone". A corrupt copy does not: its generation is unknown, so it may
    /// have been the newest, and W + Q > R only holds over answers that say
    /// what the replica has.
    pub answers: u32,
    /// Replicas that answered with a corrupt copy.
    pub corrupt: u32,
    /// Replica numbers asked, as bits.
    pub tried: u64,
    /// The valid copy of the highest generation seen.
    pub best: Option<Block>,
    /// Replica numbers whose datanode could not be reached, as bits.
    pub unreachable: u64,
    /// What each replica `k` that answered said (inline: a read keeps one
    /// of these per block, and must not allocate per block).
    pub seen: SmallVec<[(u32, Seen); 3]>,
    pub failures: Vec<String>,
    pub done: bool,
}

impl ReadState {
    /// Records that replica `k`, on a datanode that is rebuilding, does not
    /// hold the block: it may not have copied it yet, so the answer does
    /// not count toward Q (it still gets the block written back).
    pub fn missing_unsure(&mut self, k: u32) {
        self.seen.push((k, Seen::Missing));
    }

    /// Records replica `k`'s answer, keeping the highest valid generation.
    pub fn answer(&mut self, k: u32, seen: Seen, block: Option<Block>) {
        if seen == Seen::Corrupt {
            self.corrupt += 1;
        } else {
            self.answers += 1;
        }
        if let (Seen::Valid(g), Some(b)) = (seen, block)
            && self.best.as_ref().is_none_or(|cur| cur.generation < g)
        {
            self.best = Some(b);
        }
        self.seen.push((k, seen));
    }

    /// Done asking: Q answered and a valid copy is in hand.
    pub fn has_copy(&self, q: u32) -> bool {
        self.answers >= q && self.best.is_some()
    }

    /// A hole: every one of the R replicas answered, and every answer was
    /// "missing". A single "missing" (say, from a node that lost its disk)
    /// is never taken for a hole while another replica may hold the block,
    /// whether that replica was not asked yet or could not be reached, and
    /// a corrupt copy is never taken for one.
    pub fn is_hole(&self, q: u32, r: u32) -> bool {
        // Every replica said "missing", even one still rebuilding: a block
        // acknowledged on W >= 2 replicas has a copy on another one.
        self.corrupt == 0
            && self.seen.len() as u32 >= q.max(r)
            && self.best.is_none()
            && self.seen.len() as u32 >= r
            && self.seen.iter().all(|(_, s)| *s == Seen::Missing)
    }

    /// The replicas to ask next (`r` of them in all): enough to reach Q,
    /// or one more when Q answered without a valid copy.
    pub fn next_replicas(&self, q: u32, r: u32) -> Vec<u32> {
        let need = if self.answers < q {
            q - self.answers
        } else {
            1
        };
        (0..r)
            .filter(|k| self.tried & (1 << k) == 0)
            .take(need as usize)
            .collect()
    }

    /// Whether the read of this block is still open after an unreachable
    /// replica: asking it again at a new address may settle it.
    pub fn retry_unreachable(&mut self, q: u32, r: u32) -> bool {
        if self.unreachable == 0 || self.has_copy(q) || self.is_hole(q, r) {
            return false;
        }
        self.tried &= !self.unreachable;
        self.unreachable = 0;
        self.done = false;
        true
    }

    /// Replicas `k` that need the best copy written back: missing, corrupt
    /// or of an older generation.
    pub fn stale_replicas(&self) -> Vec<u32> {
        let Some(best) = &self.best else {
            return Vec::new();
        };
        self.seen
            .iter()
            .filter(|(_, s)| match s {
                Seen::Valid(g) => *g < best.generation,
                Seen::Missing | Seen::Corrupt => true,
                Seen::Gone => false,
            })
            .map(|(k, _)| *k)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(g: u64) -> Block {
        Block::new(g, bytes::Bytes::from_static(b"x"))
    }

    #[test]
    fn read_rules() {
        // R=2, Q=1: the first valid answer is enough.
        let mut st = ReadState::default();
        assert_eq!(st.next_replicas(1, 2), [0]);
        st.tried |= 1;
        st.answer(0, Seen::Valid(3), Some(block(3)));
        assert!(st.has_copy(1) && !st.is_hole(1, 2));
        assert!(st.stale_replicas().is_empty());

        // A lone "missing" is not a hole: ask the other replica.
        let mut st = ReadState::default();
        st.tried |= 1;
        st.answer(0, Seen::Missing, None);
        assert!(!st.has_copy(1) && !st.is_hole(1, 2));
        assert_eq!(st.next_replicas(1, 2), [1]);
        st.tried |= 2;
        st.answer(1, Seen::Valid(5), Some(block(5)));
        assert!(st.has_copy(1));
        assert_eq!(st.stale_replicas(), [0], "the missing copy is repaired");

        // Every replica missing: a hole.
        let mut st = ReadState {
            tried: 0b11,
            ..Default::default()
        };
        st.answer(0, Seen::Missing, None);
        st.answer(1, Seen::Missing, None);
        assert!(st.is_hole(1, 2) && !st.has_copy(1));

        // Missing + unreachable: never a hole.
        let mut st = ReadState {
            tried: 0b11,
            unreachable: 0b10,
            ..Default::default()
        };
        st.answer(0, Seen::Missing, None);
        assert!(!st.is_hole(1, 2) && !st.has_copy(1));

        // A corrupt copy does not count toward Q: with Q=2, a stale valid
        // copy and a corrupt one make the read ask the third replica, which
        // may hold the newest.
        let mut st = ReadState {
            tried: 0b11,
            ..Default::default()
        };
        st.answer(0, Seen::Valid(5), Some(block(5)));
        st.answer(1, Seen::Corrupt, None);
        assert!(!st.has_copy(2));
        assert_eq!(st.next_replicas(2, 3), [2]);
        st.tried |= 0b100;
        st.answer(2, Seen::Valid(9), Some(block(9)));
        assert!(st.has_copy(2));
        assert_eq!(st.best.as_ref().map(|b| b.generation), Some(9));
        assert_eq!(st.stale_replicas(), [0, 1]);

        // Missing + corrupt: never a hole, and no copy: the read fails.
        let mut st = ReadState {
            tried: 0b11,
            ..Default::default()
        };
        st.answer(0, Seen::Missing, None);
        st.answer(1, Seen::Corrupt, None);
        assert!(!st.is_hole(1, 2) && !st.has_copy(1));
        assert!(st.next_replicas(1, 2).is_empty());

        // Q=2: two answers needed; the highest generation wins and the
        // stale one is repaired.
        let mut st = ReadState::default();
        assert_eq!(st.next_replicas(2, 3), [0, 1]);
        st.tried = 0b11;
        st.answer(0, Seen::Valid(7), Some(block(7)));
        assert!(!st.has_copy(2));
        st.answer(1, Seen::Valid(9), Some(block(9)));
        assert!(st.has_copy(2));
        assert_eq!(st.best.as_ref().map(|b| b.generation), Some(9));
        assert_eq!(st.stale_replicas(), [0]);
        // A gone object is never repaired.
        st.answer(2, Seen::Gone, None);
        assert_eq!(st.stale_replicas(), [0]);

        // An unreachable replica is asked again (at its new address) only
        // while the block is still open.
        let mut st = ReadState {
            tried: 0b11,
            unreachable: 0b01,
            ..Default::default()
        };
        st.answer(1, Seen::Missing, None);
        st.done = true;
        assert!(st.retry_unreachable(1, 2));
        assert_eq!((st.tried, st.unreachable, st.done), (0b10, 0, false));
        assert_eq!(st.next_replicas(1, 2), [0]);
        let mut settled = ReadState {
            tried: 0b11,
            unreachable: 0b10,
            ..Default::default()
        };
        settled.answer(0, Seen::Valid(1), Some(block(1)));
        assert!(!settled.retry_unreachable(1, 2));
    }

    #[test]
    fn tally() {
        let mut t = WriteTally::new(3, 2);
        assert!(!t.complete());
        t.ack(0, 0);
        t.ack(0, 0);
        t.ack(0, 1);
        t.ack(1, 1);
        t.ack(2, 0);
        t.ack(2, 2);
        assert_eq!(t.short().collect::<Vec<_>>(), [1]);
        assert_eq!(t.min_acks(), 1);
        assert!(t.has(0, 1) && !t.has(1, 0));
        t.ack(1, 0);
        assert!(t.complete());
        assert!(WriteTally::new(0, 2).complete());
        let f = QuorumFailure {
            needed: 2,
            ok: 1,
            failures: vec!["n1: down".into()],
        };
        assert_eq!(f.to_string(), "1 of 2 needed replicas answered (n1: down)");
    }
}
