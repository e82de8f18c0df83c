//! CSV and plain-list feeds: one indicator per row or per token, typed by a column, by a
//! fixed type, or by the token's own form (freetext feeds, defanged values included).

use std::sync::Arc;

use kastell_core::ObservableKind;

use crate::indicator::{Indicator, IndicatorContext};
use crate::normalise::{self, Normalised};
use crate::store::{IndicatorStore, Inserted};

/// How to read the rows of a CSV feed.
#[derive(Debug, Clone)]
pub struct CsvMapping {
    pub delimiter: u8,
    /// Whether the first row names the columns (and is not data).
    pub has_header: bool,
    /// The column holding the value: an index from 0, or a header name.
    pub value_column: Column,
    /// The column naming each row's type, if any (`ip`, `domain`, `url`, `sha256`,
    /// MISP types such as `ip-dst`...).
    pub type_column: Option<Column>,
    /// The type of every value when there is no type column; guessed from each value's
    /// form when `None`.
    pub default_type: Option<ObservableKind>,
    /// A column whose text goes into each indicator's comment (a source URL).
    pub comment_column: Option<Column>,
}

impl Default for CsvMapping {
    fn default() -> Self {
        CsvMapping {
            delimiter: b',',
            has_header: false,
            value_column: Column::Index(0),
            type_column: None,
            default_type: None,
            comment_column: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Column {
    Index(usize),
    Name(String),
}

impl Column {
    /// A number is an index, anything else a header name.
    pub fn parse(text: &str) -> Self {
        text.trim()
            .parse()
            .map(Column::Index)
            .unwrap_or_else(|_| Column::Name(text.trim().to_owned()))
    }

    fn resolve(&self, header: Option<&csv::StringRecord>) -> Option<usize> {
        match self {
            Column::Index(i) => Some(*i),
            Column::Name(name) => header?
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name)),
        }
    }
}

/// What loading one list did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ListReport {
    pub feed: String,
    /// Rows (CSV) or tokens (plain lists) looked at.
    pub entries: u64,
    pub indicators: u64,
    pub duplicates: u64,
    /// Entries that are no indicator: an unknown type, a value not of its type, a row
    /// too short or unreadable.
    pub skipped: u64,
}

/// The feed could not be read as CSV at all.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error("column {0:?} is not in the CSV header")]
    UnknownColumn(String),
}

/// A type name as CSV feeds write it, MISP's attribute types included.
pub fn kind_from_name(name: &str) -> Option<ObservableKind> {
    match name.trim().to_ascii_lowercase().as_str() {
        "ip" | "ipv4" | "ipv6" | "ip-src" | "ip-dst" | "ipv4-addr" | "ipv6-addr" | "cidr" => {
            Some(ObservableKind::Ip)
        }
        "domain" | "hostname" | "domain-name" | "fqdn" => Some(ObservableKind::Domain),
        "url" | "uri" | "link" => Some(ObservableKind::Url),
        "md5" => Some(ObservableKind::Md5),
        "sha1" | "sha-1" => Some(ObservableKind::Sha1),
        "sha256" | "sha-256" => Some(ObservableKind::Sha256),
        "sha512" | "sha-512" => Some(ObservableKind::Sha512),
        "email" | "email-src" | "email-dst" | "email-addr" => Some(ObservableKind::Email),
        _ => None,
    }
}

