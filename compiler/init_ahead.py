"""Initial values drawn in a forked child process while the compile runs.

Running every variable's initializer (the reference interpreter: Philox draws, fills) and
writing ``init.safetensors`` only needs the graph, not the compiled code, and takes a
single-threaded compile ~0.3 s for the seed-002 CNN (3.3 M random values).  The compile
driver (``compile._compile_entries_into``) therefore forks a child for it before the passes
run, where forking is safe (``host.fork_is_safe``), and collects it when the artifact is
written (``artifact.write_artifact``): on two cores the values come for free beside the
passes and rendering, which use one.

The child writes ``init.safetensors`` and its result (the variables left out as all-zero,
its seconds) into a hidden folder of its own in the artifact folder being built, then exits
without unwinding; :meth:`InitAhead.result` moves the file into place.  A child that fails
is redone here, so its error is raised as usual; :meth:`InitAhead.close` stops a child that
is not needed (the compile failed, or the optimized entries use a variable it lacks) and
removes its folder.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path


class InitAhead:
    """A forked child computing and writing the initial values (see the module doc)."""

    def __init__(self, path: Path, variables, compute):
        from .artifact import write_init_values

        self.path, self.variables, self.compute = Path(path), list(variables), compute
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # the child writes beside the artifact's files, not over them: an unused or killed
        # child leaves nothing in the artifact (its folder goes with close())
        self.tmp = tempfile.mkdtemp(prefix=".kiln-init-", dir=self.path.parent)
        self.written = os.path.join(self.tmp, self.path.name)
        self.report = os.path.join(self.tmp, "result.json")
        self.pid = os.fork()
        if self.pid == 0:  # the child: values, file, report, exit without unwinding
            code = 1
            try:
                t0 = time.perf_counter()
                zeros = write_init_values(Path(self.written), self.variables, compute())
                with open(self.report, "w") as f:
                    json.dump({"zeros": zeros, "seconds": time.perf_counter() - t0}, f)
                code = 0
            finally:
                os._exit(code)

    def covers(self, variables) -> bool:
        """Whether the child's file holds ``variables`` (the optimized entries' may be fewer:
        the file's extra tensors are ignored by the runtime)."""
        mine = {(v.name, str(v.dtype), tuple(v.shape)) for v in self.variables}
        return all((v.name, str(v.dtype), tuple(v.shape)) in mine for v in variables)

    def result(self) -> tuple:
        """``(zero-filled variable names, seconds)`` once ``path`` is written: the child's
        file moved there, or (when the child failed) values computed and written here."""
        from .artifact import write_init_values

        if self._wait() == 0:
            with contextlib.suppress(OSError, ValueError, KeyError):
                with open(self.report) as f:
                    report = json.load(f)
                os.replace(self.written, self.path)
                return list(report["zeros"]), float(report["seconds"])
        t0 = time.perf_counter()
        zeros = write_init_values(self.path, self.variables, self.compute())
        return zeros, time.perf_counter() - t0

    def _wait(self):
        if self.pid is None:
            return None
        pid, self.pid = self.pid, None
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    def close(self) -> None:
        """Stop the child if it still runs; remove its folder."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._wait()
        shutil.rmtree(self.tmp, ignore_errors=True)
