"""Elided printing of large constants (``print_function(fn, elide_above)``, ``elide_constants``)
and the parser's refusal of elided text; full printing and the round trip stay as they were."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from compiler.ir.function import Instr, ValueNamer
from compiler.ir.parser import IRParseError, parse_function
from compiler.ir.printer import (ELIDE_ABOVE, ELIDED, elide_constants, format_attr, format_dense,
                                 print_function)
from compiler.ir.types import ALL_DTYPES, TensorType, float32
from tests.test_ir_text import _attr_values, build_sample


def _with_constant(value, loc=""):
    """``build_sample()`` plus one more constant instr, holding ``value``, that is fetched."""
    fn = build_sample()
    v = ValueNamer()(TensorType(float32, tuple(value.shape)))
    fn.body.append(Instr("constant", [], {"value": value}, v, loc))
    fn.fetches.append(("extra:0", v))
    return fn


def test_large_constants_are_elided_with_dtype_and_shape():
    big = np.arange(300, dtype=np.float32).reshape(3, 100)
    assert format_dense(big, 16) == f"dense<f32[3,100]>({ELIDED})"
    assert format_dense(np.arange(16, dtype=np.int32), 16).startswith("dense<i32[16]>([0, 1, ")  # at the limit
    assert format_dense(np.arange(17, dtype=np.int32), 16) == f"dense<i32[17]>({ELIDED})"
    assert format_dense(np.array(2.5, np.float64), 0) == f"dense<f64[]>({ELIDED})"
    assert format_dense(big) == format_attr(big) and ELIDED not in format_dense(big)  # default: in full
    nested = format_attr({"a": [np.zeros(20, bool), np.ones(2, np.int64)]}, 16)
    assert nested == f'{{"a": [dense<bool[20]>({ELIDED}), dense<i64[2]>([1, 1])]}}'
    assert ELIDE_ABOVE == 16


def test_print_function_elides_only_when_asked():
    fn = build_sample()  # holds a dense<f32[1,3]> constant
    full = print_function(fn)
    assert print_function(fn, None) == full and ELIDED not in full
    assert print_function(fn, 3) == full  # 3 elements: not more than 3
    elided = print_function(fn, 2)
    assert elided == full.replace("dense<f32[1,3]>([[0.5, -1.0, 2.0]])", f"dense<f32[1,3]>({ELIDED})")
    assert elided != full


def test_elide_constants_matches_the_printer_and_skips_strings():
    fn = _with_constant(np.linspace(0, 1, 40, dtype=np.float32).reshape(2, 20),
                           loc='looks like dense<f32[20]>(1.0, 2.0) but is a "string"')
    fn.body[0].attrs["note"] = "dense<f32[99]>([1.0])"
    full = print_function(fn)
    for limit in (0, 2, 3, 16, 40, None):
        assert elide_constants(full, limit) == print_function(fn, limit)
    assert 'loc("looks like dense<f32[20]>(1.0, 2.0) but is a \\"string\\"")' in elide_constants(full, 0)
    assert 'note="dense<f32[99]>([1.0])"' in elide_constants(full, 0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_attr_values, st.integers(0, 30))
def test_text_elision_agrees_with_the_printer_property(value, limit):
    assert elide_constants(format_attr(value), limit) == format_attr(value, limit)


_float_arrays = st.sampled_from([d for d in ALL_DTYPES if d.is_floating]).flatmap(
    lambda d: hnp.arrays(d.np, hnp.array_shapes(min_dims=1, max_dims=2, max_side=4),
                         elements=hnp.from_dtype(d.np, allow_nan=True, allow_infinity=True)))


@settings(max_examples=300, deadline=None)
@given(_float_arrays)
def test_element_literals_never_hold_parentheses(arr):
    """What elide_constants relies on: a dense literal's first ')' is its last character."""
    text = format_dense(arr)
    body = text[text.index(">(") + 2:]
    assert body.index(")") == len(body) - 1 and "(" not in body


def test_parser_refuses_elided_text_naming_the_line():
    fn = _with_constant(np.ones((4, 5), np.float32))
    text = print_function(fn, ELIDE_ABOVE)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if f"dense<f32[4,5]>({ELIDED})" in t)
    with pytest.raises(IRParseError, match="constant were elided") as info:
        parse_function(text)
    assert info.value.line == line and "--full-constants" in str(info.value)
    assert ELIDED in info.value.source_line


def test_round_trip_of_full_text_is_unaffected():
    fn = _with_constant(np.arange(100, dtype=np.float32).reshape(4, 25) / 7)
    full = print_function(fn)
    back = parse_function(full)
    assert print_function(back) == full
    np.testing.assert_array_equal(back.body[-1].attrs["value"], fn.body[-1].attrs["value"])
    assert print_function(back, 16) == print_function(fn, 16) and math.prod((4, 25)) > 16
