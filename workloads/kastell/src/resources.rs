//! Reading a stage's resource directory, in either of the two shapes it comes in: a plain
//! directory of resource YAML (a checkout of the platform's repository), or the operator's
//! per-stage bundle as Kubernetes mounts a ConfigMap — one `<Kind>.<name>.yaml` key per
//! resource, stored in a timestamped `..<date>` directory that the `..data` symlink points
//! at, with one symlink per key beside it.
//!
//! Also the directory's fingerprint, which the stage commands poll to see a change.

use std::path::{Path, PathBuf};

use anyhow::Context;
use kastell_crds::ResourceSet;
use sha2::{Digest, Sha256};

/// The symlink Kubernetes swaps atomically when a mounted ConfigMap changes.
const CONFIG_MAP_DATA: &str = "..data";

/// The directory to read: in a ConfigMap mount the snapshot `..data` points at now.
///
/// Reading through the resolved snapshot, instead of the per-key symlinks beside it,
/// gives one consistent version even while the kubelet swaps in the next one; reading
/// the mount recursively would also load every resource three times (the key links,
/// `..data` and the timestamped directory).
pub fn root(dir: &Path) -> anyhow::Result<PathBuf> {
    let data = dir.join(CONFIG_MAP_DATA);
    if data.exists() {
        return std::fs::canonicalize(&data)
            .with_context(|| format!("resolving the ConfigMap snapshot {}", data.display()));
    }
    Ok(dir.to_owned())
}

/// Loads the resources of `dir` (either shape); files that do not load become problem
/// lines naming the file.
///
/// # Errors
///
/// When the directory cannot be read at all.
pub fn load(dir: &Path) -> anyhow::Result<(ResourceSet, Vec<String>)> {
    let root = root(dir)?;
    let (resources, errors) = kastell_crds::load_dir(&root)
        .with_context(|| format!("reading resources from {}", dir.display()))?;
    Ok((resources, errors.iter().map(ToString::to_string).collect()))
}

/// A hash over the names and contents of the YAML files under the directory's current
/// snapshot, hex-encoded. It changes when a resource is added, removed or edited, and when
/// a ConfigMap mount swaps to a snapshot with different content; not when only the
/// snapshot's timestamped name changes.
///
/// # Errors
///
/// When the directory or one of its files cannot be read.
pub fn fingerprint(dir: &Path) -> anyhow::Result<String> {
    let root = root(dir)?;
    let mut files = Vec::new();
    yaml_files(&root, &mut files)?;
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        let name = file.strip_prefix(&root).unwrap_or(&file).to_string_lossy();
        let text = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        // Lengths first, so that bytes moved between a name and a content still change it.
        hasher.update((name.len() as u64).to_be_bytes());
        hasher.update(name.as_bytes());
        hasher.update((text.len() as u64).to_be_bytes());
        hasher.update(&text);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.is_dir() {
            yaml_files(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLATFORM: &str = "apiVersion: kastell.eu/v1alpha1\nkind: SecOpsPlatform\n\
        metadata: {name: soc, namespace: soc}\nspec: {residency: {jurisdiction: EU}}\n";

    fn rule(title: &str) -> String {
        format!(
            "apiVersion: kastell.eu/v1alpha1\nkind: DetectionRule\n\
             metadata: {{name: r, namespace: soc}}\nspec:\n  sigma: |\n    title: {title}\n\
             \x20   id: 5f0b8a3e-36a4-4c5e-9d0e-1d6d3f3b2a11\n    logsource: {{product: test}}\n\
             \x20   detection:\n      sel: {{a: b}}\n      condition: sel\n"
        )
    }

    /// Lays out `entries` the way the kubelet mounts a ConfigMap, in snapshot `stamp`.
    fn mount(dir: &Path, stamp: &str, entries: &[(&str, String)]) {
        let snapshot = dir.join(stamp);
        std::fs::create_dir(&snapshot).unwrap();
        for (key, text) in entries {
            std::fs::write(snapshot.join(key), text).unwrap();
        }
        let next = dir.join("..data_tmp");
        std::os::unix::fs::symlink(stamp, &next).unwrap();
        std::fs::rename(&next, dir.join(CONFIG_MAP_DATA)).unwrap();
        for (key, _) in entries {
            let link = dir.join(key);
            if !link.exists() {
                std::os::unix::fs::symlink(Path::new(CONFIG_MAP_DATA).join(key), link).unwrap();
            }
        }
    }

    #[test]
    fn a_config_map_mount_loads_each_resource_once_from_its_current_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let entries = [
            ("SecOpsPlatform.soc.yaml", PLATFORM.to_owned()),
            ("DetectionRule.r.yaml", rule("first")),
        ];
        mount(dir.path(), "..2026_12_04_10_00_00.1", &entries);
        let (set, problems) = load(dir.path()).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(set.platforms.len(), 1);
        assert_eq!(set.rules.len(), 1);
        let before = fingerprint(dir.path()).unwrap();

        // The same content in a new snapshot is no change; other content is.
        mount(dir.path(), "..2026_12_04_10_05_00.2", &entries);
        assert_eq!(fingerprint(dir.path()).unwrap(), before);
        mount(
            dir.path(),
            "..2026_12_04_10_10_00.3",
            &[
                ("SecOpsPlatform.soc.yaml", PLATFORM.to_owned()),
                ("DetectionRule.r.yaml", rule("second")),
            ],
        );
        assert_ne!(fingerprint(dir.path()).unwrap(), before);
        let (set, _) = load(dir.path()).unwrap();
        assert_eq!(set.rules.len(), 1);
    }

    #[test]
    fn a_plain_directory_is_read_recursively_and_its_edits_change_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rules")).unwrap();
        std::fs::write(dir.path().join("platform.yaml"), PLATFORM).unwrap();
        std::fs::write(dir.path().join("rules/r.yaml"), rule("first")).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a resource").unwrap();
        let (set, problems) = load(dir.path()).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!((set.platforms.len(), set.rules.len()), (1, 1));
        let before = fingerprint(dir.path()).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "still not a resource").unwrap();
        assert_eq!(fingerprint(dir.path()).unwrap(), before);
        std::fs::write(dir.path().join("rules/r.yaml"), rule("second")).unwrap();
        assert_ne!(fingerprint(dir.path()).unwrap(), before);
    }
}
