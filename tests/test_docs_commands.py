"""Every command the documentation shows still works, so no documented command goes stale.

The convention (also in README.md, "Documentation"):

* Fenced code blocks labelled ``bash``, ``sh`` or ``shell`` hold runnable examples: every
  line that starts with ``kiln `` or ``python ``/``python3 `` (optionally after ``$ ``) is
  RUN.  In a ``console`` block only lines starting with ``$ `` are commands (the others
  are their output), and those starting with ``$ kiln``/``$ python`` are run.  Other lines
  (``nvcc ...``, comments) are not run.
* Synopses with placeholders (``MODEL.py``, ``ARTIFACT``, ``[--flag]``, ``A|B``) belong in
  ``text`` (or unlabelled) blocks and are not run.  But every ``kiln SUBCOMMAND ...`` /
  ``python ...`` line outside a runnable block must BE a synopsis (contain ``[``, ``|`` or
  an ALL-CAPS placeholder word), so that a runnable example cannot hide from this test.
* Every ``--flag`` of a ``kiln SUBCOMMAND`` line or inline code span in the docs must be an
  option of that subcommand; every runnable ``kiln`` line must parse with the real parser
  (also when it is skipped here for want of a GPU), and its output paths lie under
  ``build/`` (or ``runs/``).
* A trailing comment says what a command needs: ``# needs a GPU`` (skipped unless
  ``runtime.cuda.device_count() > 0``), ``# needs nvcc`` (skipped unless
  ``compiler.codegen.cuda.build.find_nvcc()`` finds one), ``# takes minutes`` (skipped
  unless ``KILN_DOCS_SLOW=1``).  Any other ``needs ...`` is an error, so a typo cannot
  silently skip or run a command.  Anything else unavailable (Graphviz ``dot``) belongs in
  prose, not in a runnable line.
* A line chaining commands with ``&&`` runs its parts after dropping the set-up ones
  (``python3 -m venv``, ``. .venv/bin/activate``, ``pip install``): ``.ci/run`` covers those
  (the extras it names must exist in pyproject.toml).  ``pytest`` invocations are never run:
  running the suite from inside the suite would recurse.

Each document's commands run in document order in ONE scratch folder holding copies of
``samples/`` and ``bench/`` (later commands use earlier outputs), with ``kiln`` =
``python -m compiler.cli`` and the repository on ``PYTHONPATH``.  Each must exit 0 within
its timeout; afterwards the scratch folder may only have new files under ``build/`` or
``runs/``, and the repository no new untracked files.  The ``--help`` epilog examples of
every subcommand must parse.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.docs_kit import (
    COPIED,
    DOCS,
    INLINE,
    LONG_TIMEOUT_S,
    OUTPUT_ROOTS,
    PRELUDE,
    REPO,
    RUN_DOCS,
    TIMEOUT_S,
    commands_of,
    extract,
    files_under,
    is_synopsis,
    make_command,
    output_paths,
    parse_kiln,
    pyproject_extras,
    python_target_problem,
    read_doc,
    scratch_env,
    skip_reason,
    subparsers,
    tail,
    unknown_flags,
    untracked_in_repo,
)


# ----------------------------------------------------------------------------- tests
def test_extraction_follows_the_convention():
    md = "\n".join([
        "Prose `kiln train build/x --data digits` here.",
        "```bash",
        "python3 -m venv .venv && . .venv/bin/activate && pip install -e \".[data]\" && kiln compile a.py -o build/a",
        "kiln train build/a --data digits   # needs a GPU; takes minutes",
        "$ python samples/plane_fit.py",
        "nvcc x.cu -o x.so",
        "python -m pytest -q",
        "```",
        "```console",
        "$ kiln ir samples/plane_fit.py --fetch loss:0   # needs nvcc",
        "kiln: wrote 7 stages",
        "```",
        "```text",
        "kiln train ARTIFACT --data SPEC [--epochs N]",
        "kiln eval build/a --data digits",
        "```",
        "```",
        "kiln cuda emulator: race in k0",
        "```",
    ])
    commands, others, problems, prose = extract("x.md", md)
    assert problems == []
    assert [(c.line, c.run) for c in commands] == [
        (3, "kiln compile a.py -o build/a"), (4, "kiln train build/a --data digits"),
        (5, "python samples/plane_fit.py"), (7, "python -m pytest -q"), (10, "kiln ir samples/plane_fit.py --fetch loss:0")]
    assert commands[0].setup == ["python3 -m venv .venv", ". .venv/bin/activate", 'pip install -e ".[data]"']
    assert commands[1].needs == {"gpu", "slow"} and commands[4].needs == {"nvcc"}
    assert commands[3].pytest and skip_reason(commands[3]).startswith("pytest")
    assert [(n, line) for n, line, _ in others] == [(14, "kiln train ARTIFACT --data SPEC [--epochs N]"),
                                                    (15, "kiln eval build/a --data digits")]
    assert [is_synopsis(line) for _, line, _ in others] == [True, False]
    assert "kiln train build/x --data digits" in INLINE.findall(prose)
    with pytest.raises(ValueError, match="unknown requirement"):
        make_command("x.md", 1, "kiln train build/a --data digits  # needs a TPU")
    assert extract("x.md", "```console\nkiln compile a.py -o build/a\n```")[2]   # no "$ "
    assert unknown_flags("kiln train A --data S [--epochz N]") == ["--epochz"]
    assert parse_kiln("kiln train build/a --epochs 2") is not None          # --data missing
    assert output_paths("kiln predict a --out x.csv --ckpt-dir=build/c") == ["x.csv", "build/c"]


def test_readme_main_job_is_run():
    """The extractor finds the README's main job (and so cannot silently find nothing)."""
    runs = [c.run for c in commands_of("README.md") if skip_reason(c) is None]
    assert runs[0] == ("kiln compile samples/mnist_mlp.py -o build/mlp && kiln train build/mlp --data digits "
                       "--resize-images --epochs 10 --ckpt-dir build/mlp/ckpt")
    assert any(r.startswith("kiln eval build/mlp") for r in runs)
    assert {"README.md", "docs/trainer.md", "docs/passes.md"} <= set(RUN_DOCS)


