//! A real kernel FUSE mount of a cluster behaves like a local Linux file
//! system: programs (cp, diff, git, SQLite, Python) run in it unchanged.
//! These tests need root and /dev/fuse, and fail saying so without them.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use tessera_integration::data::pseudo_random;
use tessera_integration::fuse::{FuseCluster, sh, sh_as};
use tessera_meta::Settings;

fn settings() -> Settings {
    Settings {
        replicas: 2,
        write_quorum: 2,
        read_quorum: 1,
    }
}

/// A tree of mixed files: sizes around block edges, a larger file, empty
/// and nested directories, symlinks, odd names.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    for (i, len) in [0usize, 1, 511, 512, 513, 4095, 4096, 70_000, 1_048_579]
        .iter()
        .enumerate()
    {
        fs::write(root.join(format!("f{i}")), pseudo_random(i as u64, *len)).unwrap();
        fs::write(
            root.join(format!("a/b/c/g{i}")),
            pseudo_random(100 + i as u64, len / 3),
        )
        .unwrap();
    }
    fs::write(root.join("a/with space & ünïcode"), b"hello").unwrap();
    std::os::unix::fs::symlink("a/b/c/g1", root.join("link")).unwrap();
    std::os::unix::fs::symlink("nowhere", root.join("dangling")).unwrap();
    fs::set_permissions(root.join("f1"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(root.join("f2"), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_tree_copied_in_reads_back_identical() {
    let c = FuseCluster::start(3, settings());
    let src = tempfile::tempdir().unwrap();
    make_tree(src.path());
    let mnt = c.path(0);
    sh(
        &mnt,
        &format!("cp -a {}/. {}/tree", src.path().display(), mnt.display()),
    );
    sh(
        &mnt,
        &format!("diff -r --no-dereference {} tree", src.path().display()),
    );
    // Modes and times came along (cp -a), to the nanosecond.
    for name in ["f1", "f2", "a/b/c/g8"] {
        let a = fs::symlink_metadata(src.path().join(name)).unwrap();
        let b = fs::symlink_metadata(mnt.join("tree").join(name)).unwrap();
        assert_eq!(a.mode(), b.mode(), "{name}");
        assert_eq!(
            (a.mtime(), a.mtime_nsec()),
            (b.mtime(), b.mtime_nsec()),
            "{name}"
        );
        assert_eq!(a.len(), b.len(), "{name}");
    }
    assert_eq!(
        fs::read_link(mnt.join("tree/link")).unwrap(),
        Path::new("a/b/c/g1")
    );
    // Copy it back out and compare again (reads through the mount).
    let back = tempfile::tempdir().unwrap();
    sh(&mnt, &format!("cp -a tree/. {}/", back.path().display()));
    sh(
        &mnt,
        &format!(
            "diff -r --no-dereference {} {}",
            src.path().display(),
            back.path().display()
        ),
    );
}

#[test]
fn git_works_in_the_mount() {
    let c = FuseCluster::start(3, settings());
    let repo = c.path(0).join("repo");
    fs::create_dir(&repo).unwrap();
    sh(
        &repo,
        "git init -q . && git config user.email t@example.org && git config user.name T && \
         printf 'one\\n' > a.txt && mkdir -p src && printf 'fn main() {}\\n' > src/main.rs && \
         git add -A && git commit -qm first && printf 'two\\n' >> a.txt && git commit -qam second && \
         git mv a.txt b.txt && git commit -qm third && git gc -q && git fsck --strict",
    );
    let log = sh(&repo, "git log --format=%s");
    assert_eq!(log, "third\nsecond\nfirst\n");
    assert_eq!(sh(&repo, "git show HEAD~1:a.txt"), "one\ntwo\n");
    assert_eq!(sh(&repo, "git status --porcelain"), "");
}

#[test]
fn sqlite_creates_writes_and_queries_in_the_mount() {
    let c = FuseCluster::start(3, settings());
    let script = r#"
import sqlite3
db = sqlite3.connect("t.db")
db.execute("pragma journal_mode=wal")
db.execute("create table t (k integer primary key, v text)")
with db:
    for i in range(2000):
        db.execute("insert into t values (?, ?)", (i, "value %d" % i * 3))
with db:
    db.execute("update t set v = 'x' where k % 7 = 0")
    db.execute("delete from t where k % 11 = 0")
db.close()
db = sqlite3.connect("t.db")
assert db.execute("pragma integrity_check").fetchone()[0] == "ok"
print(db.execute("select count(*), sum(length(v)) from t").fetchone())
"#;
    fs::write(c.path(0).join("t.py"), script).unwrap();
    let out = sh(&c.path(0), "python3 t.py");
    // Recomputed here: 2000 rows less the multiples of 11.
    let mut count = 0;
    let mut len = 0;
    for i in 0..2000 {
        if i % 11 == 0 {
            continue;
        }
        count += 1;
        len += if i % 7 == 0 {
            1
        } else {
            format!("value {i}").len() * 3
        };
    }
    assert_eq!(out.trim(), format!("({count}, {len})"));
}

#[test]
fn open_files_survive_rename_and_unlink() {
    let c = FuseCluster::start(3, settings());
    let m = c.path(0);
    let data = pseudo_random(7, 200_000);
    fs::write(m.join("doomed"), &data).unwrap();
    let mut f = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.join("doomed"))
        .unwrap();
    fs::rename(m.join("doomed"), m.join("moved")).unwrap();
    fs::remove_file(m.join("moved")).unwrap();
    assert!(!m.join("moved").exists());
    let mut back = Vec::new();
    f.read_to_end(&mut back).unwrap();
    assert_eq!(back, data, "an unlinked open file still reads");
    f.seek(SeekFrom::Start(10)).unwrap();
    f.write_all(b"still writable").unwrap();
    f.sync_all().unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut head = [0u8; 24];
    f.read_exact(&mut head).unwrap();
    assert_eq!(&head[10..], b"still writable");
    assert_eq!(f.metadata().unwrap().nlink(), 0);
    drop(f);
    // Replaced by a rename while open: the old content stays readable.
    fs::write(m.join("old"), b"old content").unwrap();
    fs::write(m.join("new"), b"new content").unwrap();
    let mut old = fs::File::open(m.join("old")).unwrap();
    fs::rename(m.join("new"), m.join("old")).unwrap();
    let mut s = String::new();
    old.read_to_string(&mut s).unwrap();
    assert_eq!(s, "old content");
    assert_eq!(fs::read_to_string(m.join("old")).unwrap(), "new content");
}

#[test]
fn truncate_down_then_up_reads_zeros() {
    let c = FuseCluster::start(3, settings());
    let p = c.path(0).join("t");
    fs::write(&p, pseudo_random(3, 10_000)).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(1000).unwrap();
    f.set_len(5000).unwrap();
    drop(f);
    let back = fs::read(&p).unwrap();
    assert_eq!(back.len(), 5000);
    assert_eq!(&back[..1000], &pseudo_random(3, 10_000)[..1000]);
    assert!(
        back[1000..].iter().all(|b| *b == 0),
        "bytes past the cut read as zeros"
    );
    // And through a fresh mount (nothing cached).
    let mut c = c;
    let i = c.add_mount();
    let back2 = fs::read(c.path(i).join("t")).unwrap();
    assert_eq!(back, back2);
}

#[test]
fn mmap_writes_are_read_back() {
    let c = FuseCluster::start(3, settings());
    let script = r#"
import mmap, os
with open("m.bin", "wb") as f:
    f.truncate(3 * 4096 + 100)
with open("m.bin", "r+b") as f:
    mm = mmap.mmap(f.fileno(), 0)
    mm[0:5] = b"hello"
    mm[4096 * 3 + 90:4096 * 3 + 100] = b"0123456789"
    mm.flush()
    mm.close()
    os.fsync(f.fileno())
with open("m.bin", "rb") as f:
    d = f.read()
assert d[:5] == b"hello", d[:5]
assert d[-10:] == b"0123456789", d[-10:]
assert d[5:-10] == bytes(len(d) - 15)
print("ok")
"#;
    fs::write(c.path(0).join("m.py"), script).unwrap();
    assert_eq!(sh(&c.path(0), "python3 m.py").trim(), "ok");
    let mut c = c;
    let i = c.add_mount();
    let d = fs::read(c.path(i).join("m.bin")).unwrap();
    assert_eq!(&d[..5], b"hello");
    assert_eq!(&d[d.len() - 10..], b"0123456789");
}

#[test]
fn extended_attributes_are_set_listed_and_removed() {
    let c = FuseCluster::start(3, settings());
    let script = r#"
import os, errno
open("x", "w").close()
os.setxattr("x", "user.color", b"blue")
os.setxattr("x", "user.empty", b"")
os.setxattr("x", "user.big", bytes(range(256)) * 256)
assert os.getxattr("x", "user.color") == b"blue"
assert os.getxattr("x", "user.empty") == b""
assert os.getxattr("x", "user.big") == bytes(range(256)) * 256
assert sorted(os.listxattr("x")) == ["user.big", "user.color", "user.empty"], os.listxattr("x")
try:
    os.setxattr("x", "user.color", b"red", os.XATTR_CREATE); raise SystemExit("create over existing")
except OSError as e: assert e.errno == errno.EEXIST, e
try:
    os.setxattr("x", "user.none", b"1", os.XATTR_REPLACE); raise SystemExit("replace missing")
except OSError as e: assert e.errno == errno.ENODATA, e
os.setxattr("x", "user.color", b"red", os.XATTR_REPLACE)
assert os.getxattr("x", "user.color") == b"red"
os.removexattr("x", "user.color")
try:
    os.getxattr("x", "user.color"); raise SystemExit("removed still there")
except OSError as e: assert e.errno == errno.ENODATA, e
try:
    os.setxattr("x", "security.selinux", b"x"); raise SystemExit("security ns")
except OSError as e: assert e.errno == errno.EOPNOTSUPP, e
os.setxattr("x", "trusted.t", b"root only")
assert "trusted.t" in os.listxattr("x")
os.symlink("x", "l")
try:
    os.setxattr("l", "user.a", b"1", follow_symlinks=False); raise SystemExit("user xattr on symlink")
except OSError as e: assert e.errno == errno.EPERM, e
print("ok")
"#;
    fs::write(c.path(0).join("x.py"), script).unwrap();
    assert_eq!(sh(&c.path(0), "python3 x.py").trim(), "ok");
    // Another mount sees them (they live in meta).
    let mut c = c;
    let i = c.add_mount();
    let out = sh(
        &c.path(i),
        "python3 -c 'import os; print(sorted(os.listxattr(\"x\")), os.getxattr(\"x\", \"user.empty\"))'",
    );
    assert_eq!(out.trim(), "['trusted.t', 'user.big', 'user.empty'] b''");
}

#[test]
fn a_lock_held_in_one_mount_blocks_the_other() {
    let mut c = FuseCluster::start(3, settings());
    let b = c.add_mount();
    fs::write(c.path(0).join("flockfile"), b"x").unwrap();
    fs::write(c.path(0).join("lockfile"), b"x").unwrap();
    // Mount 0: a process holds a flock and a POSIX lock until told to stop.
    // (As on NFS, a flock is a whole-file lock in meta: flock and fcntl
    // locks of one file would conflict, so they use two files here.)
    let holder = c.path(0).join("hold.py");
    fs::write(
        &holder,
        r#"
import fcntl, sys, time
f = open("flockfile", "r+")
fcntl.flock(f, fcntl.LOCK_EX)
g = open("lockfile", "r+")
fcntl.lockf(g, fcntl.LOCK_EX, 1, 0)
print("held", flush=True)
sys.stdin.readline()
"#,
    )
    .unwrap();
    let mut child = std::process::Command::new("python3")
        .arg("hold.py")
        .current_dir(c.path(0))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "held");
    let try_locks = r#"
import fcntl, errno
f = open("flockfile", "r+")
try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB); print("flock:got")
except OSError as e: print("flock:" + errno.errorcode[e.errno])
g = open("lockfile", "r+")
try:
    fcntl.lockf(g, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0); print("posix:got")
except OSError as e: print("posix:" + errno.errorcode[e.errno])
try:
    fcntl.lockf(g, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 5); print("other-range:got")
except OSError as e: print("other-range:" + errno.errorcode[e.errno])
"#;
    fs::write(c.path(b).join("try.py"), try_locks).unwrap();
    let out = sh(&c.path(b), "python3 try.py");
    assert_eq!(out, "flock:EAGAIN\nposix:EAGAIN\nother-range:got\n");
    // Released when the holder exits: the other mount gets them.
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
    let out = sh(&c.path(b), "python3 try.py");
    assert_eq!(out, "flock:got\nposix:got\nother-range:got\n");
}

