//! A progress bar for transfers (bytes, rate, ETA) on a terminal's stderr;
//! hidden, and free, everywhere else.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// One bar for a whole `put` or `get`: its length grows as files are
/// found; files skipped count as done.
#[derive(Clone)]
pub struct Progress(ProgressBar);

impl Progress {
    /// A bar drawn on stderr when `show`, else a hidden one.
    pub fn new(show: bool) -> Progress {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::hidden());
        if show {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:30.cyan/blue} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
        }
        Progress(bar)
    }

    /// More bytes to move.
    pub fn grow(&self, bytes: u64) {
        self.0.inc_length(bytes);
    }

    /// Bytes moved (or skipped).
    pub fn advance(&self, bytes: u64) {
        self.0.inc(bytes);
    }

    /// Names what is moving now.
    pub fn note(&self, what: &str) {
        if !self.0.is_hidden() {
            self.0.set_message(what.to_string());
        }
    }

    /// Clears the bar (the summary line follows it).
    pub fn done(&self) {
        self.0.finish_and_clear();
    }
}
