//! Checks of the free texts and tags of request bodies, shared by the Kastell and the
//! TheHive endpoints so both refuse the same input the same way.

use super::error::ApiError;

/// The most tags a case or observable may carry, the longest tag and title.
pub const MAX_TAGS: usize = 100;
pub const MAX_TAG: usize = 128;
pub const MAX_TITLE: usize = 512;

/// A text, trimmed: refused when blank (unless `blank_ok`) or over `max` characters.
pub fn text(field: &str, value: &str, max: usize, blank_ok: bool) -> Result<String, ApiError> {
    let value = value.trim();
    if value.is_empty() && !blank_ok {
        return Err(ApiError::invalid_body(format!("{field} must not be blank")));
    }
    if value.chars().count() > max {
        return Err(ApiError::invalid_body(format!(
            "{field} must be at most {max} characters"
        )));
    }
    Ok(value.to_owned())
}

/// Tags trimmed and de-duplicated in order; blank or over-long tags and more than
/// [`MAX_TAGS`] are refused.
pub fn tags(tags: Vec<String>) -> Result<Vec<String>, ApiError> {
    if tags.len() > MAX_TAGS {
        return Err(ApiError::invalid_body(format!(
            "at most {MAX_TAGS} tags are allowed"
        )));
    }
    let mut clean = Vec::with_capacity(tags.len());
    for tag in tags {
        let tag = text("a tag", &tag, MAX_TAG, false)?;
        if !clean.contains(&tag) {
            clean.push(tag);
        }
    }
    Ok(clean)
}

/// An assignee: trimmed, at most 256 characters; empty means nobody.
pub fn assignee(value: &str) -> Result<Option<String>, ApiError> {
    let name = text("assignee", value, 256, true)?;
    Ok((!name.is_empty()).then_some(name))
}

/// An observable type: 1 to 64 lower-case ASCII letters, digits, `-` or `_`.
pub fn observable_kind(kind: &str) -> Result<String, ApiError> {
    let kind = kind.trim();
    let valid = !kind.is_empty()
        && kind.len() <= 64
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if valid {
        Ok(kind.to_owned())
    } else {
        Err(ApiError::invalid_body(format!(
            "observable type {kind:?} must be 1 to 64 lower-case letters, digits, - or _"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_trimmed_deduplicated_and_bounded() {
        let got = tags(vec![" a ".into(), "b".into(), "a".into()]).unwrap();
        assert_eq!(got, ["a", "b"]);
        assert!(tags(vec![" ".into()]).is_err());
        assert!(tags(vec!["x".repeat(129)]).is_err());
        assert!(tags((0..101).map(|i| i.to_string()).collect()).is_err());
    }

    #[test]
    fn observable_types_are_plain_names() {
        assert_eq!(observable_kind(" ip ").unwrap(), "ip");
        assert_eq!(observable_kind("user-agent").unwrap(), "user-agent");
        assert!(observable_kind("IP").is_err());
        assert!(observable_kind("").is_err());
        assert!(observable_kind("a b").is_err());
    }
}
