"""The LLVM CPU backend's sgemm engine against numpy.

Each configuration (host SIMD, AVX2-only, bias+relu epilogue) is compiled once per module.
"""
import ctypes
import dataclasses
import os
import re
import subprocess
import sys

import llvmlite.ir as ir
import numpy as np
import pytest

from compiler.codegen.llvm import build, gemm, target

SIZES = [(1, 1, 1), (7, 13, 1), (13, 7, 33), (33, 69, 13), (69, 100, 7), (100, 33, 69),
         (69, 69, 69), (1, 100, 69), (100, 1, 13), (13, 33, 0)]
FLAGS = [(0, 0), (1, 0), (0, 1), (1, 1)]


def compile_sgemm(tmp_path_factory, tag, cfg=None, epilogue=None, tgt=None):
    """Build a library holding ``kiln_sgemm`` and return its bound ctypes function."""
    module = ir.Module(name=tag)
    gemm.emit_sgemm(module, cfg=cfg, epilogue=epilogue)
    out = tmp_path_factory.mktemp(tag)
    res = build.compile_module(module, str(out / "gemm.so"), target=tgt,
                               asm_path=str(out / "gemm.s"))
    fn = gemm.bind(ctypes.CDLL(res.path), n_extra=len(epilogue.extra_args) if epilogue else 0)
    fn.asm = (out / "gemm.s").read_text()
    fn.path = res.path
    return fn


@pytest.fixture(scope="module")
def sgemm(tmp_path_factory):
    return compile_sgemm(tmp_path_factory, "host")


@pytest.fixture(scope="module")
def sgemm_avx2(tmp_path_factory):
    tgt = target.create_target(features=target.without_avx512(target.host_features()))
    if not tgt.has("avx2") or not tgt.has("fma"):
        pytest.skip("host has no AVX2/FMA")
    return compile_sgemm(tmp_path_factory, "avx2", cfg=gemm.AVX2, tgt=tgt)


@pytest.fixture(scope="module")
def sgemm_sse(tmp_path_factory):
    return compile_sgemm(tmp_path_factory, "sse", cfg=gemm.SSE)


def small_blocks():
    """The host's register tile with tiny cache blocks: several K, M and N blocks (and
    edge tiles of every kind) at sizes a test can afford; threads with fewer than 20 rows
    use the other K block depth."""
    cfg = gemm.config_for()
    return dataclasses.replace(cfg, kc=2 * cfg.vec + 3, mc=2 * cfg.mr, nc=2 * cfg.nr, prefetch=3,
                               kc_few=cfg.vec + 5, few_rows=20)


@pytest.fixture(scope="module")
def sgemm_small_blocks(tmp_path_factory):
    return compile_sgemm(tmp_path_factory, "small_blocks", cfg=small_blocks())


@pytest.fixture(scope="module")
def sgemm_bias_relu(tmp_path_factory):
    return compile_sgemm(tmp_path_factory, "bias_relu", epilogue=gemm.bias_relu_epilogue())


def operands(m, n, k, ta, tb, rng, pad=0):
    """A, B (stored transposed per flag, with ``pad`` extra columns) and C, all float32."""
    def mat(rows, cols):
        full = rng.uniform(-1, 1, (rows, cols + pad)).astype(np.float32)
        return full[:, :cols]
    a = mat(k, m) if ta else mat(m, k)
    b = mat(n, k) if tb else mat(k, n)
    return a, b, mat(m, n)


