"""Every op and its gradient, compiled by the CUDA backend, against the reference interpreter:
on the host emulator (always) and on a GPU (when there is one).  The op table is
tests/op_table.py (the LLVM backend's differential test uses the same)."""
import pytest

from tests.cuda_kit import MODES, race_checking
from tests.op_table import assert_op_matches, op_names, op_results

BATCHES = (1, 7, 64)


@pytest.fixture(scope="module", params=MODES)
def results(request):
    """Emulated runs check every kernel for data races too (a race fails the step)."""
    config = {"backend": "cuda", "cuda_emulate": request.param == "emulated"}
    with race_checking():
        return op_results(config, BATCHES)


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("op", op_names())
def test_cuda_op_and_gradient_match_interpreter(results, op, batch):
    # CUDA's libm (expf, tanhf, erff, ...) is within a few ulp of the CPU's, not bit-equal
    assert_op_matches(results, op, batch, rtol=3e-5)
