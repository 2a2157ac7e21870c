//! dav-server's lock system over meta: WebDAV write locks (RFC 4918 §6-7)
//! live in meta, so every gateway sees them, they survive a gateway
//! restart, and meta's clock expires them.
//!
//! A request asks meta about locks at most once for its own path: the first
//! look at the path (see [`DavFs`]) brings back every live lock that covers
//! it or lies below it, and the checks dav-server makes are answered from
//! that. Taking, refreshing and releasing a lock are changes in meta, which
//! decides conflicts atomically.

use std::time::{Duration, SystemTime};

use dav_server::davpath::DavPath;
use dav_server::ls::{DavLock, DavLockSystem, LsFuture};
use futures::FutureExt;
use tessera_gateway::Error;
use tessera_meta::api::CallError;
use tessera_meta::{LockInfo, LockRequest, MetaError};
use xmltree::Element;

use super::davfs::{DavFs, lock_key};

/// Locks taken without a timeout, or asking for more, last this long
/// (RFC 4918 §10.7 lets the server choose). A client refreshes to keep one.
pub const MAX_LOCK_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The lock system of one request; it shares what the request has seen of
/// meta with the request's [`DavFs`].
#[derive(Clone)]
pub struct MetaLs {
    dav: DavFs,
    /// The authenticated user of the request, if any.
    principal: Option<String>,
}

impl std::fmt::Debug for MetaLs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetaLs")
    }
}

impl MetaLs {
    pub fn new(dav: DavFs, principal: Option<String>) -> Self {
        MetaLs { dav, principal }
    }
}

/// A fresh lock token: `opaquelocktoken:` and a random UUID (RFC 4918 §20.7).
fn new_token() -> String {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b).expect("the OS random source is available");
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = |r: std::ops::Range<usize>| -> String {
        b[r].iter().map(|x| format!("{x:02x}")).collect::<String>()
    };
    format!(
        "opaquelocktoken:{}-{}-{}-{}-{}",
        h(0..4),
        h(4..6),
        h(6..8),
        h(8..10),
        h(10..16)
    )
}

/// dav-server's view of a lock meta keeps.
pub fn to_dav_lock(l: &LockInfo) -> DavLock {
    let path = DavPath::new(&l.href)
        .or_else(|_| DavPath::new("/"))
        .expect("\"/\" is a path");
    let remaining = Duration::from_secs(l.remaining_s);
    DavLock {
        token: l.token.clone(),
        path: Box::new(path),
        principal: l.principal.clone(),
        owner: l
            .owner
            .as_deref()
            .and_then(|x| Element::parse(x.as_bytes()).ok())
            .map(Box::new),
        timeout_at: Some(SystemTime::now() + remaining),
        timeout: Some(remaining),
        shared: l.shared,
        deep: l.deep,
    }
}

/// Whether `lock` (on `lock.path`) applies to the resource at `key`: a lock
/// on the resource itself, or a deep lock on one of its ancestors.
fn covers(lock: &LockInfo, key: &str) -> bool {
    lock.path == key || (lock.deep && is_below(key, &lock.path))
}

/// Whether `key` lies strictly below `ancestor`.
pub fn is_below(key: &str, ancestor: &str) -> bool {
    if ancestor.is_empty() {
        return !key.is_empty();
    }
    key.len() > ancestor.len()
        && key.starts_with(ancestor)
        && key.as_bytes()[ancestor.len()] == b'/'
}

/// Whether the caller holds `lock`: it submitted the token, and it is the
/// lock's principal (unless principals are not compared).
fn holds(
    lock: &LockInfo,
    principal: Option<&str>,
    ignore_principal: bool,
    tokens: &[String],
) -> bool {
    tokens.iter().any(|t| t == &lock.token)
        && (ignore_principal || principal == lock.principal.as_deref())
}

/// The check dav-server asks for (the semantics of its in-memory lock
/// system): every lock applying to `key` must be held, except that one held
/// lock is enough among shared ones; with `deep`, every lock below `key`
/// must be held too.
pub fn check_locks<'l>(
    locks: &'l [LockInfo],
    key: &str,
    principal: Option<&str>,
    ignore_principal: bool,
    deep: bool,
    tokens: &[String],
) -> Result<(), &'l LockInfo> {
    let mut held = false;
    let mut first_shared: Option<&LockInfo> = None;
    for l in locks.iter().filter(|l| covers(l, key)) {
        if holds(l, principal, ignore_principal, tokens) {
            held = true;
        } else if !l.shared {
            return Err(l);
        } else {
            first_shared.get_or_insert(l);
        }
    }
    if !held && let Some(l) = first_shared {
        return Err(l);
    }
    if deep
        && let Some(l) = locks
            .iter()
            .find(|l| is_below(&l.path, key) && !holds(l, principal, ignore_principal, tokens))
    {
        return Err(l);
    }
    Ok(())
}

