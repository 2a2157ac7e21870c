//! The gateway's one error type. Front ends map it to what people see in one
//! function each (`to_errno`, `to_dav_error`); not-found, quorum loss and
//! corruption stay distinguishable all the way up.

use tessera_meta::MetaError;
use tessera_meta::api::CallError;

use crate::quorum::QuorumFailure;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{0}: no such file or directory")]
    NotFound(String),
    #[error("{0}: already exists")]
    Exists(String),
    #[error("{0}: directory not empty")]
    NotEmpty(String),
    #[error("{0}: not a directory")]
    NotADirectory(String),
    #[error("{0}: is a directory")]
    IsADirectory(String),
    /// A bad name or path: NUL, `..` escaping the root, a component over 255 bytes.
    #[error("invalid path: {0}")]
    InvalidPath(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0} changed during this operation; try again")]
    Conflict(String),
    /// Fewer than the needed replicas could be reached.
    #[error("{what}: {failure}")]
    Unavailable {
        what: String,
        failure: QuorumFailure,
    },
    /// Replicas answered, but none holds a valid copy.
    #[error("object {object} block {index}: no valid replica ({detail})")]
    Corrupt {
        object: u64,
        index: u64,
        detail: String,
    },
    #[error("metadata service unavailable: {0}")]
    MetaUnavailable(String),
    /// Datanodes a write needs are full (WebDAV 507, FUSE ENOSPC).
    #[error("no space: {0}")]
    NoSpace(String),
    /// Fewer datanodes have joined than the settings need (WebDAV 503).
    #[error("not enough datanodes: {0}")]
    TooFewDatanodes(String),
    /// An upload ended with fewer or more bytes than its client announced.
    #[error("{0}")]
    Incomplete(String),
    /// A WebDAV lock held by someone else stands in the way.
    #[error("{0}")]
    Locked(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    NotPermitted(String),
    /// No such extended attribute.
    #[error("{0}")]
    NoAttr(String),
    /// A file lock of another owner stands in the way.
    #[error("{0}")]
    WouldBlock(String),
}

impl From<MetaError> for Error {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::NotFound(p) => Error::NotFound(p),
            MetaError::Exists(p) => Error::Exists(p),
            MetaError::NotEmpty(p) => Error::NotEmpty(p),
            MetaError::NotADirectory(p) => Error::NotADirectory(p),
            MetaError::IsADirectory(p) => Error::IsADirectory(p),
            MetaError::InvalidName { name, reason } => {
                Error::InvalidPath(format!("{name:?}: {reason}"))
            }
            MetaError::Invalid(m) => Error::Invalid(m),
            MetaError::Conflict(m) | MetaError::Busy(m) => Error::Conflict(m),
            MetaError::Settings(m) => Error::TooFewDatanodes(m),
            e @ MetaError::Locked(_) => Error::Locked(e.to_string()),
            MetaError::Storage(m) => Error::Internal(format!("meta: {m}")),
            MetaError::NotPermitted(m) => Error::NotPermitted(m),
            MetaError::NoAttr(m) => Error::NoAttr(m),
            MetaError::NoSpace(m) => Error::NoSpace(m),
            e @ MetaError::WouldBlock(_) => Error::WouldBlock(e.to_string()),
        }
    }
}

impl From<CallError> for Error {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Meta(m) => m.into(),
            CallError::Rpc(r) => Error::MetaUnavailable(r.to_string()),
            CallError::Unexpected(what) => {
                Error::Internal(format!("unexpected meta reply to {what}"))
            }
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
