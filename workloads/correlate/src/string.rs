//! Sigma strings: a rule's text value split into literal runs and the two wildcards, with
//! the specification's escaping undone.
//!
//! The split happens once, when a rule is read, so modifiers such as `endswith` add their
//! wildcard as a piece rather than as text. That keeps a value ending in a backslash
//! (`C:\Windows\`) followed by a real wildcard, instead of an escaped `*`.

use std::fmt;

/// One piece of a Sigma string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text matched as is (subject to case folding).
    Literal(String),
    /// `*`: any run of characters, including none.
    AnyRun,
    /// `?`: exactly one character.
    AnyChar,
}

/// A rule's string value, as written and as pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigmaString {
    raw: String,
    pieces: Vec<Piece>,
}

impl SigmaString {
    /// Splits `raw` into pieces.
    ///
    /// A backslash escapes the character after it when that is `*`, `?` or another
    /// backslash; before anything else (or at the end) it is a literal backslash. So
    /// `\*` is a literal star, `\\*` a backslash and a wildcard, `\\\*` a backslash and a
    /// literal star, and `\\\\` two backslashes.
    pub fn parse(raw: &str) -> Self {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = raw.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.peek() {
                    Some(&next @ ('*' | '?' | '\\')) => {
                        literal.push(next);
                        chars.next();
                    }
                    _ => literal.push('\\'),
                },
                '*' | '?' => {
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(if c == '*' {
                        Piece::AnyRun
                    } else {
                        Piece::AnyChar
                    });
                }
                _ => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        SigmaString {
            raw: raw.to_owned(),
            pieces,
        }
    }

    /// A string of one literal piece, for values that are not Sigma text (numbers used
    /// with string modifiers).
    pub fn literal(text: &str) -> Self {
        let pieces = if text.is_empty() {
            Vec::new()
        } else {
            vec![Piece::Literal(text.to_owned())]
        };
        SigmaString {
            raw: text.to_owned(),
            pieces,
        }
    }

    /// The value as the rule wrote it (what `re` and `cidr` read).
    pub fn raw(&self) -> &str {
        &self.raw
    }

    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// Whether the value holds a wildcard.
    pub fn has_wildcards(&self) -> bool {
        self.pieces.iter().any(|p| !matches!(p, Piece::Literal(_)))
    }

    /// Adds a `*` in front unless one is there (what `contains` and `endswith` do).
    pub fn prepend_any_run(&mut self) {
        if self.pieces.first() != Some(&Piece::AnyRun) {
            self.pieces.insert(0, Piece::AnyRun);
        }
    }

    /// Adds a `*` at the end unless one is there (what `contains` and `startswith` do).
    pub fn append_any_run(&mut self) {
        if self.pieces.last() != Some(&Piece::AnyRun) {
            self.pieces.push(Piece::AnyRun);
        }
    }
}

impl fmt::Display for SigmaString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(s: &str) -> Piece {
        Piece::Literal(s.to_owned())
    }

    #[test]
    fn escapes_follow_the_specification() {
        assert_eq!(SigmaString::parse(r"a\*b").pieces(), &[lit("a*b")]);
        assert_eq!(SigmaString::parse(r"a\?b").pieces(), &[lit("a?b")]);
        assert_eq!(
            SigmaString::parse(r"a\\*").pieces(),
            &[lit(r"a\"), Piece::AnyRun]
        );
        assert_eq!(SigmaString::parse(r"a\\\*").pieces(), &[lit(r"a\*")]);
        assert_eq!(SigmaString::parse(r"\\\\").pieces(), &[lit(r"\\")]);
        assert_eq!(SigmaString::parse(r"\\\x").pieces(), &[lit(r"\\x")]);
        // Written with one backslash, the star is escaped: a literal `*`, not a wildcard.
        assert_eq!(
            SigmaString::parse(r"C:\Windows\*.exe").pieces(),
            &[lit(r"C:\Windows*.exe")]
        );
    }

    #[test]
    fn a_lone_backslash_is_literal_even_at_the_end() {
        assert_eq!(
            SigmaString::parse(r"C:\Windows\").pieces(),
            &[lit(r"C:\Windows\")]
        );
        assert_eq!(SigmaString::parse(r"\x").pieces(), &[lit(r"\x")]);
    }

    #[test]
    fn wildcards_split_literals() {
        assert_eq!(
            SigmaString::parse("prog?.exe*").pieces(),
            &[lit("prog"), Piece::AnyChar, lit(".exe"), Piece::AnyRun]
        );
        assert!(SigmaString::parse("a*").has_wildcards());
        assert!(!SigmaString::parse(r"a\*").has_wildcards());
    }

    #[test]
    fn modifier_wildcards_stay_wildcards_after_a_trailing_backslash() {
        let mut s = SigmaString::parse(r"C:\Windows\");
        s.append_any_run();
        assert_eq!(s.pieces(), &[lit(r"C:\Windows\"), Piece::AnyRun]);
        s.append_any_run();
        s.prepend_any_run();
        assert_eq!(
            s.pieces(),
            &[Piece::AnyRun, lit(r"C:\Windows\"), Piece::AnyRun]
        );
    }
}
