//! What several of the `kastell` process tests share: the repository, a copy of the
//! bundled example, and that example with a Sensor listening for HTTP.

use std::path::{Path, PathBuf};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The bundled example with one more Sensor, `suricata-http`, reading Suricata EVE over
/// HTTP on 127.0.0.1:`port`.
pub fn example_with_http_sensor(port: u16) -> tempfile::TempDir {
    let config = tempfile::tempdir().unwrap();
    copy_dir(&repo_root().join("examples/soc"), config.path());
    std::fs::write(
        config.path().join("http-sensor.yaml"),
        format!(
            "apiVersion: kastell.eu/v1alpha1\nkind: Sensor\n\
             metadata: {{name: suricata-http, namespace: soc}}\n\
             spec:\n  format: suricata-eve\n  transport:\n    type: http\n\
             \x20   port: {port}\n    bindAddress: 127.0.0.1\n"
        ),
    )
    .unwrap();
    config
}
