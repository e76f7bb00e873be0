"""runtime.checkpoint: format, index, keep-N, integrity, crash safety, restore checks, Saver interop."""
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy

from runtime import checkpoint as ck

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _vars(step=0):
    return {"w": np.full((3, 4), step, np.float32), "b": np.arange(4, dtype=np.float64) + step,
            "global_step": np.array(step, np.int64), "w/Adam": np.ones((3, 4), np.float32) * 2}


class FakeState:
    """Stands in for runtime.State: variables() and write_variable()."""

    def __init__(self, values):
        self.values = {k: np.array(v) for k, v in values.items()}
        self.writes = []

    def variables(self):
        return {k: v.copy() for k, v in self.values.items()}

    def write_variable(self, name, value):
        self.writes.append(name)
        self.values[name] = np.array(value)


def test_round_trip_metadata_and_plain_safetensors(tmp_path):
    path = ck.save_checkpoint(tmp_path, _vars(7), 7, metadata={"lr": 0.1, "epoch": 2})
    assert path == str(tmp_path / "ckpt-7.safetensors")
    arrays, step, meta = ck.load_checkpoint(path)
    assert step == 7 and meta == {"lr": 0.1, "epoch": 2}
    for name, want in _vars(7).items():
        assert arrays[name].dtype == want.dtype and arrays[name].shape == want.shape
        np.testing.assert_array_equal(arrays[name], want)
    assert ck.load_checkpoint(str(tmp_path / "ckpt-7"))[1] == 7  # prefix works too
    plain = safetensors.numpy.load_file(path)  # an ordinary safetensors file
    assert sorted(plain) == sorted(_vars())
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_index_file_format_and_keep_n(tmp_path):
    for s in (1, 2, 3, 4):
        ck.save_checkpoint(tmp_path, _vars(s), s, keep=2)
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "ckpt-3.safetensors", "ckpt-4.safetensors"]
    assert (tmp_path / "checkpoint").read_text() == (
        'model_checkpoint_path: "ckpt-4"\n'
        'all_model_checkpoint_paths: "ckpt-3"\n'
        'all_model_checkpoint_paths: "ckpt-4"\n')
    assert ck.latest_checkpoint(tmp_path) == str(tmp_path / "ckpt-4.safetensors")
    ck.save_checkpoint(tmp_path, _vars(1), 1, keep=2)  # save order, not step order, decides
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "ckpt-1.safetensors", "ckpt-4.safetensors"]
    assert ck.latest_checkpoint(tmp_path).endswith("ckpt-1.safetensors")
    assert ck.latest_checkpoint(tmp_path / "missing") is None


def test_truncated_checkpoint_is_detected_and_previous_still_loads(tmp_path):
    ck.save_checkpoint(tmp_path, _vars(1), 1)
    newest = ck.save_checkpoint(tmp_path, _vars(2), 2)
    data = Path(newest).read_bytes()
    for cut in (3, 60, len(data) - 5):
        with open(newest, "wb") as f:
            f.write(data[:cut])
        with pytest.raises(ck.CheckpointError, match=r"ckpt-2\.safetensors is truncated"):
            ck.load_checkpoint(newest)
    assert ck.latest_checkpoint(tmp_path) == str(tmp_path / "ckpt-1.safetensors")
    state = FakeState(_vars(0))
    step, _ = ck.restore_state(state, tmp_path)  # a directory restores its newest good checkpoint
    assert step == 1
    np.testing.assert_array_equal(state.values["w"], np.full((3, 4), 1, np.float32))


def test_altered_or_foreign_files_are_detected(tmp_path):
    path = ck.save_checkpoint(tmp_path, _vars(3), 3)
    data = bytearray(Path(path).read_bytes())
    data[-3] ^= 0x01  # one bit of tensor data
    Path(path).write_bytes(bytes(data))
    with pytest.raises(ck.CheckpointError, match=r"ckpt-3\.safetensors was altered"):
        ck.load_checkpoint(path)
    Path(path).write_bytes(bytes(data) + b"xx")
    with pytest.raises(ck.CheckpointError, match="was altered: 2 unexpected bytes"):
        ck.load_checkpoint(path)
    foreign = tmp_path / "other.safetensors"
    safetensors.numpy.save_file({"w": np.zeros(2, np.float32)}, str(foreign))
    with pytest.raises(ck.CheckpointError, match="other.safetensors is not a Kiln checkpoint"):
        ck.load_checkpoint(foreign)
    foreign.write_bytes(b"\xff" * 32)
    with pytest.raises(ck.CheckpointError, match="corrupt or not a safetensors checkpoint"):
        ck.load_checkpoint(foreign)
    with pytest.raises(ck.CheckpointError, match="not a valid checkpoint: no file"):
        ck.load_checkpoint(tmp_path / "nothing")


def test_step_in_header_is_covered_by_the_integrity_record(tmp_path):
    path = ck.save_checkpoint(tmp_path, _vars(5), 5)
    data = Path(path).read_bytes().replace(b'"step":"5"', b'"step":"6"')
    Path(path).write_bytes(data)
    with pytest.raises(ck.CheckpointError, match="altered"):
        ck.load_checkpoint(path)


