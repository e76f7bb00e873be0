"""What the cleanup-pass tests share (tests/test_passes_cleanup*.py): the passes in both
orders, running one pass on IR text, and comparing two training steps' numbers."""
import numpy as np

from compiler.ir.interpreter import run_function
from compiler.ir.parser import parse_function
from compiler.ir.printer import print_function
from compiler.ir.verifier import verify
from compiler.passes import constant_folding, cse, pruning, simplify

PASSES = (constant_folding, pruning, cse, simplify)
PIPELINE_ORDER = (constant_folding, simplify, cse, pruning)  # the pass manager's order


def apply(pass_module, text, **kwargs):
    """Parse ``text``, run one pass, verify; returns (printed result, PassResult)."""
    fn = parse_function(text)
    verify(fn)
    result = pass_module.run(fn, **kwargs)
    verify(result.fn)
    return print_function(result.fn), result


def normalized(text):
    """The printer's form of hand-written IR (values renumbered)."""
    return print_function(parse_function(text))


def clone(fn):
    return parse_function(print_function(fn))


def assert_same_step(before, after, state, feeds, rtol=1e-5, atol=1e-6):
    """Both functions give the same fetches and new state (a dropped state write keeps the old value)."""
    new_a, out_a = run_function(before, state, feeds)
    new_b, out_b = run_function(after, state, feeds)
    assert out_a.keys() == out_b.keys()
    for key in out_a:
        np.testing.assert_allclose(out_b[key], out_a[key], rtol=rtol, atol=atol, err_msg=key)
    for key in new_a:
        np.testing.assert_allclose(new_b.get(key, state.get(key)), new_a[key], rtol=rtol, atol=atol, err_msg=key)


def output_types(fn):
    return [(k, v.type) for k, v in fn.fetches] + [(k, v.type) for k, v in fn.state_out]
