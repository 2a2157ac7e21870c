//! A small tmpfs, for tests of a full disk. Mounting needs root (the CI
//! gate runs as root); anywhere else the test fails saying so.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of a fixed size, unmounted (lazily) when dropped.
pub struct Tmpfs {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size_mib: u64) -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("disk");
        std::fs::create_dir(&path).expect("mount point");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_mib}m"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("run mount(8)");
        assert!(
            out.status.success(),
            "this test mounts a {size_mib} MiB tmpfs to fill a disk for real, which needs root \
             (CAP_SYS_ADMIN); run it as root, as the CI gate does. mount said: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs { path, _dir: dir }
    }

    /// Bytes free on it.
    pub fn free(&self) -> u64 {
        free_bytes(&self.path)
    }

    /// Writes a ballast file until at most `leave` bytes are free; returns its path.
    pub fn fill(&self, name: &str, leave: u64) -> PathBuf {
        let p = self.path.join(name);
        let mut f = std::fs::File::create(&p).expect("ballast");
        let chunk = vec![0xA5u8; 64 << 10];
        while self.free() > leave {
            let n = ((self.free() - leave) as usize).min(chunk.len());
            if f.write_all(&chunk[..n.max(1)]).is_err() {
                break;
            }
            let _ = f.flush();
        }
        let _ = f.sync_all();
        p
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn free_bytes(p: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(p.as_os_str().as_bytes()).expect("path");
    // SAFETY: `c` is a NUL-terminated path and `st` a valid out-pointer.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0, "statvfs");
    st.f_bavail as u64 * st.f_frsize as u64
}
