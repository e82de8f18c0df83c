//! What scanning a text at a path made true, remembered per thread for the rule index's
//! walk (see `RuleIndex::scalar_atoms`).
//!
//! In the EVTX-ATTACK-SAMPLES corpus 84 % of the text values (74 % of their bytes) repeat
//! a path's earlier value (an `Image`, a `Channel`, a `ParentCommandLine`), so a value met
//! again is answered from here: one hash of the text and one comparison instead of an
//! exact-value lookup and up to two automaton scans.
//!
//! The table is set-associative, two entries a set, each entry one cache line: a lookup
//! reads one or two adjacent lines, where a general hash map read a control group, then a
//! bucket larger than a line, then often the text behind a pointer. A text of up to
//! [`INLINE_TEXT`] bytes and up to [`INLINE_POSTINGS`] postings lie in the entry itself;
//! longer ones in two arenas. Bounded: the table has [`SLOTS`] entries, a new value
//! replaces the older entry of its set, texts longer than [`TEXT_MAX`] are not remembered,
//! and when the arenas would pass [`BYTES_MAX`] everything is forgotten and fills again
//! from the values that follow (what recurs comes back at once). It belongs to one rule
//! index: another index's first event empties it ([`ScanMemo::serve`]). Emptying moves a
//! stamp on instead of writing the table.

use std::hash::BuildHasher;

/// Texts longer than this are scanned every time.
pub(crate) const TEXT_MAX: usize = 1024;
/// The arenas' bound, in bytes.
pub(crate) const BYTES_MAX: usize = 16 << 20;
/// Entries in the table.
pub(crate) const SLOTS: usize = 1 << 16;
const WAYS: usize = 2;
const SETS: usize = SLOTS / WAYS;
const INLINE_TEXT: usize = 32;
const INLINE_POSTINGS: usize = 3;

#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Slot {
    key: u64,
    /// The entry is live when this is the memo's stamp.
    stamp: u32,
    field: u32,
    text_len: u16,
    postings_len: u16,
    /// The postings, or at `[0]` their offset in [`ScanMemo::postings`].
    postings: [u32; INLINE_POSTINGS],
    /// The text zero-padded, or in the first four bytes its offset in [`ScanMemo::texts`].
    text: [u8; INLINE_TEXT],
}

#[derive(Clone, Copy, Default)]
#[repr(C, align(128))]
struct Set {
    /// The newer entry first.
    ways: [Slot; WAYS],
}

/// See the module documentation.
pub(crate) struct ScanMemo {
    owner: u64,
    stamp: u32,
    /// Allocated on the first insert, so a thread that never walks holds nothing.
    sets: Box<[Set]>,
    texts: Vec<u8>,
    postings: Vec<u32>,
    live: usize,
}

impl Default for ScanMemo {
    fn default() -> Self {
        ScanMemo {
            owner: 0,
            // Zeroed slots carry stamp 0: never live.
            stamp: 1,
            sets: Box::default(),
            texts: Vec::new(),
            postings: Vec::new(),
            live: 0,
        }
    }
}

/// A text of up to [`INLINE_TEXT`] bytes as an entry holds it, so that comparing is two
/// vector compares instead of a call to `memcmp`.
fn padded(text: &[u8]) -> [u8; INLINE_TEXT] {
    let mut out = [0; INLINE_TEXT];
    out[..text.len()].copy_from_slice(text);
    out
}

fn offset(text: &[u8; INLINE_TEXT]) -> usize {
    u32::from_le_bytes([text[0], text[1], text[2], text[3]]) as usize
}

impl ScanMemo {
    /// The memo id of a path without text atoms of its own: only keywords are scanned.
    pub(crate) const KEYWORDS_ONLY: u32 = u32::MAX;

    pub(crate) fn key(field: u32, text: &[u8]) -> u64 {
        foldhash::fast::FixedState::with_seed(0x6b61_7374_656c_6c00).hash_one((field, text))
    }

    /// [`ScanMemo::key`] of a text short enough to be remembered; a longer one is scanned
    /// every time, so it is not hashed either.
    pub(crate) fn key_of(field: u32, text: &[u8]) -> Option<u64> {
        (text.len() <= TEXT_MAX).then(|| Self::key(field, text))
    }

    /// Empties the memo when `owner` (a rule index) is not the one it was filled for.
    pub(crate) fn serve(&mut self, owner: u64) {
        if self.owner != owner {
            self.clear();
            self.owner = owner;
        }
    }

