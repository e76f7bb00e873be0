"""The backend registry (compiler/codegen/registry.py): a backend registered from outside
`compiler/` is used by the driver, `kiln compile`, the artifact writer, the runtime and
tf.Session without editing any of them."""
import numpy as np
import pytest

import runtime
from compiler import tf
from compiler.cli import main as kiln
from compiler.codegen import registry
from compiler.frontend.compile_graph import compile_entries

CPU = registry.get_backend("cpu")
CALLS = []


def _toy_render(programs, variables, target):
    """The toy renders what the CPU backend renders (its library runs on this host), and
    records the call with its option."""
    CALLS.append(("render", sorted(programs), target.get("flavour")))
    return "; toy backend\n" + CPU.render(programs, variables, target)


def _toy_build(source, lib_path, target):
    CALLS.append(("build", source.startswith("; toy backend"), target.get("flavour")))
    return CPU.build(source, lib_path, target)


TOY = registry.Backend(
    name="toy", description="a test backend", devices=("TPU",), source_name="src/model.toy",
    runtime_library="host", render=_toy_render, build=_toy_build,
    target_record=lambda t: {"kind": "toy", "flavour": t.get("flavour"), "runtime": "host"},
    options=(registry.Option("flavour", default="plain", help="a toy option"),),
    make_options=lambda values: {**values, "flavour": values["flavour"].lower()})


@pytest.fixture
def toy():
    registry.register(TOY)
    CALLS.clear()
    yield TOY
    registry.unregister("toy")


def _graph():
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, 3], name="x")
        w = tf.get_variable("w", [3, 2], initializer=tf.constant_initializer(0.5))
        y = tf.matmul(x, w, name="y")
    return graph, x, y


def test_the_driver_and_runtime_use_a_registered_backend(toy, tmp_path):
    graph, x, y = _graph()
    path = compile_entries(graph, {"predict": ([y], [], [x])}, tmp_path / "art", target="toy",
                           flavour="Spicy", dump_ir=False)
    assert CALLS == [("render", ["predict"], "spicy"), ("build", True, "spicy")]
    art = runtime.load_artifact(path)
    assert art.target == {"kind": "toy", "flavour": "spicy", "runtime": "host"}
    assert (path / "src/model.toy").read_text().startswith("; toy backend")
    with art.new_state() as state:
        out = state.run("predict", {"x:0": np.ones((2, 3), np.float32)})
    np.testing.assert_allclose(out["y:0"], np.full((2, 2), 1.5))


def test_unknown_backend_and_option_are_refused(toy, tmp_path):
    graph, x, y = _graph()
    with pytest.raises(registry.UnknownBackendError, match="unknown target 'nope'.*cpu, cuda, mlu, toy"):
        compile_entries(graph, {"predict": ([y], [], [x])}, tmp_path / "a", target="nope")
    with pytest.raises(registry.UnknownBackendError, match="backend 'toy' has no option arch"):
        compile_entries(graph, {"predict": ([y], [], [x])}, tmp_path / "a", target="toy", arch="sm_90")


MODEL = '''
from compiler import tf


def build():
    x = tf.placeholder(tf.float32, [None, 3], name="x")
    w = tf.get_variable("w", [3, 2], initializer=tf.constant_initializer(0.5))
    return {"predict": {"feeds": [x], "fetches": {"y": tf.matmul(x, w, name="y")}}}
'''


def test_kiln_compile_offers_the_backend_and_its_options(toy, tmp_path, capsys):
    (tmp_path / "m.py").write_text(MODEL)
    assert kiln(["compile", str(tmp_path / "m.py"), "-o", str(tmp_path / "out"), "--target", "toy",
                 "--toy-flavour", "Sweet", "--no-dump-ir"]) == 0
    assert "target toy" in capsys.readouterr().out
    assert runtime.read_manifest(tmp_path / "out")["target"]["flavour"] == "sweet"
    assert kiln(["compile", str(tmp_path / "m.py"), "-o", str(tmp_path / "o2"), "--toy-flavour", "x"]) == 2
    assert "--toy-flavour applies to --target toy, not cpu" in capsys.readouterr().err


def test_a_session_places_ops_on_the_backend_of_their_device(toy):
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None, 3], name="x")
        with tf.device("/device:TPU:0"):
            y = tf.reduce_sum(x * 2.0, axis=1)
        config = tf.ConfigProto(kiln_backend="compiled", kiln_toy_flavour="Salty")
        with tf.Session(config=config) as sess:
            out = sess.run(y, {x: np.ones((4, 3), np.float32)})
    np.testing.assert_allclose(out, np.full(4, 6.0))
    assert ("render", ["run"], "salty") in CALLS


def test_a_device_backend_that_cannot_run_is_a_placement_error(toy, monkeypatch):
    monkeypatch.setattr(registry, "_registered", {**registry._registered,
                                                  "toy": registry.Backend(**{**TOY.__dict__,
                                                                             "unavailable": lambda t: "no toy here"})})
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [None], name="x")
        with tf.device("/tpu:0"):
            y = x + 1.0
        compiled = tf.ConfigProto(kiln_backend="compiled")
        with tf.Session(config=compiled) as sess, pytest.raises(tf.errors.InvalidArgumentError,
                                                 match="no TPU is usable: no toy here"):
            sess.run(y, {x: np.ones(2, np.float32)})
        with tf.Session(config=tf.ConfigProto(kiln_backend="compiled", allow_soft_placement=True)) as sess:
            np.testing.assert_allclose(sess.run(y, {x: np.ones(2, np.float32)}), [2.0, 2.0])


def test_a_backend_without_control_flow_falls_back_to_the_interpreter(toy):
    graph = tf.Graph()
    with graph.as_default():
        x = tf.placeholder(tf.float32, [3], name="x")
        with tf.device("/device:TPU:0"):
            y = tf.cond(tf.reduce_sum(x) > 0.0, lambda: x * 2.0, lambda: -x)
        with tf.Session(config=tf.ConfigProto(kiln_backend="compiled")) as sess:
            with pytest.warns(RuntimeWarning, match=r"backend 'toy' cannot run control flow \(if cond"):
                out = sess.run(y, {x: np.array([1.0, -3.0, 1.0], np.float32)})
    np.testing.assert_allclose(out, [-1.0, 3.0, -1.0])
    assert not any(c[0] == "render" for c in CALLS)
