//! `tessera shell`: the file commands with a current directory, history
//! (`~/.tessera_history`), Tab completion of commands and remote paths,
//! and `help [COMMAND]`.

use std::sync::{Arc, Mutex};

use clap::{CommandFactory, Parser, Subcommand};
use rustyline::completion::{Completer, Pair};
use rustyline::error::ReadlineError;
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::history::DefaultHistory;
use rustyline::validate::Validator;
use rustyline::{CompletionType, Config, Context, Editor};
use tokio::runtime::Handle;

use super::dav::Dav;
use super::path::RemotePath;
use super::{CliError, FileCommand, Remote, listing};

/// One line typed at the shell.
#[derive(Parser, Debug)]
#[command(
    name = "tessera",
    no_binary_name = true,
    disable_help_subcommand = true,
    disable_version_flag = true
)]
struct Line {
    #[command(subcommand)]
    command: ShellCommand,
}

#[derive(Subcommand, Debug)]
enum ShellCommand {
    #[command(flatten)]
    Files(FileCommand),
    /// Change the current directory (no argument: /).
    ///
    /// Example: cd /photos/2026
    Cd { path: Option<String> },
    /// Print the current directory.
    ///
    /// Example: pwd
    Pwd,
    /// Run a command, then draw the tree of the current directory.
    ///
    /// Example: show mkdir -p a/b
    Show {
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// List the commands, or show one command's help with examples.
    ///
    /// Example: help put
    Help { command: Option<String> },
    /// Leave the shell (Ctrl-D does too).
    #[command(alias = "quit")]
    Exit,
}

/// What the loop does after a line.
enum Flow {
    Go,
    Quit,
}

/// Runs the shell on this terminal until `exit` or Ctrl-D.
pub async fn run(r: Remote) -> Result<(), CliError> {
    let rt = Handle::current();
    tokio::task::block_in_place(move || repl(r, rt))
}

fn repl(mut r: Remote, rt: Handle) -> Result<(), CliError> {
    let config = Config::builder()
        .completion_type(CompletionType::List)
        .auto_add_history(true)
        .max_history_size(1000)
        .map_err(|e| CliError::usage(e.to_string()))?
        .build();
    let mut ed: Editor<PathHelper, DefaultHistory> =
        Editor::with_config(config).map_err(|e| CliError::usage(format!("no terminal: {e}")))?;
    let cwd = Arc::new(Mutex::new(r.cwd.clone()));
    ed.set_helper(Some(PathHelper {
        dav: r.dav.clone(),
        cwd: cwd.clone(),
        rt: rt.clone(),
    }));
    let history =
        std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".tessera_history"));
    if let Some(h) = &history {
        let _ = ed.load_history(h);
    }
    println!(
        "tessera shell on {}: `help` lists the commands, Tab completes, Ctrl-D leaves",
        r.dav.origin()
    );
    loop {
        let prompt = format!("tessera:{}> ", r.cwd);
        match ed.readline(&prompt) {
            Ok(line) => {
                let Some(words) = shlex::split(&line) else {
                    eprintln!("tessera: unbalanced quotes");
                    continue;
                };
                if words.is_empty() {
                    continue;
                }
                match rt.block_on(one(&mut r, &words)) {
                    Ok(Flow::Quit) => break,
                    Ok(Flow::Go) => {}
                    Err(e) => eprintln!("tessera: {e}"),
                }
                *cwd.lock().unwrap_or_else(|e| e.into_inner()) = r.cwd.clone();
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(CliError::usage(format!("the terminal failed: {e}"))),
        }
    }
    if let Some(h) = &history {
        let _ = ed.save_history(h);
    }
    Ok(())
}

/// Runs one line's words.
async fn one(r: &mut Remote, words: &[String]) -> Result<Flow, CliError> {
    let line = match Line::try_parse_from(words) {
        Ok(l) => l,
        Err(e) => {
            use clap::error::ErrorKind;
            match e.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => print!("{e}"),
                _ => eprint!("{}", e.render()),
            }
            return Ok(Flow::Go);
        }
    };
    match line.command {
        ShellCommand::Files(f) => super::run(r, &f).await?,
        ShellCommand::Cd { path } => {
            let to = r.path(path.as_deref().unwrap_or("/"))?;
            match r.dav.stat(&to).await? {
                Some(e) if e.dir => r.cwd = to,
                Some(_) => return Err(CliError::failed(to.as_str(), "not a directory")),
                None => return Err(CliError::failed(to.as_str(), "no such directory")),
            }
        }
        ShellCommand::Pwd => println!("{}", r.cwd),
        ShellCommand::Show { command } => {
            let flow = Box::pin(one(r, &command)).await?;
            let here = r.cwd.clone();
            print!("{}", listing::tree(r, &here, false).await?);
            return Ok(flow);
        }
        ShellCommand::Help { command: None } => print!("{}", command_list()),
        ShellCommand::Help {
            command: Some(name),
        } => {
            let mut cmd = Line::command();
            match cmd.find_subcommand_mut(&name) {
                Some(sub) => print!("{}", sub.render_long_help()),
                None => {
                    return Err(CliError::usage(format!(
                        "no command {name:?}; `help` lists them"
                    )));
                }
            }
        }
        ShellCommand::Exit => return Ok(Flow::Quit),
    }
    Ok(Flow::Go)
}

