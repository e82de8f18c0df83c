//! Reading a JSON record into a borrowed [`Doc`], for the formats whose records are kept
//! whole in the event.
//!
//! A [`Doc`] borrows its keys and strings from the line (owning only those with
//! escapes). Each object's members are held in a vector, either sorted by key (found by
//! binary search, and written in key order, as `serde_json::Map` writes: Wazuh, JSON
//! lines, Zeek TSV) or in the order written (found by a scan from the end, so the last of
//! a key written twice counts: Suricata's members the mapping reads, Zeek JSON, whose
//! records are published in their sensor's order). No tree of owned keys and B-tree
//! nodes is built and freed per event, which took half the time of Suricata's ingest.
//!
//! Hand-written rather than `serde_json::Value` or `&RawValue`: a `Value` owns every key
//! and string in B-tree nodes, and a `RawValue` is read with lighter checks than a
//! `Value` (numbers out of range pass), so what it accepts might not read back. The
//! document equals the `Value` serde_json would read (numbers read by serde_json, for a
//! key written twice the last value kept) and, written, reads back as it.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::error::{JsonType, ParseError};

/// A JSON value borrowed from the text it was read from; see the module's comment.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Doc<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Doc<'a>>),
    Object(Members<'a>),
}

/// An object's members: sorted by key, each key once (the last value written kept, as
/// `Map::insert` keeps it); or, for a record only looked into ([`selected_from_str`]) or
/// written out in its own order ([`doc_in_written_order`]), as they were written, sorting
/// being then a cost for nothing. Either way a key's value is the last one written.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct Members<'a> {
    members: Vec<(Cow<'a, str>, Doc<'a>)>,
    sorted: bool,
}

impl<'a> Members<'a> {
    /// Sorts and de-duplicates members in the order they were written.
    pub(crate) fn from_unsorted(mut members: Vec<(Cow<'a, str>, Doc<'a>)>) -> Self {
        // Stable: of a key written twice, the later member sorts after the earlier one.
        members.sort_by(|a, b| key_order(&a.0, &b.0));
        dedup_keeping_last(&mut members, |(k, _)| k);
        Members {
            members,
            sorted: true,
        }
    }

    /// Members as they were written, for a record only looked into.
    fn in_written_order(members: Vec<(Cow<'a, str>, Doc<'a>)>) -> Self {
        Members {
            members,
            sorted: false,
        }
    }

    /// An owned map's members, already sorted and unique.
    pub(crate) fn from_map(map: Map<String, Value>) -> Members<'static> {
        Members {
            members: map
                .into_iter()
                .map(|(k, v)| (Cow::Owned(k), Doc::from_value(v)))
                .collect(),
            sorted: true,
        }
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Doc<'a>> {
        let index = if self.sorted {
            self.members
                .binary_search_by(|(k, _)| key_order(k, key))
                .ok()
        } else {
            // From the end: of a key written twice, the last value counts.
            self.members.iter().rposition(|(k, _)| same_key(k, key))
        };
        index.map(|i| &self.members[i].1)
    }

    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub(crate) fn remove(&mut self, key: &str) -> Option<Doc<'a>> {
        if self.sorted {
            let i = self
                .members
                .binary_search_by(|(k, _)| key_order(k, key))
                .ok()?;
            return Some(self.members.remove(i).1);
        }
        let i = self.members.iter().rposition(|(k, _)| same_key(k, key))?;
        let value = self.members.remove(i).1;
        // `i` held the key's last member: any other came before it (rarely: Zeek's
        // `_path`, removed from every record, is its first member).
        if self.members[..i].iter().any(|(k, _)| same_key(k, key)) {
            self.members.retain(|(k, _)| k != key);
        }
        Some(value)
    }

    /// The members in key order, or, for a record kept in written order, as written (a
    /// key written twice then comes twice, the later one last).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Doc<'a>)> {
        self.members.iter().map(|(k, v)| (k.as_ref(), v))
    }

    pub(crate) fn to_map(&self) -> Map<String, Value> {
        // Sorted members fill `BTreeMap`'s nodes in one pass; written ones are inserted
        // in order, so the last of a key written twice wins.
        self.members
            .iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.to_value()))
            .collect()
    }

    /// The members as kept, and whether that is key order (else the order written,
    /// which may hold a key twice).
    pub(crate) fn as_kept(&self) -> (&[(Cow<'a, str>, Doc<'a>)], bool) {
        (&self.members, self.sorted)
    }

    /// The members in key order, each key once, however they are kept, as references. A
    /// key is the `Cow` it was read as: borrowed only when it holds no escape (see
    /// [`write_doc`]).
    pub(crate) fn key_ordered(&self) -> Vec<(&Cow<'a, str>, &Doc<'a>)> {
        let mut members: Vec<_> = self.members.iter().map(|(k, v)| (k, v)).collect();
        if !self.sorted {
            // Stable, so the last of a key written twice stays last and is kept.
            members.sort_by(|a, b| key_order(a.0, b.0));
            dedup_keeping_last(&mut members, |(k, _)| k);
        }
        members
    }
}

