"""Tutorial-style TF1 programs (tests/programs/) run unchanged under Kiln and print what
TensorFlow printed.

Each program runs on the interpreter and on the compiled backend, in a scratch folder,
through ``tests/programs/harness.py kiln`` (only the import changes; both frameworks start
from the same seeded weights) and its output is
compared, number by number, with TensorFlow's recorded in ``tests/programs/goldens/`` by
``record_goldens.py``.  Programs that write TensorBoard event files are read back with
TensorBoard's reader and compared tag by tag, step by step.  Accuracies printed over a few
hundred examples may differ by a flip or two after float32 training, so numbers on an
accuracy line get an absolute tolerance of 0.02; every other number 2e-3 relative (unless
the catalog says otherwise, with its reason).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "programs"))
from catalog import HERE, PROGRAMS, numbers_and_text  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ACCURACY_ATOL = 0.02


def run_kiln(program, cwd: Path, backend: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KILN_BACKEND": backend,
           "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run([sys.executable, str(HERE / "harness.py"), "kiln", str(program.path), *program.flags],
                          cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def assert_same_output(ours: list[str], theirs: list[str], name: str, rtol: float, atol: float) -> None:
    assert len(ours) == len(theirs), f"{name}: {len(ours)} lines printed, TensorFlow printed {len(theirs)}:\n" \
        + "\n".join(ours[-10:])
    for k, (mine, tf_line) in enumerate(zip(ours, theirs)):
        got, text = numbers_and_text(mine)
        want, tf_text = numbers_and_text(tf_line)
        assert text == tf_text, f"{name} line {k + 1}: {mine!r} vs TensorFlow's {tf_line!r}"
        np.testing.assert_allclose(got, want, rtol=rtol, atol=ACCURACY_ATOL if "ccuracy" in mine else atol,
                                   err_msg=f"{name} line {k + 1}: {mine!r} vs TensorFlow's {tf_line!r}")


def assert_same_events(folder: Path, want: dict, name: str, rtol: float, racy_tags=()) -> None:
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(str(folder), size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.IMAGES: 0})
    acc.Reload()
    tags = acc.Tags()
    assert sorted(tags.get("scalars", [])) == sorted(want["scalars"]), f"{name}: scalar tags in {folder}"
    for tag, series in want["scalars"].items():
        got = [[e.step, e.value] for e in acc.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in series], f"{name}: steps of {tag}"
        if any(part in tag for part in racy_tags):
            continue
        atol = ACCURACY_ATOL if "accuracy" in tag else 1e-5
        np.testing.assert_allclose([v for _, v in got], [v for _, v in series], rtol=rtol, atol=atol,
                                   err_msg=f"{name}: values of {tag}")
    for kind, expected in want["tags"].items():
        assert sorted(tags.get(kind, [])) == expected, f"{name}: {kind} tags in {folder}"
    assert bool(tags.get("graph")) == want["graph"], f"{name}: graph event in {folder}"


CASES = [pytest.param(p, backend, id=f"{p.name}-{backend}") for p in PROGRAMS
         for backend in ("interpreter", "compiled") if backend == "interpreter" or p.compiled]


@pytest.mark.parametrize("program,backend", CASES)
def test_program_matches_tensorflow(program, backend, tmp_path):
    if program.blocker:
        pytest.xfail(program.blocker)
    golden = json.loads(program.golden.read_text())
    run = run_kiln(program, tmp_path, backend)
    assert run.returncode == 0, f"{program.name} failed under Kiln ({backend}):\n{run.stderr[-4000:]}"
    assert_same_output(run.stdout.splitlines(), golden["stdout"], program.name, program.rtol, program.atol)
    if golden["events"]:
        pytest.importorskip("tensorboard")
        for folder, want in golden["events"].items():
            assert_same_events(tmp_path / folder, want, program.name, program.rtol, program.racy_tags)
