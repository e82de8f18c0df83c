//! What every parser shares when it builds an ECS event: a writer that puts values at
//! dotted paths and writes the event as JSON bytes or an [`Event`], the `related.*`
//! collector, and the checked readers for the values ECS has opinions about (timestamps,
//! IP addresses, ports).

use std::borrow::Cow;
use std::net::IpAddr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, SecondsFormat, Utc};
use kastell_core::Event;
use serde_json::Value;

use crate::error::ParseError;
use crate::json::{
    key_order, same_key, write_cow, write_doc, write_members, write_number, write_str, write_text,
    Doc, Members,
};

/// A value of an event under construction.
///
/// ECS values are mostly constants, strings of the source record and numbers, so a node
/// borrows what it can; whatever a mapping builds as a `serde_json::Value` is kept as one.
pub(crate) enum Node<'t> {
    Str(Cow<'t, str>),
    Strings(Vec<Cow<'t, str>>),
    /// A list of the mapping's constants.
    Constants(&'static [&'static str]),
    /// A non-negative integer (ports, byte and packet counts), written without going
    /// through `serde_json::Value`'s serializer.
    U64(u64),
    Json(Value),
    /// A subtree of the source record, written out as it was read.
    Doc(&'t Doc<'t>),
    /// The source record itself (or one of its objects).
    Members(&'t Members<'t>),
    /// A flat record (sorted) whose dotted names are written nested, `id.orig_h` under
    /// `id`, as the rest of the event is: Zeek's logs. See [`nest`].
    Dotted(&'t Members<'t>),
    /// A JSON object as the text it was received as, already checked by serde_json
    /// ([`crate::json::selected_from_str`]), written as it is: member order, escapes
    /// and number spellings stay the sensor's. [`EcsBuilder::has`] does not look inside.
    Raw(&'t str),
    /// An ECS object: members in the order written, each key once; sorted when written.
    Object(Vec<(Cow<'t, str>, Node<'t>)>),
}

impl<'t> From<&'t str> for Node<'t> {
    fn from(value: &'t str) -> Self {
        Node::Str(Cow::Borrowed(value))
    }
}

impl<'t> From<String> for Node<'t> {
    fn from(value: String) -> Self {
        Node::Str(Cow::Owned(value))
    }
}

impl<'t> From<Cow<'t, str>> for Node<'t> {
    fn from(value: Cow<'t, str>) -> Self {
        Node::Str(value)
    }
}

impl<'t> From<Value> for Node<'t> {
    fn from(value: Value) -> Self {
        Node::Json(value)
    }
}

impl<'t> From<&'t Doc<'t>> for Node<'t> {
    fn from(value: &'t Doc<'t>) -> Self {
        Node::Doc(value)
    }
}

impl<'t> From<&'t Members<'t>> for Node<'t> {
    fn from(value: &'t Members<'t>) -> Self {
        Node::Members(value)
    }
}

impl<'t> From<Vec<Cow<'t, str>>> for Node<'t> {
    fn from(values: Vec<Cow<'t, str>>) -> Self {
        Node::Strings(values)
    }
}

impl<'t> From<Vec<String>> for Node<'t> {
    fn from(values: Vec<String>) -> Self {
        Node::Strings(values.into_iter().map(Cow::Owned).collect())
    }
}

macro_rules! node_from {
    ($make:expr => $($t:ty),*) => {$(
        impl<'t> From<$t> for Node<'t> {
            // `u64::from` is the identity for `u64` itself.
            #[allow(clippy::useless_conversion)]
            fn from(value: $t) -> Self {
                $make(value)
            }
        }
    )*};
}

node_from!(|v| Node::Json(Value::from(v)) => i64, i32, f64, bool);
node_from!(|v| Node::U64(u64::from(v)) => u64, u32, u16, u8);

impl<'t> Node<'t> {
    pub(crate) fn is_object(&self) -> bool {
        matches!(
            self,
            Node::Object(_)
                | Node::Json(Value::Object(_))
                | Node::Doc(Doc::Object(_))
                | Node::Members(_)
                | Node::Dotted(_)
                | Node::Raw(_)
        )
    }

    fn is_null(&self) -> bool {
        match self {
            Node::Json(value) => value.is_null(),
            Node::Doc(doc) => doc.is_null(),
            _ => false,
        }
    }

    /// The member `key` of an object node.
    fn member(&self, key: &str) -> Option<NodeRef<'_, 't>> {
        match self {
            Node::Object(members) => members
                .iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| NodeRef::Node(v)),
            Node::Json(Value::Object(map)) => map.get(key).map(NodeRef::Value),
            Node::Doc(Doc::Object(members)) => members.get(key).map(NodeRef::Doc),
            Node::Members(members) => members.get(key).map(NodeRef::Doc),
            _ => None,
        }
    }

    /// Makes the node an ECS object, keeping the members of an object it already is (a
    /// `serde_json` or source object written whole, then written into) and replacing any
    /// other value, because the path wins.
    // Inlined: every write into an object comes here, and nearly always finds one.
    #[inline]
    pub(crate) fn make_object(&mut self) -> &mut Vec<(Cow<'t, str>, Node<'t>)> {
        if !matches!(self, Node::Object(_)) {
            self.become_object();
        }
        match self {
            Node::Object(members) => members,
            _ => unreachable!("the node was just made an object"),
        }
    }

    /// [`Self::make_object`] of a node that is not an ECS object yet.
    #[cold]
    fn become_object(&mut self) {
        let members = match std::mem::replace(self, Node::Object(Vec::new())) {
            Node::Object(members) => members,
            Node::Json(Value::Object(map)) => map
                .into_iter()
                .map(|(k, v)| (Cow::Owned(k), Node::Json(v)))
                .collect(),
            // Each key as the `Cow` it was read as: whether it borrows decides whether it
            // is escaped when written.
            Node::Doc(Doc::Object(members)) | Node::Members(members) => members
                .key_ordered()
                .into_iter()
                .map(|(k, v)| (k.clone(), Node::Doc(v)))
                .collect(),
            Node::Dotted(record) => match nest(record) {
                Node::Object(members) => members,
                _ => Vec::with_capacity(NESTED_CAPACITY),
            },
            Node::Raw(text) => match raw_value(text) {
                Value::Object(map) => map
                    .into_iter()
                    .map(|(k, v)| (Cow::Owned(k), Node::Json(v)))
                    .collect(),
                _ => Vec::with_capacity(NESTED_CAPACITY),
            },
            _ => Vec::with_capacity(NESTED_CAPACITY),
        };
        *self = Node::Object(members);
    }

    /// Sorts every ECS object by key, the order `serde_json::Map` writes.
    pub(crate) fn sort(&mut self) {
        if let Node::Object(members) = self {
            // Keys are unique, so an unstable sort gives the one order. (Keeping objects
            // sorted as they are built, by binary search and insertion, cost 2 % more.)
            members.sort_unstable_by(|a, b| key_order(&a.0, &b.0));
            // Most members are values: tested here rather than in a call each.
            for (_, member) in members {
                if matches!(member, Node::Object(_)) {
                    member.sort();
                }
            }
        }
    }

    fn to_value(&self) -> Value {
        match self {
            Node::Str(s) => Value::String(s.as_ref().to_owned()),
            Node::Strings(items) => Value::Array(
                items
                    .iter()
                    .map(|s| Value::String(s.as_ref().to_owned()))
                    .collect(),
            ),
            Node::Constants(items) => Value::Array(
                items
                    .iter()
                    .map(|s| Value::String((*s).to_owned()))
                    .collect(),
            ),
            Node::U64(n) => Value::from(*n),
            Node::Json(value) => value.clone(),
            Node::Doc(doc) => doc.to_value(),
            Node::Members(members) => Value::Object(members.to_map()),
            Node::Raw(text) => raw_value(text),
            Node::Dotted(record) => nest(record).to_value(),
            Node::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.as_ref().to_owned(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

/// The value of a [`Node::Raw`] text. It was read by the same serde_json reader before
/// it became a node, so it reads again; were it ever not to, the event says so in place
/// of the record rather than failing the record after it was accepted.
fn raw_value(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| Value::String(format!("unreadable record: {e}")))
}

/// Writes a node as serde_json writes the `Value` it stands for (see
/// [`crate::json::write_doc`]).
pub(crate) fn write_node(out: &mut Vec<u8>, node: &Node<'_>) {
    match node {
        Node::Str(s) => write_str(out, s),
        Node::Strings(items) => write_strings(out, items.iter().map(AsRef::as_ref)),
        Node::Constants(items) => write_strings(out, items.iter().copied()),
        Node::U64(n) => out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
        Node::Json(value) => {
            if let Err(e) = serde_json::to_writer(&mut *out, value) {
                unreachable!("writing a value to a vector cannot fail: {e}");
            }
        }
        Node::Doc(doc) => write_doc(out, doc),
        Node::Members(members) => write_members(out, members),
        Node::Raw(text) => out.extend_from_slice(text.as_bytes()),
        Node::Dotted(record) => write_dotted(out, record),
        Node::Object(members) => {
            out.push(b'{');
            for (i, (key, value)) in members.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // A borrowed key is a segment of a constant path ([`EcsBuilder::put`]) or
                // a key of the source record, neither of which holds a character JSON
                // escapes; a key built at run time is owned and escaped.
                write_cow(out, key);
                out.push(b':');
                // Strings and counts, most of an event's values, written here rather
                // than in a call each.
                match value {
                    Node::Str(s) => write_str(out, s),
                    Node::U64(n) => {
                        out.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes())
                    }
                    _ => write_node(out, value),
                }
            }
            out.push(b'}');
        }
    }
}

