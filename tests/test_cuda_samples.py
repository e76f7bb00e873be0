"""Every sample model on the CUDA backend: its module compiles with nvcc (CI: wherever nvcc
exists), and its train/eval/predict entry points give the CPU backend's results — on the
host emulator for a few steps, and on a GPU when there is one."""
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import runtime
from compiler.frontend.compile_graph import compile_entries
from compiler.model_file import load_model
from tests.cuda_kit import MODES, assert_weights_close
from tests.test_samples import CASES, RNG_SEED, SAMPLES
from tests.helpers import assert_exports_kiln_abi

NVCC = shutil.which("nvcc")


def _load(name):
    model, entries = load_model(os.path.join(SAMPLES, name + ".py"))
    return model, {n: e.as_compile_entry() for n, e in entries.items()}, {n: e.record() for n, e in entries.items()}


@pytest.mark.skipif(NVCC is None, reason="nvcc (CUDA toolkit) is not on PATH: cannot compile the CUDA sources")
def test_every_sample_compiles_with_nvcc(tmp_path):
    """The whole artifact (all entry points, one .cu) of each sample builds for sm_90 and
    exports the ABI."""
    def build(name):
        model, entries, _ = _load(name)
        return compile_entries(model.graph, entries, tmp_path / name, target="cuda", emulate=False, dump_ir=False)

    with ThreadPoolExecutor(max_workers=2) as pool:
        outs = dict(zip(sorted(CASES), pool.map(build, sorted(CASES))))
    for name, out in outs.items():
        m = runtime.manifest.read_manifest(out)
        assert m["target"] == {"kind": "cuda", "arch": "sm_90", "emulated": False, "runtime": "cuda"}, name
        assert (out / "src" / "model.cu").is_file() and m["build"]["nvcc_s"] > 0
        assert_exports_kiln_abi(out / "lib" / "model.so", m["entry_points"], name)


# the CNN sample only on a GPU: on the emulator the seed-002 CNN step is covered by
# test_cuda_training.py and test_cuda_kernels_parallel_emulated.py (it costs ~20 s here)
SAMPLE_RUNS = [pytest.param(name, mode.values[0], marks=mode.marks)
               for name in ["linear_regression", "mnist_mlp", "mnist_cnn", "binary_mlp", "plane_fit"]
               for mode in MODES if not (name == "mnist_cnn" and mode.values[0] == "emulated")]


@pytest.mark.parametrize("name, mode", SAMPLE_RUNS)
def test_sample_matches_cpu(tmp_path, name, mode):
    """Two training steps, then eval and predict: the CUDA artifact's fetches and variables
    equal the CPU artifact's (to float rounding)."""
    model, entries, records = _load(name)
    make, pred_key, _ = CASES[name]
    rng = np.random.default_rng(RNG_SEED)
    x, y = make(rng, 4) if make else (None, None)
    feeds = {"x": x, "labels": y} if make else {}
    outs = []
    for target in ("cpu", "cuda"):
        options = {"emulate": mode == "emulated"} if target == "cuda" else {}
        art = runtime.load_artifact(compile_entries(model.graph, entries, tmp_path / target, target=target,
                                                    dump_ir=False, **options))
        with art.new_state() as state:
            got = [state.run("train", feeds) for _ in range(2)]
            got += [state.run("eval", feeds), state.run("predict", {"x": x} if make else {})]
            outs.append((got, state.variables()))
    (cpu, cpu_vars), (gpu, gpu_vars) = outs
    for step, (a, b) in enumerate(zip(cpu, gpu)):
        for key in a:
            np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-5, err_msg=f"{name} call {step} {key}")
    for key in cpu_vars:
        assert_weights_close(gpu_vars[key], cpu_vars[key], f"{name} {key}")
    assert records["predict"]["fetches"][pred_key]
