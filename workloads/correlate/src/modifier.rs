//! Value modifiers: every modifier the Sigma 2.1 specification defines, by name.
//!
//! Reading a rule accepts all of them (an unknown name is an error); compiling decides which
//! ones this engine evaluates, so an unsupported one is reported as unsupported rather
//! than as a typo.

use std::fmt;
use std::str::FromStr;

/// A value modifier, as written after a field name (`Image|endswith`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Modifier {
    Contains,
    StartsWith,
    EndsWith,
    All,
    Exists,
    Cased,
    Neq,
    Windash,
    Re,
    /// `re` flag: case-insensitive (`i`, `ignorecase`).
    ReIgnoreCase,
    /// `re` flag: `^`/`$` match at line breaks (`m`, `multiline`).
    ReMultiline,
    /// `re` flag: `.` matches line breaks (`s`, `dotall`).
    ReDotAll,
    Base64,
    Base64Offset,
    Utf16Le,
    Utf16Be,
    Utf16,
    Wide,
    Lt,
    Lte,
    Gt,
    Gte,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Year,
    Cidr,
    Expand,
    FieldRef,
}

impl Modifier {
    /// The specification's name of the modifier.
    pub fn as_str(self) -> &'static str {
        match self {
            Modifier::Contains => "contains",
            Modifier::StartsWith => "startswith",
            Modifier::EndsWith => "endswith",
            Modifier::All => "all",
            Modifier::Exists => "exists",
            Modifier::Cased => "cased",
            Modifier::Neq => "neq",
            Modifier::Windash => "windash",
            Modifier::Re => "re",
            Modifier::ReIgnoreCase => "i",
            Modifier::ReMultiline => "m",
            Modifier::ReDotAll => "s",
            Modifier::Base64 => "base64",
            Modifier::Base64Offset => "base64offset",
            Modifier::Utf16Le => "utf16le",
            Modifier::Utf16Be => "utf16be",
            Modifier::Utf16 => "utf16",
            Modifier::Wide => "wide",
            Modifier::Lt => "lt",
            Modifier::Lte => "lte",
            Modifier::Gt => "gt",
            Modifier::Gte => "gte",
            Modifier::Minute => "minute",
            Modifier::Hour => "hour",
            Modifier::Day => "day",
            Modifier::Week => "week",
            Modifier::Month => "month",
            Modifier::Year => "year",
            Modifier::Cidr => "cidr",
            Modifier::Expand => "expand",
            Modifier::FieldRef => "fieldref",
        }
    }
}

impl fmt::Display for Modifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name is not a Sigma modifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown modifier `{0}`")]
pub struct UnknownModifier(pub String);

impl FromStr for Modifier {
    type Err = UnknownModifier;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "contains" => Modifier::Contains,
            "startswith" => Modifier::StartsWith,
            "endswith" => Modifier::EndsWith,
            "all" => Modifier::All,
            "exists" => Modifier::Exists,
            "cased" => Modifier::Cased,
            "neq" => Modifier::Neq,
            "windash" => Modifier::Windash,
            "re" => Modifier::Re,
            "i" | "ignorecase" => Modifier::ReIgnoreCase,
            "m" | "multiline" => Modifier::ReMultiline,
            "s" | "dotall" => Modifier::ReDotAll,
            "base64" => Modifier::Base64,
            "base64offset" => Modifier::Base64Offset,
            "utf16le" => Modifier::Utf16Le,
            "utf16be" => Modifier::Utf16Be,
            "utf16" => Modifier::Utf16,
            "wide" => Modifier::Wide,
            "lt" => Modifier::Lt,
            "lte" => Modifier::Lte,
            "gt" => Modifier::Gt,
            "gte" => Modifier::Gte,
            "minute" => Modifier::Minute,
            "hour" => Modifier::Hour,
            "day" => Modifier::Day,
            "week" => Modifier::Week,
            "month" => Modifier::Month,
            "year" => Modifier::Year,
            "cidr" => Modifier::Cidr,
            "expand" => Modifier::Expand,
            "fieldref" => Modifier::FieldRef,
            other => return Err(UnknownModifier(other.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in [
            "contains",
            "startswith",
            "endswith",
            "all",
            "exists",
            "cased",
            "neq",
            "windash",
            "re",
            "i",
            "m",
            "s",
            "base64",
            "base64offset",
            "utf16le",
            "utf16be",
            "utf16",
            "wide",
            "lt",
            "lte",
            "gt",
            "gte",
            "minute",
            "hour",
            "day",
            "week",
            "month",
            "year",
            "cidr",
            "expand",
            "fieldref",
        ] {
            let modifier: Modifier = name.parse().unwrap();
            assert_eq!(modifier.as_str(), name);
        }
        assert_eq!("ignorecase".parse::<Modifier>(), Ok(Modifier::ReIgnoreCase));
        assert_eq!(
            "contain".parse::<Modifier>(),
            Err(UnknownModifier("contain".to_owned()))
        );
    }
}