fn write_strings<'s>(out: &mut Vec<u8>, items: impl Iterator<Item = &'s str>) {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_str(out, item);
    }
    out.push(b']');
}

/// The flat record nested by its dotted names, `id.orig_h` under `id`. A name that would
/// land on a value already there (a log with both `a` and `a.b`) stays flat rather than
/// overwrite it. The result borrows the record's values; its objects are not sorted.
pub(crate) fn nest<'t>(record: &'t Members<'t>) -> Node<'t> {
    // The plain names are taken in one pass, then the dotted ones inserted in their
    // order. Same result as inserting all in key order: a plain `a` sorts before every
    // `a.…`, so it is there first either way, and the dotted names keep their order
    // among themselves.
    let mut root: Vec<(Cow<'t, str>, Node<'t>)> = Vec::new();
    let mut dotted = Vec::new();
    for (key, value) in record.key_ordered() {
        if key.as_bytes().contains(&b'.') {
            dotted.push((key.clone(), value));
        } else {
            root.push((key.clone(), Node::Doc(value)));
        }
    }
    for (key, value) in dotted {
        if !insert_nested(&mut root, &key, value) {
            root.push((key, Node::Doc(value)));
        }
    }
    Node::Object(root)
}

/// Puts `value` at the dotted `key`, unless a value is already there or on the way. The
/// parts of a borrowed key borrow (they hold no escape either); those of an owned one are
/// owned, so they are escaped when written.
// A `&Cow`, not a `&str`: whether it borrows is what decides the escaping.
#[allow(clippy::ptr_arg)]
fn insert_nested<'t>(
    root: &mut Vec<(Cow<'t, str>, Node<'t>)>,
    key: &Cow<'t, str>,
    value: &'t Doc<'t>,
) -> bool {
    let parts: Vec<Cow<'t, str>> = match key {
        Cow::Borrowed(key) => key.split('.').map(Cow::Borrowed).collect(),
        Cow::Owned(key) => key.split('.').map(|p| Cow::Owned(p.to_owned())).collect(),
    };
    let mut members = root;
    let last = parts.len() - 1;
    for (i, part) in parts.into_iter().enumerate() {
        let index = members.iter().position(|(k, _)| *k == part);
        if i == last {
            if index.is_some() {
                return false;
            }
            members.push((part, Node::Doc(value)));
            return true;
        }
        let index = index.unwrap_or_else(|| {
            members.push((part, Node::Object(Vec::new())));
            members.len() - 1
        });
        let slot = &mut members[index].1;
        if !slot.is_object() {
            return false;
        }
        members = slot.make_object();
    }
    false
}

/// Writes [`Node::Dotted`] straight from the record when its names already come as the
/// nested record's do: each dotted name has one dot and the names of a group come
/// together, and, for a record kept in key order, no plain name or other group sorts
/// between a group's name and its members; for one kept in the order written (Zeek's,
/// published as it is), no name is written twice. Otherwise through [`nest`].
fn write_dotted(out: &mut Vec<u8>, record: &Members<'_>) {
    let (members, sorted) = record.as_kept();
    // A sorted record comes in the nested order when `streams_nested` says so; then its
    // names are unique and its groups together, and it is written as it comes.
    let streamed = (!sorted || streams_nested(members)) && write_as_written(out, members);
    if !streamed {
        let mut nested = nest(record);
        nested.sort();
        write_node(out, &nested);
    }
}

/// Writes members in the order they are kept, checking as it goes that they can be
/// written so: each dotted name has one dot, a group's names come together, and no name (plain,
/// group, or within a group) comes twice. `false`, with nothing written, when they cannot.
fn write_as_written(out: &mut Vec<u8>, members: &[(Cow<'_, str>, Doc<'_>)]) -> bool {
    let start = out.len();
    // Names of the blocks written so far (a plain member, or a group), with a 64-bit
    // filter so that a new name is compared with them only on a filter hit.
    let mut blocks: Vec<&str> = Vec::with_capacity(members.len());
    let mut filter = 0u64;
    let mut open: Option<(&str, usize)> = None;
    out.push(b'{');
    for (i, (key, value)) in members.iter().enumerate() {
        let (name, rest) = split_name(key);
        if rest.is_some_and(|rest| name.is_empty() || rest.is_empty() || rest.contains('.')) {
            out.truncate(start);
            return false;
        }
        match (open, rest) {
            (Some((group, from)), Some(rest)) if same_key(group, name) => {
                if members[from..i].iter().any(|(k, _)| same_key(k, key)) {
                    out.truncate(start);
                    return false;
                }
                out.push(b',');
                write_key_part(out, rest, key);
            }
            _ => {
                let bit = 1u64 << (name_hash(name) & 63);
                if filter & bit != 0 && blocks.iter().any(|seen| same_key(seen, name)) {
                    out.truncate(start);
                    return false;
                }
                filter |= bit;
                blocks.push(name);
                if open.is_some() {
                    out.push(b'}');
                }
                if i > 0 {
                    out.push(b',');
                }
                write_key_part(out, name, key);
                open = rest.map(|_| (name, i));
                if let Some(rest) = rest {
                    out.extend_from_slice(b":{");
                    write_key_part(out, rest, key);
                }
            }
        }
        out.push(b':');
        // Strings and numbers, most of a record's values, written here rather than in a
        // call each.
        match value {
            Doc::String(s) => write_cow(out, s),
            Doc::Number(n) => write_number(out, n),
            _ => write_doc(out, value),
        }
    }
    if open.is_some() {
        out.push(b'}');
    }
    out.push(b'}');
    true
}

/// A name's part before its first dot, and the rest after it. A byte scan: names and
/// paths are a few bytes, where `str::split`'s pattern search and `memchr`'s vector
/// set-up cost more than the scan.
fn split_name(key: &str) -> (&str, Option<&str>) {
    match key.bytes().position(|b| b == b'.') {
        Some(dot) => (&key[..dot], Some(&key[dot + 1..])),
        None => (key, None),
    }
}

/// A cheap hash of a name for [`write_as_written`]'s filter.
fn name_hash(name: &str) -> usize {
    let bytes = name.as_bytes();
    let first = bytes.first().copied().unwrap_or(0);
    let last = bytes.last().copied().unwrap_or(0);
    bytes.len() * 31 + usize::from(first) * 7 + usize::from(last)
}

/// Whether [`write_dotted`] can write these (sorted) members as they come.
fn streams_nested(members: &[(Cow<'_, str>, Doc<'_>)]) -> bool {
    let mut previous: Option<(&str, bool)> = None;
    for (key, _) in members {
        let (name, dotted) = match split_name(key) {
            (group, Some(rest)) => {
                if group.is_empty() || rest.is_empty() || rest.contains('.') {
                    return false;
                }
                (group, true)
            }
            (name, None) => (name, false),
        };
        if let Some((last, last_dotted)) = previous {
            let same_group = dotted && last_dotted && last == name;
            if !same_group && key_order(last, name) != std::cmp::Ordering::Less {
                return false;
            }
        }
        previous = Some((name, dotted));
    }
    true
}

/// A part of a record's key, escaped unless the key borrows (see [`write_cow`]).
// A `&Cow`, not a `&str`: whether it borrows is what decides the escaping.
#[allow(clippy::ptr_arg)]
fn write_key_part(out: &mut Vec<u8>, part: &str, key: &Cow<'_, str>) {
    write_text(out, part, matches!(key, Cow::Borrowed(_)));
}

