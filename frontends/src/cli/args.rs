//! The file commands' arguments (clap), shared by the command line and
//! the shell, and [`run`], which carries one out.

use std::path::{Path, PathBuf};

use clap::Subcommand;

use super::{CliError, Remote, listing, ops, transfer};

#[derive(Subcommand, Debug, Clone)]
pub enum FileCommand {
    /// List a directory (or show a file).
    ///
    /// Example: tessera ls -l /photos
    Ls {
        /// Remote paths (absolute, or relative to the current directory) [default: .].
        paths: Vec<String>,
        /// Long listing: type, size, modification time (UTC), name.
        #[arg(short = 'l')]
        long: bool,
        /// Everything below, not only the directory's own entries.
        #[arg(short = 'R')]
        recursive: bool,
        /// One JSON array of entries (path, name, type, size, mtime, etag).
        #[arg(long)]
        json: bool,
    },
    /// Draw a directory's hierarchy, like tree(1).
    ///
    /// Example: tessera tree /projects
    Tree {
        /// Remote directory [default: /].
        path: Option<String>,
        /// The hierarchy as nested JSON ("children" under each directory).
        #[arg(long)]
        json: bool,
    },
    /// Send local files (and trees with -r) to the cluster.
    ///
    /// Onto an existing directory, each goes inside it. Files already
    /// there with the same size and modification time are skipped, so an
    /// interrupted `put -r` run again carries on.
    ///
    /// Example: tessera put -r ./photos report.pdf /backup
    Put {
        /// LOCAL... REMOTE
        #[arg(required = true, num_args = 2.., value_name = "PATH")]
        paths: Vec<String>,
        /// Send directories and all they hold.
        #[arg(short = 'r', long)]
        recursive: bool,
    },
    /// Fetch remote files (and trees with -r).
    ///
    /// Into an existing local directory, each goes inside it. Files
    /// already there with the same size and modification time are
    /// skipped, so an interrupted `get -r` run again carries on.
    ///
    /// Example: tessera get -r /backup/photos ./restored
    Get {
        /// REMOTE... LOCAL
        #[arg(required = true, num_args = 2.., value_name = "PATH")]
        paths: Vec<String>,
        /// Fetch directories and all they hold.
        #[arg(short = 'r', long)]
        recursive: bool,
    },
    /// Print remote files to standard output.
    ///
    /// Example: tessera cat /notes/todo.txt
    Cat {
        #[arg(required = true)]
        paths: Vec<String>,
    },
    /// Make remote directories.
    ///
    /// Example: tessera mkdir -p /projects/2027/q1
    Mkdir {
        #[arg(required = true)]
        paths: Vec<String>,
        /// Make missing parents too; an existing directory is fine.
        #[arg(short = 'p', long)]
        parents: bool,
    },
    /// Remove remote files (and directories with -r).
    ///
    /// Example: tessera rm -r /tmp/old
    Rm {
        #[arg(required = true)]
        paths: Vec<String>,
        /// Remove directories and all they hold.
        #[arg(short = 'r', long)]
        recursive: bool,
    },
    /// Move or rename on the server (onto a directory: into it).
    ///
    /// Example: tessera mv /inbox/report.pdf /archive/
    Mv { source: String, target: String },
    /// Copy on the server (onto a directory: into it).
    ///
    /// Nothing travels through this machine.
    ///
    /// Example: tessera cp -r /projects/site /projects/site-v2
    Cp {
        source: String,
        target: String,
        /// Copy directories and all they hold.
        #[arg(short = 'r', long)]
        recursive: bool,
    },
    /// Show a remote file's or directory's size, modification time and
    /// ETag (and with --meta, which datanodes hold its blocks).
    ///
    /// Example: tessera stat --json /photos/cat.jpg
    Stat {
        path: String,
        /// One JSON object (path, name, type, size, mtime, etag; with
        /// --meta, "placement" too).
        #[arg(long)]
        json: bool,
        /// Also show where the blocks live, asking the metadata service at
        /// this address (needs the cluster secret).
        #[arg(long, value_name = "ADDR")]
        meta: Option<String>,
        /// The cluster secret for --meta (else TESSERA_SECRET).
        #[arg(long, value_name = "FILE", requires = "meta")]
        secret_file: Option<PathBuf>,
    },
    /// Lock a remote path for writing and print the lock's token.
    ///
    /// Others' writes fail with "locked" until `unlock` or the timeout.
    ///
    /// Example: TOKEN=$(tessera lock /db/state.json --timeout 60)
    Lock {
        path: String,
        /// Seconds the lock lasts unless unlocked first.
        #[arg(long, value_name = "SECS", default_value_t = 600,
              value_parser = clap::value_parser!(u64).range(1..=604_800))]
        timeout: u64,
        /// Who holds it, as others see it [default: --user, or this machine's user].
        #[arg(long)]
        owner: Option<String>,
    },
    /// Release a lock taken with `lock`.
    ///
    /// Example: tessera unlock /db/state.json "$TOKEN"
    Unlock { path: String, token: String },
}

