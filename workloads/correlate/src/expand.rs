//! The `expand` modifier: `%placeholder%` in a value replaced by each of the values
//! configured for that placeholder (pySigma's value-list placeholders), before the value
//! is compiled. A placeholder without configured values makes the rule fail to compile,
//! as the specification requires.

use std::collections::BTreeMap;

use crate::error::ErrorKind;
use crate::modifier::Modifier;
use crate::rule::{Detection, FieldMatch, Selection, SigmaValue};
use crate::string::SigmaString;

/// Placeholder name (without the `%`s) → the values it stands for.
pub type Placeholders = BTreeMap<String, Vec<String>>;

/// Replaces every `expand` field match's placeholders in `detection`, dropping the
/// modifier, so the compile step sees plain values.
pub(crate) fn expand_placeholders(
    detection: &mut Detection,
    placeholders: &Placeholders,
) -> Result<(), ErrorKind> {
    for (_, selection) in &mut detection.selections {
        let maps: Vec<&mut Vec<FieldMatch>> = match selection {
            Selection::Fields(matches) => vec![matches],
            Selection::AnyOf(maps) => maps.iter_mut().collect(),
            Selection::Keywords(_) => Vec::new(),
        };
        for matches in maps {
            for m in matches.iter_mut() {
                if m.modifiers.contains(&Modifier::Expand) {
                    expand_match(m, placeholders)?;
                }
            }
        }
    }
    Ok(())
}

fn expand_match(m: &mut FieldMatch, placeholders: &Placeholders) -> Result<(), ErrorKind> {
    let mut values = Vec::new();
    for value in &m.values {
        let SigmaValue::String(text) = value else {
            values.push(value.clone());
            continue;
        };
        for raw in expand_text(text.raw(), placeholders).map_err(|name| {
            ErrorKind::invalid(
                &m.path,
                format!("placeholder `%{name}%` has no configured values"),
            )
        })? {
            values.push(SigmaValue::String(SigmaString::parse(&raw)));
        }
    }
    m.values = values;
    m.modifiers.retain(|modifier| *modifier != Modifier::Expand);
    Ok(())
}

/// Every spelling of `raw` with its placeholders replaced; `\%` is a literal `%`.
/// Errors with the name of a placeholder that has no values.
fn expand_text(raw: &str, placeholders: &Placeholders) -> Result<Vec<String>, String> {
    let mut results = vec![String::new()];
    let mut rest = raw;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("\\%") {
            results.iter_mut().for_each(|r| r.push('%'));
            rest = after;
            continue;
        }
        if let Some(after) = rest.strip_prefix('%') {
            if let Some(end) = after.find('%') {
                let name = &after[..end];
                let values = placeholders
                    .get(name)
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| name.to_owned())?;
                results = results
                    .iter()
                    .flat_map(|r| values.iter().map(move |v| format!("{r}{v}")))
                    .collect();
                rest = &after[end + 1..];
                continue;
            }
        }
        let c = rest.chars().next().unwrap_or_default();
        results.iter_mut().for_each(|r| r.push(c));
        rest = &rest[c.len_utf8()..];
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_expand_to_every_value() {
        let mut p = Placeholders::new();
        p.insert("DomainControllers".into(), vec!["DC1".into(), "DC2".into()]);
        assert_eq!(
            expand_text("CN=%DomainControllers%,OU", &p).unwrap(),
            ["CN=DC1,OU", "CN=DC2,OU"]
        );
        assert_eq!(expand_text("100\\% sure", &p).unwrap(), ["100% sure"]);
        assert_eq!(expand_text("50%", &p).unwrap(), ["50%"]);
        assert_eq!(expand_text("%Servers%", &p).unwrap_err(), "Servers");
    }
}
