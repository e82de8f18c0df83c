//! `kastell validate DIR`: the offline check a platform team runs on every pull request.
//! Every resource is read against its schema, every Sigma rule compiled and every
//! playbook checked by the same code the stages run, every referenced file looked for,
//! and every outbound endpoint held against the platform's residency policy.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use kastell_correlate::{RuleDocument, RuleSet};
use kastell_crds::{Loaded, ResourceSet};
use kastell_respond::PlaybookSet;

use crate::residency::EndpointPolicy;

/// One thing wrong, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// `Kind namespace/name`, when the problem belongs to one object.
    pub object: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.object {
            Some(object) => write!(f, "{}: {object}: {}", self.file.display(), self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// What the check found.
#[derive(Debug, Default)]
pub struct Report {
    /// Resources read, by kind.
    pub resources: BTreeMap<&'static str, usize>,
    pub problems: Vec<Problem>,
}

impl Report {
    pub fn resource_count(&self) -> usize {
        self.resources.values().sum()
    }

    fn problem(&mut self, file: &Path, object: Option<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            file: file.to_owned(),
            object,
            message: message.into(),
        });
    }
}

fn object<T: kube::Resource>(kind: &str, loaded: &Loaded<T>) -> Option<String> {
    Some(format!("{kind} {}", loaded.key()))
}

/// Checks every resource under `dir`.
///
/// # Errors
///
/// Only when the directory cannot be read; everything wrong inside it is a [`Problem`].
pub fn validate_dir(dir: &Path) -> Result<Report, kastell_crds::load::LoadError> {
    let (resources, load_errors) = kastell_crds::load_dir(dir)?;
    let mut report = Report::default();
    count(&mut report, &resources);
    for error in load_errors {
        report.problems.push(Problem {
            file: error.path().to_owned(),
            object: None,
            message: error.detail(),
        });
    }
    if resources.is_empty() && report.problems.is_empty() {
        // An empty result is far more often a wrong path than an empty repository, and a
        // CI check that passes on a wrong path checks nothing.
        report.problem(
            dir,
            None,
            "no Kastell resources (apiVersion kastell.eu/v1alpha1) found in any *.yaml or *.yml file",
        );
    }
    check_rules(&mut report, &resources);
    check_playbooks(&mut report, &resources);
    check_files(&mut report, &resources);
    check_residency(&mut report, &resources);
    Ok(report)
}

fn count(report: &mut Report, r: &ResourceSet) {
    for (kind, n) in [
        ("SecOpsPlatform", r.platforms.len()),
        ("Sensor", r.sensors.len()),
        ("DetectionRule", r.rules.len()),
        ("IntelFeed", r.feeds.len()),
        ("Playbook", r.playbooks.len()),
        ("Case", r.cases.len()),
    ] {
        report.resources.insert(kind, n);
    }
}

/// Compiles the rules as one set, as the correlate stage does, so correlations and
/// filters resolve the rules they name in other DetectionRules.
fn check_rules(report: &mut Report, resources: &ResourceSet) {
    let documents = resources
        .rules
        .iter()
        .map(|rule| RuleDocument::new(rule.key(), rule.object.spec.sigma.clone()));
    let (_, errors) = RuleSet::compile(documents);
    for error in errors {
        let Some(rule) = resources
            .rules
            .iter()
            .find(|r| error.resource.as_deref() == Some(r.key().as_str()))
        else {
            continue;
        };
        report.problem(
            &rule.file,
            object("DetectionRule", rule),
            format!("spec.sigma: {error}"),
        );
    }
}

fn check_playbooks(report: &mut Report, resources: &ResourceSet) {
    for playbook in &resources.playbooks {
        let (_, invalid) = PlaybookSet::compile([playbook.clone()]);
        for problem in invalid {
            report.problem(&playbook.file, object("Playbook", playbook), problem.reason);
        }
    }
}

/// Files a Sensor replays and directories an IntelFeed loads must exist in the checkout.
fn check_files(report: &mut Report, resources: &ResourceSet) {
    for sensor in &resources.sensors {
        if let Some(path) = &sensor.object.spec.transport.path {
            if !sensor.resolve(path).is_file() {
                report.problem(
                    &sensor.file,
                    object("Sensor", sensor),
                    format!("spec.transport.path: {path} does not exist"),
                );
            }
        }
    }
    for sensor in &resources.sensors {
        check_sensor_tls(report, sensor);
        if let Some(Err(e)) = sensor.object.spec.transport.listen_address() {
            report.problem(&sensor.file, object("Sensor", sensor), e.to_string());
        }
        if let Err(e) = sensor.object.spec.transport.max_connections() {
            report.problem(&sensor.file, object("Sensor", sensor), e);
        }
    }
    for feed in &resources.feeds {
        match (&feed.object.spec.path, &feed.object.spec.url) {
            (Some(path), _) if !feed.resolve(path).exists() => report.problem(
                &feed.file,
                object("IntelFeed", feed),
                format!("spec.path: {path} does not exist"),
            ),
            (None, None) => report.problem(
                &feed.file,
                object("IntelFeed", feed),
                "spec.url or spec.path is required",
            ),
            _ => {}
        }
    }
}

