"""`kiln train`, `kiln eval` and `kiln predict`: run a compiled artifact through
``runtime.trainer`` (docs/trainer.md).  Registered on the parser by ``compiler/cli.py``."""
from __future__ import annotations

import argparse
import os
import sys
import time

from .cli_errors import CliError


# ----------------------------------------------------------------------------- train / eval / predict
def _run_trainer(fn, *args, **kwargs):
    """Call a ``runtime.trainer`` function, turning user errors into exit-2 CliErrors."""
    from runtime import ArtifactError, KilnRuntimeError
    from runtime.checkpoint import CheckpointError
    from runtime.data import DataError

    try:
        return fn(*args, **kwargs)
    except (ArtifactError, CheckpointError, DataError, ValueError, KeyError, ImportError,
            OSError, KilnRuntimeError) as err:  # KilnRuntimeError: e.g. a CUDA artifact without a GPU
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        raise CliError(str(msg))


def _info(line: str) -> None:
    """Which weights and examples eval/predict use: on stderr, so stdout holds the result."""
    print(line, file=sys.stderr)


def _check_artifact(path) -> None:
    if not os.path.isfile(os.path.join(path, "manifest.json")):
        raise CliError(f"artifact not found: {path} (no manifest.json; build one with kiln compile)")


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid {kind.__name__} value: {text!r}")
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def cmd_train(args) -> int:
    """``kiln train ARTIFACT --data SPEC``: train with checkpoints and metrics; Ctrl-C ends
    with one line naming the checkpoint to resume from (exit status 130)."""
    from runtime import trainer
    from runtime.collective import communicator, launched_by_mpi

    from .cli_workers import abort_on_failure, run_workers

    _check_artifact(args.artifact)
    if args.val_split is not None and not 0.0 <= args.val_split < 1.0:
        raise CliError(f"--val-split must be in [0, 1), got {args.val_split}")
    if args.workers > 1 and not launched_by_mpi():
        return run_workers(args.workers, args.argv)
    comm = communicator()
    with abort_on_failure(comm):
        return _train(trainer, args, time.perf_counter(), comm.rank == 0)


def _train(trainer, args, start, lead=True) -> int:
    """The ``kiln train`` run of this process (one rank of a distributed job)."""
    run_dir = args.run_dir or os.path.join("runs", os.path.basename(os.path.normpath(args.artifact)))
    try:
        history = _run_trainer(
            trainer.train, args.artifact, args.data, epochs=args.epochs, batch_size=args.batch_size,
            val_split=0.1 if args.val_split is None else args.val_split, val_data=args.val_data,
            ckpt_dir=args.ckpt_dir, resume=args.resume, overwrite=args.overwrite, seed=args.seed,
            run_dir=run_dir, progress=not args.no_progress, resize_images=args.resize_images,
            plot_every=args.plot_every)
    except trainer.TrainingInterrupted as stop:
        if lead:  # rank 0 reports for the job (it alone knows the checkpoints)
            print(f"kiln: {stop.message()}", file=sys.stderr)
        return 130
    if not lead:
        return 0
    where = f"; checkpoints in {args.ckpt_dir}" if args.ckpt_dir else ""
    print(f"kiln: trained to epoch {history[-1]['epoch'] if history else 0}/{args.epochs} in "
          f"{time.perf_counter() - start:.2f} s; metrics in {run_dir}{where}")
    return 0


