//! HTTP Basic authentication against a users file of argon2 hashes, and
//! TLS via rustls.
//!
//! The users file has one `name:$argon2id$...` line per user (`#` starts a
//! comment); `tessera user add NAME --users FILE` writes it. The gateway
//! rereads it when it changes, so adding a user needs no restart.
//!
//! Verifying an argon2 hash takes tens of milliseconds of CPU, so it runs
//! on the blocking pool, and a verified name and password are remembered
//! (as a SHA-256, never the password) for a few minutes. Failures are
//! counted per client address: past [`MAX_FAILURES`] in [`FAILURE_WINDOW`]
//! an address is answered 429 without a check, so passwords cannot be
//! guessed at speed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};

/// Failed attempts an address may make within [`FAILURE_WINDOW`].
pub const MAX_FAILURES: u32 = 10;
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How long a verified name and password are remembered.
const REMEMBER: Duration = Duration::from_secs(300);
/// How often the users file is checked for changes (by size, inode and
/// mtime), and how often it is reread regardless.
const RECHECK: Duration = Duration::from_secs(2);
const REREAD: Duration = Duration::from_secs(60);
/// Password checks running at once (each takes ~19 MiB and a core for
/// tens of milliseconds).
const CONCURRENT_CHECKS: usize = 4;
/// The realm in `WWW-Authenticate`.
pub const REALM: &str = "Tessera";

/// Hashes `password` for the users file (argon2id, random salt).
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing the password failed: {e}"))
}

/// Reads a users file: name -> argon2 hash.
pub fn read_users(path: &Path) -> Result<HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the users file {}: {e}", path.display()))?;
    let mut users = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, hash)) = line.split_once(':') else {
            return Err(format!(
                "{}:{}: expected NAME:ARGON2-HASH",
                path.display(),
                n + 1
            ));
        };
        PasswordHash::new(hash).map_err(|e| {
            format!(
                "{}:{}: the hash of {name:?} is not a PHC string ({e})",
                path.display(),
                n + 1
            )
        })?;
        users.insert(name.to_string(), hash.to_string());
    }
    Ok(users)
}

/// Adds or replaces `name` in the users file at `path` (created 0600 if
/// absent), atomically. Returns whether the user existed.
pub fn add_user(path: &Path, name: &str, password: &str) -> Result<bool, String> {
    if name.is_empty() || name.contains(':') || name.chars().any(char::is_control) {
        return Err(format!(
            "bad user name {name:?}: empty, or contains ':' or a control character"
        ));
    }
    if password.is_empty() {
        return Err("refusing an empty password".into());
    }
    let existing = if path.exists() {
        std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the users file {}: {e}", path.display()))?
    } else {
        String::new()
    };
    read_users(path).or_else(|e| {
        if path.exists() {
            Err(e)
        } else {
            Ok(HashMap::new())
        }
    })?;
    let hash = hash_password(password)?;
    let mut found = false;
    let mut out = String::new();
    for line in existing.lines() {
        if line.split_once(':').is_some_and(|(n, _)| n.trim() == name) {
            found = true;
            out.push_str(&format!("{name}:{hash}\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !found {
        out.push_str(&format!("{name}:{hash}\n"));
    }
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
        f.write_all(out.as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", tmp.display()))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| format!("cannot replace {}: {e}", path.display()))?;
    Ok(found)
}

struct Users {
    path: PathBuf,
    by_name: HashMap<String, String>,
    stamp: Option<Stamp>,
    checked: Instant,
    read: Instant,
}

/// What tells that the users file changed: size, inode, mtime.
type Stamp = (u64, u64, SystemTime);

/// The authenticator of one gateway.
pub struct Auth {
    users: Mutex<Users>,
    /// SHA-256 of "name:password" -> (name, the hash it was checked
    /// against, when). A hit counts only while the file still holds that
    /// hash for that name.
    verified: Mutex<HashMap<[u8; 32], (String, String, Instant)>>,
    /// Client address -> (attempts, window start).
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    checks: tokio::sync::Semaphore,
    /// Checked against when the name is unknown, so that an unknown name
    /// takes as long to refuse as a wrong password.
    dummy: String,
}

/// Why a request was not let in.
#[derive(Debug, PartialEq, Eq)]
pub enum Denied {
    /// No or wrong credentials: 401 with a challenge.
    Unauthorized,
    /// Too many failures from this address: 429.
    TooMany,
}

impl Denied {
    pub fn status(&self) -> StatusCode {
        match self {
            Denied::Unauthorized => StatusCode::UNAUTHORIZED,
            Denied::TooMany => StatusCode::TOO_MANY_REQUESTS,
        }
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.ino(), m.modified().ok()?))
}

/// `(name, password)` of a `Basic` Authorization header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    use base64::Engine;
    let v = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_string(), password.to_string()))
}

