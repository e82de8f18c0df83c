//! The Elasticsearch `_bulk` body: NDJSON action lines, each `create` or `index`
//! followed by its source document. This module only cuts the body into items; the HTTP
//! handler routes and ingests them.

use serde_json::{Map, Value};

/// One action of a bulk body, with the line numbers (1-based) of its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkItem<'a> {
    /// `create`, `index`, `update` or `delete` as written; `index` for a malformed line.
    pub op: &'static str,
    /// `_index` of the action, when given.
    pub index: Option<String>,
    /// `_id` of the action, when given.
    pub id: Option<String>,
    /// Line number of the action line.
    pub line: u64,
    pub body: BulkBody<'a>,
}

/// What an action carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BulkBody<'a> {
    /// A document to ingest (`create` and `index`), as sent.
    Source(&'a [u8]),
    /// `create`/`index` whose source line is missing at the end of the body: the action
    /// line, for the dead letter.
    MissingSource { action: &'a [u8] },
    /// `update` and `delete`: Kastell's event stream is append-only.
    Unsupported,
    /// An action line that is not an action: the line, and the one after it, which a
    /// shipper wrote as its source, are kept together for the dead letter.
    Malformed { raw: &'a [u8], reason: String },
}

/// Cuts a bulk body into items. Never fails: every problem is an item the response
/// reports, so the rest of the body keeps flowing.
pub fn split_bulk(body: &[u8]) -> Vec<BulkItem<'_>> {
    let mut lines = numbered_lines(body);
    let mut items = Vec::new();
    while let Some((line, action)) = lines.next() {
        let parsed = parse_action(action);
        let item = match parsed {
            Ok(Action { op, index, id }) => {
                let body = match op {
                    "create" | "index" => match lines.next() {
                        Some((_, source)) => BulkBody::Source(source),
                        None => BulkBody::MissingSource { action },
                    },
                    "update" => {
                        lines.next();
                        BulkBody::Unsupported
                    }
                    _ => BulkBody::Unsupported,
                };
                BulkItem {
                    op,
                    index,
                    id,
                    line,
                    body,
                }
            }
            Err(reason) => {
                let end = match lines.next() {
                    Some((_, source)) => offset_of(body, source) + source.len(),
                    None => offset_of(body, action) + action.len(),
                };
                let raw = &body[offset_of(body, action)..end];
                BulkItem {
                    op: "index",
                    index: None,
                    id: None,
                    line,
                    body: BulkBody::Malformed { raw, reason },
                }
            }
        };
        items.push(item);
    }
    items
}

struct Action {
    op: &'static str,
    index: Option<String>,
    id: Option<String>,
}

fn parse_action(line: &[u8]) -> Result<Action, String> {
    let value: Value =
        serde_json::from_slice(line).map_err(|e| format!("bulk action line is not JSON: {e}"))?;
    let Value::Object(action) = value else {
        return Err("bulk action line is not a JSON object".to_owned());
    };
    let mut entries = action.into_iter();
    let (Some((op, meta)), None) = (entries.next(), entries.next()) else {
        return Err("bulk action line must have exactly one key".to_owned());
    };
    let op = match op.as_str() {
        "create" => "create",
        "index" => "index",
        "update" => "update",
        "delete" => "delete",
        other => {
            return Err(format!(
                "bulk action {other:?} is not one of create, index, update, delete"
            ))
        }
    };
    let meta = match meta {
        Value::Object(meta) => meta,
        _ => return Err(format!("bulk action {op} must be an object")),
    };
    Ok(Action {
        op,
        index: text(&meta, "_index"),
        id: text(&meta, "_id"),
    })
}

fn text(meta: &Map<String, Value>, key: &str) -> Option<String> {
    meta.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// Non-blank lines with their 1-based numbers, `\r\n` accepted.
fn numbered_lines(body: &[u8]) -> impl Iterator<Item = (u64, &[u8])> {
    body.split(|b| *b == b'\n')
        .enumerate()
        .map(|(i, line)| (i as u64 + 1, line.strip_suffix(b"\r").unwrap_or(line)))
        .filter(|(_, line)| !line.iter().all(u8::is_ascii_whitespace))
}

/// Where a sub-slice of `body` starts; every line handed out is one.
fn offset_of(body: &[u8], part: &[u8]) -> usize {
    (part.as_ptr() as usize).saturating_sub(body.as_ptr() as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_and_index_actions_carry_their_source_lines() {
        let body = b"{\"create\":{\"_index\":\"filebeat-8.13.4\"}}\n{\"a\":1}\n\
                     {\"index\":{\"_index\":\"ids\",\"_id\":\"x1\"}}\r\n{\"b\":2}\r\n";
        let items = split_bulk(body);
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].op, "create");
        assert_eq!(items[0].index.as_deref(), Some("filebeat-8.13.4"));
        assert_eq!(items[0].body, BulkBody::Source(b"{\"a\":1}"));
        assert_eq!(items[1].id.as_deref(), Some("x1"));
        assert_eq!(items[1].line, 3);
        assert_eq!(items[1].body, BulkBody::Source(b"{\"b\":2}"));
    }

    #[test]
    fn update_delete_and_a_missing_source_are_items_not_failures() {
        let body =
            b"{\"delete\":{\"_id\":\"1\"}}\n{\"update\":{}}\n{\"doc\":{}}\n{\"create\":{}}\n";
        let items = split_bulk(body);
        let bodies: Vec<_> = items.iter().map(|i| (i.op, i.body.clone())).collect();
        assert_eq!(
            bodies,
            vec![
                ("delete", BulkBody::Unsupported),
                ("update", BulkBody::Unsupported),
                (
                    "create",
                    BulkBody::MissingSource {
                        action: b"{\"create\":{}}"
                    }
                ),
            ]
        );
    }

    #[test]
    fn a_malformed_action_takes_its_source_line_with_it_and_the_rest_flows() {
        let body = b"{\"create\":\n{\"a\":1}\n{\"create\":{}}\n{\"b\":2}\n";
        let items = split_bulk(body);
        assert_eq!(items.len(), 2);
        match &items[0].body {
            BulkBody::Malformed { raw, reason } => {
                assert_eq!(*raw, b"{\"create\":\n{\"a\":1}");
                assert!(reason.contains("not JSON"), "{reason}");
            }
            other => panic!("expected a malformed item, got {other:?}"),
        }
        assert_eq!(items[1].body, BulkBody::Source(b"{\"b\":2}"));
    }

    #[test]
    fn an_action_with_two_keys_is_malformed_not_the_last_one() {
        let body = b"{\"create\":{\"_index\":\"a\"},\"index\":{}}\n{\"a\":1}\n";
        let items = split_bulk(body);
        assert_eq!(items.len(), 1);
        match &items[0].body {
            BulkBody::Malformed { reason, .. } => {
                assert_eq!(reason, "bulk action line must have exactly one key");
            }
            other => panic!("expected a malformed item, got {other:?}"),
        }
    }
}
