//! A strict parser of the Prometheus text format (`/metrics`), and [`scrape`] to fetch and
//! parse it from a worker.

use super::http::http_get_with;
use std::net::SocketAddr;

/// One Prometheus sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses the Prometheus text format strictly: every line is empty, a `#` comment, or a sample
/// with a valid metric name, well-formed `key="value"` labels and a number. Err names the line.
pub fn parse_metrics(text: &str) -> Result<Vec<Sample>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        out.push(parse_sample(line).map_err(|e| format!("line {}: {e}: {line:?}", i + 1))?);
    }
    Ok(out)
}

fn valid_name(n: &str) -> bool {
    let mut chars = n.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let (series, value) = line.rsplit_once(' ').ok_or("no value")?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v
            .parse()
            .map_err(|_| format!("value {v:?} is not a number"))?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, Vec::new()),
        Some((name, rest)) => (
            name,
            parse_labels(rest.strip_suffix('}').ok_or("unclosed labels")?)?,
        ),
    };
    if !valid_name(name) {
        return Err(format!("bad metric name {name:?}"));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
    })
}

fn parse_labels(mut s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    while !s.is_empty() {
        let (key, rest) = s.split_once("=\"").ok_or("label without =\"")?;
        if !valid_name(key) || key.contains(':') {
            return Err(format!("bad label name {key:?}"));
        }
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("dangling escape".into()),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => value.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        out.push((key.to_string(), value));
        s = &rest[end + 1..];
        s = s.strip_prefix(',').unwrap_or(s);
    }
    Ok(out)
}

/// The value of the sample `name` whose labels include all of `labels`.
pub fn metric(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
        })
        .map(|s| s.value)
}

/// Scrapes and parses `/metrics` (with extra headers, e.g. a Bearer key).
pub fn scrape(addr: SocketAddr, headers: &[&str]) -> Vec<Sample> {
    let r =
        http_get_with(addr, "/metrics", headers).unwrap_or_else(|e| panic!("GET /metrics: {e}"));
    assert_eq!(r.status, 200, "{}", r.text());
    parse_metrics(&r.text()).unwrap_or_else(|e| panic!("{e}\n{}", r.text()))
}
