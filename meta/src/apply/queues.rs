//! The GC queue: the unused ids of expired upload leases go to it, and
//! objects the collector has deleted leave it.

use redb::{ReadableTable, ReadableTableMetadata};

use super::Tables;
use crate::change::Outcome;
use crate::schema::{Lease, dec, storage};
use crate::types::*;

impl Tables<'_> {
    pub(super) fn reap_leases(&mut self, ttl_ns: i64, now: i64) -> Result<Outcome, MetaError> {
        let before = now.saturating_sub(ttl_ns.max(0));
        let mut expired = Vec::new();
        for e in self.leases.iter().map_err(storage)? {
            let (k, v) = e.map_err(storage)?;
            let lease: Lease = dec(v.value())?;
            if lease.granted < before {
                expired.push((k.value(), lease.end));
            }
        }
        let mut collected = 0;
        for (first, end) in expired {
            for id in first..end {
                self.wrote()?;
                if self.lease_used.remove(id).map_err(storage)?.is_none() {
                    self.queue_gc(ObjectRef {
                        id,
                        ..ObjectRef::NONE
                    })?;
                    collected += 1;
                }
            }
            self.wrote()?;
            self.leases.remove(first).map_err(storage)?;
        }
        self.prune_locks(now)?;
        self.reap_sessions(now)?;
        Ok(Outcome::Count(collected))
    }

    pub(super) fn gc_done(&mut self, objects: Vec<u64>) -> Result<Outcome, MetaError> {
        for id in objects {
            self.gc_finished(id)?;
        }
        Ok(Outcome::Done)
    }

    /// An object is gone from every datanode: it leaves the queue.
    fn gc_finished(&mut self, id: u64) -> Result<(), MetaError> {
        self.wrote()?;
        self.gc.remove(id).map_err(storage)?;
        self.gc_done
            .retain_in((id, 0)..=(id, u32::MAX), |_, _| false)
            .map_err(storage)?;
        self.forget_repairs(id)
    }

    pub(super) fn gc_done_on(
        &mut self,
        slot: u32,
        objects: Vec<u64>,
    ) -> Result<Outcome, MetaError> {
        let slots = self.ring.len().map_err(storage)?;
        if u64::from(slot) >= slots {
            return Err(MetaError::Invalid(format!(
                "the ring has no slot {slot} ({slots} slots)"
            )));
        }
        for id in objects {
            if self.gc.get(id).map_err(storage)?.is_none() {
                continue;
            }
            self.wrote()?;
            self.gc_done.insert((id, slot), ()).map_err(storage)?;
            let done = self
                .gc_done
                .range((id, 0)..=(id, u32::MAX))
                .map_err(storage)?
                .count() as u64;
            if done >= slots {
                self.gc_finished(id)?;
            }
        }
        Ok(Outcome::Done)
    }
}
