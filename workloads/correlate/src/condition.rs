//! The condition language: a `detection.condition` string parsed into a [`Condition`]
//! tree.
//!
//! Precedence, loosest first: `or`, `and`, `not`, then `1 of`/`all of` and parentheses.
//! Operators are matched without regard to case, because rules in the wild write `AND`.
//! The legacy aggregations (`| count() by …`, `near`) are recognised and rejected with a
//! message saying so, since correlation rules replaced them.

use std::fmt;

/// A parsed condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// A search identifier (selection) by name.
    Selection(String),
    Not(Box<Condition>),
    /// Every operand holds; flattened, so `a and b and c` has three operands.
    And(Vec<Condition>),
    /// Any operand holds; flattened like `And`.
    Or(Vec<Condition>),
    /// `1 of <target>` (also written `any of`).
    OneOf(Target),
    /// `all of <target>`.
    AllOf(Target),
}

/// What `1 of` and `all of` range over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `them`: every search identifier not starting with `_`.
    Them,
    /// A name with `*` wildcards, e.g. `selection_*`.
    Pattern(String),
}

impl Target {
    /// Whether a search identifier belongs to the target.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Target::Them => !name.starts_with('_'),
            Target::Pattern(pattern) => glob_match(pattern, name),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Them => f.write_str("them"),
            Target::Pattern(p) => f.write_str(p),
        }
    }
}

/// Why a condition did not parse; `position` is the byte offset in the condition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at column {}: {message}", position + 1)]
pub struct ConditionError {
    pub position: usize,
    pub message: String,
}

impl ConditionError {
    fn new(position: usize, message: impl Into<String>) -> Self {
        ConditionError {
            position,
            message: message.into(),
        }
    }
}

/// Parses one condition string.
///
/// # Errors
///
/// When the text is not a condition: an unbalanced parenthesis, an operator without an
/// operand, an unknown quantifier (`2 of`), or a legacy aggregation.
pub fn parse(text: &str) -> Result<Condition, ConditionError> {
    let tokens = lex(text)?;
    let mut parser = Parser {
        tokens,
        next: 0,
        end: text.len(),
        depth: 0,
    };
    let condition = parser.or()?;
    match parser.peek() {
        None => Ok(condition),
        Some(token) if token.kind.is_keyword("near") || token.kind == Kind::Pipe => {
            Err(legacy_aggregation(token.position))
        }
        Some(token) => Err(ConditionError::new(
            token.position,
            format!("unexpected {}", token.kind.describe()),
        )),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Word(String),
    Open,
    Close,
    Pipe,
}

impl Kind {
    fn describe(&self) -> String {
        match self {
            Kind::Word(w) => format!("`{w}`"),
            Kind::Open => "`(`".to_owned(),
            Kind::Close => "`)`".to_owned(),
            Kind::Pipe => "`|`".to_owned(),
        }
    }

    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(self, Kind::Word(w) if w.eq_ignore_ascii_case(keyword))
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    position: usize,
}

fn lex(text: &str) -> Result<Vec<Token>, ConditionError> {
    let mut tokens = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(position, c)) = chars.peek() {
        let kind = match c {
            c if c.is_whitespace() => {
                chars.next();
                continue;
            }
            '(' => Kind::Open,
            ')' => Kind::Close,
            '|' => {
                // What follows is an aggregation expression, which the parser rejects as a
                // whole; lexing it would only report its first odd character instead.
                tokens.push(Token {
                    kind: Kind::Pipe,
                    position,
                });
                break;
            }
            c if is_word_char(c) => {
                let mut end = position;
                while let Some(&(i, c)) = chars.peek() {
                    if !is_word_char(c) {
                        break;
                    }
                    end = i + c.len_utf8();
                    chars.next();
                }
                tokens.push(Token {
                    kind: Kind::Word(text[position..end].to_owned()),
                    position,
                });
                continue;
            }
            other => {
                return Err(ConditionError::new(
                    position,
                    format!("unexpected character {other:?}"),
                ))
            }
        };
        chars.next();
        tokens.push(Token { kind, position });
    }
    Ok(tokens)
}

/// Identifier characters: what SigmaHQ rules use in selection names, plus `*` for
/// patterns.
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '*' | '-' | '.' | '?')
}

struct Parser {
    tokens: Vec<Token>,
    next: usize,
    /// Offset just past the text, for errors at its end.
    end: usize,
    /// Open `(` and `not` around the current position.
    depth: usize,
}