/// Of members sorted stably by key, keeps the last of each key.
fn dedup_keeping_last<T>(members: &mut Vec<T>, key: impl Fn(&T) -> &str) {
    members.dedup_by(|later, kept| {
        if key(later) == key(kept) {
            std::mem::swap(later, kept);
            true
        } else {
            false
        }
    });
}

/// Key equality with the first byte compared inline (see [`key_order`]).
pub(crate) fn same_key(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.as_bytes().first() == b.as_bytes().first() && a == b
}

/// The order of `str` (and of `serde_json::Map`'s keys), with the first byte compared
/// inline: keys are short and mostly differ there, where a call to `memcmp` costs more
/// than the comparison. (Comparing the first eight bytes as one word was tried and was
/// 15 – 20 % slower over Suricata's records: most keys are shorter than eight bytes, and
/// copying them into a word costs two variable-length copies per comparison.)
pub(crate) fn key_order(a: &str, b: &str) -> Ordering {
    match (a.as_bytes().first(), b.as_bytes().first()) {
        (Some(x), Some(y)) if x != y => x.cmp(y),
        _ => a.cmp(b),
    }
}

impl<'a> Doc<'a> {
    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Doc::Null)
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Doc::String(s) => Some(s),
            _ => None,
        }
    }

    pub(crate) fn as_f64(&self) -> Option<f64> {
        match self {
            Doc::Number(n) => n.as_f64(),
            _ => None,
        }
    }

    pub(crate) fn as_object(&self) -> Option<&Members<'a>> {
        match self {
            Doc::Object(members) => Some(members),
            _ => None,
        }
    }

    /// The `serde_json::Value` this document equals.
    pub(crate) fn to_value(&self) -> Value {
        match self {
            Doc::Null => Value::Null,
            Doc::Bool(b) => Value::Bool(*b),
            Doc::Number(n) => Value::Number(n.clone()),
            Doc::String(s) => Value::String(s.as_ref().to_owned()),
            Doc::Array(items) => Value::Array(items.iter().map(Doc::to_value).collect()),
            Doc::Object(members) => Value::Object(members.to_map()),
        }
    }

    /// An owned value as a document, for the records built rather than read (Zeek TSV
    /// rows, OSSEC's alerts.log blocks).
    pub(crate) fn from_value(value: Value) -> Doc<'static> {
        match value {
            Value::Null => Doc::Null,
            Value::Bool(b) => Doc::Bool(b),
            Value::Number(n) => Doc::Number(n),
            Value::String(s) => Doc::String(Cow::Owned(s)),
            Value::Array(items) => Doc::Array(items.into_iter().map(Doc::from_value).collect()),
            // A map's members are already sorted and unique.
            Value::Object(map) => Doc::Object(Members::from_map(map)),
        }
    }

    /// The same document owning all of its text.
    pub(crate) fn into_owned(self) -> Doc<'static> {
        match self {
            Doc::Null => Doc::Null,
            Doc::Bool(b) => Doc::Bool(b),
            Doc::Number(n) => Doc::Number(n),
            Doc::String(s) => Doc::String(Cow::Owned(s.into_owned())),
            Doc::Array(items) => Doc::Array(items.into_iter().map(Doc::into_owned).collect()),
            Doc::Object(Members { members, sorted }) => Doc::Object(Members {
                members: members
                    .into_iter()
                    .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
                    .collect(),
                sorted,
            }),
        }
    }
}

