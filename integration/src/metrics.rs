//! Scrapes a `/metrics` endpoint and reads its samples, checking the
//! exposition format on the way (every sample under one `# TYPE`).

use std::collections::{BTreeMap, HashSet};

use crate::http::{Http, StatusCode};

/// One sample: its name, labels and value.
#[derive(Debug, Clone)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of one scrape.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub samples: Vec<Sample>,
    pub text: String,
}

impl Scrape {
    /// `GET http://addr/metrics`, parsed; panics on a bad answer.
    pub async fn get(addr: &str) -> Scrape {
        let reply = Http::new(addr)
            .get("/metrics")
            .await
            .unwrap_or_else(|e| panic!("scrape of {addr}: {e}"));
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let ct = reply.headers.get("content-type").expect("content type");
        assert!(
            ct.to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4"),
            "{ct:?}"
        );
        Scrape::parse(&reply.text())
    }

    /// Parses Prometheus text format 0.0.4; panics on what it is not.
    pub fn parse(text: &str) -> Scrape {
        let mut typed: HashSet<String> = HashSet::new();
        let mut samples = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or_default().to_string();
                assert!(typed.insert(name.clone()), "two TYPE lines for {name}");
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no value: {line}"));
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
            };
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, parse_labels(l.strip_suffix('}').expect("closing brace"))),
                None => (series, BTreeMap::new()),
            };
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
                .unwrap_or(name);
            assert!(typed.contains(family), "sample without a TYPE: {line}");
            samples.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
        }
        Scrape {
            samples,
            text: text.to_string(),
        }
    }

    /// Samples of `name` whose labels include `labels`.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&str, &str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).is_some_and(|x| x == v))
        })
    }

    /// The sum of the samples of `name` with `labels` (0 when none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).map(|s| s.value).sum()
    }

    /// The one sample of `name` with `labels`; panics unless exactly one.
    pub fn one(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<&Sample> = self.matching(name, labels).collect();
        assert_eq!(
            found.len(),
            1,
            "{name} {labels:?}: {found:?}\n{}",
            self.text
        );
        found[0].value
    }
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while !rest.is_empty() {
        let (k, after) = rest.split_once("=\"").expect("label =\"");
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => panic!("dangling escape in {s}"),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => panic!("unterminated label value in {s}"),
            }
        };
        out.insert(k.to_string(), value);
        rest = after[end + 1..].trim_start_matches(',');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labels_and_families() {
        let s = Scrape::parse(
            "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\",y=\"q\\\"r\"} 3\n\
             # TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\nh_count 2\n",
        );
        assert_eq!(s.one("a_total", &[("y", "q\"r")]), 3.0);
        assert_eq!(s.one("h_count", &[]), 2.0);
        assert_eq!(s.sum("a_total", &[("x", "2")]), 0.0);
    }

    #[test]
    #[should_panic(expected = "sample without a TYPE")]
    fn refuses_untyped_samples() {
        Scrape::parse("b 1\n");
    }
}
