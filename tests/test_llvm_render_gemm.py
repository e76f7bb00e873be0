"""The LLVM renderer's GEMM statements: plain and fused epilogues (bias + relu, two outputs,
scratch C, transposed stores, reading C, checks, float64), one shared engine per module,
the threaded engine, batched transposed operands."""
import re

import numpy as np
import pytest

from compiler.ir.types import bool_, float32, float64
from compiler.lower import kernel_ir as K
from tests.llvm_kit import C, Cases, N, O, V

CASES = Cases()
case = CASES.add
F = float32


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    """Every case of this module, rendered into one module and compiled once."""
    return CASES.build(tmp_path_factory)


def run(lib, name, n, **arrays):
    return CASES.run(lib, name, n, **arrays)


GK, GN = 19, 45  # C[N, GN] = X[N, GK] @ W[GK, GN]
row, col, acc = V("row"), V("col"), V("acc", F)
c_at = O("add", O("mul", row, C(GN)), col)


def _gemm(epilogue=None, c="c", accumulate=False, dtype=F, n=GN, k=GK):
    return K.Gemm(N, C(n), C(k), K.Operand("x", C(0), C(k)), K.Operand("w", C(0), C(n)),
                  K.Operand(c, C(0), C(n)), accumulate=accumulate, epilogue=epilogue)


def _bias_relu(dtype=F):
    a = V("acc", dtype)
    return K.Store("c", c_at, O("relu", O("add", a, K.Load("bias", col, dtype))))


case("gemm_plain", {"x": F, "w": F, "c": F}, _gemm(accumulate=True))
case("gemm_bias_relu", {"x": F, "w": F, "bias": F, "c": F}, _gemm(_bias_relu()))
case("gemm_two_outputs", {"x": F, "w": F, "bias": F, "pre": F, "c": F},
     _gemm(K.Block([K.Let(V("t", F), O("add", acc, K.Load("bias", col, F))),
                    K.Store("pre", c_at, V("t", F)),
                    K.Store("c", c_at, O("relu", V("t", F)))])))
case("gemm_scratch_c", {"x": F, "w": F, "bias": F, "c": F, "out": F},
     _gemm(K.Store("out", c_at, O("add", acc, K.Load("bias", col, F)))))
CASES["gemm_scratch_c"].buffers["c"] = K.BufferDecl("c", F, (), "scratch")
case("gemm_transposed_store", {"x": F, "w": F, "c": F, "ct": F},
     _gemm(K.Store("ct", O("add", O("mul", col, N), row), O("mul", acc, C(2.0, F)))))
case("gemm_residual", {"x": F, "w": F, "c": F},  # reads C: must see it from before the product
     _gemm(K.Store("c", c_at, O("add", acc, K.Load("c", c_at, F))), k=400))
case("gemm_check", {"x": F, "w": F, "c": F},
     _gemm(K.Block([K.Check(O("greater", acc, C(100.0, F), dtype=bool_), "activation {value} too large", acc),
                    K.Store("c", c_at, acc)])))
case("gemm_bias_relu_again", {"x": F, "w": F, "bias": F, "c": F}, _gemm(_bias_relu()))  # shares the variant
case("gemm_f64", {"x": float64, "w": float64, "bias": float64, "c": float64},
     _gemm(_bias_relu(float64)))
case("gemm_big", {"x": F, "w": F, "bias": F, "c": F},
     K.Gemm(N, C(128), C(64), K.Operand("x", C(0), C(64)), K.Operand("w", C(0), C(128)),
            K.Operand("c", C(0), C(128)),
            epilogue=K.Store("c", O("add", O("mul", row, C(128)), col),
                             O("relu", O("add", acc, K.Load("bias", col, F))))))
BATCH, BM, BK, BN = 3, 5, 7, 33
case("gemm_batched_t", {"a": F, "b": F, "c": F},
     K.Gemm(C(BM), C(BN), C(BK), K.Operand("a", C(0), C(BM), transposed=True, batch_stride=C(BK * BM)),
            K.Operand("b", C(0), C(BK), transposed=True, batch_stride=C(0)),
            K.Operand("c", C(0), C(BN), batch_stride=C(BM * BN)), batch=C(BATCH), accumulate=True))


def _gemm_inputs(n, k=GK, m=GN, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed + n)
    return (rng.uniform(-1, 1, (n, k)).astype(dtype), rng.uniform(-1, 1, (k, m)).astype(dtype),
            rng.uniform(-1, 1, m).astype(dtype))


