//! A needle automaton's DFA with its states laid out breadth first.
//!
//! aho-corasick builds the automaton (the trie, its failure transitions and the DFA's
//! transitions); this module only copies the transitions into a table of its own order.
//! The crate numbers states as its trie creates them, pattern by pattern, so the states one
//! or two bytes deep (the ones nearly every byte of a text passes through) lie scattered
//! across a table of several megabytes, each on a cache line of its own, and the rule
//! index's scans spent most of their time waiting for those lines. Numbered breadth first,
//! the shallow states lie together at the start of the table and stay in cache; only the
//! rarer steps deep into a needle reach the rest. The crate offers no way to choose the
//! order, hence the copy.

use aho_corasick::automaton::{Automaton, Prefilter};
use aho_corasick::Anchored;
use foldhash::HashMap;

/// The DFA; a state is its row's offset in [`NeedleDfa::table`] shifted left by one, with
/// the low bit set when the state ends some needle, so a step is one table read and the
/// match test a bit test.
#[derive(Debug)]
pub(crate) struct NeedleDfa {
    table: Box<[u32]>,
    classes: [u8; 256],
    /// Bytes per row: the number of byte classes.
    stride: u32,
    start: u32,
    /// Per state (row number), the range of its needles in `ends`.
    ends_at: Box<[u32]>,
    /// (pattern id, pattern length) of the needles ending in each match state.
    ends: Box<[(u32, u32)]>,
    prefilter: Option<Prefilter>,
}

/// A state of [`NeedleDfa`]: see there.
pub(crate) type State = u32;

impl NeedleDfa {
    /// The same automaton as `dfa` (built case-insensitively over ASCII-lower-cased
    /// needles `patterns`), states numbered breadth first from the unanchored start.
    ///
    /// `None` when the table would not fit 31-bit state offsets (never for the index's
    /// automata, which are bounded by `DFA_NEEDLES`).
    pub(crate) fn of(dfa: &aho_corasick::dfa::DFA, patterns: &[Box<[u8]>]) -> Option<NeedleDfa> {
        let (classes, representatives) = byte_classes(patterns);
        let stride = representatives.len();
        let start = dfa.start_state(Anchored::No).ok()?;
        let mut number = HashMap::default();
        let mut order = vec![start];
        number.insert(start, 0u32);
        let mut targets: Vec<u32> = Vec::new();
        let mut next = 0;
        while let Some(&state) = order.get(next) {
            next += 1;
            for &byte in &representatives {
                let to = dfa.next_state(Anchored::No, state, byte);
                let row = *number.entry(to).or_insert_with(|| {
                    order.push(to);
                    (order.len() - 1) as u32
                });
                targets.push(row);
            }
        }
        if order.len().checked_mul(stride)? >= (1 << 31) {
            return None;
        }
        let mut ends_at = Vec::with_capacity(order.len() + 1);
        let mut ends = Vec::new();
        for &state in &order {
            ends_at.push(ends.len() as u32);
            if dfa.is_special(state) && dfa.is_match(state) {
                for index in 0..dfa.match_len(state) {
                    let pattern = dfa.match_pattern(state, index);
                    ends.push((pattern.as_u32(), dfa.pattern_len(pattern) as u32));
                }
            }
        }
        ends_at.push(ends.len() as u32);
        let state_of = |row: u32| {
            let matches = ends_at[row as usize] != ends_at[row as usize + 1];
            (row * stride as u32) << 1 | u32::from(matches)
        };
        let table = targets.iter().map(|&row| state_of(row)).collect();
        Some(NeedleDfa {
            table,
            classes,
            stride: stride as u32,
            start: state_of(0),
            ends_at: ends_at.into_boxed_slice(),
            ends: ends.into_boxed_slice(),
            prefilter: dfa.prefilter().cloned(),
        })
    }

    pub(crate) fn start(&self) -> State {
        self.start
    }

    #[inline(always)]
    pub(crate) fn next(&self, state: State, byte: u8) -> State {
        self.table[(state >> 1) as usize + usize::from(self.classes[usize::from(byte)])]
    }

    #[inline(always)]
    pub(crate) fn is_match(state: State) -> bool {
        state & 1 == 1
    }