/// A value found while walking an event under construction.
enum NodeRef<'n, 't> {
    Node(&'n Node<'t>),
    Value(&'n Value),
    Doc(&'n Doc<'t>),
}

impl<'n, 't> NodeRef<'n, 't> {
    fn member(&self, key: &str) -> Option<NodeRef<'n, 't>> {
        match self {
            NodeRef::Node(node) => node.member(key),
            NodeRef::Value(value) => value.as_object()?.get(key).map(NodeRef::Value),
            NodeRef::Doc(doc) => doc.as_object()?.get(key).map(NodeRef::Doc),
        }
    }

    fn is_null(&self) -> bool {
        match self {
            NodeRef::Node(node) => node.is_null(),
            NodeRef::Value(value) => value.is_null(),
            NodeRef::Doc(doc) => doc.is_null(),
        }
    }
}

/// Room for the handful of fields an ECS object usually gets, so building one does not
/// regrow its vector field by field.
const NESTED_CAPACITY: usize = 6;

/// An ECS event under construction, borrowing from the source record `'t`.
///
/// Values are collected per top-level field (`source`, `event`, …) as nodes whose keys
/// are the (mostly constant) path segments; [`EcsBuilder::finish`] sorts them and hands
/// the result to the caller's [`Output`]: the JSON bytes that go on the bus, written
/// straight from the nodes, or an [`Event`] where a caller needs one. One mapping serves
/// both, and the bytes are those `serde_json::to_vec(&event)` writes.
pub(crate) struct EcsBuilder<'t> {
    groups: Vec<(Cow<'t, str>, Node<'t>)>,
    /// Where each of [`GROUPS`] is in `groups`, plus one (0: not written yet), so that a
    /// [`Path`] finds its group without a search.
    slots: [usize; GROUPS.len()],
    // Borrowed from the record where the value is one of its strings: most are.
    related_ip: Vec<Cow<'t, str>>,
    related_hosts: Vec<Cow<'t, str>>,
    related_user: Vec<Cow<'t, str>>,
    related_hash: Vec<Cow<'t, str>>,
}

impl<'t> EcsBuilder<'t> {
    pub(crate) fn new() -> Self {
        EcsBuilder {
            groups: Vec::with_capacity(16),
            slots: [0; GROUPS.len()],
            related_ip: Vec::new(),
            related_hosts: Vec::new(),
            related_user: Vec::new(),
            related_hash: Vec::new(),
        }
    }

    /// Writes a value at a dotted path, replacing whatever was there.
    ///
    /// The path is a constant of the mapping, split when the crate is compiled ([`ecs!`]),
    /// which is why the event's keys are written without an escape scan; a path built at
    /// run time goes through [`Self::put_dyn`].
    pub(crate) fn put(&mut self, path: &'static Path, value: impl Into<Node<'t>>) {
        self.put_path(path, value.into());
    }

    /// [`Self::put_at`] for a path split in advance: its group is found by its slot, its
    /// other segments as `put_at` finds them.
    fn put_path(&mut self, path: &'static Path, value: Node<'t>) {
        let segments = path.segments();
        let Some((last, within)) = segments.split_last() else {
            match self.slots[path.group] {
                0 => {
                    self.push_group(path.group, value);
                }
                at => self.groups[at - 1].1 = value,
            }
            return;
        };
        let mut members = self.group_object(path.group);
        for segment in within {
            members = object_member(members, segment, Cow::Borrowed);
        }
        set_member(members, last, Cow::Borrowed, value);
    }

    /// The group [`GROUPS`]`[group]` as an object, added if it is not there.
    fn group_object(&mut self, group: usize) -> &mut Vec<(Cow<'t, str>, Node<'t>)> {
        let at = match self.slots[group] {
            0 => self.push_group(group, Node::Object(Vec::with_capacity(NESTED_CAPACITY))),
            at => at - 1,
        };
        self.groups[at].1.make_object()
    }

    /// Adds the group [`GROUPS`]`[group]`, returning where it is.
    fn push_group(&mut self, group: usize, value: Node<'t>) -> usize {
        self.groups.push((Cow::Borrowed(GROUPS[group]), value));
        self.slots[group] = self.groups.len();
        self.groups.len() - 1
    }

    /// Records where a group just added is, when it is one of [`GROUPS`].
    fn note_slot(&mut self, name: &str, at: usize) {
        if let Ok(group) = GROUPS.binary_search(&name) {
            self.slots[group] = at + 1;
        }
    }

    /// [`Self::put`] for a path built at run time (Zeek's `zeek.<log>`).
    pub(crate) fn put_dyn(&mut self, path: &str, value: impl Into<Node<'t>>) {
        self.put_at(path, |segment| Cow::Owned(segment.to_owned()), value.into());
    }

    /// Walks `path` segment by segment, creating the objects it names, and sets its last
    /// segment to `value`. A new member is pushed with its final node at once: a
    /// placeholder replaced afterwards cost as much as the search (every event makes
    /// about thirty of these writes).
    fn put_at<'p>(
        &mut self,
        path: &'p str,
        key: impl Fn(&'p str) -> Cow<'t, str>,
        value: Node<'t>,
    ) {
        let (group, rest) = split_name(path);
        let found = self.groups.iter().rposition(|(k, _)| same_key(k, group));
        let Some(mut rest) = rest else {
            match found {
                Some(at) => self.groups[at].1 = value,
                None => {
                    self.groups.push((key(group), value));
                    self.note_slot(group, self.groups.len() - 1);
                }
            }
            return;
        };
        let at = match found {
            Some(at) => at,
            None => {
                let object = Node::Object(Vec::with_capacity(NESTED_CAPACITY));
                self.groups.push((key(group), object));
                self.note_slot(group, self.groups.len() - 1);
                self.groups.len() - 1
            }
        };
        let mut members = self.groups[at].1.make_object();
        loop {
            let (segment, tail) = split_name(rest);
            let Some(tail) = tail else {
                set_member(members, segment, &key, value);
                return;
            };
            members = object_member(members, segment, &key);
            rest = tail;
        }
    }

    /// Writes `value` at `group.key`, `key` being built at run time (Zeek's log name):
    /// [`Self::put_dyn`] without building the path.
    pub(crate) fn put_under(&mut self, group: &'static Path, key: String, value: Node<'t>) {
        let members = self.group_object(group.group);
        match members.iter().rposition(|(k, _)| same_key(k, &key)) {
            Some(index) => members[index].1 = value,
            None => members.push((Cow::Owned(key), value)),
        }
    }

    pub(crate) fn put_str(&mut self, path: &'static Path, value: &'t str) {
        self.put(path, value);
    }

    /// Writes `value` unless the path already holds one: for fields several source
    /// fields can fill, where the first (most specific) wins.
    pub(crate) fn put_str_if_absent(&mut self, path: &'static Path, value: &str) {
        if !self.has(path.text) {
            self.put(path, value.to_owned());
        }
    }

    /// Whether the path holds a value other than null.
    pub(crate) fn has(&self, path: &str) -> bool {
        let mut parts = DotSplit(Some(path));
        let Some(top) = parts.next() else {
            return false;
        };
        let Some((_, node)) = self.groups.iter().find(|(name, _)| name == top) else {
            return false;
        };
        let mut value = NodeRef::Node(node);
        for part in parts {
            match value.member(part) {
                Some(inner) => value = inner,
                None => return false,
            }
        }
        !value.is_null()
    }

    /// A list of constants (`event.category`'s `["network"]`), kept as the slice it is.
    pub(crate) fn put_constants(&mut self, path: &'static Path, values: &'static [&'static str]) {
        self.put(path, Node::Constants(values));
    }

    pub(crate) fn put_strings(&mut self, path: &'static Path, values: &[&'t str]) {
        let values = values.iter().map(|v| Cow::Borrowed(*v)).collect();
        self.put(path, Node::Strings(values));
    }

    pub(crate) fn related_ip(&mut self, ip: impl Into<Cow<'t, str>>) {
        push_unique(&mut self.related_ip, ip.into());
    }

    pub(crate) fn related_host(&mut self, host: impl Into<Cow<'t, str>>) {
        push_unique(&mut self.related_hosts, host.into());
    }

    pub(crate) fn related_user(&mut self, user: impl Into<Cow<'t, str>>) {
        push_unique(&mut self.related_user, user.into());
    }

