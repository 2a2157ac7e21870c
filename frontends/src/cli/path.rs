//! Remote paths: absolute, or relative to a current directory; `.` and
//! `..` resolved; escaped for URLs.

use super::CliError;

/// A normalized absolute remote path: "/" or "/a/b" (no trailing slash).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RemotePath(String);

impl RemotePath {
    pub fn root() -> RemotePath {
        RemotePath("/".into())
    }

    /// `input` resolved against `cwd`: absolute when it starts with `/`.
    pub fn resolve(cwd: &RemotePath, input: &str) -> Result<RemotePath, CliError> {
        if input.contains('\0') {
            return Err(CliError::usage(format!(
                "{input:?}: a path may not hold NUL"
            )));
        }
        let mut parts: Vec<&str> = if input.starts_with('/') {
            Vec::new()
        } else {
            cwd.components().collect()
        };
        for c in input.split('/') {
            match c {
                "" | "." => {}
                ".." => {
                    parts.pop();
                }
                c if c.len() > 255 => {
                    let start: String = c.chars().take(20).collect();
                    return Err(CliError::usage(format!(
                        "the name {start:?}… is longer than 255 bytes"
                    )));
                }
                c => parts.push(c),
            }
        }
        Ok(RemotePath(format!("/{}", parts.join("/"))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_root(&self) -> bool {
        self.0 == "/"
    }

    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }

    /// The last component ("" for the root).
    pub fn name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or("")
    }

    pub fn parent(&self) -> RemotePath {
        match self.0.rfind('/') {
            Some(0) | None => RemotePath::root(),
            Some(i) => RemotePath(self.0[..i].to_string()),
        }
    }

    /// This path with `name` appended.
    pub fn join(&self, name: &str) -> RemotePath {
        if self.is_root() {
            RemotePath(format!("/{name}"))
        } else {
            RemotePath(format!("{}/{name}", self.0))
        }
    }

    /// Percent-escaped for a URL, `/` kept.
    pub fn escaped(&self) -> String {
        let mut out = String::with_capacity(self.0.len());
        for b in self.0.bytes() {
            if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
                out.push(b as char);
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        }
        out
    }

    /// `self` relative to `base` ("" when equal), if inside it.
    pub fn strip(&self, base: &RemotePath) -> Option<&str> {
        if base.is_root() {
            return Some(self.0.trim_start_matches('/'));
        }
        let rest = self.0.strip_prefix(&base.0)?;
        if rest.is_empty() {
            Some("")
        } else {
            rest.strip_prefix('/')
        }
    }
}

impl std::fmt::Display for RemotePath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Percent-decoding (invalid escapes kept as they are).
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(cwd: &str, p: &str) -> String {
        let cwd = RemotePath::resolve(&RemotePath::root(), cwd).unwrap();
        RemotePath::resolve(&cwd, p).unwrap().0
    }

    #[test]
    fn paths_resolve_against_the_current_directory() {
        assert_eq!(r("/", "a/b"), "/a/b");
        assert_eq!(r("/x/y", "a"), "/x/y/a");
        assert_eq!(r("/x/y", "/a/./b/"), "/a/b");
        assert_eq!(r("/x/y", ".."), "/x");
        assert_eq!(r("/x", "../../.."), "/");
        assert_eq!(r("/", ""), "/");
        assert!(RemotePath::resolve(&RemotePath::root(), "a\0b").is_err());
        assert!(RemotePath::resolve(&RemotePath::root(), &"n".repeat(256)).is_err());
    }

    #[test]
    fn names_are_escaped_and_unescaped() {
        let p = RemotePath::resolve(&RemotePath::root(), "/a b/é%#?").unwrap();
        assert_eq!(p.escaped(), "/a%20b/%C3%A9%25%23%3F");
        assert_eq!(unescape(&p.escaped()), p.as_str());
        assert_eq!(unescape("%zz%4"), "%zz%4");
        assert_eq!(unescape("%é"), "%é");
        assert_eq!(p.parent().as_str(), "/a b");
        assert_eq!(p.name(), "é%#?");
        let base = RemotePath::resolve(&RemotePath::root(), "/a b").unwrap();
        assert_eq!(p.strip(&base), Some("é%#?"));
        assert_eq!(base.strip(&p), None);
        assert_eq!(p.strip(&RemotePath::root()), Some("a b/é%#?"));
    }
}
