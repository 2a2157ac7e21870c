//! Tessera's gateway engine.
//!
//! Pure logic first: [`placement`] (which ring slots hold a block),
//! [`stripe`] (which blocks a byte range touches, read-modify-write of
//! partial blocks), [`quorum`] (acknowledgement counting). Then the I/O:
//! [`ring`] (datanode clients per slot, refreshed from meta), [`io`] (the one
//! place that fans out to replicas: write quorum with blocking retry, read
//! quorum with checksum verification and read-repair), [`repair`], [`gc`].
//! On top, [`Fs`]: the file-system API the WebDAV, FUSE and CLI front ends
//! call, with streaming [`ObjectWriter`] / [`FileReader`].

pub mod engine;
pub mod error;
mod fanout;
pub mod fs;
pub mod gc;
pub mod io;
mod metrics;
pub mod path;
pub mod placement;
pub mod quorum;
pub mod reader;
pub mod repair;
pub mod ring;
pub mod stats;
pub mod stripe;
pub mod writer;

pub use engine::FsOptions;
pub use error::{Error, Result};
pub use fs::{Fs, Space};
pub use io::RetryPolicy;
pub use path::split_path;
pub use reader::FileReader;
pub use stats::Stats;
pub use writer::ObjectWriter;
