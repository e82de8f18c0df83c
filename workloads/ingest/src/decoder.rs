//! A stream of lines in one format cut into events. Line-per-record formats go straight
//! to [`parse_line`]; the others keep what they need across lines: Zeek TSV its header,
//! OSSEC's alerts.log the block being read, Greenbone the whole XML document.

use std::io::BufRead;

use kastell_core::Event;

use crate::ecs::{EventJson, Output};
use crate::error::ParseError;
use crate::format::{parse_record, zeek_line, Format, ParseContext};
use crate::{greenbone, ossec, zeek};

/// What one record became, and the (1-based) line it started on: an [`Event`], or with
/// [`Decoder::push_json`] and [`decode_reader_json`] the JSON bytes the ingest stage
/// publishes.
#[derive(Debug)]
pub struct Decoded<O = Event> {
    pub line: u64,
    pub result: Result<O, ParseError>,
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Turns the lines of one stream (a file, a connection) into events.
pub struct Decoder {
    format: Format,
    ctx: ParseContext,
    zeek_header: zeek::TsvHeader,
    /// The Zeek log path the stream's name implies, for JSON logs without `_path`.
    zeek_path: Option<String>,
    ossec_block: ossec::Block,
    document: greenbone::Document,
}

impl Decoder {
    pub fn new(format: Format, ctx: ParseContext) -> Self {
        let document = greenbone::Document::new(ctx.options.max_document_bytes);
        Decoder {
            format,
            ctx,
            zeek_header: zeek::TsvHeader::default(),
            zeek_path: None,
            ossec_block: ossec::Block::default(),
            document,
        }
    }

    /// Names the stream (a file path): `conn.log` tells a Zeek JSON record's log.
    pub fn with_origin(mut self, origin: &str) -> Self {
        self.zeek_path = zeek::path_from_file_name(origin);
        self
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn context(&self) -> &ParseContext {
        &self.ctx
    }

    /// Feeds one line (without its terminator). `len` is the line's real length when
    /// only its first `bytes` were kept because it was over the limit.
    pub fn push(&mut self, number: u64, bytes: &[u8], len: usize, out: &mut Vec<Decoded>) {
        self.push_as(number, bytes, len, out);
    }

    /// [`Self::push`] into the JSON bytes the ingest stage publishes.
    pub fn push_json(
        &mut self,
        number: u64,
        bytes: &[u8],
        len: usize,
        out: &mut Vec<Decoded<EventJson>>,
    ) {
        self.push_as(number, bytes, len, out);
    }

    fn push_as<O: Output>(
        &mut self,
        number: u64,
        bytes: &[u8],
        len: usize,
        out: &mut Vec<Decoded<O>>,
    ) {
        // Windows tools often start a UTF-8 file with a byte-order mark; it is not part of
        // the first record.
        let (bytes, len) = match bytes.strip_prefix(UTF8_BOM) {
            Some(rest) if number == 1 => (rest, len - UTF8_BOM.len()),
            _ => (bytes, len),
        };
        let max = self.ctx.options.max_line_bytes;
        let blank = len == bytes.len() && bytes.iter().all(u8::is_ascii_whitespace);
        match self.format {
            Format::Ossec => {
                if len > max {
                    out.push(too_long(number, len, max));
                    return;
                }
                self.ossec_block.push(number, bytes, &self.ctx, out);
            }
            Format::Greenbone => self.document.push(number, bytes, len),
            _ if blank => {}
            _ if len > max => out.push(too_long(number, len, max)),
            Format::Zeek => {
                let parsed = match self.zeek_header.classify(bytes) {
                    zeek::Line::Meta => return,
                    zeek::Line::BadHeader(error) => Err(error),
                    zeek::Line::Row(_) => zeek_line(bytes, Some(&mut self.zeek_header), &self.ctx),
                    zeek::Line::Json(json) => self.zeek_json(json),
                };
                out.push(Decoded {
                    line: number,
                    result: parsed,
                });
            }
            format => out.push(Decoded {
                line: number,
                result: parse_record(format, bytes, &self.ctx),
            }),
        }
    }

    fn zeek_json<O: Output>(&self, json: &[u8]) -> Result<O, ParseError> {
        let record = zeek::json_record(json)?;
        let original = self
            .ctx
            .options
            .keep_original
            .then(|| zeek::lossy_escaped(json));
        zeek::normalise(
            record,
            self.zeek_path.as_deref(),
            original.as_deref(),
            &self.ctx,
        )
    }

    /// Ends the stream: the record still open (an alerts.log block, a Greenbone
    /// document) is parsed now.
    pub fn finish(&mut self, out: &mut Vec<Decoded>) {
        self.finish_as(out);
    }

    /// [`Self::finish`] into the JSON bytes the ingest stage publishes.
    pub fn finish_json(&mut self, out: &mut Vec<Decoded<EventJson>>) {
        self.finish_as(out);
    }

    fn finish_as<O: Output>(&mut self, out: &mut Vec<Decoded<O>>) {
        match self.format {
            Format::Ossec => self.ossec_block.flush(&self.ctx, out),
            Format::Greenbone => self.document.finish(&self.ctx, out),
            _ => {}
        }
    }
}

fn too_long<O>(line: u64, len: usize, max: usize) -> Decoded<O> {
    Decoded {
        line,
        result: Err(ParseError::TooLong { len, max }),
    }
}

/// Decodes a whole blocking reader, handing each record to `each` in order: the engine
/// of `kastell parse`. Lines longer than the limit are counted but never held whole.
///
/// # Errors
///
/// Only when reading fails; bad records are [`Decoded`] rejections.
pub fn decode_reader<R: BufRead>(
    reader: R,
    decoder: &mut Decoder,
    each: impl FnMut(Decoded),
) -> std::io::Result<()> {
    decode_reader_as(reader, decoder, each)
}

/// [`decode_reader`] into the JSON bytes the ingest stage publishes, one [`EventJson`]
/// per event: what `kastell parse` prints.
///
/// # Errors
///
/// Only when reading fails; bad records are [`Decoded`] rejections.
pub fn decode_reader_json<R: BufRead>(
    reader: R,
    decoder: &mut Decoder,
    each: impl FnMut(Decoded<EventJson>),
) -> std::io::Result<()> {
    decode_reader_as(reader, decoder, each)
}

fn decode_reader_as<R: BufRead, O: Output>(
    mut reader: R,
    decoder: &mut Decoder,
    mut each: impl FnMut(Decoded<O>),
) -> std::io::Result<()> {
    let max = decoder.ctx.options.max_line_bytes;
    let mut buf = Vec::new();
    let mut number = 0u64;
    let mut out = Vec::new();
    loop {
        buf.clear();
        let mut len = 0usize;
        let mut read_any = false;
        loop {
            let available = reader.fill_buf()?;
            if available.is_empty() {
                break;
            }
            read_any = true;
            let newline = memchr::memchr(b'\n', available);
            let chunk = &available[..newline.unwrap_or(available.len())];
            let room = max.saturating_sub(buf.len());
            buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
            len = len.saturating_add(chunk.len());
            let consumed = chunk.len() + usize::from(newline.is_some());
            reader.consume(consumed);
            if newline.is_some() {
                break;
            }
        }
        if !read_any {
            break;
        }
        if len == buf.len() && buf.last() == Some(&b'\r') {
            buf.pop();
            len -= 1;
        }
        number += 1;
        decoder.push_as(number, &buf, len, &mut out);
        out.drain(..).for_each(&mut each);
    }
    decoder.finish_as(&mut out);
    out.drain(..).for_each(&mut each);
    Ok(())
}
