//! What meta keeps in its redb file: the tables, the format version of each
//! table's records, meta's own records (upload and write leases) and how
//! records are encoded.

use redb::{ReadableTable, TableDefinition};

use crate::types::*;

pub(crate) const INODES: TableDefinition<u64, &[u8]> = TableDefinition::new("inodes");
pub(crate) const DIRENTS: TableDefinition<(u64, &str), u64> = TableDefinition::new("dirents");
pub(crate) const RING: TableDefinition<u32, &[u8]> = TableDefinition::new("ring");
pub(crate) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
pub(crate) const CONFIG: TableDefinition<&str, &[u8]> = TableDefinition::new("config");
pub(crate) const GC: TableDefinition<u64, &[u8]> = TableDefinition::new("gc");
/// Object ids leased to gateways: first id -> [`Lease`]. A lease is the
/// pending-upload record of every id in it: an id can be published (or
/// abandoned) once, while its lease lives; past the upload TTL, the lease's
/// unused ids go to GC.
pub(crate) const LEASES: TableDefinition<u64, &[u8]> = TableDefinition::new("leases");
/// Leased ids already published or abandoned.
pub(crate) const LEASE_USED: TableDefinition<u64, ()> = TableDefinition::new("lease_used");
/// Inode -> [`WriteLease`]: who is writing a file in place,
/// and how far uncommitted writes may have left bytes past its end.
pub(crate) const WRITES: TableDefinition<u64, &[u8]> = TableDefinition::new("writes");
/// Path key -> the WebDAV locks on that path ([`crate::dav::StoredLock`]s).
pub(crate) const LOCKS: TableDefinition<&str, &[u8]> = TableDefinition::new("locks");
/// (inode, namespace, name) -> a dead property ([`crate::dav::StoredProp`]).
pub(crate) const PROPS: TableDefinition<(u64, &str, &str), &[u8]> = TableDefinition::new("props");
/// (inode, name) -> value: extended attributes.
pub(crate) const XATTRS: TableDefinition<(u64, &[u8]), &[u8]> = TableDefinition::new("xattrs");
/// Inode -> its byte range locks (postcard `Vec<FileLock>`).
pub(crate) const FLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("flocks");
/// Mount session -> when it ends unless renewed (ns, meta's clock).
pub(crate) const SESSIONS: TableDefinition<u64, i64> = TableDefinition::new("sessions");
/// Inode with no name left -> the session holding it open.
pub(crate) const ORPHANS: TableDefinition<u64, u64> = TableDefinition::new("orphans");
/// (slot, object id, first block) -> [`StoredRepair`]: blocks of an object
/// that the datanode in `slot` missed (see [`crate::types::RepairRange`]).
pub(crate) const REPAIRS: TableDefinition<(u32, u64, u64), &[u8]> = TableDefinition::new("repairs");
/// (object id, slot) -> (): the slots whose datanode deleted a queued
/// object; it leaves [`GC`] once every slot of the ring has.
pub(crate) const GC_DONE: TableDefinition<(u64, u32), ()> = TableDefinition::new("gc_done");
/// Table name -> format version (see [`tessera_rpc::formats`]).
pub(crate) const FORMATS: TableDefinition<&str, u32> = TableDefinition::new("formats");
/// The format of each table's records (postcard). Bump a table's version
/// when its records change, and teach [`dec`]'s callers the old one.
pub(crate) const TABLE_FORMATS: &[(&str, u32)] = &[
    ("inodes", 1),
    ("dirents", 1),
    ("ring", 1),
    ("counters", 1),
    ("config", 1),
    ("gc", 1),
    ("leases", 1),
    ("lease_used", 1),
    ("writes", 1),
    ("locks", 1),
    ("props", 1),
    ("xattrs", 1),
    ("flocks", 1),
    ("sessions", 1),
    ("orphans", 1),
    ("repairs", 1),
    ("gc_done", 1),
];

/// One range of the repair queue, less its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredRepair {
    pub(crate) end: u64,
    pub(crate) seed: u64,
    pub(crate) width: u32,
    /// Changes whenever the range does (see [`crate::types::RepairEntry`]).
    pub(crate) seq: u64,
}

/// A range of object ids handed to a gateway (see [`LEASES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Lease {
    pub(crate) end: u64,
    /// When it was granted, ns since the epoch, by meta's clock.
    pub(crate) granted: i64,
}

/// The write lease of one inode and the extent of uncommitted in-place
/// writes into it (see [`Change::BeginWrite`](crate::change::Change::BeginWrite)). Absent: no lease, and every
/// byte past the size is known to be zero or absent.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct WriteLease {
    /// The gateway holding the lease; 0: none.
    pub(crate) holder: u64,
    /// When the lease ends, ns since the epoch, by meta's clock.
    pub(crate) expires: i64,
    /// Uncommitted writes may have left bytes up to here past the size.
    pub(crate) dirty_end: u64,
}

pub(crate) fn storage(e: impl std::fmt::Display) -> MetaError {
    MetaError::Storage(e.to_string())
}

/// A record as stored: postcard, a documented and stable format.
pub(crate) fn enc<T: serde::Serialize>(v: &T) -> Vec<u8> {
    tessera_rpc::codec::encode(v)
}

pub(crate) fn dec<T: serde::de::DeserializeOwned>(b: &[u8]) -> Result<T, MetaError> {
    tessera_rpc::codec::decode(b)
        .map_err(|e| MetaError::Storage(format!("corrupt meta record: {e}")))
}

pub(crate) fn get_inode(
    t: &impl ReadableTable<u64, &'static [u8]>,
    ino: u64,
) -> Result<Inode, MetaError> {
    let v = t
        .get(ino)
        .map_err(storage)?
        .ok_or_else(|| MetaError::NotFound(format!("inode {ino}")))?;
    dec(v.value())
}

/// The names of `ino`'s extended attributes, in byte order, with the size
/// of each name and value.
pub(crate) fn xattrs_of(
    t: &impl ReadableTable<(u64, &'static [u8]), &'static [u8]>,
    ino: u64,
) -> Result<Vec<(Vec<u8>, usize)>, MetaError> {
    let mut out = Vec::new();
    let from: &[u8] = &[];
    for e in t.range((ino, from)..).map_err(storage)? {
        let (k, v) = e.map_err(storage)?;
        let (i, name) = k.value();
        if i != ino {
            break;
        }
        out.push((name.to_vec(), name.len() + v.value().len()));
    }
    Ok(out)
}