/// Deepest nesting of parentheses and `not` accepted. Parsing, compiling and evaluating
/// recurse once per level, so hostile input could otherwise exhaust the stack; real rules
/// nest a handful of levels.
const MAX_DEPTH: usize = 64;

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn position(&self) -> usize {
        self.peek().map_or(self.end, |t| t.position)
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        if self.peek().is_some_and(|t| t.kind.is_keyword(keyword)) {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Condition, ConditionError> {
        let mut operands = vec![self.and()?];
        while self.eat_keyword("or") {
            operands.push(self.and()?);
        }
        Ok(flatten(operands, false))
    }

    fn and(&mut self) -> Result<Condition, ConditionError> {
        let mut operands = vec![self.not()?];
        while self.eat_keyword("and") {
            operands.push(self.not()?);
        }
        Ok(flatten(operands, true))
    }

    fn not(&mut self) -> Result<Condition, ConditionError> {
        if self.eat_keyword("not") {
            self.enter()?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Condition::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn enter(&mut self) -> Result<(), ConditionError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ConditionError::new(
                self.position(),
                format!("nested more than {MAX_DEPTH} levels deep"),
            ));
        }
        Ok(())
    }

    fn primary(&mut self) -> Result<Condition, ConditionError> {
        let position = self.position();
        let Some(token) = self.tokens.get(self.next).cloned() else {
            return Err(ConditionError::new(
                position,
                "expected a selection, `(`, `not`, `1 of` or `all of`, found the end",
            ));
        };
        self.next += 1;
        match token.kind {
            Kind::Open => {
                self.enter()?;
                let inner = self.or()?;
                self.depth -= 1;
                match self.peek() {
                    Some(Token {
                        kind: Kind::Close, ..
                    }) => {
                        self.next += 1;
                        Ok(inner)
                    }
                    _ => Err(ConditionError::new(
                        self.position(),
                        format!("missing `)` for the `(` at column {}", position + 1),
                    )),
                }
            }
            Kind::Close => Err(ConditionError::new(position, "unexpected `)`")),
            Kind::Pipe => Err(legacy_aggregation(position)),
            Kind::Word(word) => self.word(word, position),
        }
    }

    fn word(&mut self, word: String, position: usize) -> Result<Condition, ConditionError> {
        let quantifier = match word.to_ascii_lowercase().as_str() {
            "and" | "or" => {
                return Err(ConditionError::new(
                    position,
                    format!("`{word}` needs an operand before it"),
                ))
            }
            "near" => return Err(legacy_aggregation(position)),
            "1" | "any" => Some(true),
            "all" => Some(false),
            _ => None,
        };
        let is_of = self.peek().is_some_and(|t| t.kind.is_keyword("of"));
        match (quantifier, is_of) {
            (Some(one), true) => {
                self.next += 1;
                let target = self.target()?;
                Ok(if one {
                    Condition::OneOf(target)
                } else {
                    Condition::AllOf(target)
                })
            }
            (None, true) if word.chars().all(|c| c.is_ascii_digit()) => Err(ConditionError::new(
                position,
                format!("`{word} of` is not defined: use `1 of` or `all of`"),
            )),
            _ if self.peek().is_some_and(|t| t.kind == Kind::Pipe) => {
                Err(legacy_aggregation(self.position()))
            }
            _ => {
                if word.eq_ignore_ascii_case("of") || word.eq_ignore_ascii_case("them") {
                    return Err(ConditionError::new(
                        position,
                        format!("`{word}` must follow `1` or `all`"),
                    ));
                }
                if word.contains('*') {
                    return Err(ConditionError::new(
                        position,
                        format!("the pattern `{word}` needs `1 of` or `all of` before it"),
                    ));
                }
                Ok(Condition::Selection(word))
            }
        }
    }

    fn target(&mut self) -> Result<Target, ConditionError> {
        let position = self.position();
        match self.tokens.get(self.next).cloned() {
            Some(Token {
                kind: Kind::Word(word),
                ..
            }) if !["and", "or", "not", "of"]
                .iter()
                .any(|k| word.eq_ignore_ascii_case(k)) =>
            {
                self.next += 1;
                Ok(if word.eq_ignore_ascii_case("them") {
                    Target::Them
                } else {
                    Target::Pattern(word)
                })
            }
            _ => Err(ConditionError::new(
                position,
                "expected `them` or a selection name pattern after `of`",
            )),
        }
    }
}

fn legacy_aggregation(position: usize) -> ConditionError {
    ConditionError::new(
        position,
        "legacy aggregations (`| count() …`, `near`) are not supported: \
         write a correlation rule instead",
    )
}

