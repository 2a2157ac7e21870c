//! Real kernel FUSE mounts of an in-process cluster, for tests.
//!
//! The cluster and the mounts run on a runtime of their own, so a test can
//! use the mount with plain blocking file calls (and programs) from its own
//! thread without starving the tasks that answer the kernel.

use std::path::{Path, PathBuf};
use std::process::Command;

use tessera_gateway::Fs;
use tessera_meta::Settings;

use crate::cluster::{TestCluster, test_options};

/// Fails loudly when this machine cannot mount FUSE file systems.
pub fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: these tests mount real FUSE file systems; load the fuse module \
         (modprobe fuse) or install fuse3"
    );
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the FUSE tests mount with mount(2) and must run as root"
    );
}

pub struct FuseCluster {
    pub rt: tokio::runtime::Runtime,
    pub cluster: Option<TestCluster>,
    pub mounts: Vec<Option<tessera::fuse::Mounted>>,
    /// Mount points, kept until the mounts are gone.
    dirs: Vec<tempfile::TempDir>,
}

impl FuseCluster {
    /// A cluster of `datanodes` with `settings` and one mount.
    pub fn start(datanodes: u32, settings: Settings) -> FuseCluster {
        require_fuse();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let cluster = rt.block_on(TestCluster::start(datanodes, settings));
        let mut c = FuseCluster {
            rt,
            cluster: Some(cluster),
            mounts: Vec::new(),
            dirs: Vec::new(),
        };
        c.add_mount();
        c
    }

    pub fn cluster(&self) -> &TestCluster {
        self.cluster.as_ref().expect("cluster running")
    }

    pub fn cluster_mut(&mut self) -> &mut TestCluster {
        self.cluster.as_mut().expect("cluster running")
    }

    /// Mounts the cluster once more (a client of its own); returns its index.
    pub fn add_mount(&mut self) -> usize {
        let dir = tempfile::tempdir().expect("mount point");
        let meta = self.cluster().meta_addr.clone();
        let transport = self.cluster().transport();
        let at = dir.path().to_path_buf();
        let mounted = self.rt.block_on(async move {
            let options = tessera_gateway::FsOptions {
                lazy_names: true,
                ..test_options()
            };
            let fs = Fs::connect(&meta, transport, options)
                .await
                .expect("connect a mount's gateway");
            tessera::fuse::mount(fs, &at).await.expect("mount")
        });
        self.mounts.push(Some(mounted));
        self.dirs.push(dir);
        self.mounts.len() - 1
    }

    /// Mount point `i`.
    pub fn path(&self, i: usize) -> PathBuf {
        self.dirs[i].path().to_path_buf()
    }

    /// Unmounts mount `i`.
    pub fn unmount(&mut self, i: usize) {
        if let Some(m) = self.mounts[i].take() {
            self.rt.block_on(m.unmount()).expect("unmount");
        }
    }

    /// Serves WebDAV over the cluster's own `Fs`; returns the address.
    pub fn webdav(&mut self) -> String {
        let c = self.cluster.as_mut().expect("cluster running");
        self.rt.block_on(c.webdav())
    }
}

impl Drop for FuseCluster {
    fn drop(&mut self) {
        for i in 0..self.mounts.len() {
            if let Some(m) = self.mounts[i].take() {
                let _ = self.rt.block_on(m.unmount());
            }
        }
        if let Some(c) = self.cluster.take() {
            self.rt.block_on(c.shutdown());
        }
    }
}

/// Runs `sh -c script` in `dir`, optionally as another user
/// (`setpriv`); returns (status ok, stdout, stderr).
pub fn sh_as(dir: &Path, uid: Option<u32>, script: &str) -> (bool, String, String) {
    let mut cmd = match uid {
        Some(u) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={u}"),
                &format!("--regid={u}"),
                "--clear-groups",
                "--",
                "sh",
                "-c",
                script,
            ]);
            c
        }
        None => {
            let mut c = Command::new("sh");
            c.args(["-c", script]);
            c
        }
    };
    let out = cmd.current_dir(dir).output().expect("sh runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `sh -c script` in `dir` and asserts it succeeded; returns stdout.
#[track_caller]
pub fn sh(dir: &Path, script: &str) -> String {
    let (ok, out, err) = sh_as(dir, None, script);
    assert!(ok, "`{script}` failed in {}:\n{out}\n{err}", dir.display());
    out
}
