"""Fixtures for the tests that run LMCache 0.5.6 itself.

Collected only where lmcache imports (tests/conftest.py): tools/run-tests
runs them in .venv-lmcache (benchmark/lmcache_venv.py), with this source
tree on PYTHONPATH. tests/conftest.py has turned LMCache's usage reports
off before anything here imports it.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import logging
import os
import shutil
import threading
from typing import Callable

import pytest

# A test that runs longer than this is hung (LMCache waits without time
# limits in places: RemoteBackend.contains() and close()): the traceback of
# every thread goes to stderr and the run ends, instead of hanging the test
# command. pytest has no timeout plug-in here.
HANG_S = 120

# Where LMCache's PrometheusLogger makes its directory when
# PROMETHEUS_MULTIPROC_DIR is not set (lmcache/observability.py).
_LMCACHE_PROMETHEUS_DIR = "/tmp/lmcache_prometheus"

# How long a test waits for one LMCache backend's close() (some of
# LMCache's own connectors deadlock in it).
CLOSE_WAIT_S = 10.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lmcache: runs LMCache itself (needs .venv-lmcache)")


@pytest.fixture(scope="session")
def real_stderr(request):
    """A copy of the test process's own stderr: pytest's output capture
    holds fd 2 while a test runs, and a hang guard that ends the process
    must not write the tracebacks where nobody will read them."""
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if capman is None:
        fd = os.dup(2)
    else:
        with capman.global_and_fixture_disabled():
            fd = os.dup(2)
    yield fd
    os.close(fd)


@pytest.fixture(autouse=True)
def hang_guard(real_stderr):
    """After HANG_S seconds in one test (its fixtures included): every
    thread's traceback to stderr, then the process exits (status 1)."""
    faulthandler.dump_traceback_later(HANG_S, exit=True, file=real_stderr)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session", autouse=True)
def lmcache_prometheus_dir():
    """Removes the (empty) directory LMCache's metrics make, if this
    session made it, and LMCache's PROMETHEUS_MULTIPROC_DIR setting, which
    it leaves in os.environ for every later subprocess."""
    env_before = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    path = env_before or _LMCACHE_PROMETHEUS_DIR
    existed = os.path.exists(path)
    yield
    if env_before is None:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if not existed:
        shutil.rmtree(path, ignore_errors=True)


def close_bounded(closables: dict) -> list:
    """Calls each value's close() on a thread of its own, waiting at most
    CLOSE_WAIT_S for each; returns the names of those still closing."""
    stuck = []
    for name, obj in closables.items():
        thread = threading.Thread(target=obj.close, name=f"close-{name}", daemon=True)
        thread.start()
        thread.join(CLOSE_WAIT_S)
        if thread.is_alive():
            stuck.append(name)
    return stuck


@pytest.fixture
def lmcache_loop():
    """An event loop running on a thread of its own, as LMCache's storage
    manager runs one for all its backends."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="storage-manager-event-loop",
                              daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(CLOSE_WAIT_S)
    if not thread.is_alive():
        loop.close()


@pytest.fixture
def make_backends(lmcache_loop) -> Callable:
    """make_backends(config, metadata): LMCache's CreateStorageBackends on
    lmcache_loop; every backend made is closed (bounded) after the test,
    which fails if one does not close."""
    from lmcache.v1.storage_backend import CreateStorageBackends

    made: list = []

    def make(config, metadata) -> dict:
        backends = CreateStorageBackends(config, metadata, lmcache_loop)
        made.append(backends)
        return backends

    yield make
    stuck: list = []
    # Remote backends first: they read into the local CPU backend's memory.
    for backends in made:
        order = sorted(backends, key=lambda name: name == "LocalCPUBackend")
        stuck += close_bounded({name: backends[name] for name in order})
    assert not stuck, f"close() did not return within {CLOSE_WAIT_S} s: {stuck}"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.DEBUG) -> list:
        return [r.getMessage() for r in self.records if r.levelno >= level]


@pytest.fixture
def lmcache_log():
    """lmcache_log(logger_name): the records that logger emits from now on
    to the end of the test. LMCache's loggers do not propagate (its
    init_logger), so caplog sees none of them."""
    attached: list = []

    def watch(name: str) -> _Records:
        handler = _Records()
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        attached.append((logger, handler))
        return handler

    yield watch
    for logger, handler in attached:
        logger.removeHandler(handler)


@pytest.fixture(autouse=True)
def lmcache_reference_counts(lmcache_log):
    """Fails a test during which LMCache reported a reference-count error:
    a release too many (it sets the negative count back to 0 and says so)
    or one too few (its MemoryObj.__del__ frees a dropped object that
    still counts references, and says so: the memory comes back, so only
    this warning shows the leak)."""
    records = lmcache_log("lmcache.v1.memory_management")
    yield
    gc.collect()  # runs the __del__ of dropped objects in reference cycles
    bad = [m for m in records.messages(logging.WARNING) if "count" in m.lower()]
    assert not bad, bad