fn flatten(mut operands: Vec<Condition>, and: bool) -> Condition {
    if operands.len() == 1 {
        return operands.pop().expect("one operand");
    }
    let mut flat = Vec::with_capacity(operands.len());
    for operand in operands {
        match operand {
            Condition::And(inner) if and => flat.extend(inner),
            Condition::Or(inner) if !and => flat.extend(inner),
            other => flat.push(other),
        }
    }
    if and {
        Condition::And(flat)
    } else {
        Condition::Or(flat)
    }
}

/// Matches `name` against a pattern where `*` is any run and `?` any one character.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was and which name position it is trying to absorb up to.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
            }
            Some(&c) if c == '?' || c == name[n] => {
                p += 1;
                n += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    p = sp + 1;
                    n = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sel(name: &str) -> Condition {
        Condition::Selection(name.to_owned())
    }

    #[test]
    fn and_binds_tighter_than_or_and_not_tighter_than_and() {
        assert_eq!(
            parse("a or b and not c").unwrap(),
            Condition::Or(vec![
                sel("a"),
                Condition::And(vec![sel("b"), Condition::Not(Box::new(sel("c")))]),
            ])
        );
        assert_eq!(
            parse("not a and b").unwrap(),
            Condition::And(vec![Condition::Not(Box::new(sel("a"))), sel("b")])
        );
    }

    #[test]
    fn parentheses_override_precedence() {
        assert_eq!(
            parse("(a or b) and c").unwrap(),
            Condition::And(vec![Condition::Or(vec![sel("a"), sel("b")]), sel("c")])
        );
        assert_eq!(
            parse("not (a or b)").unwrap(),
            Condition::Not(Box::new(Condition::Or(vec![sel("a"), sel("b")])))
        );
    }

    #[test]
    fn chains_are_flattened() {
        assert_eq!(
            parse("a and b and (c and d)").unwrap(),
            Condition::And(vec![sel("a"), sel("b"), sel("c"), sel("d")])
        );
    }

    #[test]
    fn quantifiers() {
        assert_eq!(
            parse("1 of selection_* and not all of filter*").unwrap(),
            Condition::And(vec![
                Condition::OneOf(Target::Pattern("selection_*".to_owned())),
                Condition::Not(Box::new(Condition::AllOf(Target::Pattern(
                    "filter*".to_owned()
                )))),
            ])
        );
        assert_eq!(
            parse("all of them").unwrap(),
            Condition::AllOf(Target::Them)
        );
        assert_eq!(
            parse("any of them").unwrap(),
            Condition::OneOf(Target::Them)
        );
        assert_eq!(
            parse("selection AND NOT filter").unwrap(),
            Condition::And(vec![
                sel("selection"),
                Condition::Not(Box::new(sel("filter")))
            ])
        );
    }

    #[test]
    fn errors_say_where_and_what() {
        let e = parse("a and").unwrap_err();
        assert_eq!(e.position, 5);
        assert!(e.message.contains("found the end"), "{e}");
        let e = parse("(a or b").unwrap_err();
        assert!(e.message.contains("missing `)`"), "{e}");
        let e = parse("a b").unwrap_err();
        assert_eq!(e.to_string(), "at column 3: unexpected `b`");
        assert!(parse("2 of sel*").unwrap_err().message.contains("`2 of`"));
        assert!(parse("sel | count() by x > 3")
            .unwrap_err()
            .message
            .contains("legacy aggregations"));
        assert!(parse("a near b").unwrap_err().message.contains("legacy"));
        assert!(parse("sel*").unwrap_err().message.contains("needs `1 of`"));
        assert!(parse("1 of").unwrap_err().message.contains("after `of`"));
        assert!(parse("a or )").is_err());
        assert!(parse("a & b").unwrap_err().message.contains("'&'"));
        assert!(parse("").is_err());
    }

    #[test]
    fn globs() {
        assert!(glob_match("selection_*", "selection_img"));
        assert!(glob_match("selection*", "selection"));
        assert!(!glob_match("selection_*", "selection"));
        assert!(glob_match("*_filter", "main_filter"));
        assert!(glob_match("sel*_x", "sel_a_b_x"));
        assert!(!glob_match("sel*_x", "sel_a_b_y"));
        assert!(glob_match("*", "anything"));
        assert!(Target::Them.matches("selection"));
        assert!(!Target::Them.matches("_private"));
    }
}