@pytest.mark.parametrize("doc", DOCS)
def test_doc_commands_are_well_formed(doc):
    """Cheap static checks of every command-like text: runnable lines parse and write under
    build/, synopses and inline spans use existing flags, no example hides in a text block."""
    commands, others, problems, prose = read_doc(doc)
    for cmd in commands:
        for part in cmd.parts:
            if part.startswith("kiln"):
                error = parse_kiln(part)
                if error:
                    problems.append(f"{cmd.where}: '{part}' does not parse: {error}")
            elif not cmd.pytest:
                problem = python_target_problem(part)
                if problem:
                    problems.append(f"{cmd.where}: '{part}': {problem}")
            for path in output_paths(part):
                if Path(path).is_absolute() or Path(path).parts[0] not in OUTPUT_ROOTS:
                    problems.append(f"{cmd.where}: '{part}' writes {path}, outside {' or '.join(OUTPUT_ROOTS)}/")
        for setup in cmd.setup:
            for extras in re.findall(r"\[([\w,-]+)\]", setup):
                missing = set(extras.split(",")) - pyproject_extras()
                if missing:
                    problems.append(f"{cmd.where}: pip extra(s) {sorted(missing)} not in pyproject.toml")
    for number, line, block_lines in others:
        if not is_synopsis(line):
            problems.append(f"{doc}:{number}: '{line}' looks runnable but is not in a bash/sh/console "
                            "block (a synopsis needs a placeholder, [..] or |)")
        following = [text.strip() for n, text in block_lines if n > number]
        continuation = []
        for text in following:  # a synopsis's indented continuation lines: [--flag ...]
            if not text.startswith("["):
                break
            continuation.append(text)
        bad = unknown_flags(" ".join([line] + continuation)) or []
        if bad:
            problems.append(f"{doc}:{number}: '{line}': unknown option(s) {bad}")
    for span in INLINE.findall(prose):
        span = " ".join(span.split())
        if span.startswith("kiln "):
            bad = unknown_flags(span) or []
            if bad:
                problems.append(f"{doc}: inline `{span}`: unknown option(s) {bad}")
        elif re.match(r"^python3? \S+\.py\b", span) and not is_synopsis(span):
            problem = python_target_problem(span)
            if problem:
                problems.append(f"{doc}: inline `{span}`: {problem}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("doc", RUN_DOCS)
def test_doc_commands_run(doc, tmp_path):
    """Run the document's commands in order in one scratch folder."""
    work = tmp_path / "work"
    work.mkdir()
    for name in COPIED:
        shutil.copytree(REPO / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    repo_before = untracked_in_repo()
    work_before = files_under(work)
    env = scratch_env()
    ran, skipped = [], []
    for cmd in commands_of(doc):
        reason = skip_reason(cmd)
        if reason:
            skipped.append(f"{cmd.where}: {cmd.text}  -- skipped: {reason}")
            continue
        timeout = LONG_TIMEOUT_S if cmd.needs & {"gpu", "slow"} else TIMEOUT_S
        start = time.perf_counter()
        try:
            proc = subprocess.run(["bash", "-c", PRELUDE + cmd.run], cwd=work, env=env, timeout=timeout,
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True)
        except subprocess.TimeoutExpired as err:
            pytest.fail(f"{cmd.where}: timed out after {timeout} s: {cmd.run}\nstderr:\n"
                        f"{tail(err.stderr.decode() if isinstance(err.stderr, bytes) else err.stderr or '')}")
        seconds = time.perf_counter() - start
        if proc.returncode != 0:
            pytest.fail(f"{cmd.where}: exit status {proc.returncode}: {cmd.run}\n"
                        f"stderr:\n{tail(proc.stderr)}\nstdout:\n{tail(proc.stdout, 10)}")
        ran.append(f"{cmd.where}: {cmd.run}  ({seconds:.1f} s)")
    print(f"\n{doc}: ran {len(ran)}, skipped {len(skipped)}")
    print("\n".join(["  " + line for line in ran + skipped]))
    outside = sorted(p for p in files_under(work) - work_before if p.split("/")[0] not in OUTPUT_ROOTS)
    assert not outside, f"{doc}: commands wrote outside {' and '.join(OUTPUT_ROOTS)}/: {outside}"
    repo_after = untracked_in_repo()
    if repo_before is not None and repo_after is not None:
        new = sorted(repo_after - repo_before)
        assert not new, f"{doc}: commands left new files in the repository: {new}"
    if not ran:
        pytest.skip(f"{doc}: every command skipped: " + "; ".join(skipped))


def _epilog_subcommands():
    return [name for name, sub in subparsers()[1].items() if sub.epilog]


@pytest.mark.parametrize("sub", _epilog_subcommands())
def test_help_epilog_examples_parse(sub):
    """Each ``kiln ...`` example of ``kiln SUB --help`` parses (trailing ``(...)`` notes dropped)."""
    epilog = subparsers()[1][sub].epilog
    examples = [line.strip() for line in epilog.splitlines() if line.strip().startswith("kiln ")]
    assert examples, f"kiln {sub} --help has an epilog without examples"
    problems = []
    for example in examples:
        line = re.sub(r"\s+\(.*\)\s*$", "", example)
        error = parse_kiln(line)
        if error:
            problems.append(f"kiln {sub} --help: '{example}' does not parse: {error}")
    assert not problems, "\n".join(problems)
