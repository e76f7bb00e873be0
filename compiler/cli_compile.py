"""`kiln compile MODEL.py -o DIR`: compile a model file's entry points into an artifact
(docs/model-files.md).  Registered on the parser by ``compiler/cli.py``.

The artifact is built beside ``DIR`` and swapped into place when complete, so an earlier
artifact survives an interrupted or failed compile, and the folder's other contents (e.g.
``DIR/ckpt/`` checkpoints) are carried over (``compiler/artifact.py``).
"""
from __future__ import annotations

import argparse
import sys

from .cli_errors import CliError

TARGETS = ("cpu", "cuda")


def _compile_model(args):
    """Load and validate the model file and compile its entries; returns (artifact path,
    entries, seconds)."""
    import time

    from compiler.artifact import ArtifactDirError
    from compiler.codegen.llvm.build import BuildError
    from compiler.compile import compile_entries
    from compiler.model_file import ModelFileError, entries_record, load_model

    try:
        model, entries = load_model(args.model)
    except ModelFileError as err:
        raise CliError(str(err))
    start = time.perf_counter()
    try:
        out = compile_entries(model.graph, {n: e.as_compile_entry() for n, e in entries.items()},
                              args.output, target=args.target, dump_ir=args.dump_ir,
                              cuda_arch=args.cuda_arch, emulate=args.cuda_emulate, tf32=args.cuda_tf32,
                              manifest_extra={"model": entries_record(args.model, entries)})
    except ArtifactDirError as err:
        raise CliError(f"cannot write the artifact: {err}")
    except BuildError as err:  # nvcc / the linker missing or failing
        raise CliError(f"{args.model}: cannot build the {args.target} library: {err}")
    except (ValueError, NotImplementedError, TypeError, KeyError) as err:
        raise CliError(f"{args.model}: cannot compile: {type(err).__name__}: {err}")
    except OSError as err:
        raise CliError(f"cannot write the artifact to {args.output}: {err.strerror or err}")
    return out, entries, time.perf_counter() - start


def _gpu_note(args) -> None:
    """Say so when a CUDA artifact is built on a machine that cannot run it."""
    from compiler.codegen.cuda.build import emulate_default
    from runtime import cuda

    emulated = emulate_default() if args.cuda_emulate is None else args.cuda_emulate
    if args.target == "cuda" and not emulated and cuda.device_count() == 0:
        print(f"kiln: note: this machine has no usable CUDA GPU ({cuda.why_no_device()}); the "
              "artifact runs only where there is one (--target cpu runs here; --cuda-emulate "
              "runs the CUDA code here, slowly)", file=sys.stderr)


def cmd_compile(args) -> int:
    """``kiln compile MODEL.py -o DIR``: compile every entry point and print a summary."""
    from compiler.artifact import foreign_entries
    from runtime import manifest as mf

    kept = foreign_entries(args.output)
    out, entries, seconds = _compile_model(args)
    m = mf.read_manifest(out)
    print(f"kiln: compiled {args.model} -> {out} (target {args.target}, {seconds:.2f} s)")
    for name, e in entries.items():
        spec = m["entry_points"][name]
        feeds = ", ".join(f"{f['name']}{mf.format_shape(f['shape'])}" for f in spec["feeds"])
        print(f"  {name:<10} feeds: {feeds or '-'}; fetches: {', '.join(e.fetches)}"
              + (f"; targets: {len(e.targets)}" if e.targets else ""))
    n_trainable = sum(1 for v in m["variables"] if v.get("trainable"))
    print(f"  variables: {len(m['variables'])} ({n_trainable} trainable)")
    if kept:
        print(f"  kept from the earlier artifact folder: {', '.join(kept)}")
    _gpu_note(args)
    return 0


COMPILE_EPILOG = """\
examples:
  kiln compile samples/mnist_mlp.py -o build/mnist_mlp
  kiln compile samples/mnist_mlp.py -o build/mnist_mlp --no-dump-ir
  kiln compile samples/mnist_mlp.py -o build/mnist_mlp_gpu --target cuda --cuda-arch sm_90

The model file defines build() returning its entry points (see docs/model-files.md).
The artifact's manifest.json gets a "model" record mapping each entry's fetch keys
(e.g. "loss") to the tensor names used by the runtime (e.g. "loss:0").
Recompiling into an existing artifact folder replaces the artifact only when the new one
is complete, and keeps the folder's other contents (e.g. a ckpt/ folder).
"""


def add_compile_command(sub) -> None:
    comp = sub.add_parser("compile", help="compile a model file's entry points into an artifact",
                          description="Run a model file, validate the entry points build() returns, "
                                      "and compile them into an artifact directory.",
                          epilog=COMPILE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    comp.add_argument("model", help="model file (a Python script defining build())")
    comp.add_argument("-o", "--output", required=True, metavar="DIR", help="artifact directory to write")
    comp.add_argument("--target", default="cpu", choices=TARGETS,
                      help=f"code generation target: {', '.join(TARGETS)} (default: cpu)")
    comp.add_argument("--cuda-arch", default=None, metavar="sm_XX",
                      help="GPU architecture for --target cuda (default: sm_90, H100/H200)")
    comp.add_argument("--cuda-tf32", action="store_true",
                      help="--target cuda: float32 matrix products may use TF32 tensor cores (faster, "
                           "inputs rounded to 10 mantissa bits; default: exact fp32)")
    comp.add_argument("--cuda-emulate", action="store_true", default=None,
                      help="--target cuda: build for Kiln's host emulator (runs the CUDA code on the "
                           "CPU, slowly; for testing without a GPU; also KILN_CUDA_EMULATE=1)")
    comp.add_argument("--dump-ir", action=argparse.BooleanOptionalAction, default=True,
                      help="write the IR after each pass to DIR/ir/<entry>/ (default: on)")
    comp.set_defaults(func=cmd_compile)