fn timeout_s(timeout: Option<Duration>) -> u64 {
    timeout
        .unwrap_or(MAX_LOCK_TIMEOUT)
        .min(MAX_LOCK_TIMEOUT)
        .as_secs()
        .max(1)
}

impl MetaLs {
    async fn lock_impl(
        &self,
        path: &DavPath,
        principal: Option<&str>,
        owner: Option<&Element>,
        timeout: Option<Duration>,
        shared: bool,
        deep: bool,
    ) -> Result<Result<DavLock, DavLock>, Error> {
        let key = lock_key(path)?;
        let owner = owner.map(owner_xml).transpose()?;
        let req = LockRequest {
            token: new_token(),
            path: key,
            href: path.as_url_string(),
            principal: principal.map(str::to_string),
            owner,
            shared,
            deep,
            timeout_s: timeout_s(timeout),
        };
        self.dav.forget_locks();
        match self.dav.fs().meta().lock(req).await {
            Ok(l) => Ok(Ok(to_dav_lock(&l))),
            Err(CallError::Meta(MetaError::Locked(l))) => Ok(Err(to_dav_lock(&l))),
            Err(e) => Err(e.into()),
        }
    }
}

impl DavLockSystem for MetaLs {
    fn lock(
        &'_ self,
        path: &DavPath,
        principal: Option<&str>,
        owner: Option<&Element>,
        timeout: Option<Duration>,
        shared: bool,
        deep: bool,
    ) -> LsFuture<'_, Result<DavLock, DavLock>> {
        let path = path.clone();
        let principal = principal.map(str::to_string);
        let owner = owner.cloned();
        async move {
            match self
                .lock_impl(
                    &path,
                    principal.as_deref(),
                    owner.as_ref(),
                    timeout,
                    shared,
                    deep,
                )
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    // dav-server can only answer "locked" here; say why.
                    tracing::warn!(error = %e, "LOCK failed");
                    Err(unavailable(&path))
                }
            }
        }
        .boxed()
    }

    fn unlock(&'_ self, path: &DavPath, token: &str) -> LsFuture<'_, Result<(), ()>> {
        let path = path.clone();
        let token = token.to_string();
        async move {
            let key = lock_key(&path).map_err(|_| ())?;
            self.dav.forget_locks();
            self.dav
                .fs()
                .meta()
                .unlock(&key, &token, self.principal.as_deref())
                .await
                .map_err(|e| tracing::debug!(error = %e, "UNLOCK refused"))
        }
        .boxed()
    }

    fn refresh(
        &'_ self,
        path: &DavPath,
        token: &str,
        timeout: Option<Duration>,
    ) -> LsFuture<'_, Result<DavLock, ()>> {
        let path = path.clone();
        let token = token.to_string();
        async move {
            let key = lock_key(&path).map_err(|_| ())?;
            self.dav.forget_locks();
            self.dav
                .fs()
                .meta()
                .refresh_lock(&key, &token, timeout_s(timeout), self.principal.as_deref())
                .await
                .map(|l| to_dav_lock(&l))
                .map_err(|e| tracing::debug!(error = %e, "lock refresh refused"))
        }
        .boxed()
    }

    fn check(
        &'_ self,
        path: &DavPath,
        principal: Option<&str>,
        ignore_principal: bool,
        deep: bool,
        submitted_tokens: &[String],
    ) -> LsFuture<'_, Result<(), DavLock>> {
        let path = path.clone();
        let principal = principal.map(str::to_string);
        let tokens = submitted_tokens.to_vec();
        async move {
            let (key, locks) = match self.dav.locks_around(&path).await {
                Ok(v) => v,
                // Meta cannot be asked: refuse the write rather than
                // write past a lock nobody could see.
                Err(_) => return Err(unavailable(&path)),
            };
            check_locks(
                &locks,
                &key,
                principal.as_deref(),
                ignore_principal,
                deep,
                &tokens,
            )
            .map_err(to_dav_lock)
        }
        .boxed()
    }

    fn discover(&'_ self, path: &DavPath) -> LsFuture<'_, Vec<DavLock>> {
        let path = path.clone();
        async move {
            match self.dav.locks_around(&path).await {
                Ok((key, locks)) => locks
                    .iter()
                    .filter(|l| covers(l, &key))
                    .map(to_dav_lock)
                    .collect(),
                Err(_) => Vec::new(),
            }
        }
        .boxed()
    }

    fn delete(&'_ self, path: &DavPath) -> LsFuture<'_, Result<(), ()>> {
        let path = path.clone();
        async move {
            let key = lock_key(&path).map_err(|_| ())?;
            self.dav.forget_locks();
            self.dav.fs().meta().drop_locks(&key).await.map_err(
                |e| tracing::warn!(error = %e, "dropping the locks of a removed path failed"),
            )
        }
        .boxed()
    }
}

/// The owner element as XML that parses back on its own.
fn owner_xml(o: &Element) -> Result<String, Error> {
    // dav-server renames the element `D:owner` whatever prefix the client
    // used: declare it, so the stored XML parses.
    let mut o = o.clone();
    if let (Some(p), Some(u)) = (o.prefix.clone(), o.namespace.clone()) {
        o.namespaces
            .get_or_insert_with(xmltree::Namespace::empty)
            .put(p, u);
    }
    let mut buf = Vec::new();
    o.write(&mut buf)
        .map_err(|e| Error::Invalid(format!("lock owner: {e}")))?;
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

/// A stand-in "conflicting lock" when meta could not be asked: dav-server
/// turns it into 423, the safe answer.
fn unavailable(path: &DavPath) -> DavLock {
    DavLock {
        token: "opaquelocktoken:00000000-0000-0000-0000-000000000000".into(),
        path: Box::new(path.clone()),
        principal: None,
        owner: None,
        timeout_at: None,
        timeout: None,
        shared: false,
        deep: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock(path: &str, token: &str, shared: bool, deep: bool) -> LockInfo {
        LockInfo {
            token: token.into(),
            path: path.into(),
            href: format!("/{path}"),
            principal: None,
            owner: None,
            shared,
            deep,
            timeout_s: 60,
            remaining_s: 60,
        }
    }

    #[test]
    fn ancestry() {
        assert!(is_below("a/b", "a"));
        assert!(is_below("a", ""));
        assert!(!is_below("ab", "a"));
        assert!(!is_below("a", "a"));
        assert!(!is_below("", ""));
    }

    #[test]
    fn checks_follow_scope_depth_and_tokens() {
        let none: &[String] = &[];
        let t = |s: &str| vec![s.to_string()];
        // An exclusive deep lock on a collection covers its members.
        let locks = vec![lock("c", "x", false, true)];
        assert!(check_locks(&locks, "c/f", None, false, false, none).is_err());
        assert!(check_locks(&locks, "c/f", None, false, false, &t("x")).is_ok());
        assert!(check_locks(&locks, "d", None, false, false, none).is_ok());
        // A depth-0 lock does not.
        let locks = vec![lock("c", "x", false, false)];
        assert!(check_locks(&locks, "c/f", None, false, false, none).is_ok());
        assert!(check_locks(&locks, "c", None, false, false, none).is_err());
        // Deleting a parent needs the tokens of locks below it.
        let locks = vec![lock("c/f", "x", false, false)];
        assert!(check_locks(&locks, "c", None, false, true, none).is_err());
        assert!(check_locks(&locks, "c", None, false, true, &t("x")).is_ok());
        assert!(check_locks(&locks, "c", None, false, false, none).is_ok());
        // One of two shared locks is enough.
        let locks = vec![lock("f", "x", true, false), lock("f", "y", true, false)];
        assert!(check_locks(&locks, "f", None, false, false, &t("y")).is_ok());
        assert!(check_locks(&locks, "f", None, false, false, none).is_err());
        // Another principal's token does not count unless asked to ignore it.
        let mut l = lock("f", "x", false, false);
        l.principal = Some("alice".into());
        let locks = vec![l];
        assert!(check_locks(&locks, "f", Some("bob"), false, false, &t("x")).is_err());
        assert!(check_locks(&locks, "f", Some("bob"), true, false, &t("x")).is_ok());
    }

    #[test]
    fn owners_keep_their_namespace() {
        // A default namespace, as litmus (neon) sends it.
        let body = br#"<lockinfo xmlns='DAV:'><owner>litmus <href>x</href></owner></lockinfo>"#;
        let tree = Element::parse(&body[..]).unwrap();
        let mut owner = tree.get_child("owner").unwrap().clone();
        owner.prefix = Some("D".into());
        let stored = owner_xml(&owner).unwrap();
        let back = Element::parse(stored.as_bytes()).unwrap();
        assert_eq!(back.name, "owner");
        assert_eq!(back.namespace.as_deref(), Some("DAV:"));
        assert_eq!(
            back.get_child("href").and_then(|h| h.get_text()).as_deref(),
            Some("x")
        );
    }

    #[test]
    fn tokens_are_uuids() {
        let a = new_token();
        assert_eq!(a.len(), "opaquelocktoken:".len() + 36);
        assert_ne!(a, new_token());
    }
}
