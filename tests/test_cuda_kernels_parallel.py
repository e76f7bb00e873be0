"""Launch geometry of the CUDA backend (the scheduling pass's plan for CUDA, rendered by
compiler/codegen/cuda/kernels.py and loops.py), without running a kernel; the emulator runs are
in test_cuda_kernels_parallel_emulated.py and test_cuda_kernels_parallel_checks.py, the
pass's analysis on small hand-made nests in test_lower_schedule.py.

* geometry: the CNN's im2col / direct conv / col2im / max-pool / max-pool-gradient launches
  spread the whole image (trip counts grow with N*H*W, not N), bias gradients and full reductions are
  block reductions, only scalar kernels run on one thread, and the GEMM tile choice;
* loops holding checks (label ranges, gather indices) are ordered block loops, not one
  thread; a check inside a loop whose iterations depend on each other stays serial;
* nvcc compiles the models' modules (skipped without nvcc).
"""
from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

from compiler.codegen.cuda import program_variables, render_module
from compiler.codegen.cuda.kernels import KernelRenderer
from compiler.lower.program import lower_function
from compiler.passes.manager import run_pipeline
from tests import models
from tests.kernel_ir_kit import ordered_checks_program, sum_with_check_program

NVCC = shutil.which("nvcc")


# ----------------------------------------------------------------------------- helpers
def _render(program):
    """(launch lines, {kernel name: [names of the functions that run it]}) of a program."""
    r = KernelRenderer(program, "train", lambda *a: 0)
    texts = {k.name: r.kernel(k) for k in program.kernels}
    functions = {name: [f.name for f in t.functions] + t.merged_into for name, t in texts.items()}
    return r.launches, functions


def _c_value(expr: str, n: int) -> int:
    return eval(re.sub(r"(\d+)LL", r"\1", expr), {"N": n})  # trip expressions: + - * over N


def _launches_of(launches, functions, kernel):
    names = functions[kernel]
    return [line for line in launches if any(f"({name}," in line for name in names)]


def _trip(line, n):
    """Threads (grid loops) or blocks (reductions) a launch line asks for at batch ``n``."""
    m = re.search(r"const long long (?:trip|outs) = (.*?)(?:, trip = .*?)?; if", line)
    return _c_value(m.group(1), n)


def _program(builder):
    fn, _state, _feeds = builder()
    return lower_function(run_pipeline(fn).fn)


@pytest.fixture(scope="module")
def cnn():
    program = _program(models.cnn_train_step)
    launches, functions = _render(program)
    return program, launches, functions


# ----------------------------------------------------------------------------- geometry
def test_cnn_image_loops_spread_over_the_image(cnn):
    program, launches, functions = cnn
    expected = {  # kernel name prefix -> per-image trip counts of its grid launches
        "conv_conv2d_Conv2D_1": [14 * 14 * 25 * 32],  # the im2col beside the GEMM
        "direct_conv2d_Conv2D": [28 * 28 * 32],  # the one-channel first layer: a direct nest
        "max_pool_MaxPool_1": [7 * 7 * 64], "max_pool_MaxPool": [14 * 14 * 32],
        "conv_conv2d_backprop_input_gradients_Conv2D_1": [14 * 14 * 32],  # the col2im after the GEMM
        # the 2x2/2 windows tile the plane: one gather nest over the input gradient
        "max_pool_grad_gradients_MaxPool_1_grad": [14 * 14 * 64],
        "max_pool_grad_gradients_MaxPool_grad": [28 * 28 * 32],
    }
    seen = set()
    for kernel in functions:
        prefix = next((p for p in expected if kernel.startswith(p)), None)
        if prefix is None or kernel in seen:
            continue
        seen.add(prefix)
        lines = _launches_of(launches, functions, kernel)
        if prefix.startswith("conv_"):
            assert sum("kiln_gemm_big(m, n, nb)" in line for line in lines) == 1, lines
            lines = [line for line in lines if "kiln_gemm_big(m, n, nb)" not in line]
        assert all("kiln_blocks(trip), KILN_BLOCK" in line for line in lines), lines
        assert [_trip(line, 1) for line in lines] == expected[prefix], kernel
        assert [_trip(line, 3) for line in lines] == [3 * t for t in expected[prefix]], kernel
    assert seen == set(expected)


def test_cnn_reductions_are_block_reductions(cnn):
    program, launches, functions = cnn
    src = render_module({"train": program}, program_variables([program]))
    channels = {"reduce_gradients_Add_grad_Sum": 32, "reduce_gradients_Add_1_grad_Sum": 64,
                "reduce_gradients_Add_2_grad_Sum": 1024, "reduce_gradients_Add_3_grad_Sum": 10, "reduce_loss": 1}
    for kernel, outs in channels.items():
        lines = [line for line in _launches_of(launches, functions, kernel) if "kiln_red_blocks(outs)" in line]
        assert len(lines) == 1, (kernel, _launches_of(launches, functions, kernel))
        assert "KILN_LAUNCH_SYNC(" in lines[0] and "kiln_red_threads(outs, trip)" in lines[0]
        assert _trip(lines[0], 5) == outs
        fn = re.search(r"KILN_LAUNCH_SYNC\((\w+),", lines[0]).group(1)
        body = src.split(f"{fn}(KilnBufs bufs, long long N) {{")[1].split("\n}\n")[0]
        assert "kiln_block_reduce(" in body and "kiln_f += blockDim.x" in body
    assert "__shfl_down_sync(0xffffffffu" in src


