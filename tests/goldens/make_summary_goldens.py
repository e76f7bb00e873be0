"""Record what TensorFlow returns for tests/summary_cases.py into summary_tf.json.

Run where TensorFlow is installed (not needed by the tests):
    /work/tfenv/bin/python tests/goldens/make_summary_goldens.py
Non-image summaries are kept as TF's serialized bytes (base64); an image value as its tag,
size, colorspace and TF's PNG decoded by TF (PNG bytes depend on the zlib settings).
"""
import base64
import json
import os
import sys

import tensorflow.compat.v1 as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from summary_cases import build_all  # noqa: E402

tf.disable_v2_behavior()
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "summary_tf.json")


def _image_values(data: bytes) -> list:
    values = []
    for v in tf.Summary.FromString(data).value:
        pixels = tf.image.decode_png(v.image.encoded_image_string).eval()
        values.append({"tag": v.tag, "height": v.image.height, "width": v.image.width,
                       "colorspace": v.image.colorspace, "pixels": pixels.reshape(-1).tolist()})
    return values


def main():
    tensors = build_all(tf, text_as_tensor=True)
    golden = {"tensorflow": tf.__version__, "names": {k: t.name for k, t in tensors.items()}, "cases": {}}
    with tf.Session() as sess:
        values = sess.run(tensors)
        for key, data in values.items():
            record = {"bytes": base64.b64encode(data).decode()}
            if key.startswith("image_"):
                record = {"images": _image_values(data)}
            golden["cases"][key] = record
    with open(OUT, "w") as f:
        json.dump(golden, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
