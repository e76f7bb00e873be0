"""The artifact manifest (``manifest.json``): schema, validation, reading and writing.

The contract is ``docs/ABI.md``.  This module is shared by both sides: the runtime reads and
validates manifests with it, and the compiler's artifact writer writes them with
:func:`write_manifest` and :func:`file_hashes` (files written with ``runtime.files``), so
both agree on one schema.  It depends on the standard library only.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .abi_spec import ABI_VERSION, entry_symbol
from .files import atomic_write

FORMAT = "kiln-artifact"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
INIT_NAME = "init.safetensors"
RNG_STEP = "kiln/rng_step"

#: dtypes a manifest may name (numpy spells them the same way).
DTYPES = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "bool")

_REQUIRED = ("format", "format_version", "abi_version", "target", "library",
             "variables", "entry_points", "files")
_SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BATCH_DIM = re.compile(r"^N(?:\*([1-9][0-9]*))?$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


class ArtifactError(Exception):
    """An artifact cannot be loaded: bad manifest, failed hash check, ABI mismatch, ..."""


class ManifestError(ArtifactError):
    """``manifest.json`` is missing, is not JSON, or does not follow the schema."""


@dataclass(frozen=True)
class TensorSpec:
    """A feed or fetch of an entry point; ``shape`` dims are ints, ``"N"`` or ``"N*k"``."""
    name: str
    dtype: str
    shape: tuple


@dataclass(frozen=True)
class VariableSpec:
    """One variable of the state; its position in the manifest is its ABI index."""
    name: str
    dtype: str
    shape: tuple
    trainable: bool
    index: int
    zero_init: bool = False  # starts as zeros: not in init.safetensors ("init": "zeros")


@dataclass(frozen=True)
class EntrySpec:
    """One entry point: the exported symbol and its feeds/fetches in ABI order."""
    name: str
    symbol: str
    feeds: tuple
    fetches: tuple
    state_in: tuple
    state_out: tuple


# ----------------------------------------------------------------------------- dims

def batch_multiplier(dim):
    """``k`` for a batch dim ``"N"`` (1) or ``"N*k"``; ``None`` for a static int dim."""
    if isinstance(dim, str):
        m = _BATCH_DIM.match(dim)
        if m:
            return int(m.group(1) or 1)
    return None


def resolve_shape(shape, batch: int) -> tuple:
    """The concrete shape of ``shape`` with every batch dim resolved for ``batch``."""
    return tuple(d if batch_multiplier(d) is None else batch_multiplier(d) * batch for d in shape)


def format_shape(shape) -> str:
    """``[N, 3]`` style text for error messages."""
    return "[" + ", ".join(str(d) for d in shape) + "]"


# ----------------------------------------------------------------------------- validation

def _fail(source, msg):
    raise ManifestError(f"{source}: {msg}")


def _check_dim(dim, where, source):
    if isinstance(dim, bool) or not (isinstance(dim, int) and dim >= 0
                                      or batch_multiplier(dim) is not None):
        _fail(source, f"{where}: bad dim {dim!r} (expected an int >= 0, 'N' or 'N*k')")


def _tensor(d, where, source, static=False):
    """Validate one ``{"name", "dtype", "shape"}`` record."""
    if not isinstance(d, dict):
        _fail(source, f"{where}: expected an object, got {type(d).__name__}")
    for key in ("name", "dtype", "shape"):
        if key not in d:
            _fail(source, f"{where}: missing key {key!r}")
    if not isinstance(d["name"], str) or not d["name"]:
        _fail(source, f"{where}: name must be a non-empty string")
    if d["dtype"] not in DTYPES:
        _fail(source, f"{where} {d['name']!r}: unsupported dtype {d['dtype']!r} "
                      f"(supported: {', '.join(DTYPES)})")
    if not isinstance(d["shape"], list):
        _fail(source, f"{where} {d['name']!r}: shape must be a list")
    for dim in d["shape"]:
        _check_dim(dim, f"{where} {d['name']!r}", source)
        if static and not isinstance(dim, int):
            _fail(source, f"{where} {d['name']!r}: variables cannot have a batch dim ({dim!r})")
    return d["name"]


def _unique(names, where, source):
    seen = set()
    for n in names:
        if n in seen:
            _fail(source, f"{where}: duplicate name {n!r}")
        seen.add(n)


def _check_entry(name, e, variables, source):
    """Validate one entry point record."""
    where = f"entry point {name!r}"
    if not isinstance(e, dict):
        _fail(source, f"{where}: expected an object")
    for key in ("symbol", "feeds", "fetches", "state_in", "state_out"):
        if key not in e:
            _fail(source, f"{where}: missing key {key!r}")
    if not _SYMBOL.match(name) or e["symbol"] != entry_symbol(name):
        _fail(source, f"{where}: symbol must be '{entry_symbol(name)}' with {name!r} a C "
                      f"identifier, got {e['symbol']!r}")
    for kind in ("feeds", "fetches"):
        if not isinstance(e[kind], list):
            _fail(source, f"{where}: {kind} must be a list")
        _unique([_tensor(t, f"{where} {kind[:-1]}", source) for t in e[kind]], where, source)
    for kind in ("state_in", "state_out"):
        if not isinstance(e[kind], list):
            _fail(source, f"{where}: {kind} must be a list")
        for v in e[kind]:
            if v not in variables:
                _fail(source, f"{where}: {kind} names unknown variable {v!r}")


def _check_path(rel, source):
    p = PurePosixPath(rel) if isinstance(rel, str) else None
    if p is None or not rel or p.is_absolute() or ".." in p.parts or "\\" in rel:
        _fail(source, f"bad file path {rel!r} (must be relative, '/'-separated, without '..')")


def _check_files(m, source):
    """``files`` maps relative paths to ``sha256:<hex>``; library and init must be listed
    (init unless ``"init": "zeros"``: every variable starts as zeros, e.g. a tf.Session's
    artifacts, whose variables live in the session)."""
    files = m["files"]
    if not isinstance(files, dict):
        _fail(source, "'files' must be an object mapping paths to sha256 digests")
    for rel, digest in files.items():
        _check_path(rel, source)
        if not isinstance(digest, str) or not _DIGEST.match(digest):
            _fail(source, f"files[{rel!r}]: expected 'sha256:<64 hex digits>', got {digest!r}")
    _check_path(m["library"], source)
    if m["library"] not in files:
        _fail(source, f"the library {m['library']!r} is not listed in 'files'")
    if m.get("init", "file") not in ("file", "zeros"):
        _fail(source, f"'init' must be \"file\" or \"zeros\", got {m['init']!r}")
    if m["variables"] and INIT_NAME not in files and m.get("init") != "zeros":
        _fail(source, f"{INIT_NAME!r} is not listed in 'files'")


def validate_manifest(m, source=MANIFEST_NAME) -> dict:
    """Check ``m`` against the schema of docs/ABI.md; raise :class:`ManifestError` naming
    ``source`` and the offending field.  Versions are checked here too.  Returns ``m``."""
    if not isinstance(m, dict):
        _fail(source, f"expected a JSON object, got {type(m).__name__}")
    missing = [k for k in _REQUIRED if k not in m]
    if missing:
        _fail(source, f"missing key(s) {', '.join(map(repr, missing))}")
    if m["format"] != FORMAT:
        _fail(source, f"format is {m['format']!r}, expected {FORMAT!r}")
    if m["format_version"] != FORMAT_VERSION:
        _fail(source, f"artifact format_version {m['format_version']!r}, "
                      f"runtime supports {FORMAT_VERSION}")
    if not isinstance(m["abi_version"], int):
        _fail(source, f"abi_version must be an int, got {m['abi_version']!r}")
    if not isinstance(m["target"], dict) or "kind" not in m["target"]:
        _fail(source, "'target' must be an object with a 'kind'")
    if not isinstance(m["variables"], list):
        _fail(source, "'variables' must be a list")
    names = [_tensor(v, "variable", source, static=True) for v in m["variables"]]
    for v in m["variables"]:
        if v.get("init", "file") not in ("file", "zeros"):
            _fail(source, f"variable {v['name']!r}: 'init' must be \"file\" or \"zeros\", got {v['init']!r}")
    _unique(names, "variables", source)
    if not isinstance(m["entry_points"], dict):
        _fail(source, "'entry_points' must be an object")
    for name, e in m["entry_points"].items():
        _check_entry(name, e, set(names), source)
    _check_files(m, source)
    return m


# ----------------------------------------------------------------------------- specs

def variable_specs(m) -> tuple:
    """The variables of a validated manifest as :class:`VariableSpec`, in ABI index order."""
    return tuple(VariableSpec(v["name"], v["dtype"], tuple(v["shape"]),
                              bool(v.get("trainable", False)), i, v.get("init") == "zeros")
                 for i, v in enumerate(m["variables"]))


def entry_specs(m) -> dict:
    """The entry points of a validated manifest as ``name -> EntrySpec``."""
    def tensors(ts):
        return tuple(TensorSpec(t["name"], t["dtype"], tuple(t["shape"])) for t in ts)
    return {name: EntrySpec(name, e["symbol"], tensors(e["feeds"]), tensors(e["fetches"]),
                            tuple(e["state_in"]), tuple(e["state_out"]))
            for name, e in m["entry_points"].items()}


# ----------------------------------------------------------------------------- files

def file_digest(path) -> str:
    """SHA-256 of a file as written in the manifest: ``"sha256:<hex>"``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def file_hashes(directory, relpaths) -> dict:
    """``{relpath: file_digest(directory/relpath)}`` for the manifest's ``files``."""
    return {str(PurePosixPath(r)): file_digest(Path(directory) / r) for r in relpaths}


def read_manifest(directory) -> dict:
    """Read and validate ``directory/manifest.json``; every problem is a
    :class:`ManifestError` naming the file."""
    path = Path(directory) / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ManifestError(f"{path}: not found (is {directory} a Kiln artifact directory?)") from None
    except OSError as e:
        raise ManifestError(f"{path}: cannot read: {e}") from None
    try:
        m = json.loads(text)
    except json.JSONDecodeError as e:
        raise ManifestError(f"{path}: invalid JSON: {e}") from None
    return validate_manifest(m, source=str(path))


def write_manifest(directory, manifest) -> Path:
    """Validate ``manifest`` and write it atomically as ``directory/manifest.json``
    (sorted keys are not imposed: the writer's order is kept).  Returns the path."""
    path = Path(directory) / MANIFEST_NAME
    validate_manifest(manifest, source=str(path))
    atomic_write(path, json.dumps(manifest, indent=2) + "\n")
    return path
