"""Run one tutorial-style TF1 program under TensorFlow or Kiln: only the import changes.

    python tests/programs/harness.py {tf|kiln} PROGRAM.py [program flags...]

This is how the issue measured ports: the program's ``import tensorflow.compat.v1 as tf``
becomes ``from compiler import tf`` and nothing else in it is touched.  Two things are set
up around it so TensorFlow's and Kiln's printed numbers can be compared:

* **Identical initial weights.** Each framework draws its own random initial values, so
  right after a run of the op ``tf.global_variables_initializer()`` returned, every
  trainable variable is overwritten (``Variable.load``) with values drawn from a numpy
  generator seeded by the variable's name: equal names and shapes get equal values (and a
  name Kiln gets wrong fails the comparison).
* **TF 1.x's ``tf.contrib`` on TensorFlow 2.** ``tf.compat.v1`` has no contrib; for a run
  under TensorFlow the contrib names the programs use are mapped to their TF 1.x homes.

Needs only numpy and one of the frameworks, so the golden recorder can run it with
TensorFlow where Kiln is not installed.
"""
from __future__ import annotations

import os
import sys
import types
import zlib

import numpy as np

TF_IMPORT = "import tensorflow.compat.v1 as tf"
KILN_IMPORT = "from compiler import tf"
HERE = os.path.dirname(os.path.abspath(__file__))


def seeded_value(name: str, shape, dtype) -> np.ndarray:
    """Glorot-uniform values for a weight matrix, small uniform ones for a vector; the seed
    is the variable's name, so both frameworks get the same numbers."""
    rng = np.random.RandomState(zlib.crc32(name.encode()))
    shape = [int(d) for d in shape]
    if len(shape) >= 2:
        fan_in, fan_out = int(np.prod(shape[:-1])), shape[-1]
        limit = np.sqrt(6.0 / (fan_in + fan_out))
    else:
        limit = 0.05
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def _flat(fetches):
    if isinstance(fetches, dict):
        fetches = list(fetches.values())
    if isinstance(fetches, (list, tuple)):
        return [f for item in fetches for f in _flat(item)]
    return [fetches]


def install_seeded_init(tf) -> None:
    """Make each Session load the seeded weights after running a global initializer."""
    init_ops = []
    make_init = tf.global_variables_initializer

    def global_variables_initializer():
        op = make_init()
        init_ops.append(op)
        return op

    def load_seeded(sess):
        for v in sess.graph.get_collection(tf.GraphKeys.TRAINABLE_VARIABLES):
            name = v.name.split(":")[0]
            if name.endswith("gamma"):  # batch-norm scales keep their ones
                continue
            v.load(seeded_value(name, v.shape.as_list(), v.dtype.base_dtype.as_numpy_dtype), sess)

    def seeded(base):
        class Seeded(base):
            def run(self, fetches, *args, **kwargs):
                out = super().run(fetches, *args, **kwargs)
                if any(f is op for f in _flat(fetches) for op in init_ops):
                    load_seeded(self)
                return out
        Seeded.__name__ = base.__name__
        return Seeded

    tf.global_variables_initializer = global_variables_initializer
    tf.Session = seeded(tf.Session)
    tf.InteractiveSession = seeded(tf.InteractiveSession)


def tensorflow_v1():
    """TensorFlow's tf.compat.v1 with the TF 1.x contrib names the programs use."""
    import tensorflow.compat.v1 as tf

    tf.disable_v2_behavior()

    rnn = types.SimpleNamespace(
        BasicLSTMCell=tf.nn.rnn_cell.BasicLSTMCell, BasicRNNCell=tf.nn.rnn_cell.BasicRNNCell,
        LSTMCell=tf.nn.rnn_cell.LSTMCell, GRUCell=tf.nn.rnn_cell.GRUCell,
        MultiRNNCell=tf.nn.rnn_cell.MultiRNNCell, DropoutWrapper=tf.nn.rnn_cell.DropoutWrapper,
        LSTMStateTuple=tf.nn.rnn_cell.LSTMStateTuple, static_rnn=tf.nn.static_rnn,
        static_bidirectional_rnn=tf.nn.static_bidirectional_rnn)
    layers = types.SimpleNamespace(flatten=tf.layers.flatten,
                                   xavier_initializer=tf.glorot_uniform_initializer)
    tf.contrib = types.SimpleNamespace(rnn=rnn, layers=layers)
    return tf


def load_framework(name: str):
    if name == "kiln":
        from compiler import tf
        return tf
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.layers / rnn_cell need tf_keras on TF 2.16+
    return tensorflow_v1()


def program_source(path: str, framework: str) -> str:
    source = open(path).read()
    if TF_IMPORT not in source:
        raise SystemExit(f"{path}: expected the line '{TF_IMPORT}'")
    return source.replace(TF_IMPORT, KILN_IMPORT) if framework == "kiln" else source


def main(argv) -> int:
    framework, path, *flags = argv
    tf = load_framework(framework)
    install_seeded_init(tf)
    source = program_source(path, framework)
    sys.argv = [path, *flags]
    sys.path.insert(0, HERE)
    np.random.seed(0)
    program = types.ModuleType("__main__")  # tf.app.run() finds main() in sys.modules["__main__"]
    program.__file__ = path
    sys.modules["__main__"] = program
    try:
        exec(compile(source, path, "exec"), program.__dict__)
    except SystemExit as done:  # tf.app.run() ends with sys.exit(main(argv))
        return done.code if isinstance(done.code, int) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
