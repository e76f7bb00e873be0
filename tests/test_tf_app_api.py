"""The everyday TF1 API: tf.app.run + flags, tf.gfile / tf.io.gfile, tf.logging, the v2 switches,
RunOptions/RunMetadata in Session.run, and the message for a name Kiln lacks."""
import logging
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from compiler import tf
from compiler.frontend import app

ROOT = pathlib.Path(__file__).resolve().parents[1]

TUTORIAL = textwrap.dedent("""\
    from compiler import tf

    flags = tf.app.flags
    flags.DEFINE_integer('steps', 3, 'number of steps')
    flags.DEFINE_float('learning_rate', 0.5, 'step size')
    flags.DEFINE_boolean('fake_data', False, 'use fake data')
    flags.DEFINE_string('data_dir', '/tmp/data', 'where the data is')
    FLAGS = flags.FLAGS


    def main(argv):
        print('steps=%d lr=%g fake=%s dir=%s argv=%s' % (
            FLAGS.steps, FLAGS.learning_rate, FLAGS.fake_data, FLAGS.data_dir, argv[1:]))
        return 3 if FLAGS.steps == 13 else None


    if __name__ == '__main__':
        tf.app.run()
    """)


def _run_script(tmp_path, *args):
    script = tmp_path / "tutorial.py"
    script.write_text(TUTORIAL)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True,
                          env=env, timeout=120)


@pytest.mark.parametrize("args", [["--steps", "5"], ["--steps=5"], ["-steps=5"]])
def test_app_run_parses_flags_and_calls_main(tmp_path, args):
    proc = _run_script(tmp_path, *args, "--fake_data", "--learning_rate=0.01", "extra")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "steps=5 lr=0.01 fake=True dir=/tmp/data argv=['extra']"


def test_app_run_defaults_noflag_and_exit_status(tmp_path):
    proc = _run_script(tmp_path, "--nofake_data", "--data_dir", "/d")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "steps=3 lr=0.5 fake=False dir=/d argv=[]"
    assert _run_script(tmp_path, "--steps=13").returncode == 3  # sys.exit(main's return value)


def test_app_run_help_lists_the_flags(tmp_path):
    proc = _run_script(tmp_path, "--help")
    assert proc.returncode == 1  # absl exits with 1 after printing the help
    assert "--steps: number of steps" in proc.stdout and "(default: '3')" in proc.stdout
    assert "--[no]fake_data" in proc.stdout and "steps=" not in proc.stdout


def test_app_run_bad_value_is_a_fatal_flags_error(tmp_path):
    proc = _run_script(tmp_path, "--steps=many")
    assert proc.returncode == 1
    assert "FATAL Flags parsing error" in proc.stderr and "--steps=many" in proc.stderr
    assert proc.stdout == ""


def test_app_run_passes_unknown_flags_to_main_like_tf1(tmp_path):
    # TF1's tf.app.run parses with known_only=True (_parse_flags_tolerate_undef)
    proc = _run_script(tmp_path, "--steps=4", "--bogus=1")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("argv=['--bogus=1']")


def test_first_read_parses_sys_argv_tolerating_unknown_flags(monkeypatch):
    fv = app.FlagValues()
    tf.flags.DEFINE_integer("batch", 8, "batch size", flag_values=fv)
    monkeypatch.setattr(sys, "argv", ["prog", "--other=1", "--batch", "32"])
    assert not fv.is_parsed() and fv.batch == 32 and fv.is_parsed()


def test_flag_values_call_rejects_unknown_flags_and_returns_the_rest():
    fv = app.FlagValues()
    fv.mark_as_parsed()
    tf.flags.DEFINE_list("names", "a,b", "names", flag_values=fv)
    tf.flags.DEFINE_enum("mode", "x", ["x", "y"], "mode", flag_values=fv)
    tf.flags.DEFINE_integer("n", 1, "n", lower_bound=0, flag_values=fv)
    assert fv.names == ["a", "b"]
    assert fv(["prog", "--names=q,r", "pos", "--mode", "y", "--", "--n=5"]) == ["prog", "pos", "--n=5"]
    assert (fv.names, fv.mode, fv.n) == (["q", "r"], "y", 1)
    with pytest.raises(tf.flags.UnrecognizedFlagError, match="Unknown command line flag 'bogus'"):
        fv(["prog", "--bogus=1"])
    with pytest.raises(tf.flags.IllegalFlagValueError):
        fv(["prog", "--mode=z"])
    with pytest.raises(tf.flags.IllegalFlagValueError):
        fv(["prog", "--n=-1"])
    with pytest.raises(tf.flags.DuplicateFlagError):
        tf.flags.DEFINE_string("mode", "x", "again", flag_values=fv)
    fv.n = 7
    assert fv.n == 7 and fv.flag_values_dict()["n"] == 7
    with pytest.raises(AttributeError):
        fv.undefined_flag