#[test]
fn two_mounts_and_webdav_see_each_others_changes() {
    let mut c = FuseCluster::start(3, settings());
    let b = c.add_mount();
    let (a, bp) = (c.path(0), c.path(b));
    fs::write(a.join("from-a"), b"written in a").unwrap();
    assert_eq!(fs::read(bp.join("from-a")).unwrap(), b"written in a");
    // Close-to-open: b reads a's new content after a closes.
    let mut f = fs::File::open(bp.join("from-a")).unwrap();
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    drop(f);
    fs::write(a.join("from-a"), b"rewritten in a, longer").unwrap();
    assert_eq!(
        fs::read_to_string(bp.join("from-a")).unwrap(),
        "rewritten in a, longer"
    );
    fs::remove_file(bp.join("from-a")).unwrap();
    assert!(!a.join("from-a").exists());
    fs::create_dir(bp.join("dir")).unwrap();
    assert!(a.join("dir").is_dir());

    // WebDAV: a FUSE write is readable at once, and a PUT is visible in
    // the mount within a second.
    let addr = c.webdav();
    let http = tessera_integration::http::Http::new(&addr);
    fs::write(a.join("dir/fuse.txt"), b"from fuse").unwrap();
    let got = c.rt.block_on(http.get("/dir/fuse.txt")).unwrap();
    assert_eq!(got.status, 200);
    assert_eq!(&got.body[..], b"from fuse");
    // Cache it in the kernel first, then change it over WebDAV.
    assert_eq!(fs::read(a.join("dir/fuse.txt")).unwrap(), b"from fuse");
    let put =
        c.rt.block_on(http.put("/dir/fuse.txt", "changed over webdav"))
            .unwrap();
    assert!(put.status.is_success(), "{}", put.status);
    let put =
        c.rt.block_on(http.put("/dir/new.txt", "new over webdav"))
            .unwrap();
    assert!(put.status.is_success());
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        let ok = fs::read(a.join("dir/fuse.txt")).ok().as_deref()
            == Some(&b"changed over webdav"[..])
            && fs::read(a.join("dir/new.txt")).ok().as_deref() == Some(&b"new over webdav"[..]);
        if ok {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "WebDAV changes not visible in the mount within a second"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn permissions_hold_for_an_unprivileged_user() {
    let c = FuseCluster::start(3, settings());
    let m = c.path(0);
    let nobody = 65534;
    fs::set_permissions(&m, fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(m.join("private"), b"secret").unwrap();
    fs::set_permissions(m.join("private"), fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, _, err) = sh_as(&m, Some(nobody), "cat private");
    assert!(!ok && err.contains("Permission denied"), "{err}");
    let (ok, _, err) = sh_as(&m, Some(nobody), "chmod 777 private");
    assert!(!ok && err.contains("Operation not permitted"), "{err}");
    let (ok, _, err) = sh_as(&m, Some(nobody), "chown 65534 private");
    assert!(!ok && err.contains("Operation not permitted"), "{err}");
    // nobody's own files: created with its uid and gid, its to change.
    let (ok, out, err) = sh_as(
        &m,
        Some(nobody),
        "umask 022 && echo hi > mine && chmod 640 mine && stat -c '%u %g %a' mine && cat mine",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "65534 65534 640\nhi\n");
    // root gives a file away.
    sh(
        &m,
        "chown 1234:4321 private && stat -c '%u %g' private > owner",
    );
    assert_eq!(fs::read_to_string(m.join("owner")).unwrap(), "1234 4321\n");
    // Sticky directory: nobody cannot delete another user's file in it.
    sh(
        &m,
        "mkdir -m 1777 tmp && echo x > tmp/roots && chmod 666 tmp/roots",
    );
    let (ok, _, err) = sh_as(&m, Some(nobody), "rm -f tmp/roots");
    assert!(!ok && err.contains("Operation not permitted"), "{err}");
    let (ok, _, err) = sh_as(&m, Some(nobody), "echo y > tmp/mine && rm tmp/mine");
    assert!(ok, "{err}");
    // setgid directory: new files take its group, new dirs keep the bit.
    sh(
        &m,
        "mkdir shared && chown 0:4321 shared && chmod 2777 shared",
    );
    let (ok, out, err) = sh_as(
        &m,
        Some(nobody),
        "touch shared/f && mkdir shared/d && stat -c '%g' shared/f && stat -c '%g %A' shared/d",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "4321\n4321 drwxr-sr-x\n");
    // Write permission on a directory is needed to create in it.
    sh(&m, "mkdir ro && chmod 755 ro");
    let (ok, _, err) = sh_as(&m, Some(nobody), "touch ro/x");
    assert!(!ok && err.contains("Permission denied"), "{err}");
}

/// Writes, truncates and chowns drop set-ID bits as on ext4 (the mount
/// does it: the kernel leaves it to FUSE_HANDLE_KILLPRIV_V2 servers), and
/// the same script on a local directory gives the same answer.
#[test]
fn set_id_bits_are_dropped_as_on_ext4() {
    let c = FuseCluster::start(3, settings());
    let m = c.path(0);
    let local = tempfile::tempdir().unwrap();
    fs::set_permissions(local.path(), fs::Permissions::from_mode(0o777)).unwrap();
    fs::set_permissions(&m, fs::Permissions::from_mode(0o777)).unwrap();
    let run = |dir: &Path| {
        sh(
            dir,
            "touch a b c d e f g h i && chown 65534 a b c d e h i && chown 65534:65534 f \\
             && chmod 6777 a b c i && chmod 6767 d e f g && chmod 2755 h",
        );
        // As nobody, in no group but its own.
        let (ok, _, err) = sh_as(
            dir,
            Some(65534),
            "echo hi >> a && truncate -s 1 b && echo x >> d && echo x >> f",
        );
        assert!(ok, "{err}");
        // As root, who keeps the bits through writes and truncates.
        sh(
            dir,
            "chown 0 c && chown 0:0 g && echo x >> i && truncate -s 0 h \
             && stat -c '%n %a %u:%g %s' a b c d e f g h i",
        )
    };
    let here = run(&m);
    assert_eq!(
        here,
        "a 777 65534:0 3\n\
         b 777 65534:0 1\n\
         c 777 0:0 0\n\
         d 767 65534:0 2\n\
         e 6767 65534:0 0\n\
         f 2767 65534:65534 2\n\
         g 2767 0:0 0\n\
         h 2755 65534:0 0\n\
         i 6777 65534:0 2\n"
    );
    assert_eq!(
        here,
        run(local.path()),
        "the mount and a local directory differ"
    );
}

#[test]
fn errors_are_those_of_linux() {
    let c = FuseCluster::start(3, settings());
    let script = r#"
import os, errno
def err(f, *a):
    try:
        f(*a)
    except OSError as e:
        return errno.errorcode[e.errno]
    return "ok"
os.mkdir("d"); open("d/f", "w").close(); open("f", "w").close()
print(err(os.rmdir, "d"))                      # ENOTEMPTY
print(err(os.mkdir, "d"))                      # EEXIST
print(err(open, "d", "w"))                     # EISDIR
print(err(os.open, "x" * 256, os.O_CREAT))     # ENAMETOOLONG
print(err(os.unlink, "d"))                     # EISDIR
print(err(os.rmdir, "f"))                      # ENOTDIR
print(err(os.listdir, "f"))                    # ENOTDIR
print(err(os.open, "f/x", os.O_CREAT))         # ENOTDIR
print(err(os.rename, "d", "d/f/sub"))          # ENOTDIR
os.mkdir("d/e")
print(err(os.rename, "d", "d/e/inside"))       # EINVAL
os.symlink("loop2", "loop1"); os.symlink("loop1", "loop2")
print(err(open, "loop1"))                      # ELOOP
print(err(os.open, "loop1", os.O_RDONLY | os.O_NOFOLLOW))  # ELOOP
print(err(os.rename, "f", "d/moved"))          # ok (never EXDEV)
print(err(os.link, "d", "dlink"))              # EPERM
print(err(os.stat, "missing"))                 # ENOENT
print(err(os.open, "f2", os.O_CREAT | os.O_EXCL)); print(err(os.open, "f2", os.O_CREAT | os.O_EXCL))  # ok EEXIST
os.mkdir("e"); os.mkdir("e/sub")
print(err(os.rename, "d/e", "e"))              # ENOTEMPTY
"#;
    fs::write(c.path(0).join("e.py"), script).unwrap();
    let out = sh(&c.path(0), "python3 e.py");
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        [
            "ENOTEMPTY",
            "EEXIST",
            "EISDIR",
            "ENAMETOOLONG",
            "EISDIR",
            "ENOTDIR",
            "ENOTDIR",
            "ENOTDIR",
            "ENOTDIR",
            "EINVAL",
            "ELOOP",
            "ELOOP",
            "ok",
            "EPERM",
            "ENOENT",
            "ok",
            "EEXIST",
            "ENOTEMPTY"
        ]
    );
}

#[test]
fn hard_links_special_files_and_renameat2() {
    let c = FuseCluster::start(3, settings());
    let m = c.path(0);
    fs::write(m.join("a"), b"shared").unwrap();
    fs::hard_link(m.join("a"), m.join("b")).unwrap();
    assert_eq!(fs::metadata(m.join("a")).unwrap().nlink(), 2);
    assert_eq!(
        fs::metadata(m.join("a")).unwrap().ino(),
        fs::metadata(m.join("b")).unwrap().ino()
    );
    fs::write(m.join("b"), b"changed through b").unwrap();
    assert_eq!(fs::read(m.join("a")).unwrap(), b"changed through b");
    fs::remove_file(m.join("a")).unwrap();
    assert_eq!(fs::read(m.join("b")).unwrap(), b"changed through b");
    assert_eq!(fs::metadata(m.join("b")).unwrap().nlink(), 1);
    sh(
        &m,
        "mkfifo fifo && mknod cdev c 1 3 && mknod bdev b 7 0 && python3 -c 'import socket; s=socket.socket(socket.AF_UNIX); s.bind(\"sock\")'",
    );
    let out = sh(&m, "stat -c '%F %t %T' fifo cdev bdev sock");
    assert_eq!(
        out,
        "fifo 0 0\ncharacter special file 1 3\nblock special file 7 0\nsocket 0 0\n"
    );
    // A FIFO in the mount works as a FIFO (the kernel carries the data).
    let out = sh(&m, "(echo through-the-fifo > fifo &) ; cat fifo");
    assert_eq!(out, "through-the-fifo\n");
    // renameat2: exchange and noreplace.
    fs::write(m.join("x"), b"x").unwrap();
    fs::create_dir(m.join("y")).unwrap();
    let out = sh(
        &m,
        "python3 -c '
import ctypes, os, errno
libc = ctypes.CDLL(None, use_errno=True)
AT = -100
def r2(a, b, flags):
    if libc.renameat2(AT, a.encode(), AT, b.encode(), flags) != 0:
        return errno.errorcode[ctypes.get_errno()]
    return \"ok\"
print(r2(\"x\", \"y\", 2))   # RENAME_EXCHANGE
print(os.path.isdir(\"x\"), open(\"y\").read())
print(r2(\"y\", \"x\", 1))   # RENAME_NOREPLACE onto an existing name
print(r2(\"y\", \"z\", 1))
print(r2(\"nope\", \"z\", 2))
'",
    );
    assert_eq!(out, "ok\nTrue x\nEEXIST\nok\nENOENT\n");
}

#[test]
fn times_follow_posix() {
    let c = FuseCluster::start(3, settings());
    let m = c.path(0);
    // utimensat with nanoseconds.
    sh(
        &m,
        "touch f && touch -m -d '2001-02-03 04:05:06.123456789' f",
    );
    let md = fs::metadata(m.join("f")).unwrap();
    assert_eq!(md.mtime_nsec(), 123_456_789);
    let before = md.ctime() * 1_000_000_000 + md.ctime_nsec();
    std::thread::sleep(Duration::from_millis(20));
    // A write moves mtime and ctime; chmod moves ctime only.
    fs::write(m.join("f"), b"data").unwrap();
    let md2 = fs::metadata(m.join("f")).unwrap();
    assert!(md2.mtime() > md.mtime());
    let ct = |m: &fs::Metadata| m.ctime() * 1_000_000_000 + m.ctime_nsec();
    assert!(ct(&md2) > before);
    std::thread::sleep(Duration::from_millis(20));
    let mt = md2.mtime() * 1_000_000_000 + md2.mtime_nsec();
    fs::set_permissions(m.join("f"), fs::Permissions::from_mode(0o640)).unwrap();
    let md3 = fs::metadata(m.join("f")).unwrap();
    assert_eq!(md3.mtime() * 1_000_000_000 + md3.mtime_nsec(), mt);
    assert!(ct(&md3) > ct(&md2));
    // relatime: reading a file changed since it was last read moves its
    // access time; reading it again the same day does not.
    fs::read(m.join("f")).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let at = |m: &fs::Metadata| m.atime() * 1_000_000_000 + m.atime_nsec();
    let a1 = at(&fs::metadata(m.join("f")).unwrap());
    assert!(a1 >= ct(&md3), "atime {a1} before ctime {}", ct(&md3));
    fs::read(m.join("f")).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(at(&fs::metadata(m.join("f")).unwrap()), a1);
    // Creating an entry moves the directory's mtime.
    let d0 =
        fs::metadata(&m).unwrap().mtime_nsec() + fs::metadata(&m).unwrap().mtime() * 1_000_000_000;
    std::thread::sleep(Duration::from_millis(20));
    fs::write(m.join("g"), b"").unwrap();
    let d1 = fs::metadata(&m).unwrap();
    assert!(d1.mtime() * 1_000_000_000 + d1.mtime_nsec() > d0);
}
