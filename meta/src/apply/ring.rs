//! The ring of datanode slots: a datanode registers to take (or keep) one.

use redb::ReadableTable;

use super::Tables;
use crate::change::Outcome;
use crate::schema::{dec, enc, storage};
use crate::types::*;

impl Tables<'_> {
    pub(super) fn register(
        &mut self,
        node_id: String,
        addr: String,
        slot: Option<u32>,
    ) -> Result<Outcome, MetaError> {
        if node_id.is_empty() || addr.is_empty() {
            return Err(MetaError::Invalid(
                "a datanode needs an id and an address".into(),
            ));
        }
        let mut slots = Vec::new();
        for e in self.ring.iter().map_err(storage)? {
            let (_, v) = e.map_err(storage)?;
            slots.push(dec::<RingSlot>(v.value())?);
        }
        let held = slots.iter().find(|s| s.node_id == node_id).map(|s| s.slot);
        let slot = match (held, slot) {
            (Some(h), Some(want)) if h != want => {
                return Err(MetaError::Invalid(format!(
                    "datanode {node_id} already holds slot {h}; it cannot take slot {want}"
                )));
            }
            (Some(h), _) => h,
            (None, Some(want)) => {
                if want as usize > slots.len() {
                    return Err(MetaError::Invalid(format!(
                        "slot {want} is past the end of the ring ({} slots); slots are taken in order",
                        slots.len()
                    )));
                }
                if let Some(old) = slots.iter().find(|s| s.slot == want) {
                    tracing::warn!(slot = want, old = %old.node_id, new = %node_id, "datanode replaces the holder of its slot");
                }
                want
            }
            (None, None) => slots.len() as u32,
        };
        let record = RingSlot {
            slot,
            node_id,
            addr,
        };
        self.wrote()?;
        self.ring
            .insert(slot, enc(&record).as_slice())
            .map_err(storage)?;
        Ok(Outcome::Slot(slot))
    }
}
