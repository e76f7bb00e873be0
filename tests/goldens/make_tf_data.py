"""Record tests/goldens/tf_data.json with real TensorFlow (needs TF; Kiln's tests do not).

    /work/tfenv/bin/python tests/goldens/make_tf_data.py   (from the repository root)
"""
import json
import pathlib
import sys

import tensorflow.compat.v1 as tf

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.tf_data_cases import CASES, run  # noqa: E402


def main():
    tf.disable_v2_behavior()
    goldens = {}
    for name, build in CASES.items():
        with tf.Graph().as_default():
            goldens[name] = run(tf, build(tf))
    out = ROOT / "tests" / "goldens" / "tf_data.json"
    out.write_text(json.dumps({"tensorflow": tf.__version__, "cases": goldens}, indent=1) + "\n")
    print(f"wrote {out} ({len(goldens)} cases)")


if __name__ == "__main__":
    main()
