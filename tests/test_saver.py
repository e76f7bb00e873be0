"""tf.train.Saver: safetensors checkpoints, the index file, keep-N, restore checks, resume."""
import os

import numpy as np
import pytest
import safetensors.numpy

from compiler import tf


def _model():
    w = tf.Variable([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], name="w")
    b = tf.Variable([0.5, -0.5], name="b")
    step = tf.train.get_or_create_global_step()
    return w, b, step


def _session():
    sess = tf.Session()
    sess.run(tf.global_variables_initializer())
    return sess


def test_round_trip_and_file_format(tmp_path):
    w, b, step = _model()
    saver = tf.train.Saver()
    sess = _session()
    sess.run(tf.assign(w, np.arange(6, dtype=np.float32).reshape(2, 3)))
    path = saver.save(sess, str(tmp_path / "model.ckpt"))
    assert path == str(tmp_path / "model.ckpt")
    arrays = safetensors.numpy.load_file(path + ".safetensors")  # a plain safetensors file
    assert sorted(arrays) == ["b", "global_step", "w"]
    assert arrays["global_step"].dtype == np.int64 and arrays["global_step"].shape == ()
    np.testing.assert_array_equal(arrays["w"], np.arange(6).reshape(2, 3))
    sess.run([tf.assign(w, tf.zeros([2, 3])), tf.assign(b, [9.0, 9.0])])
    saver.restore(sess, path)
    np.testing.assert_array_equal(sess.run(w), np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(sess.run(b), [0.5, -0.5])
    sess2 = tf.Session()  # a fresh session needs no initializer after restore
    saver.restore(sess2, path + ".safetensors")  # the file name works too
    np.testing.assert_array_equal(sess2.run(b), [0.5, -0.5])
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_global_step_suffix_keep_n_and_index_file(tmp_path):
    w, b, step = _model()
    saver = tf.train.Saver(max_to_keep=2)
    sess = _session()
    prefix = str(tmp_path / "model.ckpt")
    paths = [saver.save(sess, prefix, global_step=s) for s in (10, 20, 30)]
    assert paths == [prefix + "-10", prefix + "-20", prefix + "-30"]
    assert sorted(os.listdir(tmp_path)) == ["checkpoint", "model.ckpt-20.safetensors", "model.ckpt-30.safetensors"]
    assert saver.last_checkpoints == paths[1:]
    text = (tmp_path / "checkpoint").read_text()
    assert text == (f'model_checkpoint_path: "{prefix}-30"\n'
                    f'all_model_checkpoint_paths: "{prefix}-20"\n'
                    f'all_model_checkpoint_paths: "{prefix}-30"\n')
    assert tf.train.latest_checkpoint(str(tmp_path)) == prefix + "-30"
    state = tf.train.get_checkpoint_state(str(tmp_path))
    assert state.model_checkpoint_path == prefix + "-30"
    assert state.all_model_checkpoint_paths == paths[1:]
    assert tf.train.checkpoint_exists(prefix + "-20") and not tf.train.checkpoint_exists(prefix + "-10")
    sess.run(tf.assign_add(step, 7))
    assert saver.save(sess, prefix, global_step=step) == prefix + "-7"  # a step tensor is evaluated


def test_relative_paths_are_written_relative_to_the_directory(tmp_path, monkeypatch):
    _model()
    monkeypatch.chdir(tmp_path)
    os.mkdir("ckpts")
    saver = tf.train.Saver()
    path = saver.save(_session(), "ckpts/model", global_step=3)
    assert path == "ckpts/model-3"
    assert (tmp_path / "ckpts" / "checkpoint").read_text().splitlines()[0] == 'model_checkpoint_path: "model-3"'
    assert tf.train.latest_checkpoint("ckpts") == os.path.join("ckpts", "model-3")
    assert tf.train.get_checkpoint_state(str(tmp_path / "missing")) is None
    assert tf.train.latest_checkpoint(str(tmp_path)) is None


def test_partial_restore_with_a_name_map(tmp_path):
    w, b, step = _model()
    saver = tf.train.Saver()
    sess = _session()
    path = saver.save(sess, str(tmp_path / "model"))
    with tf.Graph().as_default():
        new_b = tf.Variable([0.0, 0.0], name="new_bias")
        untouched = tf.Variable([7.0], name="untouched")
        sess2 = _session()
        tf.train.Saver({"b": new_b}).restore(sess2, path)
        np.testing.assert_array_equal(sess2.run(new_b), [0.5, -0.5])
        np.testing.assert_array_equal(sess2.run(untouched), [7.0])
        assert tf.train.list_variables(str(tmp_path)) == [("b", [2]), ("global_step", []), ("w", [2, 3])]
        np.testing.assert_array_equal(tf.train.load_variable(path, "b"), [0.5, -0.5])


def test_restore_errors_name_the_variable_the_file_and_the_shapes(tmp_path):
    w, b, step = _model()
    path = tf.train.Saver().save(_session(), str(tmp_path / "model"))
    file = path + ".safetensors"
    with tf.Graph().as_default():
        w2 = tf.Variable(tf.zeros([3, 2]), name="w")
        with pytest.raises(ValueError, match=r"variable w from .*model.safetensors.*shape \[2, 3\].*shape \[3, 2\]"):
            tf.train.Saver([w2]).restore(tf.Session(), path)
    with tf.Graph().as_default():
        wd = tf.Variable(tf.zeros([2, 3], tf.float64), name="w")
        with pytest.raises(ValueError, match="dtype float32, the variable has dtype float64"):
            tf.train.Saver([wd]).restore(tf.Session(), path)
    with tf.Graph().as_default():
        extra = tf.Variable(1.0, name="extra")
        with pytest.raises(ValueError, match="Key extra not found in checkpoint .*model.safetensors"):
            tf.train.Saver([extra]).restore(tf.Session(), path)
    with pytest.raises(ValueError, match="not a valid checkpoint"):
        tf.train.Saver().restore(tf.Session(), str(tmp_path / "nothing"))
    with open(file, "r+b") as f:
        f.write(b"\xff" * 16)
    with pytest.raises(ValueError, match="corrupt or not a safetensors checkpoint"):
        tf.train.Saver().restore(tf.Session(), path)


def test_failed_restore_changes_nothing(tmp_path):
    w, b, step = _model()
    sess = _session()
    path = tf.train.Saver({"b": b}).save(sess, str(tmp_path / "only_b"))
    sess.run(tf.assign(b, [3.0, 3.0]))
    with pytest.raises(ValueError, match="Key w not found"):
        tf.train.Saver({"b": b, "w": w}).restore(sess, path)
    np.testing.assert_array_equal(sess.run(b), [3.0, 3.0])


def test_save_errors(tmp_path):
    w, b, step = _model()
    saver = tf.train.Saver()
    with pytest.raises(ValueError, match="uninitialized value"):
        saver.save(tf.Session(), str(tmp_path / "model"))
    assert saver.save(_session(), str(tmp_path / "new" / "model")).startswith(str(tmp_path / "new"))
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="Parent directory of .* doesn't exist"):
        saver.save(_session(), str(tmp_path / "file" / "model"))
    with tf.Graph().as_default():
        with pytest.raises(ValueError, match="No variables to save"):
            tf.train.Saver()
        assert tf.train.Saver(allow_empty=True).save(tf.Session(), str(tmp_path / "empty")) is None
    with pytest.raises(TypeError, match="not a Variable"):
        tf.train.Saver([w + 1.0])
    with pytest.raises(TypeError, match="'sess' must be a Session"):
        saver.save(None, str(tmp_path / "model"))


