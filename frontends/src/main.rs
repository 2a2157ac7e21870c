//! The `tessera` command: parses arguments and calls library functions.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use tessera::{cli, servers, up};
use tessera_datanode::DatanodeConfig;
use tessera_gateway::FsOptions;
use tessera_meta::Settings;
use tessera_rpc::Secret;
use tokio_util::sync::CancellationToken;

/// Tessera: a distributed file system you mount over WebDAV or FUSE.
#[derive(Parser)]
#[command(name = "tessera", version)]
struct Cli {
    /// The WebDAV gateway the file commands (ls, put, get, …) talk to.
    #[arg(
        long,
        global = true,
        env = "TESSERA_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    url: String,
    /// User for the gateway (the password comes from TESSERA_PASSWORD, or
    /// is asked on the terminal).
    #[arg(long, global = true, env = "TESSERA_USER", value_name = "NAME")]
    user: Option<String>,
    /// For an https --url: the certificate (PEM) the gateway's must chain
    /// to, e.g. a self-signed gateway's own [default: the system's roots].
    #[arg(long, global = true, env = "TESSERA_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// File commands: print nothing but errors.
    #[arg(long, short = 'q', global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Args, Clone)]
struct SecretArg {
    /// File holding the cluster secret (16 characters at least).
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// The cluster secret itself (used when --secret-file is absent).
    #[arg(
        long = "secret",
        env = "TESSERA_SECRET",
        hide_env_values = true,
        hide = true
    )]
    secret: Option<String>,
}

impl SecretArg {
    fn resolve(&self) -> Result<Secret> {
        Ok(Secret::resolve(
            self.secret_file.as_deref(),
            self.secret.as_deref(),
        )?)
    }
}

/// Who may use the WebDAV gateway, and over what.
#[derive(Args, Clone)]
struct AccessArgs {
    /// Users file (NAME:ARGON2-HASH lines; `tessera user add` writes it):
    /// every request must then carry the name and password of one of them
    /// (HTTP Basic).
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,
    /// Serve a non-loopback address without authentication (anyone who
    /// can reach it can read and change every file).
    #[arg(long)]
    no_auth: bool,
    /// TLS certificate chain (PEM); serves HTTPS with --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl AccessArgs {
    fn access(&self) -> servers::Access {
        servers::Access {
            users: self.users.clone(),
            no_auth: self.no_auth,
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
        }
    }
}

/// Where to serve Prometheus metrics.
#[derive(Args, Clone)]
struct MetricsArg {
    /// Serve Prometheus metrics (`GET /metrics`) on this address, e.g.
    /// 127.0.0.1:9100 (`:0` picks a free port, named in the ready line).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
}

#[derive(Subcommand)]
enum UserCommand {
    /// Add a user to a users file, or change their password. The password
    /// comes from TESSERA_PASSWORD, else from a prompt on a terminal, else
    /// from the first line of standard input.
    ///
    /// Example: tessera user add alice --users /etc/tessera/users
    Add {
        /// The user's name.
        name: String,
        /// The users file (created, mode 0600, if absent).
        #[arg(long, value_name = "FILE")]
        users: PathBuf,
    },
}

#[derive(Args, Clone)]
struct SettingsArgs {
    /// Copies of every block (R) for a new cluster [default: 2].
    #[arg(long)]
    replicas: Option<u32>,
    /// Acknowledgements a write waits for (W) [default: 2].
    #[arg(long)]
    write_quorum: Option<u32>,
    /// Replicas a read must hear from (Q) [default: 1].
    #[arg(long)]
    read_quorum: Option<u32>,
}

impl SettingsArgs {
    /// `None` when no flag was given: an existing cluster keeps its own.
    fn settings(&self) -> Result<Option<Settings>> {
        if self.replicas.is_none() && self.write_quorum.is_none() && self.read_quorum.is_none() {
            return Ok(None);
        }
        let d = Settings::default();
        let s = Settings {
            replicas: self.replicas.unwrap_or(d.replicas),
            write_quorum: self.write_quorum.unwrap_or(d.write_quorum),
            read_quorum: self.read_quorum.unwrap_or(d.read_quorum),
        };
        s.validate()
            .map_err(|e| anyhow::anyhow!("impossible cluster settings: {e}"))?;
        Ok(Some(s))
    }
}

