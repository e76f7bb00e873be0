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

def _target(args):
    """The validated ``Target`` of ``--target`` and its ``--<target>-<option>`` options
    (another backend's options are a mistake)."""
    from compiler.codegen.registry import BuildError, backends, get_backend

    backend = get_backend(args.target)
    for other in backends():
        for opt in other.options:
            value = getattr(args, _dest(other, opt), None)
            if other.name != backend.name and value not in (None, False):
                if (other.name, opt.name) == ("cpu", "profile"):  # also spelled --profile
                    raise CliError(f"--profile: profiling builds are for --target cpu only, not {backend.name}")
                raise CliError(f"--{other.name}-{opt.name} applies to --target {other.name}, "
                               f"not {backend.name}")
    options = {opt.name: getattr(args, _dest(backend, opt)) for opt in backend.options}
    try:
        return backend.make_target(**options)
    except (BuildError, ValueError) as err:  # e.g. nvcc missing, an unknown GPU arch
        raise CliError(f"--target {backend.name}: {err}")


def _compile_model(args, target):
    """Load and validate the model file and compile its entries for ``target``; returns
    (artifact path, entries, seconds)."""
    import time

    from compiler.artifact import ArtifactDirError
    from compiler.codegen.registry import BuildError
    from compiler.frontend.compile_graph import compile_entries
    from compiler.ir.from_graph import LoweringError
    from compiler.distributed_entries import model_context, split_entries
    from compiler.model_file import ModelFileError, entries_record, load_model

    try:
        if args.fusion_groups > 1 and not args.distributed:
            raise CliError("--fusion-groups applies to --distributed")
        with model_context(args.distributed, args.fusion_groups):
            model, entries = load_model(args.model)
    except ModelFileError as err:
        raise CliError(str(err))
    start = time.perf_counter()
    try:
        functions, distributed = split_entries(model.graph, entries)
        record = entries_record(args.model, entries)
        if distributed:
            record["distributed"] = distributed
        out = compile_entries(model.graph, functions, args.output, target=target, dump_ir=args.dump_ir,
                              manifest_extra={"model": record})
    except ArtifactDirError as err:
        raise CliError(f"cannot write the artifact: {err}")
    except BuildError as err:  # the backend's toolchain missing or failing
        raise CliError(f"{args.model}: cannot build the {args.target} library: {err}")
    except LoweringError as err:  # e.g. a feed without a static shape (its message says how to declare it)
        raise CliError(f"{args.model}: {err}")
    except (ValueError, NotImplementedError, TypeError, KeyError) as err:
        raise CliError(f"{args.model}: cannot compile: {type(err).__name__}: {err}")
    except OSError as err:
        raise CliError(f"cannot write the artifact to {args.output}: {err.strerror or err}")
    return out, entries, time.perf_counter() - start


def device_note(target) -> str:
    """A note when the artifact cannot run on this machine ("" when it can)."""
    from compiler.codegen.registry import get_backend

    backend = get_backend(target.backend)
    reason = backend.unavailable(target)
    if not reason:
        return ""
    emulator = any(o.name == "emulate" for o in backend.options)
    return (f"kiln: note: {reason} on this machine; the artifact runs only where there is one "
            f"(--target cpu runs here" + (f"; --{backend.name}-emulate runs the {backend.name} code "
                                          "here, slowly" if emulator else "") + ")")


