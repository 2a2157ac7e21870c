//! Open files: the inode a mount last saw of each, and the writes it holds
//! for it until they are flushed to the cluster in large batches.

use std::collections::BTreeMap;

/// Writes of one file not yet sent to the cluster: disjoint, non-adjacent
/// runs of bytes by offset. Later writes win over earlier ones.
#[derive(Debug, Default)]
pub struct WriteBuf {
    runs: BTreeMap<u64, Vec<u8>>,
    bytes: usize,
}

impl WriteBuf {
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// The end of the last run (0 when empty).
    pub fn end(&self) -> u64 {
        self.runs
            .last_key_value()
            .map(|(s, v)| s + v.len() as u64)
            .unwrap_or(0)
    }

    /// Writes `data` at `offset`, over anything held there. Appending to a
    /// run extends it in place, so a sequential stream costs one copy.
    pub fn insert(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        // The run that starts at or before `offset` and reaches it, if any.
        let host = self
            .runs
            .range(..=offset)
            .next_back()
            .filter(|(s, v)| *s + v.len() as u64 >= offset)
            .map(|(s, _)| *s);
        let start = host.unwrap_or(offset);
        let mut run = match host {
            Some(s) => self.runs.remove(&s).expect("host run"),
            None => Vec::new(),
        };
        self.bytes -= run.len();
        let at = (offset - start) as usize;
        if run.len() < at + data.len() {
            run.resize(at + data.len(), 0);
        }
        run[at..at + data.len()].copy_from_slice(data);
        // Absorb the runs that now touch or overlap it; their bytes past
        // `end` survive.
        let later: Vec<u64> = self.runs.range(offset..=end).map(|(s, _)| *s).collect();
        for s in later {
            let other = self.runs.remove(&s).expect("later run");
            self.bytes -= other.len();
            let other_end = s + other.len() as u64;
            if other_end > end {
                let skip = (end - s) as usize;
                run.extend_from_slice(&other[skip..]);
            }
        }
        self.bytes += run.len();
        self.runs.insert(start, run);
    }

    /// Puts back a run that failed to flush, under anything written since.
    pub fn insert_under(&mut self, offset: u64, data: &[u8]) {
        let newer = std::mem::take(self);
        self.insert(offset, data);
        for (s, v) in newer.runs {
            self.insert(s, &v);
        }
    }

    /// Drops everything at or past `size` (the file was truncated).
    pub fn truncate(&mut self, size: u64) {
        let tail: Vec<u64> = self.runs.range(..).map(|(s, _)| *s).collect();
        for s in tail {
            let v = self.runs.get_mut(&s).expect("run");
            let end = s + v.len() as u64;
            if s >= size {
                self.bytes -= v.len();
                self.runs.remove(&s);
            } else if end > size {
                self.bytes -= (end - size) as usize;
                v.truncate((size - s) as usize);
            }
        }
    }

    /// Takes every run, in offset order.
    pub fn take(&mut self) -> Vec<(u64, Vec<u8>)> {
        self.bytes = 0;
        std::mem::take(&mut self.runs).into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The buffer's content laid over a zeroed file, and which bytes it holds.
    fn image(b: &WriteBuf, len: usize) -> (Vec<u8>, Vec<bool>) {
        let mut out = vec![0u8; len];
        let mut held = vec![false; len];
        let mut last_end = None;
        for (s, v) in &b.runs {
            if let Some(e) = last_end {
                assert!(*s > e, "runs must be disjoint and not adjacent");
            }
            last_end = Some(s + v.len() as u64);
            for (i, x) in v.iter().enumerate() {
                out[*s as usize + i] = *x;
                held[*s as usize + i] = true;
            }
        }
        assert_eq!(b.bytes, b.runs.values().map(Vec::len).sum::<usize>());
        (out, held)
    }

    proptest! {
        #[test]
        fn matches_a_byte_model(ops in proptest::collection::vec((0u64..300, 1usize..80, any::<u8>(), 0u8..10), 1..60)) {
            let mut b = WriteBuf::default();
            let mut model = vec![0u8; 400];
            let mut held = vec![false; 400];
            for (off, len, byte, what) in ops {
                match what {
                    0 => {
                        b.truncate(off);
                        for i in off as usize..400 { held[i] = false; model[i] = 0; }
                    }
                    1 => {
                        let data = vec![byte; len];
                        b.insert_under(off, &data);
                        for i in off as usize..off as usize + len {
                            if !held[i] { model[i] = byte; held[i] = true; }
                        }
                    }
                    _ => {
                        let data: Vec<u8> = (0..len).map(|i| byte.wrapping_add(i as u8)).collect();
                        b.insert(off, &data);
                        for (i, x) in data.iter().enumerate() {
                            model[off as usize + i] = *x;
                            held[off as usize + i] = true;
                        }
                    }
                }
                let (img, h) = image(&b, 400);
                prop_assert_eq!(&h, &held);
                prop_assert_eq!(&img, &model);
            }
        }
    }

    #[test]
    fn a_sequential_stream_stays_one_run() {
        let mut b = WriteBuf::default();
        for i in 0..100u64 {
            b.insert(i * 4096, &[i as u8; 4096]);
        }
        assert_eq!(b.runs.len(), 1);
        assert_eq!(b.bytes(), 409_600);
        assert_eq!(b.end(), 409_600);
    }
}
