//! Failures of the file commands, in words, with their exit codes.

use http::StatusCode;

/// A failed command: exit code 1 (an operation failed) or 2 (bad usage).
#[derive(Debug, Clone)]
pub struct CliError {
    pub code: i32,
    /// The path it is about, if any.
    pub path: Option<String>,
    pub message: String,
    /// The HTTP status that said so, if one did.
    pub status: Option<StatusCode>,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError {
            code: 2,
            path: None,
            message: message.into(),
            status: None,
        }
    }

    pub fn failed(path: &str, message: impl Into<String>) -> CliError {
        CliError {
            code: 1,
            path: Some(path.to_string()),
            message: message.into(),
            status: None,
        }
    }

    /// An HTTP answer that was not the one hoped for.
    pub fn status(path: &str, status: StatusCode, body: &[u8]) -> CliError {
        let mut e = CliError::failed(path, describe(status, body));
        e.status = Some(status);
        e
    }

    /// A local file's failure (exit 1).
    pub fn local(path: &std::path::Path, e: std::io::Error) -> CliError {
        CliError::failed(&path.display().to_string(), e.to_string())
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.path {
            Some(p) => write!(f, "{p}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for CliError {}

/// The first line of a short text body, if it says anything.
fn said(body: &[u8]) -> Option<String> {
    let t = std::str::from_utf8(body).ok()?.trim();
    if t.is_empty() || t.starts_with('<') || t.len() > 300 {
        return None;
    }
    t.lines().next().map(str::to_string)
}

/// An HTTP status in words a person understands.
pub fn describe(status: StatusCode, body: &[u8]) -> String {
    let words = match status.as_u16() {
        400 => "the gateway refused the request as malformed",
        401 => "the gateway wants a user and password (--user NAME, TESSERA_PASSWORD)",
        403 => "not allowed",
        404 => "no such file or directory",
        405 => "not allowed here (it may exist already, or be a directory)",
        409 => "conflict: a parent directory is missing, or the target is in the way",
        412 => "already exists (not overwritten)",
        413 => "too large for the gateway",
        415 => "the gateway does not take that body",
        423 => "locked",
        429 => "too many failed logins from here; wait a minute",
        502 | 503 => "the cluster cannot answer: too few datanodes reachable",
        504 => "the cluster did not answer in time",
        507 => "the cluster is full",
        _ => "",
    };
    let extra = said(body);
    match (words.is_empty(), extra) {
        (true, Some(x)) => format!("{x} (HTTP {})", status.as_u16()),
        (true, None) => format!("the gateway answered HTTP {status}"),
        (false, Some(x)) if status.is_server_error() => format!("{words}: {x}"),
        (false, _) => words.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_words() {
        assert_eq!(
            describe(StatusCode::NOT_FOUND, b""),
            "no such file or directory"
        );
        assert_eq!(
            describe(
                StatusCode::SERVICE_UNAVAILABLE,
                b"slot 2 (127.0.0.1:9): down\n"
            ),
            "the cluster cannot answer: too few datanodes reachable: slot 2 (127.0.0.1:9): down"
        );
        assert_eq!(
            describe(StatusCode::IM_A_TEAPOT, b""),
            "the gateway answered HTTP 418 I'm a teapot"
        );
        assert_eq!(
            describe(StatusCode::INSUFFICIENT_STORAGE, b"<x/>"),
            "the cluster is full"
        );
        let e = CliError::status("/a", StatusCode::LOCKED, b"");
        assert_eq!((e.code, e.to_string()), (1, "/a: locked".to_string()));
    }
}