    pub(crate) fn related_hash(&mut self, hash: impl Into<Cow<'t, str>>) {
        push_unique(&mut self.related_hash, hash.into());
    }

    /// Adds `related.*` and hands the event to the caller's output.
    pub(crate) fn finish<O: Output>(mut self) -> O {
        let related = [
            ("ip", std::mem::take(&mut self.related_ip)),
            ("hosts", std::mem::take(&mut self.related_hosts)),
            ("user", std::mem::take(&mut self.related_user)),
            ("hash", std::mem::take(&mut self.related_hash)),
        ];
        let related: Vec<(Cow<'t, str>, Node<'t>)> = related
            .into_iter()
            .filter(|(_, values)| !values.is_empty())
            .map(|(key, values)| (Cow::Borrowed(key), Node::Strings(values)))
            .collect();
        let mut root = Node::Object(self.groups);
        if !related.is_empty() {
            // As `Map` would: `related` written by the mapping is replaced whole.
            if let Node::Object(groups) = &mut root {
                groups.retain(|(name, _)| name != "related");
                groups.push((Cow::Borrowed("related"), Node::Object(related)));
            }
        }
        root.sort();
        O::from_built(Built { root })
    }
}

/// Sets the member `segment` of an ECS object to `value`. Objects are small and written
/// in bursts, so the last member written is tried first.
fn set_member<'p, 't>(
    members: &mut Vec<(Cow<'t, str>, Node<'t>)>,
    segment: &'p str,
    key: impl Fn(&'p str) -> Cow<'t, str>,
    value: Node<'t>,
) {
    match members.iter().rposition(|(k, _)| same_key(k, segment)) {
        Some(index) => members[index].1 = value,
        None => members.push((key(segment), value)),
    }
}

/// The member `segment` of an ECS object as an object, added if it is not there.
fn object_member<'m, 'p, 't>(
    members: &'m mut Vec<(Cow<'t, str>, Node<'t>)>,
    segment: &'p str,
    key: impl Fn(&'p str) -> Cow<'t, str>,
) -> &'m mut Vec<(Cow<'t, str>, Node<'t>)> {
    let index = match members.iter().rposition(|(k, _)| same_key(k, segment)) {
        Some(index) => index,
        None => {
            let object = Node::Object(Vec::with_capacity(NESTED_CAPACITY));
            members.push((key(segment), object));
            members.len() - 1
        }
    };
    members[index].1.make_object()
}

/// The top-level fields the mappings' constant paths start with, in key order (checked
/// when the crate is compiled). A [`Path`] holds its group's index here, so that the
/// builder finds the group in one step instead of searching for it on every write.
const GROUPS: [&str; 32] = [
    "@timestamp",
    "agent",
    "cef",
    "destination",
    "dns",
    "email",
    "event",
    "file",
    "greenbone",
    "host",
    "http",
    "json",
    "log",
    "message",
    "network",
    "observer",
    "ossec",
    "process",
    "registry",
    "rule",
    "service",
    "source",
    "suricata",
    "threat",
    "tls",
    "url",
    "user",
    "user_agent",
    "vulnerability",
    "wazuh",
    "x509",
    "zeek",
];

const _: () = {
    let mut i = 1;
    while i < GROUPS.len() {
        assert!(
            const_order(GROUPS[i - 1], GROUPS[i]) < 0,
            "GROUPS must be in key order"
        );
        i += 1;
    }
};

/// The most segments a constant path has below its group (`http.request.body.bytes`
/// has three).
const MAX_SEGMENTS: usize = 4;

/// A constant ECS path, split when the crate is compiled: [`ecs!`]`("source.ip")` is a
/// `&'static Path`, so that a write passes one pointer. A path whose group is not in
/// [`GROUPS`], or with an empty segment, fails to compile.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Path {
    text: &'static str,
    group: usize,
    below: [&'static str; MAX_SEGMENTS],
    depth: usize,
}

impl Path {
    pub(crate) const fn new(text: &'static str) -> Path {
        let (group, mut rest) = const_split(text);
        let mut index = 0;
        while index < GROUPS.len() && const_order(GROUPS[index], group) != 0 {
            index += 1;
        }
        assert!(index < GROUPS.len(), "a path's group must be one of GROUPS");
        let mut below = [""; MAX_SEGMENTS];
        let mut depth = 0;
        while let Some(tail) = rest {
            assert!(
                depth < MAX_SEGMENTS,
                "a path has at most MAX_SEGMENTS below its group"
            );
            let (segment, next) = const_split(tail);
            assert!(!segment.is_empty(), "a path has no empty segment");
            below[depth] = segment;
            depth += 1;
            rest = next;
        }
        Path {
            text,
            group: index,
            below,
            depth,
        }
    }

    pub(crate) fn text(&self) -> &'static str {
        self.text
    }

    /// The segments below the group.
    fn segments(&self) -> &[&'static str] {
        &self.below[..self.depth]
    }
}

/// A [`Path`] made when the crate is compiled.
macro_rules! ecs {
    ($text:literal) => {
        const { &$crate::ecs::Path::new($text) }
    };
}
pub(crate) use ecs;

/// [`split_name`] for constant paths.
const fn const_split(text: &'static str) -> (&'static str, Option<&'static str>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'.' {
            let (head, tail) = text.split_at(i);
            let (_, tail) = tail.split_at(1);
            return (head, Some(tail));
        }
        i += 1;
    }
    (text, None)
}

/// `str`'s order for constants: negative, zero or positive.
const fn const_order(a: &str, b: &str) -> i32 {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut i = 0;
    while i < a.len() && i < b.len() {
        if a[i] != b[i] {
            return a[i] as i32 - b[i] as i32;
        }
        i += 1;
    }
    a.len() as i32 - b.len() as i32
}

/// A finished event, sorted, not yet written anywhere.
pub struct Built<'t> {
    root: Node<'t>,
}

/// What a parser's result is made into: the bytes that go on the bus, or an [`Event`].
pub trait Output: Sized + private::Sealed {
    #[doc(hidden)]
    fn from_built(built: Built<'_>) -> Self;
}

mod private {
    pub trait Sealed {}
    impl Sealed for kastell_core::Event {}
    impl Sealed for super::EventJson {}
}

impl Output for Event {
    fn from_built(built: Built<'_>) -> Self {
        Event::from_value(built.root.to_value()).unwrap_or_default()
    }
}

/// A normalised event as the JSON bytes published on the bus: exactly what
/// `serde_json::to_vec(&event)` writes for the same [`Event`] (keys sorted, serde_json's
/// number and string formatting), without building the event's maps first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventJson(Vec<u8>);

impl EventJson {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// The event these bytes encode, for callers that need to read it: what a stage
    /// decoding the message gets. serde_json reads a float back to within one unit in the
    /// last place, so a float may differ in that bit from the `Event` the parser builds.
    ///
    /// # Errors
    ///
    /// None in practice: the bytes are serde_json's output of an object.
    pub fn to_event(&self) -> serde_json::Result<Event> {
        serde_json::from_slice(&self.0)
    }
}

impl Output for EventJson {
    fn from_built(built: Built<'_>) -> Self {
        // Room for most events (a Suricata record and its ECS fields, 1 – 2 kB) without
        // regrowing from serde_json's default of 128 bytes.
        let mut bytes = Vec::with_capacity(2048);
        write_node(&mut bytes, &built.root);
        EventJson(bytes)
    }
}

/// Splits a dotted path at its dots ([`split_name`]).
struct DotSplit<'p>(Option<&'p str>);

impl<'p> Iterator for DotSplit<'p> {
    type Item = &'p str;

    fn next(&mut self) -> Option<&'p str> {
        let (segment, rest) = split_name(self.0?);
        self.0 = rest;
        Some(segment)
    }
}

fn push_unique<'t>(values: &mut Vec<Cow<'t, str>>, value: Cow<'t, str>) {
    if !value.is_empty() && !values.contains(&value) {
        values.push(value);
    }
}