/// Carries out one file command, printing what it shows on stdout.
pub async fn run(r: &mut Remote, cmd: &FileCommand) -> Result<(), CliError> {
    let print = |s: String| print!("{s}");
    match cmd {
        FileCommand::Ls {
            paths,
            long,
            recursive,
            json,
        } => {
            let paths = if paths.is_empty() {
                vec![".".to_string()]
            } else {
                paths.clone()
            };
            let several = paths.len() > 1 && !json;
            for (i, p) in paths.iter().enumerate() {
                let at = r.path(p)?;
                if several {
                    print(format!("{}{at}:\n", if i > 0 { "\n" } else { "" }));
                }
                print(listing::ls(r, &at, *long, *recursive, *json).await?);
            }
        }
        FileCommand::Tree { path, json } => {
            let p = r.path(path.as_deref().unwrap_or("."))?;
            print(listing::tree(r, &p, *json).await?);
        }
        FileCommand::Stat {
            path,
            json,
            meta,
            secret_file,
        } => {
            let at = r.path(path)?;
            let shown = listing::stat(r, &at, *json).await?;
            let Some(meta) = meta else {
                print(shown);
                return Ok(());
            };
            let placed = super::placement::locate(meta, secret_file.as_deref(), &at).await?;
            if *json {
                let mut v: serde_json::Value =
                    serde_json::from_str(&shown).expect("stat prints JSON");
                v["placement"] = placed.to_json();
                print(format!("{v}\n"));
            } else {
                print(format!("{shown}{}", placed.to_text()));
            }
        }
        FileCommand::Put { paths, recursive } => {
            let (to, from) = paths.split_last().expect("clap asks for two");
            let locals: Vec<PathBuf> = from.iter().map(PathBuf::from).collect();
            r.start_transfer();
            let dir_wanted = to.ends_with('/') && to.len() > 1;
            let done = transfer::put(r, &locals, &r.path(to)?, dir_wanted, *recursive).await;
            r.progress.done();
            let done = done?;
            r.report(done);
        }
        FileCommand::Get { paths, recursive } => {
            let (to, from) = paths.split_last().expect("clap asks for two");
            let remotes = from
                .iter()
                .map(|p| r.path(p))
                .collect::<Result<Vec<_>, _>>()?;
            r.start_transfer();
            let done = transfer::get(r, &remotes, Path::new(to), *recursive).await;
            r.progress.done();
            let done = done?;
            r.report(done);
        }
        FileCommand::Cat { paths } => {
            for p in paths {
                transfer::cat(r, &r.path(p)?).await?;
            }
        }
        FileCommand::Mkdir { paths, parents } => {
            for p in paths {
                ops::mkdir(r, &r.path(p)?, *parents).await?;
            }
        }
        FileCommand::Rm { paths, recursive } => {
            for p in paths {
                ops::rm(r, &r.path(p)?, *recursive).await?;
            }
        }
        FileCommand::Mv { source, target } => {
            ops::mv(r, &r.path(source)?, &r.path(target)?).await?;
        }
        FileCommand::Cp {
            source,
            target,
            recursive,
        } => {
            ops::cp(r, &r.path(source)?, &r.path(target)?, *recursive).await?;
        }
        FileCommand::Lock {
            path,
            timeout,
            owner,
        } => {
            let owner = owner
                .clone()
                .or_else(|| r.user.clone())
                .or_else(|| std::env::var("USER").ok())
                .unwrap_or_else(|| "tessera".into());
            println!("{}", ops::lock(r, &r.path(path)?, &owner, *timeout).await?);
        }
        FileCommand::Unlock { path, token } => {
            ops::unlock(r, &r.path(path)?, token).await?;
        }
    }
    Ok(())
}