#[derive(Subcommand)]
enum Command {
    #[command(flatten)]
    Files(cli::FileCommand),
    /// An interactive shell: the file commands with a current directory
    /// (`cd`, `pwd`), history, Tab completion of commands and remote
    /// paths, `help [COMMAND]`. `tessera` alone on a terminal starts it.
    ///
    /// Example: tessera --url http://127.0.0.1:8080 shell
    Shell,
    /// Print a completion script for a shell.
    ///
    /// Example: tessera completions bash > /etc/bash_completion.d/tessera
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Run meta, datanodes and a WebDAV gateway in one process.
    ///
    /// Example: tessera up --data ./tessera-data --webdav 127.0.0.1:8080 --metrics 127.0.0.1:9464
    Up {
        /// Data directory.
        #[arg(long, default_value = "tessera-data", env = "TESSERA_DATA")]
        data: PathBuf,
        /// Number of datanodes.
        #[arg(long, default_value_t = 3)]
        datanodes: u32,
        #[command(flatten)]
        settings: SettingsArgs,
        /// Address to serve WebDAV on.
        #[arg(long, default_value = "127.0.0.1:8080")]
        webdav: String,
        /// Also FUSE-mount the file system here.
        #[arg(long)]
        mount: Option<PathBuf>,
        /// redb page cache of each datanode, in MiB.
        #[arg(long, default_value_t = 128)]
        datanode_cache_mib: usize,
        #[command(flatten)]
        metrics: MetricsArg,
        #[command(flatten)]
        access: AccessArgs,
    },
    /// Manage the users of a users file (see --users).
    ///
    /// Example: tessera user add alice --users /etc/tessera/users
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Run the metadata service.
    ///
    /// Example: tessera meta --listen 127.0.0.1:7000 --data meta --secret-file secret
    Meta {
        /// Address to listen on.
        #[arg(long)]
        listen: String,
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        #[command(flatten)]
        settings: SettingsArgs,
        /// Milliseconds a datanode may go without a heartbeat (they send
        /// one a second) before it is shown `down`.
        #[arg(long, value_name = "MS", default_value_t = 3000,
              value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
        node_timeout_ms: u64,
        #[command(flatten)]
        metrics: MetricsArg,
        #[command(flatten)]
        secret: SecretArg,
    },
    /// Run a datanode.
    ///
    /// Example: tessera datanode --listen 127.0.0.1:7001 --data dn0 --meta 127.0.0.1:7000 --secret-file secret
    Datanode {
        /// Address to listen on.
        #[arg(long)]
        listen: String,
        /// Data directory.
        #[arg(long)]
        data: PathBuf,
        /// Address of the metadata service.
        #[arg(long)]
        meta: String,
        /// Ring slot to take (replacing a node that is gone).
        #[arg(long)]
        slot: Option<u32>,
        /// redb page cache, in MiB (reads are much faster when the node's
        /// hot data fits).
        #[arg(long, default_value_t = 256)]
        cache_mib: usize,
        /// The address peers and gateways should use to reach this node
        /// (needed when listening on 0.0.0.0).
        #[arg(long, value_name = "HOST:PORT")]
        advertise: Option<String>,
        /// Free space to keep on the data directory's file system, in MiB;
        /// writes that would eat into it are refused as "full" [default:
        /// 64, or a sixteenth of a smaller file system].
        #[arg(long, value_name = "MIB")]
        reserve_mib: Option<u64>,
        /// Background scrub: MiB of stored blocks read and checked per
        /// second (0: none; `tessera scrub` still runs a pass).
        #[arg(long, value_name = "MIB", default_value_t = 4)]
        scrub_mib_per_s: u64,
        /// Seconds between background scrub passes.
        #[arg(long, value_name = "S", default_value_t = 3600)]
        scrub_pause_s: u64,
        #[command(flatten)]
        metrics: MetricsArg,
        #[command(flatten)]
        secret: SecretArg,
    },
    /// FUSE-mount the file system (as root; serves until unmounted or
    /// signalled).
    ///
    /// Example: tessera mount /mnt/tessera --meta 127.0.0.1:7000 --secret-file tessera-data/secret
    Mount {
        /// Empty directory to mount on.
        mountpoint: PathBuf,
        /// Address of the metadata service.
        #[arg(long)]
        meta: String,
        /// Detach once mounted (the mount keeps running in the background;
        /// `umount MOUNTPOINT` ends it).
        #[arg(long)]
        daemon: bool,
        #[command(flatten)]
        metrics: MetricsArg,
        #[command(flatten)]
        secret: SecretArg,
    },
    /// Show the cluster: every datanode with its state (up or down) and
    /// counts, and the writes blocked for want of datanodes.
    ///
    /// Example: tessera status --meta 127.0.0.1:7000 --secret-file tessera-data/secret
    Status {
        /// Address of the metadata service.
        #[arg(long)]
        meta: String,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        secret: SecretArg,
    },
    /// Ask every datanode for a scrub pass now: each reads its blocks,
    /// checks their SHA-256 and copies damaged or missing ones from the
    /// other replicas. With --wait, wait for every node to finish and
    /// print what they found.
    ///
    /// Example: tessera scrub --meta 127.0.0.1:7000 --secret-file tessera-data/secret --wait
    Scrub {
        /// Address of the metadata service.
        #[arg(long)]
        meta: String,
        /// Wait until every datanode that is up finished the pass.
        #[arg(long)]
        wait: bool,
        /// With --wait: print one JSON object instead of lines.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        secret: SecretArg,
    },
    /// Run a WebDAV gateway.
    ///
    /// Example: tessera gateway --meta 127.0.0.1:7000 --webdav 127.0.0.1:8080 --secret-file secret
    Gateway {
        /// Address of the metadata service.
        #[arg(long)]
        meta: String,
        /// Address to serve WebDAV on.
        #[arg(long)]
        webdav: String,
        /// Seconds a replaced or deleted file's data stays readable (for
        /// readers that opened it) before GC deletes it.
        #[arg(long, value_name = "SECS", default_value_t = 120)]
        gc_grace: u64,
        /// Seconds an upload may take before its unfinished data is
        /// collected (a long upload renews it while it streams).
        #[arg(long, value_name = "SECS", default_value_t = 6 * 3600)]
        upload_ttl: u64,
        #[command(flatten)]
        metrics: MetricsArg,
        #[command(flatten)]
        access: AccessArgs,
        #[command(flatten)]
        secret: SecretArg,
    },
}

