"""Record TF's values for tests/rnn_cases.py into tests/goldens/rnn_goldens.npz (run with real TF).

    /work/tfenv/bin/python tests/goldens/record_rnn.py

For each case: the weight names TF creates, the weights drawn (seeded), the outputs, and
the gradients w.r.t. the float inputs and the weights.  TF 2.x hides the TF1 cells behind
Keras 3, so they are taken from the legacy modules TF still ships.
"""
import os
import sys
import types

import numpy as np
import tensorflow.compat.v1 as tf
from tensorflow.python.keras.layers.legacy_rnn import rnn_cell_impl
from tensorflow.python.ops import rnn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import rnn_cases  # noqa: E402

OUT = os.path.join(HERE, "rnn_goldens.npz")


def main():
    tf.disable_v2_behavior()
    nn = types.SimpleNamespace(static_rnn=rnn.static_rnn, dynamic_rnn=rnn.dynamic_rnn,
                               static_bidirectional_rnn=rnn.static_bidirectional_rnn,
                               bidirectional_dynamic_rnn=rnn.bidirectional_dynamic_rnn)
    api = types.SimpleNamespace(tf=tf, cell=rnn_cell_impl, nn=nn)
    arrays = {}
    for case in rnn_cases.CASES:
        got = rnn_cases.run_case(api, case)
        key = case.__name__
        arrays[f"{key}/names"] = np.array(got["names"])
        for name, value in got["weights"].items():
            arrays[f"{key}/weight/{name}"] = value
        for i, value in enumerate(got["outputs"]):
            arrays[f"{key}/out/{i}"] = np.asarray(value)
        for kind in ("grad_inputs", "grad_weights"):
            for name, value in got[kind].items():
                arrays[f"{key}/{kind}/{name}"] = np.asarray(value)
        print(key, got["names"])
    np.savez_compressed(OUT, **arrays)
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