def test_resume_continues_the_exact_trajectory(tmp_path):
    """Variables, Adam slots, beta powers and the global step all round-trip."""
    x = np.random.default_rng(0).standard_normal((6, 2)).astype(np.float32)
    w = tf.Variable([[0.3], [-0.2]], name="w")
    step = tf.train.get_or_create_global_step()
    loss = tf.reduce_mean(tf.square(tf.matmul(x, w) - 1.0))
    train = tf.train.AdamOptimizer(0.05).minimize(loss, global_step=step)
    saver = tf.train.Saver()
    sess = _session()
    for _ in range(3):
        sess.run(train)
    path = saver.save(sess, str(tmp_path / "model"), global_step=step)
    for _ in range(2):
        sess.run(train)
    want = sess.run(w)
    resumed = tf.Session()
    saver.restore(resumed, tf.train.latest_checkpoint(str(tmp_path)))
    assert path.endswith("model-3") and resumed.run(step) == 3
    for _ in range(2):
        resumed.run(train)
    np.testing.assert_array_equal(resumed.run(w), want)
    assert resumed.run(step) == 5


def test_restore_moving_averages_into_the_variables(tmp_path):
    w = tf.Variable(1.0, name="w")
    ema = tf.train.ExponentialMovingAverage(0.9)
    update = ema.apply([w])
    sess = _session()
    sess.run(tf.assign(w, 2.0))
    sess.run(update)
    path = tf.train.Saver().save(sess, str(tmp_path / "model"))
    sess2 = tf.Session()
    tf.train.Saver(ema.variables_to_restore()).restore(sess2, path)
    np.testing.assert_allclose(sess2.run(w), 1.1, rtol=1e-6)


def test_pad_step_number_and_recover_last_checkpoints(tmp_path):
    _model()
    sess = _session()
    saver = tf.train.Saver(max_to_keep=2, pad_step_number=True)
    first = saver.save(sess, str(tmp_path / "m"), global_step=1)
    assert first.endswith("m-00000001")
    later = tf.train.Saver(max_to_keep=2)
    later.recover_last_checkpoints(tf.train.get_checkpoint_state(str(tmp_path)).all_model_checkpoint_paths)
    assert later.last_checkpoints == [first]
    later.save(sess, str(tmp_path / "m"), global_step=2)
    later.save(sess, str(tmp_path / "m"), global_step=3)
    assert not tf.train.checkpoint_exists(first)
