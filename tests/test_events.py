"""runtime.events (TensorBoard event files) and the trainer's RunLog scalars, read back with
TensorBoard's own reader."""
import json
import os

import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator as ea_mod  # test extra

from runtime.events import EventWriter
from runtime.train_log import METRICS_JSONL, RunLog



def scalars(logdir) -> dict:
    """{tag: [(step, value), ...]} over every event file in ``logdir``."""
    ea = ea_mod.EventAccumulator(str(logdir), size_guidance={ea_mod.SCALARS: 0})
    ea.Reload()
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def test_flushed_events_are_readable_before_close(tmp_path):
    writer = EventWriter(tmp_path, flush_secs=1e9)
    writer.add_scalars({"loss": 0.5, "acc": 1}, 1)
    writer.flush()  # what a crash after this point keeps
    assert scalars(tmp_path) == {"loss": [(1, 0.5)], "acc": [(1, 1.0)]}
    writer.add_scalars({"loss": 0.25}, 2)
    writer.close()
    writer.close()
    assert scalars(tmp_path)["loss"] == [(1, 0.5), (2, 0.25)]
    with pytest.raises(ValueError, match="closed"):
        writer.add_scalars({"loss": 0.1}, 3)


def test_two_writers_in_one_second_get_two_files(tmp_path):
    with EventWriter(tmp_path) as a, EventWriter(tmp_path) as b:
        a.add_scalars({"x": 1.0}, 1)
        b.add_scalars({"x": 2.0}, 2)
    assert a.path != b.path and sorted(os.listdir(tmp_path)) == sorted(map(os.path.basename, [a.path, b.path]))
    assert sorted(scalars(tmp_path)["x"]) == [(1, 1.0), (2, 2.0)]


def test_run_log_scalars_follow_metrics_jsonl(tmp_path):
    """Each epoch row becomes scalars at step = epoch in events/<run id>/, flushed when added;
    a resumed run backfilled into a new folder writes the missing epochs under their run id:
    each events/<run id>/ holds exactly the metrics.jsonl rows of that run id."""
    history = [{"epoch": 1, "loss": 0.9, "val_loss": 1.1, "time_s": 0.5},
               {"epoch": 2, "loss": 0.4, "val_loss": 0.6, "time_s": 0.25}]
    log = RunLog(tmp_path / "a", run_id="r1")
    for i, row in enumerate(history):
        log.add(row, history[:i + 1])
        assert scalars(tmp_path / "a/events/r1")["loss"][-1] == (row["epoch"], pytest.approx(row["loss"]))
    log.close()
    again = RunLog(tmp_path / "a", run_id="r0")  # a fresh run in the same folder
    again.add(history[0], history[:1])
    again.close()
    resumed = RunLog(tmp_path / "b", run_id="r2")
    resumed.backfill(history, ["r1", "r1"])
    resumed.add({"epoch": 3, "loss": 0.2, "val_loss": 0.3, "time_s": 0.125}, history)
    resumed.close()
    for folder, runs in (("a", ["r0", "r1"]), ("b", ["r1", "r2"])):
        rows = [json.loads(line) for line in (tmp_path / folder / METRICS_JSONL).read_text().splitlines()]
        assert sorted(os.listdir(tmp_path / folder / "events")) == runs
        for run in runs:
            mine = [r for r in rows if r["run"] == run]
            got = scalars(tmp_path / folder / "events" / run)
            assert sorted(got) == ["loss", "time_s", "val_loss"]
            for key, events in got.items():
                assert [s for s, _ in events] == [r["epoch"] for r in mine]
                np.testing.assert_allclose([v for _, v in events], [r[key] for r in mine], rtol=1e-6)