def test_gfile_round_trips(tmp_path):
    gf = tf.gfile
    d = str(tmp_path / "a" / "b")
    gf.MakeDirs(d)
    gf.MakeDirs(d)  # existing is fine
    assert gf.IsDirectory(d) and gf.Exists(d)
    path = os.path.join(d, "x.txt")
    with gf.GFile(path, "w") as f:
        f.write("line1\nline2\n")
    with gf.Open(path) as f:
        assert f.readlines() == ["line1\n", "line2\n"]
    with gf.FastGFile(path, "rb") as f:
        assert f.read() == b"line1\nline2\n"
    assert gf.Stat(path).length == 12 and gf.GFile(path).size() == 12
    gf.Copy(path, os.path.join(d, "y.txt"))
    with pytest.raises(tf.errors.AlreadyExistsError):
        gf.Copy(path, os.path.join(d, "y.txt"))
    gf.Rename(os.path.join(d, "y.txt"), os.path.join(d, "z.txt"))
    assert gf.ListDirectory(d) == ["x.txt", "z.txt"]
    assert gf.Glob(os.path.join(d, "*.txt")) == [path, os.path.join(d, "z.txt")]
    assert list(gf.Walk(str(tmp_path / "a"))) == [(str(tmp_path / "a"), ["b"], []), (d, [], ["x.txt", "z.txt"])]
    gf.Remove(path)
    assert not gf.Exists(path)
    with pytest.raises(tf.errors.NotFoundError):
        gf.GFile(path).read()
    with pytest.raises(tf.errors.NotFoundError):
        gf.Remove(path)
    gf.MkDir(str(tmp_path / "c"))
    with pytest.raises(tf.errors.AlreadyExistsError):
        gf.MkDir(str(tmp_path / "c"))
    gf.DeleteRecursively(str(tmp_path / "a"))
    assert not gf.Exists(str(tmp_path / "a"))


def test_io_gfile_lowercase_names(tmp_path):
    io = tf.io.gfile
    io.makedirs(str(tmp_path / "d"))
    with io.GFile(str(tmp_path / "d" / "f.bin"), "wb") as f:
        f.write(b"\x00\x01")
    assert io.exists(str(tmp_path / "d" / "f.bin")) and io.isdir(str(tmp_path / "d"))
    assert io.listdir(str(tmp_path / "d")) == ["f.bin"] and io.glob(str(tmp_path / "*")) == [str(tmp_path / "d")]
    io.rmtree(str(tmp_path / "d"))
    assert not io.exists(str(tmp_path / "d"))


def test_logging_verbosity_filters(caplog):
    caplog.set_level(logging.NOTSET, logger="tensorflow")
    old = tf.logging.get_verbosity()
    try:
        tf.logging.set_verbosity(tf.logging.WARN)
        tf.logging.info("hidden %d", 1)
        tf.logging.warning("shown %d", 2)
        tf.logging.set_verbosity(tf.logging.DEBUG)
        tf.logging.debug("debug shown")
        tf.logging.vlog(tf.logging.ERROR, "vlog %s", "x")
        tf.logging.fatal("fatal but alive")
        for i in range(5):
            tf.logging.log_every_n(tf.logging.INFO, "every %d", 2, i)
    finally:
        tf.logging.set_verbosity(old)
    msgs = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert ("tensorflow", logging.INFO, "hidden 1") not in msgs
    assert [m for _, _, m in msgs] == ["shown 2", "debug shown", "vlog x", "fatal but alive",
                                       "every 0", "every 2", "every 4"]
    assert msgs[3][1] == tf.logging.FATAL == logging.CRITICAL


def test_v2_switches_and_compat_v1():
    tf.disable_v2_behavior()
    tf.compat.v1.disable_eager_execution()
    assert tf.executing_eagerly() is False
    assert tf.compat.v1 is tf and tf.compat.v1.placeholder is tf.placeholder
    assert tf.flags is tf.app.flags and tf.app.flags.FLAGS is tf.flags.FLAGS


def test_session_run_accepts_run_options_and_metadata():
    x = tf.placeholder(tf.float32, [None, 2])
    y = tf.reduce_sum(x * 2.0)
    options = tf.RunOptions(trace_level=tf.RunOptions.FULL_TRACE)
    assert tf.RunOptions.NO_TRACE == 0 and tf.RunOptions.TraceLevel.FULL_TRACE == options.trace_level
    metadata = tf.RunMetadata()
    with tf.Session(config={"backend": "interpreter"}) as sess:
        out = sess.run(y, feed_dict={x: np.ones((3, 2), np.float32)}, options=options, run_metadata=metadata)
        again = sess.run([y], {x: np.ones((1, 2), np.float32)}, tf.RunOptions(), tf.RunMetadata())
    assert out == pytest.approx(12.0) and again[0] == pytest.approx(4.0)
    assert metadata.step_stats.dev_stats == []


@pytest.mark.parametrize("expr, path", [("tf.nonexistent", "tf"), ("tf.nn.nonexistent", "tf.nn"),
                                        ("tf.gfile.nonexistent", "tf.gfile")])
def test_missing_name_message(expr, path):
    with pytest.raises(AttributeError) as info:
        eval(expr)
    msg = str(info.value)
    assert f"module '{path}' (Kiln) has no attribute 'nonexistent'" in msg
    assert f"{path}.nonexistent is not provided by Kiln" in msg and "docs/api.md" in msg
    assert "compiler.frontend" not in msg
    assert getattr(tf, "nonexistent", None) is None and not hasattr(tf.train, "nonexistent")