def cmd_compile(args) -> int:
    """``kiln compile MODEL.py -o DIR``: compile every entry point and print a summary."""
    from compiler.artifact import foreign_entries
    from runtime import manifest as mf

    target = _target(args)
    kept = foreign_entries(args.output)
    out, entries, seconds = _compile_model(args, target)
    m = mf.read_manifest(out)
    hit = ", from the compile cache" if m.get("build", {}).get("cache") == "hit" else ""
    print(f"kiln: compiled {args.model} -> {out} (target {args.target}, {seconds:.2f} s{hit})")
    for name, e in entries.items():
        spec = m["entry_points"].get(name) or m["entry_points"][name + "_grads"]
        feeds = ", ".join(f"{f['name']}{mf.format_shape(f['shape'])}" for f in spec["feeds"])
        print(f"  {name:<10} feeds: {feeds or '-'}; fetches: {', '.join(e.fetches)}"
              + (f"; targets: {len(e.targets)}" if e.targets else ""))
    n_trainable = sum(1 for v in m["variables"] if v.get("trainable"))
    print(f"  variables: {len(m['variables'])} ({n_trainable} trainable)")
    if kept:
        print(f"  kept from the earlier artifact folder: {', '.join(kept)}")
    note = device_note(target)
    if note:
        print(note, file=sys.stderr)
    return 0


COMPILE_EPILOG = """\
examples:
  kiln compile samples/mnist_mlp.py -o build/mnist_mlp
  kiln compile samples/mnist_mlp.py -o build/mnist_mlp --no-dump-ir
  kiln compile samples/mnist_mlp.py -o build/mnist_mlp_gpu --target cuda --cuda-arch sm_90
  kiln compile samples/mnist_mlp.py -o build/mnist_mlp_prof --profile   (then: kiln profile)

The model file defines build() returning its entry points (see docs/model-files.md).
The artifact's manifest.json gets a "model" record mapping each entry's fetch keys
(e.g. "loss") to the tensor names used by the runtime (e.g. "loss:0").
Recompiling into an existing artifact folder replaces the artifact only when the new one
is complete, and keeps the folder's other contents (e.g. a ckpt/ folder).
An unchanged model is copied from the compile cache (~/.cache/kiln, $KILN_CACHE_DIR;
KILN_CACHE=0 turns it off; see docs/compile-cache.md).
"""


def _dest(backend, opt) -> str:
    return f"{backend.name}_{opt.name}"


def _add_backend_options(comp) -> None:
    """``--<backend>-<option>`` for every option every registered backend declares."""
    from compiler.codegen.registry import backends

    for backend in backends():
        for opt in backend.options:
            flag, help_text = f"--{backend.name}-{opt.name}", f"--target {backend.name}: {opt.help}"
            if opt.kind == "flag":
                comp.add_argument(flag, dest=_dest(backend, opt), action="store_true", default=opt.default,
                                  help=help_text)
            else:
                comp.add_argument(flag, dest=_dest(backend, opt), default=opt.default,
                                  metavar=opt.metavar or opt.name.upper(), help=help_text)


def add_compile_command(sub) -> None:
    from compiler.codegen.registry import backend_names

    comp = sub.add_parser("compile", help="compile a model file's entry points into an artifact",
                          description="Run a model file, validate the entry points build() returns, "
                                      "and compile them into an artifact directory.",
                          epilog=COMPILE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    comp.add_argument("model", help="model file (a Python script defining build())")
    comp.add_argument("-o", "--output", required=True, metavar="DIR", help="artifact directory to write")
    comp.add_argument("--target", default="cpu", choices=backend_names(),
                      help=f"code generation target: {', '.join(backend_names())} (default: cpu)")
    _add_backend_options(comp)
    comp.add_argument("--profile", dest="cpu_profile", action="store_true",
                      help="same as --cpu-profile: build with timing instrumentation for kiln profile "
                           "(CPU only; docs/performance.md)")
    comp.add_argument("--dump-ir", action=argparse.BooleanOptionalAction, default=True,
                      help="write the IR after each pass to DIR/ir/<entry>/ (default: on)")
    comp.add_argument("--distributed", action="store_true",
                      help="data-parallel training step: the model's gradients are averaged over the ranks "
                           "of kiln train under mpiexec (train entry split into train_grads + train_apply "
                           "around one fused allreduce; docs/distributed.md)")
    comp.add_argument("--fusion-groups", type=int, default=1, metavar="N",
                      help="--distributed: N fused gradient buffers (last layers first), the backward pass "
                           "split into N entries so each buffer's allreduce overlaps the rest of backward "
                           "(default: 1)")
    comp.set_defaults(func=cmd_compile)
