//! The repair queue: ranges of blocks a datanode missed, merged per object
//! and slot, until that datanode has copied them from the other replicas.

use redb::{ReadableTable, ReadableTableMetadata};

use super::Tables;
use crate::change::Outcome;
use crate::schema::{StoredRepair, dec, enc, storage};
use crate::types::*;

/// Most ranges in one change.
pub(crate) const MAX_RANGES: usize = 65_536;

impl Tables<'_> {
    pub(super) fn need_repair(&mut self, ranges: Vec<RepairRange>) -> Result<Outcome, MetaError> {
        if ranges.len() > MAX_RANGES {
            return Err(MetaError::Invalid(format!(
                "{} repair ranges in one change; at most {MAX_RANGES}",
                ranges.len()
            )));
        }
        let slots = self.ring.len().map_err(storage)?;
        for r in &ranges {
            if r.object.is_none() || r.first >= r.end || u64::from(r.slot) >= slots {
                return Err(MetaError::Invalid(format!(
                    "not a repair range: slot {} (of {slots}), object {}, blocks {}..{}",
                    r.slot, r.object.id, r.first, r.end
                )));
            }
        }
        for r in ranges {
            let (mut lo, mut hi) = (r.first, r.end);
            // Ranges of one object and slot are disjoint and not adjacent:
            // those touching this one are the last few starting at or before
            // its end.
            let mut merged = Vec::new();
            let keys = (r.slot, r.object.id, 0)..=(r.slot, r.object.id, hi);
            for e in self.repairs.range(keys).map_err(storage)?.rev() {
                let (k, v) = e.map_err(storage)?;
                let stored: StoredRepair = dec(v.value())?;
                if stored.end < lo {
                    break;
                }
                let first = k.value().2;
                lo = lo.min(first);
                hi = hi.max(stored.end);
                merged.push(first);
            }
            for first in merged {
                self.wrote()?;
                self.repairs
                    .remove((r.slot, r.object.id, first))
                    .map_err(storage)?;
            }
            let stored = StoredRepair {
                end: hi,
                seed: r.object.seed,
                width: r.object.width,
                seq: self.next("repairs")?,
            };
            self.wrote()?;
            self.repairs
                .insert((r.slot, r.object.id, lo), enc(&stored).as_slice())
                .map_err(storage)?;
        }
        Ok(Outcome::Done)
    }

    pub(super) fn repair_done(&mut self, done: Vec<RepairEntry>) -> Result<Outcome, MetaError> {
        if done.len() > MAX_RANGES {
            return Err(MetaError::Invalid(format!(
                "{} repairs in one change; at most {MAX_RANGES}",
                done.len()
            )));
        }
        for d in done {
            let key = (d.range.slot, d.range.object.id, d.range.first);
            let current = match self.repairs.get(key).map_err(storage)? {
                Some(v) => dec::<StoredRepair>(v.value())?,
                None => continue,
            };
            if current.seq == d.seq {
                self.wrote()?;
                self.repairs.remove(key).map_err(storage)?;
            }
        }
        Ok(Outcome::Done)
    }

    /// Drops the queued repairs of `object` (it was deleted).
    pub(super) fn forget_repairs(&mut self, object: u64) -> Result<(), MetaError> {
        let slots = self.ring.len().map_err(storage)?;
        for slot in 0..slots as u32 {
            let keys = (slot, object, 0)..=(slot, object, u64::MAX);
            if self
                .repairs
                .range(keys.clone())
                .map_err(storage)?
                .next()
                .is_none()
            {
                continue;
            }
            self.wrote()?;
            self.repairs
                .retain_in(keys, |_, _| false)
                .map_err(storage)?;
        }
        Ok(())
    }
}
