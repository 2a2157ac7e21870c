use std::time::Duration;

/// A failure on the internal wire. Every variant names the peer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{peer}: cannot connect: {message}")]
    Connect { peer: String, message: String },
    #[error("{peer}: no answer within {after:?}")]
    Timeout { peer: String, after: Duration },
    #[error("{peer}: refused the cluster secret")]
    Unauthorized { peer: String },
    #[error("{peer}: rejected the request: {message}")]
    BadRequest { peer: String, message: String },
    #[error("{peer}: answered HTTP {status}")]
    Status { peer: String, status: u16 },
    #[error("{peer}: cannot decode the reply: {message}")]
    Decode { peer: String, message: String },
}

impl Error {
    /// The peer address this error is about.
    pub fn peer(&self) -> &str {
        match self {
            Error::Connect { peer, .. }
            | Error::Timeout { peer, .. }
            | Error::Unauthorized { peer }
            | Error::BadRequest { peer, .. }
            | Error::Status { peer, .. }
            | Error::Decode { peer, .. } => peer,
        }
    }

    /// A short name of the failure, for metrics ("connect", "timeout", ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Connect { .. } => "connect",
            Error::Timeout { .. } => "timeout",
            Error::Unauthorized { .. } => "unauthorized",
            Error::BadRequest { .. } => "bad_request",
            Error::Status { .. } => "status",
            Error::Decode { .. } => "decode",
        }
    }
}
