//! The cluster secret: shared text that every internal call carries.

use std::fmt;
use std::path::{Path, PathBuf};

/// Minimum length of a cluster secret, in characters.
pub const MIN_LEN: usize = 16;

#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read secret file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write secret file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the cluster secret must be at least {MIN_LEN} characters (got {len})")]
    TooShort { len: usize },
    #[error("the cluster secret must be one line of visible characters")]
    BadCharacters,
    #[error("no cluster secret: pass --secret-file FILE or set TESSERA_SECRET")]
    Missing,
}

impl Secret {
    pub fn new(text: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        if text.chars().count() < MIN_LEN {
            return Err(SecretError::TooShort {
                len: text.chars().count(),
            });
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SecretError::BadCharacters);
        }
        Ok(Secret(text.to_string()))
    }

    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::new(&text)
    }

    /// The secret from `--secret-file`, else from `TESSERA_SECRET` (given as `env`).
    pub fn resolve(file: Option<&Path>, env: Option<&str>) -> Result<Self, SecretError> {
        match (file, env) {
            (Some(f), _) => Self::from_file(f),
            (None, Some(text)) => Self::new(text),
            (None, None) => Err(SecretError::Missing),
        }
    }

    /// Reads the secret at `path`, or makes a fresh random one there (mode 0600).
    pub fn load_or_create(path: &Path) -> Result<Self, SecretError> {
        if path.exists() {
            return Self::from_file(path);
        }
        let mut raw = [0u8; 24];
        getrandom::fill(&mut raw).expect("the OS random source is available");
        let text: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let write_err = |source| SecretError::Write {
            path: path.to_path_buf(),
            source,
        };
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(write_err)?;
            f.write_all(text.as_bytes()).map_err(write_err)?;
            f.write_all(b"\n").map_err(write_err)?;
            f.sync_all().map_err(write_err)?;
        }
        Self::new(&text)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with a presented value.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let ours = self.0.as_bytes();
        if ours.len() != presented.len() {
            return false;
        }
        ours.iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_and_creates() {
        assert!(matches!(
            Secret::new("short"),
            Err(SecretError::TooShort { len: 5 })
        ));
        assert!(matches!(
            Secret::new("has a space in the middle"),
            Err(SecretError::BadCharacters)
        ));
        let s = Secret::new("  0123456789abcdef\n").unwrap();
        assert!(s.matches(b"0123456789abcdef"));
        assert!(!s.matches(b"0123456789abcdeX"));
        assert!(!format!("{s:?}").contains("0123"));

        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        let a = Secret::load_or_create(&p).unwrap();
        let b = Secret::load_or_create(&p).unwrap();
        assert_eq!(a, b);
        assert!(matches!(
            Secret::resolve(None, None),
            Err(SecretError::Missing)
        ));
    }
}
