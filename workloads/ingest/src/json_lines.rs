//! Generic JSON lines: any object per line, its time in the field the Sensor names
//! (`timestampField`, a dotted path), kept whole under `json`. The rest of the mapping to
//! ECS is the Sensor's `fieldMapping`; only `message` is taken over as it is.

use crate::ecs::{ecs, zoned_timestamp, EcsBuilder, Output};
use crate::error::ParseError;
use crate::format::ParseContext;
use crate::json::{Doc, Members};
use crate::zeek::epoch_to_rfc3339;

pub(crate) const DATASET: &str = "json";

/// Where the time is looked for when the Sensor names no field.
const DEFAULT_TIMESTAMP_FIELDS: [&str; 3] = ["@timestamp", "timestamp", "time"];

/// Epoch numbers above this are milliseconds: 10^11 seconds is the year 5138, 10^11
/// milliseconds is 1973.
const EPOCH_MILLIS_ABOVE: f64 = 1e11;

pub(crate) fn normalise<O: Output>(
    record: Members<'_>,
    original: Option<&str>,
    ctx: &ParseContext,
) -> Result<O, ParseError> {
    let mut out = EcsBuilder::new();
    let (field, value) = match &ctx.options.timestamp_field {
        Some(field) => (field.as_str(), lookup(&record, field)),
        None => DEFAULT_TIMESTAMP_FIELDS
            .iter()
            .find_map(|f| lookup(&record, f).map(|v| (*f, Some(v))))
            .unwrap_or(("@timestamp", None)),
    };
    let value = value.ok_or_else(|| match &ctx.options.timestamp_field {
        Some(field) => ParseError::MissingTimestampField {
            field: field.clone(),
        },
        None => ParseError::MissingField {
            field: "@timestamp, timestamp or time (the Sensor names no timestampField)",
        },
    })?;
    out.put(ecs!("@timestamp"), time(field, value, ctx)?);
    out.put(ecs!("event.kind"), "event");
    out.put(ecs!("event.module"), "json");
    out.put(ecs!("event.dataset"), DATASET);
    out.put_str(ecs!("observer.name"), &ctx.sensor);
    if let Some(Doc::String(message)) = record.get("message") {
        out.put_str(ecs!("message"), message);
    }
    if let Some(original) = original {
        out.put_str(ecs!("event.original"), original);
    }
    out.put(ecs!("json"), &record);
    Ok(out.finish())
}

/// A dotted path through nested objects, or a key that itself holds dots.
fn lookup<'a>(record: &'a Members<'a>, path: &str) -> Option<&'a Doc<'a>> {
    if let Some(value) = record.get(path) {
        return Some(value).filter(|v| !v.is_null());
    }
    let mut parts = path.split('.');
    let mut value = record.get(parts.next()?)?;
    for part in parts {
        value = value.as_object()?.get(part)?;
    }
    Some(value).filter(|v| !v.is_null())
}

fn time(field: &str, value: &Doc<'_>, ctx: &ParseContext) -> Result<String, ParseError> {
    match value {
        Doc::String(s) => zoned_timestamp(field, s, ctx.options.timezone),
        Doc::Number(n) => n
            .as_f64()
            .map(|t| {
                if t.abs() > EPOCH_MILLIS_ABOVE {
                    t / 1000.0
                } else {
                    t
                }
            })
            .and_then(epoch_to_rfc3339)
            .ok_or_else(|| ParseError::invalid_timestamp(field, &n.to_string())),
        other => Err(ParseError::wrong_type(field, "a time", other)),
    }
}
