"""Helpers for the distributed tests: launching commands as MPI ranks on localhost.

Tests that need MPI use the ``mpi`` fixture (``require_mpi``): it skips cleanly when mpi4py
or mpiexec is missing (``pip install 'kiln[mpi]'`` provides both).
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES = os.path.join(ROOT, "tests", "fixtures")


def mpiexec_or_skip() -> str:
    """mpiexec's path (as ``kiln train --workers`` finds it); skip without mpi4py/mpiexec."""
    from compiler.cli_errors import CliError
    from compiler.cli_workers import find_mpiexec

    if importlib.util.find_spec("mpi4py") is None:
        pytest.skip("mpi4py is not installed (pip install 'kiln[mpi]')")
    try:
        return find_mpiexec()
    except CliError as err:
        pytest.skip(str(err))


def env(**extra) -> dict:
    """The environment of a launched job: this checkout importable, one BLAS thread per
    rank (two ranks share this machine's cores), root allowed for OpenMPI, ``extra``."""
    from compiler.cli_workers import ROOT_ENV

    path = os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, **ROOT_ENV, "PYTHONPATH": path, "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1", **extra}


def run(cmd, timeout=180, **extra):
    """Run ``cmd`` (a list) to completion; the CompletedProcess (text output)."""
    return subprocess.run(cmd, env=env(**extra), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def ranks(n, args, timeout=180, **extra):
    """``mpiexec -n n python ARGS...``."""
    return run([mpiexec_or_skip(), "-n", str(n), sys.executable, *args], timeout, **extra)


def kiln(*args, timeout=180, **extra):
    """``python -m compiler.cli ARGS...`` (``--workers`` launches mpiexec itself)."""
    return run([sys.executable, "-m", "compiler.cli", *map(str, args)], timeout, **extra)


def rank_pids(root_pid: int, rank: int) -> list:
    """Pids of the processes below ``root_pid`` whose MPI rank is ``rank`` (Linux /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, stack = [], list(children.get(root_pid, []))
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        if f"PMI_RANK={rank}".encode() in environ or f"OMPI_COMM_WORLD_RANK={rank}".encode() in environ:
            found.append(pid)
    return found
