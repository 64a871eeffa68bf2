# shellcheck shell=bash
# Sourced by tools/bootstrap.sh and tools/run-sanitizers: installs Debian
# packages, as root or through sudo. apt-get update only runs when something
# is to be installed, so a machine that has everything makes no network call.
_lmr_log() { echo "[bootstrap] $*" >&2; }

_lmr_apt_install() {
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null \
      || { _lmr_log "need root or sudo to install: $*"; return 1; }
    sudo=(sudo)
  fi
  _lmr_log "installing Debian packages: $*"
  "${sudo[@]}" apt-get update -qq || return
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}
