"""Every op of the op table (tests/op_table.py) and its gradient, compiled by the MLU backend
and run on the MLU emulator, against the reference interpreter (a fallback to the
interpreter would warn, which op_results turns into a failure)."""
import pytest

from tests.op_table import assert_op_matches, op_names, op_results

BATCHES = (1, 7, 64)


@pytest.fixture(scope="module")
def results():
    return op_results({"backend": "mlu"}, BATCHES)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("op", op_names())
def test_mlu_op_and_gradient_match_interpreter(results, op, batch):
    assert_op_matches(results, op, batch)
