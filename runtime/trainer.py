"""The compiled trainer: run an artifact's ``train`` entry over a data source for some
epochs, validating with its ``eval`` entry, with per-epoch metrics, checkpoints and exact
resume.

    from runtime import trainer
    history = trainer.train("build/mlp", "digits", epochs=10, ckpt_dir="build/mlp/ckpt",
                            run_dir="runs/mlp", resize_images=True)
    metrics = trainer.evaluate("build/mlp", "digits", ckpt="build/mlp/ckpt")
    outputs = trainer.predict("build/mlp", "x.npy", ckpt="build/mlp/ckpt", out="pred.csv")

``evaluate``/``predict`` live in ``runtime.scoring``, the shared entry-running helpers in
``runtime.entries``; both are re-exported here.  See docs/trainer.md.  Never imports
``compiler``.
"""
from __future__ import annotations

import os
import sys
import time

from . import checkpoint as ck
from . import data as kdata
from . import distributed as dist
from .collective import communicator
from .entries import (EntryInfo, Mean, TrainerError, check_features, data_key, entry_info, load_weights,
                      open_data, run_epoch)
from .scoring import evaluate, predict
from .train_log import RunLog, progress_bar

__all__ = ["EntryInfo", "TrainerError", "TrainingInterrupted", "entry_info", "evaluate", "predict",
           "train"]


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`train`: which epoch was running and the newest checkpoint this
    run can be resumed from (``checkpoint`` None when there is none)."""

    def __init__(self, epoch, epochs, checkpoint=None, checkpoint_epoch=None):
        super().__init__(epoch, epochs)
        self.epoch, self.epochs = epoch, epochs
        self.checkpoint, self.checkpoint_epoch = checkpoint, checkpoint_epoch

    def message(self) -> str:
        """One line for the user: where it stopped and how to continue."""
        where = f"interrupted in epoch {self.epoch}/{self.epochs}"
        if self.checkpoint is None:
            return f"{where}; no checkpoint of this run was saved yet (nothing to resume)"
        return (f"{where}; newest checkpoint {self.checkpoint} (epoch {self.checkpoint_epoch}); "
                "rerun with --resume to continue from it")


def _format(row) -> str:
    parts = [f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "time_s")]
    return "  ".join(parts)


def _check_ckpt_dir(ckpt_dir, resume, overwrite):
    """Refuse to start a run that would replace or ignore earlier checkpoints by accident."""
    if resume and overwrite:
        raise TrainerError("--resume and --overwrite exclude each other")
    if (resume or overwrite) and not ckpt_dir:
        flag = "--resume" if resume else "--overwrite"
        raise TrainerError(f"{flag} needs --ckpt-dir DIR (the checkpoint folder of the run)")
    if ckpt_dir and not (resume or overwrite) and ck.has_checkpoints(ckpt_dir):
        latest = ck.latest_checkpoint(ckpt_dir, verify=False)
        newest = f" (newest: {os.path.basename(latest)})" if latest else ""
        raise TrainerError(f"{ckpt_dir} already holds checkpoints{newest}; pass --resume to continue "
                           "that run, --overwrite to start over and replace them, or choose another "
                           "--ckpt-dir")


def _resume(state, ckpt_dir, seed, data, log):
    """Restore the latest checkpoint of ``ckpt_dir``: ``(start epoch, steps, history, file,
    run id of each history row)``."""
    latest = ck.latest_checkpoint(ckpt_dir)
    if latest is None:
        log(f"kiln: no checkpoint in {ckpt_dir} yet: starting from the initial weights")
        return 0, 0, [], None, []
    step, meta = ck.restore_state(state, latest)
    meta = meta or {}
    if meta.get("seed", seed) != seed:
        print(f"kiln: warning: checkpoint was trained with seed {meta['seed']}, resuming with "
              f"seed {seed}: the data order differs from the original run", file=sys.stderr)
    if meta.get("data") and data_key(data) and meta["data"] != data_key(data):
        print(f"kiln: warning: checkpoint was trained on {meta['data']}, resuming on "
              f"{data_key(data)}", file=sys.stderr)
    start, steps = int(meta.get("epoch", 0)), int(meta.get("steps", step or 0))
    log(f"kiln: resumed from {latest} (epoch {start}, step {steps})")
    history = list(meta.get("history", []))
    return start, steps, history, latest, list(meta.get("history_runs", []))[:len(history)]


def _split_for_training(source, val_data, val_split, seed):
    """``(train source, validation source or None)``."""
    if val_data is not None:
        return source, open_data(val_data, "validation data")
    if val_split:
        return kdata.split(source, float(val_split), seed=seed)
    return source, None


# ----------------------------------------------------------------------------- train
def train(artifact_dir, data, epochs=1, batch_size=32, val_split=0.1, val_data=None,
          ckpt_dir=None, resume=False, seed=0, run_dir=None, keep=5, progress=True,
          shuffle_buffer=10000, log=print, overwrite=False, resize_images=False, plot_every=0):
    """Train the artifact's ``train`` entry for ``epochs`` epochs; returns the history.

    ``data``/``val_data``: data specs or Sources (docs/data.md).  Without ``val_data`` a
    seeded ``val_split`` fraction is held out (0 or None: no validation); validation runs
    the ``eval`` entry when the artifact has one.  A checkpoint is saved into ``ckpt_dir``
    after every epoch (metadata ``epoch``, ``seed``, ``steps``, ``history`` and the data
    record ``data``/``val_split``/``val_data``/``resize_images``); ``resume`` restores its
    latest and continues at the next epoch with the same data order.  A ``ckpt_dir`` that
    already holds checkpoints needs ``resume`` or ``overwrite`` (:class:`TrainerError`).
    Features whose value count differs from the model's input are an error unless
    ``resize_images``.  The history is a list of per-epoch dicts (``epoch``, train metrics,
    ``val_*``, ``time_s``), appended to ``run_dir``/metrics.jsonl under a new run id and
    written as TensorBoard scalars (step = epoch) to an event file there;
    ``curves.png`` is drawn at the end (and every ``plot_every`` epochs).  Ctrl-C raises
    :class:`TrainingInterrupted` (a ``KeyboardInterrupt``) naming the checkpoint to resume.

    Under an MPI launcher (``kiln train --workers N``, ``mpiexec``) each process is one rank
    of a data-parallel run of an artifact compiled with ``--distributed``: ``batch_size``
    per rank, rank 0's weights and checkpoint broadcast, rank 0 alone writing checkpoints,
    metrics and plots (``runtime.distributed``, docs/distributed.md).
    """
    comm = communicator()
    if comm.rank != 0:  # rank 0 alone restores, logs and writes checkpoints, metrics and plots
        ckpt_dir, resume, overwrite, run_dir, progress, log = None, False, False, None, False, _quiet
    _check_ckpt_dir(ckpt_dir, resume, overwrite)
    art, state, _ = load_weights(artifact_dir)
    run_log = RunLog(run_dir, plot_every=plot_every)
    try:
        step = _distributed_step(art, comm)
        return _train_loop(art, state, data, epochs, batch_size, val_split, val_data, ckpt_dir,
                           resume, seed, run_log, keep, progress, shuffle_buffer, log, overwrite,
                           resize_images, step)
    finally:
        run_log.close()
        state.close()


def _quiet(*_args, **_kwargs):
    """The log of ranks other than 0."""


def _distributed_step(art, comm):
    """The split step of a distributed artifact (None for a single-entry one, which only
    one process can train)."""
    record = dist.distributed_record(art)
    if record is None:
        if comm.size > 1:
            raise TrainerError(f"{comm.size} ranks need an artifact whose train step is split around the "
                               f"gradient allreduce; recompile {art.path} with kiln compile --distributed "
                               "(or use hvd.DistributedOptimizer in the model)")
        return None
    return dist.DistributedStep(art, record, comm)


def _train_loop(art, state, data, epochs, batch_size, val_split, val_data, ckpt_dir, resume, seed,
                run_log, keep, progress, shuffle_buffer, log, overwrite, resize_images, step=None):
    tinfo = step.info if step else entry_info(art, "train")
    einfo = entry_info(art, "eval") if "eval" in art.entry_points else None
    source, val = _split_for_training(open_data(data), val_data, val_split, seed)
    note = check_features(tinfo, source.feature_shape, resize_images)
    if note:
        log(f"kiln: {note}")
    start, steps, history, saved, run_ids = _resume(state, ckpt_dir, seed, data, log) if resume \
        else (0, 0, [], None, [])
    if step is not None and step.comm.size > 1:  # rank 0's weights and position, on every rank
        start, steps, history, saved, run_ids = step.comm.bcast_object((start, steps, history, saved, run_ids))
        dist.broadcast_state(state, step.comm)
    run_log.backfill(history, run_ids)
    saved_epoch = start
    record = {"seed": seed, "batch_size": batch_size, "ranks": step.comm.size if step else 1,
              "data": data_key(data),
              "val_split": 0.0 if val_data is not None else float(val_split or 0.0),
              "val_data": data_key(val_data), "resize_images": bool(resize_images)}
    if start >= epochs:
        log(f"kiln: the checkpoint already reached epoch {start}; nothing to train "
            f"(pass --epochs above {start} to train more)")
    epoch = start
    try:
        for epoch in range(start, epochs):
            row = _train_epoch(state, tinfo, einfo, source, val, epoch, epochs, batch_size, seed,
                               shuffle_buffer, progress, step)
            steps += row.pop("_steps")
            history.append(row)
            run_ids.append(run_log.run_id)
            log(f"epoch {epoch + 1}/{epochs}  {_format(row)}  ({row['time_s']:.2f} s)")
            run_log.add(row, history)
            if ckpt_dir:
                if overwrite and saved is None:
                    ck.remove_checkpoints(ckpt_dir)  # only now: an interrupted first epoch keeps them
                saved = ck.save_state(state, ckpt_dir, step=steps, keep=keep,
                                      metadata={"epoch": epoch + 1, "steps": steps, "history": history,
                                                "history_runs": run_ids, **record})
                saved_epoch = epoch + 1
    except KeyboardInterrupt:
        saved, saved_epoch = _newest_of_run(ckpt_dir, run_log.run_id, saved, saved_epoch)
        raise TrainingInterrupted(epoch + 1, epochs, saved, saved_epoch) from None
    if start < epochs:
        run_log.finish(history)
    return history


def _newest_of_run(ckpt_dir, run_id, saved, saved_epoch):
    """``(file, epoch)`` of the newest complete checkpoint this run saved (one whose save was
    interrupted after its file was complete counts), else the one it resumed from."""
    latest = ck.latest_checkpoint(ckpt_dir) if ckpt_dir else None
    if latest is not None and latest != saved:
        _, _, meta = ck.load_checkpoint(latest)
        if (meta or {}).get("history_runs", [None])[-1:] == [run_id]:
            return latest, meta.get("epoch")
    return saved, saved_epoch


def _train_epoch(state, tinfo, einfo, source, val, epoch, epochs, batch_size, seed, shuffle_buffer,
                 progress, step=None) -> dict:
    """Train one epoch (and validate); the epoch's row, with ``_steps`` the batches run.
    With a distributed ``step``, on this rank's shard, the metrics averaged over all ranks."""
    t0 = time.perf_counter()
    bar = progress_bar(source.num_examples, f"epoch {epoch + 1}/{epochs}", progress)
    mean = Mean()

    def tick(n, m):
        if bar is not None:
            bar.update(n)
            bar.set_postfix_str(_format(m.result()), refresh=False)

    batch_args = {"epochs": 1, "seed": seed, "start_epoch": epoch, "shuffle_buffer": shuffle_buffer}
    try:
        if step is None:
            run_epoch(state, tinfo, source, batch_size, mean, tick, **batch_args)
            n_steps = -(-mean.count // batch_size)
        else:
            n_steps = dist.run_train_epoch(step, state, source, batch_size, mean, tick, **batch_args)
    finally:
        if bar is not None:
            bar.close()
    row = {"epoch": epoch + 1, **mean.result()}
    if val is not None and einfo is not None:
        vmean = Mean()
        if step is None:
            run_epoch(state, einfo, val, batch_size, vmean, shuffle_buffer=0)
        else:
            dist.run_eval(state, einfo, val, batch_size, vmean, step.comm, shuffle_buffer=0)
        row.update(vmean.result("val_"))
    row["time_s"] = round(time.perf_counter() - t0, 4)
    row["_steps"] = n_steps
    return row
