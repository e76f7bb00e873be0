"""TF1 runtime switches and run options that Kiln accepts: graph mode is the only mode.

* ``tf.disable_v2_behavior()`` / ``tf.disable_eager_execution()`` are what TF1 code ported
  to TF2 calls first; Kiln always builds graphs, so they are accepted no-ops, and
  ``tf.executing_eagerly()`` is ``False``.
* ``tf.RunOptions`` / ``tf.RunMetadata`` are accepted by ``Session.run(..., options=,
  run_metadata=)``. Kiln records no traces: ``trace_level`` is kept but ignored, and
  ``run_metadata.step_stats`` stays empty (no per-op timings; ``kiln compile`` and the
  session's own timers are the way to profile).
"""
from __future__ import annotations


def disable_v2_behavior():
    """Accepted no-op: Kiln always has TF1 (graph) behaviour."""


def disable_eager_execution():
    """Accepted no-op: Kiln always builds graphs."""


def executing_eagerly() -> bool:
    """``False``: ops build a graph that a ``Session`` runs."""
    return False


class RunOptions:
    """Per-run options for ``Session.run``; accepted, and tracing is ignored (see the module doc)."""

    NO_TRACE, SOFTWARE_TRACE, HARDWARE_TRACE, FULL_TRACE = 0, 1, 2, 3

    class TraceLevel:
        """The trace-level constants, also reachable as ``RunOptions.TraceLevel.FULL_TRACE``."""

        NO_TRACE, SOFTWARE_TRACE, HARDWARE_TRACE, FULL_TRACE = 0, 1, 2, 3

    def __init__(self, trace_level=0, timeout_in_ms=0, inter_op_thread_pool=0,
                 output_partition_graphs=False, report_tensor_allocations_upon_oom=False):
        self.trace_level, self.timeout_in_ms = trace_level, timeout_in_ms
        self.inter_op_thread_pool = inter_op_thread_pool
        self.output_partition_graphs = output_partition_graphs
        self.report_tensor_allocations_upon_oom = report_tensor_allocations_upon_oom


class StepStats:
    """Per-device op timings of a traced run; Kiln traces nothing, so ``dev_stats`` is empty."""

    def __init__(self):
        self.dev_stats = []

    def ListFields(self):
        return []


class RunMetadata:
    """What a traced ``Session.run`` fills in; with Kiln ``step_stats`` stays empty."""

    def __init__(self):
        self.step_stats = StepStats()
        self.partition_graphs = []
        self.cost_graph = None


TF_API = {"tf": {
    "disable_v2_behavior": disable_v2_behavior, "disable_eager_execution": disable_eager_execution,
    "executing_eagerly": executing_eagerly, "RunOptions": RunOptions, "RunMetadata": RunMetadata,
}}
