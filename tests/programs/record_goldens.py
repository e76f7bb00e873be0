"""Record TensorFlow's output for every program in catalog.PROGRAMS into goldens/*.json.

Runs only where TensorFlow is installed (``/path/to/tf-venv/bin/python
tests/programs/record_goldens.py [names...]``); tests/test_programs.py compares Kiln with the
checked-in files on machines without it.  Each program runs in a scratch folder through
``harness.py tf`` (the same harness the test runs with ``kiln``).  A golden holds the printed
lines and, for programs that write TensorBoard events, every scalar (tag, step, value) and
the tags of the other summaries, read back with TensorBoard's own reader.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from catalog import GOLDENS, HERE, PROGRAMS


def read_events(folder: str) -> dict:
    """{"scalars": {tag: [[step, value], ...]}, "tags": {kind: [tags]}} via TensorBoard's reader."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(folder, size_guidance={ea.SCALARS: 0, ea.HISTOGRAMS: 0, ea.IMAGES: 0})
    acc.Reload()
    tags = acc.Tags()
    scalars = {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in tags.get("scalars", [])}
    kinds = {k: sorted(v) for k, v in tags.items() if isinstance(v, list) and k in ("histograms", "images")}
    return {"scalars": scalars, "tags": kinds, "graph": bool(tags.get("graph"))}


def record(program) -> dict:
    with tempfile.TemporaryDirectory() as cwd:
        run = subprocess.run([sys.executable, str(HERE / "harness.py"), "tf", str(program.path), *program.flags],
                             cwd=cwd, capture_output=True, text=True, timeout=600,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if run.returncode:
            raise SystemExit(f"{program.name} failed under TensorFlow:\n{run.stderr[-3000:]}")
        events = {folder: read_events(os.path.join(cwd, folder)) for folder in program.events}
    import tensorflow as tf

    return {"program": program.name, "flags": list(program.flags), "tensorflow": tf.__version__,
            "stdout": run.stdout.splitlines(), "events": events}


def main(names) -> None:
    GOLDENS.mkdir(exist_ok=True)
    for program in PROGRAMS:
        if names and program.name not in names:
            continue
        golden = record(program)
        program.golden.write_text(json.dumps(golden, indent=1) + "\n")
        print(f"{program.name}: {len(golden['stdout'])} lines, {len(golden['events'])} event folders")


if __name__ == "__main__":
    main(sys.argv[1:])
