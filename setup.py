"""Builds the one extension, lmcache_redis._core: the Cython face plus the C
core, whose source list (csrc/sources.txt) CMakeLists.txt reads too.

LMR_SANITIZE=address,undefined (or thread) builds with those sanitizers;
LMR_DEBUG=1 builds with -O0 -g.
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
compile_args += ["-O0", "-g"] if os.environ.get("LMR_DEBUG") else ["-O2"]
sanitize = os.environ.get("LMR_SANITIZE")
if sanitize:
    flags = [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-g"]
    compile_args += flags
    link_args += flags

extension = Extension(
    "lmcache_redis._core",
    sources=["lmcache_redis/_core.pyx", *c_sources()],
    include_dirs=["csrc"],
    define_macros=[("_GNU_SOURCE", None)],
    extra_compile_args=compile_args,
    extra_link_args=link_args,
)

setup(ext_modules=cythonize([extension], language_level=3))