/// Typed reads of one JSON object's members, naming the member by its full source path
/// in errors. A member of the wrong type is an error; a missing or null one is `None`.
#[derive(Clone, Copy)]
pub(crate) struct Fields<'a> {
    map: &'a Members<'a>,
    prefix: &'a str,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(map: &'a Members<'a>, prefix: &'a str) -> Self {
        Fields { map, prefix }
    }

    pub(crate) fn label(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }

    /// The member unless it is missing or null.
    pub(crate) fn present_value(&self, key: &str) -> Option<&'a Doc<'a>> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub(crate) fn str(&self, key: &str) -> Result<Option<&'a str>, ParseError> {
        match self.present_value(key) {
            None => Ok(None),
            Some(Doc::String(s)) => Ok(Some(s)),
            Some(other) => Err(ParseError::wrong_type(&self.label(key), "a string", other)),
        }
    }

    /// A string with Wazuh and Windows placeholders for "no value" (`""`, `"-"`) read as
    /// absent.
    pub(crate) fn text(&self, key: &str) -> Result<Option<&'a str>, ParseError> {
        Ok(self.str(key)?.filter(|s| !s.is_empty() && *s != "-"))
    }

    /// A string or a number as text, placeholders (`""`, `"-"`) read as absent: for
    /// producers that write the same field either way (Wazuh's json decoder keeps the
    /// type the agent sent, so `eventID` is `"4624"` from one and `4624` from another).
    pub(crate) fn scalar(&self, key: &str) -> Result<Option<Cow<'a, str>>, ParseError> {
        match self.present_value(key) {
            Some(Doc::Number(n)) => Ok(Some(Cow::Owned(n.to_string()))),
            Some(Doc::String(_)) => Ok(self.text(key)?.map(Cow::Borrowed)),
            None => Ok(None),
            Some(other) => Err(ParseError::wrong_type(
                &self.label(key),
                "a string or a number",
                other,
            )),
        }
    }

    pub(crate) fn u64(&self, key: &str) -> Result<Option<u64>, ParseError> {
        match self.present_value(key) {
            None => Ok(None),
            Some(Doc::Number(n)) => match n.as_u64() {
                Some(n) => Ok(Some(n)),
                None => Err(ParseError::invalid_value(
                    &self.label(key),
                    &n.to_string(),
                    "is not a non-negative integer",
                )),
            },
            Some(other) => Err(ParseError::wrong_type(&self.label(key), "a number", other)),
        }
    }

    /// A non-negative integer written either as a JSON number or as a decimal string, as
    /// Wazuh writes every decoded value.
    pub(crate) fn u64_or_text(&self, key: &str) -> Result<Option<u64>, ParseError> {
        match self.present_value(key) {
            Some(Doc::String(_)) => match self.text(key)? {
                None => Ok(None),
                Some(s) => s.parse().map(Some).map_err(|_| {
                    ParseError::invalid_value(&self.label(key), s, "is not a non-negative integer")
                }),
            },
            _ => self.u64(key),
        }
    }

    pub(crate) fn bool(&self, key: &str) -> Result<Option<bool>, ParseError> {
        match self.present_value(key) {
            None => Ok(None),
            Some(Doc::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(ParseError::wrong_type(&self.label(key), "a boolean", other)),
        }
    }

    /// A nested object, read with `prefix` (its own source path) naming its members in
    /// errors.
    pub(crate) fn object(
        &self,
        key: &str,
        prefix: &'a str,
    ) -> Result<Option<Fields<'a>>, ParseError> {
        match self.present_value(key) {
            None => Ok(None),
            Some(value) => self.object_value(key, value, prefix),
        }
    }

    /// [`Self::object`] of the member `key` already found (null is absent).
    pub(crate) fn object_value(
        &self,
        key: &str,
        value: &'a Doc<'a>,
        prefix: &'a str,
    ) -> Result<Option<Fields<'a>>, ParseError> {
        match value {
            Doc::Null => Ok(None),
            Doc::Object(map) => Ok(Some(Fields { map, prefix })),
            other => Err(ParseError::wrong_type(&self.label(key), "an object", other)),
        }
    }

    /// Every member, in key order.
    pub(crate) fn members(&self) -> impl Iterator<Item = (&'a str, &'a Doc<'a>)> {
        self.map.iter()
    }

    pub(crate) fn array(&self, key: &str) -> Result<Option<&'a [Doc<'a>]>, ParseError> {
        match self.present_value(key) {
            None => Ok(None),
            Some(Doc::Array(items)) => Ok(Some(items)),
            Some(other) => Err(ParseError::wrong_type(&self.label(key), "an array", other)),
        }
    }

    /// An array whose items must all be strings.
    pub(crate) fn strings(&self, key: &str) -> Result<Vec<&'a str>, ParseError> {
        let Some(items) = self.array(key)? else {
            return Ok(Vec::new());
        };
        items
            .iter()
            .map(|item| {
                item.as_str()
                    .ok_or_else(|| ParseError::wrong_type(&self.label(key), "strings", item))
            })
            .collect()
    }

    /// An IP address, re-printed in canonical form so that `2001:0db8::0001` and
    /// `2001:db8::1` compare equal downstream.
    pub(crate) fn ip(&self, key: &str) -> Result<Option<Cow<'a, str>>, ParseError> {
        match self.text(key)? {
            None => Ok(None),
            // The field's label is only built for the error: most records have none.
            Some(raw) => try_canonical_ip(raw)
                .map(Some)
                .ok_or_else(|| ParseError::invalid_ip(&self.label(key), raw)),
        }
    }

    /// A port written as a JSON number.
    pub(crate) fn port(&self, key: &str) -> Result<Option<u16>, ParseError> {
        self.u64(key)?
            .map(|n| self.checked_port(key, n))
            .transpose()
    }

    /// A port written as a JSON number or a decimal string (Wazuh's decoded values).
    pub(crate) fn port_or_text(&self, key: &str) -> Result<Option<u16>, ParseError> {
        self.u64_or_text(key)?
            .map(|n| self.checked_port(key, n))
            .transpose()
    }

    fn checked_port(&self, key: &str, n: u64) -> Result<u16, ParseError> {
        u16::try_from(n).map_err(|_| {
            ParseError::invalid_value(&self.label(key), &n.to_string(), "is not a port number")
        })
    }

    /// An RFC 3339-style timestamp with an offset, returned as RFC 3339 UTC.
    pub(crate) fn timestamp(&self, key: &str) -> Result<Option<String>, ParseError> {
        match self.str(key)? {
            None => Ok(None),
            Some(raw) => parse_utc(raw.as_bytes())
                .map(|t| Some(rfc3339_utc(&t)))
                .ok_or_else(|| ParseError::invalid_timestamp(&self.label(key), raw)),
        }
    }
}

/// The names under which a sensor writes a connection's two ends.
pub(crate) struct EndpointFields {
    pub source_ip: &'static str,
    pub destination_ip: &'static str,
    pub source_port: &'static str,
    pub destination_port: &'static str,
    pub transport: &'static str,
}

/// Maps a connection's addresses, ports and transport to ECS `source.*`,
/// `destination.*`, `network.type`, `network.transport` and `related.ip`.
pub(crate) fn map_endpoints<'t>(
    fields: Fields<'t>,
    names: &EndpointFields,
    out: &mut EcsBuilder<'t>,
) -> Result<(), ParseError> {
    let source = fields.ip(names.source_ip)?;
    let destination = fields.ip(names.destination_ip)?;
    if let Some(ip) = source.as_deref().or(destination.as_deref()) {
        out.put(
            ecs!("network.type"),
            if ip.contains(':') { "ipv6" } else { "ipv4" },
        );
    }
    if let Some(ip) = source {
        out.related_ip(ip.clone());
        out.put(ecs!("source.ip"), ip);
    }
    if let Some(ip) = destination {
        out.related_ip(ip.clone());
        out.put(ecs!("destination.ip"), ip);
    }
    if let Some(port) = fields.port(names.source_port)? {
        out.put(ecs!("source.port"), port);
    }
    if let Some(port) = fields.port(names.destination_port)? {
        out.put(ecs!("destination.port"), port);
    }
    if let Some(proto) = fields.str(names.transport)? {
        out.put(ecs!("network.transport"), ascii_lowercase(proto));
    }
    Ok(())
}

/// `text` in ASCII lower case, borrowed when it already is, and the names sensors
/// write in upper case (Suricata's `proto`) without allocating: one of these per event.
pub(crate) fn ascii_lowercase(text: &str) -> Cow<'_, str> {
    match text {
        "TCP" => Cow::Borrowed("tcp"),
        "UDP" => Cow::Borrowed("udp"),
        "ICMP" => Cow::Borrowed("icmp"),
        "IPv6-ICMP" => Cow::Borrowed("ipv6-icmp"),
        _ if text.bytes().any(|b| b.is_ascii_uppercase()) => Cow::Owned(text.to_ascii_lowercase()),
        _ => Cow::Borrowed(text),
    }
}

