"""Every test builds its ops in a fresh default graph."""
import pytest

from compiler import tf


@pytest.fixture(autouse=True)
def fresh_graph():
    with tf.Graph().as_default() as g:
        yield g


def pytest_configure(config):
    """API-semantics tests run tf.Session on the reference interpreter (compiling each of
    ~1000 tiny graphs would take minutes); compiled-path tests select the compiled backend
    explicitly."""
    import os

    os.environ.setdefault("KILN_BACKEND", "interpreter")
