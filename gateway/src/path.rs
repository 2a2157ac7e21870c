//! Paths as front ends give them: `/a/b/c`, already percent-decoded.

use tessera_meta::MAX_NAME;

use crate::error::{Error, Result};

/// Splits a path into validated components. `.` and empty components are
/// dropped, `..` goes up one level; a path that climbs above the root, holds
/// a NUL, or has a component over 255 bytes is refused.
pub fn split_path(path: &str) -> Result<Vec<String>> {
    if path.contains('\0') {
        return Err(Error::InvalidPath("the path contains a NUL byte".into()));
    }
    let mut out: Vec<String> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if out.pop().is_none() {
                    return Err(Error::InvalidPath(format!(
                        "{path:?} climbs above the root"
                    )));
                }
            }
            c if c.len() > MAX_NAME => {
                return Err(Error::InvalidPath(format!(
                    "a name of {} bytes is longer than {MAX_NAME}",
                    c.len()
                )));
            }
            c => out.push(c.to_string()),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_and_validates() {
        assert_eq!(split_path("/").unwrap(), Vec::<String>::new());
        assert_eq!(split_path("").unwrap(), Vec::<String>::new());
        assert_eq!(split_path("/a//b/./c/").unwrap(), ["a", "b", "c"]);
        assert_eq!(split_path("/a/b/../c").unwrap(), ["a", "c"]);
        assert!(matches!(split_path("/.."), Err(Error::InvalidPath(_))));
        assert!(matches!(
            split_path("/a/../../etc"),
            Err(Error::InvalidPath(_))
        ));
        assert!(matches!(split_path("/a\0b"), Err(Error::InvalidPath(_))));
        assert!(split_path(&format!("/{}", "x".repeat(255))).is_ok());
        assert!(matches!(
            split_path(&format!("/{}", "x".repeat(256))),
            Err(Error::InvalidPath(_))
        ));
    }
}