impl Auth {
    /// Loads the users file at `path`.
    pub fn load(path: &Path) -> Result<Auth, String> {
        let by_name = read_users(path)?;
        Ok(Auth {
            users: Mutex::new(Users {
                path: path.to_path_buf(),
                by_name,
                stamp: stamp(path),
                checked: Instant::now(),
                read: Instant::now(),
            }),
            verified: Mutex::default(),
            failures: Mutex::default(),
            checks: tokio::sync::Semaphore::new(CONCURRENT_CHECKS),
            dummy: hash_password("no such user")?,
        })
    }

    /// The hash of `name`, rereading the file when it changed (and once a
    /// minute regardless). A file that became unreadable or malformed lets
    /// nobody in until it is fixed.
    fn hash_of(&self, name: &str) -> Option<String> {
        let mut u = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if u.checked.elapsed() >= RECHECK {
            u.checked = Instant::now();
            let now = stamp(&u.path);
            if now != u.stamp || u.read.elapsed() >= REREAD {
                u.read = Instant::now();
                u.stamp = now;
                match read_users(&u.path) {
                    Ok(by_name) => u.by_name = by_name,
                    Err(e) => {
                        tracing::error!(error = %e, "users file unusable: refusing every login until it is fixed");
                        u.by_name.clear();
                    }
                }
            }
        }
        u.by_name.get(name).cloned()
    }

    fn throttled(&self, ip: IpAddr) -> bool {
        let f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        f.get(&ip)
            .is_some_and(|(n, since)| *n >= MAX_FAILURES && since.elapsed() < FAILURE_WINDOW)
    }

    /// Counts an attempt from `ip` before its password is checked (so
    /// guesses sent in parallel all count); `false` when it is over the
    /// limit.
    fn attempt(&self, ip: IpAddr) -> bool {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if f.len() > 100_000 {
            f.retain(|_, (_, since)| since.elapsed() < FAILURE_WINDOW);
        }
        let e = f.entry(ip).or_insert((0, Instant::now()));
        if e.1.elapsed() >= FAILURE_WINDOW {
            *e = (0, Instant::now());
        }
        if e.0 >= MAX_FAILURES {
            return false;
        }
        e.0 += 1;
        true
    }

    /// A successful login does not count against its address.
    fn forgive(&self, ip: IpAddr) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = f.get_mut(&ip) {
            e.0 = e.0.saturating_sub(1);
        }
    }

    /// Lets a request in (returning its user) or says why not.
    pub async fn check(&self, headers: &HeaderMap, ip: IpAddr) -> Result<String, Denied> {
        if self.throttled(ip) {
            return Err(Denied::TooMany);
        }
        let Some((name, password)) = basic_credentials(headers) else {
            // No credentials is how every client starts: not a failure.
            return Err(Denied::Unauthorized);
        };
        let key: [u8; 32] = Sha256::digest(format!("{name}:{password}").as_bytes()).into();
        let hash = self.hash_of(&name);
        if let Some(h) = &hash {
            let v = self.verified.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((n, checked_against, at)) = v.get(&key)
                && *n == name
                && checked_against == h
                && at.elapsed() < REMEMBER
            {
                return Ok(name);
            }
        }
        if !self.attempt(ip) {
            return Err(Denied::TooMany);
        }
        let known = hash.is_some();
        let against = hash.clone().unwrap_or_else(|| self.dummy.clone());
        let verified = {
            let _permit = self
                .checks
                .acquire()
                .await
                .map_err(|_| Denied::Unauthorized)?;
            tokio::task::spawn_blocking(move || {
                PasswordHash::new(&against)
                    .map(|h| {
                        Argon2::default()
                            .verify_password(password.as_bytes(), &h)
                            .is_ok()
                    })
                    .unwrap_or(false)
            })
            .await
            .unwrap_or(false)
        };
        let Some(hash) = hash.filter(|_| verified && known) else {
            tracing::info!(%ip, user = %name, "authentication failed");
            return Err(Denied::Unauthorized);
        };
        self.forgive(ip);
        let mut v = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() > 10_000 {
            v.retain(|_, (_, _, at)| at.elapsed() < REMEMBER);
        }
        v.insert(key, (name.clone(), hash, Instant::now()));
        Ok(name)
    }
}

