//! An fsx-style exerciser: seeded random reads, writes, truncates, mmap
//! writes, hole punches, fsyncs and reopens of one file through a real
//! mount, each checked against an in-memory model of the file.
//!
//! `TESSERA_FSX_OPS` sets the number of operations (the long run is
//! 100,000), `TESSERA_FSX_SEED` replays a seed; the seed is printed first
//! and in every failure.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

use tessera_integration::fuse::FuseCluster;
use tessera_meta::Settings;

/// xorshift64*: small, seeded, good enough to pick operations.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const MAX_LEN: u64 = 1 << 20;

fn open(path: &std::path::Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("open the exercised file")
}

#[test]
fn random_operations_match_a_model() {
    let ops: u64 = std::env::var("TESSERA_FSX_OPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    let seed: u64 = std::env::var("TESSERA_FSX_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("fsx seed {seed} ({ops} operations); replay with TESSERA_FSX_SEED={seed}");
    let c = FuseCluster::start(
        3,
        Settings {
            replicas: 2,
            write_quorum: 2,
            read_quorum: 1,
        },
    );
    let path = c.path(0).join("fsx.bin");
    let mut file = open(&path);
    let mut model: Vec<u8> = Vec::new();
    let mut rng = Rng(seed);
    let mut log: Vec<String> = Vec::new();
    for n in 0..ops {
        let op = rng.below(100);
        let size = model.len() as u64;
        let what = match op {
            // read
            0..=29 => {
                let off = rng.below(size + 1000);
                let len = rng.below(70_000) as usize;
                let mut buf = vec![0u8; len];
                let mut got = 0;
                while got < len {
                    let k = file
                        .read_at(&mut buf[got..], off + got as u64)
                        .expect("read");
                    if k == 0 {
                        break;
                    }
                    got += k;
                }
                let want: &[u8] = if off >= size {
                    &[]
                } else {
                    &model[off as usize..(off as usize + len).min(model.len())]
                };
                let ok = &buf[..got] == want;
                if !ok {
                    let at = buf[..got]
                        .iter()
                        .zip(want)
                        .position(|(a, b)| a != b)
                        .unwrap_or(got.min(want.len()));
                    panic!(
                        "seed {seed}, op {n}: read {len} at {off} (size {size}) got {got} bytes, \
                         want {}; first difference at +{at}\nlast ops:\n{}",
                        want.len(),
                        log[log.len().saturating_sub(12)..].join("\n")
                    );
                }
                format!("read {len} at {off}")
            }
            // write
            30..=59 => {
                let off = rng.below((size + 5000).min(MAX_LEN));
                let len = 1 + rng.below(40_000);
                let byte = rng.next() as u8;
                let data: Vec<u8> = (0..len).map(|i| byte.wrapping_add(i as u8)).collect();
                file.write_all_at(&data, off).expect("write");
                let end = (off + len) as usize;
                if model.len() < end {
                    model.resize(end, 0);
                }
                model[off as usize..end].copy_from_slice(&data);
                format!("write {len} at {off}")
            }
            // truncate
            60..=69 => {
                let to = rng.below(MAX_LEN);
                file.set_len(to).expect("truncate");
                model.resize(to as usize, 0);
                format!("truncate to {to}")
            }
            // mmap write inside the file
            70..=79 if size > 0 => {
                let off = rng.below(size);
                let len = 1 + rng.below((size - off).min(20_000));
                let byte = rng.next() as u8;
                // SAFETY: a shared mapping of the file's current length,
                // written within it and unmapped before the file changes.
                unsafe {
                    let p = libc::mmap(
                        std::ptr::null_mut(),
                        size as usize,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_SHARED,
                        file.as_raw_fd(),
                        0,
                    );
                    assert_ne!(
                        p,
                        libc::MAP_FAILED,
                        "mmap: {}",
                        std::io::Error::last_os_error()
                    );
                    let s = std::slice::from_raw_parts_mut(p as *mut u8, size as usize);
                    for i in 0..len as usize {
                        s[off as usize + i] = byte ^ (i as u8);
                    }
                    assert_eq!(libc::msync(p, size as usize, libc::MS_SYNC), 0);
                    libc::munmap(p, size as usize);
                }
                for i in 0..len as usize {
                    model[off as usize + i] = byte ^ (i as u8);
                }
                format!("mmap write {len} at {off}")
            }
            // punch a hole
            80..=87 if size > 0 => {
                let off = rng.below(size);
                let len = 1 + rng.below(30_000);
                // SAFETY: fallocate on an open descriptor.
                let r = unsafe {
                    libc::fallocate(
                        file.as_raw_fd(),
                        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                        off as i64,
                        len as i64,
                    )
                };
                assert_eq!(r, 0, "punch hole: {}", std::io::Error::last_os_error());
                let end = ((off + len) as usize).min(model.len());
                model[off as usize..end].fill(0);
                format!("punch {len} at {off}")
            }
            // fsync
            88..=93 => {
                file.sync_all().expect("fsync");
                "fsync".to_string()
            }
            // close and reopen
            _ => {
                drop(file);
                file = open(&path);
                "reopen".to_string()
            }
        };
        log.push(format!("{n}: {what} (size now {})", model.len()));
        let len = file.metadata().expect("fstat").len();
        assert_eq!(
            len,
            model.len() as u64,
            "seed {seed}, op {n} ({what}): size\nlast ops:\n{}",
            log[log.len().saturating_sub(12)..].join("\n")
        );
    }
    // Finally, the whole file as a fresh mount sees it.
    file.sync_all().unwrap();
    drop(file);
    let mut c = c;
    let i = c.add_mount();
    let back = std::fs::read(c.path(i).join("fsx.bin")).unwrap();
    assert!(
        back == model,
        "seed {seed}: the file as another mount reads it differs"
    );
}
