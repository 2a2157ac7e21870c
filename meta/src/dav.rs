//! WebDAV state meta keeps beside the namespace: write locks, by path, and
//! dead properties, by inode. Shared by the queries (what a request sees)
//! and the changes (`apply::dav`).

use redb::ReadableTable;

use crate::schema::{dec, storage};
use crate::types::*;

/// The longest lock meta grants, seconds (a client refreshes to keep it).
pub const MAX_LOCK_SECS: u64 = 24 * 3600;
/// Dead properties one inode may carry.
pub const MAX_PROPS: usize = 1024;
/// The largest dead property (its whole element), bytes.
pub const MAX_PROP_BYTES: usize = 64 * 1024;

/// A lock as the `locks` table keeps it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredLock {
    pub(crate) info: LockInfo,
    /// When it ends, ns since the epoch, by meta's clock.
    pub(crate) expires: i64,
}

impl StoredLock {
    pub(crate) fn live(&self, now: i64) -> bool {
        self.expires > now
    }

    /// The lock as reported at `now`.
    pub(crate) fn report(&self, now: i64) -> LockInfo {
        let mut info = self.info.clone();
        info.remaining_s = ((self.expires - now).max(0) as u64).div_ceil(1_000_000_000);
        info
    }
}

/// A dead property's value as the `props` table keeps it (the key is
/// inode, namespace, name).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredProp {
    pub(crate) prefix: Option<String>,
    pub(crate) xml: Option<Vec<u8>>,
}

/// Whether `key` lies strictly below `ancestor` (keys are components
/// joined by '/', "" the root).
pub(crate) fn is_below(key: &str, ancestor: &str) -> bool {
    if ancestor.is_empty() {
        return !key.is_empty();
    }
    key.len() > ancestor.len()
        && key.starts_with(ancestor)
        && key.as_bytes()[ancestor.len()] == b'/'
}

/// The root's key and every ancestor key of `key`, then `key` itself.
pub(crate) fn ancestors_and_self(key: &str) -> Vec<&str> {
    let mut out = vec![""];
    for (i, b) in key.bytes().enumerate() {
        if b == b'/' {
            out.push(&key[..i]);
        }
    }
    if !key.is_empty() {
        out.push(key);
    }
    out
}

pub(crate) fn read_locks(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> Result<Vec<StoredLock>, MetaError> {
    match t.get(key).map_err(storage)? {
        Some(v) => dec(v.value()),
        None => Ok(Vec::new()),
    }
}

/// The live locks that matter to a request on `key`: its own, the deep
/// ones of its ancestors, and every one below it.
pub(crate) fn locks_around(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
    now: i64,
) -> Result<Vec<StoredLock>, MetaError> {
    let mut out = Vec::new();
    for k in ancestors_and_self(key) {
        out.extend(
            read_locks(t, k)?
                .into_iter()
                .filter(|l| l.live(now) && (k == key || l.info.deep)),
        );
    }
    let below = if key.is_empty() {
        t.range::<&str>(..).map_err(storage)?
    } else {
        let lo = format!("{key}/");
        // '0' follows '/': every key below `key` sorts in [lo, hi).
        let hi = format!("{key}0");
        t.range::<&str>(lo.as_str()..hi.as_str()).map_err(storage)?
    };
    for entry in below {
        let (k, v) = entry.map_err(storage)?;
        if k.value().is_empty() {
            continue;
        }
        let locks: Vec<StoredLock> = dec(v.value())?;
        out.extend(locks.into_iter().filter(|l| l.live(now)));
    }
    Ok(out)
}

/// The dead properties of inode `ino`.
pub(crate) fn props_of(
    t: &impl ReadableTable<(u64, &'static str, &'static str), &'static [u8]>,
    ino: u64,
) -> Result<Vec<DeadProp>, MetaError> {
    let mut out = Vec::new();
    for entry in t
        .range::<(u64, &str, &str)>((ino, "", "")..(ino.saturating_add(1), "", ""))
        .map_err(storage)?
    {
        let (k, v) = entry.map_err(storage)?;
        let (_, ns, name) = k.value();
        let stored: StoredProp = dec(v.value())?;
        out.push(DeadProp {
            namespace: (!ns.is_empty()).then(|| ns.to_string()),
            name: name.to_string(),
            prefix: stored.prefix,
            xml: stored.xml,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(ancestors_and_self(""), vec![""]);
        assert_eq!(ancestors_and_self("a/b/c"), vec!["", "a", "a/b", "a/b/c"]);
        assert!(is_below("a/b", "a"));
        assert!(is_below("a", ""));
        assert!(!is_below("ab", "a"));
        assert!(!is_below("a", "a"));
    }
}
