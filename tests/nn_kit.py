"""NumPy references for the tf.nn convolution and pooling tests (tests/test_nn_ops.py,
tests/test_nn_conv_ops.py): padding, direct convolution, pools, the seed's example image."""
import numpy as np


def np_pads(size, k, s, d, padding):
    eff = (k - 1) * d + 1
    if padding == "VALID":
        return 0, 0, (size - eff) // s + 1
    out = -(-size // s)
    total = max((out - 1) * s + eff - size, 0)
    return total // 2, total - total // 2, out


def np_conv2d(x, w, s=1, padding="VALID", d=1, depthwise=False):
    """Direct loops over output pixels (fine for the small test shapes)."""
    n, h, wd, c = x.shape
    kh, kw = w.shape[:2]
    t, _, oh = np_pads(h, kh, s, d, padding)
    left, _, ow = np_pads(wd, kw, s, d, padding)
    xp = np.zeros((n, h + 2 * kh * d, wd + 2 * kw * d, c), x.dtype)
    xp[:, t:t + h, left:left + wd] = x
    outc = c * w.shape[3] if depthwise else w.shape[3]
    out = np.zeros((n, oh, ow, outc), np.float64)
    for i in range(oh):
        for j in range(ow):
            win = xp[:, i * s:i * s + (kh - 1) * d + 1:d, j * s:j * s + (kw - 1) * d + 1:d, :]
            if depthwise:
                out[:, i, j] = np.einsum("nhwc,hwcm->ncm", win, w).reshape(n, -1)
            else:
                out[:, i, j] = np.einsum("nhwc,hwco->no", win, w)
    return out


def np_pool(x, k, s, padding, op):
    n, h, w, c = x.shape
    t, _, oh = np_pads(h, k, s, 1, padding)
    left, _, ow = np_pads(w, k, s, 1, padding)
    out = np.zeros((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * s - t, j * s - left
            win = x[:, max(r0, 0):r0 + k, max(c0, 0):c0 + k, :]
            out[:, i, j] = win.max(axis=(1, 2)) if op == "max" else win.mean(axis=(1, 2))
    return out


SEED_IMAGE = np.array([1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0],
                      np.float32).reshape(1, 5, 5, 1)
SEED_FILTER = np.array([1, 0, 1, 0, 1, 0, 1, 0, 1], np.float32).reshape(3, 3, 1, 1)
