//! `tessera mount` as a process: clean unmount on signals and on `umount`,
//! a lazy detach when busy, `--daemon`, recovery from `kill -9`, writes
//! that block while too few datanodes are up (and complete intact when
//! they return, or give EINTR to a signalled caller).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tessera_integration::data::pseudo_random;
use tessera_integration::fuse::require_fuse;
use tessera_integration::procs::{ProcCluster, binary, is_mounted};

const R2W2: &[&str] = &[
    "--replicas",
    "2",
    "--write-quorum",
    "2",
    "--read-quorum",
    "1",
];

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_mount_process_unmounts_cleanly_and_recovers_from_kill_9() {
    require_fuse();
    let c = ProcCluster::start(3, R2W2);
    let dir = tempfile::tempdir().unwrap();
    let mp = dir.path();

    // SIGTERM: unmounts and exits 0; the data stays.
    let mut m = c.mount("mount-1", mp);
    assert!(is_mounted(mp));
    std::fs::write(mp.join("kept"), b"kept across mounts").unwrap();
    m.signal(libc::SIGTERM);
    wait_until("the mount process exits", Duration::from_secs(20), || {
        !m.is_alive()
    });
    assert!(!is_mounted(mp), "still mounted after SIGTERM");
    assert!(
        !mp.join("kept").exists(),
        "the file shows on the bare mount point"
    );

    // kill -9 after fsync: nothing fsynced is lost; the next mount on the
    // stale mount point cleans it up.
    let mut m = c.mount("mount-2", mp);
    assert_eq!(
        std::fs::read(mp.join("kept")).unwrap(),
        b"kept across mounts"
    );
    let data = pseudo_random(9, 3_000_000);
    {
        use std::io::Write;
        let mut f = std::fs::File::create(mp.join("synced")).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
    }
    m.kill9();
    let stale = std::fs::metadata(mp).unwrap_err();
    assert_eq!(stale.raw_os_error(), Some(libc::ENOTCONN), "{stale}");
    let mut m = c.mount("mount-3", mp);
    assert!(m.log().contains("stale mount"), "{}", m.log());
    assert_eq!(std::fs::read(mp.join("synced")).unwrap(), data);

    // `umount` from outside ends the process.
    let st = Command::new("umount").arg(mp).status().unwrap();
    assert!(st.success());
    wait_until(
        "the mount process exits after umount",
        Duration::from_secs(20),
        || !m.is_alive(),
    );

    // Busy (a process has its working directory inside): SIGTERM detaches
    // lazily and exits.
    let mut m = c.mount("mount-4", mp);
    std::fs::create_dir(mp.join("busy")).unwrap();
    let mut sleeper = Command::new("sleep")
        .arg("30")
        .current_dir(mp.join("busy"))
        .spawn()
        .unwrap();
    m.signal(libc::SIGTERM);
    wait_until("a busy mount detaches", Duration::from_secs(30), || {
        !m.is_alive()
    });
    assert!(!is_mounted(mp));
    assert!(m.log().contains("detaching lazily"), "{}", m.log());
    let _ = sleeper.kill();
    let _ = sleeper.wait();

    // --daemon: returns once mounted, keeps serving, ends on umount.
    let out = Command::new(binary())
        .args([
            "mount",
            mp.to_str().unwrap(),
            "--meta",
            &c.meta_addr(),
            "--secret-file",
            c.secret_file.to_str().unwrap(),
            "--daemon",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("serving"), "{said}");
    assert!(is_mounted(mp));
    assert_eq!(std::fs::read(mp.join("synced")).unwrap(), data);
    let pid: i32 = said
        .split("(pid ")
        .nth(1)
        .and_then(|s| s.trim_end().trim_end_matches(')').parse().ok())
        .expect("the daemon's pid");
    assert!(Command::new("umount").arg(mp).status().unwrap().success());
    // SAFETY: signal 0 only checks that the daemon this test started exists.
    wait_until(
        "the daemon exits after umount",
        Duration::from_secs(20),
        || unsafe { libc::kill(pid, 0) != 0 },
    );
}

#[test]
fn a_copy_blocks_while_a_datanode_is_down_then_completes_intact() {
    require_fuse();
    let mut c = ProcCluster::start(3, R2W2);
    let dir = tempfile::tempdir().unwrap();
    let mp = dir.path();
    let _m = c.mount("mount", mp);
    let data = pseudo_random(11, 48 << 20);
    // The copy reads its source from a pipe this test feeds: half before
    // the datanode is killed, half after, so it cannot finish before the
    // kill however fast the cluster writes.
    let mut cp = Command::new("dd")
        .args([
            "if=/dev/stdin",
            &format!("of={}", mp.join("big.bin").display()),
            "bs=1M",
            "iflag=fullblock",
            "conv=fsync",
            "status=none",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = cp.stdin.take().unwrap();
    let half = data.len() / 2;
    input.write_all(&data[..half]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    c.kill_datanode(1);
    let rest = data[half..].to_vec();
    let feeder = std::thread::spawn(move || input.write_all(&rest));
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        cp.try_wait().unwrap().is_none(),
        "the copy finished while a datanode it needs for W=2 was down"
    );
    c.respawn_datanode(1);
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(s) = cp.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the copy did not complete after the datanode returned"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    feeder.join().unwrap().unwrap();
    assert!(status.success(), "dd failed: {status}");
    let back = std::fs::read(mp.join("big.bin")).unwrap();
    assert!(back == data, "the copy differs from its source");
}

#[test]
fn a_blocked_fsync_is_interrupted_by_a_signal_and_nothing_is_lost() {
    require_fuse();
    let mut c = ProcCluster::start(3, R2W2);
    let dir = tempfile::tempdir().unwrap();
    let mp = dir.path();
    let _m = c.mount("mount", mp);
    c.kill_datanode(2);
    let script = "import os, sys\n\
        f = open('blocked.bin', 'wb')\n\
        f.write(bytes(range(256)) * 8192)\n\
        f.flush()\n\
        print('written', flush=True)\n\
        try:\n    os.fsync(f.fileno())\n    print('fsynced')\n\
        except KeyboardInterrupt:\n    print('interrupted', flush=True)\n    os._exit(3)\n";
    let mut py = Command::new("python3")
        .args(["-c", script])
        .current_dir(mp)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(py.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "written");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        py.try_wait().unwrap().is_none(),
        "fsync returned with a datanode down at W=2"
    );
    let sent = Instant::now();
    // SAFETY: SIGINT to the python process this test started.
    unsafe {
        libc::kill(py.id() as i32, libc::SIGINT);
    }
    let status = loop {
        if let Some(s) = py.try_wait().unwrap() {
            break s;
        }
        assert!(
            sent.elapsed() < Duration::from_secs(5),
            "a signal did not interrupt the blocked fsync"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(status.code(), Some(3), "{rest}");
    assert_eq!(rest.trim(), "interrupted");
    // The data written before is not lost: it lands once the node is back.
    c.respawn_datanode(2);
    let want: Vec<u8> = (0..8192).flat_map(|_| 0u8..=255).collect();
    wait_until(
        "the interrupted file's data is stored",
        Duration::from_secs(60),
        || std::fs::read(mp.join("blocked.bin")).is_ok_and(|b| b == want),
    );
}

/// Names a mount makes are committed lazily in meta (answered before they
/// are durable); an fsync of their directory makes them durable. Meta
/// killed with `kill -9` right after loses none of them. Meta runs with
/// its background sync stretched to an hour, so only the fsyncs can have
/// made them durable (without them this test fails).
#[test]
fn names_synced_by_fsyncdir_survive_kill_9_of_meta() {
    require_fuse();
    let mut c = ProcCluster::start(3, R2W2);
    let hour = [("TESSERA_META_LAZY_WINDOW_MS", "3600000")];
    c.restart_meta(&hour);
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    let mount_a = c.mount("mount-a", &a);
    let d = a.join("d");
    std::fs::create_dir(&d).unwrap();
    for i in 0..300 {
        std::fs::File::create(d.join(format!("f{i:03}"))).unwrap();
    }
    std::fs::rename(d.join("f000"), d.join("renamed")).unwrap();
    std::fs::remove_file(d.join("f001")).unwrap();
    std::fs::File::open(&d).unwrap().sync_all().unwrap();
    std::fs::File::open(&a).unwrap().sync_all().unwrap();
    // Everything synced is in meta's file now, whatever it did not finish.
    c.restart_meta(&hour);

    let mut want: Vec<String> = (2..300).map(|i| format!("f{i:03}")).collect();
    want.push("renamed".into());
    want.sort();
    let mount_b = c.mount("mount-b", &b);
    let mut got: Vec<String> = std::fs::read_dir(b.join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    got.sort();
    assert_eq!(got, want, "names synced before the crash");
    // The first mount carries on against the restarted meta.
    std::fs::write(a.join("d").join("after"), b"after the restart").unwrap();
    wait_until(
        "the new file shows in the other mount",
        Duration::from_secs(10),
        || std::fs::read(b.join("d").join("after")).is_ok_and(|v| v == b"after the restart"),
    );
    drop(mount_b);
    drop(mount_a);
}