/// A listener's certificate, key and client CA: keys of the Secret it names (the
/// operator's rule, see [`crate::admission`]), else files beside the resource, as
/// `kastell run` reads them. A Sensor without `secretName` is not refused here: the same
/// repository may be run by `kastell run`, and the operator says so on the Sensor.
fn check_sensor_tls(report: &mut Report, sensor: &Loaded<kastell_crds::Sensor>) {
    let Some(tls) = crate::admission::listener_tls(&sensor.object.spec.transport) else {
        return;
    };
    if let Some(secret) = &tls.secret_name {
        if let Some(message) = crate::admission::secret_key_problem(tls, secret) {
            report.problem(&sensor.file, object("Sensor", sensor), message);
        }
        return;
    }
    for (field, file) in crate::admission::tls_files(tls) {
        if !sensor.resolve(file).is_file() {
            report.problem(
                &sensor.file,
                object("Sensor", sensor),
                format!("spec.transport.tls.{field}: {file} does not exist"),
            );
        }
    }
}

/// Outbound endpoints against the platform's allowed hosts and networks. A repository
/// without a SecOpsPlatform has no policy to check against; one with several platforms
/// in a namespace is ambiguous and reported.
fn check_residency(report: &mut Report, resources: &ResourceSet) {
    let mut policies: BTreeMap<String, (EndpointPolicy, &Loaded<kastell_crds::SecOpsPlatform>)> =
        BTreeMap::new();
    for platform in &resources.platforms {
        let namespace = platform
            .object
            .metadata
            .namespace
            .clone()
            .unwrap_or_default();
        let (policy, errors) = EndpointPolicy::from_residency(&platform.object.spec.residency);
        for error in errors {
            report.problem(
                &platform.file,
                object("SecOpsPlatform", platform),
                format!("spec.residency: {error}"),
            );
        }
        if let Some((_, first)) = policies.get(&namespace) {
            report.problem(
                &platform.file,
                object("SecOpsPlatform", platform),
                format!(
                    "namespace {namespace} already has the platform {} ({})",
                    first.key(),
                    first.file.display()
                ),
            );
            continue;
        }
        for message in crate::controller::platform::endpoint_problems(&policy, &platform.object) {
            report.problem(&platform.file, object("SecOpsPlatform", platform), message);
        }
        policies.insert(namespace, (policy, platform));
    }
    let policy_of = |namespace: &Option<String>| {
        policies
            .get(namespace.as_deref().unwrap_or_default())
            .map(|(policy, _)| policy)
    };
    for feed in &resources.feeds {
        if let (Some(url), Some(policy)) = (
            &feed.object.spec.url,
            policy_of(&feed.object.metadata.namespace),
        ) {
            if let Err(refusal) = policy.check(url) {
                report.problem(
                    &feed.file,
                    object("IntelFeed", feed),
                    format!("spec.url: {refusal}"),
                );
            }
        }
    }
    for playbook in &resources.playbooks {
        let Some(policy) = policy_of(&playbook.object.metadata.namespace) else {
            continue;
        };
        for (field, url) in crate::admission::playbook_endpoints(&playbook.object.spec) {
            if let Err(refusal) = policy.check(&url) {
                report.problem(
                    &playbook.file,
                    object("Playbook", playbook),
                    format!("{field}: {refusal}"),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `kastell validate` and the platform controller judge a platform's git remote by the
    /// same check: a `file://` remote (no network) and an allowed host pass both, a host
    /// outside the policy fails both with the same message.
    #[test]
    fn validate_and_the_controller_agree_on_the_git_remote() {
        for (url, allowed) in [
            ("file:///srv/git/soc.git", true),
            ("https://git.soc.example.eu/soc/resources.git", true),
            ("ssh://git@git.soc.example.eu/soc/resources.git", true),
            ("https://github.com/example/soc-resources.git", false),
            ("https://203.0.113.7/soc.git", false),
        ] {
            let yaml = format!(
                "apiVersion: kastell.eu/v1alpha1\nkind: SecOpsPlatform\n\
                 metadata: {{name: soc, namespace: secops}}\n\
                 spec:\n  residency:\n    jurisdiction: EU\n    \
                 allowedHosts: [git.soc.example.eu]\n  git:\n    url: {url}\n"
            );
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("platform.yaml"), &yaml).unwrap();
            let report = validate_dir(dir.path()).unwrap();
            let validate_says: Vec<&str> =
                report.problems.iter().map(|p| p.message.as_str()).collect();

            let platform: kastell_crds::SecOpsPlatform = serde_yaml::from_str(&yaml).unwrap();
            let controller_says = crate::controller::platform::validate(&platform).err();

            assert_eq!(
                controller_says.is_none(),
                allowed,
                "{url}: {controller_says:?}"
            );
            match controller_says {
                None => assert!(validate_says.is_empty(), "{url}: {validate_says:?}"),
                Some(message) => {
                    assert!(message.starts_with("spec.git.url: "), "{message}");
                    assert_eq!(validate_says, [message.as_str()], "{url}");
                }
            }
        }
    }
}
