//! Cluster settings: how many copies (R), how many acknowledgements a write
//! needs (W), how many answers a read needs (Q).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub replicas: u32,
    pub write_quorum: u32,
    pub read_quorum: u32,
}

/// The most copies a cluster may keep.
pub const MAX_REPLICAS: u32 = 16;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            replicas: 2,
            write_quorum: 2,
            read_quorum: 1,
        }
    }
}

impl Settings {
    /// Checks that the settings can work: every count at least 1, no quorum
    /// larger than R, and `W + Q > R` so that every read meets the latest
    /// acknowledged write.
    pub fn validate(&self) -> Result<(), String> {
        let Settings {
            replicas: r,
            write_quorum: w,
            read_quorum: q,
        } = *self;
        if r == 0 || w == 0 || q == 0 {
            return Err(format!(
                "replicas ({r}), write quorum ({w}) and read quorum ({q}) must all be at least 1"
            ));
        }
        if r > MAX_REPLICAS {
            return Err(format!("replicas ({r}) may be at most {MAX_REPLICAS}"));
        }
        if w > r {
            return Err(format!(
                "write quorum ({w}) cannot exceed the number of replicas ({r})"
            ));
        }
        if q > r {
            return Err(format!(
                "read quorum ({q}) cannot exceed the number of replicas ({r})"
            ));
        }
        if w + q <= r {
            return Err(format!(
                "write quorum + read quorum must exceed replicas (W={w} + Q={q} <= R={r}), \
                 or a read could miss the latest acknowledged write"
            ));
        }
        Ok(())
    }

    /// Checks that `datanodes` slots are enough to hold R distinct copies.
    pub fn validate_for(&self, datanodes: u32) -> Result<(), String> {
        self.validate()?;
        if datanodes < self.replicas {
            return Err(format!(
                "{datanodes} datanodes cannot hold {} distinct replicas of each block",
                self.replicas
            ));
        }
        Ok(())
    }
}

impl std::fmt::Display for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "R={} W={} Q={}",
            self.replicas, self.write_quorum, self.read_quorum
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(r: u32, w: u32, q: u32) -> Settings {
        Settings {
            replicas: r,
            write_quorum: w,
            read_quorum: q,
        }
    }

    #[test]
    fn accepts_overlapping_quorums() {
        for (r, w, q) in [
            (1, 1, 1),
            (2, 2, 1),
            (2, 1, 2),
            (3, 2, 2),
            (3, 3, 1),
            (5, 3, 3),
        ] {
            assert_eq!(s(r, w, q).validate(), Ok(()), "R={r} W={w} Q={q}");
        }
        assert!(Settings::default().validate().is_ok());
    }

    #[test]
    fn refuses_impossible_settings() {
        for (r, w, q, needle) in [
            (2, 1, 1, "must exceed"),
            (3, 2, 1, "must exceed"),
            (3, 1, 1, "must exceed"),
            (2, 3, 1, "cannot exceed"),
            (2, 2, 3, "cannot exceed"),
            (0, 1, 1, "at least 1"),
            (2, 0, 2, "at least 1"),
            (2, 2, 0, "at least 1"),
            (17, 17, 1, "at most"),
        ] {
            let err = s(r, w, q).validate().unwrap_err();
            assert!(err.contains(needle), "R={r} W={w} Q={q}: {err}");
        }
        assert!(
            s(3, 2, 2)
                .validate_for(2)
                .unwrap_err()
                .contains("cannot hold")
        );
        assert!(s(3, 2, 2).validate_for(3).is_ok());
    }
}