    /// The needles ending in a match state: (pattern id, length).
    pub(crate) fn ends(&self, state: State) -> &[(u32, u32)] {
        let row = ((state >> 1) / self.stride) as usize;
        &self.ends[self.ends_at[row] as usize..self.ends_at[row + 1] as usize]
    }

    pub(crate) fn prefilter(&self) -> Option<&Prefilter> {
        self.prefilter.as_ref()
    }
}

/// Byte classes of an automaton over ASCII-lower-cased needles searched without regard
/// to ASCII case: every byte a needle holds is a class of its own (an ASCII upper-case
/// letter shares its lower-case letter's), and all the other bytes, which lead every state
/// to where a byte no needle holds leads, are one class. Returns the class of each byte
/// and one byte of each class.
fn byte_classes(patterns: &[Box<[u8]>]) -> ([u8; 256], Vec<u8>) {
    let mut used = [false; 256];
    for byte in patterns.iter().flat_map(|p| p.iter()) {
        used[usize::from(byte.to_ascii_lowercase())] = true;
    }
    let mut classes = [0u8; 256];
    let mut representatives = Vec::new();
    let other = (0..=255u8).find(|&b| !used[usize::from(b.to_ascii_lowercase())]);
    if let Some(other) = other {
        representatives.push(other);
    }
    for byte in 0..=255u8 {
        if used[usize::from(byte)] {
            // At most 256 classes; the class of "other" only when some byte is unused,
            // so the count stays within a u8's range as an index.
            classes[usize::from(byte)] = representatives.len() as u8;
            representatives.push(byte);
        }
    }
    for byte in b'A'..=b'Z' {
        classes[usize::from(byte)] = classes[usize::from(byte.to_ascii_lowercase())];
    }
    (classes, representatives)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (end, pattern) pair the DFA reports over `text`.
    fn occurrences(dfa: &NeedleDfa, text: &[u8]) -> Vec<(usize, u32)> {
        let mut found = Vec::new();
        let mut state = dfa.start();
        for (at, &byte) in text.iter().enumerate() {
            state = dfa.next(state, byte);
            if NeedleDfa::is_match(state) {
                found.extend(
                    dfa.ends(state)
                        .iter()
                        .map(|&(pattern, _)| (at + 1, pattern)),
                );
            }
        }
        found.sort_unstable();
        found
    }

    #[test]
    fn the_laid_out_dfa_finds_every_occurrence_the_crates_finds() {
        let patterns: Vec<Box<[u8]>> = ["\\windows\\temp\\", "temp", "mp\\", ".exe", "e", "ß"]
            .iter()
            .map(|p| p.as_bytes().into())
            .collect();
        let crates = aho_corasick::AhoCorasick::builder()
            .match_kind(aho_corasick::MatchKind::Standard)
            .ascii_case_insensitive(true)
            .build(&patterns)
            .unwrap();
        let dfa = aho_corasick::dfa::Builder::new()
            .match_kind(aho_corasick::MatchKind::Standard)
            .ascii_case_insensitive(true)
            .build(&patterns)
            .unwrap();
        let laid_out = NeedleDfa::of(&dfa, &patterns).unwrap();
        for text in [
            "C:\\WINDOWS\\Temp\\x.EXE",
            "no needle here",
            "",
            "straße\\windows\\temp\\windows\\temp\\",
            "\u{0}\u{ff}TEMPtempE",
        ] {
            let mut expected: Vec<(usize, u32)> = crates
                .find_overlapping_iter(text)
                .map(|m| (m.end(), m.pattern().as_u32()))
                .collect();
            expected.sort_unstable();
            assert_eq!(
                occurrences(&laid_out, text.as_bytes()),
                expected,
                "{text:?}"
            );
        }
        for (pattern, length) in laid_out.ends.iter() {
            assert_eq!(*length as usize, patterns[*pattern as usize].len());
        }
    }

    #[test]
    fn every_byte_outside_the_needles_is_one_class() {
        let patterns: Vec<Box<[u8]>> = vec![b"ab".as_slice().into()];
        let (classes, representatives) = byte_classes(&patterns);
        assert_eq!(representatives.len(), 3);
        assert_eq!(classes[usize::from(b'A')], classes[usize::from(b'a')]);
        assert_eq!(classes[usize::from(b'z')], classes[0]);
        assert_ne!(classes[usize::from(b'b')], classes[usize::from(b'a')]);
    }
}
