//! The command line's file commands: a WebDAV client, so they work against
//! any Tessera gateway (and any WebDAV server).
//!
//! - [`args`]: the commands' arguments and [`run`], shared with the shell.
//! - [`shell`]: `tessera shell`, with history and Tab completion.
//! - [`progress`]: progress bars on a terminal.
//! - [`placement`]: where a file's blocks are (`stat --meta`).
//! - [`path`]: remote paths, resolved against a current directory.
//! - [`dav`]: the HTTP/1.1 WebDAV client and PROPFIND parsing.
//! - [`errors`]: HTTP answers in words a person understands.
//! - [`listing`]: `ls`, `tree`, `stat`.
//! - [`transfer`]: `put`, `get`, `cat`.
//! - [`ops`]: `mkdir`, `rm`, `mv`, `cp`, `lock`, `unlock`.
//!
//! Exit codes: 0 success, 1 an operation failed (one line on stderr naming
//! the path and the cause), 2 bad usage.

pub mod args;
pub mod dav;
pub mod errors;
pub mod listing;
pub mod ops;
pub mod path;
pub mod placement;
pub mod progress;
pub mod shell;
pub mod transfer;

pub use args::{FileCommand, run};
pub use errors::CliError;

use dav::Dav;
use path::RemotePath;

/// What every file command runs with.
#[derive(Clone)]
pub struct Remote {
    pub dav: Dav,
    /// Relative paths are resolved against it (the shell's `cd`).
    pub cwd: RemotePath,
    /// Nothing but errors on stderr.
    pub quiet: bool,
    /// The user, if one was given.
    pub user: Option<String>,
    /// The bar of the transfer running (hidden unless [`Remote::chatty`]).
    pub progress: progress::Progress,
}

impl Remote {
    /// A client of the gateway at `url`, as `user` (password from
    /// TESSERA_PASSWORD, else asked on the terminal).
    pub fn connect(
        url: &str,
        user: Option<&str>,
        ca_cert: Option<&std::path::Path>,
        quiet: bool,
    ) -> Result<Remote, CliError> {
        let auth = match user {
            None => None,
            Some(u) => {
                let password = match std::env::var("TESSERA_PASSWORD") {
                    Ok(p) => p,
                    Err(_) if std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
                        rpassword::prompt_password(format!("password for {u}: "))
                            .map_err(|e| CliError::usage(format!("cannot read a password: {e}")))?
                    }
                    Err(_) => {
                        return Err(CliError::usage(format!(
                            "--user {u}: set TESSERA_PASSWORD (no terminal to ask on)"
                        )));
                    }
                };
                Some((u.to_string(), password))
            }
        };
        Ok(Remote {
            dav: Dav::new(url, auth, ca_cert)?,
            cwd: RemotePath::root(),
            quiet,
            user: user.map(str::to_string),
            progress: progress::Progress::new(false),
        })
    }

    /// The error for an unwanted answer to a request on `path`; a lock
    /// says who holds it and until when.
    pub async fn refused(
        &self,
        path: &RemotePath,
        status: http::StatusCode,
        body: &[u8],
    ) -> CliError {
        let mut e = CliError::status(path.as_str(), status, body);
        if status == http::StatusCode::LOCKED
            && let Some(holder) = self.dav.lock_holder(path).await
            && !holder.is_empty()
        {
            e.message = format!("locked {holder}");
        }
        e
    }

    /// Progress and summaries go to stderr only for a person: a terminal,
    /// and no `--quiet`.
    pub fn chatty(&self) -> bool {
        !self.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr())
    }

    /// A fresh progress bar for the next transfer.
    pub fn start_transfer(&mut self) {
        self.progress = progress::Progress::new(self.chatty());
    }

    /// Says what a transfer did, to a person.
    pub fn report(&self, done: transfer::Summary) {
        self.progress.done();
        if self.chatty() {
            eprintln!("{done}");
        }
    }

    /// `input` as an absolute remote path.
    pub fn path(&self, input: &str) -> Result<RemotePath, CliError> {
        RemotePath::resolve(&self.cwd, input)
    }
}
