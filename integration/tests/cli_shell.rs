//! `tessera shell` (and `tessera` alone) through a pseudo-terminal, as a
//! person types: commands, `cd`, Tab completion of a remote path, `help`,
//! history kept across sessions; and a progress bar on a terminal.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_integration::procs::{ProcCluster, R2W2Q1, binary};

/// A program on the slave side of a pty; what it writes is collected.
struct Pty {
    child: Child,
    master: std::fs::File,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl Pty {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Pty {
        let (mut master, mut slave) = (0, 0);
        let size = libc::winsize {
            ws_row: 40,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two descriptors into the given places.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned here.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let mut cmd = Command::new(binary());
        cmd.args(args)
            .env_remove("TESSERA_USER")
            .env("TERM", "xterm")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        for (k, v) in env {
            cmd.env(k, v);
        }
        // SAFETY: setsid and ioctl are async-signal-safe; the pty becomes
        // the child's controlling terminal, as a login shell's is.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn tessera on a pty");
        let master = std::fs::File::from(master);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (mut reader, into) = (master.try_clone().unwrap(), seen.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                into.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            child,
            master,
            seen,
        }
    }

    fn type_keys(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
    }

    /// All it wrote, escape sequences removed.
    fn screen(&self) -> String {
        strip_ansi(&String::from_utf8_lossy(&self.seen.lock().unwrap()))
    }

    /// Waits until the output holds `text` (after `from` bytes of it).
    fn expect(&self, text: &str, from: usize) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.screen();
            if let Some(i) = s.get(from..).and_then(|rest| rest.find(text)) {
                return from + i + text.len();
            }
            assert!(
                Instant::now() < deadline,
                "waited for {text:?}; the terminal shows:\n{}",
                s
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Text without ANSI escape sequences and carriage returns.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // Parameters, then one final byte in @..~.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[test]
fn a_person_types_at_the_shell_and_completes_a_path_with_tab() {
    let c = ProcCluster::start(3, R2W2Q1);
    let url = format!("http://{}", c.gateway_addr());
    let home = tempfile::tempdir().unwrap();
    let env = [
        ("TESSERA_URL", url.as_str()),
        ("HOME", home.path().to_str().unwrap()),
    ];
    // A file to find, put there with the command line.
    let local = home.path().join("notes.txt");
    std::fs::write(&local, "hello from the docs\n").unwrap();
    let put = Command::new(binary())
        .args(["put", local.to_str().unwrap(), "/documents-2026/"])
        .env("TESSERA_URL", &url)
        .output()
        .unwrap();
    assert!(
        !put.status.success(),
        "put into a missing directory succeeded"
    );
    for args in [
        vec!["mkdir", "/documents-2026"],
        vec!["put", local.to_str().unwrap(), "/documents-2026/"],
    ] {
        let out = Command::new(binary())
            .args(&args)
            .env("TESSERA_URL", &url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // `tessera` alone on a terminal is the shell.
    let mut sh = Pty::spawn(&[], &env);
    let mut at = sh.expect("tessera:/> ", 0);
    sh.type_keys("help\r");
    at = sh.expect("  cd       Change the current directory", at);
    at = sh.expect("tessera:/> ", at);
    // Tab completes the directory, then the file in it.
    sh.type_keys("cd /docu\t");
    at = sh.expect("cd /documents-2026/", at);
    sh.type_keys("\r");
    at = sh.expect("tessera:/documents-2026> ", at);
    sh.type_keys("cat no\t");
    at = sh.expect("cat notes.txt", at);
    sh.type_keys("\r");
    at = sh.expect("hello from the docs", at);
    sh.type_keys("pwd\r");
    at = sh.expect("\n/documents-2026\n", at);
    // An error is one line; the shell goes on.
    sh.type_keys("cat missing.txt\r");
    at = sh.expect(
        "tessera: /documents-2026/missing.txt: no such file or directory",
        at,
    );
    sh.type_keys("show mkdir sub\r");
    at = sh.expect("└── sub/", at);
    at = sh.expect("1 directory, 1 file", at);
    sh.type_keys("help put\r");
    at = sh.expect("Example: tessera put -r", at);
    sh.type_keys("frobnicate\r");
    at = sh.expect("unrecognized subcommand 'frobnicate'", at);
    sh.type_keys("exit\r");
    let deadline = Instant::now() + Duration::from_secs(10);
    while sh.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "exit did not end the shell");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(sh.child.wait().unwrap().success());
    let _ = at;
    // History was kept for the next session.
    let history = std::fs::read_to_string(home.path().join(".tessera_history")).unwrap();
    assert!(history.contains("cat notes.txt"), "{history}");

    // On a terminal, a transfer shows a bar, then a summary line.
    let big = home.path().join("big.bin");
    std::fs::write(&big, vec![7u8; 8 << 20]).unwrap();
    let bar = Pty::spawn(&["put", big.to_str().unwrap(), "/"], &env);
    bar.expect("1 files (8.0 MiB)", 0);
    assert!(bar.screen().contains("MiB/8.00 MiB"), "{}", bar.screen());
    let mut bar = bar;
    assert!(bar.child.wait().unwrap().success());
    // --quiet: nothing but errors.
    let mut q = Pty::spawn(
        &[
            "--quiet",
            "get",
            "/big.bin",
            home.path().join("back.bin").to_str().unwrap(),
        ],
        &env,
    );
    assert!(q.child.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(q.screen(), "");
}
