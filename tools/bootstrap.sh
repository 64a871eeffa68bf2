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

# Installs Debian packages, as root or through sudo.
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

# Links an empty libFuzzer target: clang and its runtimes are usable.
_lmr_have_libfuzzer() {
  local d rc
  d="$(mktemp -d)" || return
  printf 'int LLVMFuzzerTestOneInput(const char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' \
    | clang -x c -fsanitize=fuzzer,address,undefined - -o "$d/t" >/dev/null 2>&1
  rc=$?
  rm -rf "$d"
  return "$rc"
}

# System packages: a fresh machine lacks Redis; the compilers and cmake are
# normally there already but are cheap to check. clang is for
# tools/run-sanitizers (libFuzzer, TSan); gcc's sanitizer runtimes come with
# gcc. apt-get update only runs when something is missing, so the common case
# makes no network calls.
_lmr_apt=()
command -v redis-server >/dev/null || _lmr_apt+=(redis-server)
command -v redis-cli >/dev/null || _lmr_apt+=(redis-tools)
command -v cmake >/dev/null || _lmr_apt+=(cmake)
{ command -v cc && command -v c++ && command -v make; } >/dev/null \
  || _lmr_apt+=(build-essential)
command -v clang >/dev/null || _lmr_apt+=(clang)
# OpenSSL: headers and libraries for csrc/tls.c, and the openssl command
# that makes the TLS tests' certificates.
dpkg -s libssl-dev >/dev/null 2>&1 || _lmr_apt+=(libssl-dev)
command -v openssl >/dev/null || _lmr_apt+=(openssl)
if [ "${#_lmr_apt[@]}" -gt 0 ]; then
  _lmr_apt_install "${_lmr_apt[@]}" || return
fi
unset _lmr_apt
# clang's sanitizer and libFuzzer runtimes are in libclang-rt-N-dev, only
# recommended by clang-N (so not pulled in by --no-install-recommends).
if ! _lmr_have_libfuzzer; then
  _lmr_apt_install "libclang-rt-$(clang -dumpversion | cut -d. -f1)-dev" || return
  _lmr_have_libfuzzer || { _lmr_log "clang cannot link a libFuzzer target"; return 1; }
fi

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
