"""Every op and its gradient, compiled by the LLVM backend, against the reference interpreter.

All ops live in one graph (tests/op_table.py), so one artifact is compiled per run
signature; each op is one test case per batch size (1, 7 and 64 exercise the symbolic batch
dim and vector tails).
"""
import pytest

from tests.op_table import assert_op_matches, op_names, op_results

BATCHES = (1, 7, 64)


@pytest.fixture(scope="module")
def results():
    return op_results({"backend": "compiled"}, BATCHES)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("op", op_names())
def test_compiled_op_and_gradient_match_interpreter(results, op, batch):
    assert_op_matches(results, op, batch)
