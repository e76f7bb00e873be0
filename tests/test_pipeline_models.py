"""The full pass pipeline keeps the numbers of every sample training step.

Each step runs through the interpreter before optimization and after the whole pipeline,
the latter through the simulated memory-planned arena, at two batch sizes.
"""
import numpy as np
import pytest

from compiler.ir.interpreter import run_function
from compiler.passes.manager import run_pipeline
from tests import models

BUILDERS = [models.linear_regression_step, models.mlp_train_step, models.cnn_train_step, models.lenet_train_step]


@pytest.mark.parametrize("builder", BUILDERS, ids=lambda b: b.__name__)
@pytest.mark.parametrize("batch", [1, 5])
def test_pipeline_keeps_numerics(builder, batch):
    fn, state, feeds = builder(batch=batch)
    before_state, before = run_function(fn, state, feeds)
    result = run_pipeline(fn)
    after_state, after = run_function(result.fn, state, feeds, check_memory_plan=True)
    assert before.keys() == after.keys() and before_state.keys() <= after_state.keys()
    for key in before:
        np.testing.assert_allclose(after[key], before[key], rtol=1e-4, atol=1e-5, err_msg=key)
    for key in before_state:
        np.testing.assert_allclose(after_state[key], before_state[key], rtol=1e-4, atol=1e-6, err_msg=key)
    assert result.stages[-1].ops_after < result.stages[0].ops_after

