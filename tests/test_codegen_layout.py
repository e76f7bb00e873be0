"""Buffer placement and constant pooling, shared by the LLVM and CUDA modules
(compiler/codegen/layout.py): every role and space of a Program gets the address the
workspace layout of kernel_ir.Program documents, equal constants are stored once across
entry points on both backends, and both backends refuse the same unknown state."""
from __future__ import annotations

import re

import numpy as np
import pytest

from compiler.codegen.layout import MAX_WORKSPACE, ConstantPool, Place, Variables, max_batch, places, workspace_bytes
from compiler.ir.types import N, as_dtype
from compiler.lower import kernel_ir as K

F32, I64 = as_dtype("float32"), as_dtype("int64")


def _program(const=(1.0, 2.0), name="p") -> K.Program:
    """Every buffer role and space; ``out = x + c`` so the program is runnable."""
    decl = K.BufferDecl
    bufs = {"x": decl("x", F32, (N, 2), "feed", index=0, key="x:0"),
            "out": decl("out", F32, (N, 2), "fetch", index=0, key="out:0"),
            "w": decl("w", F32, (2,), "state", key="w"),
            "a_s": decl("a_s", F32, (2,), "arena", space="static", offset=64),
            "a_b": decl("a_b", F32, (N, 2), "arena", space="batch", offset=8),
            "s_s": decl("s_s", F32, (2,), "scratch", space="static", offset=64),
            "s_b": decl("s_b", F32, (N, 2), "scratch", space="batch", offset=8),
            "c": decl("c", F32, (2,), "const", data=np.array(const, np.float32))}
    i = K.Var("i", I64)
    body = K.For(i, K.Const(0, I64), K.Op("mul", (K.Batch(I64), K.Const(2, I64)), I64),
                 K.Store("out", i, K.Op("add", (K.Load("x", i, F32), K.Load("c", K.Op("imod", (i, K.Const(2, I64)), I64),
                                                                               F32)), F32)))
    return K.Program(name, bufs, [K.Kernel("k", ["x", "c"], ["out"], body)], static_bytes=128, batch_bytes=16,
                     scratch_static_bytes=192, scratch_batch_bytes=24, feeds=["x:0"], fetches=["out:0"])


def test_places_follow_the_program_layout():
    got = dict(zip(_program().buffers, places(_program(), Variables.of([("v", F32, (3,)), ("w", F32, (2,))]),
                                                ConstantPool(64))))
    assert got == {"x": Place("feed", 0), "out": Place("fetch", 0), "w": Place("state", 1),
                   "a_s": Place("workspace", base=64), "a_b": Place("workspace", base=128, per_n=8),
                   "s_s": Place("workspace", base=128 + 64, per_n=16),
                   "s_b": Place("workspace", base=128 + 192, per_n=16 + 8), "c": Place("const", 0)}
    assert workspace_bytes(_program()) == (128 + 192, 16 + 24)
    assert max_batch(320, 40) * 40 + 320 <= MAX_WORKSPACE < (max_batch(320, 40) + 1) * 40 + 320


def test_unknown_state_and_role_are_errors():
    with pytest.raises(ValueError, match="uses state 'w', not in the variables"):
        places(_program(), Variables.of([]), ConstantPool(64))
    bad = K.Program("p", {"b": K.BufferDecl("b", F32, (2,), "arena", space="heap")}, [])
    with pytest.raises(ValueError, match="unknown role/space 'arena'/'heap'"):
        places(bad, Variables.of([]), ConstantPool(64))
    with pytest.raises(ValueError, match="duplicate variable names"):
        Variables.of([("v", F32, (1,)), ("v", I64, ())])


def test_constant_pool_dedups_by_bytes_and_aligns():
    pool = ConstantPool(256)
    ids = [pool.add([1.0, 2.0], F32), pool.add(np.arange(3, dtype=np.int64), I64), pool.add((1.0, 2.0), "float32"),
           pool.add(np.zeros(0, np.float32), F32)]
    assert ids == [0, 1, 0, 2] and pool.offsets == [0, 256, 512]
    blob = pool.blob()
    assert len(blob) == 512 and blob[:8] == np.array([1, 2], np.float32).tobytes()
    assert blob[256:280] == np.arange(3, dtype=np.int64).tobytes() and not any(blob[8:256])
    assert Variables.of([("v", "float64", (2, 3)), ("n", I64, ())]).nbytes == (48, 8)


def test_both_backends_store_equal_constants_once():
    """Two entry points with the same constant and one with another: two constants."""
    from compiler.codegen.cuda import render_module
    from compiler.codegen.llvm.module import build_module

    programs = {"a": _program(), "b": _program(), "c": _program(const=(3.0, 4.0))}
    variables = [("w", F32, (2,))]
    llvm = str(build_module(programs, variables))
    assert len(re.findall(r"^@\"?kiln\.abi\.const[^=]*= private", llvm, re.M)) == 2
    cuda = render_module(programs, variables)
    assert "#define KILN_CONST_BYTES 264LL" in cuda  # 8 bytes at 0, 8 bytes at 256
    assert cuda.count("s->consts + 0LL") == 2 and cuda.count("s->consts + 256LL") == 1
