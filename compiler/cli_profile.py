"""`kiln profile ARTIFACT --data SPEC`: run an entry point of a profiling build over batches of
the data and print where the step's time goes, per kernel (docs/performance.md).  Registered
on the parser by ``compiler/cli.py``.

It compiles nothing: an artifact built without ``--profile`` is refused with the command
that builds one (a silent rebuild would profile a library other than the one the user
runs, and take minutes for a large model).
"""
from __future__ import annotations

import argparse
import itertools
import sys

from .cli_errors import CliError
from .cli_run import _check_artifact, _positive, _resize_flag, _run_trainer

PROFILE_EPILOG = """\
examples:
  kiln compile samples/mnist_cnn.py -o build/cnn_prof --profile
  kiln profile build/cnn_prof --data digits --resize-images --batch-size 50 --steps 20
  kiln profile build/cnn_prof --data digits --resize-images --threads --trace build/cnn.trace.json

The trace opens in chrome://tracing or https://ui.perfetto.dev (one track per thread).
Data specs: digits, FILE.csv, FILE.npz, mnist:DIR, images:DIR (docs/data.md).
"""


def _batches(source, batch_size: int, count: int):
    """``count`` full batches of ``source``, cycling through epochs."""
    from runtime import data as kdata

    def forever():
        for epoch in itertools.count():
            empty = True
            for batch in kdata.epoch_batches(source, batch_size, epoch=epoch, drop_remainder=True):
                empty = False
                yield batch
            if empty:
                raise CliError(f"the data has fewer than --batch-size {batch_size} examples")
    return itertools.islice(forever(), count)


def profile_artifact(path, data, entry="train", steps=10, warmup=1, batch_size=32, resize_images=False):
    """Run ``warmup`` then ``steps`` steps of ``entry`` on batches of ``data``; returns the
    :class:`runtime.profiling.Profile` of the measured steps (and the note to show, if any)."""
    import runtime
    from runtime.entries import batch_feeds, check_features, entry_info, open_data
    from runtime.profiling import Recorder

    art = runtime.load_artifact(path)
    recorder = Recorder(art)
    try:
        info = entry_info(art, entry)
        source = open_data(data)
        note = check_features(info, source.feature_shape, resize_images)
        with art.new_state() as state:
            for i, (x, y) in enumerate(_batches(source, batch_size, warmup + steps)):
                if i == warmup:
                    recorder.reset()
                state.run(entry, batch_feeds(info, x, y, source.feature_shape))
        return recorder.collect(), note
    finally:
        recorder.close()


def cmd_profile(args) -> int:
    """``kiln profile ARTIFACT --data SPEC``: the kernel table, and ``--trace FILE``."""
    from runtime.profile_report import profile_table, thread_table, write_trace

    _check_artifact(args.artifact)
    if args.warmup < 0:
        raise CliError(f"--warmup must be >= 0, got {args.warmup}")
    profile, note = _run_trainer(profile_artifact, args.artifact, args.data, entry=args.entry, steps=args.steps,
                                 warmup=args.warmup, batch_size=args.batch_size,
                                 resize_images=args.resize_images)
    if note:
        print(f"kiln: {note}", file=sys.stderr)
    print(profile_table(profile, limit=args.top), end="")
    if args.threads:
        print("\nshare of each kernel's time its threads spent in their parallel chunks:")
        print(thread_table(profile, limit=args.top), end="")
    if args.trace:
        _run_trainer(write_trace, profile, args.trace)
        print(f"kiln: wrote a trace of {len(profile.events)} events to {args.trace} "
              "(chrome://tracing, ui.perfetto.dev)", file=sys.stderr)
    return 0


def add_profile_command(sub) -> None:
    pr = sub.add_parser("profile", help="time each kernel of a profiling build (kiln compile --profile)",
                        description="Run an entry point of an artifact built with --profile over batches "
                                    "of the data; print the kernels sorted by time (calls, total and "
                                    "mean time, share of the step, GFLOP/s and GB/s where countable) "
                                    "and optionally write a Chrome/Perfetto trace.",
                        epilog=PROFILE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    pr.add_argument("artifact", help="artifact directory built with kiln compile --profile")
    pr.add_argument("--data", required=True, metavar="SPEC", help="data spec (e.g. digits)")
    pr.add_argument("--entry", default="train", help="entry point to run (default: train)")
    pr.add_argument("--steps", type=_positive(int), default=10, help="measured steps (default: 10)")
    pr.add_argument("--warmup", type=int, default=1, metavar="N",
                    help="steps run before measuring (default: 1)")
    pr.add_argument("--batch-size", type=_positive(int), default=32, help="batch size (default: 32)")
    pr.add_argument("--trace", metavar="FILE", help="write a Chrome trace event JSON file here")
    pr.add_argument("--threads", action="store_true",
                    help="also show, per threaded kernel, the share of its time each thread spent working")
    pr.add_argument("--top", type=_positive(int), metavar="K", help="show only the K slowest rows per entry")
    _resize_flag(pr, False)
    pr.set_defaults(func=cmd_profile)