/// Loads a plain list: every whitespace-separated token of every line (so freetext
/// feeds that put several values on a line work), `#` starting a comment. Tokens are
/// typed by `kind`, or by their own form when `None`.
///
/// A list of more than [`PARALLEL_FROM`] bytes is cut at line ends into one part per
/// available core (at most [`MAX_THREADS`]), each part parsed into a store of its own on
/// a scoped thread, and the stores merged in order: refanging, typing and normalising
/// are most of a load's work and need nothing shared, while the merge only re-indexes
/// records. The result is the same store as one thread's, duplicates across parts found
/// by the merge.
pub fn load_plain_list(
    name: &str,
    text: &str,
    kind: Option<ObservableKind>,
) -> (IndicatorStore, ListReport) {
    let context = Arc::new(IndicatorContext {
        feed: name.to_owned(),
        ..IndicatorContext::default()
    });
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .min(MAX_THREADS);
    if threads < 2 || text.len() < PARALLEL_FROM {
        return load_list_part(name, text, kind, &context);
    }
    let parts: Vec<(IndicatorStore, ListReport)> = std::thread::scope(|scope| {
        let handles: Vec<_> = split_at_lines(text, threads)
            .into_iter()
            .map(|part| scope.spawn(|| load_list_part(name, part, kind, &context)))
            .collect();
        handles
            .into_iter()
            .map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    let mut report = ListReport {
        feed: name.to_owned(),
        ..ListReport::default()
    };
    let mut store = IndicatorStore::new();
    for (part, part_report) in parts {
        report.entries += part_report.entries;
        report.skipped += part_report.skipped;
        store.merge(part);
    }
    // Each record held was added once; the merge counted the duplicates within parts
    // and those between them.
    report.indicators = store.len() as u64;
    report.duplicates = store.duplicates();
    (store, report)
}

/// Lists shorter than this (about 80,000 indicators) load on one thread: below it the
/// threads would cost more than they save.
pub const PARALLEL_FROM: usize = 4 << 20;

/// Threads a list load uses at most.
pub const MAX_THREADS: usize = 4;

/// `text` cut into about `parts` pieces, each ending at a line end.
fn split_at_lines(text: &str, parts: usize) -> Vec<&str> {
    let mut out = Vec::with_capacity(parts);
    let mut rest = text;
    for left in (1..=parts).rev() {
        if rest.is_empty() {
            break;
        }
        if left == 1 {
            out.push(rest);
            break;
        }
        let target = rest.len() / left;
        let cut = rest.as_bytes()[target..]
            .iter()
            .position(|b| *b == b'\n')
            .map_or(rest.len(), |at| target + at + 1);
        let (part, tail) = rest.split_at(cut);
        out.push(part);
        rest = tail;
    }
    out
}

/// One thread's share of [`load_plain_list`].
fn load_list_part(
    name: &str,
    text: &str,
    kind: Option<ObservableKind>,
    context: &Arc<IndicatorContext>,
) -> (IndicatorStore, ListReport) {
    let mut store = IndicatorStore::new();
    let mut report = ListReport {
        feed: name.to_owned(),
        ..ListReport::default()
    };
    for line in text.lines() {
        let data = line.split('#').next().unwrap_or("");
        for token in data.split(|c: char| c.is_whitespace() || c == ',' || c == ';') {
            if token.is_empty() {
                continue;
            }
            report.entries += 1;
            let found = match kind {
                Some(kind) => normalise::value_of_kind(kind, token),
                None => normalise::guess(token),
            };
            add(&mut store, &mut report, found, token, None, context);
        }
    }
    (store, report)
}

/// Loads a CSV feed with a column mapping.
///
/// # Errors
///
/// When a column named in the mapping is not in the header.
pub fn load_csv(
    name: &str,
    bytes: &[u8],
    mapping: &CsvMapping,
) -> Result<(IndicatorStore, ListReport), ListError> {
    let context = Arc::new(IndicatorContext {
        feed: name.to_owned(),
        ..IndicatorContext::default()
    });
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(mapping.delimiter)
        .has_headers(mapping.has_header)
        .flexible(true)
        .comment(Some(b'#'))
        .trim(csv::Trim::All)
        .from_reader(bytes);
    let header = if mapping.has_header {
        reader.headers().ok().cloned()
    } else {
        None
    };
    let column = |c: &Column| {
        c.resolve(header.as_ref()).ok_or_else(|| match c {
            Column::Name(n) => ListError::UnknownColumn(n.clone()),
            Column::Index(i) => ListError::UnknownColumn(i.to_string()),
        })
    };
    let value_at = column(&mapping.value_column)?;
    let type_at = mapping.type_column.as_ref().map(column).transpose()?;
    let comment_at = mapping.comment_column.as_ref().map(column).transpose()?;

    let mut store = IndicatorStore::new();
    let mut report = ListReport {
        feed: name.to_owned(),
        ..ListReport::default()
    };
    for row in reader.records() {
        report.entries += 1;
        let Ok(row) = row else {
            report.skipped += 1;
            continue;
        };
        let Some(raw) = row.get(value_at).filter(|v| !v.is_empty()) else {
            report.skipped += 1;
            continue;
        };
        let kind = match type_at {
            Some(at) => row.get(at).and_then(kind_from_name),
            None => mapping.default_type,
        };
        let found = match (kind, type_at) {
            (Some(kind), _) => normalise::value_of_kind(kind, raw),
            // A type column naming a type the store does not match: not an indicator.
            (None, Some(_)) => None,
            (None, None) => normalise::guess(raw),
        };
        let comment = comment_at
            .and_then(|at| row.get(at))
            .filter(|c| !c.is_empty());
        add(&mut store, &mut report, found, raw, comment, &context);
    }
    Ok((store, report))
}

fn add(
    store: &mut IndicatorStore,
    report: &mut ListReport,
    found: Option<Normalised>,
    raw: &str,
    comment: Option<&str>,
    context: &Arc<IndicatorContext>,
) {
    let Some(found) = found else {
        report.skipped += 1;
        return;
    };
    // Built whole rather than by `Indicator::new`, whose copy of the value as the
    // attribute value would be replaced at once: one allocation less per list entry.
    let indicator = Indicator {
        kind: found.kind,
        attribute_type: found.kind.as_str().to_owned(),
        attribute_value: raw.trim().to_owned(),
        value: found.value,
        network: found.network,
        attribute_id: None,
        port: None,
        filename: None,
        comment: comment.map(str::to_owned),
        tags: Vec::new(),
        first_seen: None,
        last_seen: None,
        valid_until: None,
        context: Arc::clone(context),
    };
    match store.insert(indicator) {
        Ok(Inserted::Added) => report.indicators += 1,
        Ok(_) => report.duplicates += 1,
        Err(_) => report.skipped += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_list_loads_on_several_threads_into_the_same_store() {
        // Enough lines to pass PARALLEL_FROM, with values repeated across the parts so
        // the merge must find duplicates between them, and lines that are no indicator.
        let mut text = String::new();
        let mut n = 0u64;
        while text.len() <= PARALLEL_FROM {
            let line = match n % 4 {
                0 => format!("h{}.evil.example\n", n % 50_000),
                1 => format!("198.51.{}.{}\n", (n / 256) % 256, n % 256),
                2 => format!("hxxp://c{}.evil[.]example/p\n", n % 70_000),
                _ => "not-an-indicator\n".to_owned(),
            };
            text.push_str(&line);
            n += 1;
        }
        let (parallel, report) = load_plain_list("big", &text, None);
        let context = Arc::new(IndicatorContext {
            feed: "big".into(),
            ..IndicatorContext::default()
        });
        let (single, single_report) = load_list_part("big", &text, None, &context);
        assert_eq!(report, single_report);
        assert!(report.duplicates > 0 && report.skipped > 0);
        assert_eq!(parallel.len(), single.len());
        let values = |store: &IndicatorStore| -> Vec<String> {
            store.indicators().map(|i| i.value).collect()
        };
        assert_eq!(values(&parallel), values(&single));
        assert_eq!(parallel.feeds(), ["big".to_owned()]);
    }

    #[test]
    fn lists_are_cut_at_line_ends() {
        let text = "a\nbb\nccc\ndddd\n";
        let parts = split_at_lines(text, 3);
        assert_eq!(parts.concat(), text);
        assert!(
            parts.iter().all(|p| p.is_empty() || p.ends_with('\n')),
            "{parts:?}"
        );
        assert_eq!(split_at_lines("one line", 4), vec!["one line"]);
    }

    #[test]
    fn a_defanged_freetext_feed_is_refanged_and_typed() {
        let text = "8.8.8.8 8.8.4.4\nhxxp://evil[.]example/a  # a comment\nbad[.]example, x[@]bad[.]example\nnot-a-value\n";
        let (store, report) = load_plain_list("free", text, None);
        assert_eq!(
            (report.entries, report.indicators, report.skipped),
            (6, 5, 1)
        );
        assert!(store.contains(ObservableKind::Url, "http://evil.example/a"));
        assert!(store.contains(ObservableKind::Domain, "www.bad.example"));
        assert!(store.contains(ObservableKind::Email, "x@bad.example"));
    }

    #[test]
    fn csv_columns_map_values_and_types() {
        let csv = "date,user,type,value,tags,url\n\
                   2026-08-22,a,domain,Evil.example,#x,https://x.com/1\n\
                   2026-08-22,a,url,http://evil.example,,https://x.com/2\n\
                   2026-08-22,a,ip,192.0.2.1,,\n\
                   2026-08-22,a,ja3,abc,,\n\
                   short\n";
        let mapping = CsvMapping {
            has_header: true,
            value_column: Column::parse("value"),
            type_column: Some(Column::parse("type")),
            comment_column: Some(Column::parse("url")),
            ..CsvMapping::default()
        };
        let (store, report) = load_csv("tf", csv.as_bytes(), &mapping).unwrap();
        assert_eq!(
            (report.entries, report.indicators, report.skipped),
            (5, 3, 2)
        );
        let found = store.lookup_value(ObservableKind::Domain, "evil.example");
        assert_eq!(found[0].comment.as_deref(), Some("https://x.com/1"));
        assert!(store.contains(ObservableKind::Url, "http://evil.example/"));
        let missing = CsvMapping {
            has_header: true,
            value_column: Column::parse("indicator"),
            ..CsvMapping::default()
        };
        assert!(load_csv("tf", csv.as_bytes(), &missing).is_err());
    }
}