/// A TLS acceptor from PEM files: the certificate chain and its key.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read the certificate {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad certificate in {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!("no certificate in {}", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read the private key {}: {e}", key.display()))?;
    let mut config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("the certificate and key do not make a TLS identity: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

    fn basic(name: &str, password: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        let v = base64::engine::general_purpose::STANDARD.encode(format!("{name}:{password}"));
        h.insert(
            http::header::AUTHORIZATION,
            format!("Basic {v}").parse().unwrap(),
        );
        h
    }

    #[tokio::test]
    async fn users_file_checks_and_throttling() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        assert!(!add_user(&path, "alice", "correct horse").unwrap());
        assert!(
            add_user(&path, "alice", "battery staple").unwrap(),
            "replaced"
        );
        add_user(&path, "bob", "hunter2").unwrap();
        assert!(add_user(&path, "a:b", "x").is_err());
        assert!(add_user(&path, "carol", "").is_err());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("battery") && text.contains("$argon2id$"));

        let auth = Auth::load(&path).unwrap();
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(
            auth.check(&basic("alice", "battery staple"), ip).await,
            Ok("alice".into())
        );
        assert_eq!(
            auth.check(&basic("alice", "battery staple"), ip).await,
            Ok("alice".into())
        );
        assert_eq!(
            auth.check(&basic("alice", "correct horse"), ip).await,
            Err(Denied::Unauthorized),
            "the replaced password no longer works"
        );
        assert_eq!(
            auth.check(&HeaderMap::new(), ip).await,
            Err(Denied::Unauthorized)
        );
        // Guessing from one address is throttled; others are not.
        for i in 0..MAX_FAILURES {
            let _ = auth.check(&basic("bob", &format!("guess{i}")), ip).await;
        }
        assert_eq!(
            auth.check(&basic("bob", "hunter2"), ip).await,
            Err(Denied::TooMany)
        );
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert_eq!(
            auth.check(&basic("bob", "hunter2"), other).await,
            Ok("bob".into())
        );
        assert!(read_users(&dir.path().join("absent")).is_err());

        // A removed user is out at the next check, even if remembered.
        let auth = Auth::load(&path).unwrap();
        let ip3: IpAddr = "127.0.0.3".parse().unwrap();
        assert!(auth.check(&basic("bob", "hunter2"), ip3).await.is_ok());
        let alice_only = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .filter(|l| l.starts_with("alice:"))
            .map(|l| format!("{l}\n"))
            .collect::<String>();
        std::fs::write(&path, alice_only).unwrap();
        tokio::time::sleep(RECHECK).await;
        assert_eq!(
            auth.check(&basic("bob", "hunter2"), ip3).await,
            Err(Denied::Unauthorized)
        );
        // A broken file lets nobody in.
        std::fs::write(&path, "alice:nothash\n").unwrap();
        assert!(
            read_users(&path).is_err(),
            "a line that is not a hash is refused"
        );
        tokio::time::sleep(RECHECK).await;
        assert_eq!(
            auth.check(&basic("alice", "battery staple"), ip3).await,
            Err(Denied::Unauthorized)
        );
    }
}