/// The password for `user add`: TESSERA_PASSWORD, a prompt on a terminal,
/// or the first line of standard input.
fn read_new_password() -> Result<String> {
    use std::io::IsTerminal;
    if let Ok(p) = std::env::var("TESSERA_PASSWORD") {
        return Ok(p);
    }
    if std::io::stdin().is_terminal() {
        let p = rpassword::prompt_password("password: ")?;
        let again = rpassword::prompt_password("again: ")?;
        anyhow::ensure!(p == again, "the passwords differ; nothing was changed");
        return Ok(p);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// `--daemon`: runs the same command again without it, in a new session
/// with no terminal, passes on what it says until it is mounted (or
/// failed), and leaves it running.
fn daemonize() -> Result<()> {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let args: Vec<std::ffi::OsString> = std::env::args_os()
        .skip(1)
        .filter(|a| a != "--daemon")
        .collect();
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    // SAFETY: setsid is async-signal-safe and touches no memory.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .context("cannot start the mount in the background")?;
    let stderr = child.stderr.take().expect("piped stderr");
    let errors = std::thread::spawn(move || {
        let mut lines = Vec::new();
        for l in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            lines.push(l);
            if lines.len() > 50 {
                lines.remove(0);
            }
        }
        lines
    });
    let stdout = child.stdout.take().expect("piped stdout");
    let mut first = String::new();
    std::io::BufReader::new(stdout).read_line(&mut first)?;
    if first.starts_with("tessera mount: serving") {
        println!("{} (pid {})", first.trim_end(), child.id());
        return Ok(());
    }
    let status = child.wait()?;
    let said = errors.join().unwrap_or_default().join("\n");
    anyhow::bail!("the mount did not start ({status}): {said}")
}

/// Cancelled on Ctrl-C or SIGTERM.
fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(s) => { s.recv().await; } None => std::future::pending().await } } => {}
        }
        eprintln!("tessera: shutting down");
        t.cancel();
    });
    token
}

#[tokio::main]
async fn main() {
    tessera_rpc::tune_allocator();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,h2=warn,hyper=warn".into()),
        )
        // Colours for a person at a terminal, plain text for a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    if let Some(done) = run_file_command(&cli).await {
        match done {
            Ok(()) => return,
            Err(e) => {
                eprintln!("tessera: {e}");
                std::process::exit(e.code);
            }
        }
    }
    if let Err(e) = run(cli).await {
        eprintln!("tessera: {e:#}");
        std::process::exit(1);
    }
}

/// The file commands (a WebDAV client), the shell and completions; `None`
/// for the others.
async fn run_file_command(cli: &Cli) -> Option<Result<(), cli::CliError>> {
    let connect = || {
        cli::Remote::connect(
            &cli.url,
            cli.user.as_deref(),
            cli.ca_cert.as_deref(),
            cli.quiet,
        )
    };
    Some(match &cli.command {
        None | Some(Command::Shell) => {
            if cli.command.is_none() && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                return Some(Err(cli::CliError::usage(
                    "no command given (`tessera --help` lists them; on a terminal, \
                     `tessera` alone starts the shell)",
                )));
            }
            match connect() {
                Ok(r) => cli::shell::run(r).await,
                Err(e) => Err(e),
            }
        }
        Some(Command::Completions { shell }) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "tessera", &mut std::io::stdout());
            Ok(())
        }
        Some(Command::Files(f)) => match connect() {
            Ok(mut r) => cli::run(&mut r, f).await,
            Err(e) => Err(e),
        },
        Some(_) => return None,
    })
}

