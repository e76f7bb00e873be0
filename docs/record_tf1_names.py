"""Record the public names of TensorFlow's TF1 API (``tf.compat.v1``) into docs/tf1_names.json.

Run where TensorFlow is installed: ``python docs/record_tf1_names.py``.  ``python -m
compiler.frontend.api_table`` compares Kiln's namespace with this list to write the "not
provided yet" part of docs/api.md.  Sub-modules are namespaces of their own, not names.
"""
import json
import os
import sys
import types

NAMESPACES = ["tf", "tf.nn", "tf.nn.rnn_cell", "tf.train", "tf.layers", "tf.losses", "tf.math",
              "tf.summary", "tf.data", "tf.metrics", "tf.image", "tf.random", "tf.initializers",
              "tf.app", "tf.flags", "tf.gfile", "tf.io.gfile", "tf.logging", "tf.errors", "tf.linalg",
              "tf.dtypes", "tf.manip"]


def public_names(module) -> list:
    return sorted(a for a in dir(module) if not a.startswith("_")
                  and not isinstance(getattr(module, a, None), types.ModuleType))


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as real
    import tensorflow.compat.v1 as tf

    table = {}
    for path in NAMESPACES:
        module = tf
        for part in path.split(".")[1:]:
            module = getattr(module, part)
        table[path] = public_names(module)
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tf1_names.json")
    with open(out, "w") as f:
        json.dump({"tensorflow": real.__version__, "names": table}, f, indent=0, sort_keys=True)
        f.write("\n")
    print(f"{out}: {sum(map(len, table.values()))} names", file=sys.stderr)


if __name__ == "__main__":
    main()
