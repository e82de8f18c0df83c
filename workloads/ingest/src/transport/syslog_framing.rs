//! Cutting a syslog byte stream into messages (RFC 6587): octet counting
//! (`LEN SP MSG`) and non-transparent framing (one message per line). No maintained
//! crate frames syslog streams with a size bound and both methods, so this is
//! hand-written; it keeps at most the size limit of any message in memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// How a stream's messages are delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Framing {
    /// Per message: a leading digit means octet counting, anything else a line (RFC 6587
    /// section 3.4.2 lets a receiver tell them apart this way, as rsyslog does).
    #[default]
    Auto,
    /// Each message ends with LF (a trailing CR is dropped).
    NewLine,
    /// Each message is preceded by its length in bytes and a space.
    OctetCounting,
}

/// The longest `LEN` prefix read: ten digits exceed any limit a listener sets.
const MAX_LENGTH_DIGITS: usize = 10;

/// One message as framed, or what was wrong with the stream at that point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogFrame<'a> {
    /// The message's first `max` bytes and its real length.
    Message { bytes: &'a [u8], len: usize },
    /// An octet count that was not `DIGITS SP`; the rest of that line is skipped.
    InvalidCount { bytes: &'a [u8], reason: String },
    /// The stream ended inside an octet-counted message, `received` bytes into it (of
    /// which `bytes` holds the first `max`).
    Truncated {
        bytes: &'a [u8],
        received: usize,
        expected: usize,
    },
}

/// Reads messages from a stream, keeping at most `max` bytes of any one.
pub struct SyslogFramer<R> {
    reader: BufReader<R>,
    framing: Framing,
    max: usize,
    buf: Vec<u8>,
    /// Bytes of the current message read so far, kept or not.
    received: usize,
    /// Whether the first byte of a message has been seen and the message is not yet
    /// returned: shared, so that a caller can tell while [`Self::next`] is pending.
    begun: Arc<AtomicBool>,
}

impl<R: AsyncRead + Unpin> SyslogFramer<R> {
    pub fn new(reader: R, framing: Framing, max: usize) -> Self {
        SyslogFramer {
            reader: BufReader::with_capacity(64 * 1024, reader),
            framing,
            max,
            buf: Vec::new(),
            received: 0,
            begun: Arc::new(AtomicBool::new(false)),
        }
    }

    /// A flag that is set while [`Self::next`] is inside a message (its first byte seen,
    /// the message not yet returned), readable while `next` is pending: a `next` that is
    /// pending with the flag clear holds nothing of the stream, so dropping it loses
    /// nothing.
    pub fn begun(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.begun)
    }

    /// What is held of a message whose [`Self::next`] was dropped inside it: the bytes
    /// kept so far (at most the size limit) and how many were received; `None` when no
    /// message was begun.
    pub fn unfinished(&mut self) -> Option<(&[u8], usize)> {
        self.begun
            .swap(false, Ordering::Relaxed)
            .then_some((self.buf.as_slice(), self.received))
    }

    /// The next message, or `None` at the end of the stream.
    ///
    /// # Errors
    ///
    /// When reading the stream fails.
    pub async fn next(&mut self) -> std::io::Result<Option<SyslogFrame<'_>>> {
        self.buf.clear();
        self.received = 0;
        self.begun.store(false, Ordering::Relaxed);
        let Some(first) = self.skip_blank().await? else {
            return Ok(None);
        };
        // Cleared again by the next call, or by `unfinished`.
        self.begun.store(true, Ordering::Relaxed);
        let counted = match self.framing {
            Framing::Auto => first.is_ascii_digit(),
            Framing::NewLine => false,
            Framing::OctetCounting => true,
        };
        if !counted {
            let len = self.read_line().await?;
            return Ok(Some(self.message(len)));
        }
        match self.read_count().await? {
            Ok(expected) => {
                let got = self.read_exact_bounded(expected).await?;
                if got < expected {
                    return Ok(Some(SyslogFrame::Truncated {
                        bytes: &self.buf,
                        received: got,
                        expected,
                    }));
                }
                Ok(Some(self.message(expected)))
            }
            Err(reason) => {
                self.read_line().await?;
                Ok(Some(SyslogFrame::InvalidCount {
                    bytes: &self.buf,
                    reason,
                }))
            }
        }
    }

    fn message(&mut self, len: usize) -> SyslogFrame<'_> {
        let mut len = len;
        if len == self.buf.len() && self.buf.last() == Some(&b'\r') {
            self.buf.pop();
            len -= 1;
        }
        SyslogFrame::Message {
            bytes: &self.buf,
            len,
        }
    }

    /// Skips line ends and NULs between messages; the first byte of the next message,
    /// left unread, or `None` at the end.
    async fn skip_blank(&mut self) -> std::io::Result<Option<u8>> {
        loop {
            let available = self.reader.fill_buf().await?;
            let Some(&first) = available.first() else {
                return Ok(None);
            };
            if matches!(first, b'\n' | b'\r' | b'\0') {
                self.reader.consume(1);
                continue;
            }
            return Ok(Some(first));
        }
    }

    /// Reads to the next LF (consumed, not kept); returns the line's real length.
    async fn read_line(&mut self) -> std::io::Result<usize> {
        let mut len = self.buf.len();
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                return Ok(len);
            }
            let newline = available.iter().position(|b| *b == b'\n');
            let chunk = &available[..newline.unwrap_or(available.len())];
            let room = self.max.saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            len = len.saturating_add(chunk.len());
            self.received = len;
            let consumed = chunk.len() + usize::from(newline.is_some());
            self.reader.consume(consumed);
            if newline.is_some() {
                return Ok(len);
            }
        }
    }

    /// Reads `DIGITS SP`; the digits read so far stay in `buf` when they are wrong.
    async fn read_count(&mut self) -> std::io::Result<Result<usize, String>> {
        loop {
            let available = self.reader.fill_buf().await?;
            let Some(&byte) = available.first() else {
                return Ok(Err("the stream ended inside an octet count".to_owned()));
            };
            if byte == b' ' && !self.buf.is_empty() {
                self.reader.consume(1);
                let digits = std::str::from_utf8(&self.buf).unwrap_or("");
                let count = digits.parse::<usize>().map_err(|e| e.to_string());
                self.buf.clear();
                return Ok(count);
            }
            // RFC 6587's MSG-LEN is NONZERO-DIGIT *DIGIT: a count of 0 frames nothing, and
            // a leading zero is not a length a sender writes.
            if byte == b'0' && self.buf.is_empty() {
                self.buf.push(byte);
                self.reader.consume(1);
                return Ok(Err(
                    "octet count starts with 0; a count is a non-zero number (RFC 6587)".to_owned(),
                ));
            }
            if byte.is_ascii_digit() && self.buf.len() >= MAX_LENGTH_DIGITS {
                return Ok(Err(format!(
                    "octet count {:?}… has more than {MAX_LENGTH_DIGITS} digits, over any \
                     message size limit",
                    String::from_utf8_lossy(&self.buf)
                )));
            }
            if !byte.is_ascii_digit() {
                return Ok(Err(format!(
                    "octet count {:?} is not digits followed by a space",
                    String::from_utf8_lossy(&self.buf)
                )));
            }
            self.buf.push(byte);
            self.received = self.buf.len();
            self.reader.consume(1);
        }
    }

    /// Reads `expected` bytes, keeping the first `max`; returns how many were read.
    async fn read_exact_bounded(&mut self, expected: usize) -> std::io::Result<usize> {
        let mut read = 0;
        while read < expected {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                break;
            }
            let take = available.len().min(expected - read);
            let room = self.max.saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&available[..take.min(room)]);
            self.reader.consume(take);
            read += take;
            self.received = read;
        }
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Got {
        Msg(String, usize),
        Bad(String),
        Cut(String, usize),
    }

    async fn frames(input: &[u8], framing: Framing, max: usize) -> Vec<Got> {
        let mut framer = SyslogFramer::new(input, framing, max);
        let mut out = Vec::new();
        while let Some(frame) = framer.next().await.unwrap() {
            out.push(match frame {
                SyslogFrame::Message { bytes, len } => {
                    Got::Msg(String::from_utf8_lossy(bytes).into_owned(), len)
                }
                SyslogFrame::InvalidCount { bytes, .. } => {
                    Got::Bad(String::from_utf8_lossy(bytes).into_owned())
                }
                SyslogFrame::Truncated {
                    bytes, expected, ..
                } => Got::Cut(String::from_utf8_lossy(bytes).into_owned(), expected),
            });
        }
        out
    }

    fn msg(text: &str) -> Got {
        Got::Msg(text.to_owned(), text.len())
    }

    #[tokio::test]
    async fn octet_counted_messages_may_hold_newlines() {
        let got = frames(b"11 <13>a\nb\nc d8 <13>xyz\n", Framing::Auto, 100).await;
        assert_eq!(got, vec![msg("<13>a\nb\nc d"), msg("<13>xyz\n")]);
    }

    #[tokio::test]
    async fn auto_framing_mixes_both_methods_and_skips_blank_lines() {
        let got = frames(b"<13>one\r\n\n\x005 <14>2<15>three", Framing::Auto, 100).await;
        assert_eq!(got, vec![msg("<13>one"), msg("<14>2"), msg("<15>three")]);
    }

    #[tokio::test]
    async fn newline_framing_never_reads_a_count() {
        let got = frames(b"12 not a count\n", Framing::NewLine, 100).await;
        assert_eq!(got, vec![msg("12 not a count")]);
    }

    #[tokio::test]
    async fn a_count_too_long_is_named_as_such_and_a_bad_one_as_not_digits() {
        let reason = |input: &'static [u8]| async move {
            let mut framer = SyslogFramer::new(input, Framing::OctetCounting, 100);
            match framer.next().await.unwrap() {
                Some(SyslogFrame::InvalidCount { reason, .. }) => reason,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            reason(b"99999999999 x").await,
            "octet count \"9999999999\"… has more than 10 digits, over any message size limit"
        );
        assert_eq!(
            reason(b"12x3 abc").await,
            "octet count \"12\" is not digits followed by a space"
        );
        for zero in [&b"0 x"[..], b"00000000041 <13>a message"] {
            let zero: &'static [u8] = zero;
            assert_eq!(
                reason(zero).await,
                "octet count starts with 0; a count is a non-zero number (RFC 6587)"
            );
        }
    }

    #[tokio::test]
    async fn a_cut_message_reports_what_was_received_not_only_what_was_kept() {
        let mut framer = SyslogFramer::new(&b"10 abcdefg"[..], Framing::OctetCounting, 4);
        match framer.next().await.unwrap() {
            Some(SyslogFrame::Truncated {
                bytes,
                received,
                expected,
            }) => {
                assert_eq!(bytes, b"abcd");
                assert_eq!((received, expected), (7, 10));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_bad_count_skips_its_line_and_the_stream_goes_on() {
        let got = frames(b"<13>x\n4 <1>y", Framing::OctetCounting, 100).await;
        assert_eq!(got, vec![Got::Bad("<13>x".to_owned()), msg("<1>y")]);
        let got = frames(b"12345678901 x\n3 abc", Framing::Auto, 100).await;
        assert_eq!(got, vec![Got::Bad("12345678901 x".to_owned()), msg("abc")]);
    }

    #[tokio::test]
    async fn over_long_messages_keep_a_prefix_and_their_length_and_a_cut_one_is_reported() {
        let got = frames(b"10 0123456789<13>line-too-long\n", Framing::Auto, 4).await;
        assert_eq!(
            got,
            vec![
                Got::Msg("0123".to_owned(), 10),
                Got::Msg("<13>".to_owned(), 17)
            ]
        );
        let got = frames(b"20 short", Framing::Auto, 100).await;
        assert_eq!(got, vec![Got::Cut("short".to_owned(), 20)]);
    }
}