    pub(crate) fn clear(&mut self) {
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            // Once in four billion clears: stamps of old entries could come round again.
            self.sets.fill(Set::default());
            self.stamp = 1;
        }
        self.texts.clear();
        self.postings.clear();
        self.live = 0;
    }

    /// Live entries.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.live
    }

    /// Bytes the arenas hold.
    fn arena_bytes(&self) -> usize {
        self.texts.len() + self.postings.len() * 4
    }

    fn set_of(key: u64) -> usize {
        key as usize & (SETS - 1)
    }

    /// Asks the processor for the set `key` lies in, ahead of [`ScanMemo::get`].
    #[inline]
    pub(crate) fn prefetch(&self, key: u64) {
        if let Some(set) = self.sets.get(Self::set_of(key)) {
            crate::prefilter::prefetch_at(&set.ways[0]);
            crate::prefilter::prefetch_at(&set.ways[1]);
        }
    }

    /// The postings remembered for `text` at `field`; `key` is [`ScanMemo::key`] of them.
    #[inline]
    pub(crate) fn get(&self, key: u64, field: u32, text: &[u8]) -> Option<&[u32]> {
        let set = self.sets.get(Self::set_of(key))?;
        let short = (text.len() <= INLINE_TEXT).then(|| padded(text));
        set.ways
            .iter()
            .find(|slot| {
                slot.key == key
                    && slot.stamp == self.stamp
                    && slot.field == field
                    && usize::from(slot.text_len) == text.len()
                    && match &short {
                        Some(short) => slot.text == *short,
                        None => {
                            let at = offset(&slot.text);
                            self.texts[at..at + text.len()] == *text
                        }
                    }
            })
            .map(|slot| self.postings_of(slot))
    }

    fn postings_of<'a>(&'a self, slot: &'a Slot) -> &'a [u32] {
        let len = usize::from(slot.postings_len);
        if len <= INLINE_POSTINGS {
            &slot.postings[..len]
        } else {
            let at = slot.postings[0] as usize;
            &self.postings[at..at + len]
        }
    }

    /// Remembers the postings `text` made true at `field`.
    pub(crate) fn insert(&mut self, key: u64, field: u32, text: &[u8], postings: &[u32]) {
        let Ok(postings_len) = u16::try_from(postings.len()) else {
            return;
        };
        if text.len() > TEXT_MAX {
            return;
        }
        if self.sets.is_empty() {
            self.sets = vec![Set::default(); SETS].into_boxed_slice();
        }
        let long_text = text.len() > INLINE_TEXT;
        let long_postings = postings.len() > INLINE_POSTINGS;
        let grows = if long_text { text.len() } else { 0 }
            + if long_postings { postings.len() * 4 } else { 0 };
        if self.arena_bytes() + grows > BYTES_MAX {
            self.clear();
        }
        let mut slot = Slot {
            key,
            stamp: self.stamp,
            field,
            text_len: text.len() as u16,
            postings_len,
            ..Slot::default()
        };
        if long_text {
            slot.text[..4].copy_from_slice(&(self.texts.len() as u32).to_le_bytes());
            self.texts.extend_from_slice(text);
        } else {
            slot.text = padded(text);
        }
        if long_postings {
            slot.postings[0] = self.postings.len() as u32;
            self.postings.extend_from_slice(postings);
        } else {
            slot.postings[..postings.len()].copy_from_slice(postings);
        }
        let stamp = self.stamp;
        let set = &mut self.sets[Self::set_of(key)];
        let [newer, older] = &mut set.ways;
        // The older of two live entries is the one dropped.
        let full = newer.stamp == stamp && older.stamp == stamp;
        if newer.stamp == stamp {
            *older = *newer;
        }
        *newer = slot;
        if !full {
            self.live += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scan_memo_answers_only_for_its_path_and_text_and_stays_bounded() {
        let mut memo = ScanMemo::default();
        memo.serve(7);
        let key = ScanMemo::key(1, b"explorer.exe");
        memo.insert(key, 1, b"explorer.exe", &[3, 5]);
        assert_eq!(memo.get(key, 1, b"explorer.exe"), Some(&[3, 5][..]));
        // Another path, or another text under the same key, is not answered.
        assert_eq!(memo.get(key, 2, b"explorer.exe"), None);
        assert_eq!(memo.get(key, 1, b"EXPLORER.EXE"), None);
        assert_eq!(memo.get(key, 1, b"explorer.ex"), None);

        // Long texts and long posting lists live in the arenas.
        let path = b"c:\\program files\\windowsapps\\microsoft.windowsterminal\\wt.exe";
        let key = ScanMemo::key(1, path);
        memo.insert(key, 1, path, &[1, 2, 3, 4, 5]);
        assert_eq!(memo.get(key, 1, path), Some(&[1, 2, 3, 4, 5][..]));
        assert_eq!(memo.get(key, 1, &path[..path.len() - 1]), None);

        let long = vec![b'a'; TEXT_MAX + 1];
        let long_key = ScanMemo::key(1, &long);
        memo.insert(long_key, 1, &long, &[]);
        assert_eq!(memo.get(long_key, 1, &long), None, "too long to remember");

        for n in 0..SLOTS as u32 + 10 {
            let text = format!("{n:040}");
            memo.insert(ScanMemo::key(1, text.as_bytes()), 1, text.as_bytes(), &[n]);
            assert!(memo.len() <= SLOTS);
            assert!(memo.arena_bytes() <= BYTES_MAX);
        }
        // The last values are answered.
        let text = format!("{:040}", SLOTS + 9);
        let key = ScanMemo::key(1, text.as_bytes());
        assert_eq!(
            memo.get(key, 1, text.as_bytes()),
            Some(&[SLOTS as u32 + 9][..])
        );

        // Another index's first event empties it.
        memo.serve(8);
        assert_eq!(memo.len(), 0);
        assert_eq!(memo.arena_bytes(), 0);
        assert_eq!(memo.get(key, 1, text.as_bytes()), None);
    }

    #[test]
    fn a_set_keeps_the_two_newest_values() {
        let mut memo = ScanMemo::default();
        // Three keys of one set.
        let key = |n: u64| n * SETS as u64 + 5;
        for n in 0..3 {
            memo.insert(key(n), 1, format!("v{n}").as_bytes(), &[n as u32]);
        }
        assert_eq!(memo.get(key(0), 1, b"v0"), None, "the oldest was replaced");
        assert_eq!(memo.get(key(1), 1, b"v1"), Some(&[1][..]));
        assert_eq!(memo.get(key(2), 1, b"v2"), Some(&[2][..]));
        assert_eq!(memo.len(), 2);
    }
}
