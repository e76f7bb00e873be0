"""The seed-002 CNN train step (``bench/kiln_models.build("cnn")``) as a model file, for
``kiln compile bench/cnn_model.py -o DIR`` (``bench/compile_time.py --model cnn``).

One entry ``step`` feeding x, labels and keep_prob, fetching the loss, running Adam.  The
graph seed is set, so the dropout op's seeds (compiled into the step) are the same in every
process and a rerun finds the artifact in the compile cache (unseeded random ops get fresh
seeds per process, as in TF1, which makes the step's code differ)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from kiln_models import build as build_model  # noqa: E402

from compiler import tf  # noqa: E402


def build(model="cnn"):
    """The ``step`` entry of ``model`` ("cnn" or "mlp")."""
    tf.set_random_seed(2)
    feeds, loss, train, _ = build_model(model)
    return {"step": {"feeds": feeds, "fetches": {"loss": loss}, "targets": [train]}}