/// A number as the text ECS keeps some identifiers in (`dns.id`, `rule.id`), by itoa
/// rather than `to_string`'s formatting machinery.
pub(crate) fn decimal(n: u64) -> String {
    itoa::Buffer::new().format(n).to_owned()
}

pub(crate) fn canonical_ip(field: &str, raw: &str) -> Result<String, ParseError> {
    try_canonical_ip(raw)
        .map(Cow::into_owned)
        .ok_or_else(|| ParseError::invalid_ip(field, raw))
}

/// [`canonical_ip`] for callers that name the field only when it fails.
pub(crate) fn try_canonical_ip(raw: &str) -> Option<Cow<'_, str>> {
    if is_canonical_ipv4(raw) {
        return Some(Cow::Borrowed(raw));
    }
    if let Some((segments, canonical)) = plain_ipv6(raw) {
        if canonical {
            return Some(Cow::Borrowed(raw));
        }
        return Some(ipv6_text(std::net::Ipv6Addr::from(segments), raw));
    }
    match raw.parse::<IpAddr>() {
        // std accepts IPv4 only in dotted-decimal without leading zeros, which is already
        // the canonical spelling; re-printing it would cost more than the parse.
        Ok(IpAddr::V4(_)) => Some(Cow::Borrowed(raw)),
        Ok(IpAddr::V6(ip)) => Some(ipv6_text(ip, raw)),
        Err(_) => None,
    }
}

/// `ip` spelled canonically (std's `Display`, RFC 5952): `raw` itself when it already
/// is. Only for the spellings [`plain_ipv6`] leaves to std, which are rare.
fn ipv6_text(ip: std::net::Ipv6Addr, raw: &str) -> Cow<'_, str> {
    let canonical = ip.to_string();
    if canonical == raw {
        Cow::Borrowed(raw)
    } else {
        Cow::Owned(canonical)
    }
}

/// An IPv6 address written in lower-case hex groups and colons only (at most one `::`),
/// the way sensors write them: its groups, and whether the text is already the canonical
/// spelling. `None` for anything else (upper case, an embedded IPv4 address, a malformed
/// text), which std's parser then judges. std's parser and formatter take about 1,000
/// instructions an address, and network logs carry several per event.
fn plain_ipv6(raw: &str) -> Option<([u16; 8], bool)> {
    /// Reads `part`'s colon-separated groups into `into`: how many, and whether one was
    /// written with a leading zero.
    fn groups(part: &[u8], into: &mut [u16]) -> Option<(usize, bool)> {
        if part.is_empty() {
            return Some((0, false));
        }
        let (mut count, mut digits, mut value, mut padded) = (0, 0, 0u16, false);
        for (i, &b) in part.iter().enumerate() {
            let digit = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b':' => {
                    if digits == 0 || count == into.len() {
                        return None;
                    }
                    into[count] = value;
                    (count, digits, value) = (count + 1, 0, 0);
                    continue;
                }
                _ => return None,
            };
            if digits == 4 {
                return None;
            }
            padded |= digits == 0 && digit == 0 && part.get(i + 1).is_some_and(|n| *n != b':');
            value = value << 4 | u16::from(digit);
            digits += 1;
        }
        if digits == 0 || count == into.len() {
            return None;
        }
        into[count] = value;
        Some((count + 1, padded))
    }
    let bytes = raw.as_bytes();
    if bytes.len() < 2 || bytes.len() > 39 {
        return None;
    }
    let mut segments = [0u16; 8];
    let double = bytes.windows(2).position(|w| w == b"::");
    let (written_start, written_len, padded) = match double {
        None => {
            let (count, padded) = groups(bytes, &mut segments)?;
            if count != 8 {
                return None;
            }
            (0, 0, padded)
        }
        Some(at) => {
            let mut head = [0u16; 7];
            let mut tail = [0u16; 7];
            let (head_len, head_padded) = groups(&bytes[..at], &mut head)?;
            let (tail_len, tail_padded) = groups(&bytes[at + 2..], &mut tail)?;
            if head_len + tail_len > 7 {
                return None;
            }
            segments[..head_len].copy_from_slice(&head[..head_len]);
            segments[8 - tail_len..].copy_from_slice(&tail[..tail_len]);
            (
                head_len,
                8 - head_len - tail_len,
                head_padded || tail_padded,
            )
        }
    };
    // Canonical: no leading zeros, the longest run of two or more zero groups (the first
    // of equal runs) and only it written `::`, and not an IPv4-mapped address (spelled
    // with its IPv4 part).
    let (zeros_start, zeros_len) = longest_zero_run(&segments);
    let compressed_right = if zeros_len > 1 {
        written_len == zeros_len && written_start == zeros_start
    } else {
        written_len == 0
    };
    let mapped = std::net::Ipv6Addr::from(segments)
        .to_ipv4_mapped()
        .is_some();
    Some((segments, compressed_right && !padded && !mapped))
}

/// Whether `raw` is four decimal octets without leading zeros, the only IPv4 spelling
/// std accepts and the one it prints: most addresses are, and this check costs a tenth of
/// std's parser, which stays the judge of everything else.
fn is_canonical_ipv4(raw: &str) -> bool {
    let bytes = raw.as_bytes();
    let mut i = 0;
    for octet in 0..4 {
        if octet > 0 {
            if bytes.get(i) != Some(&b'.') {
                return false;
            }
            i += 1;
        }
        let start = i;
        let mut value = 0u32;
        while let Some(&b) = bytes.get(i).filter(|b| b.is_ascii_digit()) {
            value = value * 10 + u32::from(b - b'0');
            i += 1;
            if i - start > 3 {
                return false;
            }
        }
        let digits = i - start;
        if digits == 0 || value > 255 || (digits > 1 && bytes[start] == b'0') {
            return false;
        }
    }
    i == bytes.len()
}

/// Start and length of the longest run of zero groups, the first of equal runs.
fn longest_zero_run(segments: &[u16; 8]) -> (usize, usize) {
    let (mut best_start, mut best_len) = (0, 0);
    let (mut start, mut len) = (0, 0);
    for (i, &segment) in segments.iter().enumerate() {
        if segment == 0 {
            if len == 0 {
                start = i;
            }
            len += 1;
            if len > best_len {
                (best_start, best_len) = (start, len);
            }
        } else {
            len = 0;
        }
    }
    (best_start, best_len)
}

/// `t.to_rfc3339_opts(SecondsFormat::AutoSi, true)`: `YYYY-MM-DDTHH:MM:SS`, the fraction
/// in as many of 3, 6 or 9 digits as it needs (none when zero), and `Z`. Written by hand
/// for the years 0 – 9999 because chrono's formatter, general over formats and zones,
/// cost about 900 instructions a time (every Suricata record has one to three); chrono
/// writes the rest (other years, leap seconds).
pub(crate) fn rfc3339_utc(t: &DateTime<Utc>) -> String {
    use chrono::{Datelike, Timelike};
    // `DateTime`'s own accessors add the (zero) offset and work the calendar out again
    // for each part; the naive parts are read once.
    let (date, time) = (t.naive_utc().date(), t.naive_utc().time());
    let nanos = time.nanosecond();
    let Ok(year) = u32::try_from(date.year()) else {
        return t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    };
    if year > 9999 || nanos >= 1_000_000_000 {
        return t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    }
    let seconds = time.num_seconds_from_midnight();
    let mut text = *b"0000-00-00T00:00:00.000000000Z";
    put_digits(&mut text[0..4], year);
    put_digits(&mut text[5..7], date.month());
    put_digits(&mut text[8..10], date.day());
    put_digits(&mut text[11..13], seconds / 3600);
    put_digits(&mut text[14..16], seconds / 60 % 60);
    put_digits(&mut text[17..19], seconds % 60);
    let end = match nanos {
        0 => 19,
        n if n % 1_000_000 == 0 => {
            put_digits(&mut text[20..23], n / 1_000_000);
            23
        }
        n if n % 1_000 == 0 => {
            put_digits(&mut text[20..26], n / 1_000);
            26
        }
        n => {
            put_digits(&mut text[20..29], n);
            29
        }
    };
    text[end] = b'Z';
    String::from_utf8(text[..=end].to_vec()).unwrap_or_default()
}

