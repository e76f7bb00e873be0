"""The C-family base of the text backends (compiler/codegen/c/, templates/c/scalar.h.j2):
a second dialect renders the same kernel IR with its own spellings, and the shared scalar
helpers, built as plain C++ with g++ (no CUDA), give the reference's numbers."""
import shutil
import subprocess

import numpy as np
import pytest

from compiler.codegen.c import exprs as c
from compiler.codegen.c.environment import environment
from compiler.codegen.cuda.exprs import CUDA
from compiler.ir.ops.random import random_bits
from compiler.ir.types import as_dtype
from compiler.lower import kernel_ir as K

F32, F64, I64 = as_dtype("float32"), as_dtype("float64"), as_dtype("int64")
PLAIN = c.Dialect(name="plain C++", f32_bits="kiln_f32_bits({})", f64_bits="kiln_f64_bits({})",
                  fail="kiln_report({kind}, {cid}, {value}); return;")


def _program():
    return K.Program("p", {"x": K.BufferDecl("x", F32, (4,), "feed", index=0)}, [])


def test_a_dialect_spells_constants_and_failed_checks_its_own_way():
    for dialect, nan in ((CUDA, "__int_as_float(0x7fc00000)"), (PLAIN, "kiln_f32_bits(0x7fc00000)")):
        x = c.Exprs(_program(), dialect)
        assert x(K.Const(float("nan"), F32)) == nan
        assert x(K.Const(float("-inf"), F64)).startswith("(-" + dialect.f64_bits.split("(")[0])
        assert x(K.Const(1.5, F32)) == "1.5f"                      # ordinary literals are shared
    check = K.Check(K.Const(True, as_dtype("bool")), "label out of range", K.Const(7, I64))
    ids = []
    lines = c.Stmts(c.Exprs(_program(), PLAIN), lambda msg, dt: ids.append(msg) or 3).lines(check, 1)
    assert lines == ["  if (1) { kiln_report(i, 3, (long long)(7LL)); return; }"] and ids == ["label out of range"]
    cuda = c.Stmts(c.Exprs(_program(), CUDA), lambda msg, dt: 0).lines(check, 0)
    assert "kiln_fail_i(bufs.err, 0, (long long)(7LL)); return;" in cuda[0]


PROGRAM = r"""
#include <cstdio>
#include <cmath>
#define KILN_FN static inline
#define KILN_UNROLL
%s
int main() {
  for (unsigned long long i = 0; i < 8; ++i) printf("%%u\n", kiln_philox(12345u, 678u, i, 3ull));
  long long a[] = {7, -7, 7, -7, 5, -9223372036854775807LL - 1};
  long long b[] = {2, 2, -2, -2, 0, -1};
  for (int j = 0; j < 6; ++j) printf("%%lld %%lld\n", kiln_floordiv(a[j], b[j]), kiln_floormod(a[j], b[j]));
  printf("%%.17g %%.17g\n", kiln_fmod(-7.5, 2.0), kiln_fmod(7.5, -2.0));
  printf("%%d %%d\n", (int)std::isnan(kiln_max<double>(NAN, 1.0)), (int)std::isnan(kiln_min<float>(1.0f, NAN)));
  printf("%%.9g\n", kiln_unit(kiln_philox(1u, 2u, 0ull, 0ull)));
  return 0;
}
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++")
def test_scalar_helpers_built_as_plain_cpp_match_the_reference(tmp_path):
    header = environment().get_template("c/scalar.h.j2").render()
    assert "__device__" not in header and "__host__" not in header   # the target qualifies them
    (tmp_path / "t.cpp").write_text(PROGRAM % header)
    subprocess.run(["g++", "-std=c++17", "-O1", "-Wall", "-Werror", str(tmp_path / "t.cpp"), "-o",
                    str(tmp_path / "t")], check=True, capture_output=True, text=True)
    out = subprocess.run([str(tmp_path / "t")], check=True, capture_output=True, text=True).stdout.split("\n")
    assert [int(v) for v in out[:8]] == random_bits(8, 12345, 678, 3).tolist()
    a = np.array([7, -7, 7, -7], np.int64)
    b = np.array([2, 2, -2, -2], np.int64)
    pairs = [tuple(map(int, line.split())) for line in out[8:14]]
    assert pairs[:4] == list(zip(np.floor_divide(a, b).tolist(), np.mod(a, b).tolist()))
    assert pairs[4] == (0, 0)                                  # a zero divisor gives 0, as the IR says
    assert pairs[5] == (-(2 ** 63), 0)                         # MIN // -1 wraps
    assert [float(v) for v in out[14].split()] == [np.mod(-7.5, 2.0), np.mod(7.5, -2.0)]
    assert out[15] == "1 1"                                    # NaN propagates through max/min
    unit = ((random_bits(1, 1, 2, 0) >> 8).astype(np.float32) + np.float32(0.5)) * np.float32(2.0 ** -24)
    assert np.float32(float(out[16])) == unit[0]
