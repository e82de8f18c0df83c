//! The built-in catalogue of the EU and EEA regions of the major clouds and of European
//! providers, and the set of regions a platform's residency policy allows.
//!
//! The names are the values the providers' cloud controllers write into a node's region
//! label, taken from their public region lists. A region missing here (a new one, a
//! private cloud) is allowed with `spec.residency.regions`.

use std::collections::BTreeSet;

use kastell_crds::platform::{Jurisdiction, Residency};

/// One provider's regions inside the EU.
struct ProviderRegions {
    provider: &'static str,
    eu: &'static [&'static str],
    /// Regions in EEA states outside the EU (Norway, Iceland, Liechtenstein).
    eea_only: &'static [&'static str],
}

/// Switzerland and the United Kingdom are neither EU nor EEA: Zurich, Geneva and London
/// regions are deliberately absent.
const CATALOGUE: &[ProviderRegions] = &[
    ProviderRegions {
        provider: "aws",
        eu: &[
            "eu-central-1",
            "eu-west-1",
            "eu-west-3",
            "eu-north-1",
            "eu-south-1",
            "eu-south-2",
            "eusc-de-east-1",
        ],
        eea_only: &[],
    },
    ProviderRegions {
        provider: "azure",
        eu: &[
            "westeurope",
            "northeurope",
            "francecentral",
            "francesouth",
            "germanywestcentral",
            "germanynorth",
            "swedencentral",
            "swedensouth",
            "italynorth",
            "polandcentral",
            "spaincentral",
            "austriaeast",
        ],
        eea_only: &["norwayeast", "norwaywest"],
    },
    ProviderRegions {
        provider: "gcp",
        eu: &[
            "europe-west1",
            "europe-west3",
            "europe-west4",
            "europe-west8",
            "europe-west9",
            "europe-west10",
            "europe-west12",
            "europe-north1",
            "europe-north2",
            "europe-central2",
            "europe-southwest1",
        ],
        eea_only: &[],
    },
    ProviderRegions {
        provider: "ovhcloud",
        eu: &[
            "GRA5",
            "GRA7",
            "GRA9",
            "GRA11",
            "SBG5",
            "DE1",
            "WAW1",
            "EU-WEST-PAR",
        ],
        eea_only: &[],
    },
    ProviderRegions {
        provider: "hetzner",
        eu: &["fsn1", "nbg1", "hel1"],
        eea_only: &[],
    },
    ProviderRegions {
        provider: "scaleway",
        eu: &["fr-par", "nl-ams", "pl-waw"],
        eea_only: &[],
    },
    ProviderRegions {
        provider: "exoscale",
        eu: &["de-fra-1", "de-muc-1", "at-vie-1", "at-vie-2", "bg-sof-1"],
        eea_only: &[],
    },
    ProviderRegions {
        provider: "upcloud",
        eu: &[
            "de-fra1", "fi-hel1", "fi-hel2", "nl-ams1", "pl-waw1", "es-mad1", "se-sto1", "dk-cph1",
        ],
        eea_only: &[],
    },
];

/// The regions of a jurisdiction, across all providers of the catalogue.
pub fn catalogue(jurisdiction: Jurisdiction) -> BTreeSet<&'static str> {
    CATALOGUE
        .iter()
        .flat_map(|p| {
            let eea = match jurisdiction {
                Jurisdiction::Eu => &[][..],
                Jurisdiction::Eea => p.eea_only,
            };
            p.eu.iter().chain(eea)
        })
        .copied()
        .collect()
}

/// The providers the catalogue covers, for the documentation and error messages.
pub fn providers() -> impl Iterator<Item = &'static str> {
    CATALOGUE.iter().map(|p| p.provider)
}

/// The regions a residency policy allows: its jurisdiction's catalogue plus its explicit
/// list. Empty means the policy names no region at all, which the operator reports
/// rather than placing workloads anywhere.
pub fn allowed_regions(residency: &Residency) -> BTreeSet<String> {
    let mut regions: BTreeSet<String> = residency
        .jurisdiction
        .map(catalogue)
        .unwrap_or_default()
        .into_iter()
        .map(str::to_owned)
        .collect();
    regions.extend(residency.regions.iter().cloned());
    regions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eea_is_the_eu_plus_norway() {
        let eu = catalogue(Jurisdiction::Eu);
        let eea = catalogue(Jurisdiction::Eea);
        assert!(eu.is_subset(&eea));
        assert!(eu.contains("eu-central-1"));
        assert!(eu.contains("fsn1"));
        assert!(!eu.contains("norwayeast"));
        assert!(eea.contains("norwayeast"));
        for outside in [
            "eu-west-2",
            "eu-central-2",
            "europe-west6",
            "uksouth",
            "ch-gva-2",
        ] {
            assert!(!eea.contains(outside), "{outside} is neither EU nor EEA");
        }
        assert!(providers().count() >= 8);
    }

    #[test]
    fn explicit_regions_add_to_the_jurisdiction() {
        let residency = Residency {
            jurisdiction: Some(Jurisdiction::Eu),
            regions: vec!["onprem-vienna".into()],
            ..Residency::default()
        };
        let allowed = allowed_regions(&residency);
        assert!(allowed.contains("onprem-vienna"));
        assert!(allowed.contains("europe-west3"));
        assert!(allowed_regions(&Residency::default()).is_empty());
    }
}
