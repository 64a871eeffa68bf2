"""Builds the one extension, lmcache_redis._core: the Cython face plus the C
core, whose source list (csrc/sources.txt) CMakeLists.txt reads too.

LMR_SANITIZE=address,undefined (or thread) builds with those sanitizers;
LMR_DEBUG=1 builds with -O0 -g. Such a build uses its own build directory
(build/py-<flavour>): setuptools decides what to recompile by timestamps only,
so sharing build/ would let a sanitized build reuse plain objects, or the next
plain `pip install .` pick up a sanitized _core.so.
"""

import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

ROOT = Path(__file__).parent


def c_sources():
    lines = (ROOT / "csrc" / "sources.txt").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


compile_args = ["-std=c11", "-Wall", "-Wextra", "-pthread"]
link_args = ["-pthread"]
debug = bool(os.environ.get("LMR_DEBUG"))
compile_args += ["-O0", "-g"] if debug else ["-O2"]
sanitize = os.environ.get("LMR_SANITIZE")
if sanitize:
    # As in CMakeLists.txt: no recovery, so a report fails the test. And no
    # -fwrapv (from CPython's CFLAGS), which makes signed overflow defined and
    # so hides it from UBSan; the CMake build never had it.
    flags = [f"-fsanitize={sanitize}", "-fno-sanitize-recover=all", "-fno-wrapv",
             "-fno-omit-frame-pointer", "-g"]
    compile_args += flags
    link_args += flags
flavour = "-".join(filter(None, [sanitize.replace(",", "-") if sanitize else "", "debug" if debug else ""]))
options = {"build": {"build_base": f"build/py-{flavour}"}} if flavour else {}

extension = Extension(
    "lmcache_redis._core",
    sources=["lmcache_redis/_core.pyx", *c_sources()],
    include_dirs=["csrc"],
    define_macros=[("_GNU_SOURCE", None)],
    # TLS (csrc/tls.c): OpenSSL, from Debian's libssl-dev.
    libraries=["ssl", "crypto"],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

setup(ext_modules=cythonize([extension], language_level=3), options=options)