def test_cnn_serial_and_batch_only_launches(cnn):
    """One-thread launches only for scalar kernels; launches over N alone only where the
    iteration space is N (rows of 10 classes)."""
    program, launches, functions = cnn
    serial = {k for k in functions if any(", 1, 1, stream" in line for line in _launches_of(launches, functions, k))}
    assert serial == {"shape_gradients_loss_grad_Shape", "loop_gradients_loss_grad_Cast",
                      "loop_gradients_loss_grad_truediv", "loop_train_update_Variable_Sub", "loop_x"}
    # consecutive one-thread kernels share one launch (shape, cast and 1/x of the loss gradient)
    serial_lines = [line for line in launches if ", 1, 1, stream" in line]
    assert len(serial_lines) == 3, serial_lines
    assert functions["loop_gradients_loss_grad_truediv"] == functions["shape_gradients_loss_grad_Shape"]
    batch_only = {k for k in functions for line in _launches_of(launches, functions, k)
                  if "kiln_blocks(trip)" in line and _trip(line, 1) == 1 and _trip(line, 2) == 2}
    assert batch_only <= {"reduce_softmax_cross_entropy_with_logits_Max", "reduce_softmax_cross_entropy_with_logits_Sum",
                          "reduce_softmax_cross_entropy_with_logits_Sum_1", "loop_gradients_loss_grad_BroadcastTo",
                          "reduce_gradients_softmax_cross_entropy_with_logi"}


def test_cnn_gemm_tiles(cnn):
    program, launches, functions = cnn
    # static and large: only the register-blocked 64x64 kernel (k = N: never split, too many tiles)
    assert functions["gemm_matmul_gradients_MatMul_grad_MatMul_1"] == ["k_train__gemm_matmul_gradients_MatMul_grad_MatMul_1_g0b"]
    # a 25x32 filter gradient over k = N*784: split k when it is long, else the 16x16 tile
    # (a convolution's kernel launches its im2col grid first, then the GEMM)
    line = _launches_of(launches, functions, "conv_conv2d_backprop_filter_gradients_Conv2D_gra")[1]
    assert "if (kiln_gemm_ksplit(m, n, nb, kk)) KILN_LAUNCH_SYNC(k_train__conv_conv2d_backprop_filter_gradients_Conv2D_gra_g1k, " \
           "dim3(kiln_ks_tiles(m), kiln_ks_tiles(n), (unsigned int)nb), dim3(KILN_KS_TILE, KILN_KS_TILE, KILN_KS_SLICES)" in line
    assert "else KILN_LAUNCH_SYNC(k_train__conv_conv2d_backprop_filter_gradients_Conv2D_gra_g1, dim3(kiln_tiles(m)" in line
    # m grows with N (k = 800 is short): 64x64 or 16x16, chosen at run time
    line = _launches_of(launches, functions, "conv_conv2d_Conv2D_1")[1]
    assert "{ if (kiln_gemm_big(m, n, nb)) KILN_LAUNCH_SYNC(k_train__conv_conv2d_Conv2D_1_g1b, dim3(kiln_big_tiles(m)" in line
    assert "else KILN_LAUNCH_SYNC(k_train__conv_conv2d_Conv2D_1_g1, dim3(kiln_tiles(m)" in line


@pytest.mark.parametrize("model", ["mlp_train_step", "lenet_train_step"])
def test_label_checks_are_ordered_block_loops(model):
    """The sparse-softmax label range check: one block striding over N in loop order
    (KILN_LAUNCH_SYNC, kiln_ord_threads), no longer a one-thread launch."""
    program = _program(getattr(models, model))
    launches, functions = _render(program)
    (kernel,) = [k for k in functions if k.startswith("check_range")]
    check, copy = _launches_of(launches, functions, kernel)
    assert re.search(r"KILN_LAUNCH_SYNC\(k_train__check_range_\w+_c0, 1, kiln_ord_threads\(trip\), stream", check)
    assert _trip(check, 7) == 7 and "kiln_blocks(trip), KILN_BLOCK" in copy
    assert not any(", 1, 1, stream" in line for line in _launches_of(launches, functions, kernel))


# ----------------------------------------------------------------------------- nvcc
@pytest.mark.skipif(NVCC is None, reason="nvcc (CUDA toolkit) is not on PATH: cannot compile the .cu")
def test_nvcc_compiles_models(tmp_path):
    """The CNN and MLP steps (every launch shape: grids, reductions, the three GEMMs, the
    ordered label check), a reduction whose tail checks and an ordered loop with float and
    integer checks."""
    def build(name):
        hand_made = {"sum_check": sum_with_check_program, "ordered_checks": ordered_checks_program}
        program = hand_made[name]() if name in hand_made else _program(getattr(models, name))
        cu = tmp_path / f"{name}.cu"
        cu.write_text(render_module({"train": program}, program_variables([program])))
        return subprocess.run([NVCC, "-arch=sm_90", "-c", str(cu), "-o", str(cu.with_suffix(".o"))],
                              check=False, capture_output=True, text=True, timeout=300)

    names = ("cnn_train_step", "mlp_train_step", "sum_check", "ordered_checks")
    with ThreadPoolExecutor(max_workers=2) as pool:
        for name, result in zip(names, pool.map(build, names)):
            assert result.returncode == 0, f"{name}: nvcc failed\n{result.stderr[-4000:]}"
