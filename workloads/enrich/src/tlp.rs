//! An IntelFeed's TLP ceiling (`spec.tlpCeiling`): indicators marked above it are not
//! loaded, so nothing the platform may not hold reaches the store, an alert or a case.
//!
//! An indicator's marking is its own `tlp:` tags when it has any, else its event's or
//! report's (as [`crate::Indicator::tlp`] reads it); of several tags at that level the
//! most restrictive counts. An indicator with no `tlp:` tag is loaded. A `tlp:` tag that
//! is no TLP 2.0 or 1.0 level (`tlp:ex:chr`, `tlp:unclear`) is treated as above every
//! ceiling: a ceiling is a promise about what is held, and an unknown marking cannot be
//! shown to keep it.

use kastell_crds::Tlp;

use crate::store::IndicatorStore;

/// The rank of a level; TLP 1.0's white is TLP 2.0's clear.
pub fn rank(tlp: Tlp) -> u8 {
    match tlp {
        Tlp::Clear | Tlp::White => 0,
        Tlp::Green => 1,
        Tlp::Amber => 2,
        Tlp::AmberStrict => 3,
        Tlp::Red => 4,
    }
}

/// A level as `tlp:` tags name it (`TLP:AMBER+STRICT`, `tlp:white`), any case.
pub fn parse(name: &str) -> Option<Tlp> {
    match name.trim().to_ascii_lowercase().as_str() {
        "clear" => Some(Tlp::Clear),
        "white" => Some(Tlp::White),
        "green" => Some(Tlp::Green),
        "amber" => Some(Tlp::Amber),
        "amber+strict" | "amber-strict" => Some(Tlp::AmberStrict),
        "red" => Some(Tlp::Red),
        _ => None,
    }
}

/// The most restrictive `tlp:` rank among `tags`; `None` when none is a `tlp:` tag,
/// `u8::MAX` for a `tlp:` tag naming no level.
fn marking_rank(tags: &[String]) -> Option<u8> {
    tags.iter()
        .filter_map(|tag| {
            let prefix = tag.get(..4)?;
            prefix
                .eq_ignore_ascii_case("tlp:")
                .then(|| tag[4..].to_owned())
        })
        .filter(|level| !level.is_empty())
        .map(|level| parse(&level).map_or(u8::MAX, rank))
        .max()
}

/// Whether an indicator with these attribute and event (or report) tags is marked
/// above `ceiling`.
pub fn above_ceiling(attribute_tags: &[String], context_tags: &[String], ceiling: Tlp) -> bool {
    marking_rank(attribute_tags)
        .or_else(|| marking_rank(context_tags))
        .is_some_and(|marking| marking > rank(ceiling))
}

/// The store without the indicators marked above `ceiling`, and how many were left out.
pub fn withhold_above(store: IndicatorStore, ceiling: Tlp) -> (IndicatorStore, u64) {
    store.retain_by_tags(|attribute, context| !above_ceiling(attribute, context, ceiling))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(list: &[&str]) -> Vec<String> {
        list.iter().map(|t| (*t).to_owned()).collect()
    }

    #[test]
    fn the_attribute_marking_wins_and_the_strictest_tag_counts() {
        let event_red = tags(&["tlp:red"]);
        assert!(!above_ceiling(
            &tags(&["tlp:green"]),
            &event_red,
            Tlp::Amber
        ));
        assert!(above_ceiling(&[], &event_red, Tlp::Amber));
        assert!(above_ceiling(
            &tags(&["TLP:GREEN", "tlp:amber+strict"]),
            &[],
            Tlp::Amber
        ));
        assert!(!above_ceiling(&tags(&["misp:tool=x"]), &[], Tlp::Clear));
    }

    #[test]
    fn white_is_clear_and_unknown_markings_are_withheld() {
        assert!(!above_ceiling(&tags(&["tlp:white"]), &[], Tlp::Clear));
        assert!(!above_ceiling(&tags(&["tlp:clear"]), &[], Tlp::White));
        assert!(above_ceiling(&tags(&["tlp:ex:chr"]), &[], Tlp::Red));
        assert!(!above_ceiling(&tags(&["tlp:"]), &[], Tlp::Clear));
    }
}
