//! A page for browsers: GET on a collection answers an HTML listing (names,
//! sizes, dates, links) so a person can browse and download the share
//! without a WebDAV client. dav-server answers such a GET with 405; the
//! listing is made only then, so a file's GET costs nothing more.

use tessera_gateway::{Fs, split_path};
use tessera_meta::Inode;

/// The listing of the collection at `path` (already checked), or `None` if
/// it is not a collection (or is gone).
pub async fn listing(fs: &Fs, raw_path: &str) -> Option<String> {
    let decoded = String::from_utf8(super::percent_decode(raw_path)?).ok()?;
    let names = split_path(&decoded).ok()?;
    let dir = fs.resolve(&decoded).await.ok()?;
    if !dir.is_dir() {
        return None;
    }
    let mut entries = fs.readdir(dir.ino).await.ok()?;
    entries.sort_by(|(a, ia), (b, ib)| ib.is_dir().cmp(&ia.is_dir()).then_with(|| a.cmp(b)));
    Some(render(&names, &entries))
}

fn render(names: &[String], entries: &[(String, Inode)]) -> String {
    let here = format!("/{}", names.join("/"));
    let base = if names.is_empty() {
        "/".to_string()
    } else {
        format!("{}/", href(names))
    };
    let mut page = String::with_capacity(512 + entries.len() * 200);
    page.push_str("<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">");
    page.push_str(&format!("<title>Index of {}</title>", escape(&here)));
    page.push_str(
        "<style>body{font-family:sans-serif;margin:2em}td{padding:0 1em}\
         td.size{text-align:right}</style></head><body>\n",
    );
    page.push_str(&format!("<h1>Index of {}</h1>\n<table>\n", escape(&here)));
    page.push_str("<tr><th>Name</th><th>Size</th><th>Modified (UTC)</th></tr>\n");
    if !names.is_empty() {
        let up = href(&names[..names.len() - 1]);
        let up = if up.is_empty() {
            "/".to_string()
        } else {
            format!("{up}/")
        };
        page.push_str(&format!(
            "<tr><td><a href=\"{}\">../</a></td><td></td><td></td></tr>\n",
            escape(&up)
        ));
    }
    for (name, inode) in entries {
        let (shown, link, size) = if inode.is_dir() {
            (
                format!("{name}/"),
                format!("{base}{}/", encode(name)),
                String::new(),
            )
        } else {
            (
                name.clone(),
                format!("{base}{}", encode(name)),
                crate::human_bytes(inode.size),
            )
        };
        page.push_str(&format!(
            "<tr><td><a href=\"{}\">{}</a></td><td class=\"size\">{}</td><td>{}</td></tr>\n",
            escape(&link),
            escape(&shown),
            size,
            utc(inode.mtime)
        ));
    }
    page.push_str("</table>\n</body></html>\n");
    page
}

/// `/a/b` with each name percent-encoded.
fn href(names: &[String]) -> String {
    names.iter().map(|n| format!("/{}", encode(n))).collect()
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub(super) fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Escapes text for HTML content and attribute values.
pub(super) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM` of nanoseconds since the epoch, in UTC.
fn utc(ns: i64) -> String {
    let (year, month, day, secs) = civil(ns);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60
    )
}

/// RFC 3339 (`1996-12-19T16:39:57Z`) of nanoseconds since the epoch.
pub(super) fn rfc3339(ns: i64) -> String {
    let (year, month, day, secs) = civil(ns);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// (year, month, day, seconds into the day) of nanoseconds since the
/// epoch, in UTC.
fn civil(ns: i64) -> (i64, i64, i64, i64) {
    let secs = ns.div_euclid(1_000_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_escaped_and_links_encoded() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
        assert_eq!(encode("a b/c?d#é"), "a%20b%2Fc%3Fd%23%C3%A9");
        assert_eq!(href(&["x y".into(), "z".into()]), "/x%20y/z");
    }

    #[test]
    fn dates_and_sizes_read_well() {
        assert_eq!(utc(0), "1970-01-01 00:00");
        assert_eq!(utc(1_700_000_000 * 1_000_000_000), "2023-11-14 22:13");
        assert_eq!(utc(951_782_400 * 1_000_000_000), "2000-02-29 00:00");
        assert_eq!(
            rfc3339(1_700_000_001 * 1_000_000_000),
            "2023-11-14T22:13:21Z"
        );
        assert_eq!(crate::human_bytes(512), "512 B");
        assert_eq!(crate::human_bytes(1536), "1.5 KiB");
        assert_eq!(crate::human_bytes(3 << 30), "3.0 GiB");
    }
}
