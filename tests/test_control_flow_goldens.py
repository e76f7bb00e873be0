"""Control flow vs TensorFlow: forward values and gradients of tests/goldens/control_flow_cases.py.

The goldens (tests/goldens/control_flow.npz) were recorded with TensorFlow by
tests/goldens/record_control_flow.py; this test needs no TensorFlow.
"""
from __future__ import annotations

import os
import sys

import numpy as np
import pytest

from compiler import tf

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "goldens")
sys.path.insert(0, HERE)
import control_flow_cases  # noqa: E402

GOLDENS = np.load(os.path.join(HERE, "control_flow.npz"))


@pytest.mark.parametrize("name", sorted(control_flow_cases.CASES))
def test_matches_tensorflow(name):
    with tf.Graph().as_default():
        runs = control_flow_cases.CASES[name](tf)
        with tf.Session(config={"backend": "interpreter"}) as sess:
            for r, (feeds, fetches) in enumerate(runs):
                for f, value in enumerate(sess.run(fetches, feeds)):
                    want = GOLDENS[f"{name}/{r}/{f}"]
                    assert np.asarray(value).dtype == want.dtype, (name, r, f)
                    np.testing.assert_allclose(value, want, rtol=1e-10, atol=1e-12, err_msg=f"{name} run {r} fetch {f}")


def test_every_golden_is_checked():
    keys = {k.split("/")[0] for k in GOLDENS.files}
    assert keys == set(control_flow_cases.CASES)