/// Writes `doc` exactly as `serde_json::to_writer` writes the `Value` it equals: members
/// in key order, numbers through serde_json, strings escaped as serde_json escapes them.
///
/// Written by hand rather than through `Serialize` because of what a borrowed string
/// is: serde_json lends a string only when it has no escape, and refuses control
/// characters, so it holds nothing serde_json's writer would escape and is copied as it
/// is, without the byte-by-byte escape scan (the largest single cost of writing events).
pub(crate) fn write_doc(out: &mut Vec<u8>, doc: &Doc<'_>) {
    match doc {
        Doc::Null => out.extend_from_slice(b"null"),
        Doc::Bool(true) => out.extend_from_slice(b"true"),
        Doc::Bool(false) => out.extend_from_slice(b"false"),
        Doc::Number(n) => write_number(out, n),
        Doc::String(s) => write_cow(out, s),
        Doc::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_doc(out, item);
            }
            out.push(b']');
        }
        Doc::Object(members) => write_members(out, members),
    }
}

pub(crate) fn write_members(out: &mut Vec<u8>, members: &Members<'_>) {
    out.push(b'{');
    let mut write = |i: usize, key: &Cow<'_, str>, value: &Doc<'_>| {
        if i > 0 {
            out.push(b',');
        }
        write_cow(out, key);
        out.push(b':');
        write_doc(out, value);
    };
    let (kept, sorted) = members.as_kept();
    if sorted {
        for (i, (key, value)) in kept.iter().enumerate() {
            write(i, key, value);
        }
    } else {
        for (i, (key, value)) in members.key_ordered().into_iter().enumerate() {
            write(i, key, value);
        }
    }
    out.push(b'}');
}

pub(crate) fn write_number(out: &mut Vec<u8>, n: &Number) {
    // serde_json's own writer (itoa, ryu), so numbers read the same as before.
    if let Err(e) = serde_json::to_writer(&mut *out, n) {
        unreachable!("writing a number to a vector cannot fail: {e}");
    }
}

/// A string of a document: borrowed ones need no escaping (see [`write_doc`]).
// A `&Cow`, not a `&str`: whether it borrows is what decides the escaping.
#[allow(clippy::ptr_arg)]
#[inline]
pub(crate) fn write_cow(out: &mut Vec<u8>, s: &Cow<'_, str>) {
    write_text(out, s, matches!(s, Cow::Borrowed(_)));
}

/// A JSON string: copied as it is when known to need no escape, else escaped.
#[inline]
pub(crate) fn write_text(out: &mut Vec<u8>, text: &str, escape_free: bool) {
    if escape_free {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        write_str(out, text);
    }
}

/// A JSON string as serde_json writes it: `"` and `\` and the control characters
/// escaped (`\b \t \n \f \r` short, the others as `\u00xx`), everything else as is.
///
/// Eight bytes are checked at a time (see [`needs_escape`]): most strings have nothing
/// to escape, and Wazuh's long `full_log` values spent a fifth of their time in a
/// byte-by-byte scan.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Most values (addresses, names, times) need no escape: checked a word at a time,
    // the tail as the last eight bytes again, then copied in one go.
    if !needs_any_escape(bytes) {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        while let Some(chunk) = bytes.get(i..i + 8) {
            let word = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
            if needs_escape(word) {
                break;
            }
            i += 8;
        }
        let Some(&b) = bytes.get(i) else {
            break;
        };
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            0x08 => b'b',
            b'\t' => b't',
            b'\n' => b'n',
            0x0c => b'f',
            b'\r' => b'r',
            0x00..=0x1f => b'u',
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&bytes[start..i]);
        out.push(b'\\');
        out.push(short);
        if short == b'u' {
            out.extend_from_slice(&[
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
        }
        i += 1;
        start = i;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Whether any byte is below 0x20, `"` or `\`, a word at a time ([`needs_escape`]), the
/// tail as the last eight bytes again.
fn needs_any_escape(bytes: &[u8]) -> bool {
    if bytes.len() < 4 {
        return bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
    }
    if bytes.len() < 8 {
        // Four to seven bytes as one word of two overlapping halves: a byte checked
        // twice, none left out.
        let half =
            |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"));
        return needs_escape(u64::from(half(0)) | u64::from(half(bytes.len() - 4)) << 32);
    }
    let word = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("eight bytes"));
    let mut at = 0;
    while at + 8 <= bytes.len() {
        if needs_escape(word(at)) {
            return true;
        }
        at += 8;
    }
    at < bytes.len() && needs_escape(word(bytes.len() - 8))
}

/// Whether any of eight bytes is below 0x20, `"` or `\`: the classic "has a byte less
/// than n" and "has a zero byte" word tricks, exact for the question asked.
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS != 0;
    let below_space = word.wrapping_sub(ONES * 0x20) & !word & HIGHS != 0;
    below_space
        || has_zero(word ^ (ONES * u64::from(b'"')))
        || has_zero(word ^ (ONES * u64::from(b'\\')))
}

/// Parses one JSON text into a [`Doc`] borrowing from it.
pub(crate) fn doc_from_str(text: &str) -> serde_json::Result<Doc<'_>> {
    read_whole(text, DocVisitor::<true>::WHOLE)
}

