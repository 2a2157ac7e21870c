//! Property tests of path parsing: any string is split into valid names or
//! refused, never a panic; what is accepted never climbs above the root,
//! holds no NUL, no empty, `.` or `..` name, and no name over 255 bytes.

use proptest::prelude::*;
use tessera_gateway::split_path;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn any_path_splits_into_valid_names_or_is_refused(
        parts in proptest::collection::vec(prop_oneof![
            Just("..".to_string()),
            Just(".".to_string()),
            Just(String::new()),
            ".{0,8}",
            "[a-z]{250,260}",
        ], 0..12),
    ) {
        let path = parts.join("/");
        if let Ok(names) = split_path(&path) {
            for n in &names {
                prop_assert!(!n.is_empty() && n != "." && n != "..");
                prop_assert!(!n.contains('/') && !n.contains('\0'));
                prop_assert!(n.len() <= 255);
            }
            // Splitting what was accepted again gives the same names.
            let again = split_path(&format!("/{}", names.join("/"))).unwrap();
            prop_assert_eq!(again, names);
        } else {
            prop_assert!(
                path.contains('\0')
                    || path.split('/').any(|p| p.len() > 255)
                    || parts.iter().any(|p| p == "..")
            );
        }
    }
}
