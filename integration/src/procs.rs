//! The real `tessera` binary as separate processes.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// What one run of the `tessera` binary did.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `tessera <args>` to the end with `env` set (and `TESSERA_URL`,
/// `TESSERA_USER` unset unless given), and returns what it did.
pub fn run_tessera(args: &[&str], env: &[(&str, &str)]) -> Ran {
    let out = Command::new(binary())
        .args(args)
        .env_remove("TESSERA_URL")
        .env_remove("TESSERA_USER")
        .envs(env.iter().copied())
        .output()
        .expect("run tessera");
    Ran {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The `tessera` binary next to the test executable, brought up to date
/// once per test process (a no-op when it is): a test run of one package
/// alone would otherwise drive a binary built from older sources.
pub fn binary() -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/tessera
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join("tessera");
    BUILD.call_once(|| {
        let release = dir.file_name().is_some_and(|n| n == "release");
        // The same targets as `cargo test --workspace`, so the same
        // features: after that command this is a no-op, where `-p tessera`
        // alone would build every crate again with other features (twice
        // the time and the disk).
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "--workspace", "--bins", "--tests"]);
        // What cargo sets for a test process only: ring's build script
        // watches CARGO_MANIFEST_DIR, and a value it did not see before
        // rebuilds ring and all that depends on it.
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            let per_package = ["CARGO_PKG_", "CARGO_BIN_EXE_"]
                .iter()
                .any(|p| k.starts_with(p))
                || [
                    "CARGO_MANIFEST_DIR",
                    "CARGO_MANIFEST_PATH",
                    "CARGO_MANIFEST_LINKS",
                    "CARGO_CRATE_NAME",
                    "CARGO_BIN_NAME",
                    "CARGO_PRIMARY_PACKAGE",
                    "CARGO_TARGET_TMPDIR",
                    "OUT_DIR",
                ]
                .contains(&k.as_ref());
            if per_package {
                cmd.env_remove(&key);
            }
        }
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building the tessera binary failed");
    });
    assert!(bin.exists(), "no tessera binary at {}", bin.display());
    bin
}

/// One running process; SIGKILLed on drop.
pub struct Proc {
    pub name: String,
    child: Child,
    /// The address from its ready line.
    pub addr: String,
    /// The whole ready line.
    pub ready_line: String,
    pub stderr_path: PathBuf,
}

impl Proc {
    /// The address of its Prometheus endpoint, from its ready line
    /// ("… (metrics on http://ADDR/metrics)").
    pub fn metrics_addr(&self) -> String {
        let rest = self
            .ready_line
            .split("metrics on http://")
            .nth(1)
            .unwrap_or_else(|| panic!("{} serves no metrics: {}", self.name, self.ready_line));
        rest.split('/').next().unwrap_or_default().to_string()
    }

    /// Starts `tessera <args>` with stderr to `log_dir/<name>.log` and waits
    /// for its "listening on ADDR" line.
    pub fn start(name: &str, args: &[&str], log_dir: &Path) -> Proc {
        Self::start_until(name, args, log_dir, "listening on ")
    }

    /// [`Proc::start`] with extra environment variables.
    pub fn start_env(name: &str, args: &[&str], log_dir: &Path, env: &[(&str, &str)]) -> Proc {
        Self::spawn(name, args, log_dir, "listening on ", env)
    }

    /// Like [`Proc::start`], ready at the line containing `ready`; `addr` is
    /// the word after it.
    pub fn start_until(name: &str, args: &[&str], log_dir: &Path, ready: &str) -> Proc {
        Self::spawn(name, args, log_dir, ready, &[])
    }

