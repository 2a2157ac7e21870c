//! The file commands of the real binary (`tessera ls`, `put`, `get`, …)
//! against a cluster of processes: what they print, their JSON, their exit
//! codes, and trees sent and fetched back identical.

use std::path::Path;
use std::process::Command;

use serde_json::Value;
use tessera_integration::data::pseudo_random;
use tessera_integration::procs::{ProcCluster, R2W2Q1, Ran, binary, run_tessera};

fn run(url: &str, args: &[&str]) -> Ran {
    run_tessera(args, &[("TESSERA_URL", url)])
}

/// Runs and expects success with nothing on stderr (no terminal: no noise).
fn ok(url: &str, args: &[&str]) -> String {
    let r = run(url, args);
    assert_eq!(r.code, Some(0), "{args:?}: {}", r.stderr);
    assert_eq!(r.stderr, "", "{args:?} wrote to stderr");
    r.stdout
}

fn json(url: &str, args: &[&str]) -> Value {
    let out = ok(url, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}): {out}"))
}

fn write(path: &Path, data: &[u8], mtime: i64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime as u64);
    std::fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(t)
        .unwrap();
}

fn mtime(path: &Path) -> i64 {
    std::fs::metadata(path)
        .unwrap()
        .modified()
        .unwrap()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Files and their bytes below `root`, relative paths sorted.
fn contents(root: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_tree_goes_up_and_comes_back_identical_with_its_times() {
    let c = ProcCluster::start(3, R2W2Q1);
    let url = format!("http://{}", c.gateway_addr());
    let url = url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write(&src.join("a.txt"), b"hello\n", 1_600_000_000);
    write(&src.join("empty"), b"", 1_600_000_001);
    write(
        &src.join("deep/er/big.bin"),
        &pseudo_random(1, 300_000),
        1_600_000_002,
    );
    write(&src.join("name with spaces & ü.txt"), b"x", 1_600_000_003);
    for i in 0..40 {
        write(
            &src.join(format!("many/f{i:02}")),
            &pseudo_random(i, 1000 + i as usize),
            1_600_000_100 + i as i64,
        );
    }
    std::fs::create_dir_all(src.join("empty-dir")).unwrap();

    ok(url, &["put", "-r", src.to_str().unwrap(), "/"]);
    let tree = ok(url, &["tree", "/src"]);
    assert!(tree.starts_with("/src/\n"), "{tree}");
    assert!(
        tree.contains("├── a.txt\n") || tree.contains("└── a.txt\n"),
        "{tree}"
    );
    assert!(tree.contains("│   └── er/\n"), "{tree}");
    assert!(tree.ends_with("\n4 directories, 44 files\n"), "{tree}");

    // ls: names, long form, JSON; mtimes carried over.
    let names = ok(url, &["ls", "/src"]);
    assert_eq!(
        names,
        "a.txt\ndeep/\nempty\nempty-dir/\nmany/\nname with spaces & ü.txt\n"
    );
    let long = ok(url, &["ls", "-l", "/src/a.txt"]);
    assert_eq!(long, "-            6  2020-09-13 12:26  a.txt\n");
    let list = json(url, &["ls", "--json", "/src/deep/er"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    let e = &list[0];
    assert_eq!(e["path"], "/src/deep/er/big.bin");
    assert_eq!(e["name"], "big.bin");
    assert_eq!(e["type"], "file");
    assert_eq!(e["size"], 300_000);
    assert_eq!(e["mtime"], 1_600_000_002);
    assert!(e["etag"].is_string(), "{e}");
    let all = json(url, &["ls", "-R", "--json", "/src"]);
    assert_eq!(all.as_array().unwrap().len(), 44 + 4);
    let st = json(url, &["stat", "--json", "src/many"]);
    assert_eq!(
        (st["type"].as_str(), st["path"].as_str()),
        (Some("dir"), Some("/src/many"))
    );
    // With cluster access, where the blocks are: 586 blocks, 2 copies,
    // spread over the three datanodes.
    let meta = c.meta_addr();
    let secret = c.secret_file.to_str().unwrap();
    let placed = json(
        url,
        &[
            "stat",
            "--json",
            "--meta",
            &meta,
            "--secret-file",
            secret,
            "/src/deep/er/big.bin",
        ],
    );
    let p = &placed["placement"];
    assert_eq!(
        (p["blocks"].as_u64(), p["replicas"].as_u64()),
        (Some(586), Some(2)),
        "{placed}"
    );
    let slots = p["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 3, "{placed}");
    let held: u64 = slots.iter().map(|s| s["blocks"].as_u64().unwrap()).sum();
    assert_eq!(held, 2 * 586);
    assert!(
        slots
            .iter()
            .all(|s| s["state"] == "up" && s["addr"].is_string()),
        "{placed}"
    );
    assert_eq!(placed["size"], 300_000);
    let text = ok(
        url,
        &[
            "stat",
            "--meta",
            &meta,
            "--secret-file",
            secret,
            "/src/a.txt",
        ],
    );
    assert!(
        text.contains("blocks:   1 of 512 B, 2 copies each"),
        "{text}"
    );
    let r = run(url, &["stat", "--meta", &meta, "/src/a.txt"]);
    assert_eq!(r.code, Some(2), "no secret: {}", r.stderr);
    assert!(r.stderr.contains("cluster secret"), "{}", r.stderr);
    let nested = json(url, &["tree", "--json", "/src/deep"]);
    assert_eq!(nested["children"][0]["children"][0]["name"], "big.bin");

    // Back down: identical bytes and times (into an existing directory,
    // as `cp -r` does).
    let restored = dir.path().join("restored");
    std::fs::create_dir(&restored).unwrap();
    ok(url, &["get", "-r", "/src", restored.to_str().unwrap()]);
    let back = restored.join("src");
    assert!(
        contents(&src) == contents(&back),
        "the tree came back different"
    );
    assert_eq!(mtime(&back.join("deep/er/big.bin")), 1_600_000_002);
    assert!(back.join("empty-dir").is_dir());

    // Run again: nothing is sent (the ETags stay), one changed file is.
    let before = json(url, &["ls", "-R", "--json", "/src"]);
    write(&src.join("a.txt"), b"changed\n", 1_600_000_500);
    ok(url, &["put", "-r", src.to_str().unwrap(), "/"]);
    let after = json(url, &["ls", "-R", "--json", "/src"]);
    for (b, a) in before
        .as_array()
        .unwrap()
        .iter()
        .zip(after.as_array().unwrap())
    {
        assert_eq!(a["path"], b["path"]);
        if a["path"] == "/src/a.txt" {
            assert_ne!(a["etag"], b["etag"], "the changed file was not sent");
        } else if a["type"] == "file" {
            assert_eq!(a["etag"], b["etag"], "{} was sent again", a["path"]);
        }
    }
    assert_eq!(ok(url, &["cat", "/src/a.txt"]), "changed\n");
    // get -r again fetches only that file.
    ok(url, &["get", "-r", "/src", restored.to_str().unwrap()]);
    assert!(
        contents(&src) == contents(&back),
        "the tree came back different"
    );
    // Fetched onto a new name, a directory is that name.
    let named = dir.path().join("named");
    ok(url, &["get", "-r", "/src/deep", named.to_str().unwrap()]);
    assert!(named.join("er/big.bin").is_file());
}

#[test]
fn directories_copies_moves_locks_and_the_errors_people_see() {
    let c = ProcCluster::start(3, R2W2Q1);
    let url = format!("http://{}", c.gateway_addr());
    let url = url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f.txt");
    write(&f, b"one", 1_700_000_000);

    ok(url, &["mkdir", "-p", "/a/b/c"]);
    ok(url, &["mkdir", "-p", "/a/b"]);
    // put onto a directory goes inside it.
    ok(url, &["put", f.to_str().unwrap(), "/a/b"]);
    assert_eq!(ok(url, &["cat", "/a/b/f.txt"]), "one");
    ok(url, &["cp", "-r", "/a/b", "/a/copy"]);
    assert_eq!(ok(url, &["cat", "/a/copy/f.txt"]), "one");
    ok(url, &["mv", "/a/copy/f.txt", "/a"]);
    assert_eq!(ok(url, &["ls", "/a"]), "b/\ncopy/\nf.txt\n");
    ok(url, &["rm", "-r", "/a/copy"]);
    ok(url, &["rm", "/a/f.txt"]);
    assert_eq!(ok(url, &["ls", "/a"]), "b/\n");

    // Failures: exit 1 and one line naming the path and the cause.
    let fails = |args: &[&str], said: &str| {
        let r = run(url, args);
        assert_eq!(r.code, Some(1), "{args:?}: {}", r.stderr);
        assert_eq!(r.stderr.lines().count(), 1, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(said), "{args:?}: {}", r.stderr);
    };
    fails(
        &["cat", "/nope.txt"],
        "tessera: /nope.txt: no such file or directory",
    );
    fails(&["ls", "/nope"], "/nope: no such file or directory");
    fails(&["rm", "/a"], "/a: is a directory (rm -r removes it)");
    fails(
        &["mkdir", "/x/y"],
        "/x/y: the parent directory does not exist",
    );
    fails(&["mkdir", "/a"], "/a: already exists");
    fails(&["cp", "/a", "/z"], "/a: is a directory (cp -r copies it)");
    fails(&["cat", "/a"], "/a: is a directory");
    // A trailing slash asks for a directory: never a file of that name.
    fails(
        &["put", f.to_str().unwrap(), "/nodir/"],
        "/nodir: no such directory",
    );
    fails(&["ls", "/nodir"], "/nodir: no such file or directory");
    fails(
        &["put", f.to_str().unwrap(), "/a/b/f.txt/"],
        "/a/b/f.txt: not a directory",
    );
    fails(
        &["get", "/a/b/f.txt", "/nonexistent-dir/x"],
        "/nonexistent-dir/x",
    );

    // A lock: others' writes are refused, saying who holds it.
    let token = ok(
        url,
        &["lock", "--owner", "alice", "--timeout", "120", "/a/b/f.txt"],
    );
    let token = token.trim();
    assert!(token.starts_with("opaquelocktoken:"), "{token}");
    write(&f, b"two", 1_700_000_001);
    let r = run(url, &["put", f.to_str().unwrap(), "/a/b/f.txt"]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr.contains("/a/b/f.txt: locked by alice until "),
        "{}",
        r.stderr
    );
    fails(
        &["unlock", "/a/b/f.txt", "opaquelocktoken:not-it"],
        "no lock with the token",
    );
    ok(url, &["unlock", "/a/b/f.txt", token]);
    ok(url, &["put", f.to_str().unwrap(), "/a/b/f.txt"]);
    assert_eq!(ok(url, &["cat", "/a/b/f.txt"]), "two");

    // Bad usage: exit 2.
    for args in [
        vec!["put", "only-one"],
        vec!["ls", "--no-such-flag"],
        vec!["--url", "ftp://127.0.0.1:1", "ls"],
        vec!["--url", "not a url", "ls"],
        vec![
            "--url",
            "https://127.0.0.1:1",
            "--ca-cert",
            "/nonexistent.pem",
            "ls",
        ],
    ] {
        let r = run(url, &args);
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
    }
    // A gateway that is not there: exit 1, saying so.
    let r = run("http://127.0.0.1:1", &["ls"]);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr
            .contains("cannot reach the gateway at http://127.0.0.1:1"),
        "{}",
        r.stderr
    );
}

/// `put -r` killed half-way (SIGKILL), then run again: the second run
/// sends what is missing and leaves what arrived whole; nothing half-sent
/// is ever there under a file's name.
#[test]
fn a_put_killed_half_way_finishes_when_run_again() {
    let c = ProcCluster::start(3, R2W2Q1);
    let url = format!("http://{}", c.gateway_addr());
    let url = url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("tree");
    let n = 400;
    for i in 0..n {
        write(
            &src.join(format!("d{}/f{i:03}", i % 4)),
            &pseudo_random(i, 256 << 10),
            1_650_000_000 + i as i64,
        );
    }
    // Into an existing directory (here /), as `cp -r` does: the same
    // command run again lands in the same place.
    let mut child = Command::new(binary())
        .args(["put", "-r", src.to_str().unwrap(), "/"])
        .env("TESSERA_URL", url)
        .spawn()
        .unwrap();
    // Kill it once some files are there.
    let listed = |url: &str| -> Vec<Value> {
        let r = run(url, &["ls", "-R", "--json", "/tree"]);
        if r.code != Some(0) {
            return Vec::new();
        }
        let v: Value = serde_json::from_str(&r.stdout).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == "file")
            .cloned()
            .collect()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while listed(url).len() < 20 {
        assert!(std::time::Instant::now() < deadline, "nothing arrived");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = listed(url);
    assert!(
        before.len() < n as usize,
        "the put finished before it was killed ({} files): make the tree larger",
        before.len()
    );
    // Whatever is there is whole.
    for e in &before {
        assert_eq!(e["size"], 256 << 10, "{e}");
    }
    ok(url, &["put", "-r", src.to_str().unwrap(), "/"]);
    let after = listed(url);
    assert_eq!(after.len(), n as usize);
    // What had arrived was not sent again.
    for b in &before {
        let a = after.iter().find(|a| a["path"] == b["path"]).unwrap();
        if b["mtime"] == a["mtime"] {
            assert_eq!(a["etag"], b["etag"], "{} was sent again", a["path"]);
        }
    }
    let back = dir.path().join("back");
    ok(url, &["get", "-r", "/tree", back.to_str().unwrap()]);
    assert!(
        contents(&src) == contents(&back),
        "the tree came back different"
    );
}

/// A gateway serving https: the file commands reach it with --ca-cert
/// (its self-signed certificate), and refuse it without.
#[test]
fn the_commands_talk_to_an_https_gateway() {
    let certs = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let c = ProcCluster::start_with(
        3,
        R2W2Q1,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let addr = c.gateway_addr();
    let port = addr.rsplit(':').next().unwrap();
    let url = format!("https://localhost:{port}");
    let ca = cert.to_str().unwrap();
    let f = certs.path().join("f.txt");
    write(&f, b"secret stuff", 1_700_000_000);
    ok(&url, &["--ca-cert", ca, "put", f.to_str().unwrap(), "/"]);
    assert_eq!(
        ok(&url, &["--ca-cert", ca, "cat", "/f.txt"]),
        "secret stuff"
    );
    assert_eq!(
        ok(&url, &["--ca-cert", ca, "ls", "-l", "/"]),
        "-           12  2023-11-14 22:13  f.txt\n"
    );
    // Not trusted without it: exit 1, saying why.
    let r = run(&url, &["ls", "/"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("certificate"), "{}", r.stderr);
}
