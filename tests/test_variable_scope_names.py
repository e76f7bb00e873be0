"""variable_scope default names count as TF 1.x counts them (what RNN cells and layers rely on).

Expected names recorded from TF 2.21's tf.compat.v1 running the same statements.
"""
import pytest

from compiler import tf


def _default_scoped_variable():
    with tf.variable_scope(None, default_name="s"):
        return tf.get_variable("v", [1]).op.name


def test_default_names_match_tf():
    with tf.Graph().as_default():
        names = [_default_scoped_variable(), _default_scoped_variable()]
        with tf.variable_scope("s_2"):  # an explicitly opened name is taken too
            pass
        names.append(_default_scoped_variable())
        with tf.variable_scope("m"):
            names.append(_default_scoped_variable())
        with tf.variable_scope("m", reuse=True):  # closing "m" forgot its sub-scope counts
            names.append(_default_scoped_variable())
        with tf.variable_scope("outer") as outer:
            names.append(_default_scoped_variable())
        with tf.variable_scope(outer, reuse=True):
            names.append(_default_scoped_variable())
        assert names == ["s/v", "s_1/v", "s_3/v", "m/s/v", "m/s/v", "outer/s/v", "outer/s/v"]
        with tf.variable_scope(outer), pytest.raises(ValueError, match="outer/s/v already exists"):
            _default_scoped_variable()
