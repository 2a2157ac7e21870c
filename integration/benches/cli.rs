//! The command line against a gateway (real processes): `tessera put` of a
//! large file next to `curl -T` to the same gateway in the same run, `put -r`
//! and `get -r` of many small files (against those processes and against
//! `tessera up`, curl's pace for the same files beside each), and `ls` of a
//! large directory.
//!
//! `cargo bench -p tessera-integration --bench cli` (CLI_MIB sets the large
//! file's size, default 1024; needs curl).

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use tessera_integration::data::pseudo_random;
use tessera_integration::procs::{Proc, ProcCluster, R2W2Q1, binary};

fn tessera(url: &str, args: &[&str]) -> Duration {
    let started = Instant::now();
    let out = Command::new(binary())
        .args(args)
        .env("TESSERA_URL", url)
        .output()
        .expect("run tessera");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn curl_put(url: &str, file: &Path, name: &str) -> Duration {
    let started = Instant::now();
    let out = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-w", "%{http_code}", "-T"])
        .arg(file)
        .arg(format!("{url}/{name}"))
        .output()
        .expect("run curl (apt-get install curl)");
    let took = started.elapsed();
    let code = String::from_utf8_lossy(&out.stdout);
    assert!(
        code == "201" || code == "204",
        "curl: {code} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// Runs curl with `args`, its output thrown away; panics if it fails.
fn curl(args: &[&str]) {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "-o", "/dev/null"])
        .args(args)
        .output()
        .expect("run curl (apt-get install curl)");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn small_files(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for i in 0..n {
        std::fs::write(dir.join(format!("f{i:05}")), pseudo_random(i as u64, 4096)).unwrap();
    }
}

/// `put -r` of the files in `small` (2000 of them), again when all are
/// there, `curl -Z` of the same files as the gateway's own pace, and
/// `get -r` back into `back`.
fn small_round(url: &str, small: &Path, back: &Path) {
    let took = tessera(url, &["put", "-r", small.to_str().unwrap(), "/small"]);
    println!(
        "  put -r 2000 x 4 KiB: {:.0} files/s ({:.2} s)",
        2000.0 / took.as_secs_f64(),
        took.as_secs_f64()
    );
    // Run again onto the parent: /small exists, every file is skipped.
    let again = tessera(url, &["put", "-r", small.to_str().unwrap(), "/"]);
    println!(
        "  put -r again, all there already: {:.0} files/s ({:.2} s)",
        2000.0 / again.as_secs_f64(),
        again.as_secs_f64()
    );
    // The server's own pace for the same files: one curl, as many at a time.
    curl(&["-X", "MKCOL", &format!("{url}/curl-small/")]);
    let names: Vec<String> = (0..2000).map(|i| format!("f{i:05}")).collect();
    let started = Instant::now();
    let glob = format!("{{{}}}", names.join(","));
    let out = Command::new("curl")
        .current_dir(small)
        .args(["-sS", "--fail", "-Z", "--parallel-max", "32", "-T", &glob])
        .arg(format!("{url}/curl-small/"))
        .output()
        .expect("curl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let took = started.elapsed();
    println!(
        "    baseline, curl -Z (32 at a time) of the same 2000 files: {:.0} files/s",
        2000.0 / took.as_secs_f64()
    );
    let took = tessera(url, &["get", "-r", "/small", back.to_str().unwrap()]);
    println!(
        "  get -r 2000 x 4 KiB: {:.0} files/s ({:.2} s)",
        2000.0 / took.as_secs_f64(),
        took.as_secs_f64()
    );
}

fn main() {
    let mib: usize = std::env::var("CLI_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024);
    let c = ProcCluster::start(3, R2W2Q1);
    let url = format!("http://{}", c.gateway_addr());
    let url = url.as_str();
    let dir = tempfile::tempdir().unwrap();

    // A large file: curl and tessera in turns, best of two each.
    let big = dir.path().join("big.bin");
    {
        let mut f = std::fs::File::create(&big).unwrap();
        for i in 0..mib.div_ceil(64) {
            f.write_all(&pseudo_random(i as u64, 64 << 20)).unwrap();
        }
    }
    let size = std::fs::metadata(&big).unwrap().len() as f64;
    let (mut by_curl, mut cli) = (Duration::MAX, Duration::MAX);
    for round in 0..2 {
        by_curl = by_curl.min(curl_put(url, &big, &format!("curl-{round}.bin")));
        let name = format!("/cli-{round}.bin");
        cli = cli.min(tessera(url, &["put", big.to_str().unwrap(), &name]));
    }
    let rate = |d: Duration| size / d.as_secs_f64() / 1e6;
    println!(
        "put {mib} MiB: tessera {:.0} MB/s, curl -T {:.0} MB/s: {:.2}x curl",
        rate(cli),
        rate(by_curl),
        by_curl.as_secs_f64() / cli.as_secs_f64()
    );
    std::fs::remove_file(&big).unwrap();

    // 2000 files of 4 KiB up and back, here and against `tessera up`.
    let small = dir.path().join("small");
    small_files(&small, 2000);
    println!("separate processes (meta, 3 datanodes, gateway):");
    small_round(url, &small, &dir.path().join("back"));
    {
        let up_dir = tempfile::tempdir().unwrap();
        let data = up_dir.path().join("data");
        let up = Proc::start_until(
            "up",
            &[
                "up",
                "--webdav",
                "127.0.0.1:0",
                "--data",
                data.to_str().unwrap(),
            ],
            up_dir.path(),
            "WebDAV on ",
        );
        println!("tessera up (one process, the README's start):");
        small_round(
            &format!("http://{}", up.addr),
            &small,
            &up_dir.path().join("back"),
        );
    }

    // ls of a 5000-entry directory, best of five (the process included).
    let many = dir.path().join("many");
    small_files(&many, 5000);
    tessera(url, &["put", "-r", many.to_str().unwrap(), "/many"]);
    let best = (0..5)
        .map(|_| {
            let started = Instant::now();
            curl(&["-X", "PROPFIND", "-H", "Depth: 1", &format!("{url}/many/")]);
            started.elapsed()
        })
        .min()
        .unwrap();
    println!(
        "  baseline, curl PROPFIND Depth 1 of the 5000 entries: {:.0} ms",
        best.as_secs_f64() * 1e3
    );
    for args in [
        vec!["ls", "/many"],
        vec!["ls", "-l", "/many"],
        vec!["ls", "--json", "/many"],
    ] {
        let best = (0..5).map(|_| tessera(url, &args)).min().unwrap();
        println!(
            "{} of 5000 entries: {:.0} ms",
            args.join(" "),
            best.as_secs_f64() * 1e3
        );
    }
}