/// Reads `text` with `visitor`, refusing anything after the value.
fn read_whole<'a, V: Visitor<'a>>(text: &'a str, visitor: V) -> serde_json::Result<V::Value> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = deserializer.deserialize_any(visitor)?;
    deserializer.end()?;
    Ok(value)
}

/// The members of a record that must be a JSON object, or why it is not one.
pub(crate) fn members_of(doc: serde_json::Result<Doc<'_>>) -> Result<Members<'_>, ParseError> {
    match doc {
        Ok(Doc::Object(record)) => Ok(record),
        Ok(other) => Err(ParseError::NotAnObject {
            found: other.json_type_name(),
        }),
        Err(e) => Err(ParseError::InvalidJson(e.to_string())),
    }
}

/// How deep a record may nest. serde_json reads no JSON nested more than 128 levels, and
/// the event puts the record a few levels down (`suricata.eve`, `zeek.<path>.<group>`,
/// `wazuh`, `json`): a record nested deeper than this would be published, and no stage
/// could read the event back.
pub(crate) const MAX_RECORD_DEPTH: usize = 120;

/// Refuses a JSON text nested more than [`MAX_RECORD_DEPTH`] levels deep.
pub(crate) fn check_depth(text: &[u8]) -> Result<(), ParseError> {
    if nested_deeper_than(text, MAX_RECORD_DEPTH) {
        return Err(ParseError::TooDeep {
            max: MAX_RECORD_DEPTH,
        });
    }
    Ok(())
}

/// Whether `text` opens more than `max` arrays or objects inside one another. Counting
/// the brackets first (a vectorised scan) settles almost every record: one with no more
/// than `max` of them cannot nest deeper.
fn nested_deeper_than(text: &[u8], max: usize) -> bool {
    if memchr::memchr2_iter(b'{', b'[', text).count() <= max {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in text {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// [`doc_from_str`] with objects kept in the order written (see [`Members`]): for a
/// record looked into and written out in that order.
pub(crate) fn doc_in_written_order(text: &str) -> serde_json::Result<Doc<'_>> {
    read_whole(text, DocVisitor::<false>::WHOLE)
}

/// Reads a JSON value like [`doc_from_str`], except that of a top-level object only the
/// members `wanted` names are built; every other member is read and checked exactly as
/// serde_json checks it when it reads a `Value` (same errors, same nesting limit, numbers
/// in range, escapes valid) and then forgotten. For the formats that keep their record as
/// the text it arrived as: building the members nobody reads was a third of their cost.
pub(crate) fn selected_from_str(
    text: &str,
    wanted: fn(&str) -> bool,
) -> serde_json::Result<Doc<'_>> {
    read_whole(text, DocVisitor::<false, true> { wanted })
}

/// Reads a value as serde_json reads one into a `Value`, building nothing.
#[derive(Clone, Copy)]
struct CheckSeed;

impl<'de> DeserializeSeed<'de> for CheckSeed {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        // `deserialize_any`, not `deserialize_ignored_any`: serde_json skips an ignored
        // value with lighter checks (numbers out of range pass), and what is accepted
        // here is published, so it must read back as the `Value` every stage decodes.
        deserializer.deserialize_any(CheckVisitor)
    }
}

struct CheckVisitor;

impl<'de> Visitor<'de> for CheckVisitor {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(CheckSeed)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_key_seed(KeySeed)?.is_some() {
            map.next_value_seed(CheckSeed)?;
        }
        Ok(())
    }
}

