//! The command line of the real binary: help, bad flags, refused settings.

use std::process::Command;

fn tessera(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(args)
        .env_remove("TESSERA_SECRET")
        .output()
        .expect("run tessera")
}

/// `--help` lists each command in its Commands section, and each command's
/// own `--help` runs and shows its usage line.
#[test]
fn help_lists_the_commands() {
    let out = tessera(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let listed: Vec<&str> = text
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for cmd in [
        "up",
        "meta",
        "datanode",
        "gateway",
        "mount",
        "status",
        "scrub",
        "user",
        "ls",
        "tree",
        "put",
        "get",
        "cat",
        "mkdir",
        "rm",
        "mv",
        "cp",
        "stat",
        "lock",
        "unlock",
        "shell",
        "completions",
    ] {
        assert!(listed.contains(&cmd), "Commands: lacks {cmd}: {listed:?}");
        let out = tessera(&[cmd, "--help"]);
        assert!(out.status.success(), "{cmd} --help failed");
        let help = String::from_utf8_lossy(&out.stdout);
        assert!(
            help.contains(&format!("Usage: tessera {cmd}")),
            "{cmd} --help:\n{help}"
        );
        // Every command shows how it is used.
        assert!(
            help.contains("Example: ") && help.contains(&format!("tessera {cmd} ")),
            "{cmd} --help has no example:\n{help}"
        );
    }
}

/// A datanode listening on an address peers cannot reach must be told the
/// one to register (`--advertise`) instead of registering 0.0.0.0.
#[test]
fn a_datanode_on_a_wildcard_address_needs_advertise() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "a-secret-of-enough-length-123").unwrap();
    let data = dir.path().join("d");
    // No --advertise at all, then ones nobody can reach.
    for advertise in [None, Some("0.0.0.0:7000"), Some("host:0"), Some("nonsense")] {
        let mut args = vec![
            "datanode",
            "--listen",
            "0.0.0.0:0",
            "--data",
            data.to_str().unwrap(),
            "--meta",
            "127.0.0.1:1",
            "--secret-file",
            secret.to_str().unwrap(),
        ];
        if let Some(a) = advertise {
            args.extend(["--advertise", a]);
        }
        let out = tessera(&args);
        assert_eq!(out.status.code(), Some(1), "--advertise {advertise:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--advertise"), "{advertise:?}: {err}");
    }
}

#[test]
fn bad_flags_exit_2_with_a_message() {
    let out = tessera(&["up", "--datanodes", "many"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value"));
}

#[test]
fn impossible_settings_are_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    let out = tessera(&[
        "up",
        "--data",
        data.to_str().unwrap(),
        "--replicas",
        "3",
        "--write-quorum",
        "1",
        "--read-quorum",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("must exceed replicas"), "{err}");
    assert!(!data.exists(), "a refused start created {}", data.display());
}

#[test]
fn servers_need_the_cluster_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = tessera(&[
        "meta",
        "--listen",
        "127.0.0.1:0",
        "--data",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--secret-file"));
    let short = dir.path().join("s");
    std::fs::write(&short, "tooshort").unwrap();
    let out = tessera(&[
        "meta",
        "--listen",
        "127.0.0.1:0",
        "--data",
        dir.path().to_str().unwrap(),
        "--secret-file",
        short.to_str().unwrap(),
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 16"));
}

/// `tessera completions SHELL` prints a script that completes the
/// commands; an unknown shell is bad usage.
#[test]
fn completions_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F _tessera"),
        ("zsh", "#compdef tessera"),
        ("fish", "complete -c tessera"),
    ] {
        let out = tessera(&["completions", shell]);
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("mkdir"), "{shell} does not complete mkdir");
    }
    let out = tessera(&["completions", "cmd.exe"]);
    assert_eq!(out.status.code(), Some(2));
}
