//! Format versions of the tables in a data file (pure logic; each store
//! keeps the versions in a table of its own).
//!
//! Every table a store writes has a version, recorded when the table is
//! created. A later build that changes a table's records bumps its version
//! and either reads both or migrates; until then, a file whose versions
//! differ from this build's is refused with a message, never misread.

/// Checks the versions `recorded` in `file` against the ones this build
/// reads (`expected`), given the tables the file already has. Returns the
/// versions to record for tables that are new in this file.
pub fn check(
    file: &str,
    recorded: &[(String, u32)],
    existing_tables: &[String],
    expected: &[(&'static str, u32)],
) -> Result<Vec<(&'static str, u32)>, String> {
    for (table, version) in recorded {
        match expected.iter().find(|(t, _)| t == table) {
            None => {
                return Err(format!(
                    "{file}: table {table:?} (format {version}) is unknown to this build of Tessera; \
                     was it written by a newer one?"
                ));
            }
            Some((_, want)) if want < version => {
                return Err(format!(
                    "{file}: table {table:?} is format {version}, written by a newer Tessera; \
                     this build reads format {want}"
                ));
            }
            Some((_, want)) if want > version => {
                return Err(format!(
                    "{file}: table {table:?} is format {version}, written by an older Tessera; \
                     this build reads format {want} and has no migration from it"
                ));
            }
            Some(_) => {}
        }
    }
    let mut new = Vec::new();
    for &(table, version) in expected {
        if recorded.iter().any(|(t, _)| t == table) {
            continue;
        }
        if existing_tables.iter().any(|t| t == table) {
            return Err(format!(
                "{file}: table {table:?} was written by an older Tessera that recorded no \
                 format versions; this build reads format {version} and cannot read it"
            ));
        }
        new.push((table, version));
    }
    Ok(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WANT: &[(&str, u32)] = &[("a", 1), ("b", 2)];

    fn rec(v: &[(&str, u32)]) -> Vec<(String, u32)> {
        v.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    #[test]
    fn versions() {
        // A new file records every table.
        assert_eq!(check("f", &[], &[], WANT).unwrap(), WANT.to_vec());
        // A file of this build records nothing more.
        let all = rec(WANT);
        let tables = vec!["a".to_string(), "b".to_string()];
        assert!(check("f", &all, &tables, WANT).unwrap().is_empty());
        // A table added by this build is recorded.
        assert_eq!(
            check("f", &rec(&[("a", 1)]), &tables[..1], WANT).unwrap(),
            [("b", 2)]
        );
        // Newer, older, unknown, unrecorded: refused, saying why.
        let e = check("f", &rec(&[("a", 2)]), &[], WANT).unwrap_err();
        assert!(e.contains("newer"), "{e}");
        let e = check("f", &rec(&[("b", 1)]), &[], WANT).unwrap_err();
        assert!(e.contains("older"), "{e}");
        let e = check("f", &rec(&[("z", 1)]), &[], WANT).unwrap_err();
        assert!(e.contains("unknown"), "{e}");
        let e = check("f", &[], &tables, WANT).unwrap_err();
        assert!(e.contains("no") && e.contains("format versions"), "{e}");
    }
}
