"""RNN cells and recurrences vs TF goldens (tests/goldens/rnn_goldens.npz, tests/goldens/record_rnn.py).

The graphs of tests/rnn_cases.py are rebuilt in Kiln, TF's weights loaded by name, and the
outputs, final states and gradients (w.r.t. inputs and weights) compared; the variable
names must equal the ones TF created (so a TF checkpoint's names match).
"""
import os
import types

import numpy as np
import pytest

from compiler import tf
from tests import rnn_cases

GOLDENS = np.load(os.path.join(os.path.dirname(__file__), "goldens", "rnn_goldens.npz"))
KILN = types.SimpleNamespace(tf=tf, cell=tf.nn.rnn_cell, nn=tf.nn)
CONTRIB_NN = types.SimpleNamespace(static_rnn=tf.contrib.rnn.static_rnn,
                                   static_bidirectional_rnn=tf.contrib.rnn.static_bidirectional_rnn,
                                   dynamic_rnn=tf.nn.dynamic_rnn,
                                   bidirectional_dynamic_rnn=tf.nn.bidirectional_dynamic_rnn)
CONTRIB = types.SimpleNamespace(tf=tf, cell=tf.contrib.rnn, nn=CONTRIB_NN)
RTOL, ATOL = 1e-5, 1e-6


def golden(case, kind):
    """{name: array} of one kind (weight, grad_inputs, grad_weights) for ``case``."""
    prefix = f"{case}/{kind}/"
    return {k[len(prefix):]: GOLDENS[k] for k in GOLDENS.files if k.startswith(prefix)}


@pytest.mark.parametrize("case", rnn_cases.CASES, ids=lambda c: c.__name__)
def test_matches_tf(case):
    key = case.__name__
    got = rnn_cases.run_case(KILN, case, weights=golden(key, "weight"))
    assert got["names"] == list(GOLDENS[f"{key}/names"]), "variable names differ from TF's"
    outs = [GOLDENS[f"{key}/out/{i}"] for i in range(len(got["outputs"]))]
    assert f"{key}/out/{len(outs)}" not in GOLDENS.files, "Kiln returned fewer outputs than TF"
    for i, (a, b) in enumerate(zip(got["outputs"], outs)):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=f"output {i}")
    for kind in ("grad_inputs", "grad_weights"):
        want = golden(key, kind)
        assert sorted(got[kind]) == sorted(want)
        for name, value in want.items():
            np.testing.assert_allclose(got[kind][name], value, rtol=RTOL, atol=ATOL, err_msg=f"{kind} {name}")


@pytest.mark.parametrize("case", [rnn_cases.basic_rnn_static, rnn_cases.bidi_static_seqlen,
                                  rnn_cases.multi_lstm], ids=lambda c: c.__name__)
def test_contrib_rnn_names_match_tf(case):
    """tf.contrib.rnn spells the same cells and static_rnn functions."""
    key = case.__name__
    got = rnn_cases.run_case(CONTRIB, case, weights=golden(key, "weight"))
    assert got["names"] == list(GOLDENS[f"{key}/names"])
    np.testing.assert_allclose(got["outputs"][0], GOLDENS[f"{key}/out/0"], rtol=RTOL, atol=ATOL)