async fn run(cli: Cli) -> Result<()> {
    let shutdown = shutdown_on_signals();
    let Some(command) = cli.command else {
        unreachable!("no command: the shell ran in run_file_command")
    };
    match command {
        Command::Up {
            data,
            datanodes,
            settings,
            webdav,
            mount,
            datanode_cache_mib,
            metrics,
            access,
        } => {
            let config = up::UpConfig {
                mount,
                data,
                datanodes,
                settings: settings.settings()?,
                webdav,
                access: access.access(),
                datanode_cache_bytes: datanode_cache_mib << 20,
                metrics: metrics.metrics,
                ..Default::default()
            };
            up::run(config, shutdown, None).await
        }
        Command::User {
            command: UserCommand::Add { name, users },
        } => {
            let password = read_new_password()?;
            let existed = tessera::webdav::auth::add_user(&users, &name, &password)
                .map_err(anyhow::Error::msg)?;
            println!(
                "{} {name} in {}",
                if existed {
                    "changed the password of"
                } else {
                    "added"
                },
                users.display()
            );
            Ok(())
        }
        Command::Meta {
            listen,
            data,
            settings,
            node_timeout_ms,
            metrics,
            secret,
        } => {
            let metrics = servers::metrics(metrics.metrics.as_deref(), &shutdown).await?;
            servers::meta(
                &listen,
                data,
                settings.settings()?,
                Duration::from_millis(node_timeout_ms),
                secret.resolve()?,
                metrics,
                shutdown,
            )
            .await
        }
        Command::Datanode {
            listen,
            data,
            meta,
            slot,
            cache_mib,
            advertise,
            reserve_mib,
            scrub_mib_per_s,
            scrub_pause_s,
            metrics,
            secret,
        } => {
            let mut config = DatanodeConfig::new(data, meta);
            config.heal.scrub_rate = scrub_mib_per_s << 20;
            config.heal.scrub_pause = Duration::from_secs(scrub_pause_s);
            config.slot = slot;
            config.cache_bytes = cache_mib << 20;
            config.advertise = advertise;
            config.reserve_bytes = reserve_mib.map(|m| m << 20);
            let metrics = servers::metrics(metrics.metrics.as_deref(), &shutdown).await?;
            servers::datanode(&listen, config, secret.resolve()?, metrics, shutdown).await
        }
        Command::Mount {
            mountpoint,
            meta,
            daemon,
            metrics,
            secret,
        } => {
            if daemon {
                return daemonize();
            }
            if let Some(m) = servers::metrics(metrics.metrics.as_deref(), &shutdown).await? {
                tracing::info!("Prometheus metrics on http://{m}/metrics");
            }
            let secret = secret.resolve().context("mount")?;
            let options = FsOptions {
                lazy_names: true,
                ..FsOptions::default()
            };
            let fs = servers::connect_fs(&meta, secret, options, Duration::from_secs(30)).await?;
            tessera::fuse::run(fs, &mountpoint, shutdown).await
        }
        Command::Status { meta, json, secret } => {
            let health = tessera::status::fetch(&meta, secret.resolve().context("status")?).await?;
            if json {
                println!("{}", tessera::status::to_json(&health));
            } else {
                print!("{}", tessera::status::to_table(&health));
            }
            Ok(())
        }
        Command::Scrub {
            meta,
            wait,
            json,
            secret,
        } => {
            let secret = secret.resolve().context("scrub")?;
            tessera::status::scrub(&meta, secret, wait, json).await
        }
        Command::Gateway {
            meta,
            webdav,
            gc_grace,
            upload_ttl,
            metrics,
            access,
            secret,
        } => {
            let options = FsOptions {
                gc_grace: Duration::from_secs(gc_grace),
                pending_ttl: Duration::from_secs(upload_ttl.max(1)),
                ..FsOptions::default()
            };
            servers::gateway(
                &meta,
                &webdav,
                &access.access(),
                secret.resolve().context("gateway")?,
                options,
                servers::metrics(metrics.metrics.as_deref(), &shutdown).await?,
                shutdown,
            )
            .await
        }
        _ => unreachable!("the file commands ran in run_file_command"),
    }
}