/// Every command with its one-line description.
fn command_list() -> String {
    let cmd = Line::command();
    let mut out = String::from("Commands (`help COMMAND` for its options and an example):\n");
    for sub in cmd.get_subcommands() {
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        out.push_str(&format!("  {:<8} {about}\n", sub.get_name()));
    }
    out.push_str("Paths are absolute, or relative to the current directory (`cd`, `pwd`).\n");
    out
}

/// The names the shell knows, for completion.
fn command_names() -> Vec<String> {
    Line::command()
        .get_subcommands()
        .flat_map(|s| {
            std::iter::once(s.get_name().to_string()).chain(s.get_all_aliases().map(str::to_string))
        })
        .collect()
}

/// Completes command names, then remote paths (asking the gateway).
struct PathHelper {
    dav: Dav,
    cwd: Arc<Mutex<RemotePath>>,
    rt: Handle,
}

/// A name as the shell reads it back: spaces and quotes escaped.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_whitespace() || "'\"\\".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl PathHelper {
    /// Remote entries completing `word` ("/pho", "docs/a").
    fn paths(&self, word: &str) -> Vec<Pair> {
        let unescaped = shlex::split(word)
            .and_then(|w| w.into_iter().next())
            .unwrap_or_else(|| word.to_string());
        let (dir_part, prefix) = match unescaped.rfind('/') {
            Some(i) => (&unescaped[..=i], &unescaped[i + 1..]),
            None => ("", unescaped.as_str()),
        };
        let cwd = self.cwd.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Ok(dir) = RemotePath::resolve(&cwd, if dir_part.is_empty() { "." } else { dir_part })
        else {
            return Vec::new();
        };
        let listed = self.rt.block_on(self.dav.propfind(&dir, "1"));
        let Ok(entries) = listed else {
            return Vec::new();
        };
        entries
            .into_iter()
            .filter(|e| e.path != dir.as_str())
            .filter(|e| e.name().starts_with(prefix))
            .map(|e| {
                let slash = if e.dir { "/" } else { "" };
                Pair {
                    display: format!("{}{slash}", e.name()),
                    replacement: format!("{}{}{slash}", escape(dir_part), escape(e.name())),
                }
            })
            .collect()
    }
}

impl Completer for PathHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let before = &line[..pos];
        // The word under the cursor starts after the last unescaped space.
        let mut start = 0;
        let mut escaped = false;
        for (i, c) in before.char_indices() {
            match c {
                '\\' if !escaped => escaped = true,
                c if c.is_whitespace() && !escaped => start = i + c.len_utf8(),
                _ => escaped = false,
            }
        }
        let word = &before[start..];
        if before[..start].trim().is_empty() {
            let names = command_names()
                .into_iter()
                .filter(|n| n.starts_with(word))
                .map(|n| Pair {
                    display: n.clone(),
                    replacement: format!("{n} "),
                })
                .collect();
            return Ok((start, names));
        }
        Ok((start, self.paths(word)))
    }
}

impl Hinter for PathHelper {
    type Hint = String;
}
impl Highlighter for PathHelper {}
impl Validator for PathHelper {}
impl rustyline::Helper for PathHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shell_parses_file_commands_and_its_own() {
        let words = |s: &str| shlex::split(s).unwrap();
        assert!(matches!(
            Line::try_parse_from(words("ls -l 'a b'")).unwrap().command,
            ShellCommand::Files(FileCommand::Ls { long: true, .. })
        ));
        assert!(matches!(
            Line::try_parse_from(words("show mkdir -p x/y")).unwrap().command,
            ShellCommand::Show { command } if command == ["mkdir", "-p", "x/y"]
        ));
        assert!(matches!(
            Line::try_parse_from(words("quit")).unwrap().command,
            ShellCommand::Exit
        ));
        assert!(Line::try_parse_from(words("frobnicate")).is_err());
        let list = command_list();
        for name in ["ls", "put", "cd", "pwd", "help", "show", "exit"] {
            assert!(list.contains(&format!("  {name} ")), "{list}");
        }
        assert_eq!(escape("a b\"c"), "a\\ b\\\"c");
    }
}
