"""Every test builds its ops in a fresh default graph."""
import pytest

from compiler import tf


@pytest.fixture(autouse=True)
def fresh_graph():
    with tf.Graph().as_default() as g:
        yield g
