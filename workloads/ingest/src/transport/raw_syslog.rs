//! The stand-in for the syslog message parser: a framed syslog message carried as an
//! event with only what the transport knows (the text, when it arrived, who sent it).
//! The syslog format module replaces [`raw_syslog_event`] with a real RFC 5424 / 3164
//! parse; the listeners call nothing else for `syslog`-format sensors.

use std::net::SocketAddr;

use chrono::{DateTime, SecondsFormat, Utc};
use kastell_core::Event;
use serde_json::Value;

use crate::format::ParseContext;
use crate::ParseError;

/// `event.dataset` of raw syslog events.
pub const RAW_SYSLOG_DATASET: &str = "syslog.raw";

/// One syslog message as an event: `message`, `@timestamp` and `event.created` (the time
/// it was received), `source.ip`/`source.port` (the sender), `observer.name`.
///
/// # Errors
///
/// [`ParseError::TooLong`] over the size limit, [`ParseError::InvalidUtf8`] when the
/// message is not UTF-8 (RFC 5424 MSG without a BOM may be any charset, but events are
/// JSON text, and guessing a charset would silently change bytes).
pub fn raw_syslog_event(
    message: &[u8],
    received: DateTime<Utc>,
    peer: Option<SocketAddr>,
    ctx: &ParseContext,
) -> Result<Event, ParseError> {
    let max = ctx.options.max_line_bytes;
    if message.len() > max {
        return Err(ParseError::TooLong {
            len: message.len(),
            max,
        });
    }
    let text = std::str::from_utf8(message).map_err(|e| ParseError::InvalidUtf8 {
        offset: e.valid_up_to(),
    })?;
    let text = text.trim_end_matches(['\r', '\n', '\0']);
    let received = received.to_rfc3339_opts(SecondsFormat::Micros, true);

    let mut event = Event::new();
    event.set("@timestamp", Value::from(received.clone()));
    event.set("event.created", Value::from(received));
    event.set("event.kind", Value::from("event"));
    event.set("event.dataset", Value::from(RAW_SYSLOG_DATASET));
    event.set("event.module", Value::from("syslog"));
    event.set("observer.name", Value::from(ctx.sensor.clone()));
    event.set("message", Value::from(text));
    if let Some(peer) = peer {
        let ip = peer.ip().to_canonical().to_string();
        event.set("source.ip", Value::from(ip.clone()));
        event.set("source.port", Value::from(peer.port()));
        event.set("related.ip", Value::Array(vec![Value::from(ip)]));
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_keeps_its_text_sender_and_arrival_time() {
        let ctx = ParseContext::new("fw");
        let received = DateTime::parse_from_rfc3339("2026-12-04T10:00:00.5Z")
            .unwrap()
            .with_timezone(&Utc);
        let peer: SocketAddr = "[::ffff:192.0.2.7]:5140".parse().unwrap();
        let event = raw_syslog_event(
            b"<34>1 2003-10-11T22:14:15.003Z mymachine su - ID47 - 'su root' failed\n",
            received,
            Some(peer),
            &ctx,
        )
        .unwrap();
        assert_eq!(
            event.get_str("message"),
            Some("<34>1 2003-10-11T22:14:15.003Z mymachine su - ID47 - 'su root' failed")
        );
        assert_eq!(
            event.get_str("@timestamp"),
            Some("2026-12-04T10:00:00.500000Z")
        );
        assert_eq!(event.get_str("source.ip"), Some("192.0.2.7"));
        assert_eq!(event.get("source.port"), Some(&Value::from(5140)));
        assert_eq!(event.get_str("observer.name"), Some("fw"));
        assert_eq!(event.get_str("event.dataset"), Some(RAW_SYSLOG_DATASET));
    }

    #[test]
    fn invalid_utf8_and_over_long_messages_are_refused() {
        let ctx = ParseContext::new("fw");
        let err = raw_syslog_event(b"ok \xff", Utc::now(), None, &ctx).unwrap_err();
        assert_eq!(err, ParseError::InvalidUtf8 { offset: 3 });
        let mut small = ParseContext::new("fw");
        small.options.max_line_bytes = 4;
        let err = raw_syslog_event(b"12345", Utc::now(), None, &small).unwrap_err();
        assert!(matches!(err, ParseError::TooLong { len: 5, max: 4 }));
    }
}
