# Shared by the ensure-* and stop-* scripts: where a service's state lives, logging, and
# how a recorded process is recognised and stopped.
#
# The state directory is under /tmp rather than ~/.cache because PostgreSQL runs as the
# unprivileged postgres user, which cannot enter root's home.

STATE_DIR="${KASTELL_SERVICES_DIR:-${TMPDIR:-/tmp}/kastell-services}"

log() { echo "services: $*" >&2; }

# A port the kernel reports free on 127.0.0.1 right now. Another process may still take
# it before the service binds; the service then fails to start and says so in its log.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Is $1 alive and running the binary $2?
is_ours() {
  local pid="$1" bin="$2" exe
  [ -n "$pid" ] && [ -n "$bin" ] || return 1
  exe="$(readlink "/proc/$pid/exe" 2>/dev/null)" || return 1
  [ "${exe% (deleted)}" = "$(readlink -f "$bin")" ]
}

# Waits until something accepts TCP connections on 127.0.0.1:$1, at most $2 seconds.
wait_for_port() {
  local port="$1" seconds="$2"
  for _ in $(seq 1 $((seconds * 5))); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      return 0
    fi
    sleep 0.2
  done
  return 1
}

# Installs Debian package $1 with apt-get. Returns 3 when it cannot (not root, no apt, the
# install fails), so the caller can report the service as unavailable.
apt_install() {
  local package="$1"
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    log "$package is missing and cannot be installed here (needs root and apt-get)"
    return 3
  fi
  log "installing $package from Debian's packages"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package"; } >&2; then
    log "apt-get install $package failed"
    return 3
  fi
}
