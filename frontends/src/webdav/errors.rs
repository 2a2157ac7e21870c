//! The one mapping from gateway errors to what WebDAV clients see.
//!
//! dav-server's `FsError` has no 503, so the precise error of each request is
//! also kept in a request-scoped slot; the HTTP layer uses it to answer 503
//! (replicas or meta unreachable) or 502 (no valid replica) with a message
//! naming the nodes, instead of a bare status.

use std::sync::{Arc, Mutex};

use dav_server::fs::FsError;
use http::StatusCode;
use tessera_gateway::Error;

tokio::task_local! {
    static LAST_ERROR: Arc<Mutex<Option<Error>>>;
}

/// Runs `f` with a fresh error slot; returns its output and the last gateway
/// error recorded while it ran.
pub async fn with_error_slot<F: std::future::Future>(f: F) -> (F::Output, Option<Error>) {
    let slot = Arc::new(Mutex::new(None));
    let out = LAST_ERROR.scope(slot.clone(), f).await;
    let err = slot.lock().expect("error slot").take();
    (out, err)
}

pub fn to_dav_error(e: Error) -> FsError {
    let fs_error = match &e {
        Error::NotFound(_) | Error::NotADirectory(_) => FsError::NotFound,
        Error::Exists(_) | Error::NotEmpty(_) => FsError::Exists,
        Error::IsADirectory(_)
        | Error::Invalid(_)
        | Error::InvalidPath(_)
        | Error::NotPermitted(_) => FsError::Forbidden,
        Error::NoAttr(_) => FsError::NotFound,
        Error::WouldBlock(_) => FsError::GeneralFailure,
        // dav-server checks locks before it touches the file system; one
        // found later (taken meanwhile) is a conflict the client may retry.
        Error::Locked(_) | Error::Incomplete(_) => FsError::GeneralFailure,
        Error::Conflict(_) | Error::Internal(_) => FsError::GeneralFailure,
        Error::Unavailable { .. }
        | Error::Corrupt { .. }
        | Error::MetaUnavailable(_)
        | Error::TooFewDatanodes(_) => FsError::IsRemote,
        Error::NoSpace(_) => FsError::InsufficientStorage,
    };
    if matches!(
        fs_error,
        FsError::IsRemote | FsError::GeneralFailure | FsError::InsufficientStorage
    ) {
        tracing::warn!(error = %e, "webdav request failed");
    }
    let _ = LAST_ERROR.try_with(|slot| *slot.lock().expect("error slot") = Some(e));
    fs_error
}

/// The status and message to send instead of dav-server's bare 5xx, if the
/// recorded error explains it.
pub fn refine(status: StatusCode, err: &Error) -> Option<(StatusCode, String)> {
    if !status.is_server_error() {
        return None;
    }
    // Only an error that explains a server-side failure replaces it; any
    // other one recorded on the way (a lookup that found nothing before a
    // create, say) is not the cause.
    let code = match err {
        Error::Unavailable { .. } | Error::MetaUnavailable(_) | Error::TooFewDatanodes(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        Error::Corrupt { .. } => StatusCode::BAD_GATEWAY,
        Error::NoSpace(_) => StatusCode::INSUFFICIENT_STORAGE,
        // Something changed underneath the request (an upload whose
        // pending record expired, a file replaced mid-write): the client
        // may retry.
        Error::Conflict(_) => StatusCode::CONFLICT,
        Error::Locked(_) => StatusCode::LOCKED,
        Error::Incomplete(_) => StatusCode::BAD_REQUEST,
        Error::Internal(_) => status,
        _ => return None,
    };
    Some((code, format!("{err}\n")))
}
