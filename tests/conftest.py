"""Every test builds its ops in a fresh default graph; ``two_threads`` gives the native tests a team of two."""
import ctypes

import pytest

from compiler import tf


@pytest.fixture(autouse=True)
def fresh_graph():
    with tf.Graph().as_default() as g:
        yield g


@pytest.fixture
def two_threads():
    """A team of two threads for the parallel tests, whatever the machine (libgomp ICV)."""
    gomp = ctypes.CDLL("libgomp.so.1")
    before = gomp.omp_get_max_threads()
    gomp.omp_set_num_threads(2)
    yield
    gomp.omp_set_num_threads(before)


def pytest_configure(config):
    """API-semantics tests run tf.Session on the reference interpreter (compiling each of
    ~1000 tiny graphs would take minutes); compiled-path tests select the compiled backend
    explicitly."""
    import os
    import tempfile

    os.environ.setdefault("KILN_BACKEND", "interpreter")
    # The compile cache of this test session (inherited by subprocesses): tests never read
    # or fill ~/.cache/kiln, and start from an empty cache.
    config._kiln_cache = tempfile.mkdtemp(prefix="kiln-test-cache-")
    os.environ["KILN_CACHE_DIR"] = config._kiln_cache


def pytest_unconfigure(config):
    import shutil

    if getattr(config, "_kiln_cache", None):
        shutil.rmtree(config._kiln_cache, ignore_errors=True)
