# shellcheck shell=bash
# Sourced, not run: `. tools/bootstrap.sh`. Leaves the shell in the repo root
# with the project's venv (.venv) active and the project freshly installed.
#
# Idempotent: on a machine that has everything it only reinstalls the
# package. It sets no shell options, so sourcing it from an interactive
# shell is safe; each step that can fail returns, so it stops there with
# or without `set -e` (the entry scripts use `set -euo pipefail`).

_lmr_log() { echo "[bootstrap] $*" >&2; }

cd "$(dirname "${BASH_SOURCE[0]}")/.." || return

# System packages: a fresh machine lacks Redis; the compilers and cmake are
# normally there already but are cheap to check. apt-get update only runs
# when something is missing, so the common case makes no network calls.
_lmr_apt=()
command -v redis-server >/dev/null || _lmr_apt+=(redis-server)
command -v redis-cli >/dev/null || _lmr_apt+=(redis-tools)
command -v cmake >/dev/null || _lmr_apt+=(cmake)
{ command -v cc && command -v c++ && command -v make; } >/dev/null \
  || _lmr_apt+=(build-essential)
if [ "${#_lmr_apt[@]}" -gt 0 ]; then
  _lmr_sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null \
      || { _lmr_log "need root or sudo to install: ${_lmr_apt[*]}"; return 1; }
    _lmr_sudo=(sudo)
  fi
  _lmr_log "installing Debian packages: ${_lmr_apt[*]}"
  "${_lmr_sudo[@]}" apt-get update -qq || return
  "${_lmr_sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${_lmr_apt[@]}" \
    >/dev/null || return
  unset _lmr_sudo
fi
unset _lmr_apt

export LMR_VENV="$PWD/.venv"
if [ ! -x "$LMR_VENV/bin/python" ]; then
  _lmr_log "creating $LMR_VENV"
  python3 -m venv "$LMR_VENV" || return
fi
# shellcheck disable=SC1091
. "$LMR_VENV/bin/activate" || return

if ! python -c 'import sys, pip; sys.exit(int(pip.__version__.split(".")[0]) < 23)'; then
  _lmr_log "upgrading pip"
  python -m pip install -q --upgrade pip || return
fi

# A regular (non-editable) install, redone every time: pip always rebuilds a
# local directory, so C and Cython changes are picked up (~20 s).
_lmr_log "installing lmcache_redis[dev] into $LMR_VENV"
python -m pip install -q '.[dev]' || return
_lmr_log "ready"