@pytest.mark.parametrize("n", [1, 7, 37, 200])
def test_gemm_epilogues(lib, n):
    x, w, bias = _gemm_inputs(n)
    ref = x.astype(np.float64) @ w
    c = np.ones((n, GN), np.float32)
    assert run(lib, "gemm_plain", n, x=x, w=w, c=c)[0] == 0
    np.testing.assert_allclose(c, ref + 1, rtol=1e-5, atol=1e-5)
    for name in ("gemm_bias_relu", "gemm_bias_relu_again"):
        c = np.full((n, GN), np.nan, np.float32)
        assert run(lib, name, n, x=x, w=w, bias=bias, c=c)[0] == 0
        np.testing.assert_allclose(c, np.maximum(ref + bias, 0), rtol=1e-5, atol=1e-5)
    pre, c = np.zeros((n, GN), np.float32), np.zeros((n, GN), np.float32)
    assert run(lib, "gemm_two_outputs", n, x=x, w=w, bias=bias, pre=pre, c=c)[0] == 0
    np.testing.assert_allclose(pre, ref + bias, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(c, np.maximum(pre, 0))
    c, out = np.zeros((n, GN), np.float32), np.zeros((n, GN), np.float32)
    assert run(lib, "gemm_scratch_c", n, x=x, w=w, bias=bias, c=c, out=out)[0] == 0
    np.testing.assert_allclose(out, ref + bias, rtol=1e-5, atol=1e-5)
    c, ct = np.zeros((n, GN), np.float32), np.zeros((GN, n), np.float32)
    assert run(lib, "gemm_transposed_store", n, x=x, w=w, c=c, ct=ct)[0] == 0
    np.testing.assert_allclose(ct, 2 * ref.T, rtol=1e-5, atol=1e-5)
    x64, w64, b64 = (v.astype(np.float64) for v in (x, w, bias))
    c64 = np.zeros((n, GN))
    assert run(lib, "gemm_f64", n, x=x64, w=w64, bias=b64, c=c64)[0] == 0
    np.testing.assert_allclose(c64, np.maximum(x64 @ w64 + b64, 0), rtol=1e-12, atol=1e-12)


def test_gemm_epilogue_reading_c_sees_its_old_values(lib):
    x, w, _ = _gemm_inputs(37, k=400)  # K above the engine's K block: C holds partial sums
    c = np.random.default_rng(1).normal(size=(37, GN)).astype(np.float32)
    want = c + x.astype(np.float64) @ w
    assert run(lib, "gemm_residual", 37, x=x, w=w, c=c)[0] == 0
    np.testing.assert_allclose(c, want, rtol=1e-4, atol=1e-4)


def test_gemm_epilogue_with_check_runs_after_the_product(lib):
    x, w, _ = _gemm_inputs(9)
    c = np.zeros((9, GN), np.float32)
    assert run(lib, "gemm_check", 9, x=x, w=w, c=c) == (0, "")
    np.testing.assert_allclose(c, x.astype(np.float64) @ w, rtol=1e-5, atol=1e-5)
    x[4] = 50.0
    status, message = run(lib, "gemm_check", 9, x=x, w=w, c=c)
    assert status == 3 and re.fullmatch(r"activation [0-9.e+]+ too large", message), message


def test_gemm_epilogues_share_one_engine(lib):
    text = lib.ir_text
    engines = re.findall(r'define hidden i32 @"?(kiln_sgemm_epilogue[^".(]*)"?\(', text)
    assert len(engines) == 1, engines  # one engine copy however many fused epilogues
    for name in ("t_gemm_bias_relu", "t_gemm_two_outputs", "t_gemm_big", "t_gemm_scratch_c"):
        assert re.search(rf'define internal void @"?{name}\.epilogue', text), name
        body = text[text.index(f'define i32 @"{name}"') if f'define i32 @"{name}"' in text else text.index(f"define i32 @{name}"):]
        assert re.search(rf'call i32 @"?{engines[0]}"?\(', body[:body.index("\n}")]), name
    for name in ("t_gemm_transposed_store", "t_gemm_check", "t_gemm_residual"):  # via a temporary
        assert not re.search(rf'@"?{name}\.epilogue', text)
    assert not re.search(r'define i32 @"?kiln_sgemm"?\(', text)  # plain products call the same engine
    assert len(re.findall(r'define internal void @"?kiln_sgemm[^"(]*\.tile"?\(', text)) == 1


@pytest.mark.parametrize("n", [64, 301])
def test_gemm_threaded_engine_with_epilogue(lib, n, two_threads):
    x, w, bias = _gemm_inputs(n, 64, 128, seed=5)
    c = np.zeros((n, 128), np.float32)
    assert run(lib, "gemm_big", n, x=x, w=w, bias=bias, c=c)[0] == 0
    np.testing.assert_allclose(c, np.maximum(x.astype(np.float64) @ w + bias, 0), rtol=1e-5, atol=1e-5)


def test_batched_transposed_gemm(lib):
    rng = np.random.default_rng(9)
    a = rng.normal(size=(BATCH, BK, BM)).astype(np.float32)  # stored transposed
    b = rng.normal(size=(BN, BK)).astype(np.float32)  # transposed, shared by the batch
    c = rng.normal(size=(BATCH, BM, BN)).astype(np.float32)
    want = c + np.einsum("bkm,nk->bmn", a.astype(np.float64), b)
    assert run(lib, "gemm_batched_t", 1, a=a, b=b, c=c)[0] == 0
    np.testing.assert_allclose(c, want, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def lib_avx2(tmp_path_factory):
    """The epilogue cases rendered for an AVX2-only target (the 6x16 GEMM engine)."""
    return CASES.build_avx2(tmp_path_factory, ["gemm_plain", "gemm_bias_relu", "gemm_bias_relu_again",
                                               "gemm_two_outputs", "gemm_scratch_c", "gemm_transposed_store",
                                               "gemm_f64"])


def test_gemm_epilogues_on_avx2(lib_avx2):
    assert "zmm" not in lib_avx2.asm and "ymm" in lib_avx2.asm
    for n in (1, 37):
        test_gemm_epilogues(lib_avx2, n)