    fn spawn(name: &str, args: &[&str], log_dir: &Path, ready: &str, env: &[(&str, &str)]) -> Proc {
        let stderr_path = log_dir.join(format!("{name}.log"));
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr_path)
            .expect("log file");
        let mut child = Command::new(binary())
            .args(args)
            .env("RUST_LOG", "info,h2=warn,hyper=warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn tessera");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let (addr, ready_line) = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(rest) = line.split(ready).nth(1) {
                        let a = rest.split_whitespace().next().unwrap_or("");
                        let a = a
                            .trim_start_matches("http://")
                            .trim_end_matches('/')
                            .to_string();
                        break (a, line);
                    }
                }
                Err(_) => {
                    let _ = child.kill();
                    let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                    panic!("{name} did not become ready; its log:\n{log}");
                }
            }
        };
        Proc {
            name: name.to_string(),
            child,
            addr,
            ready_line,
            stderr_path,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running (not exited or killed).
    pub fn is_alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM (a clean shutdown), then reap.
    pub fn terminate(&mut self) {
        // SAFETY: kill(2) on a PID this handle spawned and has not reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }

    /// SIGSTOP: the process hangs (its sockets stay open) until [`Proc::resume`].
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`Proc::pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Sends `sig` to the process.
    pub fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on a PID this handle spawned and has not reaped.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, sig);
        }
    }

    /// `kill -9`, then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Waits up to `within` for `needle` to appear in the process's log.
    pub fn wait_for_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Meta, N datanodes and a gateway as separate processes.
pub struct ProcCluster {
    pub dir: tempfile::TempDir,
    pub secret_file: PathBuf,
    pub meta: Proc,
    pub datanodes: Vec<Option<Proc>>,
    pub gateway: Option<Proc>,
    settings: Vec<String>,
    /// Extra flags for `tessera gateway`.
    gateway_args: Vec<String>,
}

impl ProcCluster {
    /// `settings`: e.g. `["--replicas", "2", "--write-quorum", "2", "--read-quorum", "1"]`.
    pub fn start(datanodes: usize, settings: &[&str]) -> ProcCluster {
        Self::start_with(datanodes, settings, &[])
    }

    /// Like [`ProcCluster::start`], with extra flags for the gateway.
    pub fn start_with(datanodes: usize, settings: &[&str], gateway_args: &[&str]) -> ProcCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let secret_file = dir.path().join("secret");
        std::fs::write(&secret_file, "process-test-secret-0123456789\n").expect("secret");
        let settings: Vec<String> = settings.iter().map(|s| s.to_string()).collect();
        let meta = start_meta(dir.path(), &secret_file, &settings);
        let mut c = ProcCluster {
            dir,
            secret_file,
            meta,
            datanodes: Vec::new(),
            gateway: None,
            settings,
            gateway_args: gateway_args.iter().map(|s| s.to_string()).collect(),
        };
        for i in 0..datanodes {
            let p = c.spawn_datanode(i);
            c.datanodes.push(Some(p));
            c.wait_ring(i + 1);
        }
        c.start_gateway();
        c
    }

    fn secret_arg(&self) -> &str {
        self.secret_file.to_str().expect("utf-8 path")
    }

    fn spawn_datanode(&self, i: usize) -> Proc {
        let data = self.dir.path().join(format!("datanode-{i}"));
        let slot = i.to_string();
        Proc::start(
            &format!("datanode-{i}"),
            &[
                "datanode",
                "--listen",
                "127.0.0.1:0",
                "--data",
                data.to_str().expect("utf-8"),
                "--meta",
                &self.meta.addr,
                "--slot",
                &slot,
                "--secret-file",
                self.secret_arg(),
                "--metrics",
                "127.0.0.1:0",
            ],
            self.dir.path(),
        )
    }

    /// Waits until `n` slots are registered (by reading meta's log of registrations
    /// through the datanodes' logs).
    fn wait_ring(&self, n: usize) {
        let p = self.datanodes[n - 1].as_ref().expect("running");
        assert!(
            p.wait_for_log("registered with meta", Duration::from_secs(30)),
            "datanode {} did not register:\n{}",
            n - 1,
            p.log()
        );
    }

    pub fn start_gateway(&mut self) {
        let mut args = vec![
            "gateway",
            "--meta",
            &self.meta.addr,
            "--webdav",
            "127.0.0.1:0",
            "--secret-file",
            self.secret_arg(),
            "--metrics",
            "127.0.0.1:0",
        ];
        args.extend(self.gateway_args.iter().map(String::as_str));
        let g = Proc::start("gateway", &args, self.dir.path());
        self.gateway = Some(g);
    }

    /// Runs `tessera mount DIR` against this cluster; ready once mounted.
    /// Unmounted (SIGTERM, then a lazy detach) when dropped.
    pub fn mount(&self, name: &str, dir: &Path) -> MountProc {
        let proc = Proc::start_until(
            name,
            &[
                "mount",
                dir.to_str().expect("utf-8 mount point"),
                "--meta",
                &self.meta.addr,
                "--secret-file",
                self.secret_arg(),
            ],
            self.dir.path(),
            "serving ",
        );
        MountProc {
            proc,
            dir: dir.to_path_buf(),
        }
    }

    pub fn gateway_addr(&self) -> String {
        self.gateway.as_ref().expect("gateway running").addr.clone()
    }

    /// Stops datanode `i` cleanly (SIGTERM).
    pub fn stop_datanode(&mut self, i: usize) {
        if let Some(mut p) = self.datanodes[i].take() {
            p.terminate();
        }
    }

    pub fn datanode_addr(&self, i: usize) -> String {
        self.datanodes[i]
            .as_ref()
            .expect("datanode running")
            .addr
            .clone()
    }

    pub fn meta_addr(&self) -> String {
        self.meta.addr.clone()
    }

    pub fn secret(&self) -> tessera_rpc::Secret {
        tessera_rpc::Secret::from_file(&self.secret_file).expect("secret")
    }

    pub fn kill_datanode(&mut self, i: usize) {
        if let Some(mut p) = self.datanodes[i].take() {
            p.kill9();
        }
    }

    pub fn restart_datanode(&mut self, i: usize) {
        self.kill_datanode(i);
        self.respawn_datanode(i);
    }

    /// Starts datanode `i` (stopped) on its data and waits until it
    /// registers again.
    pub fn respawn_datanode(&mut self, i: usize) {
        let before = self.datanode_registrations(i);
        self.datanodes[i] = Some(self.spawn_datanode(i));
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.datanode_registrations(i) <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "datanode {i} did not re-register"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs datanode `i`, deletes its data directory (its storage is
    /// lost) and starts it again on an empty one in its slot.
    pub fn wipe_datanode(&mut self, i: usize) {
        self.kill_datanode(i);
        let data = self.dir.path().join(format!("datanode-{i}"));
        std::fs::remove_dir_all(&data).expect("wipe the datanode's directory");
        self.respawn_datanode(i);
    }

    /// What datanode `i` logged, over all its runs.
    pub fn datanode_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("datanode-{i}.log")))
            .unwrap_or_default()
    }

    fn datanode_registrations(&self, i: usize) -> usize {
        let log = std::fs::read_to_string(self.dir.path().join(format!("datanode-{i}.log")))
            .unwrap_or_default();
        log.matches("registered with meta").count()
    }

    pub fn datanode_file(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("datanode-{i}"))
            .join("blocks.redb")
    }

    pub fn kill_gateway(&mut self) {
        if let Some(mut g) = self.gateway.take() {
            g.kill9();
        }
    }

    /// SIGKILLs meta and starts it again on its data and its address
    /// (datanodes, gateway and mounts reconnect to it there).
    pub fn restart_meta(&mut self, env: &[(&str, &str)]) {
        let addr = self.meta.addr.clone();
        self.meta.kill9();
        self.meta = start_meta_at(
            self.dir.path(),
            &self.secret_file,
            &self.settings,
            &addr,
            env,
        );
    }

    /// SIGKILLs every process and starts them all again on their data.
    pub fn restart_all(&mut self) {
        self.kill_gateway();
        for i in 0..self.datanodes.len() {
            self.kill_datanode(i);
        }
        self.meta.kill9();
        self.meta = start_meta(self.dir.path(), &self.secret_file, &self.settings);
        for i in 0..self.datanodes.len() {
            self.respawn_datanode(i);
        }
        self.start_gateway();
    }
}

fn start_meta(dir: &Path, secret: &Path, settings: &[String]) -> Proc {
    start_meta_at(dir, secret, settings, "127.0.0.1:0", &[])
}

fn start_meta_at(
    dir: &Path,
    secret: &Path,
    settings: &[String],
    listen: &str,
    env: &[(&str, &str)],
) -> Proc {
    let data = dir.join("meta");
    let mut args: Vec<&str> = vec![
        "meta",
        "--listen",
        listen,
        "--data",
        data.to_str().expect("utf-8"),
        "--secret-file",
        secret.to_str().expect("utf-8"),
        "--metrics",
        "127.0.0.1:0",
    ];
    args.extend(settings.iter().map(String::as_str));
    Proc::start_env("meta", &args, dir, env)
}

/// Flags for the default settings: R=2, W=2, Q=1.
pub const R2W2Q1: &[&str] = &[
    "--replicas",
    "2",
    "--write-quorum",
    "2",
    "--read-quorum",
    "1",
];

/// A `tessera mount` process. Dropped, it is asked to unmount (SIGTERM);
/// whatever is left (a killed mount's stale mount point) is detached, so no
/// test leaves a mount behind.
pub struct MountProc {
    pub proc: Proc,
    pub dir: PathBuf,
}

impl std::ops::Deref for MountProc {
    type Target = Proc;
    fn deref(&self) -> &Proc {
        &self.proc
    }
}

impl std::ops::DerefMut for MountProc {
    fn deref_mut(&mut self) -> &mut Proc {
        &mut self.proc
    }
}

impl Drop for MountProc {
    fn drop(&mut self) {
        if self.proc.is_alive() {
            self.proc.signal(libc::SIGTERM);
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while self.proc.is_alive() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// Whether something is mounted on `dir`.
pub fn is_mounted(dir: &Path) -> bool {
    let dir = dir.canonicalize().unwrap_or(dir.to_path_buf());
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == dir.to_str())
}
