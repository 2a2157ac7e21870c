//! `mkdir`, `rm`, `mv`, `cp`, `lock` and `unlock`.

use bytes::Bytes;
use http::{Method, StatusCode, header};

use super::path::RemotePath;
use super::{CliError, Remote};

fn method(m: &'static str) -> Method {
    Method::from_bytes(m.as_bytes()).expect("a valid method")
}

/// `mkdir [-p] PATH`: with `parents`, missing parents are made and an
/// existing directory is fine.
pub async fn mkdir(r: &Remote, p: &RemotePath, parents: bool) -> Result<(), CliError> {
    if parents {
        let mut at = RemotePath::root();
        let parts: Vec<String> = p.components().map(str::to_string).collect();
        for c in parts {
            at = at.join(&c);
            match r.dav.stat(&at).await? {
                Some(e) if e.dir => continue,
                Some(_) => {
                    return Err(CliError::failed(
                        at.as_str(),
                        "exists and is not a directory",
                    ));
                }
                None => mkcol(r, &at, true).await?,
            }
        }
        return Ok(());
    }
    mkcol(r, p, false).await
}

async fn mkcol(r: &Remote, p: &RemotePath, exists_ok: bool) -> Result<(), CliError> {
    let (status, _, body) = r
        .dav
        .call(method("MKCOL"), p, true, &[], Bytes::new())
        .await?;
    match status {
        s if s.is_success() => Ok(()),
        StatusCode::METHOD_NOT_ALLOWED if exists_ok => Ok(()),
        StatusCode::METHOD_NOT_ALLOWED => Err(CliError::failed(p.as_str(), "already exists")),
        StatusCode::CONFLICT => Err(CliError::failed(
            p.as_str(),
            "the parent directory does not exist (mkdir -p makes it)",
        )),
        s => Err(r.refused(p, s, &body).await),
    }
}

/// `rm [-r] PATH`.
pub async fn rm(r: &Remote, p: &RemotePath, recursive: bool) -> Result<(), CliError> {
    if p.is_root() {
        return Err(CliError::usage("refusing to remove /"));
    }
    let Some(e) = r.dav.stat(p).await? else {
        return Err(CliError::failed(p.as_str(), "no such file or directory"));
    };
    if e.dir && !recursive {
        return Err(CliError::failed(
            p.as_str(),
            "is a directory (rm -r removes it)",
        ));
    }
    let (status, _, body) = r
        .dav
        .call(Method::DELETE, p, e.dir, &[], Bytes::new())
        .await?;
    if !status.is_success() {
        return Err(r.refused(p, status, &body).await);
    }
    Ok(())
}

/// Where `src` goes for `mv`/`cp SRC DST`: inside DST when it is a
/// directory, as `cp` and `mv` do.
async fn target(r: &Remote, src: &RemotePath, dst: &RemotePath) -> Result<RemotePath, CliError> {
    Ok(match r.dav.stat(dst).await? {
        Some(e) if e.dir => dst.join(src.name()),
        _ => dst.clone(),
    })
}

/// `mv SRC DST` (server-side MOVE, replacing a file at DST).
pub async fn mv(r: &Remote, src: &RemotePath, dst: &RemotePath) -> Result<RemotePath, CliError> {
    transfer_on_server(r, "MOVE", src, dst, true).await
}

/// `cp [-r] SRC DST` (server-side COPY).
pub async fn cp(
    r: &Remote,
    src: &RemotePath,
    dst: &RemotePath,
    recursive: bool,
) -> Result<RemotePath, CliError> {
    transfer_on_server(r, "COPY", src, dst, recursive).await
}

async fn transfer_on_server(
    r: &Remote,
    verb: &'static str,
    src: &RemotePath,
    dst: &RemotePath,
    recursive: bool,
) -> Result<RemotePath, CliError> {
    if src.is_root() {
        return Err(CliError::usage(format!("cannot {} /", verb.to_lowercase())));
    }
    let Some(e) = r.dav.stat(src).await? else {
        return Err(CliError::failed(src.as_str(), "no such file or directory"));
    };
    if e.dir && !recursive {
        return Err(CliError::failed(
            src.as_str(),
            "is a directory (cp -r copies it)",
        ));
    }
    let to = target(r, src, dst).await?;
    if to == *src || to.strip(src).is_some() {
        return Err(CliError::failed(
            src.as_str(),
            format!(
                "cannot {} a directory into itself ({to})",
                verb.to_lowercase()
            ),
        ));
    }
    let mut headers = vec![
        (
            header::HeaderName::from_static("destination"),
            r.dav.destination(&to, e.dir),
        ),
        (
            header::HeaderName::from_static("overwrite"),
            "T".to_string(),
        ),
    ];
    if verb == "COPY" {
        let depth = if e.dir { "infinity" } else { "0" };
        headers.push((header::HeaderName::from_static("depth"), depth.to_string()));
    }
    let (status, _, body) = r
        .dav
        .call(method(verb), src, e.dir, &headers, Bytes::new())
        .await?;
    match status {
        s if s.is_success() => Ok(to),
        StatusCode::CONFLICT => Err(CliError::failed(
            to.as_str(),
            "the target's parent directory does not exist",
        )),
        s => Err(r.refused(src, s, &body).await),
    }
}

/// `lock PATH`: an exclusive write lock for `timeout` seconds; returns its
/// token (for `unlock`).
pub async fn lock(
    r: &Remote,
    p: &RemotePath,
    owner: &str,
    timeout: u64,
) -> Result<String, CliError> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><D:lockinfo xmlns:D=\"DAV:\">\
         <D:lockscope><D:exclusive/></D:lockscope><D:locktype><D:write/></D:locktype>\
         <D:owner>{}</D:owner></D:lockinfo>",
        xml_escape(owner)
    );
    let headers = [
        (
            header::HeaderName::from_static("timeout"),
            format!("Second-{timeout}"),
        ),
        (header::CONTENT_TYPE, "application/xml".to_string()),
    ];
    let (status, h, body) = r
        .dav
        .call(method("LOCK"), p, false, &headers, Bytes::from(body))
        .await?;
    if !status.is_success() {
        return Err(r.refused(p, status, &body).await);
    }
    let token = h
        .get("lock-token")
        .and_then(|v| v.to_str().ok())
        .map(|t| {
            t.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
        .ok_or_else(|| CliError::failed(p.as_str(), "the gateway gave no lock token"))?;
    Ok(token)
}

/// `unlock PATH TOKEN`.
pub async fn unlock(r: &Remote, p: &RemotePath, token: &str) -> Result<(), CliError> {
    let token = token.trim().trim_start_matches('<').trim_end_matches('>');
    let headers = [(
        header::HeaderName::from_static("lock-token"),
        format!("<{token}>"),
    )];
    let (status, _, body) = r
        .dav
        .call(method("UNLOCK"), p, false, &headers, Bytes::new())
        .await?;
    match status {
        s if s.is_success() => Ok(()),
        StatusCode::CONFLICT | StatusCode::PRECONDITION_FAILED | StatusCode::BAD_REQUEST => Err(
            CliError::failed(p.as_str(), format!("no lock with the token {token} here")),
        ),
        s => Err(r.refused(p, s, &body).await),
    }
}

pub fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