def test_shape_dtype_and_missing_name_errors_change_nothing(tmp_path):
    path = ck.save_checkpoint(tmp_path, _vars(1), 1)
    state = FakeState({"w": np.zeros((4, 3), np.float32), "b": np.zeros(4)})
    with pytest.raises(ValueError, match=r"variable w from .*ckpt-1.safetensors.*shape \[3, 4\].*shape \[4, 3\]"):
        ck.restore_into(state, path)
    state = FakeState({"w": np.zeros((3, 4), np.float64), "b": np.zeros(4)})
    with pytest.raises(ValueError, match="has dtype float32, the variable has dtype float64"):
        ck.restore_into(state, path)
    state = FakeState({"b": np.zeros(4), "extra": np.zeros(1)})
    with pytest.raises(ValueError, match="Key extra not found in checkpoint .*ckpt-1.safetensors"):
        ck.restore_into(state, path)
    assert state.writes == []  # b passed its checks but nothing was written
    with pytest.raises(ValueError, match="unknown variable nope"):
        ck.restore_into(state, path, var_list=["nope"])


def test_partial_restore_with_var_list_and_name_map(tmp_path):
    path = ck.save_checkpoint(tmp_path, _vars(2), 2)
    state = FakeState({"bias": np.zeros(4), "w": np.zeros((3, 4), np.float32),
                       "new_head": np.zeros(5, np.float32)})
    names, step, _ = ck.restore_into(state, path, var_list=["bias", "w"], name_map={"b": "bias"})
    assert names == ["bias", "w"] and step == 2
    np.testing.assert_array_equal(state.values["bias"], np.arange(4) + 2.0)
    np.testing.assert_array_equal(state.values["new_head"], np.zeros(5))
    with pytest.raises(ValueError, match="maps both"):
        ck.restore_into(state, path, name_map={"b": "w", "w": "w"})


def test_save_state_uses_global_step_and_restores_everything(tmp_path):
    src = FakeState(_vars(9))
    path = ck.save_state(src, tmp_path)
    assert path.endswith("ckpt-9.safetensors")
    dst = FakeState(_vars(0))
    assert ck.restore_state(dst, path) == (9, None)
    assert sorted(dst.writes) == sorted(_vars())
    with pytest.raises(ValueError, match="no global_step"):
        ck.save_state(FakeState({"w": np.zeros(1)}), tmp_path)


_WRITER = """
import sys, numpy as np
from runtime import checkpoint as ck
d = sys.argv[1]
latest = ck.latest_checkpoint(d)
step = ck.load_checkpoint(latest)[1] if latest else 0
while True:
    step += 1
    v = np.full(200_000, step, np.float32)
    ck.save_checkpoint(d, {"w": v, "b": v[:7] * 2, "global_step": np.array(step)}, step, keep=3)
    print(step, flush=True)
"""


def test_sigkill_mid_write_leaves_a_complete_checkpoint(tmp_path):
    """Kill a writer at random moments (a test hook pauses inside the write); the newest
    complete checkpoint loads, every .safetensors file is complete, and saving resumes."""
    rng = random.Random(1234)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               KILN_CHECKPOINT_TEST_PAUSE="0.02")
    last_step, mid_write = 0, 0
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(tmp_path)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = int(proc.stdout.readline())  # one checkpoint completed in this run
        assert first == last_step + 1  # resumed from the newest complete checkpoint
        time.sleep(rng.uniform(0.0, 0.25))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
        latest = ck.latest_checkpoint(tmp_path)
        arrays, step, _ = ck.load_checkpoint(latest)
        assert step >= first and int(arrays["global_step"]) == step
        np.testing.assert_array_equal(arrays["w"], np.full(200_000, step, np.float32))
        assert latest == ck.read_index(tmp_path).model_checkpoint_path + ".safetensors"
        for name in os.listdir(tmp_path):  # no partial file is ever named like a checkpoint
            if name.endswith(".safetensors"):  # (one newer than the index may exist: killed
                got, s, _ = ck.load_checkpoint(tmp_path / name)  # before the index update)
                assert name == f"ckpt-{s}.safetensors" and got["w"][0] == s
        mid_write += any(n.endswith(".tmp") for n in os.listdir(tmp_path))
        last_step = step
    assert mid_write >= 1  # some kills did land inside a write
    assert len([n for n in os.listdir(tmp_path) if n.endswith(".safetensors")]) <= 4


def test_saver_files_load_with_the_runtime_and_vice_versa(tmp_path):
    from compiler import tf

    with tf.Graph().as_default():
        w = tf.Variable([[1.0, 2.0]], name="w")
        step = tf.train.get_or_create_global_step()
        sess = tf.Session()
        sess.run(tf.global_variables_initializer())
        os.makedirs(tmp_path / "saver")
        prefix = tf.train.Saver().save(sess, str(tmp_path / "saver" / "model"), global_step=4)
        latest = ck.latest_checkpoint(tmp_path / "saver")
        assert latest == prefix + ".safetensors"
        arrays, got_step, _ = ck.load_checkpoint(latest)
        assert got_step == 4 and sorted(arrays) == ["global_step", "w"]
        np.testing.assert_array_equal(arrays["w"], [[1.0, 2.0]])

        ck.save_checkpoint(tmp_path / "rt", {"w": np.array([[5.0, 6.0]], np.float32),
                                             "global_step": np.array(11, np.int64)}, 11)
        assert tf.train.latest_checkpoint(str(tmp_path / "rt")) == str(tmp_path / "rt" / "ckpt-11")
        tf.train.Saver().restore(sess, tf.train.latest_checkpoint(str(tmp_path / "rt")))
        np.testing.assert_array_equal(sess.run(w), [[5.0, 6.0]])
        assert sess.run(step) == 11
