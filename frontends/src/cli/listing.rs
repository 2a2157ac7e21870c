//! `ls`, `tree` and `stat`: listings for people, and JSON for scripts.

use serde_json::{Value, json};

use super::dav::Entry;
use super::path::RemotePath;
use super::{CliError, Remote};

/// Directories listed at once by a recursive walk.
const WALK_PARALLEL: usize = 8;

fn entry_json(e: &Entry) -> Value {
    json!({
        "path": e.path,
        "name": e.name(),
        "type": if e.dir { "dir" } else { "file" },
        "size": e.size,
        "mtime": e.mtime,
        "etag": e.etag,
    })
}

/// A time for people: "2026-12-05 10:00" (UTC).
pub fn when(secs: i64) -> String {
    if secs <= 0 {
        return "-".into();
    }
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}", s / 3600, s % 3600 / 60)
}

/// Days since 1970-01-01 as (year, month, day) (Howard Hinnant's algorithm).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The entries under `dir` (not itself).
pub async fn children(r: &Remote, dir: &RemotePath) -> Result<Vec<Entry>, CliError> {
    let mut all = r.dav.propfind(dir, "1").await?;
    if all.first().is_some_and(|e| e.path == dir.as_str()) {
        all.remove(0);
    }
    Ok(all)
}

/// Every entry below `dir`, parents before their children, in path order.
pub async fn walk(r: &Remote, dir: &RemotePath) -> Result<Vec<Entry>, CliError> {
    use futures::stream::{FuturesUnordered, StreamExt};
    let mut out = Vec::new();
    let mut pending = vec![dir.clone()];
    let mut running = FuturesUnordered::new();
    while !pending.is_empty() || !running.is_empty() {
        while running.len() < WALK_PARALLEL
            && let Some(d) = pending.pop()
        {
            running.push(async move { children(r, &d).await });
        }
        if let Some(found) = running.next().await {
            for e in found? {
                if e.dir {
                    pending.push(RemotePath::resolve(&RemotePath::root(), &e.path)?);
                }
                out.push(e);
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// `ls [-l] [-R] [--json] PATH`.
pub async fn ls(
    r: &Remote,
    target: &RemotePath,
    long: bool,
    recursive: bool,
    as_json: bool,
) -> Result<String, CliError> {
    let Some(me) = r.dav.stat(target).await? else {
        return Err(CliError::failed(
            target.as_str(),
            "no such file or directory",
        ));
    };
    let entries = match (me.dir, recursive) {
        (false, _) => vec![me],
        (true, false) => children(r, target).await?,
        (true, true) => walk(r, target).await?,
    };
    if as_json {
        let v: Vec<Value> = entries.iter().map(entry_json).collect();
        return Ok(format!("{}\n", Value::Array(v)));
    }
    let mut out = String::new();
    for e in &entries {
        // Shown relative to the listed directory.
        let shown = match e.path.strip_prefix(target.as_str()) {
            Some(rest) if target.as_str() != e.path => rest.trim_start_matches('/'),
            _ => e.name(),
        };
        let slash = if e.dir { "/" } else { "" };
        if long {
            let kind = if e.dir { 'd' } else { '-' };
            out.push_str(&format!(
                "{kind} {:>12}  {}  {shown}{slash}\n",
                if e.dir {
                    "-".to_string()
                } else {
                    e.size.to_string()
                },
                when(e.mtime)
            ));
        } else {
            out.push_str(&format!("{shown}{slash}\n"));
        }
    }
    Ok(out)
}

/// `tree [--json] PATH`: the hierarchy drawn like tree(1).
pub async fn tree(r: &Remote, root: &RemotePath, as_json: bool) -> Result<String, CliError> {
    let Some(me) = r.dav.stat(root).await? else {
        return Err(CliError::failed(root.as_str(), "no such file or directory"));
    };
    let entries = if me.dir {
        walk(r, root).await?
    } else {
        Vec::new()
    };
    if as_json {
        return Ok(format!("{}\n", nest(&me, &entries)));
    }
    // Children of each directory, in name order.
    let mut kids: std::collections::BTreeMap<String, Vec<&Entry>> = Default::default();
    for e in &entries {
        let parent = match e.path.rfind('/') {
            Some(0) => "/".to_string(),
            Some(i) => e.path[..i].to_string(),
            None => continue,
        };
        kids.entry(parent).or_default().push(e);
    }
    let mut out = format!(
        "{}\n",
        if me.dir && !root.is_root() {
            format!("{}/", root)
        } else {
            root.to_string()
        }
    );
    let (mut dirs, mut files) = (0, 0);
    fn draw(
        at: &str,
        prefix: &str,
        kids: &std::collections::BTreeMap<String, Vec<&Entry>>,
        out: &mut String,
        counts: &mut (u64, u64),
    ) {
        let Some(list) = kids.get(at) else { return };
        for (i, e) in list.iter().enumerate() {
            let last = i + 1 == list.len();
            let slash = if e.dir { "/" } else { "" };
            out.push_str(&format!(
                "{prefix}{}{}{slash}\n",
                if last { "└── " } else { "├── " },
                e.name()
            ));
            if e.dir {
                counts.0 += 1;
                let deeper = format!("{prefix}{}", if last { "    " } else { "│   " });
                draw(&e.path, &deeper, kids, out, counts);
            } else {
                counts.1 += 1;
            }
        }
    }
    let mut counts = (0, 0);
    draw(root.as_str(), "", &kids, &mut out, &mut counts);
    (dirs, files) = (dirs + counts.0, files + counts.1);
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    out.push_str(&format!(
        "\n{}, {}\n",
        plural(dirs, "directory", "directories"),
        plural(files, "file", "files")
    ));
    Ok(out)
}

/// `me` with its descendants nested under "children".
fn nest(me: &Entry, below: &[Entry]) -> Value {
    let mut v = entry_json(me);
    if me.dir {
        let prefix = if me.path == "/" {
            "/".to_string()
        } else {
            format!("{}/", me.path)
        };
        let kids: Vec<Value> = below
            .iter()
            .filter(|e| {
                e.path
                    .strip_prefix(&prefix)
                    .is_some_and(|rest| !rest.contains('/'))
            })
            .map(|k| nest(k, below))
            .collect();
        v["children"] = Value::Array(kids);
    }
    v
}

/// `stat [--json] PATH`.
pub async fn stat(r: &Remote, target: &RemotePath, as_json: bool) -> Result<String, CliError> {
    let Some(e) = r.dav.stat(target).await? else {
        return Err(CliError::failed(
            target.as_str(),
            "no such file or directory",
        ));
    };
    if as_json {
        return Ok(format!("{}\n", entry_json(&e)));
    }
    Ok(format!(
        "path:     {}\ntype:     {}\nsize:     {} ({})\nmodified: {} UTC\netag:     {}\n",
        e.path,
        if e.dir { "directory" } else { "file" },
        e.size,
        crate::human_bytes(e.size),
        when(e.mtime),
        e.etag.as_deref().unwrap_or("-"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc_dates() {
        assert_eq!(when(0), "-");
        assert_eq!(when(1_796_464_800), "2026-12-05 10:00");
        assert_eq!(when(951_782_400), "2000-02-29 00:00");
    }
}
