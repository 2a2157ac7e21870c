//! WebDAV locks and dead properties (see [`crate::dav`]).

use redb::ReadableTable;

use super::Tables;
use crate::change::Outcome;
use crate::dav::*;
use crate::schema::{enc, storage};
use crate::types::*;

/// Longest lock token, path or owner meta stores, bytes.
const MAX_TOKEN: usize = 256;
const MAX_PATH: usize = 16 * 1024;
const MAX_OWNER: usize = 16 * 1024;

impl Tables<'_> {
    fn write_locks(&mut self, key: &str, locks: &[StoredLock]) -> Result<(), MetaError> {
        self.wrote()?;
        if locks.is_empty() {
            self.locks.remove(key).map_err(storage)?;
        } else {
            self.locks
                .insert(key, enc(&locks.to_vec()).as_slice())
                .map_err(storage)?;
        }
        Ok(())
    }

    pub(super) fn lock(&mut self, req: LockRequest, now: i64) -> Result<Outcome, MetaError> {
        if req.token.is_empty() || req.token.len() > MAX_TOKEN {
            return Err(MetaError::Invalid("bad lock token".into()));
        }
        if req.path.len() > MAX_PATH || req.href.len() > MAX_PATH {
            return Err(MetaError::Invalid("lock path too long".into()));
        }
        if req.owner.as_ref().is_some_and(|o| o.len() > MAX_OWNER) {
            return Err(MetaError::Invalid(format!(
                "lock owner longer than {MAX_OWNER} bytes"
            )));
        }
        let key = req.path.clone();
        for l in locks_around(&self.locks, &key, now)? {
            if l.info.token == req.token {
                return Err(MetaError::Exists(format!("lock token {}", req.token)));
            }
            // Everything in `locks_around` covers or lies below the path;
            // what lies below matters only to a deep lock.
            let below = is_below(&l.info.path, &key);
            if (!below || req.deep) && !(l.info.shared && req.shared) {
                return Err(MetaError::Locked(Box::new(l.report(now))));
            }
        }
        let timeout_s = req.timeout_s.clamp(1, MAX_LOCK_SECS);
        let stored = StoredLock {
            info: LockInfo {
                token: req.token,
                path: req.path,
                href: req.href,
                principal: req.principal,
                owner: req.owner,
                shared: req.shared,
                deep: req.deep,
                timeout_s,
                remaining_s: timeout_s,
            },
            expires: now.saturating_add(timeout_s as i64 * 1_000_000_000),
        };
        let mut here: Vec<StoredLock> = read_locks(&self.locks, &key)?
            .into_iter()
            .filter(|l| l.live(now))
            .collect();
        let info = stored.report(now);
        here.push(stored);
        self.write_locks(&key, &here)?;
        Ok(Outcome::Lock(info))
    }

    /// The key holding live lock `token` that covers `path` (on the path
    /// itself, or a deep one on an ancestor), if `principal` may release
    /// or refresh it: the one who took it (anyone, for a lock taken without
    /// authentication).
    fn find_lock(
        &self,
        path: &str,
        token: &str,
        principal: Option<&str>,
        now: i64,
    ) -> Result<String, MetaError> {
        for k in ancestors_and_self(path) {
            let found = read_locks(&self.locks, k)?
                .into_iter()
                .find(|l| l.info.token == token && l.live(now) && (k == path || l.info.deep));
            if let Some(l) = found {
                if l.info.principal.is_some() && l.info.principal.as_deref() != principal {
                    return Err(MetaError::Locked(Box::new(l.report(now))));
                }
                return Ok(k.to_string());
            }
        }
        Err(MetaError::NotFound(format!(
            "lock {token} on /{path} (expired, released or never taken)"
        )))
    }

    pub(super) fn unlock(
        &mut self,
        path: &str,
        token: &str,
        principal: Option<&str>,
        now: i64,
    ) -> Result<Outcome, MetaError> {
        let key = self.find_lock(path, token, principal, now)?;
        let rest: Vec<StoredLock> = read_locks(&self.locks, &key)?
            .into_iter()
            .filter(|l| l.info.token != token && l.live(now))
            .collect();
        self.write_locks(&key, &rest)?;
        Ok(Outcome::Done)
    }

    pub(super) fn refresh_lock(
        &mut self,
        path: &str,
        token: &str,
        timeout_s: u64,
        principal: Option<&str>,
        now: i64,
    ) -> Result<Outcome, MetaError> {
        let key = self.find_lock(path, token, principal, now)?;
        let mut here: Vec<StoredLock> = read_locks(&self.locks, &key)?
            .into_iter()
            .filter(|l| l.live(now))
            .collect();
        let timeout_s = timeout_s.clamp(1, MAX_LOCK_SECS);
        let mut out = None;
        for l in here.iter_mut().filter(|l| l.info.token == token) {
            l.info.timeout_s = timeout_s;
            l.expires = now.saturating_add(timeout_s as i64 * 1_000_000_000);
            out = Some(l.report(now));
        }
        self.write_locks(&key, &here)?;
        out.map(Outcome::Lock)
            .ok_or_else(|| MetaError::NotFound(format!("lock {token}")))
    }

    /// Removes expired locks (they are already ignored; this keeps the
    /// table from growing). Runs with the periodic lease reaping.
    pub(super) fn prune_locks(&mut self, now: i64) -> Result<(), MetaError> {
        let mut stale = Vec::new();
        for entry in self.locks.iter().map_err(storage)? {
            let (k, v) = entry.map_err(storage)?;
            let locks: Vec<StoredLock> = crate::schema::dec(v.value())?;
            if locks.iter().any(|l| !l.live(now)) {
                let live: Vec<StoredLock> = locks.into_iter().filter(|l| l.live(now)).collect();
                stale.push((k.value().to_string(), live));
            }
        }
        for (k, live) in stale {
            self.write_locks(&k, &live)?;
        }
        Ok(())
    }

    pub(super) fn drop_locks(&mut self, path: &str) -> Result<Outcome, MetaError> {
        let mut keys = Vec::new();
        if self.locks.get(path).map_err(storage)?.is_some() {
            keys.push(path.to_string());
        }
        let (lo, hi) = (format!("{path}/"), format!("{path}0"));
        let below = if path.is_empty() {
            self.locks.range::<&str>(..).map_err(storage)?
        } else {
            self.locks
                .range::<&str>(lo.as_str()..hi.as_str())
                .map_err(storage)?
        };
        for entry in below {
            let (k, _) = entry.map_err(storage)?;
            let k = k.value().to_string();
            if !k.is_empty() {
                keys.push(k);
            }
        }
        for k in keys {
            self.write_locks(&k, &[])?;
        }
        Ok(Outcome::Done)
    }

    /// Removes every dead property of `ino` (it is being dropped).
    pub(super) fn drop_props(&mut self, ino: u64) -> Result<(), MetaError> {
        let names: Vec<(String, String)> = props_of(&self.props, ino)?
            .into_iter()
            .map(|p| (p.namespace.unwrap_or_default(), p.name))
            .collect();
        for (ns, name) in names {
            self.wrote()?;
            self.props
                .remove((ino, ns.as_str(), name.as_str()))
                .map_err(storage)?;
        }
        Ok(())
    }

    pub(super) fn patch_props(
        &mut self,
        ino: u64,
        patch: Vec<(bool, DeadProp)>,
        mtime: Option<i64>,
        now: i64,
    ) -> Result<Outcome, MetaError> {
        let mut inode = self.inode(ino)?;
        // Validate everything, and the count the patch leaves, first.
        let mut names: std::collections::BTreeSet<(String, String)> = props_of(&self.props, ino)?
            .into_iter()
            .map(|p| (p.namespace.unwrap_or_default(), p.name))
            .collect();
        for (set, p) in &patch {
            if p.name.is_empty() || p.name.len() > 1024 {
                return Err(MetaError::Invalid(
                    "a property name is empty or too long".into(),
                ));
            }
            if p.namespace.as_ref().is_some_and(|n| n.len() > 1024) {
                return Err(MetaError::Invalid(
                    "a property namespace is too long".into(),
                ));
            }
            let size = p.xml.as_ref().map_or(0, Vec::len);
            if size > MAX_PROP_BYTES {
                return Err(MetaError::Invalid(format!(
                    "property {} is {size} bytes; the limit is {MAX_PROP_BYTES}",
                    p.name
                )));
            }
            let k = (p.namespace.clone().unwrap_or_default(), p.name.clone());
            if *set {
                names.insert(k);
            } else {
                names.remove(&k);
            }
        }
        if names.len() > MAX_PROPS {
            return Err(MetaError::Invalid(format!(
                "a resource keeps at most {MAX_PROPS} dead properties"
            )));
        }
        for (set, p) in patch {
            let ns = p.namespace.unwrap_or_default();
            self.wrote()?;
            if set {
                let v = StoredProp {
                    prefix: p.prefix,
                    xml: p.xml,
                };
                self.props
                    .insert((ino, ns.as_str(), p.name.as_str()), enc(&v).as_slice())
                    .map_err(storage)?;
            } else {
                self.props
                    .remove((ino, ns.as_str(), p.name.as_str()))
                    .map_err(storage)?;
            }
        }
        if let Some(m) = mtime {
            inode.mtime = m;
            inode.ctime = now;
            inode.version = self.tick()?;
            self.put(&inode)?;
        }
        Ok(Outcome::Done)
    }

    pub(super) fn copy_props(&mut self, from: u64, to: u64) -> Result<Outcome, MetaError> {
        self.inode(to)?;
        let props = props_of(&self.props, from)?;
        self.drop_props(to)?;
        for p in props {
            let ns = p.namespace.unwrap_or_default();
            let v = StoredProp {
                prefix: p.prefix,
                xml: p.xml,
            };
            self.wrote()?;
            self.props
                .insert((to, ns.as_str(), p.name.as_str()), enc(&v).as_slice())
                .map_err(storage)?;
        }
        Ok(Outcome::Done)
    }
}
