//! A strict reader of the Prometheus text exposition format (version 0.0.4), for the metrics
//! tests: every line is a HELP, a TYPE, a blank line or a sample; each family is typed before
//! its samples, once, and its samples are together; names and labels are well-formed; a
//! histogram's buckets are cumulative and end in `+Inf` = `_count`. Anything else fails the
//! test with the line. (No maintained crate validates the format; `prometheus-parse` is lenient
//! on purpose.) With `PROMTOOL` set to a promtool binary (CI), `promtool check metrics` reads
//! the text too.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Default)]
pub struct Exposition {
    /// Family name → its TYPE.
    pub types: BTreeMap<String, String>,
    pub samples: Vec<Sample>,
}

impl Exposition {
    /// The sum of `name`'s samples whose labels include every pair of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }
}

fn is_name(s: &str, colons: bool) -> bool {
    let mut chars = s.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colons && c == ':');
    chars.next().is_some_and(ok_first) && chars.all(|c| ok_first(c) || c.is_ascii_digit())
}

fn value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}

/// `{a="x",b="y"}` (without the braces) into pairs, honouring the three escapes.
fn labels(mut s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    while !s.is_empty() {
        let (name, rest) = s.split_once("=\"").ok_or("label without =\"")?;
        if !is_name(name, false) || name.starts_with("__") {
            return Err(format!("bad label name {name:?}"));
        }
        let mut v = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => v.push('\\'),
                    Some((_, '"')) => v.push('"'),
                    Some((_, 'n')) => v.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((i, '"')) => break i,
                Some((_, c)) => v.push(c),
                None => return Err("unterminated label value".into()),
            }
        };
        if out.insert(name.to_string(), v).is_some() {
            return Err(format!("label {name} twice"));
        }
        s = &rest[end + 1..];
        if let Some(more) = s.strip_prefix(',') {
            if more.is_empty() {
                return Err("trailing comma".into());
            }
            s = more;
        } else if !s.is_empty() {
            return Err(format!("junk after a label: {s:?}"));
        }
    }
    Ok(out)
}

fn sample(line: &str) -> Result<Sample, String> {
    let (series, rest) = if line.contains('{') {
        let close = line.rfind('}').ok_or("no closing brace")?;
        (&line[..close + 1], &line[close + 1..])
    } else {
        line.split_at(line.find(' ').ok_or("no value")?)
    };
    let (name, labels) = match series.split_once('{') {
        Some((n, l)) => (n, labels(l.strip_suffix('}').ok_or("no closing brace")?)?),
        None => (series, BTreeMap::new()),
    };
    if !is_name(name, true) {
        return Err(format!("bad metric name {name:?}"));
    }
    let fields: Vec<&str> = rest.trim_start_matches(' ').split(' ').collect();
    if !rest.starts_with(' ') || fields.is_empty() || fields.len() > 2 {
        return Err("want one value and an optional timestamp".into());
    }
    if let Some(ts) = fields.get(1) {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value: value(fields[0])?,
    })
}

/// The family a sample belongs to, given the families typed so far.
fn family<'a>(name: &'a str, types: &BTreeMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let base = name.strip_suffix(suffix)?;
        matches!(
            types.get(base).map(String::as_str),
            Some("histogram" | "summary")
        )
        .then_some(base)
    })
}

/// Parses `text` strictly; panics naming the first bad line.
pub fn parse(text: &str) -> Exposition {
    let mut exp = Exposition::default();
    let mut closed: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for (n, line) in text.lines().enumerate() {
        let fail = |why: String| -> ! { panic!("exposition line {}: {why}: {line:?}", n + 1) };
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_else(|| fail("TYPE".into()));
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                fail(format!("unknown type {kind}"));
            }
            if exp
                .types
                .insert(name.to_string(), kind.to_string())
                .is_some()
            {
                fail("family typed twice".into());
            }
            if let Some(c) = current.replace(name.to_string()) {
                closed.push(c);
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            if !is_name(name, true) {
                fail("HELP of a bad name".into());
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let s = sample(line).unwrap_or_else(|e| fail(e));
        let fam = family(&s.name, &exp.types)
            .unwrap_or_else(|| fail("sample before its TYPE".into()))
            .to_string();
        if current.as_deref() != Some(fam.as_str()) || closed.contains(&fam) {
            fail("a family's samples are not together".into());
        }
        if exp.types[&fam] == "counter" && (s.value.is_nan() || s.value < 0.0) {
            fail("negative or NaN counter".into());
        }
        exp.samples.push(s);
    }
    check_histograms(&exp);
    exp
}

/// A histogram series: its base name and its labels other than `le`.
type Series = (String, Vec<(String, String)>);

fn check_histograms(exp: &Exposition) {
    let mut buckets: HashMap<Series, Vec<(f64, f64)>> = HashMap::new();
    for s in &exp.samples {
        let Some(base) = s.name.strip_suffix("_bucket") else {
            continue;
        };
        let le = value(s.labels.get("le").expect("a bucket has le")).unwrap();
        let rest = s
            .labels
            .iter()
            .filter(|(k, _)| *k != "le")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        buckets
            .entry((base.to_string(), rest))
            .or_default()
            .push((le, s.value));
    }
    for ((base, labels), series) in buckets {
        assert!(
            series
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{base}{labels:?}: buckets not ascending and cumulative: {series:?}"
        );
        let (last_le, last) = *series.last().unwrap();
        assert_eq!(
            last_le,
            f64::INFINITY,
            "{base}{labels:?} has no +Inf bucket"
        );
        let pairs: Vec<(&str, &str)> = labels
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let count = exp
            .samples
            .iter()
            .find(|s| {
                s.name == format!("{base}_count")
                    && pairs
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
                    && s.labels.len() == pairs.len()
            })
            .unwrap_or_else(|| panic!("{base}{labels:?} has no _count"));
        assert_eq!(count.value, last, "{base}{labels:?}: +Inf bucket ≠ _count");
    }
}

/// `promtool check metrics` on `text` when `PROMTOOL` names the binary; nothing otherwise.
pub fn promtool_check(text: &str) {
    let Ok(promtool) = std::env::var("PROMTOOL") else {
        eprintln!("PROMTOOL not set: promtool check metrics skipped");
        return;
    };
    use std::io::Write;
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("PROMTOOL runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n--- text:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every `payrecon_…` name in `text` (a rules file, a dashboard).
pub fn metric_names_in(text: &str) -> Vec<String> {
    let mut names: Vec<String> = text
        .match_indices("payrecon_")
        .filter(|(i, _)| {
            !text[..*i]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|(i, _)| {
            text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect();
    names.sort();
    names.dedup();
    names
}
