//! Quorum arithmetic: counting acknowledgements and answers per block.

use std::fmt;

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

#[cfg(test)]
mod tests {
    use super::*;

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
