"""Hand-made kernel-IR programs shared by the CUDA backend's parallel-kernel tests
(tests/test_cuda_kernels_parallel*.py): built and run on the emulator by the check tests,
compiled by nvcc with the models' modules."""
from compiler.ir.types import N, as_dtype
from compiler.lower import kernel_ir as K

I64, F32 = as_dtype("int64"), as_dtype("float32")


def const(v):
    """An int64 constant."""
    return K.Const(v, I64)


def sum_with_check_program() -> K.Program:
    """out = sum(x) over N, failing when the sum is negative: a full reduction whose tail
    (thread 0) holds a check."""
    bufs = {"x": K.BufferDecl("x", F32, (N,), "feed", index=0, key="x:0"),
            "out": K.BufferDecl("out", F32, (), "fetch", index=0, key="out:0")}
    acc, i = K.Var("acc", F32), K.Var("i", I64)
    body = K.Block([K.DeclareAcc(acc, K.Const(0.0, F32)),
                    K.For(i, const(0), K.Batch(I64), K.Accumulate(acc, "add", K.Load("x", i, F32)), vectorize=True),
                    K.Check(K.Op("less", (acc, K.Const(0.0, F32)), as_dtype("bool")), "negative sum {value}", acc),
                    K.Store("out", const(0), acc)])
    return K.Program("p", bufs, [K.Kernel("sum", ["x"], ["out"], body)], feeds=["x:0"], fetches=["out:0"])


def ordered_checks_program() -> K.Program:
    """out[i] = 2 x[i] over an unflagged loop with three checks per iteration: x[i] NaN (a
    float value), 2 x[i] > 1000 (float), |x[i]| > 1e6 (the index i: an integer value)."""
    bufs = {"x": K.BufferDecl("x", F32, (N,), "feed", index=0, key="x:0"),
            "out": K.BufferDecl("out", F32, (N,), "fetch", index=0, key="out:0")}
    i, y, b = K.Var("i", I64), K.Var("y", F32), as_dtype("bool")
    x = K.Load("x", i, F32)
    body = K.Block([K.Check(K.Op("is_nan", (x,), b), "x is {value}", x),
                    K.Let(y, K.Op("mul", (x, K.Const(2.0, F32)), F32)),
                    K.Check(K.Op("greater", (y, K.Const(1000.0, F32)), b), "2x = {value} is too big", y),
                    K.Check(K.Op("greater", (K.Op("abs", (x,), F32), K.Const(1e6, F32)), b), "x[{value}] is huge", i),
                    K.Store("out", i, y)])
    kernel = K.Kernel("checks", ["x"], ["out"], K.Block([K.For(i, const(0), K.Batch(I64), body)]), origin="checks (hand-made)")
    return K.Program("p", bufs, [kernel], feeds=["x:0"], fetches=["out:0"])