/// Writes `value`'s last `digits.len()` decimal digits, zero-padded, into `digits`.
fn put_digits(digits: &mut [u8], mut value: u32) {
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Reads `2023-11-01T00:46:35.638604+0100` (Suricata, Wazuh: offset without a colon) and
/// RFC 3339 proper, and writes RFC 3339 in UTC with a `Z`. A time without an offset is
/// refused: guessing the zone would silently shift the event.
pub(crate) fn utc_timestamp(field: &str, raw: &str) -> Result<String, ParseError> {
    parse_utc(raw.as_bytes())
        .map(|t| rfc3339_utc(&t))
        .ok_or_else(|| ParseError::invalid_timestamp(field, raw))
}

/// A timestamp that may lack its zone: with an offset it is read as [`utc_timestamp`]
/// does; without one (`2024-05-01T10:00:00`, or with a space for the `T`) it is taken to
/// be in `zone`, the Sensor's `timezone`.
pub(crate) fn zoned_timestamp(
    field: &str,
    raw: &str,
    zone: crate::zone::LocalZone,
) -> Result<String, ParseError> {
    let mut bytes = raw.as_bytes().to_vec();
    if bytes.get(10) == Some(&b' ') {
        bytes[10] = b'T';
    }
    if let Some(t) = parse_utc(&bytes) {
        return Ok(rfc3339_utc(&t));
    }
    match parse_local(&bytes) {
        Some((local, end)) if end == bytes.len() => {
            let utc = zone.to_utc(local);
            utc.map(|t| rfc3339_utc(&t))
                .ok_or_else(|| ParseError::invalid_timestamp(field, raw))
        }
        _ => Err(ParseError::invalid_timestamp(field, raw)),
    }
}

/// Certificate validity times, which Suricata prints in UTC without an offset.
pub(crate) fn naive_utc_timestamp(
    field: impl FnOnce() -> String,
    raw: &str,
) -> Result<String, ParseError> {
    match parse_local(raw.as_bytes()) {
        Some((local, end)) if end == raw.len() => Ok(rfc3339_utc(&local.and_utc())),
        _ => Err(ParseError::invalid_timestamp(&field(), raw)),
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]` followed by `Z`, `±HHMM` or `±HH:MM`.
///
/// Hand-written rather than chrono's format strings for two reasons: those cost more
/// than the rest of a record's mapping, and they accept years such as `-022` whose RFC
/// 3339 rendering no RFC 3339 reader accepts back.
fn parse_utc(b: &[u8]) -> Option<DateTime<Utc>> {
    let (local, i) = parse_local(b)?;
    let offset_seconds = match &b[i..] {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, m) = match rest {
                [h1, h2, m1, m2] => (two_digits(*h1, *h2)?, two_digits(*m1, *m2)?),
                [h1, h2, b':', m1, m2] => (two_digits(*h1, *h2)?, two_digits(*m1, *m2)?),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let seconds = i64::from(h * 3600 + m * 60);
            if *sign == b'-' {
                -seconds
            } else {
                seconds
            }
        }
        _ => return None,
    };
    let utc = local.checked_sub_signed(chrono::TimeDelta::try_seconds(offset_seconds)?)?;
    Some(utc.and_utc())
}

/// The date and time of day, and the index where the offset starts.
fn parse_local(b: &[u8]) -> Option<(NaiveDateTime, usize)> {
    let digits = |from: usize, to: usize| -> Option<u32> {
        b.get(from..to)?.iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let separators_ok = b.get(4) == Some(&b'-')
        && b.get(7) == Some(&b'-')
        && matches!(b.get(10), Some(b'T' | b't'))
        && b.get(13) == Some(&b':')
        && b.get(16) == Some(&b':');
    if !separators_ok {
        return None;
    }
    let year = i32::try_from(digits(0, 4)?).ok()?;
    let date = NaiveDate::from_ymd_opt(year, digits(5, 7)?, digits(8, 10)?)?;
    let (hour, minute, second) = (digits(11, 13)?, digits(14, 16)?, digits(17, 19)?);
    let mut i = 19;
    let mut nanos = 0;
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = start;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let count = i - start;
        if count == 0 || count > 9 {
            return None;
        }
        nanos = digits(start, i)? * 10u32.pow(9 - u32::try_from(count).ok()?);
    }
    // chrono represents a leap second as the 59th second plus one more second of nanos.
    let time = if second == 60 {
        NaiveTime::from_hms_nano_opt(hour, minute, 59, 1_000_000_000 + nanos)?
    } else {
        NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?
    };
    Some((NaiveDateTime::new(date, time), i))
}

fn two_digits(a: u8, b: u8) -> Option<u32> {
    (a.is_ascii_digit() && b.is_ascii_digit())
        .then(|| u32::from(a - b'0') * 10 + u32::from(b - b'0'))
}

/// The last component of a Windows or POSIX path; `None` for a path ending in a separator.
pub(crate) fn base_name(path: &str) -> Option<&str> {
    let name = path.rsplit(['/', '\\']).next()?;
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift64) for the tests that compare with std
    /// and chrono over many values.
    fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    /// `count` strings of up to `max_len - 1` characters drawn from `alphabet`.
    fn random_texts(
        next: &mut impl FnMut() -> u64,
        alphabet: &[u8],
        count: usize,
        max_len: u64,
    ) -> Vec<String> {
        (0..count)
            .map(|_| {
                let len = (next() % max_len) as usize;
                (0..len)
                    .map(|_| char::from(alphabet[(next() % alphabet.len() as u64) as usize]))
                    .collect()
            })
            .collect()
    }
    use serde_json::json;

    #[test]
    fn timestamps_with_and_without_colon_in_the_offset_become_utc() {
        let cases = [
            (
                "2023-11-01T00:46:35.638604+0100",
                "2023-10-31T23:46:35.638604Z",
            ),
            ("2022-05-11T12:29:19.905+0000", "2022-05-11T12:29:19.905Z"),
            (
                "2016-06-16T15:07:24.422364-0600",
                "2016-06-16T21:07:24.422364Z",
            ),
            ("2023-11-01T00:46:35+01:00", "2023-10-31T23:46:35Z"),
            ("2023-11-01T00:46:35Z", "2023-11-01T00:46:35Z"),
            ("2016-12-31T23:59:60.5+0000", "2016-12-31T23:59:60.500Z"),
            ("2024-02-29T00:30:00.1-0130", "2024-02-29T02:00:00.100Z"),
        ];
        for (raw, want) in cases {
            assert_eq!(utc_timestamp("t", raw).unwrap(), want, "{raw}");
        }
        for bad in [
            "year-month-dayThours:minuts:seconds+0000",
            "2023-11-01T00:46:35.638604",
            "2023-13-01T00:46:35+0100",
            "2023-02-30T00:46:35+0100",
            "2023-11-01T00:46:35.+0100",
            "2023-11-01T00:46:35+01",
            "2023-11-01T00:46:35+0100 ",
            "-022-10-31T15:47:27.316446+0100",
            "+2022-10-31T15:47:27+0100",
            "2022-10-31T15:47:27+2400",
            "",
        ] {
            assert!(utc_timestamp("t", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dotted_records_are_written_as_nest_builds_them() {
        let texts = [
            r#"{"ts":1.5,"uid":"C1","id.orig_h":"10.0.0.1","id.orig_p":1,"id.resp_h":"::1","proto":"tcp"}"#,
            r#"{"a":1,"a":2,"b.c":3,"b.c":4}"#,
            r#"{"id.a":1,"x":2,"id.b":3}"#,
            r#"{"a":1,"a.b":2}"#,
            r#"{"a.b":2,"a":1}"#,
            r#"{"c.d.e":3,"c.d":{"z":1,"y":2},"c":null}"#,
            r#"{"k.\"q":1,"k.r":2,"\u0001.x":3,".a":4,"b.":5}"#,
            r#"{"n":{"z":1,"a":{"y":2,"b":3}},"m.o":[{"q":1,"p":2}]}"#,
        ];
        for text in texts {
            for doc in [
                crate::json::doc_in_written_order(text).unwrap(),
                crate::json::doc_from_str(text).unwrap(),
            ] {
                let Doc::Object(members) = &doc else {
                    panic!("an object: {text}");
                };
                let node = Node::Dotted(members);
                let mut written = Vec::new();
                write_node(&mut written, &node);
                let read: Value = serde_json::from_slice(&written).unwrap_or_else(|e| {
                    panic!("{text}: {e}: {}", String::from_utf8_lossy(&written))
                });
                assert_eq!(read, node.to_value(), "{text}");
                let mut nested = nest(members);
                nested.sort();
                assert_eq!(read, nested.to_value(), "{text}");
            }
        }
    }

    #[test]
    fn lower_case_borrows_what_it_can() {
        for text in [
            "TCP",
            "UDP",
            "ICMP",
            "IPv6-ICMP",
            "tcp",
            "Mixed-Case",
            "",
            "ÄB",
        ] {
            assert_eq!(ascii_lowercase(text), text.to_ascii_lowercase(), "{text}");
        }
        assert!(matches!(ascii_lowercase("tcp"), Cow::Borrowed(_)));
    }

    #[test]
    fn plain_ipv6_agrees_with_std() {
        let mut next = xorshift(0x8a5c_d789_635d_2dff_u64);
        let alphabet = b"0123456789abcdef::::0000";
        let mut texts = random_texts(&mut next, alphabet, 100_000, 40);
        // Valid addresses too, spelled canonically and in full with leading zeros.
        for _ in 0..20_000 {
            let segments: [u16; 8] = std::array::from_fn(|_| {
                if next().is_multiple_of(3) {
                    0
                } else {
                    next() as u16
                }
            });
            let ip = std::net::Ipv6Addr::from(segments);
            texts.push(ip.to_string());
            texts.push(segments.map(|s| format!("{s:04x}")).join(":"));
        }
        texts.extend(
            [
                "::",
                "::1",
                "1::",
                "fe80::d5e6:502a:54ce:e387",
                "1:2:3:4:5:6:7::",
                "::2:3:4:5:6:7:8",
                "1:2:3:4:5:6:7:8",
                "1:2:3:4:5:6:7:8:9",
                "1::2::3",
                ":::",
                "1:::2",
                ":1:2:3:4:5:6:7",
                "00000::1",
                "::ffff:c0a8:1",
                "2001:0db8:0000:0000:0000:0000:0000:0001",
            ]
            .map(String::from),
        );
        for text in texts {
            let std = text
                .parse::<std::net::Ipv6Addr>()
                .ok()
                .map(|ip| ip.segments());
            match plain_ipv6(&text) {
                Some((segments, canonical)) => {
                    assert_eq!(Some(segments), std, "{text}");
                    let spelled = std::net::Ipv6Addr::from(segments).to_string();
                    assert_eq!(canonical, spelled == text, "{text}");
                }
                // Refused here, left to std: only texts std refuses too, or that hold
                // something other than lower-case hex groups.
                None => assert!(std.is_none() || text.contains('.'), "{text}"),
            }
        }
    }

    #[test]
    fn ipv4_fast_path_agrees_with_std() {
        let mut next = xorshift(0x2545_f491_4f6c_dd1d_u64);
        let alphabet = b"0123456789.00255.1";
        let mut texts = random_texts(&mut next, alphabet, 50_000, 18);
        texts.extend(
            [
                "0.0.0.0",
                "255.255.255.255",
                "256.1.1.1",
                "01.2.3.4",
                "1.2.3",
                "1.2.3.4.",
                "1..3.4",
            ]
            .map(String::from),
        );
        for text in texts {
            let std = text
                .parse::<std::net::Ipv4Addr>()
                .is_ok_and(|ip| ip.to_string() == text);
            assert_eq!(is_canonical_ipv4(&text), std, "{text}");
        }
    }

    #[test]
    fn times_are_written_as_chrono_writes_them() {
        let mut next = xorshift(0x1234_5678_9abc_def1_u64);
        let nanos = [
            0,
            1,
            999_999_999,
            5_000_000,
            120_000,
            638_604_000,
            1_000,
            100,
        ];
        for i in 0..20_000 {
            let secs = (next() % 400_000_000_000) as i64 - 62_000_000_000;
            let nano = if i % 2 == 0 {
                nanos[i % nanos.len()]
            } else {
                (next() % 1_000_000_000) as u32
            };
            let t = DateTime::from_timestamp(secs, nano).unwrap();
            assert_eq!(
                rfc3339_utc(&t),
                t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
            );
        }
    }

    #[test]
    fn ipv6_is_compressed_and_garbage_is_refused() {
        assert_eq!(
            canonical_ip("ip", "fe80:0000:0000:0000:d5e6:502a:54ce:e387").unwrap(),
            "fe80::d5e6:502a:54ce:e387"
        );
        assert_eq!(
            canonical_ip("ip", "FF02:0000:0000:0000:0000:0000:0001:0003").unwrap(),
            "ff02::1:3"
        );
        assert_eq!(canonical_ip("ip", "172.16.0.153").unwrap(), "172.16.0.153");
        assert_eq!(
            canonical_ip("ip", "::ffff:10.0.0.1").unwrap(),
            "::ffff:10.0.0.1"
        );
        for bad in [
            "172.16.0.256",
            "010.0.0.1",
            "10.1",
            "localhost",
            "fe80::1%eth0",
            " 10.0.0.1",
        ] {
            assert!(canonical_ip("ip", bad).is_err(), "{bad}");
        }
    }

    fn built() -> EcsBuilder<'static> {
        let mut b = EcsBuilder::new();
        b.put(ecs!("source.ip"), "10.0.0.1");
        b.put(ecs!("source.port"), 53);
        b.put_str_if_absent(ecs!("source.ip"), "10.0.0.2");
        b.related_ip("10.0.0.1");
        b.related_ip("10.0.0.1");
        b.related_host("");
        b.put_dyn("a\"b.c", "x\ny");
        b.put(ecs!("event.kind"), "alert");
        b.put(ecs!("event"), json!({"kind": "event", "z": 1}));
        b.put(ecs!("event.dataset"), "d");
        b
    }

    #[test]
    fn the_builder_nests_paths_and_keeps_related_unique() {
        let event = built().finish::<Event>().into_value();
        assert_eq!(
            event,
            json!({
                "source": {"ip": "10.0.0.1", "port": 53},
                "related": {"ip": ["10.0.0.1"]},
                "a\"b": {"c": "x\ny"},
                "event": {"kind": "event", "z": 1, "dataset": "d"},
            })
        );
    }

    #[test]
    fn the_builder_writes_the_bytes_of_its_event() {
        let event = built().finish::<Event>();
        let bytes = built().finish::<EventJson>();
        assert_eq!(bytes.as_bytes(), serde_json::to_vec(&event).unwrap());
        assert_eq!(bytes.to_event().unwrap(), event);
    }

    /// A group made by a path built at run time is the one a constant path writes into
    /// after it, and the other way round.
    #[test]
    fn constant_and_run_time_paths_share_their_groups() {
        let build = || {
            let mut b = EcsBuilder::new();
            b.put_dyn("event.reason", "dyn");
            b.put(ecs!("event.kind"), "alert");
            b.put(ecs!("source.ip"), "10.0.0.1");
            b.put_dyn("source.port", 1u64);
            b.put_dyn("custom.x", "y");
            b.put(ecs!("message"), "m");
            b.put_dyn("message", "n");
            b.put(ecs!("x509.subject.common_name"), "c");
            b.put(ecs!("x509.subject.distinguished_name"), "d");
            b.put_under(ecs!("zeek"), "conn".to_owned(), Node::from("e"));
            b.put(ecs!("zeek.session_id"), "s");
            b
        };
        let event = build().finish::<Event>();
        assert_eq!(
            event.clone().into_value(),
            json!({
                "event": {"reason": "dyn", "kind": "alert"},
                "source": {"ip": "10.0.0.1", "port": 1},
                "custom": {"x": "y"},
                "message": "n",
                "x509": {"subject": {"common_name": "c", "distinguished_name": "d"}},
                "zeek": {"conn": "e", "session_id": "s"},
            })
        );
        let bytes = build().finish::<EventJson>();
        assert_eq!(bytes.as_bytes(), serde_json::to_vec(&event).unwrap());
    }

    #[test]
    fn readers_name_the_source_field_on_wrong_types() {
        let record = crate::json::doc_from_str(r#"{"http": {"status": "200"}}"#).unwrap();
        let http = Fields::new(record.as_object().unwrap(), "")
            .object("http", "http")
            .unwrap()
            .unwrap();
        let err = http.u64("status").unwrap_err();
        assert_eq!(
            err.to_string(),
            "field http.status: expected a number, found a string"
        );
    }

    #[test]
    fn base_names_of_both_path_styles() {
        assert_eq!(base_name("C:\\Windows\\System32\\cmd.exe"), Some("cmd.exe"));
        assert_eq!(base_name("/testdir0/example"), Some("example"));
        assert_eq!(base_name("eicar.com"), Some("eicar.com"));
        assert_eq!(base_name("/"), None);
    }
}