/// Reads a [`Doc`]; `SORTED`: its objects sorted by key, or kept as written (see
/// [`Members`]).
#[derive(Clone, Copy)]
struct DocSeed<const SORTED: bool>;

impl<'de, const SORTED: bool> DeserializeSeed<'de> for DocSeed<SORTED> {
    type Value = Doc<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Doc<'de>, D::Error> {
        deserializer.deserialize_any(DocVisitor::<SORTED>::WHOLE)
    }
}

/// Builds a [`Doc`]. With `SELECT`, `wanted` names the members of the top-level object
/// to build, the others being only checked (see [`selected_from_str`]); a constant, so
/// that building whole documents pays no test per member.
struct DocVisitor<const SORTED: bool, const SELECT: bool = false> {
    wanted: fn(&str) -> bool,
}

impl<const SORTED: bool> DocVisitor<SORTED> {
    /// Builds every member.
    const WHOLE: Self = DocVisitor { wanted: |_| true };
}

impl<'de, const SORTED: bool, const SELECT: bool> Visitor<'de> for DocVisitor<SORTED, SELECT> {
    type Value = Doc<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, value: bool) -> Result<Doc<'de>, E> {
        Ok(Doc::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Doc<'de>, E> {
        Ok(Doc::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Doc<'de>, E> {
        Ok(Doc::Number(value.into()))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Doc<'de>, E> {
        Ok(Number::from_f64(value).map_or(Doc::Null, Doc::Number))
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Doc<'de>, E> {
        Ok(Doc::String(Cow::Borrowed(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Doc<'de>, E> {
        Ok(Doc::String(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E>(self, value: String) -> Result<Doc<'de>, E> {
        Ok(Doc::String(Cow::Owned(value)))
    }

    fn visit_none<E>(self) -> Result<Doc<'de>, E> {
        Ok(Doc::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Doc<'de>, D::Error> {
        DocSeed::<SORTED>.deserialize(deserializer)
    }

    fn visit_unit<E>(self) -> Result<Doc<'de>, E> {
        Ok(Doc::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Doc<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(DocSeed::<SORTED>)? {
            items.push(item);
        }
        Ok(Doc::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Doc<'de>, A::Error> {
        // A record's top level (where `wanted` applies) holds more members than most
        // objects: room for them without regrowing.
        let room = if SELECT { 16 } else { 8 };
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(room));
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if SELECT && !(self.wanted)(&key) {
                map.next_value_seed(CheckSeed)?;
                continue;
            }
            let value = map.next_value_seed(DocSeed::<SORTED>)?;
            members.push((key, value));
        }
        Ok(Doc::Object(if SORTED {
            Members::from_unsorted(members)
        } else {
            Members::in_written_order(members)
        }))
    }
}

/// A key borrowed from the text unless it has escapes: serde's own `Cow<str>` always
/// copies.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Cow<'de, str>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a string key")
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(value))
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn documents_equal_and_serialise_as_serde_json_values() {
        let texts = [
            r#"{"b":1,"a":{"z":[1,-2,3.5,1e300,null,true,"x\u00e9"],"y":{}},"c":[],"b":2}"#,
            r#"{"flow_id":1234567890123456789,"neg":-9223372036854775808,"big":18446744073709551615}"#,
            r#"[{"k":"v"},{"k":"w","k":"last","k":"really"}]"#,
            r#""just a string""#,
            "  {\"pad\" : 0.1, \"e\\u0301\": \"tab\\there\", \"\\\"q\": 1.0, \"x\": -0.0 }  ",
            r#"{"z":1,"y":2,"x":3,"w":{"b":[{"d":1,"c":2}],"a":0.30000000000000004}}"#,
        ];
        for text in texts {
            let ours = doc_from_str(text).unwrap();
            let theirs: Value = serde_json::from_str(text).unwrap();
            assert_eq!(ours.to_value(), theirs, "{text}");
            let mut written = Vec::new();
            write_doc(&mut written, &ours);
            assert_eq!(written, serde_json::to_vec(&theirs).unwrap(), "{text}");
            assert_eq!(Doc::from_value(theirs.clone()).to_value(), theirs, "{text}");
            assert_eq!(ours.clone().into_owned(), ours, "{text}");
        }
    }

    /// A member left out of the document is still read as serde_json reads a `Value`:
    /// what is accepted is published as it is, and every stage must read it back.
    #[test]
    fn unselected_members_are_checked_as_a_value_would_be() {
        let none = |_: &str| false;
        for text in [
            r#"{"a":1e400}"#,
            r#"{"a":"\ud800"}"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":[1,2,}"#,
            r#"{"a":{"b":01}}"#,
            r#"{"a":1} trailing"#,
            &format!("{{\"a\":{}{}}}", "[".repeat(200), "]".repeat(200)),
        ] {
            let value = serde_json::from_str::<Value>(text).unwrap_err().to_string();
            let selected = selected_from_str(text, none).unwrap_err().to_string();
            assert_eq!(selected, value, "{text}");
        }
        let text = r#"{"keep":{"x":[1,"\u00e9"]},"drop":{"y":1.5e3,"z":[null,true]},"keep":2}"#;
        let doc = selected_from_str(text, |k| k == "keep").unwrap();
        assert_eq!(doc.to_value(), serde_json::json!({"keep": 2}));
        // Kept as written, read as a map: the last of a key written twice counts, and
        // written out it is in key order, each key once.
        let text = r#"{"b":{"y":1,"x":[{"q":1,"p":2}],"y":3},"a":0,"b":{"z":1,"y":2,"z":4}}"#;
        let doc = selected_from_str(text, |_| true).unwrap();
        let Doc::Object(members) = &doc else {
            panic!("an object");
        };
        let Some(Doc::Object(b)) = members.get("b") else {
            panic!("b is an object");
        };
        assert_eq!(b.get("z").and_then(Doc::as_f64), Some(4.0));
        let mut written = Vec::new();
        write_doc(&mut written, &doc);
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(doc.to_value(), value);
        assert_eq!(written, serde_json::to_vec(&value).unwrap());
        let mut removed = b.clone();
        assert_eq!(removed.remove("z").and_then(|d| d.as_f64()), Some(4.0));
        assert!(!removed.contains_key("z"));
        assert_eq!(
            selected_from_str("[1]", none).unwrap().to_value(),
            serde_json::json!([1])
        );
    }

    #[test]
    fn records_too_deep_for_the_event_are_refused() {
        let nested = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
        assert!(check_depth(nested(MAX_RECORD_DEPTH).as_bytes()).is_ok());
        assert!(check_depth(nested(MAX_RECORD_DEPTH + 1).as_bytes()).is_err());
        // Brackets inside strings, escaped quotes included, do not count.
        let in_strings = format!(r#"{{"a":"{}\"{}"}}"#, "[".repeat(200), "{".repeat(200));
        assert!(check_depth(in_strings.as_bytes()).is_ok());
        // Siblings are not nesting.
        let wide = format!("[{}]", vec!["[]"; 500].join(","));
        assert!(check_depth(wide.as_bytes()).is_ok());
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let all: String = (0u8..0x80).map(char::from).chain("é€😀".chars()).collect();
        let long = "C:\\Windows\\System32 \"quoted\"\tand more than eight bytes\u{1}é".repeat(3);
        for s in [
            all.as_str(),
            "",
            "plain",
            "a\"b\\c/d",
            "\u{7f}\u{1f}",
            long.as_str(),
        ] {
            let mut written = Vec::new();
            write_str(&mut written, s);
            assert_eq!(written, serde_json::to_vec(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn short_strings_are_escaped_wherever_the_byte_is() {
        for len in 1..=17 {
            for at in 0..len {
                for special in [0u8, 0x1f, b'"', b'\\', b'\n', 0x7f, b' '] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = special;
                    let s = std::str::from_utf8(&bytes).unwrap();
                    let mut written = Vec::new();
                    write_str(&mut written, s);
                    assert_eq!(written, serde_json::to_vec(s).unwrap(), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn the_word_check_finds_exactly_the_bytes_to_escape() {
        let truth = |word: u64| {
            word.to_le_bytes()
                .iter()
                .any(|b| *b < 0x20 || *b == b'"' || *b == b'\\')
        };
        for b in 0..=255u8 {
            for at in 0..8 {
                let mut bytes = *b"abcdefgh";
                bytes[at] = b;
                let word = u64::from_le_bytes(bytes);
                assert_eq!(needs_escape(word), truth(word), "{b:#x} at {at}");
            }
        }
        // Pseudo-random words, high bytes (UTF-8) included.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            assert_eq!(needs_escape(x), truth(x), "{x:#x}");
        }
    }

    #[test]
    fn keys_are_ordered_as_str_orders_them() {
        let keys = [
            "",
            "a",
            "A",
            "ab",
            "b",
            "é",
            "a.b",
            "a_b",
            "ba",
            "\u{7f}",
            "zz",
            "z",
            "\0",
            "a\0",
            "ab\0",
            "ab\0\0",
            "abcdefgh",
            "abcdefg",
            "abcdefgh\0",
            "abcdefghi",
            "abcdefgi",
            "bytes_toclient",
            "bytes_toserver",
            "pkts_toserver",
            "dest_ip",
            "dest_port",
        ];
        for a in keys {
            for b in keys {
                assert_eq!(key_order(a, b), a.cmp(b), "{a:?} {b:?}");
            }
        }
    }

    #[test]
    fn every_member_is_found_and_no_other_key() {
        let text = r#"{"src_ip":1,"src_port":2,"s":3,"":4,"dest_ip":5,"dest":6,"é":7,"zz":8,"z":9,"src":10}"#;
        let doc = doc_from_str(text).unwrap();
        let members = doc.as_object().unwrap();
        let value: Value = serde_json::from_str(text).unwrap();
        for key in value.as_object().unwrap().keys() {
            assert_eq!(
                members.get(key).map(Doc::to_value).as_ref(),
                value.get(key),
                "{key:?}"
            );
        }
        for absent in ["src_", "src_ipx", "a", "zzz", "d", "é2", "\u{7f}", "Z"] {
            assert!(members.get(absent).is_none(), "{absent:?}");
        }
        let empty = doc_from_str("{}").unwrap();
        assert!(empty.as_object().unwrap().get("").is_none());
        assert!(doc_from_str(r#"{"a":1}"#)
            .unwrap()
            .as_object()
            .unwrap()
            .get("")
            .is_none());
    }

    #[test]
    fn records_kept_as_written_give_the_last_of_a_key() {
        for text in [
            r#"{"ts":1,"uid":"C1","id.orig_h":"a","id.resp_h":"b","proto":"tcp"}"#,
            r#"{"a":1,"b":2,"a":3}"#,
            r#"{"id.orig_h":1,"id.resp_h":2,"ts":3,"id.orig_h":4,"":5,"":6}"#,
        ] {
            let doc = doc_in_written_order(text).unwrap();
            let members = doc.as_object().unwrap();
            let value: Value = serde_json::from_str(text).unwrap();
            for (key, expected) in value.as_object().unwrap() {
                let found = members.get(key).map(Doc::to_value);
                assert_eq!(found.as_ref(), Some(expected), "{text} {key}");
                let mut removed = members.clone();
                let taken = removed.remove(key).map(|d| d.to_value());
                assert_eq!(taken.as_ref(), Some(expected), "{text} {key}");
                assert!(!removed.contains_key(key), "{text} {key}");
            }
            assert!(members.get("tss").is_none());
        }
    }

    #[test]
    fn members_are_found_by_key() {
        let doc = doc_from_str(r#"{"b":1,"a":2,"c":{"d":null}}"#).unwrap();
        let members = doc.as_object().unwrap();
        assert_eq!(members.get("a"), Some(&Doc::Number(2.into())));
        assert!(members.get("d").is_none());
        assert!(members
            .get("c")
            .unwrap()
            .as_object()
            .unwrap()
            .get("d")
            .unwrap()
            .is_null());
    }

    #[test]
    fn bad_json_is_refused_as_serde_json_refuses_it_into_documents_too() {
        for text in [r#"{"a":1"#, r#"{"a":1} x"#, "", r#"{"a" 1}"#, r#"{1:2}"#] {
            let ours = doc_from_str(text).unwrap_err().to_string();
            let theirs = serde_json::from_str::<Value>(text).unwrap_err().to_string();
            assert_eq!(ours, theirs, "{text}");
        }
    }
    use super::*;
}
