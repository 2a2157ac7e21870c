//! The process a request came from, as far as a file system must know it:
//! its capabilities and groups (set-ID bits), and whether it was signalled
//! while it waits (EINTR). The kernel names the process; /proc says the rest.

use std::time::Duration;

use fuser::Errno;

use super::core::Result;

/// `mode` as a write, truncate or chown leaves it, as Linux's own file
/// systems do: no set-user-ID bit; no set-group-ID bit where the group may
/// execute, or where the caller is neither in the file's group nor holds
/// CAP_FSETID (without group execute the bit marks mandatory locking, and
/// a member of the group keeps it).
pub fn without_set_id(mode: u32, in_group_or_capable: bool) -> u32 {
    let mut m = mode & !libc::S_ISUID;
    if mode & libc::S_IXGRP != 0 || !in_group_or_capable {
        m &= !libc::S_ISGID;
    }
    m
}

/// The process a request came from, as the kernel names it.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
}

impl Caller {
    fn status(&self) -> Option<String> {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()
    }

    /// Holds CAP_FSETID (keeps set-ID bits through its own writes and
    /// truncates); when /proc cannot say, whether it is root.
    pub fn has_fsetid(&self) -> bool {
        const CAP_FSETID: u32 = 4;
        self.status()
            .and_then(|s| {
                let v = s.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
                u64::from_str_radix(v.trim(), 16).ok()
            })
            .map(|caps| caps & (1 << CAP_FSETID) != 0)
            .unwrap_or(self.uid == 0)
    }

    /// Is in group `gid` (its own or a supplementary one) or holds
    /// CAP_FSETID.
    pub fn in_group_or_capable(&self, gid: u32) -> bool {
        if self.gid == gid {
            return true;
        }
        let listed = self.status().is_some_and(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Groups:"))
                .is_some_and(|v| v.split_whitespace().any(|g| g.parse() == Ok(gid)))
        });
        listed || self.has_fsetid()
    }
}

/// Whether the process (thread) `pid` has a signal pending that it neither
/// blocks nor ignores, or is exiting (closing its files as it dies: nobody
/// will see the answer). The kernel does not tell a FUSE server (fuser
/// ignores FUSE_INTERRUPT), so a long wait looks for itself.
fn signal_pending(pid: u32) -> bool {
    if pid == 0 {
        return false;
    }
    const PF_EXITING: u64 = 0x4;
    let exiting = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1.to_string();
            after.split_whitespace().nth(6)?.parse::<u64>().ok()
        })
        .is_some_and(|flags| flags & PF_EXITING != 0);
    if exiting {
        return true;
    }
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return false;
    };
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0)
    };
    let pending = field("SigPnd:") | field("ShdPnd:");
    let masked = field("SigBlk:") | field("SigIgn:");
    // SIGKILL can be neither blocked nor ignored.
    let kill = 1u64 << (libc::SIGKILL - 1);
    pending & (!masked | kill) != 0
}

/// Runs `fut`, answering EINTR instead if the calling process gets a signal
/// while it waits.
pub async fn interruptible<T>(
    pid: u32,
    fut: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    tokio::pin!(fut);
    let start = tokio::time::Instant::now() + Duration::from_millis(100);
    let mut tick = tokio::time::interval_at(start, Duration::from_millis(100));
    loop {
        tokio::select! {
            r = &mut fut => return r,
            _ = tick.tick() => {
                if signal_pending(pid) {
                    return Err(Errno::EINTR);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pending_signal_is_seen() {
        // A stopped process keeps a signal sent to it pending.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep runs");
        let pid = child.id();
        assert!(!signal_pending(pid));
        unsafe {
            libc::kill(pid as i32, libc::SIGSTOP);
        }
        std::thread::sleep(Duration::from_millis(100));
        assert!(!signal_pending(pid));
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
        std::thread::sleep(Duration::from_millis(100));
        let seen = signal_pending(pid);
        let _ = child.kill();
        let _ = child.wait();
        assert!(seen, "SIGTERM pending on a stopped process");
        assert!(!signal_pending(0));
    }

    #[test]
    fn set_id_bits_as_linux_drops_them() {
        // set-user-ID always; set-group-ID with group execute, or for a
        // caller outside the group; without group execute a member keeps it.
        assert_eq!(without_set_id(0o6777, true), 0o777);
        assert_eq!(without_set_id(0o6767, true), 0o2767);
        assert_eq!(without_set_id(0o6767, false), 0o767);
        assert_eq!(without_set_id(0o2755, true), 0o755);
        assert_eq!(without_set_id(0o0644, false), 0o644);
    }

    #[test]
    fn a_caller_unknown_to_proc_is_judged_by_its_ids() {
        let gone = Caller {
            pid: u32::MAX,
            uid: 65534,
            gid: 65534,
        };
        assert!(!gone.has_fsetid());
        assert!(gone.in_group_or_capable(65534));
        assert!(!gone.in_group_or_capable(4321));
        let root = Caller { uid: 0, ..gone };
        assert!(root.has_fsetid(), "root without /proc");
    }
}
