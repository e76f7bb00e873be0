"""Record TensorFlow's results for the control-flow cases (needs TensorFlow; Kiln's tests do not).

    /work/tfenv/bin/python tests/goldens/record_control_flow.py

writes tests/goldens/control_flow.npz: key ``<case>/<run>/<fetch>`` for every case of
control_flow_cases.py.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import control_flow_cases  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "control_flow.npz")


def main():
    tf.disable_v2_behavior()
    goldens = {}
    for name, build in control_flow_cases.CASES.items():
        with tf.Graph().as_default():
            runs = build(tf)
            with tf.Session() as sess:
                for r, (feeds, fetches) in enumerate(runs):
                    for f, value in enumerate(sess.run(fetches, feeds)):
                        goldens[f"{name}/{r}/{f}"] = np.asarray(value)
    np.savez(OUT, **goldens)
    print(f"wrote {len(goldens)} arrays to {OUT}")


if __name__ == "__main__":
    main()
