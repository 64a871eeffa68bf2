# shellcheck shell=bash
# Sourced, not run: `. tools/bootstrap.sh`. Leaves the shell in the repo root
# with the project's venv (.venv) active and the project built and installed.
#
# Idempotent: on a machine that has everything, with the sources unchanged
# since the last build, it changes nothing (about 1 s). It sets no shell
# options, so sourcing it from an interactive shell is safe; each step that can fail returns, so it stops there with
# or without `set -e` (the entry scripts use `set -euo pipefail`).

# shellcheck source=SCRIPTDIR/apt.sh
. "$(dirname "${BASH_SOURCE[0]}")/apt.sh" || return
cd "$(dirname "${BASH_SOURCE[0]}")/.." || return

# System packages: a fresh machine lacks Redis; the compilers and cmake are
# normally there already but are cheap to check. clang and its sanitizer
# runtimes are not needed here: tools/run-sanitizers installs them itself.
_lmr_apt=()
command -v redis-server >/dev/null || _lmr_apt+=(redis-server)
command -v redis-cli >/dev/null || _lmr_apt+=(redis-tools)
command -v cmake >/dev/null || _lmr_apt+=(cmake)
{ command -v cc && command -v c++ && command -v make; } >/dev/null \
  || _lmr_apt+=(build-essential)
# OpenSSL: headers and libraries for csrc/tls.c, and the openssl command
# that makes the TLS tests' certificates.
dpkg -s libssl-dev >/dev/null 2>&1 || _lmr_apt+=(libssl-dev)
command -v openssl >/dev/null || _lmr_apt+=(openssl)
# Python: the venv module (Debian ships it apart, as python3-venv) and the
# headers the extension compiles against (python3-dev). Only checked for
# Debian's own python3; another python3 (pyenv, conda) comes with both.
if [ "$(command -v python3)" = /usr/bin/python3 ]; then
  python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || _lmr_apt+=(python3-venv)
  python3 -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || _lmr_apt+=(python3-dev)
elif ! command -v python3 >/dev/null; then
  _lmr_apt+=(python3 python3-venv python3-dev)
fi
if [ "${#_lmr_apt[@]}" -gt 0 ]; then
  _lmr_apt_install "${_lmr_apt[@]}" || return
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

# An editable install: the extension is built in place, so lmcache_redis/
# in the source tree holds the compiled _core too, and `import lmcache_redis`
# works from the repo root as from anywhere else. Redone only when what the
# build reads changed (a hash of it is kept in $LMR_VENV/.lmr-build-stamp), or
# when the built module cannot be imported; LMR_REBUILD=1 forces it.
_lmr_stamp="$(
  { python -c 'import sys; print(sys.version)'
    find csrc lmcache_redis -type f \( -name '*.c' -o -name '*.h' -o -name '*.txt' \
      -o -name '*.pyx' -o -name '*.pxd' \) ! -name '_core.c' -print0 | sort -z | xargs -0 sha256sum
    sha256sum setup.py pyproject.toml
  } | sha256sum | cut -d' ' -f1)"
if [ "${LMR_REBUILD:-0}" = 1 ] \
  || [ "$(cat "$LMR_VENV/.lmr-build-stamp" 2>/dev/null)" != "$_lmr_stamp" ] \
  || ! (cd / && python -c 'import lmcache_redis._core') >/dev/null 2>&1 \
  || ! python -c 'import lmcache_redis._core' >/dev/null 2>&1; then
  _lmr_log "building lmcache_redis in place and installing it (editable, with [dev]) into $LMR_VENV (~30 s)"
  rm -f "$LMR_VENV/.lmr-build-stamp"
  python -m pip install -q -e '.[dev]' || return
  echo "$_lmr_stamp" >"$LMR_VENV/.lmr-build-stamp"
else
  _lmr_log "lmcache_redis is up to date in $LMR_VENV (sources unchanged since the last build)"
fi
unset _lmr_stamp
_lmr_log "ready"