def cmd_eval(args) -> int:
    """``kiln eval ARTIFACT --data SPEC``: metrics of the eval entry."""
    from runtime import trainer

    _check_artifact(args.artifact)
    metrics = _run_trainer(trainer.evaluate, args.artifact, args.data,
                           ckpt=args.ckpt or args.ckpt_dir, batch_size=args.batch_size,
                           split=args.split, val_split=args.val_split, seed=args.seed,
                           resize_images=args.resize_images, log=_info)
    print("  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    return 0


def cmd_predict(args) -> int:
    """``kiln predict ARTIFACT --data SPEC|X.npy --out FILE``: outputs of the predict entry."""
    from runtime import trainer

    _check_artifact(args.artifact)
    if not args.out.lower().endswith((".npy", ".csv")):
        raise CliError(f"--out must end in .npy or .csv, got {args.out}")
    result = _run_trainer(trainer.predict, args.artifact, args.data, ckpt=args.ckpt or args.ckpt_dir,
                          out=args.out, batch_size=args.batch_size, resize_images=args.resize_images,
                          log=_info)
    n = len(next(iter(result.values()))) if result else 0
    print(f"kiln: wrote predictions for {n} example(s) to {args.out}")
    return 0


TRAIN_EPILOG = """\
examples:
  kiln compile samples/mnist_mlp.py -o build/mlp
  kiln train build/mlp --data digits --resize-images --epochs 10 --ckpt-dir build/mlp/ckpt
  kiln train build/mlp --data digits --resize-images --epochs 20 --ckpt-dir build/mlp/ckpt --resume
  kiln eval build/mlp --data digits --ckpt-dir build/mlp/ckpt
  kiln predict build/mlp --data digits --out build/mlp/predictions.csv --ckpt-dir build/mlp/ckpt

Data specs: digits, FILE.csv, FILE.npz, mnist:DIR, images:DIR, a directory (docs/data.md).
"""


def _resize_flag(p, default) -> None:
    """``--resize-images`` (train: off by default; eval/predict: ``--[no-]resize-images``,
    default as the checkpoint's training run)."""
    p.add_argument("--resize-images", action="store_true" if default is False else argparse.BooleanOptionalAction,
                   default=default,
                   help="resize square images to the model's input size when the value counts "
                        "differ (e.g. 8x8 digits for a 784-input model); without it that is an error"
                        + ("" if default is False else "; default: as the checkpoint's training run"))


def _eval_split(value: str) -> str:
    """``--split``: one of ``runtime.scoring.EVAL_SPLITS`` (imported when used, not when every
    command builds its parser: it loads the runtime's artifact and entry modules)."""
    from runtime.scoring import EVAL_SPLITS

    if value not in EVAL_SPLITS:
        raise argparse.ArgumentTypeError(f"invalid choice: {value!r} (choose from {', '.join(EVAL_SPLITS)})")
    return value


def add_run_commands(sub) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    tr = sub.add_parser("train", help="train a compiled artifact on a data set",
                        description="Run the artifact's train entry over the data for some epochs, "
                                    "validating with its eval entry, checkpointing every epoch.",
                        epilog=TRAIN_EPILOG, formatter_class=fmt)
    tr.add_argument("artifact", help="artifact directory (from kiln compile)")
    tr.add_argument("--data", required=True, metavar="SPEC", help="training data spec (e.g. digits)")
    tr.add_argument("--epochs", type=_positive(int), default=1, help="epochs in total (default: 1)")
    tr.add_argument("--batch-size", type=_positive(int), default=32, help="batch size (default: 32)")
    val = tr.add_mutually_exclusive_group()
    val.add_argument("--val-split", type=float, metavar="F",
                     help="fraction of --data held out for validation (default: 0.1; 0: none)")
    val.add_argument("--val-data", metavar="SPEC", help="separate validation data spec")
    tr.add_argument("--ckpt-dir", metavar="DIR", help="save a checkpoint here after every epoch")
    again = tr.add_mutually_exclusive_group()
    again.add_argument("--resume", action="store_true",
                       help="continue from the newest checkpoint of --ckpt-dir")
    again.add_argument("--overwrite", action="store_true",
                       help="start over in a --ckpt-dir that holds checkpoints, replacing them")
    tr.add_argument("--seed", type=int, default=0, help="seed of the split and data order (default: 0)")
    tr.add_argument("--run-dir", metavar="DIR", help="metrics.jsonl/metrics.csv/curves.png and TensorBoard "
                    "events/<run id>/ go here (default: runs/<artifact name>); each run appends its rows")
    tr.add_argument("--plot-every", type=_positive(int), default=0, metavar="N",
                    help="also redraw curves.png every N epochs (default: at the end only)")
    _resize_flag(tr, False)
    tr.add_argument("--no-progress", action="store_true", help="no progress bar (none is shown "
                    "when stderr is not a terminal)")
    tr.add_argument("--workers", type=_positive(int), default=1, metavar="N",
                    help="data-parallel training on N local processes (runs mpiexec -n N; the artifact "
                         "needs kiln compile --distributed; --batch-size is per worker; docs/distributed.md)")
    tr.set_defaults(func=cmd_train)

    ev = sub.add_parser("eval", help="evaluate a (trained) artifact on a data set",
                        description="Mean of the artifact's eval entry fetches (loss, metrics) over the "
                                    "data: by default over the held-out split when the data is the "
                                    "checkpoint's training data.",
                        epilog=TRAIN_EPILOG, formatter_class=fmt)
    pr = sub.add_parser("predict", help="run a (trained) artifact's predict entry",
                        description="Run the predict entry over the data (in order) and write the outputs.",
                        epilog=TRAIN_EPILOG, formatter_class=fmt)
    for p in (ev, pr):
        p.add_argument("artifact", help="artifact directory (from kiln compile)")
        p.add_argument("--data", required=True, metavar="SPEC" if p is ev else "SPEC|X.npy",
                       help="data spec" + ("" if p is ev else ", or a .npy file of features"))
        ck = p.add_mutually_exclusive_group()
        ck.add_argument("--ckpt-dir", metavar="DIR", help="load the latest checkpoint of DIR")
        ck.add_argument("--ckpt", metavar="FILE", help="load this checkpoint file")
        p.add_argument("--batch-size", type=_positive(int), default=256, help="batch size (default: 256)")
        _resize_flag(p, None)
    ev.add_argument("--split", type=_eval_split, default="auto",
                    help="examples to score: val = the held-out validation split, all = every "
                         "example; auto (default) = val when --data is the checkpoint's training data")
    ev.add_argument("--val-split", type=float, metavar="F", help="validation fraction for --split val "
                    "(default: the training run's, else 0.1)")
    ev.add_argument("--seed", type=int, help="split seed (default: the training run's, else 0)")
    pr.add_argument("--out", required=True, metavar="FILE", help="output file, .npy or .csv")
    ev.set_defaults(func=cmd_eval)
    pr.set_defaults(func=cmd_predict)
