"""Extracting and checking the commands of the documentation (used by
tests/test_docs_commands.py, whose docstring states the convention)."""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = ["README.md", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md")),
        "samples/README.md", "bench/README.md"]
COPIED = ("samples", "bench")          # what the scratch folder of a document holds
OUTPUT_ROOTS = ("build", "runs")       # where documented commands may write (both gitignored)
RUNNABLE = {"bash", "sh", "shell"}     # plus "console" (commands after "$ ")
TIMEOUT_S = 180                        # per command; the whole file takes ~1 minute on 2 cores
LONG_TIMEOUT_S = 900                   # "# needs a GPU" / "# takes minutes" commands
SLOW_ENV = "KILN_DOCS_SLOW"
# Settings a developer (or tests/conftest.py: KILN_BACKEND=interpreter) may have set that
# would make a documented command behave otherwise than for a reader.  KILN_CACHE_DIR stays:
# conftest.py points it at the test session's compile cache, so commands keep out of ~/.cache.
DROPPED_ENV = ("KILN_BACKEND", "KILN_CUDA_EMULATE", "KILN_CHECKPOINT_TEST_PAUSE", "KILN_CACHE")
# Options whose value is a path a command writes.
OUTPUT_OPTIONS = ("-o", "--output", "--out", "--dot", "--dump-dir", "--ckpt-dir", "--run-dir", "--json")

FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([^\s`]*)")
COMMAND_START = re.compile(r"^(kiln|python3?)(\s|$)")
SETUP_PART = re.compile(r"^(python3? -m venv\b|\. \S*activate\b|source \S*activate\b|(python3? -m )?pip3? install\b)")
PYTEST_PART = re.compile(r"^(python3? -m pytest|pytest)\b")
PLACEHOLDER = re.compile(r"(?<![\w-])[A-Z][A-Z0-9_]*(?![\w-])")
FLAG = re.compile(r"(?<![\w/.:-])(--?[A-Za-z][A-Za-z0-9-]*)")
INLINE = re.compile(r"`([^`]+)`")
NEEDS = {"a gpu": "gpu", "nvcc": "nvcc"}
PRELUDE = ('kiln() { "$KILN_DOCS_PYTHON" -m compiler.cli "$@"; }\n'
           'python() { "$KILN_DOCS_PYTHON" "$@"; }\n'
           'python3() { "$KILN_DOCS_PYTHON" "$@"; }\n')


# ----------------------------------------------------------------------------- the parser
def subparsers():
    from compiler.cli import build_parser

    parser = build_parser()
    return parser, dict(parser._subparsers._group_actions[0].choices)


SUBCOMMANDS = tuple(subparsers()[1])
COMMAND_LIKE = re.compile(r"^(kiln (%s)\b|kiln --|python3? (-m \S+|\S+\.py)\b)" % "|".join(SUBCOMMANDS))


# ----------------------------------------------------------------------------- extraction
@dataclass
class Block:
    lang: str
    lines: list  # (line number, text)


@dataclass
class Command:
    doc: str
    line: int
    text: str                                  # as written (continuations joined)
    parts: list = field(default_factory=list)  # the && parts that run
    setup: list = field(default_factory=list)  # dropped set-up parts
    needs: set = field(default_factory=set)    # "gpu", "nvcc", "slow"
    pytest: bool = False

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def run(self) -> str:
        return " && ".join(self.parts)


def split_markdown(text: str):
    """``(blocks, prose)``: the fenced blocks, and the text outside them (line structure
    kept, fenced lines blanked, so line numbers stay right)."""
    blocks, prose, fence, current = [], [], None, None
    for number, line in enumerate(text.split("\n"), 1):
        m = FENCE.match(line)
        if fence is None and m:
            fence, current = m.group(1), Block(m.group(2).lower(), [])
            prose.append("")
        elif fence is not None and line.strip().startswith(fence[0] * len(fence)) \
                and not line.strip().strip(fence[0]):
            blocks.append(current)
            fence, current = None, None
            prose.append("")
        elif fence is not None:
            current.lines.append((number, line))
            prose.append("")
        else:
            prose.append(line)
    assert fence is None, "unclosed code fence"
    return blocks, "\n".join(prose)


def _joined(lines):
    """Lines with ``\\`` continuations joined: ``(first line number, text)``."""
    out, pending = [], None
    for number, line in lines:
        if pending is not None:
            pending = (pending[0], pending[1] + " " + line.strip())
        else:
            pending = (number, line)
        if pending[1].rstrip().endswith("\\"):
            pending = (pending[0], pending[1].rstrip()[:-1].rstrip())
            continue
        out.append(pending)
        pending = None
    if pending is not None:
        out.append(pending)
    return out


def split_comment(line: str):
    """``(command, comment)``: a ``#`` that starts a word outside quotes starts the comment."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def parse_needs(comment: str, where: str) -> set:
    """The requirements a trailing comment names (``needs a GPU``, ``needs nvcc``, ``takes
    minutes``); an unknown ``needs ...`` is an error."""
    found, text = set(), comment.lower()
    for clause in re.findall(r"\bneeds ([^;,.)]+)", text):
        for item in clause.split(" and "):
            item = item.strip()
            if item not in NEEDS:
                raise ValueError(f"{where}: unknown requirement 'needs {item}' in '# {comment}' "
                                 f"(known: {', '.join('needs ' + k for k in NEEDS)}, takes minutes)")
            found.add(NEEDS[item])
    if "takes minutes" in text:
        found.add("slow")
    return found


def make_command(doc: str, number: int, line: str) -> Command:
    """A runnable line as a :class:`Command`: set-up parts dropped, requirements parsed."""
    body, comment = split_comment(line)
    cmd = Command(doc, number, line.strip(), needs=parse_needs(comment, f"{doc}:{number}"))
    for part in (p.strip() for p in body.split("&&")):
        if SETUP_PART.match(part):
            cmd.setup.append(part)
        elif PYTEST_PART.match(part):
            cmd.pytest = True
            cmd.parts.append(part)
        elif COMMAND_START.match(part):
            cmd.parts.append(part)
        else:
            raise ValueError(f"{doc}:{number}: cannot run '{part}' (only kiln/python commands "
                             "and set-up parts are allowed in a runnable line)")
    return cmd


def extract(doc: str, text: str):
    """``(commands, non-runnable command-like lines, problems, prose)`` of one document."""
    blocks, prose = split_markdown(text)
    commands, others, problems = [], [], []
    for block in blocks:
        for number, line in _joined(block.lines):
            stripped = line.strip()
            if block.lang == "console":
                if not stripped.startswith("$ "):
                    if COMMAND_LIKE.match(stripped):
                        problems.append(f"{doc}:{number}: command in a console block without '$ ': {stripped}")
                    continue
                stripped = stripped[2:].strip()
            elif block.lang in RUNNABLE:
                stripped = stripped[2:].strip() if stripped.startswith("$ ") else stripped
            else:
                candidate = stripped[2:] if stripped.startswith("$ ") else stripped
                if COMMAND_LIKE.match(candidate):
                    others.append((number, candidate, block.lines))
                continue
            if COMMAND_START.match(stripped):
                try:
                    commands.append(make_command(doc, number, stripped))
                except ValueError as err:
                    problems.append(str(err))
    return commands, others, problems, prose


def read_doc(doc: str):
    return extract(doc, (REPO / doc).read_text(encoding="utf-8"))


def commands_of(doc: str) -> list:
    return read_doc(doc)[0]


RUN_DOCS = [doc for doc in DOCS if commands_of(doc)]


# ----------------------------------------------------------------------------- skipping
def _gpu_count() -> int:
    from runtime import cuda

    return cuda.device_count()


def _has_nvcc() -> bool:
    from compiler.codegen.cuda.build import find_nvcc

    try:
        find_nvcc()
    except Exception:  # CudaToolchainError
        return False
    return True


def skip_reason(cmd: Command):
    if cmd.pytest:
        return "pytest is not run from inside pytest (it would recurse; .ci/run runs the suite)"
    if not cmd.parts:
        return "set-up only (.ci/run covers it)"
    if "gpu" in cmd.needs and _gpu_count() == 0:
        return "needs a GPU (runtime.cuda.device_count() == 0)"
    if "nvcc" in cmd.needs and not _has_nvcc():
        return "needs nvcc (not found)"
    if "slow" in cmd.needs and os.environ.get(SLOW_ENV, "") in ("", "0"):
        return f"takes minutes (set {SLOW_ENV}=1 to run it)"
    return None


# ----------------------------------------------------------------------------- checks
def is_synopsis(line: str) -> bool:
    return "[" in line or "|" in line or bool(PLACEHOLDER.search(line.split("#")[0]))


def unknown_flags(text: str):
    """The ``--flags`` of a ``kiln SUB ...`` text that SUB does not take (None when the text
    names no subcommand, e.g. ``kiln compile/train``)."""
    parser, subs = subparsers()
    words = text.split()
    if len(words) < 2:
        return None
    target = parser if words[1].startswith("-") else subs.get(words[1])
    if target is None:
        return None
    known = set(target._option_string_actions)
    return [f for f in FLAG.findall(split_comment(text)[0]) if f not in known]


def parse_kiln(part: str):
    """Parse a runnable ``kiln ...`` part with the real parser; returns the error text or None."""
    from compiler.cli import build_parser

    argv = shlex.split(part)[1:]
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(argv)
    except SystemExit as stop:
        if stop.code not in (0, None):  # --version / --help exit 0
            return err.getvalue().strip() or f"exit status {stop.code}"
    return None


def output_paths(part: str) -> list:
    """The values of the output options of a ``kiln``/``python`` part."""
    words, paths = shlex.split(part), []
    for i, word in enumerate(words):
        for opt in OUTPUT_OPTIONS:
            if word == opt and i + 1 < len(words):
                paths.append(words[i + 1])
            elif word.startswith(opt + "="):
                paths.append(word.split("=", 1)[1])
    return paths


def python_target_problem(part: str):
    """Why ``python X.py`` / ``python -m MOD`` cannot run (missing file/module), else None."""
    words = shlex.split(part)
    if len(words) < 2:
        return None
    if words[1] == "-m" and len(words) > 2:
        if PYTEST_PART.match(part):
            return None
        try:
            found = importlib.util.find_spec(words[2]) is not None
        except ImportError:
            found = False
        return None if found else f"no module {words[2]}"
    if words[1].endswith(".py") and not (REPO / words[1]).is_file():
        return f"no file {words[1]}"
    return None


def pyproject_extras() -> set:
    text = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([A-Za-z0-9_-]+)\s*=", section, re.M))


# ----------------------------------------------------------------------------- the scratch folder
def scratch_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    env["KILN_DOCS_PYTHON"] = sys.executable
    env["MPLBACKEND"] = "Agg"
    return env


def files_under(root: Path) -> set:
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        out.update(Path(dirpath, f).relative_to(root).as_posix() for f in filenames)
    return out


def untracked_in_repo():
    """Untracked (not ignored) files of the repository, or None without git."""
    try:
        proc = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=REPO,
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return {line[3:] for line in proc.stdout.splitlines() if line.startswith("?? ")}


def tail(text: str, n: int = 30) -> str:
    lines = text.rstrip().splitlines()
    return "\n".join(("    " + line) for line in lines[-n:]) or "    (empty)"
