//! Counters a gateway exposes (status, metrics).

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Stats {
    /// Writes currently blocked waiting for W replicas.
    pub blocked_now: AtomicU64,
    /// Writes that ever blocked.
    pub blocked_total: AtomicU64,
    /// Replica copies found missing, stale or corrupt by reads.
    pub bad_replicas_seen: AtomicU64,
    /// Corrupt copies among them: reported by the datanode, or failing the
    /// SHA-256 check here (then reported back to the datanode).
    pub corrupt_seen: AtomicU64,
    pub repairs_queued: AtomicU64,
    pub repairs_done: AtomicU64,
    pub repairs_failed: AtomicU64,
    pub repairs_dropped: AtomicU64,
    /// Reads that failed for want of Q replicas or a valid copy.
    pub read_failures: AtomicU64,
    /// Objects deleted from datanodes by GC.
    pub gc_objects: AtomicU64,
    /// Read chunks answered straight from their first replicas' answers.
    pub direct_reads: AtomicU64,
    /// Read chunks that tried that and were read block by block instead (a
    /// replica down, slow, missing or corrupt blocks).
    pub direct_reads_declined: AtomicU64,
    /// Reads that asked a second replica because the first was slow.
    pub hedged_reads: AtomicU64,
    /// Bytes held by puts still running after their write was acknowledged.
    pub detached_bytes: AtomicU64,
    /// Bytes of such puts cancelled because too much was held already.
    pub detached_dropped: AtomicU64,
    /// Blocks written with W copies, and their bytes (each counted once,
    /// however many replicas hold it).
    pub written_blocks: AtomicU64,
    pub written_bytes: AtomicU64,
    /// Blocks read, and the bytes of file data they gave.
    pub read_blocks: AtomicU64,
    pub read_bytes: AtomicU64,
}

impl Stats {
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Counts a blocked write in [`Stats::blocked_now`] for as long as it lives.
pub(crate) struct BlockedGuard<'a>(&'a Stats);

impl<'a> BlockedGuard<'a> {
    pub(crate) fn new(stats: &'a Stats) -> Self {
        stats.blocked_now.fetch_add(1, Ordering::Relaxed);
        Stats::add(&stats.blocked_total, 1);
        BlockedGuard(stats)
    }
}

impl Drop for BlockedGuard<'_> {
    fn drop(&mut self) {
        self.0.blocked_now.fetch_sub(1, Ordering::Relaxed);
    }
}