def run(fn, a, b, c, ta, tb, beta, nthreads, *extra):
    """Call the kernel on numpy views (row-major, leading dims from the strides)."""
    m, n = c.shape
    k = a.shape[0] if ta else a.shape[1]
    ld = [x.strides[0] // 4 for x in (a, b, c)]
    status = fn(m, n, k, a.ctypes.data, ld[0], ta, b.ctypes.data, ld[1], tb,
                c.ctypes.data, ld[2], beta, nthreads, *[x.ctypes.data for x in extra])
    assert status == 0


def reference(a, b, c, ta, tb, beta):
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    out = (a64.T if ta else a64) @ (b64.T if tb else b64)
    return out + beta * c if beta else out


def check(fn, m, n, k, ta, tb, beta, nthreads, rng, pad=0):
    a, b, c = operands(m, n, k, ta, tb, rng, pad)
    if beta == 0:
        c[...] = np.nan  # C must not be read when beta == 0
    want = reference(a, b, c, ta, tb, beta)
    run(fn, a, b, c, ta, tb, beta, nthreads)
    np.testing.assert_allclose(c, want, rtol=1e-4, atol=1e-5 * (k + 1))


@pytest.mark.parametrize("ta,tb", FLAGS)
@pytest.mark.parametrize("beta", [0.0, 1.0])
@pytest.mark.parametrize("nthreads", [1, 2])
def test_odd_sizes(sgemm, ta, tb, beta, nthreads):
    rng = np.random.default_rng(0)
    for m, n, k in SIZES:
        check(sgemm, m, n, k, ta, tb, beta, nthreads, rng)


@pytest.mark.parametrize("ta,tb", FLAGS)
@pytest.mark.parametrize("m,n,k", [(200, 150, 90),   # threads split rows
                                   (7, 400, 200),    # few rows: threads split columns
                                   (50, 700, 300),   # skinny M (9 row panels): columns
                                   (20, 25, 500),    # one column panel, 4 row panels: rows
                                   (150, 64, 500),   # two column panels, 2 M and K blocks
                                   (150, 65, 70),    # three column panels
                                   (301, 97, 800)])  # several K and M blocks
def test_blocked_and_threaded(sgemm, m, n, k, ta, tb):
    rng = np.random.default_rng(1)
    for beta in (0.0, 1.0):
        check(sgemm, m, n, k, ta, tb, beta, 2, rng)


@pytest.mark.parametrize("nthreads", [3, 5])
def test_uneven_thread_splits(sgemm, nthreads):
    """Split points rounded to the nearest MR (NR) multiple: ranges of unequal sizes, some
    empty, the last one ending in a partial tile; rows, and columns for a short M."""
    rng = np.random.default_rng(9)
    for m, n, k in [(40, 30, 300), (256, 33, 40), (9, 300, 100), (43, 17, 400)]:  # > 64³
        check(sgemm, m, n, k, 0, 0, 1.0, nthreads, rng)


_GUARDED = r"""
import ctypes, mmap, sys
import numpy as np
from compiler.codegen.llvm import gemm

fn = gemm.bind(ctypes.CDLL(sys.argv[1]))
libc = ctypes.CDLL(None)
keep = []

def guarded(rows, cols, rng):
    # a float32 matrix whose last element ends where a PROT_NONE page begins
    nbytes, page = rows * cols * 4, mmap.PAGESIZE
    span = (nbytes + page - 1) // page * page + page
    mm = mmap.mmap(-1, span)
    base = ctypes.addressof(ctypes.c_char.from_buffer(mm))
    assert libc.mprotect(ctypes.c_void_p(base + span - page), ctypes.c_size_t(page), 0) == 0
    arr = np.frombuffer((ctypes.c_char * nbytes).from_address(base + span - page - nbytes), np.float32)
    arr = arr.reshape(rows, cols)
    arr[...] = rng.uniform(-1, 1, (rows, cols))
    keep.append(mm)
    return arr

rng = np.random.default_rng(3)
for m, n, k, ta, threads in ((20, 25, 37, 0, 1), (20, 25, 37, 1, 1), (61, 40, 300, 0, 2), (61, 40, 300, 1, 2)):
    a = guarded(k, m, rng) if ta else guarded(m, k, rng)
    b = guarded(k, n, rng)
    c = np.zeros((m, n), np.float32)
    assert fn(m, n, k, a.ctypes.data, a.shape[1], ta, b.ctypes.data, n, 0, c.ctypes.data, n, 0.0, threads) == 0
    want = (a.T if ta else a).astype(np.float64) @ b
    np.testing.assert_allclose(c, want, rtol=1e-4, atol=1e-3)
print("ok")
"""


def test_no_read_outside_a_and_b(sgemm):
    """Edge panels (M, N, K not multiples of the tile; few columns; transposed A) read
    nothing past A or B: both end at a PROT_NONE page, so such a read kills the (separate)
    process."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, "-c", _GUARDED, sgemm.path], capture_output=True, text=True,
                          cwd=root, env={**os.environ, "PYTHONPATH": root}, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", (proc.returncode, proc.stderr[-2000:])


def test_leading_dims_and_default_threads(sgemm):
    rng = np.random.default_rng(2)
    check(sgemm, 70, 90, 110, 0, 0, 1.0, 0, rng, pad=5)   # nthreads 0: libgomp's default
    check(sgemm, 70, 90, 110, 1, 1, 0.0, 2, rng, pad=3)


def test_general_beta_and_wide_n(sgemm):
    rng = np.random.default_rng(3)
    check(sgemm, 5, gemm.config_for().nc + 37, 9, 0, 0, 0.5, 1, rng)  # more than one NC block


def test_empty_is_a_no_op(sgemm):
    c = np.ones((0, 4), np.float32)
    a, b = np.ones((0, 3), np.float32), np.ones((3, 4), np.float32)
    run(sgemm, a, b, c, 0, 0, 0.0, 1)


@pytest.mark.parametrize("ta,tb", FLAGS)
def test_avx2_configuration(sgemm_avx2, ta, tb):
    assert "ymm" in sgemm_avx2.asm and "zmm" not in sgemm_avx2.asm
    rng = np.random.default_rng(4)
    for m, n, k in SIZES + [(200, 150, 300)]:
        for beta, nthreads in ((0.0, 1), (1.0, 2)):
            check(sgemm_avx2, m, n, k, ta, tb, beta, nthreads, rng)


def test_narrow_configuration(sgemm_sse):
    """The 4x8 tile of <4 x float> (no FMA assumed): blocking is a parameter, not a constant."""
    rng = np.random.default_rng(6)
    for ta, tb in FLAGS:
        for m, n, k in [(1, 1, 1), (13, 7, 33), (69, 100, 300)]:
            check(sgemm_sse, m, n, k, ta, tb, 1.0, 2, rng)


def test_concurrent_calls_from_threads(sgemm):
    """Packing buffers are per call and per thread: simultaneous callers do not interfere."""
    import threading
    rng = np.random.default_rng(7)
    jobs = [operands(150, 130, 120, 0, 0, rng) for _ in range(4)]
    wants = [reference(a, b, c, 0, 0, 0.0) for a, b, c in jobs]
    errors = []

    def work(a, b, c, want):
        for _ in range(5):
            run(sgemm, a, b, c, 0, 0, 0.0, 2)
            if not np.allclose(c, want, rtol=1e-4, atol=1e-3):
                errors.append("mismatch")

    threads = [threading.Thread(target=work, args=(*job, want)) for job, want in zip(jobs, wants)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("ta,tb", FLAGS)
def test_edge_tiles_and_blocks(sgemm_small_blocks, ta, tb):
    """Every row count of an M-edge tile (the reduced 1/2/4/8-row k loops and the full
    one), N edges, K = 1 and K spanning several K blocks, with beta 0 and 1."""
    cfg = small_blocks()
    rng = np.random.default_rng(8)
    for m in range(1, 2 * cfg.mr + 2):
        n = (1, cfg.nr - 1, cfg.nr + 1, 2 * cfg.nr + 3)[m % 4]
        for k in (1, cfg.kc + 1, 3 * cfg.kc + 5):
            for beta, nthreads in ((0.0, 1), (1.0, 2)):
                check(sgemm_small_blocks, m, n, k, ta, tb, beta, nthreads, rng)
    check(sgemm_small_blocks, 2 * cfg.mc + 3, 2 * cfg.nc + 5, 2 * cfg.kc, ta, tb, 0.5, 2, rng)


def test_avx512_micro_kernel_keeps_accumulators_in_registers(sgemm):
    """On AVX-512 the full k loop is 28 zmm FMAs on 14 broadcasts and 2 B vectors, with
    the B prefetch and no vector stack traffic (a spilled accumulator would halve the
    speed).  The packed-A loop broadcasts at constant offsets of one pointer and has no
    stack traffic at all; the in-place one (A's runtime row stride) may reload row offsets
    into general registers."""
    cfg = gemm.config_for()
    if cfg != gemm.AVX512:
        pytest.skip("host has no AVX-512")
    # Single-block loops: a label, lines without labels, the jump back to it.
    loops = [m.group(0) for m in re.finditer(
        r"^(\.LBB\w+):\n(?:(?!\.LBB).*\n)*?\s+j\w+\s+\1\n", sgemm.asm, re.M)]
    loops = [body for body in loops if body.count("vbroadcastss") == cfg.mr]
    packed = [body for body in loops
              if len(re.findall(r"vbroadcastss\s+-?\d*\(%\w+\),", body)) == cfg.mr]
    assert len(packed) == 1 and len(loops) == 2, "expected a packed and an in-place k loop"
    for body in loops:
        assert body.count("vfmadd231ps") == cfg.mr * cfg.nr // cfg.vec
        assert "zmm" in body and "prefetcht0" in body
        assert not re.search(r"[xyz]mm.*\(%rsp\)|\(%rsp\).*[xyz]mm", body)
    assert "(%rsp)" not in packed[0]


def test_host_configuration_uses_vector_fma(sgemm):
    cfg = gemm.config_for()
    reg = {16: "zmm", 8: "ymm", 4: "xmm"}[cfg.vec]
    assert "vfmadd" in sgemm.asm and reg in sgemm.asm


@pytest.mark.parametrize("ta,tb", FLAGS)
@pytest.mark.parametrize("m,n,k,nthreads", [(1, 1, 1, 1), (13, 33, 7, 1), (69, 100, 13, 2),
                                            (150, 70, 800, 2), (7, 600, 100, 2),
                                            (7, 13, 0, 1)])
def test_bias_relu_epilogue(sgemm_bias_relu, m, n, k, nthreads, ta, tb):
    rng = np.random.default_rng(5)
    for beta in (0.0, 1.0):
        a, b, c = operands(m, n, k, ta, tb, rng)
        bias = rng.uniform(-1, 1, n).astype(np.float32)
        want = np.maximum(reference(a, b, c, ta, tb, beta) + bias, 0.0)
        run(sgemm_bias_relu, a, b, c, ta, tb, beta, nthreads, bias)
        np.testing.assert_allclose(c, want, rtol=1e-4, atol=1e-5 * (k + 1))


def twice_into_out():
    """An epilogue that writes ``2 * tile`` into ``out`` (extra args: out, M, out's leading
    dim, a flag) and keeps C only where the flag is non-zero (``Epilogue.keeps_c``)."""
    from compiler.codegen.llvm.gemm_kernel import I32, I64, PTR, c64, fptr, if_then_values, masked_store

    def emit(b, ctx):
        out, m, ldo = ctx.args[:3]
        rows = []
        for r, accs in enumerate(ctx.accs):
            row = ctx.row_index(r)
            vals = [b.fmul(v, ctx.splat(ir.Constant(ir.FloatType(), 2.0))) for v in accs]

            def store(vals, row=row):
                for j, v in enumerate(vals):
                    p = fptr(b, out, b.add(b.mul(row, ldo), b.add(ctx.col, c64(j * ctx.cfg.vec))))
                    if ctx.masked:
                        masked_store(b, ctx.module, v, p, ctx.col_masks[j])
                    else:
                        b.store(v, p, align=4)
                return vals
            rows.append(if_then_values(b, b.icmp_signed("<", row, m), store, vals))
        return rows

    keeps = lambda b, args: b.icmp_signed("!=", args[3], ir.Constant(I32, 0))
    return gemm.Epilogue(emit=emit, extra_args=(PTR, I64, I64, I32), keeps_c=keeps)


@pytest.fixture(scope="module")
def sgemm_twice(tmp_path_factory):
    fn = compile_sgemm(tmp_path_factory, "twice", cfg=small_blocks(), epilogue=twice_into_out())
    fn.argtypes = fn.argtypes[:13] + [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int32]
    return fn


@pytest.mark.parametrize("m,n,k,nthreads", [(13, 33, 7, 1), (69, 100, 13, 2), (1, 40, 1, 1),
                                            (30, 70, 100, 2)])  # k = 100: several K blocks
def test_epilogue_consuming_the_tile_leaves_c_alone(sgemm_twice, m, n, k, nthreads):
    rng = np.random.default_rng(m + k)
    one_block = k <= small_blocks().kc_few
    for beta, keep in ((0.0, 0), (1.0, 0), (0.5, 1)):
        a, b, c = operands(m, n, k, 0, 1, rng)
        want = 2 * reference(a, b, c, 0, 1, beta)
        c0, out = c.copy(), np.full((m, n), np.nan, np.float32)
        status = sgemm_twice(m, n, k, a.ctypes.data, k, 0, b.ctypes.data, k, 1, c.ctypes.data, n,
                             beta, nthreads, out.ctypes.data, m, n, keep)
        assert status == 0
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5 * (k + 1))
        if keep:
            np.testing.assert_array_equal(c, out)
        elif one_block:
            np.testing.assert_array_equal(c, c0)  # neither the product nor the result was stored


def test_config_from_features():
    assert gemm.config_for(features="+avx2,+fma,+avx512f") == gemm.AVX512
    assert gemm.config_for(features="+avx2,+fma,-avx512f") == gemm.AVX2
    assert gemm.config_for(features="+sse4.2,-avx2") == gemm.SSE
    assert "-avx512f" in target.without_avx512("+avx2,+avx512f,+avx512bw").split(",")


def test_build_errors_are_clear(tmp_path):
    with pytest.raises(build.BuildError, match="invalid LLVM IR"):
        build.compile_module("define void @f( {", str(tmp_path / "bad.so"))
    good = 'define i32 @f() {\n  ret i32 0\n}\n'
    with pytest.raises(build.BuildError, match="kiln_no_such_lib"):
        build.compile_module(good, str(tmp_path / "x.so"), ["-lkiln_no_such_lib"])
    res = build.compile_module(good, str(tmp_path / "ok.so"))
    assert set(res.timings) >= {"optimize", "codegen", "link"}
    assert ctypes.CDLL(res.path).f() == 0
